//! How the network commands change [`ClusterState`]: pure, like the rest of `apply`.
//! The leader chooses addresses and ports; this only checks and records them.

use crate::ids::ContainerId;
use crate::network::{ips_in_use, mac_for, pick_ip, port_taken, ports_in_use, Endpoint};
use crate::state::{ClusterState, Command, Response, StateError};

/// Apply one of the network commands; other commands are left to `ClusterState::apply`.
pub(crate) fn apply(s: &mut ClusterState, cmd: &Command) -> Response {
    match cmd {
        Command::CreateNetwork { network } => {
            // Bridge networks are local to a node: a name is unique on its node (every
            // node has its own `bridge`).
            if s.networks
                .values()
                .any(|n| n.name == network.name && n.node == network.node)
            {
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
        Command::AttachEndpoints { id, endpoints } => attach(s, id, endpoints.clone()),
        Command::AllocateEndpoints { id, endpoints } => {
            let mut chosen = endpoints.clone();
            for i in 0..chosen.len() {
                if !chosen[i].ip.is_unspecified() {
                    continue;
                }
                let n = s
                    .networks
                    .get(&chosen[i].network)
                    .ok_or_else(|| StateError::NoSuchNetwork(chosen[i].network.clone()))?;
                // Others' addresses and those already chosen for this container.
                let mut used = ips_in_use(
                    s.endpoints
                        .iter()
                        .filter(|(c, _)| *c != id)
                        .flat_map(|(_, e)| e),
                    &n.id,
                );
                used.extend(chosen.iter().filter(|e| e.network == n.id).map(|e| e.ip));
                let ip = pick_ip(&n.subnet, n.gateway, &used)
                    .ok_or_else(|| StateError::NoFreeAddress(n.name.clone()))?;
                chosen[i].ip = ip;
                chosen[i].mac = mac_for(ip);
            }
            attach(s, id, chosen)
        }
        Command::ReleaseEndpoints { id } => {
            s.endpoints.remove(id);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Record `endpoints` for container `id` once each address is free and inside its
/// subnet, and each host port free on its node.
fn attach(s: &mut ClusterState, id: &ContainerId, endpoints: Vec<Endpoint>) -> Response {
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
        let clash = others().any(|o| o.network == e.network && o.ip == e.ip)
            || endpoints[..i]
                .iter()
                .any(|o| o.network == e.network && o.ip == e.ip);
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
    s.endpoints.insert(id.clone(), endpoints);
    Ok(())
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
        // Another node has its own names and its own address space.
        let mut other = net("c", "front", "10.50.0.0/24");
        other.node = NodeId(2);
        s.apply(&Command::CreateNetwork { network: other }).unwrap();
        assert_eq!(s.networks.len(), 3);
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

    #[test]
    fn allocation_in_log_order_gives_every_container_its_own_address_until_the_subnet_is_full() {
        let mut s = ClusterState::default();
        s.apply(&Command::CreateNetwork {
            network: net("a", "small", "10.60.0.0/29"),
        })
        .unwrap();
        let choose = |s: &mut ClusterState, c: &ContainerId| {
            s.apply(&Command::AllocateEndpoints {
                id: c.clone(),
                endpoints: vec![ep("a", [0, 0, 0, 0], 0)],
            })
        };
        // A /29 holds .2 to .6 (.1 is the gateway, .7 the broadcast address): five
        // containers whose starts were all decided on the same view get five addresses.
        let ids: Vec<ContainerId> = (1..=6).map(|n| container(&mut s, n)).collect();
        for c in &ids[..5] {
            choose(&mut s, c).unwrap();
        }
        let mut got: Vec<Ipv4Addr> = ids[..5].iter().map(|c| s.endpoints[c][0].ip).collect();
        assert!(got.iter().all(|ip| s
            .endpoints
            .values()
            .flatten()
            .any(|e| e.ip == *ip && e.mac == mac_for(*ip))));
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 5, "{got:?}");
        let before = s.clone();
        assert_eq!(
            choose(&mut s, &ids[5]),
            Err(StateError::NoFreeAddress("small".into()))
        );
        assert_eq!(s, before, "a refused allocation changes nothing");
        // The address a stopped container held goes to the next start, once.
        let freed = s.endpoints[&ids[2]][0].ip;
        s.apply(&Command::ReleaseEndpoints { id: ids[2].clone() })
            .unwrap();
        choose(&mut s, &ids[5]).unwrap();
        assert_eq!(s.endpoints[&ids[5]][0].ip, freed);
        assert_eq!(
            choose(&mut s, &ids[2]),
            Err(StateError::NoFreeAddress("small".into()))
        );
        // An address given explicitly is checked as before.
        s.apply(&Command::ReleaseEndpoints { id: ids[0].clone() })
            .unwrap();
        assert_eq!(
            s.apply(&Command::AllocateEndpoints {
                id: ids[0].clone(),
                endpoints: vec![ep("a", [10, 60, 0, 3], 0)],
            }),
            Err(StateError::AddressInUse("10.60.0.3".into()))
        );
    }
}
