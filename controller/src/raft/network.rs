//! The Raft network of a one-member cluster: there are no peers, so every RPC fails as
//! unreachable.
//!
//! A one-member cluster never sends an RPC; should membership ever name another node, openraft
//! sees it as unreachable and backs off. A later issue replaces this with the real network
//! over QUIC with mutual TLS; until then this is the only [`RaftNetworkFactory`] of Wharf.

use openraft::error::{InstallSnapshotError, RPCError, RaftError as ApiError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::{RaftError, TypeConfig};

/// Makes a [`NoNetworkClient`] for every peer; pass to the Raft node of a one-member cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNetwork;

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetworkClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> NoNetworkClient {
        NoNetworkClient { target }
    }
}

/// A "connection" to one peer that fails every RPC with [`Unreachable`].
#[derive(Clone, Copy, Debug)]
pub struct NoNetworkClient {
    target: u64,
}

impl NoNetworkClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        let err = RaftError::NoNetwork {
            target: self.target,
        };
        RPCError::Unreachable(Unreachable::new(&err))
    }
}

impl RaftNetwork<TypeConfig> for NoNetworkClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, ApiError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, ApiError<u64, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, ApiError<u64>>> {
        Err(self.unreachable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Vote;
    use std::time::Duration;

    #[tokio::test]
    async fn every_rpc_is_unreachable() {
        let mut client = NoNetwork
            .new_client(2, &BasicNode::new("10.0.0.2:7000"))
            .await;
        let option = RPCOption::new(Duration::from_millis(100));
        let vote = VoteRequest::new(Vote::new(1, 1), None);
        let err = client.vote(vote, option).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
        assert!(
            err.to_string().contains("no raft network to node 2"),
            "{err}"
        );
        let append = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let option = RPCOption::new(Duration::from_millis(100));
        let err = client.append_entries(append, option).await.unwrap_err();
        assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");
    }
}
