//! Back-pressure end to end: a receiver that stops reading its events stalls
//! the sender's `send` (no queue grows without bound), and once it reads
//! again every frame arrives, intact and in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata_transport::Transport;
use strata_transport::conformance::{connect_pair, recv_frame};
use strata_transport_peerjs::{BrokerConfig, PeerJsTransport};

const FRAME: usize = 64 << 10;
const FRAMES: usize = 256; // 16 MiB: far beyond every buffer on the path

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_stalls_the_sender() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let mut a_config = common::node_config("pressure-a", port);
    a_config.high_water = 256 << 10;
    let mut b_config = common::node_config("pressure-b", port);
    b_config.event_capacity = 4;
    let (a, mut a_events) = PeerJsTransport::start(a_config).await.unwrap();
    let (b, mut b_events) = PeerJsTransport::start(b_config).await.unwrap();
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;

    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (a, to, sent) = (a.clone(), b.local_addr(), Arc::clone(&sent));
        tokio::spawn(async move {
            for i in 0..FRAMES {
                let frame = Bytes::from(vec![u8::try_from(i % 251).unwrap(); FRAME]);
                a.send(&to, frame).await.unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Nothing reads b's events: the sender must block well short of the end.
    // (Asserting that something does *not* happen needs a window of time.)
    let stalled = tokio::time::timeout(Duration::from_secs(2), async {
        while sent.load(Ordering::Relaxed) < FRAMES {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        stalled.is_err(),
        "all {FRAMES} frames were accepted while nobody read them"
    );
    let in_flight = sent.load(Ordering::Relaxed);
    assert!(in_flight < FRAMES / 2, "{in_flight} frames accepted by a stalled path");

    // Reading again releases everything, in order and intact.
    let from = a.local_addr();
    for i in 0..FRAMES {
        let frame = recv_frame(&mut b_events, &from).await;
        assert_eq!(frame.len(), FRAME);
        assert!(
            frame.iter().all(|&b| usize::from(b) == i % 251),
            "frame {i} corrupted or out of order"
        );
    }
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .unwrap()
        .unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_unblocks_a_stalled_sender() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let mut a_config = common::node_config("unblock-a", port);
    a_config.high_water = 256 << 10;
    let mut b_config = common::node_config("unblock-b", port);
    b_config.event_capacity = 2;
    let (a, mut a_events) = PeerJsTransport::start(a_config).await.unwrap();
    let (b, mut b_events) = PeerJsTransport::start(b_config).await.unwrap();
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;

    let to = b.local_addr();
    let sender = {
        let (a, to) = (a.clone(), to.clone());
        tokio::spawn(async move {
            for _ in 0..FRAMES {
                a.send(&to, Bytes::from(vec![7; FRAME])).await?;
            }
            Ok::<(), strata_transport::TransportError>(())
        })
    };
    // Let the sender run into the stall (it cannot finish: nobody reads).
    let still_running = tokio::time::timeout(Duration::from_secs(2), async {
        while !sender.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(still_running.is_err(), "the sender was not stalled");
    // A local disconnect must not wait for the blocked frame.
    tokio::time::timeout(Duration::from_secs(5), a.disconnect(&to))
        .await
        .expect("disconnect hung behind a stalled sender")
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), sender)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Err(strata_transport::TransportError::NotConnected(to)));
    drop(b_events);
    broker.shutdown().await;
}
