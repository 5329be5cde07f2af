//! What `docker rmi` does, decided from the cluster state alone (moby's
//! `daemon/images/image_delete.go` rules): untag or delete, and the conflicts that stop it.
//! Pure; the engine carries the plan out.

use crate::engine::{find_image, normalize_reference};
use wharf_protocol::state::{ClusterState, ContainerStatus};
use wharf_protocol::ImageId;

/// Why an image cannot be removed (HTTP 409, or 404), in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    /// No image by that reference.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// Untagging the last tag of an image a container uses needs `-f`.
    #[error("conflict: unable to remove repository reference \"{reference}\" (must force) - container {container} is using its referenced image {image}")]
    ReferenceInUse {
        /// The reference as given.
        reference: String,
        /// Short container ID.
        container: String,
        /// Short image ID.
        image: String,
    },
    /// A conflict on the image itself; `forceable` says whether `-f` would pass it.
    #[error("conflict: unable to delete {image} ({}) - {reason}", if *.forceable { "must be forced" } else { "cannot be forced" })]
    Conflict {
        /// Short image ID.
        image: String,
        /// Whether `-f` overrides it.
        forceable: bool,
        /// What holds the image.
        reason: String,
    },
}

/// The steps of one `docker rmi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePlan {
    /// The image concerned.
    pub image: ImageId,
    /// Tags to remove, in order (each an `Untagged:` line).
    pub untag: Vec<String>,
    /// Remove the image itself (a `Deleted:` line, then its freed layers).
    pub delete: bool,
    /// The removal goes past stopped containers (`-f`).
    pub forced: bool,
}

/// Decide `docker rmi [-f] reference`.
pub fn plan_delete(
    state: &ClusterState,
    reference: &str,
    force: bool,
) -> Result<DeletePlan, DeleteError> {
    let image = find_image(state, reference).ok_or_else(|| {
        DeleteError::NoSuchImage(if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            normalize_reference(reference)
        })
    })?;
    let short = image.0.short();
    let tags: Vec<String> = state
        .tags
        .iter()
        .filter(|(_, id)| **id == image)
        .map(|(t, _)| t.clone())
        .collect();
    let users = || {
        state
            .containers
            .values()
            .filter(|c| c.run.image_id == image)
    };
    let running = users()
        .find(|c| matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused))
        .map(|c| c.id.short().to_string());
    let stopped = users()
        .find(|c| !matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused))
        .map(|c| c.id.short().to_string());
    let any_user = running.clone().or_else(|| stopped.clone());
    let normalized = normalize_reference(reference);
    let by_tag = state.tags.get(&normalized) == Some(&image);

    if by_tag {
        if !force && tags.len() == 1 {
            if let Some(c) = &any_user {
                return Err(DeleteError::ReferenceInUse {
                    reference: reference.to_string(),
                    container: c.clone(),
                    image: short,
                });
            }
        }
        let untag = vec![normalized];
        if tags.len() > 1 {
            return Ok(DeletePlan {
                image,
                untag,
                delete: false,
                forced: false,
            });
        }
        // The last tag went: delete the image unless something uses it, in which case
        // it stays, dangling, without an error (moby's "quiet" delete).
        let held = running.is_some() || (!force && stopped.is_some());
        return Ok(DeletePlan {
            image,
            untag,
            delete: !held,
            forced: force && stopped.is_some(),
        });
    }

    if let Some(c) = running {
        return Err(DeleteError::Conflict {
            image: short,
            forceable: false,
            reason: format!("image is being used by running container {c}"),
        });
    }
    if !force {
        if tags.len() > 1 {
            return Err(DeleteError::Conflict {
                image: short,
                forceable: true,
                reason: "image is referenced in multiple repositories".to_string(),
            });
        }
        if let Some(c) = stopped {
            return Err(DeleteError::Conflict {
                image: short,
                forceable: true,
                reason: format!("image is being used by stopped container {c}"),
            });
        }
    }
    Ok(DeletePlan {
        image,
        untag: tags,
        delete: true,
        forced: force && stopped.is_some(),
    })
}

/// Decide `docker image prune [-a]`: the images no container uses (only dangling ones
/// unless `all`), each with its tags, in the order to remove them.
pub fn plan_prune(s: &ClusterState, all: bool) -> Vec<(ImageId, Vec<String>)> {
    // Without `all`, as Docker: build steps' images (parents of another image) are
    // not dangling; they go with the dangling image they lead to.
    let parents = crate::build::cache::parents(s);
    let is_parent: std::collections::HashSet<&String> = parents.values().collect();
    let top = s
        .images
        .keys()
        .filter(|id| all || !is_parent.contains(&id.to_string()))
        .filter(|id| !s.containers.values().any(|c| c.run.image_id == **id))
        .copied()
        .collect::<Vec<_>>();
    let mut ids = top.clone();
    if !all {
        for id in &top {
            if !s.tags.values().any(|t| t == id) {
                for p in crate::build::cache::removable_parents(s, id) {
                    if !ids.contains(&p) {
                        ids.push(p);
                    }
                }
            }
        }
    }
    ids.into_iter()
        .map(|id| {
            let tags: Vec<String> = s
                .tags
                .iter()
                .filter(|(_, t)| **t == id)
                .map(|(r, _)| r.clone())
                .collect();
            (id, tags)
        })
        .filter(|(_, tags)| all || tags.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::agent::ContainerRunSpec;
    use wharf_protocol::state::{Command, ContainerRecord, ImageRecord};
    use wharf_protocol::{ContainerId, DiffId, Digest, NodeId};

    fn state_with(tags: &[&str], container: Option<ContainerStatus>) -> (ClusterState, ImageId) {
        let mut s = ClusterState::default();
        let config = b"{\"x\":1}".to_vec();
        let id = ImageId(Digest::of(&config));
        s.apply(&Command::PutImage {
            image: ImageRecord {
                id,
                config,
                diff_ids: vec![DiffId(Digest::of(b"l"))],
                size: 1,
                loaded_ns: 0,
            },
        })
        .unwrap();
        for t in tags {
            s.apply(&Command::Tag {
                reference: t.to_string(),
                image: id,
            })
            .unwrap();
        }
        if let Some(status) = container {
            let cid = ContainerId::from_bytes([7; 32]);
            let run: ContainerRunSpec = serde_json::from_value(serde_json::json!({
                "id": cid, "image_id": id, "diff_ids": [], "args": ["true"], "env": [],
                "working_dir": "/", "user": "", "hostname": "h", "tty": false,
                "open_stdin": false, "stop_signal": 15
            }))
            .unwrap_or_else(|e| panic!("run spec: {e}"));
            s.containers.insert(
                cid.clone(),
                ContainerRecord {
                    id: cid,
                    name: "holder".parse().unwrap(),
                    created_ns: 0,
                    node: NodeId(1),
                    image_ref: "x".into(),
                    run,
                    config_json: "{}".into(),
                    host_config_json: "{}".into(),
                    auto_remove: false,
                    status,
                    exit_code: 0,
                    started_ns: 0,
                    finished_ns: 0,
                    oom_killed: false,
                    error: String::new(),
                },
            );
        }
        (s, id)
    }

    #[test]
    fn untag_one_of_several_tags_keeps_the_image() {
        let (s, _) = state_with(&["a:latest", "b:1"], None);
        let p = plan_delete(&s, "a", false).unwrap();
        assert_eq!((p.untag, p.delete), (vec!["a:latest".to_string()], false));
        let p = plan_delete(&s, "b:1", false).unwrap();
        assert!(!p.delete);
    }

    #[test]
    fn last_tag_deletes_unless_a_container_holds_it() {
        let (s, id) = state_with(&["a:latest"], None);
        let p = plan_delete(&s, "a:latest", false).unwrap();
        assert_eq!(
            p,
            DeletePlan {
                image: id,
                untag: vec!["a:latest".into()],
                delete: true,
                forced: false
            }
        );
        let (s, _) = state_with(&["a:latest"], Some(ContainerStatus::Exited));
        let e = plan_delete(&s, "a", false).unwrap_err();
        assert!(e.to_string().starts_with(
            "conflict: unable to remove repository reference \"a\" (must force) - container 070707070707 is using its referenced image"
        ), "{e}");
        let p = plan_delete(&s, "a", true).unwrap();
        assert!(p.delete && p.forced);
        let (s, _) = state_with(&["a:latest"], Some(ContainerStatus::Running));
        let p = plan_delete(&s, "a", true).unwrap();
        assert_eq!(
            (p.untag.len(), p.delete),
            (1, false),
            "untagged, left dangling"
        );
    }

    #[test]
    fn delete_by_id_checks_conflicts_like_docker() {
        let (s, id) = state_with(&["a:latest", "b:1"], None);
        let short = &id.0.hex()[..12];
        let e = plan_delete(&s, short, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories")
        );
        let p = plan_delete(&s, short, true).unwrap();
        assert_eq!((p.untag.len(), p.delete), (2, true));

        let (s, _) = state_with(&[], Some(ContainerStatus::Running));
        let e = plan_delete(&s, &id.to_string(), true).unwrap_err();
        assert!(
            e.to_string().contains(
                "(cannot be forced) - image is being used by running container 070707070707"
            ),
            "{e}"
        );
        let (s, _) = state_with(&[], Some(ContainerStatus::Exited));
        assert!(plan_delete(&s, short, false)
            .unwrap_err()
            .to_string()
            .contains("(must be forced) - image is being used by stopped container"));
        assert!(plan_delete(&s, short, true).unwrap().forced);
        assert_eq!(
            plan_delete(&s, "nope", false).unwrap_err(),
            DeleteError::NoSuchImage("nope:latest".into())
        );
    }

    #[test]
    fn prune_takes_unused_images_dangling_ones_unless_all() {
        let (s, id) = state_with(&[], None);
        assert_eq!(plan_prune(&s, false), [(id, vec![])]);
        let (s, id) = state_with(&["a:1"], None);
        assert!(plan_prune(&s, false).is_empty(), "tagged: not dangling");
        assert_eq!(plan_prune(&s, true), [(id, vec!["a:1".to_string()])]);
        let (s, _) = state_with(&[], Some(ContainerStatus::Exited));
        assert!(plan_prune(&s, true).is_empty(), "a container uses it");
    }
}
