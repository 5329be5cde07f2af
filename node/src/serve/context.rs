//! Build context requests: a `docker build` upload unpacked as it streams in, `COPY`
//! sources collected from it, its removal. The contexts a connection put are removed
//! when it closes ([`ConnContexts`]).
//!
//! ```text
//!  ContextPut: Bytes items ─► BodyReader (blocking) ─► build_context::put ─► Dockerfile
//!        failed: Failed, then the rest of the body is read and dropped
//!  ContextCollect ─► copy::collect(context) ─► Collected, Bytes items (as Collect)
//! ```

use super::files::{copy_failure, send_collected, thread_failure};
use crate::build_context::{self, ConnContexts, ContextError};
use crate::copy::{self, CopyError, CopySpec};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::Arc;
use wharf_link::{ItemReceiver, ServerCall};
use wharf_protocol::agent::files::FilesResponse;
use wharf_protocol::agent::{AgentFailure, AgentResponse, FailureKind};
use wharf_protocol::wire::StreamItem;

/// What crosses the boundary of a context failure: the client's upload at fault is
/// `InvalidInput`, with the message `docker build` shows.
pub fn context_failure(e: &ContextError) -> AgentFailure {
    let kind = match e {
        ContextError::File(c) => return copy_failure(c),
        ContextError::Exists(_) => FailureKind::Conflict,
        ContextError::NotFound(_) => FailureKind::NotFound,
        ContextError::Create { .. } | ContextError::List { .. } => FailureKind::Internal,
        ContextError::BadId(_)
        | ContextError::Read(_)
        | ContextError::Unpack(_)
        | ContextError::NoDockerfile(_)
        | ContextError::TooLarge(_)
        | ContextError::NotText(_)
        | ContextError::Ignore(_) => FailureKind::InvalidInput,
    };
    AgentFailure::new(kind, e.to_string())
}

/// A blocking `Read` over a call's `Bytes` items; a stream that was aborted (or whose
/// connection closed) is an error, never an end.
struct BodyReader {
    input: ItemReceiver,
    rt: tokio::runtime::Handle,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rt.block_on(self.input.recv()) {
                Ok(Some(StreamItem::Bytes(b))) => {
                    self.cur = Vec::from(b);
                    self.pos = 0;
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(0),
                Err(f) => return Err(io::Error::other(f.message)),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Read the rest of the body (after the tar's end); fails when it was cut short.
fn drain(body: &mut BodyReader) -> io::Result<()> {
    io::copy(body, &mut io::sink()).map(drop)
}

/// `ContextPut`: unpack the streamed tar as the context of `build`.
pub(super) async fn put(
    contexts: &Arc<ConnContexts>,
    build: String,
    dockerfile: String,
    call: ServerCall,
) {
    let (mut responder, input, _output) = call.into_parts();
    let rt = tokio::runtime::Handle::current();
    // The connection's contexts are held until the unpacking ends, so a connection that
    // closes meanwhile removes this one after it.
    let contexts = contexts.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut body = BodyReader {
            input,
            rt,
            cur: Vec::new(),
            pos: 0,
        };
        let data_dir = contexts.data_dir().to_path_buf();
        let res = build_context::put(&data_dir, &build, &dockerfile, &mut body, drain);
        if res.is_ok() {
            contexts.add(&build);
        }
        (body.input, res.map_err(|e| context_failure(&e)))
    })
    .await;
    match res {
        Ok((_, Ok(text))) => {
            responder.respond(AgentResponse::Files(FilesResponse::Dockerfile(text)))
        }
        Ok((mut input, Err(f))) => {
            responder.respond(AgentResponse::Failed(f));
            // A controller that sends on after the failure is not left without credit.
            while let Ok(Some(_)) = input.recv().await {}
        }
        Err(e) => responder.respond(AgentResponse::Failed(thread_failure(e))),
    }
}

/// `ContextCollect`: collect `spec`'s sources from the context of `build`.
pub(super) async fn collect(
    contexts: &Arc<ConnContexts>,
    build: String,
    spec: CopySpec,
    call: ServerCall,
) {
    let data_dir = contexts.data_dir().to_path_buf();
    let collected = tokio::task::spawn_blocking(move || {
        build_context::sweep_once(&data_dir);
        let dir = build_context::context_dir(&data_dir, &build).map_err(|e| context_failure(&e))?;
        let root = copy::open_root(&dir).map_err(|e| copy_failure(&e))?;
        copy::collect(root.as_fd(), &spec, &data_dir).map_err(|e: CopyError| copy_failure(&e))
    })
    .await
    .map_err(thread_failure)
    .and_then(|r| r);
    send_collected(collected, call).await
}

/// `ContextRemove`: remove the context of `build`, if there is one.
pub(super) async fn remove(contexts: &Arc<ConnContexts>, build: String, mut call: ServerCall) {
    let c = contexts.clone();
    let res = tokio::task::spawn_blocking(move || {
        build_context::sweep_once(c.data_dir());
        build_context::remove(c.data_dir(), &build)?;
        c.forget(&build);
        Ok(())
    })
    .await
    .map_err(thread_failure)
    .and_then(|r: Result<(), ContextError>| r.map_err(|e| context_failure(&e)));
    call.respond_with(res.map(|()| AgentResponse::Done));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build_context::tests::tar_of;
    use wharf_protocol::agent::files::FilesRequest;
    use wharf_protocol::agent::AgentRequest;
    use wharf_protocol::archive::CopySpec;

    /// A link whose agent end serves the context requests of one connection from
    /// `data_dir`, as `serve_connection` does; its contexts go when it closes.
    fn context_server(data_dir: &std::path::Path) -> wharf_link::Client {
        let (ours, theirs) = tokio::io::duplex(1024 * 1024);
        let (r, w) = tokio::io::split(theirs);
        let contexts = Arc::new(ConnContexts::new(data_dir));
        tokio::spawn(async move {
            let _ = wharf_link::serve(
                r,
                w,
                |_| {},
                move |request, call| {
                    let contexts = contexts.clone();
                    async move {
                        if let AgentRequest::Files(r) = request {
                            super::super::files::handle_context(&contexts, r, call).await;
                        }
                    }
                },
            )
            .await;
        });
        let (r, w) = tokio::io::split(ours);
        wharf_link::connect(r, w)
    }

    fn put_request(build: &str) -> AgentRequest {
        AgentRequest::Files(FilesRequest::ContextPut {
            build: build.into(),
            dockerfile: "Dockerfile".into(),
        })
    }

    async fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_context_is_put_collected_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let client = context_server(d.path());
        let tar = tar_of(&[("Dockerfile", "FROM scratch\n"), ("app.txt", "hi")]);
        let mut call = client.open(put_request("0a"));
        call.output.send_bytes(&tar).await.unwrap();
        call.output.end();
        assert_eq!(
            call.response.get().await.unwrap(),
            AgentResponse::Files(FilesResponse::Dockerfile("FROM scratch\n".into()))
        );
        let spec = CopySpec {
            keyword: "COPY".into(),
            sources: vec!["app.txt".into()],
            dest: "app/".into(),
            dest_is_dir: true,
            ..CopySpec::default()
        };
        let mut call = client.open(AgentRequest::Files(FilesRequest::ContextCollect {
            build: "0a".into(),
            spec: spec.clone(),
        }));
        call.output.end();
        let r = call.response.get().await.unwrap();
        assert!(
            matches!(&r, AgentResponse::Files(FilesResponse::Collected { hash }) if hash.starts_with("file:")),
            "{r:?}"
        );
        let mut tar = Vec::new();
        while let Some(item) = call.input.recv().await.unwrap() {
            if let StreamItem::Bytes(b) = item {
                tar.extend_from_slice(&b);
            }
        }
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.iter().any(|n| n == "app/app.txt"), "{names:?}");
        let remove = AgentRequest::Files(FilesRequest::ContextRemove { build: "0a".into() });
        assert_eq!(client.call(remove.clone()).await, Ok(AgentResponse::Done));
        assert!(!d.path().join("build/0a").exists());
        assert_eq!(client.call(remove).await, Ok(AgentResponse::Done));
        let e = client
            .call(AgentRequest::Files(FilesRequest::ContextCollect {
                build: "0a".into(),
                spec,
            }))
            .await
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::NotFound);
    }

    #[tokio::test]
    async fn a_cut_short_upload_leaves_no_directory() {
        let d = tempfile::tempdir().unwrap();
        let client = context_server(d.path());
        let tar = tar_of(&[("Dockerfile", "FROM scratch\n"), ("big", &"x".repeat(9000))]);
        let mut call = client.open(put_request("0b"));
        call.output.send_bytes(&tar[..2048]).await.unwrap();
        assert!(
            eventually(|| d.path().join("build/0b/context").exists()).await,
            "unpacking began"
        );
        // Dropped without its end: the stream is aborted.
        drop(call.output);
        let e = call.response.get().await.unwrap_err();
        assert_eq!(e.kind, FailureKind::InvalidInput);
        assert!(e.message.contains("the stream was cut short"), "{e}");
        assert!(!d.path().join("build/0b").exists());

        // The whole tar, aborted only after its end: nothing either.
        let mut call = client.open(put_request("0c"));
        call.output.send_bytes(&tar).await.unwrap();
        drop(call.output);
        assert!(call.response.get().await.is_err());
        assert!(!d.path().join("build/0c").exists());
    }

    #[tokio::test]
    async fn a_failed_context_is_refused_with_dockers_words() {
        let d = tempfile::tempdir().unwrap();
        let client = context_server(d.path());
        let tar = tar_of(&[("app.txt", "hi")]);
        let mut call = client.open(put_request("0d"));
        call.output.send_bytes(&tar).await.unwrap();
        call.output.end();
        let e = call.response.get().await.unwrap_err();
        assert_eq!(e.kind, FailureKind::InvalidInput);
        assert_eq!(e.message, "Cannot locate specified Dockerfile: Dockerfile");
        assert!(!d.path().join("build/0d").exists());
    }

    #[tokio::test]
    async fn a_bad_build_id_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let client = context_server(d.path());
        let outside = d.path().join("outside");
        let tar = tar_of(&[("Dockerfile", "FROM scratch\n")]);
        for bad in ["../outside", "0A", "", &"a".repeat(65)] {
            let mut call = client.open(put_request(bad));
            // The agent reads on after refusing, so the upload is not left hanging.
            call.output.send_bytes(&tar).await.unwrap();
            call.output.end();
            let e = call.response.get().await.unwrap_err();
            assert_eq!(e.kind, FailureKind::InvalidInput, "{bad:?}");
            assert!(e.message.contains("invalid build id"), "{e}");
            let e = client
                .call(AgentRequest::Files(FilesRequest::ContextRemove {
                    build: bad.into(),
                }))
                .await
                .unwrap_err();
            assert_eq!(e.kind, FailureKind::InvalidInput);
        }
        assert!(!outside.exists());
        assert!(!d.path().join("build").exists());
    }

    #[tokio::test]
    async fn contexts_of_a_closed_connection_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("Dockerfile", "FROM scratch\n")]);
        let kept = context_server(d.path());
        let closing = context_server(d.path());
        for (client, build) in [(&kept, "1a"), (&closing, "1b"), (&closing, "1c")] {
            let mut call = client.open(put_request(build));
            call.output.send_bytes(&tar).await.unwrap();
            call.output.end();
            assert!(call.response.get().await.is_ok());
        }
        assert!(d.path().join("build/1b/context").exists());
        drop(closing);
        assert!(
            eventually(
                || !d.path().join("build/1b").exists() && !d.path().join("build/1c").exists()
            )
            .await,
            "the closed connection's contexts are removed"
        );
        assert!(d.path().join("build/1a/context/Dockerfile").exists());
    }
}
