//! `docker cp`: the archive endpoints of a container, over the agent's confined
//! filesystem access ([`wharf_node::archive`]).
//!
//! ```text
//!  HEAD/GET/PUT /containers/{id}/archive ──► Engine (this file: lookups, Docker errors)
//!        └─spawn_blocking─► archive::with_root(container) ─► stat / write / extract
//! ```
//!
//! Decisions here are which container, which errors (Docker's codes and texts), the
//! read-only rootfs rule, and refusing paths under the container's volumes and bind
//! mounts, which the agent's view (the overlay alone) does not show.

use super::Engine;
use crate::api::error::ApiError;
use bytes::Bytes;
use http::StatusCode;
use std::io::{self, Write};
use tokio::sync::mpsc;
use tracing::warn;
use wharf_node::archive::{self, ArchiveError};
use wharf_protocol::archive::{ExtractOptions, PathStat};
use wharf_protocol::state::{ContainerRecord, ContainerStatus};

/// Bytes of a `GET` archive, chunk by chunk; an `Err` ends the transfer as failed.
pub type ArchiveStream = mpsc::Receiver<Result<Bytes, io::Error>>;

/// Size of the chunks sent to the client.
const CHUNK: usize = 256 * 1024;

/// A `Write` that sends chunks to async code; blocks when the client lags.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// The Docker error for an archive failure on `path` of the container `reference`.
pub fn archive_error(e: ArchiveError, reference: &str, path: &str) -> ApiError {
    if e.is_read_only() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("container path {path} is read-only"),
        );
    }
    match e {
        ArchiveError::NotFound { .. } => ApiError::not_found(format!(
            "Could not find the file {path} in container {reference}"
        )),
        ArchiveError::NotADirectory => ApiError::bad_request("extraction point is not a directory"),
        ArchiveError::BadArchive(m) => ApiError::bad_request(format!("invalid tar archive: {m}")),
        ArchiveError::Conflict(m) => ApiError::bad_request(m),
        e => ApiError::internal(e.to_string()),
    }
}

/// Whether `path` (absolute, cleaned) is at or under one of `targets`. Pure.
pub fn under_mount<'a>(path: &str, targets: impl IntoIterator<Item = &'a str>) -> bool {
    let p = archive::ContainerPath::parse(path).comps;
    targets.into_iter().any(|t| {
        let t = archive::ContainerPath::parse(t).comps;
        !t.is_empty() && p.starts_with(&t)
    })
}

/// The per-container files bound over the rootfs at `/etc/<name>` (as Docker's
/// `NetworkMounts`); `path` names one when it is exactly `/etc/<name>`. Pure.
pub fn etc_file(path: &str) -> Option<&'static str> {
    let p = archive::ContainerPath::parse(path);
    if p.follow_last || p.comps.len() != 2 || p.comps[0] != b"etc" {
        return None;
    }
    ["hostname", "hosts", "resolv.conf"]
        .into_iter()
        .find(|n| p.comps[1] == n.as_bytes())
}

fn join_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("archive task failed: {e}"))
}

impl Engine {
    /// The container for an archive request on `path`: 404 if it does not exist, 400 for
    /// a path under its volumes or bind mounts (not reachable from here).
    fn archive_container(&self, reference: &str, path: &str) -> Result<ContainerRecord, ApiError> {
        let c = self.container(reference)?;
        if path.is_empty() {
            return Err(ApiError::bad_request("path cannot be empty"));
        }
        if under_mount(path, c.run.host.mounts.iter().map(|m| m.target.as_str())) {
            return Err(ApiError::bad_request(format!(
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

    /// The host file shown at `path` instead of the rootfs's: the container's
    /// `/etc/hostname`, `/etc/hosts` or `/etc/resolv.conf` once it has been started.
    fn etc_override(&self, c: &ContainerRecord, path: &str) -> Option<std::path::PathBuf> {
        let name = etc_file(path)?;
        let file = self.agent().state_dir(&c.id).join(name);
        file.is_file().then_some(file)
    }

    /// `HEAD /containers/{id}/archive?path=`: stat a path inside the container.
    pub async fn archive_stat(&self, reference: &str, path: &str) -> Result<PathStat, ApiError> {
        let c = self.archive_container(reference, path)?;
        if let Some(file) = self.etc_override(&c, path) {
            let name = archive::ContainerPath::parse(path).name();
            return archive::host_file_stat(&file, &name)
                .map_err(|e| archive_error(e, reference, path));
        }
        let _held = self.hold_if_stopped(&c).await;
        let store = self.agent().image_store().clone();
        let p = path.to_string();
        tokio::task::spawn_blocking(move || {
            archive::with_root(&store, c.id.as_str(), |root| archive::stat_path(root, &p))
        })
        .await
        .map_err(join_err)?
        .map_err(|e| archive_error(e, reference, path))
    }

    /// `GET /containers/{id}/archive?path=`: the path's stat and a tar stream of it.
    pub async fn archive_get(
        &self,
        reference: &str,
        path: &str,
    ) -> Result<(PathStat, ArchiveStream), ApiError> {
        let stat = self.archive_stat(reference, path).await?;
        let c = self.archive_container(reference, path)?;
        let store = self.agent().image_store().clone();
        let (tx, rx) = mpsc::channel(8);
        let p = path.to_string();
        let id = c.id.clone();
        let held = self.hold_if_stopped(&c).await;
        let etc = self.etc_override(&c, path);
        tokio::task::spawn_blocking(move || {
            let _held = held;
            let mut w = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let res = match etc {
                Some(file) => {
                    let name = archive::ContainerPath::parse(&p).name();
                    archive::write_host_file(&file, &name, &mut w).map(drop)
                }
                None => archive::with_root(&store, id.as_str(), |root| {
                    archive::write_archive(root, &p, &mut w).map(drop)
                }),
            }
            .and_then(|()| {
                w.flush().map_err(|source| ArchiveError::Io {
                    action: "send archive",
                    path: p.clone(),
                    source,
                })
            });
            if let Err(e) = res {
                warn!(container = %id.short(), path = %p, error = %e, "archive failed mid-stream");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        });
        self.emit_container(&c, "archive-path", &[]);
        Ok((stat, rx))
    }

    /// `PUT /containers/{id}/archive?path=`: extract the tar spooled in `body` into the
    /// directory `path` of the container. 403 when its rootfs is read-only.
    pub async fn archive_put(
        &self,
        reference: &str,
        path: &str,
        mut body: std::fs::File,
        no_overwrite_dir_non_dir: bool,
        copy_uid_gid: bool,
    ) -> Result<(), ApiError> {
        let c = self.archive_container(reference, path)?;
        if c.run.host.read_only {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "container rootfs is marked read-only",
            ));
        }
        let store = self.agent().image_store().clone();
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir,
            chown_to_user: copy_uid_gid.then(|| c.run.user.clone()),
        };
        let p = path.to_string();
        let id = c.id.clone();
        let _held = self.hold_if_stopped(&c).await;
        tokio::task::spawn_blocking(move || {
            archive::with_root(&store, id.as_str(), |root| {
                archive::extract_archive(root, &p, &mut body, &opts)
            })
        })
        .await
        .map_err(join_err)?
        .map_err(|e| archive_error(e, reference, path))?;
        self.emit_container(&c, "extract-to-dir", &[]);
        Ok(())
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
    fn only_the_exact_etc_paths_are_the_container_files() {
        assert_eq!(etc_file("/etc/hostname"), Some("hostname"));
        assert_eq!(etc_file("etc/./resolv.conf"), Some("resolv.conf"));
        assert_eq!(etc_file("/tmp/../etc/hosts"), Some("hosts"));
        assert_eq!(etc_file("/etc/hostname/"), None);
        assert_eq!(etc_file("/etc/passwd"), None);
        assert_eq!(etc_file("/x/etc/hosts"), None);
        assert_eq!(etc_file("/etc"), None);
    }

    #[test]
    fn errors_are_docker_shaped() {
        let e = archive_error(
            ArchiveError::NotFound {
                path: "/nope".into(),
            },
            "c1",
            "/nope",
        );
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "Could not find the file /nope in container c1");
        let e = archive_error(ArchiveError::NotADirectory, "c1", "/etc/hostname");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = archive_error(
            ArchiveError::Io {
                action: "create file",
                path: "/x".into(),
                source: io::Error::from_raw_os_error(libc::EROFS),
            },
            "c1",
            "/x",
        );
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }
}
