//! A client and a server over an in-memory pipe, with handlers that echo, stream, stall
//! and die, as `quinn`'s tests pair two endpoints.

use super::*;
use std::time::Duration;
use wharf_protocol::agent::container::{ContainerRequest, ContainerResponse};
use wharf_protocol::agent::{AgentRequest, AgentResponse};
use wharf_protocol::wire::{StreamItem, ITEM_BYTES, WINDOW};
use wharf_protocol::ContainerId;

fn id(n: u8) -> ContainerId {
    format!("{:064x}", n).parse().unwrap()
}

fn kill(n: u8, signal: i32) -> AgentRequest {
    AgentRequest::Container(ContainerRequest::Kill { id: id(n), signal })
}

/// A toy agent: signal 1 echoes the signal as a pid; 2 counts the upload's bytes; 3
/// streams `n` KiB-sized items; 4 never answers; 5 drops the call unanswered.
async fn toy(request: AgentRequest, mut call: ServerCall) {
    let AgentRequest::Container(ContainerRequest::Kill { signal, .. }) = request else {
        call.respond(AgentResponse::Done);
        return;
    };
    match signal {
        1 => call.respond(AgentResponse::Container(ContainerResponse::Started {
            pid: 1,
        })),
        2 => {
            let mut total = 0u32;
            loop {
                match call.input.recv().await {
                    Ok(Some(StreamItem::Bytes(b))) => total += b.len() as u32,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(f) => {
                        call.respond(AgentResponse::Failed(f));
                        return;
                    }
                }
            }
            call.respond(AgentResponse::Container(ContainerResponse::Started {
                pid: total,
            }));
        }
        3 => {
            call.respond(AgentResponse::Done);
            let (_, _, mut out) = call.into_parts();
            for i in 0..200u32 {
                if out
                    .send(StreamItem::Bytes(vec![i as u8; 1024].into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            out.end();
        }
        4 => std::future::pending().await,
        _ => {}
    }
}

fn pair() -> (Client, tokio::task::JoinHandle<Result<(), String>>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let server = tokio::spawn(serve(br, bw, |_| {}, toy));
    (connect(ar, aw), server)
}

#[tokio::test]
async fn a_request_gets_its_response() {
    let (client, _server) = pair();
    let r = client.call(kill(1, 1)).await.unwrap();
    assert_eq!(
        r,
        AgentResponse::Container(ContainerResponse::Started { pid: 1 })
    );
}

#[tokio::test]
async fn many_calls_at_once_each_get_their_own_answer() {
    let (client, _server) = pair();
    let mut uploads = Vec::new();
    for n in 0..20usize {
        let c = client.clone();
        uploads.push(tokio::spawn(async move {
            let mut call = c.open(kill(1, 2));
            call.output
                .send_bytes(&vec![7u8; n * 1000 + 1])
                .await
                .unwrap();
            call.output.end();
            (n, call.response.get().await.unwrap())
        }));
    }
    for u in uploads {
        let (n, r) = u.await.unwrap();
        assert_eq!(
            r,
            AgentResponse::Container(ContainerResponse::Started {
                pid: (n * 1000 + 1) as u32
            })
        );
    }
}

#[tokio::test]
async fn an_upload_larger_than_the_window_goes_through_in_chunks() {
    let (client, _server) = pair();
    let mut call = client.open(kill(1, 2));
    let size = ITEM_BYTES * (WINDOW as usize + 3) + 5;
    call.output.send_bytes(&vec![1u8; size]).await.unwrap();
    call.output.end();
    assert_eq!(
        call.response.get().await.unwrap(),
        AgentResponse::Container(ContainerResponse::Started { pid: size as u32 })
    );
}

#[tokio::test]
async fn a_download_arrives_whole_and_in_order() {
    let (client, _server) = pair();
    let mut call = client.open(kill(1, 3));
    call.output.end();
    assert_eq!(call.response.get().await.unwrap(), AgentResponse::Done);
    let mut i = 0u32;
    while let Some(item) = call.input.recv().await.unwrap() {
        assert_eq!(item, StreamItem::Bytes(vec![i as u8; 1024].into()));
        i += 1;
    }
    assert_eq!(i, 200);
}

#[tokio::test]
async fn a_reader_that_stops_reading_holds_up_only_its_own_call() {
    let (client, _server) = pair();
    // Never read: the agent's sender stalls after the window.
    let stalled = client.open(kill(1, 3));
    stalled.output.end();
    stalled.response.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = client.call(kill(1, 1)).await.unwrap();
    assert_eq!(
        r,
        AgentResponse::Container(ContainerResponse::Started { pid: 1 })
    );
    drop(stalled.input);
}

#[tokio::test]
async fn a_handler_that_drops_its_call_answers_with_a_failure() {
    let (client, _server) = pair();
    let err = client.call(kill(1, 5)).await.unwrap_err();
    assert_eq!(err.kind, wharf_protocol::agent::FailureKind::Internal);
}

#[tokio::test]
async fn a_cut_upload_reaches_the_agent_as_an_abort_not_an_end() {
    let (client, _server) = pair();
    let mut call = client.open(kill(1, 2));
    call.output.send_bytes(b"half").await.unwrap();
    drop(call.output);
    let err = call.response.get().await.unwrap_err();
    assert!(err.message.contains("cut short"), "{err}");
}

#[tokio::test]
async fn a_closed_connection_fails_pending_and_later_calls_as_unavailable() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let client = connect(ar, aw);
    let (br, bw) = tokio::io::split(b);
    let server = tokio::spawn(serve(br, bw, |_| {}, toy));
    let pending = {
        let c = client.clone();
        tokio::spawn(async move { c.call(kill(1, 4)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.abort();
    let err = pending.await.unwrap().unwrap_err();
    assert_eq!(err.kind, wharf_protocol::agent::FailureKind::Unavailable);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(client.is_closed());
    let err = client.call(kill(1, 1)).await.unwrap_err();
    assert_eq!(err.kind, wharf_protocol::agent::FailureKind::Unavailable);
}

/// A peer that stops answering (its host partitioned) while its connection stays open:
/// `close` fails the calls in flight at once, and the later ones, and drops the stream.
#[tokio::test]
async fn close_fails_calls_in_flight_on_a_silent_connection() {
    let (client, server) = pair();
    let pending = {
        let c = client.clone();
        tokio::spawn(async move { c.call(kill(1, 4)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished(), "the handler never answers");
    client.close();
    let err = tokio::time::timeout(Duration::from_secs(1), pending)
        .await
        .expect("failed at once")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, wharf_protocol::agent::FailureKind::Unavailable);
    assert!(client.is_closed());
    let err = client.call(kill(1, 1)).await.unwrap_err();
    assert_eq!(err.kind, wharf_protocol::agent::FailureKind::Unavailable);
    let served = tokio::time::timeout(Duration::from_secs(1), server).await;
    assert!(served.is_ok(), "the agent side sees its connection end");
}

#[tokio::test]
async fn a_cancelled_call_stops_its_handler() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let client = connect(ar, aw);
    let (br, bw) = tokio::io::split(b);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    struct Dropped(tokio::sync::mpsc::UnboundedSender<()>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    tokio::spawn(serve(
        br,
        bw,
        |_| {},
        move |_req, _call| {
            let d = Dropped(seen_tx.clone());
            async move {
                let _d = d;
                std::future::pending::<()>().await
            }
        },
    ));
    let call = client.open(kill(1, 4));
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(call);
    tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .expect("handler stopped")
        .unwrap();
}

#[tokio::test]
async fn garbage_from_the_peer_closes_the_connection() {
    use tokio::io::AsyncWriteExt;
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let client = connect(ar, aw);
    b.write_all(&[0, 0, 0, 2, 9, 9]).await.unwrap();
    let err = client.call(kill(1, 1)).await.unwrap_err();
    assert_eq!(err.kind, wharf_protocol::agent::FailureKind::Unavailable);
}

/// A peer of another protocol version is refused at its Hello, by both ends, with the
/// versions named.
#[tokio::test]
async fn a_peer_of_another_protocol_version_is_refused() {
    use tokio::io::AsyncWriteExt;
    use wharf_protocol::wire::{encode_frame, Frame, FrameBody, AGENT_PROTOCOL_VERSION};
    let other = AGENT_PROTOCOL_VERSION + 1;
    let hello = encode_frame(&Frame {
        call: 0,
        body: FrameBody::Hello { version: other },
    })
    .unwrap();
    // A controller of another build, to this agent.
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let server = tokio::spawn(serve(ar, aw, |_| {}, toy));
    b.write_all(&hello).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the agent ends the connection")
        .unwrap()
        .unwrap_err();
    assert!(
        err.contains(&format!(
            "agent protocol {other}, this agent {AGENT_PROTOCOL_VERSION}"
        )),
        "{err}"
    );
    // An agent of another build, to this controller: its calls fail as unavailable.
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let client = connect(ar, aw);
    b.write_all(&hello).await.unwrap();
    let err = client.call(kill(1, 1)).await.unwrap_err();
    assert_eq!(err.kind, wharf_protocol::agent::FailureKind::Unavailable);
}
