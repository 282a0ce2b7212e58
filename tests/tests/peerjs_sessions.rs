//! Interop case (d) of the PeerJS issue and its "done when": two Strata
//! session nodes over real WebRTC on loopback, signalled through the
//! embedded broker, run the full P3 handshake, exchange messages both ways
//! and a file; a capture of everything that crossed the broker holds
//! signaling only. And a node rides out a broker restart and a crashed peer
//! without anyone stepping in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod peerjs_common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use peerjs_common::{PeerNode, fresh_identity, peer_id, random_file, run};
use strata_proto::{Pdu, PduType};
use strata_session::actors::{NodeEventKind, SessionRequest};
use strata_test_support::peerjs::{self, Doomed};
use strata_transport_peerjs::{Broker, BrokerConfig, PeerJsTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Most bytes the capture keeps; signaling for two nodes is a few KiB.
const CAPTURE_CAP: usize = 4 << 20;
/// The file of the test: several 48 KiB chunks and a partial last one.
const FILE_BYTES: usize = 300 * 1024 + 123;

/// Everything that crossed the broker, both ways: the HTTP upgrade heads
/// and the payload of every WebSocket message (client frames unmasked).
#[derive(Default)]
struct Capture {
    heads: Vec<Vec<u8>>,
    messages: Vec<Vec<u8>>,
    bytes: usize,
}

/// Reassembles WebSocket messages from one direction of a connection.
#[derive(Default)]
struct WsReader {
    buf: Vec<u8>,
    head_done: bool,
    partial: Vec<u8>,
}

impl WsReader {
    /// Feeds bytes; returns the HTTP head once complete and every whole
    /// message.
    fn feed(&mut self, bytes: &[u8]) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
        self.buf.extend_from_slice(bytes);
        let mut head = None;
        if !self.head_done {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return (None, Vec::new());
            };
            head = Some(self.buf.drain(..end + 4).collect());
            self.head_done = true;
        }
        let mut messages = Vec::new();
        while let Some((len, message)) = self.frame() {
            self.buf.drain(..len);
            if let Some(m) = message {
                messages.push(m);
            }
        }
        (head, messages)
    }

    /// Parses one frame at the start of the buffer: its length, and the
    /// message it completes (data frames only).
    fn frame(&mut self) -> Option<(usize, Option<Vec<u8>>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (fin, opcode) = (b[0] & 0x80 != 0, b[0] & 0x0f);
        assert_eq!(
            b[0] & 0x70,
            0,
            "a WebSocket extension is in use; the capture cannot read it"
        );
        let masked = b[1] & 0x80 != 0;
        let (mut len, mut at) = (u64::from(b[1] & 0x7f), 2);
        if len == 126 {
            len = u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().unwrap()));
            at = 4;
        } else if len == 127 {
            len = u64::from_be_bytes(b.get(2..10)?.try_into().unwrap());
            at = 10;
        }
        let mask: Option<[u8; 4]> = if masked {
            let m = b.get(at..at + 4)?.try_into().unwrap();
            at += 4;
            Some(m)
        } else {
            None
        };
        let end = at + usize::try_from(len).unwrap();
        let mut payload = b.get(at..end)?.to_vec();
        if let Some(mask) = mask {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
        }
        let message = match opcode {
            // Text, binary or a continuation: part of a data message.
            0..=2 => {
                self.partial.extend_from_slice(&payload);
                fin.then(|| std::mem::take(&mut self.partial))
            }
            // Close, ping, pong: control frames, kept for the byte search.
            8..=10 => Some(payload),
            other => panic!("WebSocket opcode {other} in the capture"),
        };
        Some((end, message))
    }
}

/// Forwards every connection on a fresh port to `upstream`, recording both
/// directions.
async fn recording_proxy(upstream: u16) -> (u16, Arc<Mutex<Capture>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let capture = Arc::new(Mutex::new(Capture::default()));
    let recorded = Arc::clone(&capture);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pipe(client_read, server_write, Arc::clone(&recorded)));
            tokio::spawn(pipe(server_read, client_write, Arc::clone(&recorded)));
        }
    });
    (port, capture)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    capture: Arc<Mutex<Capture>>,
) {
    let mut reader = WsReader::default();
    let mut buf = vec![0; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let (head, messages) = reader.feed(&buf[..n]);
            let mut capture = capture.lock().unwrap();
            capture.bytes += n;
            assert!(
                capture.bytes <= CAPTURE_CAP,
                "far more than signaling crossed the broker"
            );
            capture.heads.extend(head);
            capture.messages.extend(messages);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The message types a PeerJS broker and its clients exchange.
const SIGNALING: [&str; 9] = [
    "HEARTBEAT",
    "OPEN",
    "OFFER",
    "ANSWER",
    "CANDIDATE",
    "LEAVE",
    "EXPIRE",
    "ID-TAKEN",
    "ERROR",
];

/// Multi-device over PeerJS and WebRTC (issue #18): Alice's two devices
/// and Bob's three (one stale); see
/// `strata_test_support::devices::two_and_three`.
#[test]
fn two_accounts_with_several_devices_over_webrtc() {
    run(async {
        let broker = peerjs::broker(BrokerConfig::default()).await;
        let port = broker.local_addr().port();
        let dir = tempfile::tempdir().unwrap();
        let accounts = strata_test_support::devices::Accounts::new(91);
        let mut nodes = Vec::new();
        for identity in accounts.a.iter().chain(accounts.b.iter()) {
            let home = dir.path().join(identity.installation_id().to_hex());
            nodes.push(
                PeerNode::start_as(Arc::clone(identity), port, home, |store| accounts.seed(store, identity)).await,
            );
        }
        let [a1, a2, b1, b2, b3] = &mut nodes[..] else {
            unreachable!("five devices")
        };
        strata_test_support::devices::two_and_three(
            &accounts,
            [&mut a1.node, &mut a2.node],
            [&mut b1.node, &mut b2.node, &mut b3.node],
            std::time::Duration::from_secs(5),
        )
        .await;
        for node in nodes {
            node.shutdown().await;
        }
    });
}

#[test]
fn two_session_nodes_handshake_and_talk_over_webrtc_and_only_signaling_crosses_the_broker() {
    run(async {
        let broker = peerjs::broker(BrokerConfig::default()).await;
        let (port, capture) = recording_proxy(broker.local_addr().port()).await;
        let dir = tempfile::tempdir().unwrap();
        let (mut alice, alice_tap) = PeerNode::start_tapped("alice", port, dir.path().join("alice")).await;
        let (mut bob, bob_tap) = PeerNode::start_tapped("bob", port, dir.path().join("bob")).await;
        let (alice_id, bob_id) = (alice.id.clone(), bob.id.clone());

        alice.connect(&bob_id).await;
        assert!(!alice.wait_ready().await, "alice resumed instead of a handshake");
        assert!(!bob.wait_ready().await, "bob resumed instead of a handshake");
        let alice_number = alice.request(&bob_id, SessionRequest::SafetyNumber).await.unwrap();
        let bob_number = bob.request(&alice_id, SessionRequest::SafetyNumber).await.unwrap();
        assert_eq!(alice_number, bob_number);

        let marker = format!("strata-plaintext-{}", peer_id(&fresh_identity()));
        alice.send_text(&bob_id, &format!("to bob {marker}")).await;
        bob.wait_text(&format!("to bob {marker}")).await;
        bob.send_text(&alice_id, &format!("to alice {marker}")).await;
        alice.wait_text(&format!("to alice {marker}")).await;

        let source = dir.path().join("photo.bin");
        let data = random_file(&source, FILE_BYTES);
        let received = alice.send_file(&mut bob, &source).await;
        assert!(std::fs::read(&received).unwrap() == data, "the file arrived damaged");
        // And the other way, while Alice's first file is done.
        let reply = dir.path().join("reply.bin");
        let reply_data = random_file(&reply, 64 * 1024);
        let received = bob.send_file(&mut alice, &reply).await;
        assert!(
            std::fs::read(&received).unwrap() == reply_data,
            "the reply arrived damaged"
        );

        // Every P3 handshake step went over this transport's data channel.
        let frames: Vec<bytes::Bytes> = alice_tap.sent().into_iter().chain(bob_tap.sent()).collect();
        let on_the_channel: BTreeSet<&str> = frames
            .iter()
            .filter_map(|f| Pdu::decode(f).ok())
            .map(|p| p.pdu_type().as_str())
            .collect();
        for step in [
            PduType::KeyPackageRequest,
            PduType::KeyPackage,
            PduType::SignalKeyExchangeRequest,
            PduType::SignalKeyExchangeResponse,
            PduType::MlKemKeyExchange,
            PduType::MlsWelcome,
            PduType::Message,
        ] {
            assert!(
                on_the_channel.contains(step.as_str()),
                "no {step} on the data channel (saw {on_the_channel:?})"
            );
        }

        broker.shutdown().await;
        {
            let capture = capture.lock().unwrap();
            // The capture is real: both nodes registered and negotiated through it.
            assert!(capture.heads.len() >= 2, "{} connections recorded", capture.heads.len());
            let mut types = BTreeSet::new();
            for message in &capture.messages {
                if message.len() <= 125 && !message.starts_with(b"{") {
                    continue; // a ping, pong or close frame's payload
                }
                let json: serde_json::Value = serde_json::from_slice(message)
                    .unwrap_or_else(|e| panic!("non-JSON message crossed the broker ({e}): {message:?}"));
                let ty = json["type"]
                    .as_str()
                    .unwrap_or_else(|| panic!("untyped message: {json}"));
                assert!(SIGNALING.contains(&ty), "{ty} crossed the broker: {json}");
                if ty == "ANSWER" {
                    // The answerer is the DTLS server, listening before the
                    // offerer's hello (rtc.rs: a client answerer's hello is
                    // dropped and resent a second later).
                    let sdp = json["payload"]["sdp"]["sdp"].as_str().unwrap_or_default();
                    assert!(sdp.contains("a=setup:passive"), "answer SDP: {sdp}");
                }
                types.insert(ty.to_owned());
            }
            for expected in ["OPEN", "OFFER", "ANSWER", "CANDIDATE"] {
                assert!(types.contains(expected), "no {expected} in the capture ({types:?})");
            }
            let all: Vec<u8> = capture
                .heads
                .iter()
                .chain(&capture.messages)
                .flatten()
                .copied()
                .collect();
            assert!(contains(&all, b"a=fingerprint"), "no SDP in the capture");
            // No PDU type, plaintext or frame bytes anywhere in it.
            for ty in PduType::ALL {
                let quoted = format!("\"{}\"", ty.as_str());
                assert!(!contains(&all, quoted.as_bytes()), "{quoted} crossed the broker");
            }
            assert!(
                !contains(&all, marker.as_bytes()),
                "a message's text crossed the broker"
            );
            assert!(!contains(&all, &data[1000..1064]), "file bytes crossed the broker");
            for frame in &frames {
                // A 48-byte window from the middle: base64 ciphertext unique to it.
                let mid = frame.len() / 2;
                let window = &frame[mid.saturating_sub(24)..(mid + 24).min(frame.len())];
                assert!(!contains(&all, window), "a data-channel frame crossed the broker");
            }
            assert!(frames.len() > 20, "only {} frames sent", frames.len());
        }
        alice.shutdown().await;
        bob.shutdown().await;
    });
}

#[test]
fn a_node_rides_out_a_broker_restart_and_a_crashed_peer() {
    run(async {
        let broker = peerjs::broker(BrokerConfig::default()).await;
        let broker_addr = broker.local_addr();
        let port = broker_addr.port();
        let dir = tempfile::tempdir().unwrap();
        let mut alice = PeerNode::start("alice", port, dir.path().join("alice")).await;

        // Bob's transport lives on a runtime the test can kill; he keeps his
        // broker token, as a node that persists it would.
        let bob_identity = fresh_identity();
        let mut bob_config = peerjs::config(&peer_id(&bob_identity), port);
        bob_config.signaling.token = Some("bobstoken".to_owned());
        let doomed = Doomed::new();
        let (transport, stream) = doomed.start(bob_config.clone()).await;
        let bob_dir = dir.path().join("bob");
        let mut bob = PeerNode::boot("bob", Arc::clone(&bob_identity), bob_dir.clone(), transport, stream).await;
        let (alice_id, bob_id) = (alice.id.clone(), bob.id.clone());

        alice.connect(&bob_id).await;
        assert!(!alice.wait_ready().await);
        assert!(!bob.wait_ready().await);

        // The broker goes away: open links do not need it.
        broker.shutdown().await;
        alice.send_text(&bob_id, "broker down").await;
        bob.wait_text("broker down").await;
        bob.send_text(&alice_id, "still here").await;
        alice.wait_text("still here").await;

        // It comes back on the same address; the nodes re-register by
        // themselves. Then Bob crashes.
        let broker = Broker::bind(broker_addr, BrokerConfig::default()).await.unwrap();
        doomed.crash();
        alice
            .wait_for("bob's link lost", |e| {
                e.peer == bob_id && matches!(e.kind, NodeEventKind::Disconnected)
            })
            .await;
        bob.shutdown().await;

        // Alice queues a message while Bob is gone.
        alice.send_text(&bob_id, "while you were out").await;

        // Bob restarts on his store. Nobody calls connect: the nodes find
        // each other again through the new broker and resume the session.
        let (transport, stream) = PeerJsTransport::start(bob_config).await.unwrap();
        let mut bob = PeerNode::boot("bob", bob_identity, bob_dir, transport, stream).await;
        alice
            .wait_for("bob back", |e| {
                e.peer == bob_id && matches!(e.kind, NodeEventKind::Connected)
            })
            .await;
        assert!(
            alice.wait_ready().await,
            "alice made a new handshake instead of resuming"
        );
        assert!(bob.wait_ready().await, "bob made a new handshake instead of resuming");
        bob.wait_text("while you were out").await;
        bob.send_text(&alice_id, "back again").await;
        alice.wait_text("back again").await;

        alice.shutdown().await;
        bob.shutdown().await;
        broker.shutdown().await;
    });
}
