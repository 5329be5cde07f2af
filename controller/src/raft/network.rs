//! Which Raft network a [`Store`](super::Store) uses: [`PeerNetwork`], either none
//! ([`NoNetwork`], `wharf up` and tests of one member) or mutual TLS to the other controllers
//! ([`TlsNetwork`]).
//!
//! A one-member cluster never sends an RPC; should its membership ever name another node
//! while it has no network, openraft sees that node as unreachable and backs off.

use openraft::error::{InstallSnapshotError, RPCError, RaftError as ApiError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};

use super::tls_network::{TlsClient, TlsNetwork};
use super::{RaftError, TypeConfig};

/// The network a [`Store`](super::Store) sends Raft RPCs, forwarded writes and read-index
/// requests over; build from a [`NoNetwork`] or a [`TlsNetwork`] with `into()`.
#[derive(Clone, Debug)]
pub enum PeerNetwork {
    /// No peers: every call fails as unreachable.
    None(NoNetwork),
    /// Mutual TLS to the other controllers.
    Tls(TlsNetwork),
}

impl From<NoNetwork> for PeerNetwork {
    fn from(n: NoNetwork) -> PeerNetwork {
        PeerNetwork::None(n)
    }
}

impl From<TlsNetwork> for PeerNetwork {
    fn from(n: TlsNetwork) -> PeerNetwork {
        PeerNetwork::Tls(n)
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        match self {
            PeerNetwork::None(n) => PeerClient::None(n.new_client(target, node).await),
            PeerNetwork::Tls(n) => PeerClient::Tls(n.client(target, node.addr.clone())),
        }
    }
}

/// openraft's client of one peer over a [`PeerNetwork`].
pub enum PeerClient {
    /// Over [`NoNetwork`].
    None(NoNetworkClient),
    /// Over [`TlsNetwork`].
    Tls(TlsClient),
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, ApiError<u64>>> {
        match self {
            PeerClient::None(c) => c.append_entries(rpc, option).await,
            PeerClient::Tls(c) => c.append_entries(rpc, option).await,
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, ApiError<u64, InstallSnapshotError>>,
    > {
        match self {
            PeerClient::None(c) => c.install_snapshot(rpc, option).await,
            PeerClient::Tls(c) => c.install_snapshot(rpc, option).await,
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, ApiError<u64>>> {
        match self {
            PeerClient::None(c) => c.vote(rpc, option).await,
            PeerClient::Tls(c) => c.vote(rpc, option).await,
        }
    }
}

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
