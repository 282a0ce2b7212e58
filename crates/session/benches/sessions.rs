//! 1,000 concurrent sessions on one node over `MemoryTransport`: aggregate
//! messages per second and resident memory (issue #21: ≥ 5,000 msg/s with
//! chat-like traffic, ≤ 200 MB).
//!
//! A hub `Node` and `STRATA_BENCH_SESSIONS` (default 1,000) client `Node`s
//! run in one actix system on a single-threaded runtime, so everything —
//! the hub, every client, the in-memory wire — shares one core. Each client
//! opens a session to the hub; then two kinds of traffic, in rounds that
//! end when every message of the round is delivered *and* acknowledged end
//! to end:
//!
//! - **chat**: `STRATA_BENCH_ROUNDS` (default 4) turns; in each, every
//!   client sends the hub a burst of 1 to 10 messages (seeded) and the hub
//!   answers each client with a burst of 1 to 10;
//! - **ping-pong**: `STRATA_BENCH_MESSAGES` (default 5) rounds of one
//!   message each way per session.
//!
//! The figure is messages per wall-clock second. The hub does only half of
//! the work measured (the clients do the other half on the same core), and
//! the RSS is the whole process's, clients included: both figures are
//! conservative bounds for the hub alone.
//!
//! **The floor**, measured in the same run on the same core: the same
//! messages, in the same bursts and turns, through MLS and Signal alone
//! (two of the cascade's layers, encrypt and decrypt, no session, store or
//! transport): how fast this machine can go at all, so a slower box is not
//! read as a regression.
//!
//! The process runs on mimalloc, the node's allocator (`apps/strata`).
//! With `STRATA_BENCH_DISK` set, every node keeps its store in a redb file
//! (under Cargo's target scratch directory, deleted after); the bench counts the
//! store's write transactions (each a durable commit on redb) per burst.
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
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::{AccountIdentity, Cascade, InstallationIdentity};
use strata_session::Durable;
use strata_session::actors::{
    Connect, Node, NodeEvent, NodeEventKind, PeerRequest, SessionRequest, SessionSetup, Subscribe,
};
use strata_session::{Command, Config, Content, Event};
use strata_store::{KeySource, MemoryBackend, RedbBackend, Store};
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
    queued: AtomicU64,
    received: AtomicU64,
    delivered: AtomicU64,
    lagged: AtomicU64,
}

impl Counts {
    /// The events of messages: each message is queued and delivered at its
    /// sender and received at its receiver. Events dropped because the
    /// counter lagged behind (the node keeps 4,096 per subscriber; a
    /// thousand bursts at once are more) are counted as seen: after the
    /// handshakes, the nodes raise no other kind.
    fn events_of_messages(&self) -> u64 {
        [&self.queued, &self.received, &self.delivered, &self.lagged]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
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
            NodeEventKind::Session(Event::Queued { .. }) => c.queued.fetch_add(1, Ordering::Relaxed),
            NodeEventKind::Session(Event::Received { .. }) => c.received.fetch_add(1, Ordering::Relaxed),
            NodeEventKind::Session(Event::Delivered { .. }) => c.delivered.fetch_add(1, Ordering::Relaxed),
            NodeEventKind::Lagged { dropped } => c.lagged.fetch_add(dropped, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// A store that counts its write transactions (on redb, each is one
/// durable commit).
struct Counted<S> {
    store: S,
    commits: Arc<AtomicU64>,
}

impl<S: Durable> Durable for Counted<S> {
    fn read_tx(
        &self,
        f: &mut dyn FnMut(&strata_store::Reader<'_>) -> Result<(), strata_store::StoreError>,
    ) -> Result<(), strata_store::StoreError> {
        self.store.read_tx(f)
    }

    fn write_tx(
        &self,
        f: &mut dyn FnMut(&mut strata_store::Writer<'_>) -> Result<(), strata_store::StoreError>,
    ) -> Result<(), strata_store::StoreError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.store.write_tx(f)
    }
}

/// Where the nodes keep their stores: in memory, or in redb files under a
/// directory (`STRATA_BENCH_DISK` set).
enum Stores {
    Memory,
    Disk(tempfile::TempDir),
}

fn start_node(
    net: &MemoryNetwork,
    name: &str,
    rng: &mut ChaCha20Rng,
    counter: Recipient<NodeEvent>,
    stores: &Stores,
    commits: &Arc<AtomicU64>,
) -> Addr<Node<MemoryTransport>> {
    let identity = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap());
    let key = KeySource::Key(StorageKey::generate(rng));
    let commits = Arc::clone(commits);
    let store: Arc<dyn Durable + Send + Sync> = match stores {
        Stores::Memory => Arc::new(Counted {
            store: Store::open(MemoryBackend::new(), key).unwrap(),
            commits,
        }),
        Stores::Disk(dir) => Arc::new(Counted {
            store: Store::open(
                RedbBackend::open(&dir.path().join(format!("{name}.redb"))).unwrap(),
                key,
            )
            .unwrap(),
            commits,
        }),
    };
    let setup = SessionSetup {
        config: Config::default(),
        local: identity,
        store,
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

/// The nodes under test and their counters.
struct Nodes<'a> {
    clients: &'a [Addr<Node<MemoryTransport>>],
    hub: &'a Addr<Node<MemoryTransport>>,
    names: &'a [String],
    hub_counts: &'a Counts,
    client_counts: &'a Counts,
}

impl Nodes<'_> {
    /// Runs `turns` (each client's burst to the hub and the hub's back),
    /// a turn's messages at once, the next turn when all of them are
    /// delivered and acknowledged; `before` messages went earlier. Returns
    /// the messages and the time.
    async fn run(&self, turns: &[Vec<(usize, usize)>], before: usize) -> (usize, Duration) {
        let started = Instant::now();
        let mut messages = 0;
        for (k, turn) in turns.iter().enumerate() {
            let mut requests = Vec::new();
            for (i, (up, down)) in turn.iter().enumerate() {
                for m in 0..*up {
                    requests.push(send(&self.clients[i], "hub", k as u64, format!("to the hub {k}.{m}")));
                }
                for m in 0..*down {
                    requests.push(send(
                        self.hub,
                        &self.names[i],
                        k as u64,
                        format!("from the hub {k}.{m}"),
                    ));
                }
                messages += up + down;
            }
            futures::future::join_all(requests).await;
            let goal = (before + messages) as u64;
            let (hub, clients) = (self.hub_counts, self.client_counts);
            wait(
                "every message delivered and acknowledged",
                Duration::from_secs(600),
                || hub.events_of_messages() + clients.events_of_messages() >= 3 * goal,
            )
            .await;
        }
        (messages, started.elapsed())
    }
}

/// The same turns through MLS and Signal alone, on one pair: messages
/// per second (encrypt and decrypt; both sides' work, on this core).
fn floor(turns: &[Vec<(usize, usize)>]) -> f64 {
    const NOW_MS: u64 = 1_700_000_000_000;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (a_id, a, b_id, b) = strata_test_support::cascade::setup_layers(&mut rng, NOW_MS);
    let (ai, bi) = (a_id.installation_id(), b_id.installation_id());
    let pick = |l: strata_test_support::cascade::Layers| -> Vec<Box<dyn strata_cascade::Layer>> {
        vec![Box::new(l.mls), Box::new(l.signal)]
    };
    let mut alice = Cascade::new(pick(a), ai, bi).unwrap();
    let mut bob = Cascade::new(pick(b), bi, ai).unwrap();
    let one_way = |from: &mut Cascade, to: &mut Cascade, n: usize, rng: &mut ChaCha20Rng| {
        for m in 0..n {
            let text = format!("to the hub 0.{m}");
            let sealed = from.encrypt(text.as_bytes(), NOW_MS, rng).unwrap();
            to.decrypt(&sealed, rng).unwrap();
        }
    };
    // Signal's first messages carry the PreKey: past them, as in a session.
    one_way(&mut alice, &mut bob, 1, &mut rng);
    one_way(&mut bob, &mut alice, 1, &mut rng);
    let started = Instant::now();
    let mut messages = 0;
    for turn in turns {
        for (up, down) in turn {
            one_way(&mut alice, &mut bob, *up, &mut rng);
            one_way(&mut bob, &mut alice, *down, &mut rng);
            messages += up + down;
        }
    }
    messages as f64 / started.elapsed().as_secs_f64()
}

/// The node's allocator (see `apps/strata`), so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let sessions = env("STRATA_BENCH_SESSIONS", 1000);
    let per_session = env("STRATA_BENCH_MESSAGES", 5) as usize;
    let rounds = env("STRATA_BENCH_ROUNDS", 4);
    let sessions = sessions as usize;
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
        let stores = if std::env::var_os("STRATA_BENCH_DISK").is_some() {
            // Cargo's scratch directory, on the build's disk (not a tmpfs).
            Stores::Disk(tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap())
        } else {
            Stores::Memory
        };
        let commits = Arc::new(AtomicU64::new(0));
        let hub = start_node(&net, "hub", &mut rng, hub_counter, &stores, &commits);
        let names: Vec<String> = (0..sessions).map(|i| format!("client-{i}")).collect();
        let clients: Vec<_> = names
            .iter()
            .map(|n| start_node(&net, n, &mut rng, client_counter.clone(), &stores, &commits))
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
            hub_counts.ready.load(Ordering::Relaxed) >= sessions as u64 && client_counts.ready.load(Ordering::Relaxed) >= sessions as u64
        })
        .await;
        let handshakes = started.elapsed();
        let rss_ready = rss();

        // Closed loop, in rounds: each round's messages go at once, and the
        // next round starts when all of them are delivered and acknowledged.
        // A flood of every message at once would only measure
        // retransmissions: on one saturated core, acknowledgements come
        // after the 2 s retransmission timeout.
        let mut traffic_rng = ChaCha20Rng::seed_from_u64(2);
        let chat: Vec<Vec<(usize, usize)>> = (0..rounds)
            .map(|_| {
                (0..sessions)
                    .map(|_| (traffic_rng.random_range(1..=10), traffic_rng.random_range(1..=10)))
                    .collect()
            })
            .collect();
        let ping_pong: Vec<Vec<(usize, usize)>> = (0..per_session).map(|_| vec![(1, 1); sessions]).collect();
        let floor_chat = floor(&chat);
        let nodes = Nodes {
            clients: &clients,
            hub: &hub,
            names: &names,
            hub_counts: &hub_counts,
            client_counts: &client_counts,
        };
        let before = commits.load(Ordering::Relaxed);
        let (chat_messages, chat_time) = nodes.run(&chat, 0).await;
        let chat_commits = commits.load(Ordering::Relaxed) - before;
        let floor_ping_pong = floor(&ping_pong);
        let before = commits.load(Ordering::Relaxed);
        let (pp_messages, pp_time) = nodes.run(&ping_pong, chat_messages).await;
        let pp_commits = commits.load(Ordering::Relaxed) - before;
        let rss_end = rss();
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let where_ = match stores {
            Stores::Memory => "memory stores",
            Stores::Disk(_) => "redb stores on disk",
        };
        println!("sessions/handshakes: {sessions} in {handshakes:.2?} ({where_})");
        // Each turn is one burst each way per session.
        let bursts = |turns: usize| (2 * sessions * turns) as f64;
        for (what, messages, time, floor, commits, turns) in [
            ("chat (bursts of 1 to 10 per turn)", chat_messages, chat_time, floor_chat, chat_commits, rounds as usize),
            ("ping-pong (one message per turn)", pp_messages, pp_time, floor_ping_pong, pp_commits, per_session),
        ] {
            let rate = messages as f64 / time.as_secs_f64();
            println!(
                "sessions/{what}: {messages} messages in {time:.2?} = {rate:.0} msg/s on one core (target ≥ 5,000 for chat in memory, ≥ 3,000 on disk); the floor, MLS + Signal alone: {floor:.0} msg/s, so {:.2} of it; {:.1} store commits per burst, both sides (target on disk ≤ 1)",
                rate / floor,
                commits as f64 / bursts(turns)
            );
        }
        println!(
            "sessions/rss: {:.1} MiB at start, {:.1} MiB with {sessions} sessions ready (hub and clients), {:.1} MiB after the traffic (target ≤ 200 MB)",
            mib(rss_start),
            mib(rss_ready),
            mib(rss_end)
        );
        let lagged = hub_counts.lagged.load(Ordering::Relaxed) + client_counts.lagged.load(Ordering::Relaxed);
        if lagged > 0 {
            eprintln!("note: {lagged} events dropped for the counters (the node keeps 4,096 per subscriber), counted as seen");
        }
        System::current().stop();
    });
}
