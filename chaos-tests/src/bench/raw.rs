//! The raw runtime floor: busybox `true` created, started and reaped straight through
//! youki's libcontainer on a plain rootfs directory, with no engine, no shim, no overlay.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

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
