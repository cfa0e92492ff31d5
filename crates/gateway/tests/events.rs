//! The event stream's bound, in one process: a real node (offline, temp
//! dir), the real router served on loopback, real WebSocket clients.
//!
//! The server runs on a current-thread runtime, so a burst published
//! without an await between events is published before any client task
//! runs: the ring overflows deterministically, and the client that was
//! behind must get close code 1013 with the reason.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use datamesh_gateway::events::Event;
use datamesh_gateway::{Gateway, GatewayConfig};
use datamesh_node::{Node, NodeConfig};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TOKEN: &str = "test-token";

async fn start(buffer: usize) -> (Gateway, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig { data_dir: dir.path().join("node"), offline: true, ..Default::default() };
    let node = Node::open(cfg).unwrap();
    let mut gcfg = GatewayConfig::new(&dir.path().join("node"));
    gcfg.events.buffer = buffer;
    gcfg.events.metrics_interval = Duration::from_secs(3600);
    let gw = Gateway::open(node, gcfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = gw.rest_router(TOKEN.into());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (gw, format!("ws://{addr}/v1/events"), dir)
}

fn alert(i: usize) -> Event {
    Event::Alert { severity: "warning".into(), code: "test".into(), message: format!("burst {i}"), resolved: false }
}

/// Reads text messages until one whose `type` is `kind`; panics on close or timeout.
async fn next_of<S>(ws: &mut S, kind: &str) -> serde_json::Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == kind {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the stream ended before a {kind} event: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event within 20 s"))
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_that_falls_behind_is_closed_with_the_reason_and_others_go_on() {
    let (gw, url, _dir) = start(4).await;
    let (mut slow, _) = tokio_tungstenite::connect_async(format!("{url}?token={TOKEN}")).await.unwrap();
    // No await between these: no client task runs before all 40 are in the ring of 4.
    for i in 0..40 {
        gw.events().publish(alert(i));
    }
    let close = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the lagging client was not closed")
    .expect("a close frame with a reason");
    assert_eq!(close.code, CloseCode::Again, "{close:?}");
    assert!(close.reason.contains("events missed"), "{close:?}");

    // The bus still serves: a new client receives what is published next.
    let (mut ok, _) = tokio_tungstenite::connect_async(format!("{url}?token={TOKEN}&types=file.added")).await.unwrap();
    gw.events().publish(alert(99));
    gw.events().publish(Event::FileAdded { cid: "c".into(), size: 1, name: None, source: "rest".into() });
    let v = next_of(&mut ok, "file.added").await;
    assert_eq!(v["cid"], "c");
    assert!(v["seq"].as_u64().is_some() && v["time_ms"].as_u64().is_some(), "{v}");
    let render = gw.metrics().render(gw.node(), Some(&gw)).await;
    assert!(render.contains("datamesh_events_clients_dropped_total{reason=\"lagged\"} 1"), "{render}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_stream_needs_the_token_and_known_types() {
    let (_gw, url, _dir) = start(16).await;
    let status = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => 101,
    };
    assert_eq!(status(tokio_tungstenite::connect_async(url.clone()).await.map(|_| ())), 401);
    assert_eq!(status(tokio_tungstenite::connect_async(format!("{url}?token=wrong")).await.map(|_| ())), 401);
    assert_eq!(
        status(tokio_tungstenite::connect_async(format!("{url}?token={TOKEN}&types=file.add")).await.map(|_| ())),
        400
    );
    // The header works as well as the query; the first message is a metrics snapshot.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let v = next_of(&mut ws, "metrics").await;
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["subscribers"], 1, "{v}");
}
