//! Gossip benchmark: a 10-node loopback mesh in one process with the seeded
//! topology, payload and timing of `shared/tools/gossip-baseline.mjs`
//! (js-libp2p speaking Waku relay), run in the same invocation as that
//! baseline, plus messages/s between two nodes through a relay.
//!
//! ```text
//! cargo bench -p strata-transport-libp2p --bench gossip_mesh -j 2
//! ```
//!
//! Needs `npm ci` in `tests/interop` for the JS baseline (it is skipped,
//! loudly, without it or with `GB_SKIP_JS=1`). Knobs as in the baseline:
//! `GB_SEED` (1) `GB_NODES` (10) `GB_DIALS` (3) `GB_MSGS` (200)
//! `GB_INTERVAL_MS` (20) `GB_PAYLOAD_BYTES` (256) `GB_MESH_MIN` (3)
//! `GB_GRACE_MS` (5000); `TP_MSGS` (5000) for the throughput runs;
//! `BENCH_THREADS` (2; 1 gives a current-thread runtime, like Node's loop).
//! Prints one JSON line on stdout and a summary on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::Multiaddr;
use serde_json::{Value, json};
use strata_test_support::bench::{js_baseline, knob, shared_tool};
use strata_test_support::js::interop_dir;
use strata_test_support::libp2p::tcp_addr;
use strata_transport::{EventStream, PeerAddr, Topic, Transport, TransportError, TransportEvent};
use strata_transport_libp2p::{Config, Libp2pTransport};

fn env(key: &str, default: u64) -> u64 {
    knob(key, default)
}

/// Longest wait for a throughput run's messages.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

struct Cfg {
    seed: u32,
    nodes: usize,
    dials: usize,
    msgs: usize,
    interval: Duration,
    payload: usize,
    mesh_min: usize,
    grace: Duration,
}

/// The baseline's PRNG, bit for bit.
fn mulberry32(mut a: u32) -> impl FnMut() -> f64 {
    move || {
        a = a.wrapping_add(0x6D2B_79F5);
        let mut t = (a ^ (a >> 15)).wrapping_mul(1 | a);
        t = (t.wrapping_add((t ^ (t >> 7)).wrapping_mul(61 | t))) ^ t;
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }
}

/// The baseline's topology: node i dials `dials` distinct others picked by
/// a partial Fisher-Yates shuffle.
fn topology(n: usize, dials: usize, seed: u32) -> Vec<(usize, usize)> {
    let mut rand = mulberry32(seed);
    let mut edges = Vec::new();
    for i in 0..n {
        let mut others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        for k in 0..dials {
            let j = k + (rand() * (others.len() - k) as f64).floor() as usize;
            others.swap(k, j);
            edges.push((i, others[k]));
        }
    }
    edges
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[idx])
}

fn dist(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let r = |x: Option<f64>| x.map(|x| (x * 100.0).round() / 100.0);
    json!({ "n": v.len(), "min": r(v.first().copied()), "p50": r(quantile(&v, 0.5)), "p90": r(quantile(&v, 0.9)),
            "p99": r(quantile(&v, 0.99)), "max": r(v.last().copied()) })
}

type Received = Arc<Mutex<Vec<Vec<Option<Instant>>>>>;

/// Drains a node's events, stamping each publication of this run.
fn drain(mut events: EventStream, me: usize, tag: [u8; 4], received: Received) {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let t = Instant::now();
            if let TransportEvent::Published { bytes, .. } = event
                && bytes.len() >= 8
                && bytes[4..8] == tag
            {
                let seq = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
                let mut r = received.lock().unwrap();
                if let Some(slot) = r.get_mut(seq).and_then(|row| row.get_mut(me))
                    && slot.is_none()
                {
                    *slot = Some(t);
                }
            }
        }
    });
}

async fn mesh_variant(cfg: &Cfg, warm: bool) -> Value {
    eprintln!(
        "strata {}: starting {} nodes",
        if warm { "warm" } else { "cold" },
        cfg.nodes
    );
    let topic = Topic::from("/gossip-baseline/1/latency/proto");
    let tag: [u8; 4] = rand::random();
    let received: Received = Arc::new(Mutex::new(vec![vec![None; cfg.nodes]; cfg.msgs]));
    let mut nodes = Vec::new();
    for i in 0..cfg.nodes {
        let (node, events) = Libp2pTransport::start(Config::loopback(format!("bench-{i}")))
            .await
            .unwrap();
        node.subscribe(&topic).await.unwrap();
        drain(events, i, tag, received.clone());
        nodes.push(node);
    }
    let mut addrs = Vec::new();
    for node in &nodes {
        addrs.push(tcp_addr(node).await);
    }
    let t_dial = Instant::now();
    for (a, b) in topology(cfg.nodes, cfg.dials, cfg.seed) {
        nodes[a].dial(addrs[b].clone()).await.unwrap();
    }
    let mut mesh_ms = None;
    if warm {
        while t_dial.elapsed() < Duration::from_secs(10) {
            let mut ok = true;
            for node in &nodes {
                ok &= node.status().await.unwrap().mesh_peers >= cfg.mesh_min;
            }
            if ok {
                mesh_ms = Some(t_dial.elapsed().as_secs_f64() * 1e3);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("strata: dials issued, mesh {mesh_ms:?} ms; publishing");
    let mut sent = Vec::with_capacity(cfg.msgs);
    let t0 = Instant::now();
    for k in 0..cfg.msgs {
        let target = t0 + cfg.interval * k as u32;
        tokio::time::sleep_until(target.into()).await;
        let publisher = k % cfg.nodes;
        let mut payload = vec![0u8; cfg.payload.max(16)];
        payload[..4].copy_from_slice(&(k as u32).to_be_bytes());
        payload[4..8].copy_from_slice(&tag);
        rand::fill(&mut payload[8..]);
        let t_send = Instant::now();
        nodes[publisher].publish(&topic, Bytes::from(payload)).await.unwrap();
        sent.push((publisher, t_send));
    }
    let expected = cfg.msgs * (cfg.nodes - 1);
    let t_last = Instant::now();
    loop {
        let got: usize = received
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .filter(|t| t.is_some())
            .count();
        if got >= expected || t_last.elapsed() > cfg.grace {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("strata: drained");
    let r = received.lock().unwrap().clone();
    let mut lat = Vec::new();
    let mut not_full = 0;
    for (k, (publisher, t_send)) in sent.iter().enumerate() {
        let mut count = 0;
        for (j, t) in r[k].iter().enumerate() {
            if j != *publisher
                && let Some(t) = t
            {
                lat.push(t.duration_since(*t_send).as_secs_f64() * 1e3);
                count += 1;
            }
        }
        if count < cfg.nodes - 1 {
            not_full += 1;
        }
    }
    let mut expired = 0;
    for node in &nodes {
        expired += node.status().await.unwrap().expired;
        node.shutdown().await;
    }
    json!({ "variant": if warm { "warm" } else { "cold" }, "meshFormationMs": mesh_ms,
            "delivery": { "pairsDelivered": lat.len(), "pairsTotal": expected, "msgsNotFullyDelivered": not_full,
                          "queueExpired": expired },
            "latencyMs": dist(lat) })
}

async fn throughput(msgs: usize, payload: usize) -> Value {
    let start = |name: &str, bootstrap: Vec<Multiaddr>| {
        let mut config = Config::loopback(name);
        config.bootstrap = bootstrap;
        Libp2pTransport::start(config)
    };
    let (relay, _relay_events) = start("tp-relay", vec![]).await.unwrap();
    let relay_addr = tcp_addr(&relay).await;
    let (alice, mut alice_events) = start("tp-alice", vec![relay_addr.clone()]).await.unwrap();
    let (bob, mut bob_events) = start("tp-bob", vec![relay_addr]).await.unwrap();
    let topic = Topic::from("/strata/1/throughput/proto");
    bob.subscribe(&topic).await.unwrap();

    // Publications: alice → relay → bob.
    let body = Bytes::from(vec![7u8; payload]);
    eprintln!("strata throughput: publications");
    let receiver = tokio::spawn(async move {
        let mut got = 0;
        let count = async {
            while got < msgs {
                match bob_events.next().await {
                    Some(TransportEvent::Published { .. }) => got += 1,
                    Some(_) => {}
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_DEADLINE, count).await;
        (Instant::now(), got, bob_events)
    });
    let t0 = Instant::now();
    for _ in 0..msgs {
        publish_retrying(&alice, &topic, body.clone()).await;
    }
    let (t_end, pub_got, mut bob_events) = receiver.await.unwrap();
    let pub_rate = pub_got as f64 / t_end.duration_since(t0).as_secs_f64();
    eprintln!("strata throughput: links ({pub_got}/{msgs} publications arrived)");

    // Link frames: alice → relay → bob, reliable and ordered.
    let (a, b) = (alice.local_addr(), bob.local_addr());
    alice.connect(&b).await.unwrap();
    tokio::time::timeout(DRAIN_DEADLINE, async {
        wait_connected(&mut alice_events, &b).await;
        wait_connected(&mut bob_events, &a).await;
    })
    .await
    .expect("link did not open");
    let receiver = tokio::spawn(async move {
        let mut got = 0;
        let count = async {
            while got < msgs {
                match bob_events.next().await {
                    Some(TransportEvent::Frame { .. }) => got += 1,
                    Some(_) => {}
                    None => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_DEADLINE, count).await;
        (Instant::now(), got)
    });
    let t0 = Instant::now();
    for _ in 0..msgs {
        loop {
            match alice.send(&b, body.clone()).await {
                Ok(()) => break,
                // The link window is full: wait for acks.
                Err(TransportError::QueueFull) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => panic!("send: {e}"),
            }
        }
    }
    let (t_end, link_got) = receiver.await.unwrap();
    let link_rate = link_got as f64 / t_end.duration_since(t0).as_secs_f64();
    for node in [&alice, &bob, &relay] {
        node.shutdown().await;
    }
    json!({ "msgs": msgs, "payloadBytes": payload, "publicationsArrived": pub_got, "framesArrived": link_got,
            "publishViaRelayMsgsPerS": pub_rate.round(), "linkViaRelayMsgsPerS": link_rate.round() })
}

async fn publish_retrying(node: &Libp2pTransport, topic: &Topic, body: Bytes) {
    loop {
        match node.publish(topic, body.clone()).await {
            Ok(()) => return,
            Err(TransportError::QueueFull) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("publish: {e}"),
        }
    }
}

async fn wait_connected(events: &mut EventStream, peer: &PeerAddr) {
    while let Some(event) = events.next().await {
        if matches!(&event, TransportEvent::Connected { peer: p } if p == peer) {
            return;
        }
    }
    panic!("stream ended before Connected");
}

/// Runs the JS baseline with the same knobs; `None` if it cannot run.
fn gossip_baseline() -> Option<Value> {
    if env("GB_SKIP_JS", 0) == 1 {
        eprintln!("JS baseline skipped (GB_SKIP_JS=1)");
        return None;
    }
    let script = std::env::var_os("GB_BASELINE").map_or_else(|| shared_tool("gossip-baseline.mjs"), PathBuf::from);
    js_baseline(&script, &interop_dir(), "@chainsafe/libp2p-gossipsub", &[])
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let cfg = Cfg {
        seed: env("GB_SEED", 1) as u32,
        nodes: env("GB_NODES", 10) as usize,
        dials: env("GB_DIALS", 3) as usize,
        msgs: env("GB_MSGS", 200) as usize,
        interval: Duration::from_millis(env("GB_INTERVAL_MS", 20)),
        payload: env("GB_PAYLOAD_BYTES", 256) as usize,
        mesh_min: env("GB_MESH_MIN", 3) as usize,
        grace: Duration::from_millis(env("GB_GRACE_MS", 5000)),
    };
    let js = gossip_baseline();
    // Two workers by default (the machine's cores); `BENCH_THREADS=1` runs
    // everything on one thread like the baseline's single Node event loop
    // (measured: p50 and throughput worse, p99 no better).
    let threads = env("BENCH_THREADS", 2) as usize;
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    };
    let (warm, cold, tp) = runtime.block_on(async {
        let warm = mesh_variant(&cfg, true).await;
        let cold = mesh_variant(&cfg, false).await;
        let tp = throughput(env("TP_MSGS", 5000) as usize, cfg.payload).await;
        (warm, cold, tp)
    });
    let js_warm = js.as_ref().map(|j| j["variants"]["warm"]["latencyMs"].clone());
    let js_cold = js.as_ref().map(|j| j["variants"]["cold"]["delivery"].clone());
    let result = json!({ "strata": { "warm": warm, "cold": cold, "throughput": tp },
                         "js": { "warmLatencyMs": js_warm, "coldDelivery": js_cold } });
    println!("{result}");
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x}"));
    eprintln!(
        "strata warm p50/p99 {}/{} ms, delivered {}/{}; cold delivered {}/{} (expired {})",
        f(&warm["latencyMs"]["p50"]),
        f(&warm["latencyMs"]["p99"]),
        warm["delivery"]["pairsDelivered"],
        warm["delivery"]["pairsTotal"],
        cold["delivery"]["pairsDelivered"],
        cold["delivery"]["pairsTotal"],
        cold["delivery"]["queueExpired"],
    );
    if let (Some(jw), Some(jc)) = (&js_warm, &js_cold) {
        eprintln!(
            "js     warm p50/p99 {}/{} ms; cold delivered {}/{}",
            f(&jw["p50"]),
            f(&jw["p99"]),
            jc["pairsDelivered"],
            jc["pairsTotal"]
        );
        let met = warm["latencyMs"]["p99"].as_f64() <= jw["p99"].as_f64();
        eprintln!("target warm p99 <= js p99: {}", if met { "met" } else { "NOT met" });
    }
    eprintln!(
        "throughput via relay ({} B): publish {} msg/s, link {} msg/s",
        cfg.payload, tp["publishViaRelayMsgsPerS"], tp["linkViaRelayMsgsPerS"]
    );
}
