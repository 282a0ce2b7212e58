//! Only SDP and ICE cross the broker: two Strata nodes talk through a
//! recording TCP proxy in front of the embedded broker, exchange frames over
//! WebRTC, and the capture holds signaling but none of the frames.
//!
//! (The issue's interop case (d) also wants the full P3 handshake over this
//! path; that part needs `strata-session` and lives with it.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strata_transport::conformance::{connect_pair, expect_event, recv_frame};
use strata_transport::{Transport, TransportEvent};
use strata_transport_peerjs::BrokerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Most bytes the capture keeps; signaling for two nodes is a few KiB.
const CAPTURE_CAP: usize = 4 << 20;

/// Forwards every connection on a fresh port to `upstream`, recording what the
/// broker sends (WebSocket server frames are unmasked, so relayed text shows
/// up verbatim; anything relayed from one client reaches the other this way).
async fn recording_proxy(upstream: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let capture = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&capture);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                let mut buf = vec![0; 16 << 10];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    {
                        let mut capture = recorded.lock().unwrap();
                        assert!(capture.len() + n <= CAPTURE_CAP, "broker sent far more than signaling");
                        capture.extend_from_slice(&buf[..n]);
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, capture)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn frames_never_cross_the_broker() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let (port, capture) = recording_proxy(broker.local_addr().port()).await;
    let (a, mut a_events) = common::node("capture-a", port).await;
    let (b, mut b_events) = common::node("capture-b", port).await;
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;

    let marker = format!("STRATA-PDU-{:016x}", rand_marker());
    let pdu = Bytes::from(format!(r#"{{"type":"message","body":"{marker}"}}"#));
    let big = Bytes::from(marker.repeat(10_000));
    for frame in [pdu.clone(), big.clone()] {
        a.send(&b.local_addr(), frame.clone()).await.unwrap();
        assert_eq!(recv_frame(&mut b_events, &a.local_addr()).await, frame);
        b.send(&a.local_addr(), frame.clone()).await.unwrap();
        assert_eq!(recv_frame(&mut a_events, &b.local_addr()).await, frame);
    }
    // Disconnecting and reconnecting signals again; still nothing else.
    a.disconnect(&b.local_addr()).await.unwrap();
    expect_event(
        &mut b_events,
        "Disconnected at b",
        |e| matches!(e, TransportEvent::Disconnected { .. }),
        Duration::from_secs(10),
    )
    .await;
    connect_pair(&b, &mut b_events, &a, &mut a_events).await;
    b.send(&a.local_addr(), pdu.clone()).await.unwrap();
    assert_eq!(recv_frame(&mut a_events, &b.local_addr()).await, pdu);

    let captured = capture.lock().unwrap().clone();
    // The capture is real: registrations and negotiation went through it.
    for expected in [
        &b"\"OPEN\""[..],
        b"\"OFFER\"",
        b"\"ANSWER\"",
        b"candidate:",
        b"a=fingerprint",
    ] {
        assert!(
            contains(&captured, expected),
            "capture lacks {}",
            String::from_utf8_lossy(expected)
        );
    }
    // The answerer is the DTLS server (rtc.rs): as client it would send its
    // hello before the offerer's DTLS endpoint exists, and webrtc-rs resends
    // a dropped hello only after 1 s. Offers say `actpass`, so `passive` can
    // only come from an answer, and `active` from a client answerer.
    assert!(
        contains(&captured, b"a=setup:passive"),
        "no answer took the DTLS server role"
    );
    assert!(
        !contains(&captured, b"a=setup:active"),
        "an answerer took the DTLS client role"
    );
    assert!(
        !contains(&captured, marker.as_bytes()),
        "an application frame crossed the broker"
    );
    assert!(captured.len() < 64 << 10, "{} bytes of signaling", captured.len());
    broker.shutdown().await;
}

#[tokio::test]
async fn the_event_stream_ends_after_shutdown() {
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (a, mut a_events) = common::node("ending-a", port).await;
    let (b, mut b_events) = common::node("ending-b", port).await;
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    a.shutdown().await;
    let drained = async {
        while let Some(event) = a_events.next().await {
            tracing::debug!(?event, "after shutdown");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("event stream did not end after shutdown");
    assert!(a.connect(&b.local_addr()).await.is_err());
    broker.shutdown().await;
}

fn rand_marker() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish()
}
