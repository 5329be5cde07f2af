//! Records for tests of this crate and of the crates above it (feature `test-fixtures`):
//! one place that knows every field, so adding a field touches one fixture.

use crate::agent::ContainerRunSpec;
use crate::state::{ContainerRecord, ContainerStatus};
use crate::{ContainerId, Digest, ImageId, NodeId};

/// A created (never started) container `busybox true` on node 1, with id `[n; 32]` and
/// `name`; set the fields a test cares about on the result.
///
/// # Panics
/// If `name` is not a valid container name (test data).
pub fn container(n: u8, name: &str) -> ContainerRecord {
    let id = ContainerId::from_bytes([n; 32]);
    ContainerRecord {
        id: id.clone(),
        name: name.parse().expect("a valid container name in test data"),
        created_ns: 1,
        node: NodeId(1),
        image_ref: "busybox".into(),
        run: ContainerRunSpec {
            id,
            image_id: ImageId(Digest::of(b"x")),
            diff_ids: vec![],
            args: vec!["true".into()],
            env: vec![],
            working_dir: "/".into(),
            user: String::new(),
            hostname: "h".into(),
            tty: false,
            open_stdin: false,
            stop_signal: 15,
            host: Default::default(),
        },
        config_json: "{}".into(),
        host_config_json: "{}".into(),
        auto_remove: false,
        status: ContainerStatus::Created,
        exit_code: 0,
        started_ns: 0,
        finished_ns: 0,
        oom_killed: false,
        error: String::new(),
    }
}
