//! The raw runtime floor: busybox `true` created, started and reaped straight through
//! youki's libcontainer on a plain rootfs directory, with no engine, no shim, no overlay.
//!
//! The floor is timed after [`IDLE_BEFORE`] of idle, as every end-to-end run meets the
//! kernel. On cgroup v1, moving the container's first process into its cgroups takes the
//! global `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period
//! (10–20 ms on these VMs) unless another migration happened within about one grace
//! period. Runs back to back (~10 ms apart) skip that wait; a `docker run` a user types,
//! or the bench's next one 70+ ms later, does not. [`RawRuntime::run_after_idle`] times
//! the first kind of run, and [`RawRuntime::run_once`] still serves the back-to-back
//! figure printed beside it.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Idle time before each timed floor run: longer than any run measured against it, so
/// that the floor meets the kernel as they do (see the module doc).
pub const IDLE_BEFORE: std::time::Duration = std::time::Duration::from_millis(100);

/// A prepared OCI bundle of busybox `true`; [`RawRuntime::run_once`] runs it once.
pub struct RawRuntime {
    bundle: PathBuf,
    root: PathBuf,
    cgroup_parent: String,
    n: usize,
}

impl RawRuntime {
    /// Unpack the generated busybox rootfs into `dir/bundle` and write its `config.json`.
    pub fn new(dir: &Path) -> Result<RawRuntime> {
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        let layer = crate::layer_tar(&crate::images::busybox_rootfs()?).context("busybox layer")?;
        tar::Archive::new(layer.as_slice())
            .unpack(&rootfs)
            .context("unpack busybox")?;
        let cgroup_parent = format!("wharf-bench-raw-{}", std::process::id());
        let mut spec = oci_spec::runtime::Spec::default();
        let mut process = spec.process().clone().context("default process")?;
        process.set_args(Some(vec!["/bin/true".to_string()]));
        process.set_terminal(Some(false));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().context("default linux")?;
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{cgroup_parent}/raw"))));
        spec.set_linux(Some(linux));
        spec.save(bundle.join("config.json"))
            .context("write config.json")?;
        Ok(RawRuntime {
            bundle,
            root: dir.join("state"),
            cgroup_parent,
            n: 0,
        })
    }

    /// Create, start, wait for and delete one container.
    pub fn run_once(&mut self) -> Result<()> {
        use libcontainer::container::builder::ContainerBuilder;
        use libcontainer::syscall::syscall::SyscallType;
        self.n += 1;
        let id = format!("bench{}", self.n);
        let mut container = ContainerBuilder::new(id, SyscallType::default())
            .with_root_path(&self.root)
            .context("libcontainer root")?
            .as_init(&self.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .context("libcontainer create")?;
        container.start().context("libcontainer start")?;
        let pid = container.pid().context("no pid")?.as_raw();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)?;
        container.delete(true)?;
        Ok(())
    }
}

impl RawRuntime {
    /// Sleep [`IDLE_BEFORE`], then time one [`RawRuntime::run_once`]; seconds.
    pub fn run_after_idle(&mut self) -> Result<f64> {
        std::thread::sleep(IDLE_BEFORE);
        let t = std::time::Instant::now();
        self.run_once()?;
        Ok(t.elapsed().as_secs_f64())
    }
}

impl Drop for RawRuntime {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir(e.path().join(&self.cgroup_parent).join("raw"));
                let _ = std::fs::remove_dir(e.path().join(&self.cgroup_parent));
            }
        }
        let _ = std::fs::remove_dir(
            Path::new("/sys/fs/cgroup")
                .join(&self.cgroup_parent)
                .join("raw"),
        );
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.cgroup_parent));
    }
}
