//! The tables the agents serve, against fake agents that keep the newest table per
//! network as the real one does: names follow start, connect, rename, disconnect, stop
//! and network removal on the network's own node only, and a reconnected agent gets them
//! all again.

use super::super::engine_test::{setup_nodes, Setup};
use super::super::network_options::NetworkCreate;
use crate::agent_client::fake::FakeAgent;
use std::net::Ipv4Addr;
use wharf_protocol::NodeId;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn network(name: &str) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        subnet: None,
        gateway: None,
        labels: Default::default(),
        internal: false,
        icc: true,
        masquerade: true,
    }
}

/// What `fake`'s resolver of `network` answers for `name`.
fn resolves(fake: &FakeAgent, network: &str, name: &str) -> Vec<Ipv4Addr> {
    fake.with(|s| {
        s.dns
            .get(network)
            .map(|t| t.lookup(name))
            .unwrap_or_default()
    })
}

fn served(fake: &FakeAgent) -> Vec<String> {
    fake.with(|s| s.dns.keys().cloned().collect())
}

#[tokio::test]
async fn each_agent_answers_the_names_on_its_own_networks() {
    let Setup {
        engine, cluster, ..
    } = setup_nodes(&[(A, "a", &[]), (B, "b", &[])]).await;
    let (a, b) = (cluster.agent(A).clone(), cluster.agent(B).clone());
    assert!(served(&a).is_empty(), "no resolver on a default bridge");

    let front = engine.create_network(network("a/front")).await.unwrap();
    let side = engine.create_network(network("a/side")).await.unwrap();
    let mut on_a = vec![front.id.clone(), side.id.clone()];
    on_a.sort();
    assert_eq!(served(&a), on_a, "a resolver per user network, at once");
    assert!(served(&b).is_empty(), "another node serves none of them");

    let api = engine
        .create_container(
            Some("api"),
            br#"{"Image":"img:1","Env":["constraint:node==a"],"HostConfig":{"NetworkMode":"front"},
                "NetworkingConfig":{"EndpointsConfig":{"front":{"Aliases":["backend"]}}}}"#,
        )
        .await
        .unwrap();
    assert!(
        resolves(&a, &front.id, "api").is_empty(),
        "a created container has no address yet"
    );
    engine.start("api").await.unwrap();
    let ip = |id, net: &str| {
        engine.store().read(|s| {
            s.endpoints[id]
                .iter()
                .find(|e| e.network == net)
                .map(|e| e.ip)
                .unwrap()
        })
    };
    let api_ip = ip(&api, &front.id);
    for name in ["api", "backend", &api.as_str()[..12]] {
        assert_eq!(resolves(&a, &front.id, name), [api_ip], "{name}");
    }

    engine
        .connect_network("side", "api", vec!["api-side".into()])
        .await
        .unwrap();
    let side_ip = ip(&api, &side.id);
    assert_eq!(resolves(&a, &side.id, "api-side"), [side_ip]);
    assert_eq!(resolves(&a, &side.id, "api"), [side_ip]);
    assert!(resolves(&a, &front.id, "api-side").is_empty());

    engine.rename("api", "web").await.unwrap();
    assert!(resolves(&a, &front.id, "api").is_empty());
    assert_eq!(resolves(&a, &front.id, "web"), [api_ip]);
    assert_eq!(resolves(&a, &side.id, "web"), [side_ip]);

    engine.disconnect_network("side", "web").await.unwrap();
    assert!(resolves(&a, &side.id, "web").is_empty());
    assert_eq!(resolves(&a, &front.id, "backend"), [api_ip]);

    // The agent restarts: it serves nothing until its connection is back, then all.
    a.with(|s| s.dns.clear());
    engine.node_lost(A);
    engine.node_connected(A, None).await.unwrap();
    assert_eq!(served(&a), on_a);
    assert_eq!(resolves(&a, &front.id, "web"), [api_ip]);

    engine.stop("web", Some(1), None).await.unwrap();
    assert!(
        resolves(&a, &front.id, "web").is_empty(),
        "a stopped container"
    );
    engine.remove("web", false).await.unwrap();
    engine.remove_network("side").await.unwrap();
    assert_eq!(served(&a), [front.id], "a removed network's stops");
    assert!(served(&b).is_empty());
}
