//! How the network commands change [`ClusterState`]: pure, like the rest of `apply`.
//! The leader chooses addresses and ports; this only checks and records them.

use crate::network::{port_taken, ports_in_use};
use crate::state::{ClusterState, Command, Response, StateError};

/// Apply one of the network commands; other commands are left to `ClusterState::apply`.
pub(crate) fn apply(s: &mut ClusterState, cmd: &Command) -> Response {
    match cmd {
        Command::CreateNetwork { network } => {
            if s.networks.values().any(|n| n.name == network.name) {
                return Err(StateError::NetworkNameInUse(network.name.clone()));
            }
            if s.networks.values().any(|n| {
                n.id != network.id && n.node == network.node && n.subnet.overlaps(&network.subnet)
            }) {
                return Err(StateError::SubnetOverlap);
            }
            s.networks.insert(network.id.clone(), network.clone());
            Ok(())
        }
        Command::RemoveNetwork { id } => {
            let n = s
                .networks
                .get(id)
                .ok_or_else(|| StateError::NoSuchNetwork(id.clone()))?;
            if s.connections.values().any(|c| c.contains_key(id)) {
                return Err(StateError::NetworkInUse {
                    name: n.name.clone(),
                    id: id.clone(),
                });
            }
            s.networks.remove(id);
            Ok(())
        }
        Command::ConnectContainer {
            id,
            network,
            aliases,
        } => {
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| StateError::NoSuchContainer(id.to_string()))?;
            let n = s
                .networks
                .get(network)
                .ok_or_else(|| StateError::NoSuchNetwork(network.clone()))?;
            let conns = s.connections.entry(id.clone()).or_default();
            if conns.contains_key(network) {
                return Err(StateError::AlreadyConnected {
                    container: c.name.to_string(),
                    network: n.name.clone(),
                });
            }
            conns.insert(network.clone(), aliases.clone());
            Ok(())
        }
        Command::DisconnectContainer { id, network } => {
            let name = s
                .networks
                .get(network)
                .map(|n| n.name.clone())
                .ok_or_else(|| StateError::NoSuchNetwork(network.clone()))?;
            let removed = s
                .connections
                .get_mut(id)
                .and_then(|c| c.remove(network))
                .is_some();
            if !removed {
                return Err(StateError::NotConnected {
                    container: id.to_string(),
                    network: name,
                });
            }
            if let Some(eps) = s.endpoints.get_mut(id) {
                eps.retain(|e| &e.network != network);
            }
            Ok(())
        }
        Command::AttachEndpoints { id, endpoints } => {
            if !s.containers.contains_key(id) {
                return Err(StateError::NoSuchContainer(id.to_string()));
            }
            let others = || {
                s.endpoints
                    .iter()
                    .filter(|(c, _)| *c != id)
                    .flat_map(|(_, e)| e)
            };
            for (i, e) in endpoints.iter().enumerate() {
                let n = s
                    .networks
                    .get(&e.network)
                    .ok_or_else(|| StateError::NoSuchNetwork(e.network.clone()))?;
                let clash = others().any(|o| o.network == e.network && o.ip == e.ip);
                if !n.subnet.contains(e.ip) || e.ip == n.gateway || clash {
                    return Err(StateError::AddressInUse(e.ip.to_string()));
                }
                let mut used = ports_in_use(others(), e.node);
                used.extend(endpoints[..i].iter().flat_map(|p| p.ports.iter().copied()));
                for (j, p) in e.ports.iter().enumerate() {
                    if port_taken(&used, p) || port_taken(&e.ports[..j], p) {
                        return Err(StateError::PortInUse(format!(
                            "{}:{}",
                            p.host_ip, p.host_port
                        )));
                    }
                }
            }
            s.endpoints.insert(id.clone(), endpoints.clone());
            Ok(())
        }
        Command::ReleaseEndpoints { id } => {
            s.endpoints.remove(id);
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::{ContainerId, NodeId};
    use crate::network::{mac_for, Endpoint, NetworkRecord, PortMapping, Proto, Subnet};
    use crate::state::{ClusterState, Command, StateError};
    use std::net::Ipv4Addr;

    fn net(id: &str, name: &str, subnet: &str) -> NetworkRecord {
        let subnet = Subnet::parse(subnet).unwrap();
        NetworkRecord {
            id: id.into(),
            name: name.into(),
            driver: "bridge".into(),
            subnet,
            gateway: subnet.gateway(),
            bridge: format!("br-{id}"),
            node: NodeId(1),
            labels: Default::default(),
            created_ns: 1,
            default: false,
            internal: false,
            icc: true,
            masquerade: true,
        }
    }

    fn container(s: &mut ClusterState, n: u8) -> ContainerId {
        let id = ContainerId::from_bytes([n; 32]);
        let rec = crate::fixtures::container(n, &format!("c{n}"));
        s.apply(&Command::CreateContainer {
            container: Box::new(rec),
        })
        .unwrap();
        id
    }

    fn ep(network: &str, ip: [u8; 4], port: u16) -> Endpoint {
        let ip = Ipv4Addr::from(ip);
        Endpoint {
            network: network.into(),
            ip,
            mac: mac_for(ip),
            ports: if port == 0 {
                vec![]
            } else {
                vec![PortMapping {
                    proto: Proto::Tcp,
                    container_port: 80,
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: port,
                }]
            },
            aliases: vec![],
            node: NodeId(1),
        }
    }

    #[test]
    fn networks_refuse_taken_names_and_overlapping_subnets() {
        let mut s = ClusterState::default();
        s.apply(&Command::CreateNetwork {
            network: net("a", "front", "10.50.0.0/24"),
        })
        .unwrap();
        assert_eq!(
            s.apply(&Command::CreateNetwork {
                network: net("b", "front", "10.51.0.0/24")
            }),
            Err(StateError::NetworkNameInUse("front".into()))
        );
        assert_eq!(
            s.apply(&Command::CreateNetwork {
                network: net("b", "back", "10.50.0.0/16")
            }),
            Err(StateError::SubnetOverlap)
        );
        s.apply(&Command::CreateNetwork {
            network: net("b", "back", "10.51.0.0/24"),
        })
        .unwrap();
        assert_eq!(s.networks.len(), 2);
    }

    #[test]
    fn a_connected_network_cannot_be_removed_until_the_container_goes() {
        let mut s = ClusterState::default();
        s.apply(&Command::CreateNetwork {
            network: net("a", "front", "10.50.0.0/24"),
        })
        .unwrap();
        let c = container(&mut s, 1);
        s.apply(&Command::ConnectContainer {
            id: c.clone(),
            network: "a".into(),
            aliases: vec!["web".into()],
        })
        .unwrap();
        assert!(matches!(
            s.apply(&Command::ConnectContainer {
                id: c.clone(),
                network: "a".into(),
                aliases: vec![],
            }),
            Err(StateError::AlreadyConnected { .. })
        ));
        let err = s
            .apply(&Command::RemoveNetwork { id: "a".into() })
            .unwrap_err();
        assert!(err.to_string().contains("has active endpoints"));
        s.apply(&Command::RemoveContainer { id: c }).unwrap();
        s.apply(&Command::RemoveNetwork { id: "a".into() }).unwrap();
        assert!(s.networks.is_empty() && s.connections.is_empty());
    }

    #[test]
    fn endpoints_hold_addresses_and_ports_until_the_container_exits() {
        let mut s = ClusterState::default();
        s.apply(&Command::CreateNetwork {
            network: net("a", "front", "10.50.0.0/24"),
        })
        .unwrap();
        let c1 = container(&mut s, 1);
        let c2 = container(&mut s, 2);
        s.apply(&Command::AttachEndpoints {
            id: c1.clone(),
            endpoints: vec![ep("a", [10, 50, 0, 2], 8080)],
        })
        .unwrap();
        let before = s.clone();
        assert_eq!(
            s.apply(&Command::AttachEndpoints {
                id: c2.clone(),
                endpoints: vec![ep("a", [10, 50, 0, 2], 0)],
            }),
            Err(StateError::AddressInUse("10.50.0.2".into()))
        );
        assert_eq!(
            s.apply(&Command::AttachEndpoints {
                id: c2.clone(),
                endpoints: vec![ep("a", [10, 50, 0, 3], 8080)],
            })
            .unwrap_err()
            .to_string(),
            "Bind for 0.0.0.0:8080 failed: port is already allocated"
        );
        assert_eq!(
            s.apply(&Command::AttachEndpoints {
                id: c2.clone(),
                endpoints: vec![ep("a", [10, 50, 0, 1], 0)],
            }),
            Err(StateError::AddressInUse("10.50.0.1".into())),
            "the gateway is not for containers"
        );
        assert_eq!(
            s.apply(&Command::AttachEndpoints {
                id: c2.clone(),
                endpoints: vec![ep("a", [10, 51, 0, 9], 0)],
            }),
            Err(StateError::AddressInUse("10.51.0.9".into()))
        );
        assert_eq!(s, before);
        s.apply(&Command::ContainerExited {
            id: c1,
            exit_code: 0,
            oom_killed: false,
            at_ns: 2,
            error: String::new(),
        })
        .unwrap();
        s.apply(&Command::AttachEndpoints {
            id: c2.clone(),
            endpoints: vec![ep("a", [10, 50, 0, 2], 8080)],
        })
        .unwrap();
        s.apply(&Command::ReleaseEndpoints { id: c2 }).unwrap();
        assert!(s.endpoints.is_empty());
    }
}
