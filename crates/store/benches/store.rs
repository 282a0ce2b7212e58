//! What persistence costs (issue 4, part 8). Run in release:
//!
//! ```text
//! cargo bench -p strata-store --bench store
//! ```
//!
//! 1. One message, persisted on redb — queue (outbox), ratchet step +
//!    frames (`record_encrypted`), the peer's decrypt + inbox + processed
//!    mark (`accept_incoming`), the ack — as a ratio to the same message
//!    through the two in-memory cascades alone, measured interleaved in the
//!    same run. Also a burst of 16 with `record_encrypted_batch`.
//! 2. A store of 10,000 peer sessions, each a sealed real pair state
//!    (~20 KB): file size, open time, and RSS of a fresh process that opens
//!    it and loads one session (`/proc/self/status` VmRSS, VmHWM).
//!
//! Figures are printed; timing targets live here, never in tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(missing_docs, clippy::print_stdout)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_cascade::PairCascade;
use strata_store::{IncomingMessage, KeySource, OutgoingMessage, RedbBackend, Store, load_or_create_key_file};
use strata_test_support::cascade;

const OPEN_ENV: &str = "STRATA_BENCH_OPEN";
const PEERS: usize = 10_000;
const BURST: usize = 16;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn open(dir: &Path, name: &str) -> Store<RedbBackend> {
    let key = load_or_create_key_file(&dir.join(format!("{name}.key"))).unwrap();
    Store::open(
        RedbBackend::open(&dir.join(format!("{name}.redb"))).unwrap(),
        KeySource::Key(key),
    )
    .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Sides {
    alice: PairCascade,
    bob: PairCascade,
    a_store: Store<RedbBackend>,
    b_store: Store<RedbBackend>,
    a_peer: String,
    b_peer: String,
    n: u64,
}

impl Sides {
    /// The in-memory cascade step: encrypt at Alice, decrypt at Bob.
    fn memory_step(&mut self, body: &[u8]) {
        let mut rng = rand::rng();
        let m = self.alice.encrypt(body, now_ms(), &mut rng).unwrap();
        assert_eq!(self.bob.decrypt(&m, &mut rng).unwrap(), body);
    }

    /// Alice's message `id`, new in her outbox.
    fn outgoing(&self, id: &str, body: &[u8]) -> OutgoingMessage {
        OutgoingMessage {
            message_id: id.to_owned(),
            peer: self.a_peer.clone(),
            created_ms: now_ms(),
            body: body.to_vec(),
            frames: Vec::new(),
            attempts: 0,
        }
    }

    /// The same message with every write the atomicity rules ask for.
    fn persisted_step(&mut self, body: &[u8]) {
        let mut rng = rand::rng();
        self.n += 1;
        let id = format!("m{}", self.n);
        let out = self.outgoing(&id, body);
        self.a_store.write(|w| w.queue_outgoing(&out)).unwrap();
        let m = self.alice.encrypt(body, now_ms(), &mut rng).unwrap();
        let frames = vec![serde_json::to_vec(&m).unwrap()];
        let state = self.alice.export().unwrap();
        self.a_store
            .write(|w| w.record_encrypted(&self.a_peer, &id, frames, state.as_bytes()))
            .unwrap();
        let plaintext = self.bob.decrypt(&m, &mut rng).unwrap();
        let incoming = IncomingMessage {
            peer: self.b_peer.clone(),
            message_id: id.clone(),
            received_ms: now_ms(),
            body: plaintext,
        };
        let state = self.bob.export().unwrap();
        self.b_store
            .write(|w| w.accept_incoming(&incoming, state.as_bytes()))
            .unwrap();
        self.a_store.write(|w| w.ack_outgoing(&self.a_peer, &id)).unwrap();
    }

    /// A burst sent: queued in one transaction, encrypted, committed with
    /// one state; returns the time per message of the sending side.
    fn burst_send(&mut self, body: &[u8], batched: bool) -> Duration {
        let mut rng = rand::rng();
        let start = Instant::now();
        let ids: Vec<String> = (0..BURST)
            .map(|_| {
                self.n += 1;
                format!("m{}", self.n)
            })
            .collect();
        self.a_store
            .write(|w| {
                for id in &ids {
                    w.queue_outgoing(&self.outgoing(id, body))?;
                }
                Ok(())
            })
            .unwrap();
        let mut sent = Vec::new();
        for id in &ids {
            let m = self.alice.encrypt(body, now_ms(), &mut rng).unwrap();
            let frames = vec![serde_json::to_vec(&m).unwrap()];
            if batched {
                sent.push((id.clone(), frames));
            } else {
                let state = self.alice.export().unwrap();
                self.a_store
                    .write(|w| w.record_encrypted(&self.a_peer, id, frames, state.as_bytes()))
                    .unwrap();
            }
        }
        if batched {
            let state = self.alice.export().unwrap();
            self.a_store
                .write(|w| w.record_encrypted_batch(&self.a_peer, sent, state.as_bytes()))
                .unwrap();
        }
        let elapsed = start.elapsed() / BURST as u32;
        // Drain: Bob reads them (unmeasured) and Alice's outbox empties.
        let outbox = self.a_store.read(|r| r.outbox(&self.a_peer)).unwrap();
        for message in outbox {
            let m = serde_json::from_slice(&message.frames[0]).unwrap();
            self.bob.decrypt(&m, &mut rng).unwrap();
            self.a_store
                .write(|w| w.ack_outgoing(&self.a_peer, &message.message_id))
                .unwrap();
        }
        elapsed
    }
}

fn per_message_figures(dir: &Path) {
    let pair = cascade::established(&mut rand::rng(), now_ms());
    let a_peer = hex(pair.bob_id.installation_id().as_bytes());
    let b_peer = hex(pair.alice_id.installation_id().as_bytes());
    let mut s = Sides {
        alice: pair.alice,
        bob: pair.bob,
        a_store: open(dir, "alice"),
        b_store: open(dir, "bob"),
        a_peer,
        b_peer,
        n: 0,
    };
    let body = vec![0x5au8; 256];
    let state_len = s.alice.export().unwrap().as_bytes().len();
    let (rounds, batch) = (15, 20);
    let (mut memory, mut persisted, mut single, mut batched) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..batch {
            s.memory_step(&body);
        }
        memory.push(t.elapsed() / batch);
        let t = Instant::now();
        for _ in 0..batch {
            s.persisted_step(&body);
        }
        persisted.push(t.elapsed() / batch);
        single.push(s.burst_send(&body, false));
        batched.push(s.burst_send(&body, true));
    }
    let (memory, persisted) = (median(memory), median(persisted));
    let (single, batched) = (median(single), median(batched));
    println!("256 B message, median of {rounds} interleaved batches of {batch}; pair state {state_len} B:");
    println!("  in-memory cascade step (encrypt + decrypt)            {memory:?}");
    println!("  persisted on redb (4 commits: queue, ratchet+frames, inbox, ack) {persisted:?}");
    println!(
        "  RATIO persisted / in-memory = {:.2}",
        persisted.as_secs_f64() / memory.as_secs_f64()
    );
    println!("  send side of a burst of {BURST}, per message: one state per message {single:?}, batched {batched:?}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn many_sessions_figures(dir: &Path) {
    // Real pair states, sealed one per peer; ten different ones so the
    // rows are not all alike.
    let states: Vec<Vec<u8>> = (0..10)
        .map(|_| {
            cascade::established(&mut rand::rng(), now_ms())
                .alice
                .export()
                .unwrap()
                .as_bytes()
                .to_vec()
        })
        .collect();
    let avg = states.iter().map(Vec::len).sum::<usize>() / states.len();
    let store = open(dir, "many");
    let t = Instant::now();
    for chunk in 0..PEERS / 500 {
        store
            .write(|w| {
                for i in chunk * 500..(chunk + 1) * 500 {
                    w.set_layer_state(&format!("{i:032x}"), &states[i % states.len()])?;
                }
                Ok(())
            })
            .unwrap();
    }
    let fill = t.elapsed();
    drop(store);
    let size = std::fs::metadata(dir.join("many.redb")).unwrap().len();
    // Open in a fresh process, so its RSS is the open's and nothing else's.
    let out = Command::new(std::env::current_exe().unwrap())
        .env(OPEN_ENV, dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("{PEERS} peer sessions of {avg} B average (real pair states), sealed:");
    println!(
        "  written in {fill:?} ({} per session); file {:.1} MiB",
        format_args!("{:?}", fill / PEERS as u32),
        size as f64 / (1 << 20) as f64
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The fresh process of `many_sessions_figures`.
fn open_and_measure(dir: &Path) {
    let base_rss = status_kib("VmRSS:");
    let t = Instant::now();
    let store = open(dir, "many");
    let opened = t.elapsed();
    let after_open = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    let t = Instant::now();
    let state = store
        .read(|r| r.layer_state(&format!("{:032x}", 4321)))
        .unwrap()
        .unwrap();
    let pair = PairCascade::import(&state).unwrap();
    let loaded = t.elapsed();
    drop(pair);
    let after_load = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    println!("  open (redb + key check) {opened:?}; load one session (unseal + import) {loaded:?}");
    println!(
        "  RSS before open {base_rss} KiB; after open {} KiB (peak {}); after loading one session {} KiB (peak {})",
        after_open.0, after_open.1, after_load.0, after_load.1
    );
}

fn main() {
    if let Ok(dir) = std::env::var(OPEN_ENV) {
        open_and_measure(Path::new(&dir));
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument selects nothing else.
    let dir = tempfile::tempdir().unwrap();
    per_message_figures(dir.path());
    many_sessions_figures(dir.path());
}
