//! Invite → first message over loopback libp2p (issue #19), against the
//! same first message after a contact URI's connect (the account key
//! expected, no key exchange), both in one run:
//!
//! - `invite`: fresh installations and stores that know only a relay;
//!   Alice makes an invite, Bob accepts it, the key exchange runs on
//!   rendezvous topics, Bob's node opens the Strata handshake, Bob sends a
//!   text as soon as the session is ready; the time until Alice has it;
//! - `connect`: a fresh pair again; Bob connects expecting Alice's account
//!   key (what `strata connect <contact URI>` does) and sends once the
//!   session is ready; the time until Alice has it.
//!
//! `cargo bench -j 2 -p strata-tests --bench libp2p_kx`; knob:
//! `KX_BENCH_RUNS` (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::print_stdout)]

#[path = "../tests/libp2p_common/mod.rs"]
mod libp2p_common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p_common::{Installation, Running, run, start_relay};
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::actors::{AcceptInvite, MakeInvite};
use strata_test_support::bench::{knob, median};
use strata_test_support::libp2p::tcp_addr;
use strata_transport::PeerAddr;

fn fresh(dir: &Path, relay: &Multiaddr) -> Installation {
    let mut rng = rand::rng();
    let id = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap());
    Installation::of(id, dir, relay.clone())
}

async fn pair(dir: &Path, relay: &Multiaddr) -> (Installation, Running, Installation, Running) {
    let (a, b) = (fresh(dir, relay), fresh(dir, relay));
    let (ra, rb) = (a.start().await, b.start().await);
    (a, ra, b, rb)
}

/// Bob sends a first text once his session is ready (a session learns its
/// peer's installation in the handshake); the ms from `t0` until Alice has
/// it. Both stop.
async fn first_text(t0: Instant, alice_addr: PeerAddr, mut alice: Running, mut bob: Running) -> f64 {
    bob.wait_ready().await;
    bob.send_text(alice_addr, "first").await;
    alice.wait_text("first").await;
    let took = t0.elapsed().as_secs_f64() * 1e3;
    alice.stop().await;
    bob.stop().await;
    took
}

/// Invite → the first text at Alice, ms.
async fn invite(dir: &Path, relay: &Multiaddr) -> f64 {
    let (a, alice, _b, bob) = pair(dir, relay).await;
    let alice_addr = PeerAddr::new(a.identity.installation_id().to_hex());
    let t0 = Instant::now();
    let invite = alice
        .addr
        .send(MakeInvite {
            request_id: 1,
            ttl: Duration::from_secs(600),
            name: String::new(),
        })
        .await
        .unwrap()
        .result
        .unwrap();
    bob.addr
        .send(AcceptInvite {
            request_id: 2,
            invite: Box::new(invite),
            name: String::new(),
        })
        .await
        .unwrap()
        .result
        .unwrap();
    first_text(t0, alice_addr, alice, bob).await
}

/// Connect expecting the account key → the first text at Alice, ms.
async fn connect(dir: &Path, relay: &Multiaddr) -> f64 {
    let (a, alice, _b, mut bob) = pair(dir, relay).await;
    let alice_addr = PeerAddr::new(a.identity.installation_id().to_hex());
    let key = a.identity.account().identity_key().serialize().to_vec();
    let t0 = Instant::now();
    bob.try_connect(alice_addr.clone(), Some(key)).await.unwrap();
    first_text(t0, alice_addr, alice, bob).await
}

fn main() {
    let runs: usize = knob("KX_BENCH_RUNS", 5);
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (relay, _events) = start_relay().await;
        let relay_addr = tcp_addr(&relay).await;
        let (mut by_invite, mut by_connect) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            by_invite.push(invite(dir.path(), &relay_addr).await);
            by_connect.push(connect(dir.path(), &relay_addr).await);
        }
        let (i, c) = (median(by_invite.clone()), median(by_connect.clone()));
        println!("first message over loopback libp2p, through a relay (median of {runs}, ms)");
        println!("  connect with the key expected: {c:>8.0}   runs {by_connect:.0?}");
        println!("  invite → key exchange → first: {i:>8.0}   runs {by_invite:.0?}");
        println!("  ratio invite / connect:        {:>8.2}×", i / c);
        relay.shutdown().await;
    });
}
