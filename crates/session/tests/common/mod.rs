//! A seeded discrete-event simulator that drives two [`PeerMachine`]s
//! directly (no tokio, no actors): virtual time, a lossy wire with drop,
//! duplicate, reorder and delay faults, partitions and restarts. Every
//! decision comes from one ChaCha20 generator, so a seed replays.
#![allow(dead_code, unreachable_pub, clippy::print_stderr, clippy::type_complexity)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::{AccountIdentity, InstallationId, InstallationIdentity};
use strata_session::machine::seed_from;
use strata_session::{Command, Config, Content, Durable, Event, Input, Now, Output, PeerMachine};
use strata_store::{KeySource, MemoryBackend, Store};

pub const UNIX_BASE: u64 = 1_760_000_000_000;

/// Link faults, as in the simulation.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    pub reorder: f64,
    /// Uniform one-way delay, milliseconds.
    pub delay_ms: (u64, u64),
}

impl Faults {
    pub const NONE: Self = Self {
        drop: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay_ms: (1, 1),
    };
    pub const LOSSY: Self = Self {
        drop: 0.2,
        duplicate: 0.1,
        reorder: 0.1,
        delay_ms: (1, 30),
    };
}

pub struct Node {
    pub name: &'static str,
    pub identity: Arc<InstallationIdentity>,
    pub backend: MemoryBackend,
    pub key: StorageKey,
    pub machine: Option<PeerMachine>,
    pub events: Vec<(Duration, Event)>,
    /// message id → how many times it was received.
    pub received: BTreeMap<String, u32>,
    pub delivered: BTreeMap<String, u32>,
    pub sent: Vec<String>,
    pub ready_count: u32,
    pub up: bool,
    /// Boots on this store instead of the in-memory one (fault injection).
    pub durable: Option<Arc<dyn Durable>>,
    /// Errors the machine returned, when the sim tolerates them.
    pub errors: Vec<String>,
}

impl Node {
    pub fn machine(&mut self) -> &mut PeerMachine {
        self.machine.as_mut().expect("node is running")
    }

    pub fn store(&self) -> Store<MemoryBackend> {
        Store::open(self.backend.clone(), KeySource::Key(self.key.clone())).unwrap()
    }

    pub fn is_ready(&self) -> bool {
        self.machine.as_ref().is_some_and(PeerMachine::is_ready)
    }

    /// The running machine, to look at.
    pub fn view(&self) -> &PeerMachine {
        self.machine.as_ref().expect("node is running")
    }
}

pub struct Sim {
    pub seed: u64,
    pub rng: ChaCha20Rng,
    pub base: Instant,
    pub t: Duration,
    pub faults: Faults,
    pub config: Config,
    pub nodes: [Node; 2],
    /// (deliver at, sequence, to, frame)
    wire: BinaryHeap<Reverse<(Duration, u64, usize, Vec<u8>)>>,
    seq: u64,
    /// Latest scheduled (non-reordered) delivery per direction, so jitter
    /// alone never reorders.
    last: [Duration; 2],
    pub partitioned: bool,
    /// Machine errors are recorded in `Node::errors` instead of failing
    /// the test (for injected store faults).
    pub tolerate_errors: bool,
    pub trace: bool,
    /// When set, every frame a node hands to the wire, (from, frame), even
    /// those the faults or a partition then drop.
    pub tap: Option<Vec<(usize, Vec<u8>)>>,
}

pub fn installation(rng: &mut ChaCha20Rng) -> InstallationIdentity {
    InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
}

impl Sim {
    pub fn new(seed: u64, faults: Faults, config: Config) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let a = Arc::new(installation(&mut rng));
        let b = Arc::new(installation(&mut rng));
        Self::with_identities(seed, rng, faults, config, a, b)
    }

    pub fn with_identities(
        seed: u64,
        mut rng: ChaCha20Rng,
        faults: Faults,
        config: Config,
        a: Arc<InstallationIdentity>,
        b: Arc<InstallationIdentity>,
    ) -> Self {
        let base = Instant::now();
        let node = |name, identity: Arc<InstallationIdentity>, rng: &mut ChaCha20Rng| Node {
            name,
            identity,
            backend: MemoryBackend::new(),
            key: StorageKey::generate(rng),
            machine: None,
            events: Vec::new(),
            received: BTreeMap::new(),
            delivered: BTreeMap::new(),
            sent: Vec::new(),
            ready_count: 0,
            up: false,
            durable: None,
            errors: Vec::new(),
        };
        let nodes = [node("alice", a, &mut rng), node("bob", b, &mut rng)];
        let mut sim = Self {
            seed,
            rng,
            base,
            t: Duration::ZERO,
            faults,
            config,
            nodes,
            wire: BinaryHeap::new(),
            seq: 0,
            last: [Duration::ZERO; 2],
            partitioned: false,
            tolerate_errors: false,
            tap: None,
            trace: std::env::var_os("STRATA_SIM_TRACE").is_some(),
        };
        for i in 0..2 {
            sim.boot(i, None);
        }
        sim
    }

    pub fn now(&self) -> Now {
        Now {
            at: self.base + self.t,
            unix_ms: UNIX_BASE + u64::try_from(self.t.as_millis()).unwrap(),
        }
    }

    pub fn installation_id(&self, i: usize) -> InstallationId {
        self.nodes[i].identity.installation_id()
    }

    /// (Re)creates node `i`'s machine from its store.
    pub fn boot(&mut self, i: usize, peer: Option<InstallationId>) {
        let now = self.now();
        let seed = seed_from(&mut self.rng);
        let store: Arc<dyn Durable> = match &self.nodes[i].durable {
            Some(d) => Arc::clone(d),
            None => Arc::new(self.nodes[i].store()),
        };
        let identity = Arc::clone(&self.nodes[i].identity);
        let m = PeerMachine::new(self.config.clone(), identity, store, peer, None, seed, now).unwrap();
        self.nodes[i].machine = Some(m);
        self.nodes[i].up = false;
    }

    /// Runs one input on node `i` and routes its outputs.
    pub fn input(&mut self, i: usize, input: Input<'_>) {
        let now = self.now();
        if self.trace {
            eprintln!(
                "{:>9.3}s {} <- {}",
                self.t.as_secs_f64(),
                self.nodes[i].name,
                describe(&input)
            );
        }
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return;
        };
        let result = m.handle(input, now);
        self.check(i, result);
        self.drain(i);
    }

    /// Runs a burst of frames on node `i` and routes its outputs.
    pub fn frames(&mut self, i: usize, burst: &[Vec<u8>]) {
        if burst.len() == 1 {
            return self.input(i, Input::Frame(&burst[0]));
        }
        let now = self.now();
        if self.trace {
            for f in burst {
                let input = Input::Frame(f);
                eprintln!(
                    "{:>9.3}s {} <- (burst of {}) {}",
                    self.t.as_secs_f64(),
                    self.nodes[i].name,
                    burst.len(),
                    describe(&input)
                );
            }
        }
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return;
        };
        let result = m.handle_frames(burst.iter().map(Vec::as_slice), now);
        self.check(i, result);
        self.drain(i);
    }

    fn check<T>(&mut self, i: usize, result: Result<T, strata_session::SessionError>) {
        match result {
            Ok(_) => {}
            Err(e) if self.tolerate_errors => self.nodes[i].errors.push(e.to_string()),
            Err(e) => panic!("seed {}: {} failed: {e}", self.seed, self.nodes[i].name),
        }
    }

    pub fn command(&mut self, i: usize, c: Command) {
        self.input(i, Input::Command(c));
    }

    pub fn send_text(&mut self, i: usize, text: &str) -> String {
        let now = self.now();
        let id = self.nodes[i]
            .machine()
            .send(Content::Text { text: text.into() }, now)
            .unwrap_or_else(|e| panic!("seed {}: send failed: {e}", self.seed));
        self.nodes[i].sent.push(id.clone());
        self.drain(i);
        id
    }

    pub fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].machine.as_mut().and_then(PeerMachine::poll_output) {
            match out {
                Output::Transmit(frame) => self.put_on_wire(i, frame),
                Output::Event(e) => {
                    if self.trace {
                        eprintln!("{:>9.3}s {} !! {e:?}", self.t.as_secs_f64(), self.nodes[i].name);
                    }
                    let node = &mut self.nodes[i];
                    match &e {
                        Event::EncryptionReady { .. } => node.ready_count += 1,
                        Event::Received { message_id, .. } => {
                            *node.received.entry(message_id.clone()).or_default() += 1
                        }
                        Event::Delivered { message_id } => *node.delivered.entry(message_id.clone()).or_default() += 1,
                        _ => {}
                    }
                    node.events.push((self.t, e));
                }
            }
        }
    }

    /// Sends a frame from node `from` through the faults.
    pub fn put_on_wire(&mut self, from: usize, frame: Vec<u8>) {
        if let Some(tap) = &mut self.tap {
            tap.push((from, frame.clone()));
        }
        if self.partitioned || !self.nodes[from].up {
            return;
        }
        let to = 1 - from;
        let f = self.faults;
        if self.rng.random_bool(f.drop) {
            return;
        }
        let copies = if self.rng.random_bool(f.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = Duration::from_millis(self.rng.random_range(f.delay_ms.0..=f.delay_ms.1));
            let mut at = self.t + delay;
            if self.rng.random_bool(f.reorder) {
                at += Duration::from_millis(self.rng.random_range(1..=50));
            } else {
                at = at.max(self.last[from]);
                self.last[from] = at;
            }
            self.seq += 1;
            self.wire.push(Reverse((at, self.seq, to, frame.clone())));
        }
    }

    /// Injects a frame as if node `from` had sent it, without faults.
    pub fn inject(&mut self, to: usize, frame: Vec<u8>) {
        self.seq += 1;
        self.wire.push(Reverse((self.t, self.seq, to, frame)));
    }

    pub fn connect(&mut self) {
        for i in 0..2 {
            if self.nodes[i].machine.is_some() && !self.nodes[i].up {
                self.nodes[i].up = true;
                self.input(i, Input::Connected);
            }
        }
    }

    pub fn disconnect(&mut self) {
        self.wire.clear();
        for i in 0..2 {
            if self.nodes[i].up {
                self.nodes[i].up = false;
                self.input(i, Input::Disconnected);
            }
        }
    }

    /// The earliest pending thing: a delivery or a machine timeout.
    fn next_time(&self) -> Option<Duration> {
        let wire = self.wire.peek().map(|Reverse((at, ..))| *at);
        let timers = self
            .nodes
            .iter()
            .filter_map(|n| n.machine.as_ref()?.poll_timeout())
            .map(|i| i.saturating_duration_since(self.base));
        wire.into_iter().chain(timers).min()
    }

    /// Processes everything due up to `until` (inclusive).
    pub fn run_until(&mut self, until: Duration) {
        while let Some(next) = self.next_time() {
            if next > until {
                break;
            }
            self.t = self.t.max(next);
            self.step();
        }
        self.t = self.t.max(until);
    }

    /// Processes the next due item.
    fn step(&mut self) {
        if let Some(Reverse((at, ..))) = self.wire.peek()
            && *at <= self.t
        {
            let Some(Reverse((_, _, to, frame))) = self.wire.pop() else {
                return;
            };
            // Everything due for the same node arrives as one burst, as a
            // transport hands over what it has ready: the machine commits a
            // burst once (`handle_frames`).
            let mut burst = vec![frame];
            while let Some(Reverse((at, _, next, _))) = self.wire.peek()
                && *at <= self.t
                && *next == to
            {
                let Some(Reverse((_, _, _, frame))) = self.wire.pop() else {
                    break;
                };
                burst.push(frame);
            }
            if self.nodes[to].up {
                self.frames(to, &burst);
            }
            return;
        }
        for i in 0..2 {
            let due = self.nodes[i]
                .machine
                .as_ref()
                .and_then(PeerMachine::poll_timeout)
                .is_some_and(|d| d <= self.base + self.t);
            if due {
                self.input(i, Input::Timeout);
            }
        }
    }

    /// Sends `n` texts each way and runs (for up to 600 s more) until every
    /// one was received and its delivery reported.
    pub fn exchange(&mut self, n: usize) {
        self.exchange_until(n, |times| times >= 1);
    }

    /// [`Sim::exchange`], where each text must be received exactly once.
    pub fn exchange_exactly_once(&mut self, n: usize) {
        self.exchange_until(n, |times| times == 1);
    }

    fn exchange_until(&mut self, n: usize, received: impl Fn(u32) -> bool) {
        let mut ids = Vec::new();
        for k in 0..n {
            ids.push((0, self.send_text(0, &format!("a{k}"))));
            ids.push((1, self.send_text(1, &format!("b{k}"))));
        }
        let limit = self.t + Duration::from_secs(600);
        let done = |s: &Sim| {
            ids.iter().all(|(i, id)| {
                s.nodes[1 - i].received.get(id).is_some_and(|&times| received(times))
                    && s.nodes[*i].delivered.contains_key(id)
            })
        };
        assert!(self.run_while(limit, done), "seed {}: exchange incomplete", self.seed);
    }

    /// Runs until `done` holds or `limit` of virtual time passes; returns
    /// whether it held.
    pub fn run_while(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        while !done(self) {
            let Some(next) = self.next_time() else { return false };
            if next > limit {
                return false;
            }
            self.t = self.t.max(next);
            self.step();
        }
        true
    }
}

/// Whether both sides have a ready session.
pub fn ready_both(sim: &Sim) -> bool {
    sim.nodes.iter().all(Node::is_ready)
}

/// Both ready, in the same session, after settling twins.
pub fn twins_settled(sim: &Sim) -> bool {
    ready_both(sim)
        && sim.nodes.iter().all(|n| n.view().last_tie_break().is_some())
        && sim.nodes[0].view().session_id() == sim.nodes[1].view().session_id()
}

fn describe(input: &Input<'_>) -> String {
    match input {
        Input::Frame(f) => {
            let s = String::from_utf8_lossy(f);
            let ty = s
                .split("\"type\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?");
            format!("frame {ty} ({} bytes)", f.len())
        }
        other => format!("{other:?}"),
    }
}
