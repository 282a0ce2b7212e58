//! 1,000 concurrent sessions on one node over `MemoryTransport`: aggregate
//! messages per second and resident memory (targets ≥ 5,000 msg/s on one
//! core, ≤ 200 MB).
//!
//! A hub `Node` and `STRATA_BENCH_SESSIONS` (default 1,000) client `Node`s
//! run in one actix system on a single-threaded runtime, so everything —
//! the hub, every client, the in-memory wire — shares one core. Each client
//! opens a session to the hub; then, for `STRATA_BENCH_MESSAGES` (default
//! 10) rounds, every client sends a text to the hub and the hub one to every
//! client, and the round ends when all are acknowledged. The figure is
//! messages delivered *and* acknowledged end to end per wall-clock second. The hub does only half of
//! the work measured (the clients do the other half on the same core), and
//! the RSS is the whole process's, clients included: both figures are
//! conservative bounds for the hub alone.
//!
//! `cargo bench -p strata-session --bench sessions`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::actors::{
    Connect, Node, NodeEvent, NodeEventKind, PeerRequest, SessionRequest, SessionSetup, Subscribe,
};
use strata_session::{Command, Config, Content, Event};
use strata_store::{KeySource, MemoryBackend, Store};
use strata_transport::PeerAddr;
use strata_transport::memory::{MemoryConfig, MemoryNetwork, MemoryTransport};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident set size of this process, bytes (Linux).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[derive(Default)]
struct Counts {
    ready: AtomicU64,
    received: AtomicU64,
    delivered: AtomicU64,
    lagged: AtomicU64,
}

/// Counts the events of the nodes it is subscribed to.
struct Counter(Arc<Counts>);

impl Actor for Counter {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 16);
    }
}

impl Handler<NodeEvent> for Counter {
    type Result = ();
    fn handle(&mut self, event: NodeEvent, _ctx: &mut Self::Context) {
        let c = &self.0;
        match event.kind {
            NodeEventKind::Session(Event::EncryptionReady { .. }) => c.ready.fetch_add(1, Ordering::Relaxed),
            NodeEventKind::Session(Event::Received { .. }) => c.received.fetch_add(1, Ordering::Relaxed),
            NodeEventKind::Session(Event::Delivered { .. }) => c.delivered.fetch_add(1, Ordering::Relaxed),
            NodeEventKind::Lagged { dropped } => c.lagged.fetch_add(dropped, Ordering::Relaxed),
            _ => 0,
        };
    }
}

fn start_node(
    net: &MemoryNetwork,
    name: &str,
    rng: &mut ChaCha20Rng,
    counter: Recipient<NodeEvent>,
) -> Addr<Node<MemoryTransport>> {
    let identity = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap());
    let store = Store::open(MemoryBackend::new(), KeySource::Key(StorageKey::generate(rng))).unwrap();
    let setup = SessionSetup {
        config: Config::default(),
        local: identity,
        store: Arc::new(store),
        downloads: std::env::temp_dir().join("strata-bench-sessions"),
    };
    let (transport, stream) = net.join(name).unwrap();
    let node = Node::new(setup, transport, stream).unwrap().start();
    node.try_send(Subscribe(counter)).unwrap();
    node
}

async fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn send(node: &Addr<Node<MemoryTransport>>, peer: &str, id: u64, text: String) -> impl Future<Output = ()> + use<> {
    let request = node.send(PeerRequest {
        request_id: id,
        peer: PeerAddr::new(peer),
        request: SessionRequest::Command(Command::Send(Content::Text { text })),
    });
    async move {
        request.await.unwrap().result.unwrap();
    }
}

fn main() {
    let sessions = env("STRATA_BENCH_SESSIONS", 1000);
    let per_session = env("STRATA_BENCH_MESSAGES", 10);
    let system = System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    });
    system.block_on(async move {
        let rss_start = rss();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        // The wire's debugging trace would keep the last 65,536 frames
        // (hundreds of MB of handshake PDUs): not the node's memory.
        let wire = MemoryConfig {
            trace_capacity: 0,
            ..MemoryConfig::default()
        };
        let net = MemoryNetwork::with_config(1, wire);
        let (hub_counts, client_counts) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
        let hub_counter = Counter(Arc::clone(&hub_counts)).start().recipient();
        let client_counter = Counter(Arc::clone(&client_counts)).start().recipient();
        let hub = start_node(&net, "hub", &mut rng, hub_counter);
        let names: Vec<String> = (0..sessions).map(|i| format!("client-{i}")).collect();
        let clients: Vec<_> = names
            .iter()
            .map(|n| start_node(&net, n, &mut rng, client_counter.clone()))
            .collect();

        let started = Instant::now();
        for (i, c) in clients.iter().enumerate() {
            let reply = c
                .send(Connect {
                    request_id: i as u64,
                    peer: PeerAddr::new("hub"),
                    expect_identity: None,
                })
                .await
                .unwrap();
            reply.result.unwrap();
        }
        wait("every session ready", Duration::from_secs(600), || {
            hub_counts.ready.load(Ordering::Relaxed) >= sessions && client_counts.ready.load(Ordering::Relaxed) >= sessions
        })
        .await;
        let handshakes = started.elapsed();
        let rss_ready = rss();

        // Closed loop, in rounds: every session sends one message each way,
        // and the next round starts when all of them are acknowledged. A
        // flood of every message at once would only measure retransmissions:
        // on one saturated core, acknowledgements come after the 2 s
        // retransmission timeout.
        let total = 2 * sessions * per_session;
        let started = Instant::now();
        for k in 0..per_session {
            let mut requests = Vec::new();
            for (i, c) in clients.iter().enumerate() {
                requests.push(send(c, "hub", k, format!("to the hub {k}")));
                requests.push(send(&hub, &names[i], k, format!("from the hub {k}")));
            }
            futures::future::join_all(requests).await;
            let goal = 2 * sessions * (k + 1);
            wait("every message delivered and acknowledged", Duration::from_secs(600), || {
                hub_counts.received.load(Ordering::Relaxed) + client_counts.received.load(Ordering::Relaxed) >= goal
                    && hub_counts.delivered.load(Ordering::Relaxed) + client_counts.delivered.load(Ordering::Relaxed)
                        >= goal
            })
            .await;
        }
        let traffic = started.elapsed();
        let rss_end = rss();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!("sessions/handshakes: {sessions} in {handshakes:.2?}");
        println!(
            "sessions/aggregate: {total} messages ({per_session} each way per session) in {traffic:.2?} = {:.0} msg/s on one core",
            total as f64 / traffic.as_secs_f64()
        );
        println!(
            "sessions/rss: {:.1} MiB at start, {:.1} MiB with {sessions} sessions ready (hub and clients), {:.1} MiB after the traffic",
            mib(rss_start),
            mib(rss_ready),
            mib(rss_end)
        );
        let lagged = hub_counts.lagged.load(Ordering::Relaxed) + client_counts.lagged.load(Ordering::Relaxed);
        if lagged > 0 {
            eprintln!("warning: {lagged} events dropped for the counters (counts may stop short)");
        }
        System::current().stop();
    });
}
