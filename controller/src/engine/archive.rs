//! `docker cp`: the archive endpoints of a container, over the agent's `Files` calls
//! (the agent's confined filesystem access).
//!
//! ```text
//!  HEAD/GET/PUT /containers/{id}/archive ──► Engine (this file: lookups, Docker errors)
//!        └─ agents: Stat / Get (stat, then tar items) / Put (tar items, then extract)
//! ```
//!
//! Decisions here are which container, which errors (Docker's codes and texts), the
//! read-only rootfs rule, refusing paths under the container's volumes and bind mounts
//! (which the agent's view, the overlay alone, does not show), and holding the
//! container's lifecycle lock while a copy has a stopped container's overlay mounted,
//! so that a start, which the controller orders, cannot mount it a second time.

use super::Engine;
use crate::agent_client::ArchiveDownload;
use crate::engine::error::EngineError;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::io;
use tokio::sync::mpsc;
use wharf_protocol::agent::{AgentFailure, FailureKind};
use wharf_protocol::archive::{ContainerPath, ExtractOptions, PathStat};
use wharf_protocol::state::{ContainerRecord, ContainerStatus};

/// Bytes of a `GET` archive, chunk by chunk; an `Err` ends the transfer as failed.
pub type ArchiveStream = mpsc::Receiver<Result<Bytes, io::Error>>;

/// The Docker error for an archive failure on `path` of the container `reference`.
pub fn archive_error(f: AgentFailure, reference: &str, path: &str) -> EngineError {
    match f.kind {
        FailureKind::Conflict => {
            EngineError::forbidden(format!("container path {path} is read-only"))
        }
        FailureKind::NotFound => EngineError::not_found(format!(
            "Could not find the file {path} in container {reference}"
        )),
        _ => EngineError::from(f),
    }
}

/// Whether `path` (absolute, cleaned) is at or under one of `targets`. Pure.
pub fn under_mount<'a>(path: &str, targets: impl IntoIterator<Item = &'a str>) -> bool {
    let p = ContainerPath::parse(path).comps;
    targets.into_iter().any(|t| {
        let t = ContainerPath::parse(t).comps;
        !t.is_empty() && p.starts_with(&t)
    })
}

impl Engine {
    /// The container for an archive request on `path`: 404 if it does not exist, 400 for
    /// a path under its volumes or bind mounts (not reachable from here).
    fn archive_container(
        &self,
        reference: &str,
        path: &str,
    ) -> Result<ContainerRecord, EngineError> {
        let c = self.container(reference)?;
        if path.is_empty() {
            return Err(EngineError::invalid("path cannot be empty"));
        }
        if under_mount(path, c.run.host.mounts.iter().map(|m| m.target.as_str())) {
            return Err(EngineError::invalid(format!(
                "copying paths under a volume or bind mount is not supported: {path}"
            )));
        }
        Ok(c)
    }

    /// For a container that is not running, hold its lock so it cannot start (and mount
    /// its overlay a second time) while the copy has the overlay privately mounted.
    async fn hold_if_stopped(
        &self,
        c: &ContainerRecord,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match c.status {
            ContainerStatus::Running | ContainerStatus::Paused => None,
            _ => Some(self.lock_for(&c.id).lock_owned().await),
        }
    }

    /// `HEAD /containers/{id}/archive?path=`: stat a path inside the container.
    pub async fn archive_stat(&self, reference: &str, path: &str) -> Result<PathStat, EngineError> {
        let c = self.archive_container(reference, path)?;
        let _held = self.hold_if_stopped(&c).await;
        self.agents
            .path_stat(&c.node, &c.id, path)
            .await
            .map_err(|f| archive_error(f, reference, path))
    }

    /// `GET /containers/{id}/archive?path=`: the path's stat and a tar stream of it.
    pub async fn archive_get(
        &self,
        reference: &str,
        path: &str,
    ) -> Result<(PathStat, ArchiveStream), EngineError> {
        let c = self.archive_container(reference, path)?;
        let held = self.hold_if_stopped(&c).await;
        let (stat, download) = self
            .agents
            .archive_get(&c.node, &c.id, path)
            .await
            .map_err(|f| archive_error(f, reference, path))?;
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(forward(download, tx, held));
        self.emit_container(&c, "archive-path", &[]);
        Ok((stat, rx))
    }

    /// `PUT /containers/{id}/archive?path=`: extract the tar arriving on `body` into the
    /// directory `path` of the container. 403 when its rootfs is read-only. The agent
    /// spools the body and extracts nothing from one that breaks off; an error found
    /// before the upload is answered once the body has been read, so the client sees it.
    pub async fn archive_put<S>(
        &self,
        reference: &str,
        path: &str,
        mut body: S,
        no_overwrite_dir_non_dir: bool,
        copy_uid_gid: bool,
    ) -> Result<(), EngineError>
    where
        S: Stream<Item = Result<Bytes, EngineError>> + Unpin,
    {
        let c = match self.put_container(reference, path) {
            Ok(c) => c,
            Err(e) => {
                while let Some(Ok(_)) = body.next().await {}
                return Err(e);
            }
        };
        let options = ExtractOptions {
            no_overwrite_dir_non_dir,
            chown_to_user: copy_uid_gid.then(|| c.run.user.clone()),
        };
        let mut upload = self.agents.archive_put(&c.node, &c.id, path, options)?;
        while let Some(chunk) = body.next().await {
            // A body that breaks off drops the upload: the agent extracts nothing.
            let chunk = chunk?;
            if upload.send(&chunk).await.is_err() {
                let f = upload.failure().await;
                return Err(archive_error(f, reference, path));
            }
        }
        // Spooled on the agent; it extracts once the stream ends, which is when no start
        // can race its mount.
        let _held = self.hold_if_stopped(&c).await;
        upload
            .finish()
            .await
            .map_err(|f| archive_error(f, reference, path))?;
        self.emit_container(&c, "extract-to-dir", &[]);
        Ok(())
    }

    fn put_container(&self, reference: &str, path: &str) -> Result<ContainerRecord, EngineError> {
        let c = self.archive_container(reference, path)?;
        if c.run.host.read_only {
            return Err(EngineError::forbidden(
                "container rootfs is marked read-only",
            ));
        }
        Ok(c)
    }
}

/// Carry a download to the HTTP body, holding the container's lock (if any) until the
/// tar is complete or the client went away.
async fn forward(
    mut download: ArchiveDownload,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    _held: Option<tokio::sync::OwnedMutexGuard<()>>,
) {
    loop {
        let item = match download.next().await {
            Ok(Some(b)) => Ok(Bytes::from(b)),
            Ok(None) => return,
            Err(f) => Err(io::Error::other(f.message)),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_targets_cover_their_subtrees_only() {
        let t = ["/data", "/etc/app/"];
        assert!(under_mount("/data", t));
        assert!(under_mount("/data/x/../y", t));
        assert!(under_mount("etc/app/conf", t));
        assert!(!under_mount("/database", t));
        assert!(!under_mount("/etc", t));
        assert!(!under_mount("/", t));
    }

    #[test]
    fn errors_are_docker_shaped() {
        let e = archive_error(
            AgentFailure::new(FailureKind::NotFound, "could not find the file /nope"),
            "c1",
            "/nope",
        );
        assert_eq!(e.kind, crate::engine::ErrorKind::NotFound);
        assert_eq!(e.message, "Could not find the file /nope in container c1");
        let e = archive_error(
            AgentFailure::new(
                FailureKind::InvalidInput,
                "extraction point is not a directory",
            ),
            "c1",
            "/etc/hostname",
        );
        assert_eq!(e.kind, crate::engine::ErrorKind::InvalidParameter);
        assert_eq!(e.message, "extraction point is not a directory");
        let e = archive_error(
            AgentFailure::new(
                FailureKind::Conflict,
                "create file \"/x\": read-only file system",
            ),
            "c1",
            "/x",
        );
        assert_eq!(e.kind, crate::engine::ErrorKind::Forbidden);
        assert_eq!(e.message, "container path /x is read-only");
    }
}
