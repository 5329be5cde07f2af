//! How the controller reaches a host: only through agent messages, addressed to a node.
//!
//! ```text
//!  api/ ─► engine/ ─► Agents (typed calls) ─► dyn AgentClient ─► wharf_link::Client
//!                                                 │                    │ frames
//!                         in_process (wharf up) ──┤                    ▼
//!                         unix socket ────────────┤        node: serve_connection ─► Agent
//!                         fake (unit tests) ──────┘
//! ```
//!
//! A remote agent plugs in as one more [`AgentClient`]: a connection per node over mutual
//! TLS (QUIC or HTTP/2 streams), carrying the same frames.

mod container;
pub mod fake;
mod files;
mod image;
pub mod in_process;
mod network;
pub mod unix;
mod volume;

pub use container::{AttachCall, AttachInput, AttachOutput, HealthWatch};
pub use files::{ArchiveDownload, ArchiveUpload, LogStream};
pub use image::Lease;

use std::sync::Arc;
use tokio::sync::mpsc;
use wharf_link::ClientCall;
use wharf_protocol::agent::host::{
    HostContainer, HostInfo, HostRequest, HostResponse, LayerInventory,
};
use wharf_protocol::agent::{AgentEvent, AgentFailure, AgentRequest, AgentResponse, FailureKind};
use wharf_protocol::NodeId;

/// A way to reach the agents of the cluster: open a call on the agent of `node`.
pub trait AgentClient: Send + Sync {
    /// Open a call; fails at once when `node` has no agent this client reaches.
    fn open(&self, node: &NodeId, request: AgentRequest) -> Result<ClientCall, AgentFailure>;

    /// The events the agent of `node` reports unasked; `None` after the first call for a
    /// node (one consumer) or for a node this client does not reach.
    fn events(&self, node: &NodeId) -> Option<mpsc::UnboundedReceiver<AgentEvent>>;

    /// Whether this client has a connection to the agent of `node` now (a controller
    /// places containers only where it can carry out the create).
    fn reaches(&self, _node: &NodeId) -> bool {
        true
    }
}

/// A connection to the one agent of `node` (in process, over a unix socket, or the fake's):
/// the [`AgentClient`] that refuses every other node.
pub struct NodeConnection {
    node: NodeId,
    client: wharf_link::Client,
}

impl NodeConnection {
    /// `client`, as the connection to the agent of `node`.
    pub fn new(node: NodeId, client: wharf_link::Client) -> NodeConnection {
        NodeConnection { node, client }
    }
}

impl AgentClient for NodeConnection {
    fn open(&self, node: &NodeId, request: AgentRequest) -> Result<ClientCall, AgentFailure> {
        if *node != self.node {
            return Err(no_agent(node));
        }
        Ok(self.client.open(request))
    }

    fn events(&self, node: &NodeId) -> Option<mpsc::UnboundedReceiver<AgentEvent>> {
        (*node == self.node)
            .then(|| self.client.take_events())
            .flatten()
    }
}

/// The typed calls of the agent protocol over an [`AgentClient`]; what the engine holds.
#[derive(Clone)]
pub struct Agents {
    client: Arc<dyn AgentClient>,
}

impl Agents {
    /// Typed calls over `client`.
    pub fn new(client: Arc<dyn AgentClient>) -> Agents {
        Agents { client }
    }

    /// Whether the agent of `node` is reachable from here now.
    pub fn reaches(&self, node: &NodeId) -> bool {
        self.client.reaches(node)
    }

    /// Open a call with streams.
    pub fn open(&self, node: &NodeId, request: AgentRequest) -> Result<ClientCall, AgentFailure> {
        self.client.open(node, request)
    }

    /// A call without streams: its response, `Failed` as the error.
    pub async fn call(
        &self,
        node: &NodeId,
        request: AgentRequest,
    ) -> Result<AgentResponse, AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.client.open(node, request)?;
        output.end();
        let r = response.get().await;
        drop(input);
        r
    }

    /// The events of the agent of `node` (one consumer).
    pub fn events(&self, node: &NodeId) -> Option<mpsc::UnboundedReceiver<AgentEvent>> {
        self.client.events(node)
    }

    /// The layers the host of `node` holds.
    pub async fn inventory(&self, node: &NodeId) -> Result<LayerInventory, AgentFailure> {
        match self
            .call(node, AgentRequest::Host(HostRequest::Inventory))
            .await?
        {
            AgentResponse::Host(HostResponse::Inventory(inv)) => Ok(inv),
            other => Err(wharf_link::unexpected("inventory", &other)),
        }
    }

    /// The containers the host of `node` holds, with whether each runs (reconcile).
    pub async fn host_containers(&self, node: &NodeId) -> Result<Vec<HostContainer>, AgentFailure> {
        match self
            .call(node, AgentRequest::Host(HostRequest::Containers))
            .await?
        {
            AgentResponse::Host(HostResponse::Containers(list)) => Ok(list),
            other => Err(wharf_link::unexpected("host containers", &other)),
        }
    }

    /// Tell the host of `node` how to fence itself ([`HostRequest::Fence`]).
    pub async fn set_fence(
        &self,
        node: &NodeId,
        lease_ms: u64,
        movable: Vec<wharf_protocol::ContainerId>,
    ) -> Result<(), AgentFailure> {
        match self
            .call(
                node,
                AgentRequest::Host(HostRequest::Fence { lease_ms, movable }),
            )
            .await?
        {
            AgentResponse::Done => Ok(()),
            other => Err(wharf_link::unexpected("fence", &other)),
        }
    }

    /// What `docker info` shows of the host of `node`.
    pub async fn host_info(&self, node: &NodeId) -> Result<HostInfo, AgentFailure> {
        match self
            .call(node, AgentRequest::Host(HostRequest::Info))
            .await?
        {
            AgentResponse::Host(HostResponse::Info(info)) => Ok(info),
            other => Err(wharf_link::unexpected("info", &other)),
        }
    }

    /// A call that answers `Done`.
    pub async fn done(&self, node: &NodeId, request: AgentRequest) -> Result<(), AgentFailure> {
        match self.call(node, request).await? {
            AgentResponse::Done => Ok(()),
            other => Err(wharf_link::unexpected("a request", &other)),
        }
    }
}

/// The failure of a call to a node no client reaches.
pub fn no_agent(node: &NodeId) -> AgentFailure {
    AgentFailure::new(
        FailureKind::Unavailable,
        format!("no agent of node {node} is connected"),
    )
}
