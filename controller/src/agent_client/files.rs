//! Typed files calls: a container's log ([`LogStream`]), `docker cp` ([`ArchiveDownload`],
//! [`ArchiveUpload`]) and a build's context, which lives on the agent.

use super::Agents;
use bytes::Bytes;
use tokio::sync::mpsc;
use wharf_link::{unexpected, ClientCall, ItemReceiver, ItemSender};
use wharf_protocol::agent::files::{FilesRequest, FilesResponse, LogQuery};
use wharf_protocol::agent::{AgentFailure, AgentRequest, AgentResponse};
use wharf_protocol::archive::{CopySpec, ExtractOptions, PathStat};
use wharf_protocol::runtime::LogEntry;
use wharf_protocol::wire::StreamItem;
use wharf_protocol::{ContainerId, NodeId};

fn req(r: FilesRequest) -> AgentRequest {
    AgentRequest::Files(r)
}

fn path_stat(what: &str, r: AgentResponse) -> Result<PathStat, AgentFailure> {
    match r {
        AgentResponse::Files(FilesResponse::Stat(s)) => Ok(s),
        other => Err(unexpected(what, &other)),
    }
}

impl Agents {
    /// Read the container's log as `query` selects it; returns once the agent has read
    /// it up to now (a log that cannot be read fails here).
    pub async fn logs(
        &self,
        node: &NodeId,
        id: &ContainerId,
        query: LogQuery,
    ) -> Result<LogStream, AgentFailure> {
        let follow = query.follow;
        let ClientCall {
            response,
            output,
            input,
        } = self.open(
            node,
            req(FilesRequest::Logs {
                id: id.clone(),
                query,
            }),
        )?;
        let stop = if follow {
            Some(output)
        } else {
            output.end();
            None
        };
        match response.get().await? {
            AgentResponse::Done => Ok(LogStream { rx: input, stop }),
            other => Err(unexpected("logs", &other)),
        }
    }

    /// The whole log of the container as `query` selects it, for a caller that shows
    /// it at once (`attach?logs=1`); `query.follow` is ignored.
    pub async fn read_log(
        &self,
        node: &NodeId,
        id: &ContainerId,
        query: LogQuery,
    ) -> Result<Vec<LogEntry>, AgentFailure> {
        let query = LogQuery {
            follow: false,
            ..query
        };
        let mut stream = self.logs(node, id, query).await?;
        let mut all = Vec::new();
        while let Some(batch) = stream.next().await? {
            all.extend(batch);
        }
        Ok(all)
    }

    /// Stat `path` in the container.
    pub async fn path_stat(
        &self,
        node: &NodeId,
        id: &ContainerId,
        path: &str,
    ) -> Result<PathStat, AgentFailure> {
        let r = req(FilesRequest::Stat {
            id: id.clone(),
            path: path.to_string(),
        });
        path_stat("stat", self.call(node, r).await?)
    }

    /// `path` of the container as a tar: its stat, then the bytes.
    pub async fn archive_get(
        &self,
        node: &NodeId,
        id: &ContainerId,
        path: &str,
    ) -> Result<(PathStat, ArchiveDownload), AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.open(
            node,
            req(FilesRequest::Get {
                id: id.clone(),
                path: path.to_string(),
            }),
        )?;
        output.end();
        let stat = path_stat("get archive", response.get().await?)?;
        Ok((stat, ArchiveDownload { rx: input }))
    }

    /// Whether `path` of the container is a directory (symlinks followed inside it).
    pub async fn is_dir(
        &self,
        node: &NodeId,
        id: &ContainerId,
        path: &str,
    ) -> Result<bool, AgentFailure> {
        let r = req(FilesRequest::IsDir {
            id: id.clone(),
            path: path.to_string(),
        });
        match self.call(node, r).await? {
            AgentResponse::Files(FilesResponse::IsDir(d)) => Ok(d),
            other => Err(unexpected("is dir", &other)),
        }
    }

    /// Collect a build's `COPY --from` sources from the container's filesystem: their
    /// content hash, then their tar.
    pub async fn collect(
        &self,
        node: &NodeId,
        id: &ContainerId,
        spec: CopySpec,
    ) -> Result<(String, ArchiveDownload), AgentFailure> {
        let r = req(FilesRequest::Collect {
            id: id.clone(),
            spec,
        });
        self.collected(node, r, "collect").await
    }

    /// Open a collecting call: its content hash, then its tar.
    async fn collected(
        &self,
        node: &NodeId,
        request: AgentRequest,
        what: &str,
    ) -> Result<(String, ArchiveDownload), AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.open(node, request)?;
        output.end();
        match response.get().await? {
            AgentResponse::Files(FilesResponse::Collected { hash }) => {
                Ok((hash, ArchiveDownload { rx: input }))
            }
            other => Err(unexpected(what, &other)),
        }
    }

    /// Extract the tar in `file` into the directory `path` of the container (a build's
    /// collected sources); returns once the agent has.
    pub async fn extract_file(
        &self,
        node: &NodeId,
        id: &ContainerId,
        path: &str,
        file: std::fs::File,
        options: ExtractOptions,
    ) -> Result<(), AgentFailure> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut upload = self.archive_put(node, id, path, options)?;
        let mut file = tokio::fs::File::from_std(file);
        let read_err = |e: std::io::Error| {
            AgentFailure::new(
                wharf_protocol::agent::FailureKind::Internal,
                format!("read archive spool: {e}"),
            )
        };
        file.rewind().await.map_err(read_err)?;
        let mut buf = vec![0u8; wharf_protocol::wire::ITEM_BYTES];
        loop {
            let n = file.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            if upload.send(&buf[..n]).await.is_err() {
                return Err(upload.failure().await);
            }
        }
        upload.finish().await
    }

    /// Unpack the build context `body` (a tar, plain, gzip or zstd, as the client sent
    /// it) as the context of `build` on the agent of `node`, which reads the Dockerfile
    /// `dockerfile` in it and applies `.dockerignore`; returns the Dockerfile's text. A
    /// body that ends with an error is cut short: the agent keeps nothing of it. The
    /// context stays until [`Agents::context_remove`] (or until this connection closes).
    pub async fn context_put(
        &self,
        node: &NodeId,
        build: &str,
        dockerfile: &str,
        mut body: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> Result<String, AgentFailure> {
        let ClientCall {
            response,
            mut output,
            input,
        } = self.open(
            node,
            req(FilesRequest::ContextPut {
                build: build.to_string(),
                dockerfile: dockerfile.to_string(),
            }),
        )?;
        // Kept until the answer: a call whose every part is gone is cancelled.
        let _input = input;
        let forward = async move {
            while let Some(chunk) = body.recv().await {
                match chunk {
                    Ok(data) => {
                        if output.send_shared(data).await.is_err() {
                            return;
                        }
                    }
                    // Dropped without its end, the stream is aborted.
                    Err(_) => return,
                }
            }
            output.end();
        };
        let response = response.get();
        tokio::pin!(response);
        // The agent may refuse before the body has ended (a bad tar): then the rest is
        // not sent.
        let r = tokio::select! {
            r = &mut response => r,
            () = forward => response.await,
        };
        match r? {
            AgentResponse::Files(FilesResponse::Dockerfile(text)) => Ok(text),
            other => Err(unexpected("put build context", &other)),
        }
    }

    /// Collect a build's `COPY`/`ADD` sources from the context of `build`: their content
    /// hash, then their tar.
    pub async fn context_collect(
        &self,
        node: &NodeId,
        build: &str,
        spec: CopySpec,
    ) -> Result<(String, ArchiveDownload), AgentFailure> {
        let r = req(FilesRequest::ContextCollect {
            build: build.to_string(),
            spec,
        });
        self.collected(node, r, "collect from build context").await
    }

    /// Remove the context of `build` (a build without one is fine).
    pub async fn context_remove(&self, node: &NodeId, build: &str) -> Result<(), AgentFailure> {
        let r = req(FilesRequest::ContextRemove {
            build: build.to_string(),
        });
        self.done(node, r).await
    }

    /// Begin extracting a tar into the directory `path` of the container: send the tar
    /// with [`ArchiveUpload::send`], then [`ArchiveUpload::finish`].
    pub fn archive_put(
        &self,
        node: &NodeId,
        id: &ContainerId,
        path: &str,
        options: ExtractOptions,
    ) -> Result<ArchiveUpload, AgentFailure> {
        let call = self.open(
            node,
            req(FilesRequest::Put {
                id: id.clone(),
                path: path.to_string(),
                options,
            }),
        )?;
        Ok(ArchiveUpload { call })
    }
}

/// The entries of a container's log, in batches, as the agent reads them.
pub struct LogStream {
    rx: ItemReceiver,
    stop: Option<ItemSender>,
}

impl LogStream {
    /// The next batch of entries; `None` at the end (all read, or, following, once
    /// [`LogStream::stop`] was called and the rest was sent).
    pub async fn next(&mut self) -> Result<Option<Vec<LogEntry>>, AgentFailure> {
        loop {
            return match self.rx.recv().await? {
                Some(StreamItem::LogEntries(batch)) => Ok(Some(batch)),
                Some(_) => continue,
                None => Ok(None),
            };
        }
    }

    /// Stop following: the agent sends what was written up to now, then ends.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            tx.end();
        }
    }
}

/// The bytes of a tar the agent sends.
pub struct ArchiveDownload {
    rx: ItemReceiver,
}

impl ArchiveDownload {
    /// The next bytes; `None` once the tar is complete; an error when it broke off.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, AgentFailure> {
        loop {
            return match self.rx.recv().await? {
                Some(StreamItem::Bytes(b)) => Ok(Some(Vec::from(b))),
                Some(_) => continue,
                None => Ok(None),
            };
        }
    }
}

/// A tar on its way to the agent. Dropped before [`ArchiveUpload::finish`], nothing is
/// extracted.
pub struct ArchiveUpload {
    call: ClientCall,
}

impl ArchiveUpload {
    /// Send bytes of the tar.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), AgentFailure> {
        self.call.output.send_bytes(data).await
    }

    /// The tar is complete: the agent extracts it; returns once it has.
    pub async fn finish(self) -> Result<(), AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.call;
        output.end();
        let r = response.get().await;
        drop(input);
        match r? {
            AgentResponse::Done => Ok(()),
            other => Err(unexpected("put archive", &other)),
        }
    }

    /// The agent's answer after a failed [`ArchiveUpload::send`] (it refused the call, or
    /// went away).
    pub async fn failure(self) -> AgentFailure {
        match self.call.response.get().await {
            Err(f) => f,
            Ok(other) => unexpected("put archive", &other),
        }
    }
}
