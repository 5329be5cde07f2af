//! The build cache: which image a step already produced. Pure.
//!
//! As in Docker's classic builder, the cache is implicit in the images: every image a
//! build step creates records its `parent` (the image the step ran on) and its
//! `container_config` (the run config with `Cmd` set to the step's command: the RUN
//! command, prefixed by `|N k=v…` build args in effect, or `#(nop) COPY file:<hash> in
//! /dest`, `#(nop)  ENV …`). A step hits the cache when an image with the same parent and
//! the same container config exists. The index sits behind [`CacheIndex`], so it can be
//! served from the replicated image records (as here) or from any other store.

use serde_json::Value;
use wharf_protocol::state::ClusterState;
use wharf_protocol::ImageId;

/// Looks up the image a build step produced before.
pub trait CacheIndex {
    /// The image built on `parent` (`None`: `FROM scratch`) by the step whose container
    /// config is `key`, if one is known (the newest when several are).
    fn probe(&self, parent: Option<&ImageId>, key: &Value) -> Option<ImageId>;
}

/// The parent a build recorded in an image config, if any.
pub fn parent_of(config: &Value) -> Option<&str> {
    config
        .get("parent")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
}

/// The parent recorded by each built image (image → parent ID), for `docker images`
/// (intermediate images are hidden without `-a`) and `ParentId`.
pub fn parents(state: &ClusterState) -> std::collections::HashMap<ImageId, String> {
    state
        .images
        .values()
        .filter_map(|img| {
            let cfg = serde_json::from_slice::<Value>(&img.config).ok()?;
            Some((img.id, parent_of(&cfg)?.to_string()))
        })
        .collect()
}

/// The build steps' images that go with `image` when it is deleted, nearest first (moby's
/// parent-chain delete): each parent that has no tag, no other child and no container.
/// Call before `image` itself is removed.
pub fn removable_parents(state: &ClusterState, image: &ImageId) -> Vec<ImageId> {
    let parents = parents(state);
    let mut out = vec![];
    let mut current = *image;
    while let Some(p) = parents.get(&current) {
        let Some(pid) = state.images.keys().find(|id| id.to_string() == *p).copied() else {
            break;
        };
        let tagged = state.tags.values().any(|t| *t == pid);
        let children = parents.values().filter(|x| **x == *p).count();
        let used = state.containers.values().any(|c| c.run.image_id == pid);
        if tagged || children != 1 || used || out.contains(&pid) {
            break;
        }
        out.push(pid);
        current = pid;
    }
    out
}

impl CacheIndex for ClusterState {
    fn probe(&self, parent: Option<&ImageId>, key: &Value) -> Option<ImageId> {
        let want = parent.map(|p| p.to_string());
        let mut best: Option<(String, ImageId)> = None;
        for img in self.images.values() {
            let Ok(cfg) = serde_json::from_slice::<Value>(&img.config) else {
                continue;
            };
            let Some(cc) = cfg.get("container_config") else {
                continue;
            };
            if parent_of(&cfg).map(str::to_string) != want || cc != key {
                continue;
            }
            // Only images a build made (a plain `docker commit` has no container config
            // of this shape, but a loaded image might): the config must name its parent
            // when one is wanted, which the check above did.
            let created = cfg
                .get("created")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if best.as_ref().is_none_or(|(c, _)| created > *c) {
                best = Some((created, img.id));
            }
        }
        best.map(|(_, id)| id)
    }
}

/// The `Cmd` of a metadata step's container config: `SHELL… "#(nop) " comment` (two
/// words, as moby's `withCmdComment`).
pub fn nop_cmd(shell: &[String], comment: &str) -> Vec<String> {
    let mut v = shell.to_vec();
    v.push("#(nop) ".to_string());
    v.push(comment.to_string());
    v
}

/// The `Cmd` of a `COPY`/`ADD`/`WORKDIR` step's container config: `SHELL… "#(nop) "+comment`
/// (one word, as moby's `withCmdCommentString`).
pub fn nop_cmd_string(shell: &[String], comment: &str) -> Vec<String> {
    let mut v = shell.to_vec();
    v.push(format!("#(nop) {comment}"));
    v
}

/// The `Cmd` of a `RUN` step's container config: `|N k=v…` for the `N` build args in
/// effect (sorted), then the command (moby `prependEnvOnCmd`).
pub fn run_cmd(build_args: &[(String, String)], cmd: &[String]) -> Vec<String> {
    let mut v = vec![];
    if !build_args.is_empty() {
        let mut args = build_args.to_vec();
        args.sort();
        v.push(format!("|{}", args.len()));
        v.extend(args.into_iter().map(|(k, val)| format!("{k}={val}")));
    }
    v.extend(cmd.iter().cloned());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wharf_protocol::state::{Command, ImageRecord};
    use wharf_protocol::Digest;

    fn put(s: &mut ClusterState, cfg: Value) -> ImageId {
        let bytes = serde_json::to_vec(&cfg).unwrap();
        let id = ImageId(Digest::of(&bytes));
        s.apply(&Command::PutImage {
            image: ImageRecord {
                id,
                config: bytes,
                diff_ids: vec![],
                size: 0,
                loaded_ns: 0,
            },
        })
        .unwrap();
        id
    }

    fn key(cmd: &[&str]) -> Value {
        json!({"Cmd": cmd, "Env": ["PATH=/bin"]})
    }

    #[test]
    fn a_step_hits_only_with_the_same_parent_and_config() {
        let mut s = ClusterState::default();
        let base = put(&mut s, json!({"config": {}}));
        let run = key(&["/bin/sh", "-c", "echo hi"]);
        let child = put(
            &mut s,
            json!({"parent": base.to_string(), "container_config": run, "created": "1"}),
        );
        assert_eq!(s.probe(Some(&base), &run), Some(child));
        assert_eq!(s.probe(Some(&child), &run), None, "other parent");
        assert_eq!(
            s.probe(Some(&base), &key(&["/bin/sh", "-c", "echo ho"])),
            None
        );
        assert_eq!(s.probe(None, &run), None, "scratch is another parent");
        let mut other_env = run.clone();
        other_env["Env"] = json!(["PATH=/bin", "A=1"]);
        assert_eq!(s.probe(Some(&base), &other_env), None);
    }

    #[test]
    fn a_deleted_image_takes_its_untagged_single_child_parents() {
        let mut s = ClusterState::default();
        let base = put(&mut s, json!({"config": {}}));
        s.apply(&Command::Tag {
            reference: "busybox:latest".into(),
            image: base,
        })
        .unwrap();
        let step = |s: &mut ClusterState, parent: ImageId, n: &str| {
            put(
                s,
                json!({"parent": parent.to_string(), "container_config": {"Cmd": [n]}}),
            )
        };
        let a = step(&mut s, base, "a");
        let b = step(&mut s, a, "b");
        let c = step(&mut s, b, "c");
        assert_eq!(
            removable_parents(&s, &c),
            vec![b, a],
            "stops at the tagged base"
        );
        // A second child of `a` keeps it.
        let _d = step(&mut s, a, "d");
        assert_eq!(removable_parents(&s, &c), vec![b]);
        assert_eq!(removable_parents(&s, &base), vec![]);
    }

    #[test]
    fn the_newest_of_equal_candidates_wins() {
        let mut s = ClusterState::default();
        let base = put(&mut s, json!({"config": {}}));
        let k = key(&["x"]);
        let _old = put(
            &mut s,
            json!({"parent": base.to_string(), "container_config": k, "created": "2020"}),
        );
        let new = put(
            &mut s,
            json!({"parent": base.to_string(), "container_config": k, "created": "2021"}),
        );
        assert_eq!(s.probe(Some(&base), &k), Some(new));
    }

    #[test]
    fn commands_carry_build_args_and_nop_comments_like_docker() {
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        assert_eq!(
            run_cmd(
                &[("B".into(), "2".into()), ("A".into(), "1".into())],
                &["/bin/sh".into(), "-c".into(), "make".into()]
            ),
            ["|2", "A=1", "B=2", "/bin/sh", "-c", "make"]
        );
        assert_eq!(run_cmd(&[], &["ls".into()]), ["ls"]);
        assert_eq!(
            nop_cmd(&sh, "ENV A=1"),
            ["/bin/sh", "-c", "#(nop) ", "ENV A=1"]
        );
        assert_eq!(
            nop_cmd_string(&sh, "COPY file:ab in /x "),
            ["/bin/sh", "-c", "#(nop) COPY file:ab in /x "]
        );
    }
}
