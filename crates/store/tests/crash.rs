//! Crash safety (issue part 7): a child process — this test binary run
//! again with `STRATA_CRASH_CHILD` set — drives a real conversation between
//! two installations, each with its own redb store: queueing, encrypting
//! (ratchet steps, ML-KEM epoch rotations), delivering, acknowledging, and
//! claiming KeyPackages from the pool, which the other side verifies and
//! stores. The parent `SIGKILL`s it at seeded random points and, after
//! every kill, opens both databases and checks that
//!
//! - every commit the child reported (it reports only after `write`
//!   returned) is still there: no outbox, inbox or ack is lost;
//! - no (key, nonce) pair is sealed twice by a ciphertext that was
//!   committed (the cascade's `seal_fingerprints` digests);
//! - no one-time KeyPackage is handed out twice;
//! - the next run resumes the conversation from the stored state, with no
//!   new handshake (the child has no code to make one), and every message
//!   in flight still decrypts.
//!
//! 50 runs by default; `STRATA_CRASH_RUNS=N` for a soak and
//! `STRATA_CRASH_SEED=S` to replay one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use strata_cascade::layers::mls::DEFAULT_KEY_PACKAGE_LIFETIME_SECS;
use strata_cascade::{
    IdentityKey, InstallationId, InstallationIdentity, KeyPackageKind, KeyPackageSecrets, MlsLayer, PairCascade,
    PeerIdentity, generate_key_package, seal_fingerprints,
};
use strata_store::{
    IncomingMessage, KeySource, OutgoingMessage, PoolEntry, RedbBackend, Store, load_or_create_key_file,
};
use strata_test_support::cascade::{self, Pair};

const CHILD_ENV: &str = "STRATA_CRASH_CHILD";
const TEST_NAME: &str = "sigkill_at_random_points_loses_nothing_and_reuses_no_key";
const MARK: &str = "@@ ";
const STEPS_PER_RUN: u32 = 24;
const POOL_THRESHOLD: u64 = 3;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn body_of(id: &str) -> Vec<u8> {
    format!("message {id} of the crash test").into_bytes()
}

fn open_store(dir: &Path, name: &str) -> Store<RedbBackend> {
    let key = load_or_create_key_file(&dir.join(format!("{name}.key"))).unwrap();
    let backend = RedbBackend::open(&dir.join(format!("{name}.redb"))).unwrap();
    Store::open(backend, KeySource::Key(key)).unwrap()
}

/// A KeyPackage of `owner` for its pool, private parts included.
fn pooled(owner: &InstallationIdentity, kind: KeyPackageKind) -> PoolEntry {
    PoolEntry::from(&generate_key_package(owner, kind, DEFAULT_KEY_PACKAGE_LIFETIME_SECS).unwrap())
}

/// Two installations from nothing to an established cascade (the only
/// handshake of the whole test), persisted with a KeyPackage pool.
fn setup(dir: &Path) -> (String, String) {
    let now = now_ms();
    let Pair {
        alice_id,
        alice,
        bob_id,
        bob,
    } = cascade::established(&mut rand::rng(), now);
    let (a, b) = (alice_id.installation_id(), bob_id.installation_id());

    let mut pool: Vec<_> = (0..6).map(|_| pooled(&alice_id, KeyPackageKind::OneTime)).collect();
    pool.push(pooled(&alice_id, KeyPackageKind::LastResort));

    let (a_hex, b_hex) = (a.to_hex(), b.to_hex());
    let alice_store = open_store(dir, "alice");
    alice_store
        .write(|w| {
            w.set_identity(alice_id.export().unwrap().as_bytes())?;
            w.observe_identity(&b_hex, &bob_id.account().identity_key().serialize(), now)?;
            w.set_layer_state(&b_hex, alice.export().unwrap().as_bytes())?;
            w.add_key_packages(&pool, 0)
        })
        .unwrap();
    let bob_store = open_store(dir, "bob");
    bob_store
        .write(|w| {
            w.set_identity(bob_id.export().unwrap().as_bytes())?;
            w.observe_identity(&a_hex, &alice_id.account().identity_key().serialize(), now)?;
            w.set_layer_state(&a_hex, bob.export().unwrap().as_bytes())
        })
        .unwrap();
    std::fs::write(dir.join("ids"), format!("{a_hex} {b_hex}")).unwrap();
    (a_hex, b_hex)
}

// ---------------------------------------------------------------- child --

/// One installation as the child runs it.
struct Side {
    name: &'static str,
    /// The other installation (hex), which keys this side's rows.
    peer: String,
    store: Store<RedbBackend>,
    cascade: PairCascade,
}

fn report(line: &str) {
    // Written only after the commit it describes returned; stdout is
    // line-buffered, and the flush makes the order on the pipe the order of
    // the commits.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{line}").unwrap();
    out.flush().unwrap();
}

fn load_side(dir: &Path, name: &'static str, file: &str, peer: &str) -> Side {
    let store = open_store(dir, file);
    let state = store
        .read(|r| r.layer_state(peer))
        .unwrap()
        .expect("no stored session: only a new handshake could continue, and there must never be one");
    let cascade = PairCascade::import(&state).unwrap();
    Side {
        name,
        peer: peer.to_owned(),
        store,
        cascade,
    }
}

/// Encrypts a queued message and commits the frames with the new state.
fn encrypt_queued(from: &mut Side, id: &str, rotate_kem: bool) {
    if rotate_kem {
        from.cascade.kem_mut().rotate_send_epoch();
    }
    seal_fingerprints::take();
    let payload = from.cascade.encrypt(&body_of(id), now_ms(), &mut rand::rng()).unwrap();
    let fps: Vec<String> = seal_fingerprints::take().iter().map(hex::encode).collect();
    // Before the commit: the parent counts these as used only if the
    // commit turns out to have happened.
    report(&format!("E {} {id} {}", from.name, fps.join(",")));
    let frames = vec![serde_json::to_vec(&payload).unwrap()];
    let state = from.cascade.export().unwrap();
    from.store
        .write(|w| w.record_encrypted(&from.peer, id, frames, state.as_bytes()))
        .unwrap();
    report(&format!("S {} {id}", from.name));
}

/// The wire: `to` reads the frames from `from`'s outbox, decrypts, commits
/// to its inbox; then `from` takes the acknowledgement.
fn deliver(from: &mut Side, to: &mut Side, id: &str) {
    let message = from.store.read(|r| r.outgoing(&from.peer, id)).unwrap().unwrap();
    if !to.store.read(|r| r.is_processed(&to.peer, id)).unwrap() {
        let payload = serde_json::from_slice(&message.frames[0]).unwrap();
        let plaintext = to
            .cascade
            .decrypt(&payload, &mut rand::rng())
            .unwrap_or_else(|e| panic!("{} cannot decrypt {id} after restart: {e}", to.name));
        assert_eq!(plaintext, body_of(id));
        let incoming = IncomingMessage {
            peer: to.peer.clone(),
            message_id: id.to_owned(),
            received_ms: now_ms(),
            body: plaintext,
        };
        let state = to.cascade.export().unwrap();
        to.store
            .write(|w| w.accept_incoming(&incoming, state.as_bytes()))
            .unwrap();
        report(&format!("I {} {id}", to.name));
    }
    from.store.write(|w| w.ack_outgoing(&from.peer, id)).unwrap();
    report(&format!("K {} {id}", from.name));
}

/// Encrypts what is queued but not encrypted, and delivers everything in
/// `from`'s outbox (retransmission after a restart).
fn flush(from: &mut Side, to: &mut Side) {
    let outbox = from.store.read(|r| r.outbox(&from.peer)).unwrap();
    for message in outbox {
        if message.frames.is_empty() {
            encrypt_queued(from, &message.message_id, false);
        }
        deliver(from, to, &message.message_id);
    }
}

fn send(from: &mut Side, to: &mut Side, id: &str, rng: &mut ChaCha8Rng) {
    let message = OutgoingMessage {
        message_id: id.to_owned(),
        peer: from.peer.clone(),
        created_ms: now_ms(),
        body: body_of(id),
        frames: Vec::new(),
        attempts: 0,
    };
    from.store.write(|w| w.queue_outgoing(&message)).unwrap();
    report(&format!("Q {} {id}", from.name));
    // Rotate the ML-KEM epoch now and then, but only with nothing else in
    // flight: the receiver keeps three peer epochs, and a message left
    // behind more rotations than that is out of window by design, crash or
    // not.
    let alone = from.store.read(|r| r.outbox(&from.peer)).unwrap().len() == 1;
    encrypt_queued(from, id, alone && rng.random_bool(0.15));
    // Some messages stay in flight across the next kill.
    if rng.random_bool(0.7) {
        deliver(from, to, id);
    }
}

/// Bob claims one of Alice's KeyPackages, checks and stores it, and uses
/// one; Alice refills her pool when it runs low.
fn claim(alice: &mut Side, bob: &mut Side, owner: &InstallationIdentity, alice_identity: &PeerIdentity) {
    let now_s = now_ms() / 1000;
    let claim = alice
        .store
        .write(|w| w.claim_key_package(now_s, POOL_THRESHOLD))
        .unwrap();
    report(&format!(
        "P {} {}",
        hex::encode(&claim.package.key_ref),
        u8::from(claim.package.last_resort)
    ));
    // The private parts came back with the package, whole, across kills:
    // a layer built from them holds the package's private bundle.
    let secrets = KeyPackageSecrets::from_bytes(claim.secrets.as_bytes()).unwrap();
    MlsLayer::with_key_package_secrets(owner, *alice_identity, &secrets).unwrap();
    if let Some(low) = claim.low {
        let mut fresh: Vec<_> = (0..4).map(|_| pooled(owner, KeyPackageKind::OneTime)).collect();
        if low.last_resort_used {
            fresh.push(pooled(owner, KeyPackageKind::LastResort));
        }
        // The packages and their private parts commit together.
        alice.store.write(|w| w.add_key_packages(&fresh, 0)).unwrap();
        report(&format!("R {}", fresh.len()));
    }
    let stored = bob
        .store
        .write(|w| w.receive_peer_key_package(alice_identity, &claim.package.bytes, now_s))
        .unwrap();
    report(&format!("G {}", hex::encode(&stored.key_package.key_ref)));
    if let Some(used) = bob.store.write(|w| w.take_peer_key_package(&bob.peer, now_s)).unwrap() {
        report(&format!("U {}", hex::encode(&used.key_package.key_ref)));
    }
}

fn child_main(spec: &str) {
    let mut parts = spec.split('|');
    let dir = PathBuf::from(parts.next().unwrap());
    let run: u32 = parts.next().unwrap().parse().unwrap();
    let seed: u64 = parts.next().unwrap().parse().unwrap();
    let steps: u32 = parts.next().unwrap().parse().unwrap();
    let ids = std::fs::read_to_string(dir.join("ids")).unwrap();
    let (a_hex, b_hex) = ids.split_once(' ').unwrap();

    let mut alice = load_side(&dir, "A", "alice", b_hex);
    let mut bob = load_side(&dir, "B", "bob", a_hex);
    let owner = InstallationIdentity::import(&alice.store.read(|r| r.identity()).unwrap().unwrap()).unwrap();
    let alice_key = bob.store.read(|r| r.contact(a_hex)).unwrap().unwrap().identity_key;
    let alice_identity = PeerIdentity {
        identity_key: IdentityKey::decode(&alice_key).unwrap(),
        installation_id: InstallationId::from_bytes(hex::decode(a_hex).unwrap().try_into().unwrap()),
    };
    report("RESUMED");

    flush(&mut alice, &mut bob);
    flush(&mut bob, &mut alice);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for n in 0..steps {
        match rng.random_range(0..100) {
            0..40 => send(&mut alice, &mut bob, &format!("A{run:04}-{n:03}"), &mut rng),
            40..80 => send(&mut bob, &mut alice, &format!("B{run:04}-{n:03}"), &mut rng),
            80..88 => {
                flush(&mut alice, &mut bob);
                flush(&mut bob, &mut alice);
            }
            _ => claim(&mut alice, &mut bob, &owner, &alice_identity),
        }
    }
    flush(&mut alice, &mut bob);
    flush(&mut bob, &mut alice);
    report("DONE");
}

// --------------------------------------------------------------- parent --

/// Everything the children reported, across runs.
#[derive(Default)]
struct Ledger {
    /// Queued messages: id → sender ("A" or "B").
    queued: BTreeMap<String, String>,
    encrypted: HashSet<String>,
    received: HashSet<String>,
    acked: HashSet<String>,
    /// Fingerprints of committed seals.
    seals: HashSet<String>,
    claimed_one_time: HashSet<String>,
    /// Peer KeyPackages in Bob's store: key ref → whether it should be
    /// there (received and not yet used).
    peer_packages: BTreeMap<String, bool>,
}

struct Run {
    lines: Vec<String>,
    killed: bool,
}

fn run_child(dir: &Path, run: u32, seed: u64, steps: u32, kill_after: Option<(usize, Duration)>) -> Run {
    let stderr = std::fs::File::create(dir.join(format!("child-{run}.stderr"))).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{run}|{seed}|{steps}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut sent_kill = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(report) = line.strip_prefix(MARK) else {
            continue;
        };
        lines.push(report.to_owned());
        if let Some((after, delay)) = kill_after
            && !sent_kill
            && lines.len() >= after
        {
            // Land anywhere in what follows: mid-encryption, mid-commit,
            // between a commit and its report.
            std::thread::sleep(delay);
            let _ = child.kill();
            sent_kill = true;
        }
    }
    let status = child.wait().unwrap();
    let killed = status.signal() == Some(9);
    if !killed {
        let stderr = std::fs::read_to_string(dir.join(format!("child-{run}.stderr"))).unwrap();
        assert!(
            status.success() && lines.last().map(String::as_str) == Some("DONE"),
            "run {run} (seed {seed}) failed: {status}\n{stderr}\nlast reports: {:?}",
            &lines[lines.len().saturating_sub(8)..]
        );
    }
    Run { lines, killed }
}

/// Opens both stores after a run and checks every reported commit.
fn check(dir: &Path, a_hex: &str, b_hex: &str, ledger: &mut Ledger, run: &Run, run_no: u32) {
    let alice = open_store(dir, "alice");
    let bob = open_store(dir, "bob");
    // (sender's store, sender's peer key, receiver's store, receiver's peer key)
    let sides = |sender: &str| {
        if sender == "A" {
            (&alice, b_hex, &bob, a_hex)
        } else {
            (&bob, a_hex, &alice, b_hex)
        }
    };
    let mut pending: Vec<(String, Vec<String>)> = Vec::new();
    for line in &run.lines {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "Q" => {
                ledger.queued.insert(f[2].to_owned(), f[1].to_owned());
            }
            "E" => {
                // The queue commit may have been the one whose report died.
                ledger.queued.entry(f[2].to_owned()).or_insert_with(|| f[1].to_owned());
                let fps: Vec<String> = f[3].split(',').map(str::to_owned).collect();
                assert_eq!(fps.len(), 2, "the ML-KEM and AES-GCM layers each seal once: {line}");
                pending.retain(|(id, _)| id != f[2]);
                pending.push((f[2].to_owned(), fps));
            }
            "S" => {
                ledger.encrypted.insert(f[2].to_owned());
            }
            "I" => {
                ledger.received.insert(f[2].to_owned());
            }
            "K" => {
                ledger.acked.insert(f[2].to_owned());
            }
            "P" if f[2] == "0" => assert!(
                ledger.claimed_one_time.insert(f[1].to_owned()),
                "run {run_no}: one-time KeyPackage {} handed out twice",
                f[1]
            ),
            "G" => {
                ledger.peer_packages.insert(f[1].to_owned(), true);
            }
            "U" => {
                ledger.peer_packages.insert(f[1].to_owned(), false);
            }
            _ => {}
        }
    }

    // Each inbox read once: every record in it is unsealed on each read.
    let inbox_of = |store: &Store<RedbBackend>, peer: &str| -> std::collections::HashMap<String, Vec<u8>> {
        let inbox = store.read(|r| r.inbox(peer)).unwrap();
        inbox.into_iter().map(|m| (m.message_id, m.body)).collect()
    };
    let (bob_inbox, alice_inbox) = (inbox_of(&bob, a_hex), inbox_of(&alice, b_hex));
    // Every reported commit is still there.
    for (id, sender) in &ledger.queued {
        let (from, to_key, to, from_key) = sides(sender);
        let out = from.read(|r| r.outgoing(to_key, id)).unwrap();
        let processed = to.read(|r| r.is_processed(from_key, id)).unwrap();
        if ledger.acked.contains(id) {
            assert!(out.is_none(), "run {run_no}: acked {id} is back in the outbox");
        } else {
            assert!(
                out.is_some() || processed,
                "run {run_no}: queued {id} lost (not in the outbox, never received)"
            );
        }
        if let Some(out) = &out {
            assert_eq!(out.body, body_of(id));
            if ledger.encrypted.contains(id) {
                assert!(!out.frames.is_empty(), "run {run_no}: frames of {id} lost");
            }
        }
        if ledger.received.contains(id) {
            assert!(processed, "run {run_no}: received {id} no longer processed");
            let inbox = if sender == "A" { &bob_inbox } else { &alice_inbox };
            assert_eq!(inbox.get(id), Some(&body_of(id)), "run {run_no}: inbox entry {id} lost");
        }
    }
    // A seal counts as used when its ciphertext was committed: reported, or
    // found in the store after the kill. A seal whose commit died with the
    // process never left it, and its key may be used again.
    for (id, fps) in pending {
        let sender = &ledger.queued[&id];
        let (from, to_key, to, from_key) = sides(sender);
        let committed = ledger.encrypted.contains(&id)
            || from
                .read(|r| r.outgoing(to_key, &id))
                .unwrap()
                .is_some_and(|m| !m.frames.is_empty())
            || to.read(|r| r.is_processed(from_key, &id)).unwrap();
        if committed {
            ledger.encrypted.insert(id.clone());
            for fp in fps {
                assert!(
                    ledger.seals.insert(fp.clone()),
                    "run {run_no}: (key, nonce) reused by {id}: {fp}"
                );
            }
        }
    }
    // Peer KeyPackages: stored ones stay until used; used ones are gone.
    let in_bob: HashSet<String> = bob
        .read(|r| r.peer_key_packages(a_hex))
        .unwrap()
        .iter()
        .map(|p| hex::encode(&p.key_package.key_ref))
        .collect();
    // The one commit a kill can leave unreported may explain one surprise
    // (a take or a store that happened but was not reported); a run that
    // was not killed has none.
    let mut surprises = Vec::new();
    for (kp, present) in ledger.peer_packages.iter_mut() {
        if *present != in_bob.contains(kp) {
            surprises.push(kp.clone());
            *present = !*present;
        }
    }
    assert!(
        surprises.len() <= usize::from(run.killed),
        "run {run_no}: peer KeyPackages not as reported: {surprises:?}"
    );
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_reuses_no_key() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let runs: u32 = std::env::var("STRATA_CRASH_RUNS").map_or(50, |v| v.parse().unwrap());
    let base_seed: u64 = std::env::var("STRATA_CRASH_SEED").map_or(0x5eed_c0de, |v| v.parse().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (a_hex, b_hex) = setup(dir);
    let mut ledger = Ledger::default();
    let mut plan = ChaCha8Rng::seed_from_u64(base_seed);
    let mut killed = 0;
    for run in 0..runs {
        let seed = base_seed.wrapping_add(u64::from(run));
        // A run reports ~5 lines per step; kill anywhere from during the
        // start-up to near the end.
        let after = plan.random_range(1..=100);
        let delay = Duration::from_micros(plan.random_range(0..3000));
        let result = run_child(dir, run, seed, STEPS_PER_RUN, Some((after, delay)));
        killed += usize::from(result.killed);
        check(dir, &a_hex, &b_hex, &mut ledger, &result, run);
    }
    // A last run without a kill delivers everything still in flight.
    let last = run_child(dir, runs, base_seed.wrapping_add(u64::from(runs)), 0, None);
    check(dir, &a_hex, &b_hex, &mut ledger, &last, runs);
    let alice = open_store(dir, "alice");
    let bob = open_store(dir, "bob");
    assert!(alice.read(|r| r.outbox(&b_hex)).unwrap().is_empty());
    assert!(bob.read(|r| r.outbox(&a_hex)).unwrap().is_empty());
    let bob_inbox = bob.read(|r| r.inbox(&a_hex)).unwrap();
    let alice_inbox = alice.read(|r| r.inbox(&b_hex)).unwrap();
    let mut delivered: Vec<&str> = bob_inbox
        .iter()
        .chain(&alice_inbox)
        .map(|m| m.message_id.as_str())
        .collect();
    delivered.sort_unstable();
    let queued: Vec<&str> = ledger.queued.keys().map(String::as_str).collect();
    assert_eq!(delivered, queued, "every message delivered exactly once");
    // The test must have exercised what it claims.
    assert!(killed * 2 >= runs as usize, "only {killed} of {runs} runs were killed");
    assert!(ledger.queued.len() >= 100, "only {} messages", ledger.queued.len());
    assert!(!ledger.claimed_one_time.is_empty(), "no KeyPackage claimed");
    eprintln!(
        "{runs} runs, {killed} killed; {} messages, {} seals, {} one-time KeyPackages claimed",
        ledger.queued.len(),
        ledger.seals.len(),
        ledger.claimed_one_time.len()
    );
}
