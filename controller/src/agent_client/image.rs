//! Typed image calls, and [`Lease`], the hold a host keeps on layers it added until the
//! controller has recorded the image that names them.
//!
//! ```text
//!  ByteStream (HTTP body) ─► upload ─► Load / Import ─► (result, Lease) ─► record ─► release
//!  Save / Export ─► download ─► ByteStream (HTTP response body)
//!  collect: BeginCollect ─► read chains in use ─► Collect
//! ```

use super::Agents;
use crate::engine::images::ByteStream;
use bytes::Bytes;
use std::collections::BTreeMap;
use wharf_link::{unexpected, ClientCall, ItemReceiver, ItemSender};
use wharf_protocol::agent::image::{ImageRequest, ImageResponse, LeaseId};
use wharf_protocol::agent::{AgentFailure, AgentRequest, AgentResponse};
use wharf_protocol::image::{Change, Collected, LoadedImage, SaveImage};
use wharf_protocol::wire::StreamItem;
use wharf_protocol::{ContainerId, DiffId, NodeId};

fn req(r: ImageRequest) -> AgentRequest {
    AgentRequest::Image(r)
}

fn image(what: &str, r: AgentResponse) -> Result<ImageResponse, AgentFailure> {
    match r {
        AgentResponse::Image(i) => Ok(i),
        other => Err(unexpected(what, &other)),
    }
}

fn wrong(what: &str, r: ImageResponse) -> AgentFailure {
    unexpected(what, &AgentResponse::Image(r))
}

/// A host's hold on layers it added (load, import, commit); a collection never frees
/// them while it lives. Release it once the image naming them is recorded (or was not
/// made); dropped unreleased, it is released in the background.
pub struct Lease {
    agents: Agents,
    node: NodeId,
    id: Option<LeaseId>,
}

impl Lease {
    /// Let the layers go; a failure only means the host already has (its connection
    /// closed).
    pub async fn release(mut self) {
        if let Some(lease) = self.id.take() {
            let _ = self
                .agents
                .done(&self.node, req(ImageRequest::Release { lease }))
                .await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(lease) = self.id.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (agents, node) = (self.agents.clone(), self.node);
            rt.spawn(async move {
                let _ = agents
                    .done(&node, req(ImageRequest::Release { lease }))
                    .await;
            });
        }
    }
}

impl Agents {
    fn lease(&self, node: &NodeId, id: LeaseId) -> Lease {
        Lease {
            agents: self.clone(),
            node: *node,
            id: Some(id),
        }
    }

    /// Open a call that uploads `body`, and get its answer; the answer may come before the
    /// upload ends (a refused archive), which then stops.
    async fn upload(
        &self,
        node: &NodeId,
        request: ImageRequest,
        mut body: ByteStream,
    ) -> Result<AgentResponse, AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.open(node, req(request))?;
        let send = async move {
            let mut output: ItemSender = output;
            while let Some(chunk) = body.recv().await {
                match chunk {
                    Ok(data) => {
                        if output.send_shared(data).await.is_err() {
                            // The call is over; its answer says why.
                            return;
                        }
                    }
                    Err(e) => {
                        return output.abort(AgentFailure::new(
                            wharf_protocol::agent::FailureKind::InvalidInput,
                            e.to_string(),
                        ));
                    }
                }
            }
            output.end();
        };
        let answer = response.get();
        tokio::pin!(answer);
        let r = tokio::select! {
            r = &mut answer => r,
            () = send => answer.await,
        };
        drop(input);
        r
    }

    /// Open a call that answers `Done` and then downloads bytes, as a [`ByteStream`]; a
    /// stream the agent aborts ends with an error item.
    async fn download(
        &self,
        node: &NodeId,
        request: ImageRequest,
    ) -> Result<ByteStream, AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.open(node, req(request))?;
        output.end();
        response.get().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(forward_download(input, tx));
        Ok(rx)
    }

    /// Load a `docker save` archive arriving on `body`; its images, and the lease on their
    /// layers.
    pub async fn load_images(
        &self,
        node: &NodeId,
        body: ByteStream,
    ) -> Result<(Vec<LoadedImage>, Lease), AgentFailure> {
        match image("load", self.upload(node, ImageRequest::Load, body).await?)? {
            ImageResponse::Loaded { images, lease } => Ok((images, self.lease(node, lease))),
            other => Err(wrong("load", other)),
        }
    }

    /// Add the root filesystem tarball arriving on `body` as a layer on `parent`; its
    /// DiffID, the size of the chain, and the lease on it.
    pub async fn import_layer(
        &self,
        node: &NodeId,
        parent: Vec<DiffId>,
        body: ByteStream,
    ) -> Result<(DiffId, u64, Lease), AgentFailure> {
        let r = self
            .upload(node, ImageRequest::Import { parent }, body)
            .await?;
        match image("import", r)? {
            ImageResponse::Imported {
                diff_id,
                size,
                lease,
            } => Ok((diff_id, size, self.lease(node, lease))),
            other => Err(wrong("import", other)),
        }
    }

    /// A `docker save` archive of `images`, streamed; fails at once (`NotFound`) when a
    /// layer's tar is not on the host.
    pub async fn save_images(
        &self,
        node: &NodeId,
        images: Vec<SaveImage>,
    ) -> Result<ByteStream, AgentFailure> {
        self.download(node, ImageRequest::Save { images }).await
    }

    /// The container's root filesystem as a tar, streamed.
    pub async fn export_rootfs(
        &self,
        node: &NodeId,
        id: &ContainerId,
    ) -> Result<ByteStream, AgentFailure> {
        let id = id.clone();
        self.download(node, ImageRequest::Export { id }).await
    }

    /// Commit the container's writable layer on top of `parent`: the new layer (`None`
    /// when nothing changed), the size of the chain, and the lease on it.
    pub async fn commit_layer(
        &self,
        node: &NodeId,
        id: &ContainerId,
        parent: Vec<DiffId>,
    ) -> Result<(Option<DiffId>, u64, Lease), AgentFailure> {
        let r = req(ImageRequest::Commit {
            id: id.clone(),
            parent,
        });
        match image("commit", self.call(node, r).await?)? {
            ImageResponse::Committed {
                diff_id,
                size,
                lease,
            } => Ok((diff_id, size, self.lease(node, lease))),
            other => Err(wrong("commit", other)),
        }
    }

    /// What the container changed against its image.
    pub async fn changes(
        &self,
        node: &NodeId,
        id: &ContainerId,
    ) -> Result<Vec<Change>, AgentFailure> {
        let id = id.clone();
        match image(
            "changes",
            self.call(node, req(ImageRequest::Changes { id })).await?,
        )? {
            ImageResponse::Changes(c) => Ok(c),
            other => Err(wrong("changes", other)),
        }
    }

    /// Each layer's own size of the chain `diff_ids`, bottom first (0 when missing).
    pub async fn layer_sizes(
        &self,
        node: &NodeId,
        diff_ids: &[DiffId],
    ) -> Result<Vec<u64>, AgentFailure> {
        let r = req(ImageRequest::LayerSizes {
            diff_ids: diff_ids.to_vec(),
        });
        match image("layer sizes", self.call(node, r).await?)? {
            ImageResponse::Sizes(s) => Ok(s),
            other => Err(wrong("layer sizes", other)),
        }
    }

    /// Bytes of the chain's unpacked layers on the host (what `docker images` shows).
    pub async fn layers_size(
        &self,
        node: &NodeId,
        diff_ids: &[DiffId],
    ) -> Result<u64, AgentFailure> {
        Ok(self.layer_sizes(node, diff_ids).await?.iter().sum())
    }

    /// Whether every layer of the chain is on the host.
    pub async fn has_layers(
        &self,
        node: &NodeId,
        diff_ids: &[DiffId],
    ) -> Result<bool, AgentFailure> {
        let r = req(ImageRequest::HasLayers {
            diff_ids: diff_ids.to_vec(),
        });
        match image("has layers", self.call(node, r).await?)? {
            ImageResponse::Present(p) => Ok(p),
            other => Err(wrong("has layers", other)),
        }
    }

    /// Free the layers nothing needs: `in_use` gives the chains of every image and
    /// container, read after the collection has begun on the host, so that an image
    /// recorded meanwhile is either read or still leased.
    pub async fn collect_layers(
        &self,
        node: &NodeId,
        in_use: impl FnOnce() -> Vec<Vec<DiffId>>,
    ) -> Result<Collected, AgentFailure> {
        let ticket = match image(
            "begin collect",
            self.call(node, req(ImageRequest::BeginCollect)).await?,
        )? {
            ImageResponse::Ticket(t) => t,
            other => return Err(wrong("begin collect", other)),
        };
        let in_use = in_use();
        match image(
            "collect",
            self.call(node, req(ImageRequest::Collect { ticket, in_use }))
                .await?,
        )? {
            ImageResponse::Collected(c) => Ok(c),
            other => Err(wrong("collect", other)),
        }
    }

    /// `GraphDriver.Data` of the chain on the host; empty without layers.
    pub async fn graph_driver(
        &self,
        node: &NodeId,
        diff_ids: &[DiffId],
    ) -> Result<BTreeMap<String, String>, AgentFailure> {
        let r = req(ImageRequest::GraphDriver {
            diff_ids: diff_ids.to_vec(),
        });
        match image("graph driver", self.call(node, r).await?)? {
            ImageResponse::GraphDriver(d) => Ok(d),
            other => Err(wrong("graph driver", other)),
        }
    }
}

/// Pass a download's items on as HTTP body chunks; an abort or a lost agent becomes an
/// error item, so the client sees a broken transfer, never a short archive.
async fn forward_download(
    mut input: ItemReceiver,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    loop {
        let item = match input.recv().await {
            Ok(Some(StreamItem::Bytes(b))) => Ok(b),
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(f) => Err(std::io::Error::other(f.message)),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            // The client went away: dropping `input` cancels the call.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_client::AgentClient;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use wharf_link::ServerCall;
    use wharf_protocol::agent::FailureKind;

    struct Direct(wharf_link::Client);

    impl AgentClient for Direct {
        fn open(&self, _: &NodeId, request: AgentRequest) -> Result<ClientCall, AgentFailure> {
            Ok(self.0.open(request))
        }

        fn events(
            &self,
            _: &NodeId,
        ) -> Option<tokio::sync::mpsc::UnboundedReceiver<wharf_protocol::agent::AgentEvent>>
        {
            self.0.take_events()
        }
    }

    /// Agents over an in-memory connection to `handler`; the requests it got.
    fn agents<F, Fut>(handler: F) -> (Agents, Arc<Mutex<Vec<ImageRequest>>>)
    where
        F: Fn(ImageRequest, ServerCall) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (r, w) = tokio::io::split(theirs);
        let s = seen.clone();
        tokio::spawn(wharf_link::serve(
            r,
            w,
            |_| {},
            move |request, call| {
                let AgentRequest::Image(request) = request else {
                    panic!("not an image request: {request:?}");
                };
                s.lock().unwrap().push(request.clone());
                handler(request, call)
            },
        ));
        let (r, w) = tokio::io::split(ours);
        let client = Direct(wharf_link::connect(r, w));
        (Agents::new(Arc::new(client)), seen)
    }

    fn body(len: usize) -> ByteStream {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for _ in 0..len / (1 << 20) {
                if tx.send(Ok(Bytes::from(vec![0u8; 1 << 20]))).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    #[tokio::test]
    async fn a_refused_upload_answers_without_waiting_for_the_rest_of_the_body() {
        let (agents, _) = agents(|_, mut call| async move {
            call.respond(AgentResponse::Failed(AgentFailure::new(
                FailureKind::InvalidInput,
                "archive/tar: invalid tar header",
            )));
        });
        // Far more than the credit window: an upload that waited for room would hang.
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            agents.load_images(&NodeId(1), body(64 << 20)),
        )
        .await
        .expect("the refusal arrives while the body is still being sent");
        let err = r.err().expect("refused");
        assert_eq!(err.kind, FailureKind::InvalidInput);
        assert_eq!(err.message, "archive/tar: invalid tar header");
    }

    #[tokio::test]
    async fn a_download_cut_by_the_agent_ends_with_an_error_not_a_short_archive() {
        let (agents, _) = agents(|_, mut call| async move {
            call.respond(AgentResponse::Done);
            let _ = call
                .output
                .send(StreamItem::Bytes(Bytes::from_static(b"head")))
                .await;
            call.output
                .abort(AgentFailure::new(FailureKind::Internal, "disk read failed"));
        });
        let mut s = agents.save_images(&NodeId(1), vec![]).await.unwrap();
        assert_eq!(&s.recv().await.unwrap().unwrap()[..], b"head");
        let err = s.recv().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "disk read failed");
    }

    #[tokio::test]
    async fn a_lease_dropped_unreleased_is_released_in_the_background() {
        let (agents, seen) = agents(|request, mut call| async move {
            let r = match request {
                ImageRequest::Commit { .. } => AgentResponse::Image(ImageResponse::Committed {
                    diff_id: None,
                    size: 0,
                    lease: LeaseId(5),
                }),
                _ => AgentResponse::Done,
            };
            call.respond(r);
        });
        let id: ContainerId = format!("{:064x}", 1).parse().unwrap();
        let (_, _, lease) = agents.commit_layer(&NodeId(1), &id, vec![]).await.unwrap();
        drop(lease);
        let released = || {
            seen.lock()
                .unwrap()
                .contains(&ImageRequest::Release { lease: LeaseId(5) })
        };
        for _ in 0..100 {
            if released() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the dropped lease was never released");
    }
}
