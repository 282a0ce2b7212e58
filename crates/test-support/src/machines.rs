//! Two [`PeerMachine`]s driven directly, with no transport and no actors:
//! each on its own memory store, frames handed from one to the other until
//! both are quiet, the CPU of each side counted. For benches that measure
//! the protocol alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use strata_cascade::InstallationIdentity;
use strata_cascade::at_rest::StorageKey;
use strata_session::{Command, Config, Event, Input, Now, Output, PeerMachine};
use strata_store::{KeySource, MemoryBackend, Store};

/// A machine pair: `m[0]` opens, `m[1]` answers.
pub struct Pair {
    /// The machines.
    pub m: [PeerMachine; 2],
    stores: [(MemoryBackend, StorageKey); 2],
    /// CPU spent in each machine's steps.
    pub cpu: [Duration; 2],
    /// Events each machine emitted, oldest first.
    pub events: [Vec<Event>; 2],
    /// The machines' monotonic clock.
    pub base: Instant,
}

fn open((backend, key): &(MemoryBackend, StorageKey)) -> Store<MemoryBackend> {
    Store::open(backend.clone(), KeySource::Key(key.clone())).unwrap()
}

fn machine(config: &Config, id: &Arc<InstallationIdentity>, store: Store<MemoryBackend>, now: Now) -> PeerMachine {
    PeerMachine::new(
        config.clone(),
        Arc::clone(id),
        Arc::new(store),
        None,
        None,
        [7; 32],
        now,
    )
    .unwrap()
}

impl Pair {
    /// `a` and `b` on fresh memory stores, with `config`, a session
    /// between them established (`a` opened it).
    pub fn established(
        config: &Config,
        a: &Arc<InstallationIdentity>,
        b: &Arc<InstallationIdentity>,
        rng: &mut ChaCha20Rng,
    ) -> Self {
        let base = Instant::now();
        let now = Now {
            at: base,
            unix_ms: unix_ms(),
        };
        let stores = [0, 1].map(|_| (MemoryBackend::new(), StorageKey::generate(rng)));
        let mut p = Self {
            m: [
                machine(config, a, open(&stores[0]), now),
                machine(config, b, open(&stores[1]), now),
            ],
            stores,
            cpu: [Duration::ZERO; 2],
            events: [Vec::new(), Vec::new()],
            base,
        };
        p.input(0, Input::Connected);
        p.input(1, Input::Connected);
        p.input(0, Input::Command(Command::Open));
        p.settle();
        assert!(p.m[0].is_ready() && p.m[1].is_ready());
        p
    }

    /// A handle on machine `i`'s store.
    pub fn store(&self, i: usize) -> Store<MemoryBackend> {
        open(&self.stores[i])
    }

    /// The machines' time.
    pub fn now(&self) -> Now {
        Now {
            at: self.base,
            unix_ms: unix_ms(),
        }
    }

    /// Runs `input` on machine `i`, counting its CPU.
    pub fn input(&mut self, i: usize, input: Input<'_>) {
        let now = self.now();
        let t = Instant::now();
        self.m[i].handle(input, now).unwrap();
        self.cpu[i] += t.elapsed();
    }

    /// Moves frames between the machines until both are quiet; keeps their
    /// events.
    pub fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some(out) = self.m[i].poll_output() {
                    match out {
                        Output::Transmit(f) => {
                            self.input(1 - i, Input::Frame(&f));
                            moved = true;
                        }
                        Output::Event(e) => self.events[i].push(e),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

/// The wall clock, Unix milliseconds: KeyPackage lifetimes are checked
/// against it.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
