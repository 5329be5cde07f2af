//! [`TlsNetwork::call`] against real and misbehaving TLS peers: what it tells its callers
//! about whether a request may have been received (forwarding relies on it), the node id
//! check, and that only certificates of the cluster CA get an answer.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::RPCError;
use openraft::network::RPCOption;
use openraft::raft::VoteRequest;
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory, Vote};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use wharf_protocol::codec;

use super::peer_harness::{has, put, Peer, TestCa, WAIT};
use super::rpc::{read_frame, write_frame, Call, Hello, Reply};
use super::store::default_config;
use super::tls_network::CallError;
use super::{OpenMode, PeerNetwork, RaftError, TlsNetwork};

/// What a fake peer does on a connection.
#[derive(Clone, Copy)]
enum Fake {
    /// Close it before its hello, as a controller whose store is shut down does.
    Mute,
    /// Say hello, read a request, close the connection.
    Close,
    /// Say hello, read a request, keep it open and never answer.
    Hang,
}

/// A TLS listener of the cluster CA, node 5, that does `fake`.
async fn fake_peer(ca: &TestCa, fake: Fake) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let acceptor = TlsAcceptor::from(ca.server_config(5));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Fake::Mute = fake {
                    return;
                }
                let hello = codec::encode(&Hello { node: 5 }).unwrap();
                write_frame(&mut tls, &hello).await.unwrap();
                let _ = read_frame(&mut tls).await;
                if let Fake::Hang = fake {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_say_whether_the_request_may_have_been_received() {
    let ca = TestCa::new();
    let net = TlsNetwork::new(ca.client_config(1));

    // Nothing listens: certainly not sent.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let err = net
        .call(5, &addr, Call::ReadIndex, WAIT, false)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Connect(_)), "{err:?}");
    let err = net
        .call(5, "not-an-address", Call::ReadIndex, WAIT, false)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Connect(_)), "{err:?}");

    // openraft hears of it as unreachable, and backs off.
    let mut client = PeerNetwork::from(net.clone())
        .new_client(5, &BasicNode::new(addr.clone()))
        .await;
    let vote = VoteRequest::new(Vote::new(1, 1), None);
    let err = client
        .vote(vote, RPCOption::new(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "{err:?}");

    // The peer closed before its hello: not sent.
    let addr = fake_peer(&ca, Fake::Mute).await;
    let err = net
        .call(5, &addr, Call::Forward(vec![put(1)]), WAIT, false)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Connect(_)), "{err:?}");

    // The peer read it and closed: it may have acted on it.
    let addr = fake_peer(&ca, Fake::Close).await;
    let err = net
        .call(5, &addr, Call::Forward(vec![put(1)]), WAIT, false)
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Io(_)), "{err:?}");

    // The peer never answers.
    let addr = fake_peer(&ca, Fake::Hang).await;
    let err = net
        .call(
            5,
            &addr,
            Call::Forward(vec![put(1)]),
            Duration::from_millis(500),
            false,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Timeout(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answers_only_requests_for_its_own_id_from_its_own_cluster() {
    let ca = TestCa::new();
    let peer = Peer::new(&ca, 1).await;
    let store = peer.open(OpenMode::Bootstrap, default_config()).await;
    store.propose(put(1)).await.unwrap().unwrap();
    let net = TlsNetwork::new(ca.client_config(2));

    let reply = net
        .call(1, &peer.addr, Call::ReadIndex, WAIT, true)
        .await
        .unwrap();
    assert!(
        matches!(reply, Reply::ReadIndex(Ok(i)) if i >= store.stats().last_applied),
        "{reply:?}"
    );
    let err = net
        .call(7, &peer.addr, Call::Forward(vec![put(2)]), WAIT, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Connect(RaftError::WrongNode {
                want: 7,
                found: 1,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(
        !store.read(|s| has(s, 2)),
        "a request for node 7 wrote nothing"
    );

    // The pooled connection serves the next call.
    let reply = net
        .call(1, &peer.addr, Call::Forward(vec![put(3)]), WAIT, false)
        .await
        .unwrap();
    assert!(
        matches!(reply, Reply::Forward(Ok(ref w)) if w.answers == vec![Ok(())] && w.index > 0),
        "{reply:?}"
    );
    assert!(store.read(|s| has(s, 3)));
    assert!(net.last_contacts().contains_key(&1));

    // A client of another cluster's CA gets no answer.
    let stranger = TlsNetwork::new(TestCa::new().client_config(2));
    let result = stranger
        .call(1, &peer.addr, Call::Forward(vec![put(4)]), WAIT, false)
        .await;
    assert!(result.is_err(), "{result:?}");
    assert!(!store.read(|s| has(s, 4)));

    // And so does a client that does not speak the Raft ALPN.
    let mut plain = (*ca.client_config(2)).clone();
    plain.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(plain));
    let tcp = tokio::net::TcpStream::connect(&peer.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap().into(),
    );
    assert!(
        connector.connect(name, tcp).await.is_err(),
        "no common ALPN protocol"
    );
    peer.stop().await;
}
