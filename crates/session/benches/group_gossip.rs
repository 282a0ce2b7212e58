//! Group messages over a gossip transport: how many publishes one group
//! message costs (issue #17's target: one, whatever the group's size), and
//! how many link frames (none), with the time to deliver every message to
//! every member.
//!
//! `STRATA_BENCH_MEMBERS` (default 10) session `Node`s over
//! `MemoryTransport` (which has broadcast, as libp2p gossip does), each
//! transport wrapped in a [`Tap`] that counts what the node publishes and
//! sends. The admin adds every member from a claimed KeyPackage; then each
//! member sends `STRATA_BENCH_MESSAGES` (default 20) texts, and the run
//! ends when every member has every other member's texts.
//!
//! `cargo bench -p strata-session --bench group_gossip`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::actors::SessionSetup;
use strata_session::group::GroupEvent;
use strata_session::{Config, keep_stocked};
use strata_store::{KeySource, MemoryBackend, Store};
use strata_test_support::bench::knob;
use strata_test_support::tap::Tap;
use strata_test_support::{TestNode, run_paused};
use strata_transport::memory::{MemoryNetwork, MemoryTransport};

fn is_group_message(frame: &[u8]) -> bool {
    matches!(strata_proto::Pdu::decode(frame), Ok(strata_proto::Pdu::GroupMessage(_)))
}

fn main() {
    let members: usize = knob("STRATA_BENCH_MEMBERS", 10);
    let messages: usize = knob("STRATA_BENCH_MESSAGES", 20);
    run_paused(async move {
        let net = MemoryNetwork::new(17);
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        let names: Vec<&'static str> = (0..members)
            .map(|i| &*Box::leak(format!("member-{i}").into_boxed_str()))
            .collect();
        let mut nodes: Vec<TestNode<Tap<MemoryTransport>>> = Vec::new();
        let mut taps = Vec::new();
        for name in &names {
            let identity =
                Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap());
            let store = Store::open(MemoryBackend::new(), KeySource::Key(StorageKey::generate(&mut rng))).unwrap();
            let pool = Config::default().key_package_pool;
            keep_stocked(&store, &identity, &pool, 1_700_000_000).unwrap();
            let setup = SessionSetup {
                config: Config::default(),
                local: identity,
                store: Arc::new(store),
                downloads: std::env::temp_dir().join("strata-bench-group-gossip"),
            };
            let (transport, stream) = net.join(*name).unwrap();
            let tap = Tap::new(transport);
            taps.push(tap.clone());
            nodes.push(TestNode::start(name, setup, tap, stream, Duration::from_secs(600)));
        }
        for name in &names[1..] {
            nodes[0].connect(*name).await;
        }
        for i in 1..members {
            nodes[0].wait_ready().await;
            nodes[i].wait_ready().await;
        }
        let group = nodes[0].create_group("bench").await;
        for name in &names[1..] {
            nodes[0].add_to_group(&group, *name).await;
        }
        let last = (members - 1) as u64;
        for (i, n) in nodes.iter_mut().enumerate().skip(1) {
            n.wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
                .await;
            if (i as u64) < last {
                n.wait_group(
                    &group,
                    "the last add",
                    |e| matches!(e, GroupEvent::Epoch { epoch, .. } if *epoch == last),
                )
                .await;
            }
        }
        let before: Vec<(usize, usize)> = taps.iter().map(|t| (t.published().len(), t.sent().len())).collect();
        let started = Instant::now();
        for k in 0..messages {
            for (i, n) in nodes.iter_mut().enumerate() {
                n.group_send(&group, &format!("{i}/{k}")).await;
            }
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            for j in (0..members).filter(|j| *j != i) {
                for k in 0..messages {
                    n.wait_group_text(&group, &format!("{j}/{k}")).await;
                }
            }
        }
        let elapsed = started.elapsed();
        let sent = members * messages;
        let (mut publishes, mut frames) = (0, 0);
        for (tap, (published, sent_before)) in taps.iter().zip(before) {
            publishes += tap.published()[published..]
                .iter()
                .filter(|f| is_group_message(f))
                .count();
            frames += tap.sent()[sent_before..].iter().filter(|f| is_group_message(f)).count();
        }
        println!(
            "group/gossip at N = {members}: {sent} messages, {:.2} publishes and {:.2} link frames per message (target 1 publish); every message at every member in {:.0} ms (wall clock, paused network clock)",
            publishes as f64 / sent as f64,
            frames as f64 / sent as f64,
            elapsed.as_secs_f64() * 1e3,
        );
    });
}
