//! User-defined networks: `docker network create / rm / connect / disconnect / prune`.
//! A network is recorded through Raft first, then its bridge is made on the agent.

use super::network::{new_network, resolve_network};
use super::network_options::NetworkCreate;
use super::Engine;
use crate::engine::error::EngineError;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use tracing::{info, warn};
use wharf_protocol::network::{Endpoint, NetworkRecord, Subnet};
use wharf_protocol::state::{Command, ContainerRecord, ContainerStatus};
use wharf_protocol::NodeId;

/// The names Docker reserves for its predefined networks.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

impl Engine {
    /// A network by `NODE/name`, name, ID or unique ID prefix, or 404 as Docker words it
    /// (a name on several nodes: 400, name one as `NODE/name`).
    pub fn network(&self, reference: &str) -> Result<NetworkRecord, EngineError> {
        self.network_on(reference, None)
    }

    /// A network as [`Engine::network`], a name looked up on `node` when given.
    fn network_on(
        &self,
        reference: &str,
        node: Option<NodeId>,
    ) -> Result<NetworkRecord, EngineError> {
        self.store()
            .read(|s| resolve_network(s, reference, node).cloned())
    }

    /// The network and container of a connect or disconnect: the network's name is looked
    /// up on the container's node; a missing network is reported first, as Docker does.
    fn network_of_container(
        &self,
        reference: &str,
        container: &str,
    ) -> Result<(NetworkRecord, ContainerRecord), EngineError> {
        let c = self.container(container);
        let n = self.network_on(reference, c.as_ref().ok().map(|c| c.node))?;
        let c = c?;
        if n.node != c.node {
            return Err(EngineError::conflict(format!(
                "network {} is on node {}, container {} on node {}: bridge networks are local to their node",
                n.name, n.node, c.name, c.node
            )));
        }
        Ok((n, c))
    }

    /// `POST /networks/create`: record the network, then make its bridge; the rules
    /// follow (isolation from the other networks, `--internal`, `enable_icc`). `NODE/name`
    /// (classic Swarm's) makes it on that node; a plain name on every Ready node that runs
    /// containers, a host-local bridge on each (until overlay networks land), answered
    /// with the first one's record. When one node fails, those made before are removed.
    pub async fn create_network(&self, req: NetworkCreate) -> Result<NetworkRecord, EngineError> {
        let (nodes, name) = match req.name.split_once('/') {
            Some((on, name)) => {
                let node = self
                    .store()
                    .read(|s| {
                        s.nodes
                            .values()
                            .find(|n| n.description.hostname == on || n.id.to_string() == on)
                            .map(|n| n.id)
                    })
                    .ok_or_else(|| EngineError::not_found(format!("node {on} not found")))?;
                (vec![node], name)
            }
            None => (self.store().read(network_nodes), req.name.as_str()),
        };
        if nodes.is_empty() {
            return Err(super::placement::no_ready_agent());
        }
        if PREDEFINED.contains(&name) {
            return Err(EngineError::forbidden(format!(
                "operation is not permitted on predefined {name} network "
            )));
        }
        let subnet = req
            .subnet
            .as_deref()
            .map(Subnet::parse)
            .transpose()
            .map_err(|e| EngineError::invalid(e.to_string()))?;
        let gateway = req
            .gateway
            .as_deref()
            .map(|g| {
                g.parse::<Ipv4Addr>()
                    .map_err(|_| EngineError::invalid(format!("invalid gateway address {g}")))
            })
            .transpose()?;
        let mut made: Vec<NetworkRecord> = Vec::with_capacity(nodes.len());
        for node in nodes {
            match self
                .create_network_on(node, name, &req, subnet, gateway)
                .await
            {
                Ok(record) => made.push(record),
                Err(e) => {
                    for record in made.iter().rev() {
                        if let Err(undo) = self.remove_network(&record.id).await {
                            warn!(network = %record.name, node = %record.node, error = %undo.message, "undoing a network create");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(made.swap_remove(0))
    }

    /// Make network `name` on `node` (see [`Engine::create_network`]).
    async fn create_network_on(
        &self,
        node: NodeId,
        name: &str,
        req: &NetworkCreate,
        subnet: Option<Subnet>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<NetworkRecord, EngineError> {
        let routes = self
            .agents
            .network_host(&node)
            .await
            .map_err(|f| EngineError::internal(f.message))?
            .routes;
        let mut record = self.store().read(|s| {
            new_network(
                s,
                node,
                name,
                subnet,
                gateway,
                req.labels.clone(),
                &routes,
                hex::encode(rand::random::<[u8; 32]>()),
                rand::random::<u16>(),
            )
        })?;
        if subnet.is_some() && routes.iter().any(|r| r.overlaps(&record.subnet)) {
            return Err(EngineError::invalid(
                "invalid pool request: Pool overlaps with other one on this address space",
            ));
        }
        record.created_ns = super::now_ns();
        record.set_settings(req.internal, req.icc, req.masquerade);
        self.execute(super::plan::create_network(&record)).await?;
        if let Err(e) = self.sync_network_rules(record.node).await {
            warn!(error = %e.message, "rules for the new network");
        }
        self.emit_network(&record, "create", &[]);
        info!(network = %record.name, node = %node, subnet = %record.subnet, "network created");
        Ok(record)
    }

    /// `DELETE /networks/{id}`: 409 while containers are connected
    /// ([`super::plan::remove_network`]).
    /// A plain name that several nodes' networks share (made by one `docker network
    /// create`) removes them all, each as below, stopping at the first refusal.
    pub async fn remove_network(&self, reference: &str) -> Result<(), EngineError> {
        let same_name: Vec<String> = self.store().read(|s| {
            let mut ids: Vec<(NodeId, String)> = s
                .networks
                .values()
                .filter(|n| !reference.contains('/') && n.name == reference && !n.default)
                .map(|n| (n.node, n.id.clone()))
                .collect();
            ids.sort();
            ids.into_iter().map(|(_, id)| id).collect()
        });
        if same_name.len() > 1 {
            for id in same_name {
                self.remove_one_network(&id).await?;
            }
            return Ok(());
        }
        self.remove_one_network(reference).await
    }

    async fn remove_one_network(&self, reference: &str) -> Result<(), EngineError> {
        let (n, steps) = self
            .store()
            .read(|s| super::plan::remove_network(s, reference))?;
        self.execute(steps).await?;
        if let Err(e) = self.sync_network_rules(n.node).await {
            warn!(error = %e.message, "rules after removing a network");
        }
        self.emit_network(&n, "destroy", &[]);
        Ok(())
    }

    /// `POST /networks/prune`: remove user networks no container is connected to.
    pub async fn prune_networks(&self) -> Result<Vec<String>, EngineError> {
        let unused: Vec<String> = self.store().read(|s| {
            s.networks
                .values()
                .filter(|n| !n.default && !s.connections.values().any(|c| c.contains_key(&n.id)))
                .map(|n| n.id.clone())
                .collect()
        });
        let mut removed = vec![];
        for id in unused {
            let n = self.network(&id)?;
            if self.remove_network(&id).await.is_ok() {
                removed.push(n.name);
            }
        }
        Ok(removed)
    }

    /// `POST /networks/{id}/connect`: record the connection; a running container gets
    /// its interface on that network at once.
    pub async fn connect_network(
        &self,
        reference: &str,
        container: &str,
        aliases: Vec<String>,
    ) -> Result<(), EngineError> {
        let (n, c) = self.network_of_container(reference, container)?;
        match super::network::mode_of(&c) {
            super::network::NetworkMode::Network(_) => {}
            _ => {
                return Err(EngineError::invalid(
                    "container sharing network namespace with another container or host cannot be connected to any other network",
                ))
            }
        }
        let lock = self.lock_for(&c.id);
        let _guard = lock.lock().await;
        self.propose(Command::ConnectContainer {
            id: c.id.clone(),
            network: n.id.clone(),
            aliases: aliases.clone(),
        })
        .await?;
        let c = self.container(c.id.as_str())?;
        if c.status == ContainerStatus::Running {
            let mut eps = self
                .store()
                .read(|s| s.endpoints.get(&c.id).cloned().unwrap_or_default());
            // The address is chosen in the log, so a concurrent start or connect cannot
            // be handed the same one.
            eps.push(Endpoint {
                network: n.id.clone(),
                ip: Ipv4Addr::UNSPECIFIED,
                mac: [0; 6],
                ports: vec![],
                aliases,
                node: c.node,
            });
            let recorded = self
                .propose(Command::AllocateEndpoints {
                    id: c.id.clone(),
                    endpoints: eps,
                })
                .await;
            let plan = recorded.and_then(|()| {
                self.store()
                    .read(|s| {
                        let eps = s.endpoints.get(&c.id).cloned().unwrap_or_default();
                        super::network::attach_plans(s, &c.id, &eps)
                            .into_iter()
                            .find(|p| p.bridge == n.bridge)
                    })
                    .ok_or_else(|| EngineError::internal("endpoint not recorded"))
            });
            let plan = match plan {
                Ok(p) => p,
                Err(e) => {
                    let _ = self
                        .propose(Command::DisconnectContainer {
                            id: c.id.clone(),
                            network: n.id.clone(),
                        })
                        .await;
                    return Err(e);
                }
            };
            // The agent finds the container's process itself: pids are host facts.
            let res = self
                .agents
                .attach_interfaces(&c.node, &c.id, vec![plan])
                .await;
            if let Err(e) = res {
                let _ = self
                    .propose(Command::DisconnectContainer {
                        id: c.id.clone(),
                        network: n.id.clone(),
                    })
                    .await;
                return Err(EngineError::internal(e.message));
            }
            self.sync_dns(c.node).await;
        }
        self.emit_network(&n, "connect", &[("container", c.id.to_string())]);
        Ok(())
    }

    /// `POST /networks/{id}/disconnect`: forget the connection; a running container loses
    /// its interface on that network.
    pub async fn disconnect_network(
        &self,
        reference: &str,
        container: &str,
    ) -> Result<(), EngineError> {
        let (n, c) = self.network_of_container(reference, container)?;
        let id = c.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        self.propose(Command::DisconnectContainer {
            id: id.clone(),
            network: n.id.clone(),
        })
        .await?;
        let _ = self.agents.detach_interface(&n.node, &id, &n.id).await;
        if let Err(e) = self.sync_network_rules(n.node).await {
            warn!(error = %e.message, "rules after disconnect");
        }
        self.sync_dns(n.node).await;
        self.emit_network(&n, "disconnect", &[("container", id.to_string())]);
        Ok(())
    }

    fn emit_network(&self, n: &NetworkRecord, action: &str, extra: &[(&str, String)]) {
        let mut attrs: BTreeMap<String, String> = [
            ("name".to_string(), n.name.clone()),
            ("type".to_string(), n.driver.clone()),
        ]
        .into();
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.emit(super::events::EventType::Network, action, &n.id, attrs);
    }
}

/// The nodes a network created without `NODE/` is made on: every Ready node that runs
/// containers, by ID (pure).
fn network_nodes(s: &wharf_protocol::state::ClusterState) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = s
        .nodes
        .values()
        .filter(|n| {
            n.description.runs_containers && n.state == wharf_protocol::node_state::NodeState::Ready
        })
        .map(|n| n.id)
        .collect();
    nodes.sort();
    nodes
}
