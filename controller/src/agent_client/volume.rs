//! Typed volume calls: the `local` driver's directories on a host.

use super::Agents;
use wharf_link::unexpected;
use wharf_protocol::agent::volume::{VolumeRequest, VolumeResponse};
use wharf_protocol::agent::{AgentFailure, AgentRequest, AgentResponse};
use wharf_protocol::NodeId;

fn req(r: VolumeRequest) -> AgentRequest {
    AgentRequest::Volume(r)
}

impl Agents {
    /// The directory holding the host's volumes.
    pub async fn volumes_root(&self, node: &NodeId) -> Result<String, AgentFailure> {
        match self.call(node, req(VolumeRequest::Root)).await? {
            AgentResponse::Volume(VolumeResponse::Root(root)) => Ok(root),
            other => Err(unexpected("volumes root", &other)),
        }
    }

    /// Bytes used by each volume of `names`, in order.
    pub async fn volume_sizes(
        &self,
        node: &NodeId,
        names: Vec<String>,
    ) -> Result<Vec<u64>, AgentFailure> {
        let n = names.len();
        match self.call(node, req(VolumeRequest::Sizes { names })).await? {
            AgentResponse::Volume(VolumeResponse::Sizes(s)) if s.len() == n => Ok(s),
            other => Err(unexpected("volume sizes", &other)),
        }
    }
}
