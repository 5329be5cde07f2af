//! The container's seccomp filter for exec processes (`docker exec`, healthchecks).
//!
//! libcontainer's tenant builder joins a container without its `linux.seccomp`, so an exec
//! process would run unfiltered. Docker (runc) gives exec processes the container's filter;
//! Wharf does too, in a libcontainer [`Executor`] that runs in the exec process right before
//! `execve`, after libcontainer set its user and capabilities:
//!
//! ```text
//!  shim: Spec (config.json) ─► plan(process, linux.seccomp)   (pure)
//!          │   process with CAP_SYS_ADMIN (+ CAP_SETPCAP) raised, FilterPlan
//!          ▼
//!  exec process (libcontainer): setns, cgroup, uid/gid, capabilities = raised set
//!          └ FilterExecutor::exec: drop raised caps from bounding (CAP_SETPCAP last)
//!                                  load the filter (needs CAP_SYS_ADMIN without no_new_privs)
//!                                  effective, permitted = the container's
//!                                  execvp (libcontainer's default executor)
//! ```
//!
//! Loading a filter without `no_new_privs` needs `CAP_SYS_ADMIN`, which a container
//! normally lacks, so the process gets it for those few steps only (runc loads the filter
//! before dropping capabilities for the same reason). With `no-new-privileges` the filter
//! loads without any capability, and nothing is raised.

use libcontainer::capabilities::CapabilityExt;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{Capabilities, Capability, LinuxSeccomp, Process, Spec};

/// What the exec process does before `execve`: the filter, and the capabilities it held
/// only to load it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterPlan {
    /// The container's `linux.seccomp`.
    pub seccomp: LinuxSeccomp,
    /// Capabilities to remove from the bounding set before loading, in order.
    pub drop_bounding: Vec<Capability>,
    /// The container's effective set, restored after loading (`None`: leave as is).
    pub effective: Option<Capabilities>,
    /// The container's permitted set, restored after loading (`None`: leave as is).
    pub permitted: Option<Capabilities>,
}

/// The exec process for libcontainer and what its executor must do, given the
/// container's process (`process`, already the exec's) and `linux.seccomp` (pure).
///
/// Without a filter (`--privileged`, `seccomp=unconfined`) the process is unchanged and
/// there is no plan. Otherwise the process gets `CAP_SYS_ADMIN` in its bounding, effective
/// and permitted sets unless it has it or sets `no_new_privileges`, plus `CAP_SETPCAP`
/// when it must then give up a bounding capability it lacks the right to drop.
pub fn plan(process: &Process, seccomp: Option<&LinuxSeccomp>) -> (Process, Option<FilterPlan>) {
    let Some(seccomp) = seccomp else {
        return (process.clone(), None);
    };
    let has =
        |set: &Option<Capabilities>, c: Capability| set.as_ref().is_some_and(|s| s.contains(&c));
    let nnp = process.no_new_privileges() == Some(true);
    let mut filter = FilterPlan {
        seccomp: seccomp.clone(),
        drop_bounding: Vec::new(),
        effective: None,
        permitted: None,
    };
    // Without a capabilities object libcontainer leaves the shim's (all of them).
    let Some(caps) = process.capabilities().clone() else {
        return (process.clone(), Some(filter));
    };
    if nnp || has(caps.effective(), Capability::SysAdmin) {
        return (process.clone(), Some(filter));
    }
    let mut raise = vec![Capability::SysAdmin];
    if !has(caps.bounding(), Capability::SysAdmin) && !has(caps.effective(), Capability::Setpcap) {
        raise.push(Capability::Setpcap);
    }
    filter.drop_bounding = raise
        .iter()
        .copied()
        .filter(|c| !has(caps.bounding(), *c))
        .collect();
    filter.effective = Some(caps.effective().clone().unwrap_or_default());
    filter.permitted = Some(caps.permitted().clone().unwrap_or_default());
    let add = |set: &Option<Capabilities>| -> Capabilities {
        let mut s = set.clone().unwrap_or_default();
        s.extend(raise.iter().copied());
        s
    };
    let mut raised = caps.clone();
    raised.set_bounding(Some(add(caps.bounding())));
    raised.set_effective(Some(add(caps.effective())));
    raised.set_permitted(Some(add(caps.permitted())));
    let mut p = process.clone();
    p.set_capabilities(Some(raised));
    (p, Some(filter))
}

/// libcontainer's default executor, after carrying out a [`FilterPlan`] in the exec
/// process.
#[derive(Clone)]
pub struct FilterExecutor {
    plan: FilterPlan,
}

impl FilterExecutor {
    /// An executor that loads `plan`'s filter before `execve`.
    pub fn new(plan: FilterPlan) -> FilterExecutor {
        FilterExecutor { plan }
    }

    /// Runs in the exec process: drop, load, restore.
    fn apply(&self) -> Result<(), String> {
        let to_set = |c: &Capabilities| c.iter().map(|c| c.to_cap()).collect::<caps::CapsHashSet>();
        for c in &self.plan.drop_bounding {
            caps::drop(None, caps::CapSet::Bounding, c.to_cap())
                .map_err(|e| format!("drop {c} from the bounding set: {e}"))?;
        }
        let notify = libcontainer::seccomp::initialize_seccomp(&self.plan.seccomp)
            .map_err(|e| format!("load the container's seccomp filter: {e}"))?;
        if let Some(fd) = notify {
            // SAFETY: the filter's notify fd was just created for this process and is not
            // used elsewhere; no listener is configured for exec processes.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
        if let Some(e) = &self.plan.effective {
            caps::set(None, caps::CapSet::Effective, &to_set(e))
                .map_err(|err| format!("restore effective capabilities: {err}"))?;
        }
        if let Some(p) = &self.plan.permitted {
            caps::set(None, caps::CapSet::Permitted, &to_set(p))
                .map_err(|err| format!("restore permitted capabilities: {err}"))?;
        }
        Ok(())
    }
}

impl Executor for FilterExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        self.apply().map_err(ExecutorError::Other)?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCapabilitiesBuilder, LinuxSeccompBuilder, ProcessBuilder};

    fn set(caps: &[Capability]) -> Capabilities {
        caps.iter().copied().collect()
    }

    fn process(bounding: &[Capability], nnp: Option<bool>) -> Process {
        let caps = LinuxCapabilitiesBuilder::default()
            .bounding(set(bounding))
            .effective(set(bounding))
            .permitted(set(bounding))
            .build()
            .unwrap();
        let mut p = ProcessBuilder::default()
            .args(vec!["sh".to_string()])
            .capabilities(caps)
            .build()
            .unwrap();
        p.set_no_new_privileges(nnp);
        p
    }

    fn filter() -> LinuxSeccomp {
        LinuxSeccompBuilder::default().build().unwrap()
    }

    #[test]
    fn without_a_filter_nothing_changes() {
        let p = process(&[Capability::Chown], None);
        let (q, plan) = super::plan(&p, None);
        assert_eq!(q, p);
        assert!(plan.is_none());
    }

    #[test]
    fn default_caps_raise_sys_admin_and_setpcap_for_the_load_only() {
        let p = process(&[Capability::Chown, Capability::Kill], None);
        let (q, plan) = super::plan(&p, Some(&filter()));
        let plan = plan.unwrap();
        let caps = q.capabilities().as_ref().unwrap();
        let raised = set(&[
            Capability::Chown,
            Capability::Kill,
            Capability::SysAdmin,
            Capability::Setpcap,
        ]);
        assert_eq!(caps.bounding().as_ref(), Some(&raised));
        assert_eq!(caps.effective().as_ref(), Some(&raised));
        assert_eq!(caps.permitted().as_ref(), Some(&raised));
        // SYS_ADMIN goes first: dropping needs SETPCAP, which goes last.
        assert_eq!(
            plan.drop_bounding,
            [Capability::SysAdmin, Capability::Setpcap]
        );
        let back = set(&[Capability::Chown, Capability::Kill]);
        assert_eq!(plan.effective, Some(back.clone()));
        assert_eq!(plan.permitted, Some(back));
        assert_eq!(plan.seccomp, filter());
    }

    #[test]
    fn setpcap_in_the_container_is_kept() {
        let p = process(&[Capability::Setpcap], None);
        let (q, plan) = super::plan(&p, Some(&filter()));
        let plan = plan.unwrap();
        assert_eq!(plan.drop_bounding, [Capability::SysAdmin]);
        let caps = q.capabilities().as_ref().unwrap();
        assert_eq!(
            caps.bounding().as_ref(),
            Some(&set(&[Capability::Setpcap, Capability::SysAdmin]))
        );
        assert_eq!(plan.effective, Some(set(&[Capability::Setpcap])));
    }

    #[test]
    fn sys_admin_or_no_new_privileges_raise_nothing() {
        for p in [
            process(&[Capability::SysAdmin], None),
            process(&[Capability::Chown], Some(true)),
        ] {
            let (q, plan) = super::plan(&p, Some(&filter()));
            assert_eq!(q, p);
            let plan = plan.unwrap();
            assert!(plan.drop_bounding.is_empty());
            assert_eq!(plan.effective, None);
            assert_eq!(plan.permitted, None);
        }
    }
}
