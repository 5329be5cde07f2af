//! `POST /wharf/raft/snapshot`: build a Raft snapshot of this controller's state now, wait
//! until it is stored, and answer what it was, `{"index": …, "bytes": …, "millis": …}`:
//! the last log index it covers, its size and how long building it took. For benchmarks
//! and operators (`curl -X POST --unix-socket /run/wharf/docker.sock
//! http://localhost/wharf/raft/snapshot`); Raft takes one by itself every 10,000 log entries.
//!
//! It is served as `POST /wharf/settings` is: on the unix socket (its file permissions are
//! the authentication), the TLS listener (a client certificate of the cluster CA) and the
//! loopback-only plain listener. It changes no state: the snapshot is this controller's.

use super::error::ApiError;
use super::http::{json, Resp};
use crate::raft::{SnapshotStats, Store};
use http::StatusCode;
use serde_json::{json, Value};

/// A snapshot built, as the API shows it (pure).
pub fn snapshot_json(s: &SnapshotStats) -> Value {
    json!({
        "index": s.index,
        "bytes": s.bytes,
        "millis": s.millis,
    })
}

/// `POST /wharf/raft/snapshot`.
pub async fn snapshot(store: &Store) -> Result<Resp, ApiError> {
    let built = store.snapshot().await?;
    tracing::info!(
        index = built.index,
        bytes = built.bytes,
        millis = built.millis,
        "raft snapshot built on request"
    );
    Ok(json(StatusCode::OK, &snapshot_json(&built)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use wharf_protocol::state::{Command, ImageRecord};
    use wharf_protocol::{Digest, ImageId};

    async fn body(resp: Resp) -> (StatusCode, Value) {
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn put_image(store: &Store, n: u8) {
        let config = vec![n; 16];
        let image = ImageRecord {
            id: ImageId(Digest::of(&config)),
            config,
            diff_ids: vec![],
            size: 0,
            loaded_ns: 1,
        };
        store
            .propose(Command::PutImage { image })
            .await
            .unwrap()
            .unwrap();
    }

    /// Each POST builds a snapshot of everything applied at that moment and answers its
    /// index and size (the file's); the metrics show the last one; once the store is shut
    /// down, the answer is an error in Docker's format.
    #[tokio::test]
    async fn a_post_builds_a_snapshot_and_answers_its_index_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1, "127.0.0.1:7946".into())
            .await
            .unwrap();
        put_image(&store, 1).await;
        let (status, first) = body(snapshot(&store).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let applied = store.stats().last_applied;
        assert_eq!(first["index"], applied, "{first}");
        let files: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let size = std::fs::metadata(&files[0]).unwrap().len();
        assert_eq!(first["bytes"], size);
        assert!(first["millis"].is_u64(), "{first}");

        for n in 2..5 {
            put_image(&store, n).await;
        }
        let (_, second) = body(snapshot(&store).await.unwrap()).await;
        assert!(
            second["index"].as_u64() > first["index"].as_u64(),
            "{first} then {second}"
        );
        assert!(
            second["bytes"].as_u64() > first["bytes"].as_u64(),
            "three more images: {first} then {second}"
        );
        let stats = store.stats().snapshot;
        assert_eq!(stats.builds, 2);
        assert_eq!(snapshot_json(&stats), second);

        store.shutdown().await.unwrap();
        let err = snapshot(&store).await.unwrap_err();
        let (status, msg) = body(super::super::http::error(&err)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            msg["message"].as_str().is_some_and(|m| m.contains("raft")),
            "{msg}"
        );
    }
}
