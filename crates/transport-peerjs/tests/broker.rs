//! The embedded broker against the PeerJS wire protocol, driven by raw
//! WebSocket clients (what `peerjs` 1.5.5 sends, byte for byte).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use strata_transport_peerjs::BrokerConfig;
use strata_transport_peerjs::broker::RateLimit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const DEADLINE: Duration = Duration::from_secs(10);

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    async fn connect(port: u16, query: &str) -> Self {
        let url = format!("ws://127.0.0.1:{port}/peerjs?{query}");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self { ws }
    }

    async fn register(port: u16, id: &str, token: &str) -> Self {
        Self::connect(port, &format!("key=peerjs&id={id}&token={token}&version=1.5.5")).await
    }

    /// The next text frame as JSON, or `None` once the broker closed.
    async fn next(&mut self) -> Option<Value> {
        let wait = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("broker silent past the deadline")
    }

    async fn recv(&mut self) -> Value {
        self.next().await.expect("broker closed the socket")
    }

    async fn send(&mut self, value: Value) {
        self.ws.send(WsMessage::Text(value.to_string().into())).await.unwrap();
    }

    async fn expect_closed(&mut self) {
        if let Some(extra) = self.next().await {
            panic!("expected the socket to close, got {extra}");
        }
    }
}

async fn http_get(port: u16, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn registers_and_relays_with_the_senders_id() {
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let mut alice = Client::register(port, "alice", "t1").await;
    let mut bob = Client::register(port, "bob", "t2").await;
    assert_eq!(alice.recv().await, json!({"type": "OPEN"}));
    assert_eq!(bob.recv().await, json!({"type": "OPEN"}));

    // A forged src and extra fields do not survive the broker.
    alice
        .send(json!({"type": "OFFER", "src": "mallory", "dst": "bob", "extra": 1, "payload": {"sdp": "x"}}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "OFFER", "src": "alice", "dst": "bob", "payload": {"sdp": "x"}})
    );
    // HEARTBEAT and unknown types are neither forwarded nor answered; the next
    // frame bob sees is alice's ANSWER.
    alice.send(json!({"type": "HEARTBEAT"})).await;
    alice.send(json!({"type": "WHATEVER", "dst": "bob"})).await;
    alice.send(json!({"type": "ANSWER", "dst": "bob", "payload": 1})).await;
    assert_eq!(bob.recv().await["type"], "ANSWER");
    broker.shutdown().await;
    alice.expect_closed().await;
}

#[tokio::test]
async fn id_taken_and_silent_reattach() {
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let mut first = Client::register(port, "node", "good").await;
    assert_eq!(first.recv().await["type"], "OPEN");

    let mut thief = Client::register(port, "node", "other").await;
    assert_eq!(
        thief.recv().await,
        json!({"type": "ID-TAKEN", "payload": {"msg": "ID is taken"}})
    );
    thief.expect_closed().await;

    // Same id and token: no OPEN; the record moves to the new socket, which
    // therefore gets the next relayed message first.
    let mut again = Client::register(port, "node", "good").await;
    let mut other = Client::register(port, "other", "x").await;
    assert_eq!(other.recv().await["type"], "OPEN");
    other
        .send(json!({"type": "CANDIDATE", "dst": "node", "payload": 7}))
        .await;
    assert_eq!(
        again.recv().await,
        json!({"type": "CANDIDATE", "src": "other", "dst": "node", "payload": 7})
    );
    first.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn refuses_missing_parameters_and_wrong_keys() {
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let mut missing = Client::connect(port, "key=peerjs&id=a").await;
    assert_eq!(
        missing.recv().await,
        json!({"type": "ERROR", "payload": {"msg": "No id, token, or key supplied to websocket server"}})
    );
    missing.expect_closed().await;
    let mut wrong = Client::connect(port, "key=nope&id=a&token=b").await;
    assert_eq!(
        wrong.recv().await,
        json!({"type": "ERROR", "payload": {"msg": "Invalid key provided"}})
    );
    wrong.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn queues_for_late_peers_and_expires_for_absent_ones() {
    let config = BrokerConfig {
        expire_timeout: Duration::from_millis(1500),
        ..BrokerConfig::default()
    };
    let broker = common::broker(config).await;
    let port = broker.local_addr().port();
    let mut alice = Client::register(port, "alice", "t").await;
    assert_eq!(alice.recv().await["type"], "OPEN");

    alice.send(json!({"type": "OFFER", "dst": "late", "payload": 1})).await;
    alice
        .send(json!({"type": "CANDIDATE", "dst": "late", "payload": 2}))
        .await;
    let mut late = Client::register(port, "late", "t").await;
    assert_eq!(late.recv().await["type"], "OPEN");
    assert_eq!(late.recv().await["payload"], 1);
    assert_eq!(late.recv().await["payload"], 2);

    alice.send(json!({"type": "OFFER", "dst": "ghost", "payload": 3})).await;
    alice
        .send(json!({"type": "CANDIDATE", "dst": "ghost", "payload": 4}))
        .await;
    // One EXPIRE per (unreached id, sender).
    assert_eq!(
        alice.recv().await,
        json!({"type": "EXPIRE", "src": "ghost", "dst": "alice"})
    );
    alice.send(json!({"type": "HEARTBEAT"})).await;
    late.send(json!({"type": "ANSWER", "dst": "alice", "payload": 5})).await;
    assert_eq!(alice.recv().await["type"], "ANSWER");
    broker.shutdown().await;
}

#[tokio::test]
async fn drops_clients_without_heartbeat() {
    let config = BrokerConfig {
        alive_timeout: Duration::from_millis(800),
        ..BrokerConfig::default()
    };
    let broker = common::broker(config).await;
    let port = broker.local_addr().port();
    let mut silent = Client::register(port, "silent", "t").await;
    let mut alive = Client::register(port, "alive", "t").await;
    assert_eq!(silent.recv().await["type"], "OPEN");
    assert_eq!(alive.recv().await["type"], "OPEN");

    // `alive` beats every 200 ms until `silent` has been dropped.
    let mut beat = tokio::time::interval(Duration::from_millis(200));
    let dropped = async {
        silent.expect_closed().await;
    };
    tokio::pin!(dropped);
    loop {
        tokio::select! {
            () = &mut dropped => break,
            _ = beat.tick() => alive.send(json!({"type": "HEARTBEAT"})).await,
        }
    }
    // The dropped id is free again, and `alive` still receives.
    let mut reborn = Client::register(port, "silent", "new-token").await;
    assert_eq!(reborn.recv().await["type"], "OPEN");
    reborn
        .send(json!({"type": "OFFER", "dst": "alive", "payload": 1}))
        .await;
    assert_eq!(alive.recv().await["src"], "silent");
    broker.shutdown().await;
}

#[tokio::test]
async fn rate_and_connection_caps() {
    let config = BrokerConfig {
        message_rate: RateLimit {
            per_second: 0.001,
            burst: 5.0,
        },
        max_sockets_per_ip: 2,
        ..BrokerConfig::default()
    };
    let broker = common::broker(config).await;
    let port = broker.local_addr().port();
    let mut noisy = Client::register(port, "noisy", "t").await;
    let mut quiet = Client::register(port, "quiet", "t").await;
    assert_eq!(noisy.recv().await["type"], "OPEN");
    assert_eq!(quiet.recv().await["type"], "OPEN");

    let mut third = Client::register(port, "third", "t").await;
    assert_eq!(
        third.recv().await,
        json!({"type": "ERROR", "payload": {"msg": "Too many connections from this address"}})
    );
    third.expect_closed().await;

    for _ in 0..6 {
        noisy.send(json!({"type": "HEARTBEAT"})).await;
    }
    assert_eq!(
        noisy.recv().await,
        json!({"type": "ERROR", "payload": {"msg": "Rate limit exceeded"}})
    );
    noisy.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn http_endpoints_match_peer_server() {
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (status, head, body) = http_get(port, "/").await;
    assert_eq!(status, 200);
    assert!(head.contains("application/json"));
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["name"], "PeerJS Server");

    // Any key works for /id, as with the reference server.
    let (status, head, id) = http_get(port, "/anykey/id?ts=1&version=1.5.5").await;
    assert_eq!(status, 200);
    assert!(head.contains("text/html"));
    assert!(head.contains("access-control-allow-origin: *"));
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);

    let (status, _, _) = http_get(port, "/peerjs/peers").await;
    assert_eq!(status, 401);
    broker.shutdown().await;
}

#[tokio::test]
async fn mounts_under_a_path() {
    let config = BrokerConfig {
        path: "/myapp".to_owned(),
        ..BrokerConfig::default()
    };
    let broker = common::broker(config).await;
    let port = broker.local_addr().port();
    let url = format!("ws://127.0.0.1:{port}/myapp/peerjs?key=peerjs&id=a&token=b");
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut client = Client { ws };
    assert_eq!(client.recv().await["type"], "OPEN");
    let (status, _, _) = http_get(port, "/myapp/peerjs/id").await;
    assert_eq!(status, 200);
    broker.shutdown().await;
}
