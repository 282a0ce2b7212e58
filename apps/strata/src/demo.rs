//! `strata demo`: the node's main job on embedded defaults.
//!
//! An embedded PeerJS broker and two nodes, Alice and Bob, each with its own
//! identity and sealed redb store in a temporary directory. Alice connects to
//! Bob over real WebRTC data channels on loopback (signalled through the
//! broker), the two run the full P3 handshake (MLS, Signal PQXDH, ML-KEM),
//! compare safety numbers, exchange text both ways and a file in chunks, all
//! through the four-layer cascade. Every handshake PDU on the wire is shown,
//! with timings. Exits 0 only if everything arrived intact and acknowledged.
//!
//! It drives the session machines directly, one event loop for both nodes:
//! the same machines the daemon runs, without the actor plumbing.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use bytes::Bytes;
use rand::RngCore as _;
use strata_cascade::InstallationIdentity;
use strata_proto::Pdu;
use strata_session::content::FILE_CHUNK_BYTES;
use strata_session::{Command, Config, Content, Event, Input, Now, Output, PeerMachine};
use strata_store::{KeySource, RedbBackend, Store, load_or_create_key_file};
use strata_transport::{EventStream, PeerAddr, Transport, TransportEvent};
use strata_transport_peerjs::{Broker, BrokerConfig, PeerJsConfig, PeerJsTransport, RtcConfig, SignalingConfig};

use crate::identity::{Local, group_digits};

/// The whole demo must finish within this.
const DEADLINE: Duration = Duration::from_secs(120);
/// Size of the demo file.
const FILE_BYTES: usize = 256 * 1024;

fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Now {
        at: Instant::now(),
        unix_ms,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One demo node: identity, store, transport and (once the link is up) the
/// session machine for the other node.
struct Node {
    name: &'static str,
    local: Local,
    /// The same keys as `local`, shared with the session machine.
    installation: Arc<InstallationIdentity>,
    addr: PeerAddr,
    store: Arc<Store<RedbBackend>>,
    transport: PeerJsTransport,
    events: EventStream,
    machine: Option<PeerMachine>,
    peer: Option<PeerAddr>,
    ready_at: Option<Instant>,
    received: Vec<Content>,
    delivered: BTreeSet<String>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(name: &'static str, broker: std::net::SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let local = Local::generate().map_err(|e| anyhow!("{e}"))?;
        let key = load_or_create_key_file(&dir.path().join("storage.key"))?;
        let backend = RedbBackend::open(&dir.path().join("strata.redb"))?;
        let store = Arc::new(Store::open(backend, KeySource::Key(key))?);
        let exported = local.installation().export()?;
        store.write(|w| w.set_identity(exported.as_bytes()))?;
        let installation = Arc::new(InstallationIdentity::import(exported.as_bytes())?);

        let addr = PeerAddr::new(local.installation_id().to_hex());
        let mut signaling = SignalingConfig::new(broker.ip().to_string(), broker.port());
        signaling.secure = false;
        let mut config = PeerJsConfig::new(addr.as_str(), signaling);
        config.rtc = RtcConfig::loopback();
        let (transport, events) = PeerJsTransport::start(config).await?;
        Ok(Self {
            name,
            local,
            installation,
            addr,
            store,
            transport,
            events,
            machine: None,
            peer: None,
            ready_at: None,
            received: Vec::new(),
            delivered: BTreeSet::new(),
            _dir: dir,
        })
    }

    /// The machine for `peer`, made on first contact.
    fn machine(&mut self, peer: &PeerAddr) -> anyhow::Result<&mut PeerMachine> {
        if self.machine.is_none() {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            let machine = PeerMachine::new(
                Config::default(),
                self.installation.clone(),
                self.store.clone(),
                None,
                Some(peer.as_str().to_owned()),
                seed,
                now(),
            )?;
            self.machine = Some(machine);
            self.peer = Some(peer.clone());
        }
        self.machine.as_mut().ok_or_else(|| anyhow!("no session machine"))
    }

    fn handle(&mut self, input: Input<'_>) -> anyhow::Result<()> {
        if let Some(m) = self.machine.as_mut() {
            m.handle(input, now())?;
        }
        Ok(())
    }

    /// Sends what the machine produced and reports its events.
    async fn flush(&mut self, t0: Instant, phase: Phase) -> anyhow::Result<()> {
        let (Some(machine), Some(peer)) = (self.machine.as_mut(), self.peer.clone()) else {
            return Ok(());
        };
        let mut outputs = Vec::new();
        while let Some(out) = machine.poll_output() {
            outputs.push(out);
        }
        for out in outputs {
            match out {
                Output::Transmit(frame) => {
                    if phase == Phase::Handshake
                        && let Ok(pdu) = Pdu::decode(&frame)
                    {
                        println!(
                            "  {:>8}  {:<5} → {:<5} {:<30} {:>6} B",
                            ms(t0.elapsed()),
                            self.name,
                            if self.name == "alice" { "bob" } else { "alice" },
                            pdu.pdu_type().as_str(),
                            frame.len()
                        );
                    }
                    self.transport.send(&peer, Bytes::from(frame)).await?;
                }
                Output::Event(event) => self.on_event(event, t0)?,
            }
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event, t0: Instant) -> anyhow::Result<()> {
        match event {
            Event::EncryptionReady { .. } => {
                self.ready_at = Some(Instant::now());
                println!("  {:>8}  {:<5} encryptionReady", ms(t0.elapsed()), self.name);
            }
            Event::Received { content, .. } => self.received.push(content),
            Event::Delivered { message_id } => {
                self.delivered.insert(message_id);
            }
            Event::HandshakeFailed { reason } => bail!("{}: handshake failed: {reason}", self.name),
            Event::IdentityChanged { .. } => bail!("{}: unexpected identity change", self.name),
            Event::Refused { why } => bail!("{}: refused a PDU from the peer ({why:?})", self.name),
            _ => {}
        }
        Ok(())
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.machine.as_ref().and_then(PeerMachine::poll_timeout)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Traffic,
}

/// Runs both nodes until `done` holds, or fails at the deadline.
async fn pump(
    alice: &mut Node,
    bob: &mut Node,
    t0: Instant,
    phase: Phase,
    deadline: Instant,
    done: impl Fn(&Node, &Node) -> bool,
) -> anyhow::Result<()> {
    loop {
        alice.flush(t0, phase).await?;
        bob.flush(t0, phase).await?;
        if done(alice, bob) {
            return Ok(());
        }
        let timer = [alice.next_timeout(), bob.next_timeout(), Some(deadline)]
            .into_iter()
            .flatten()
            .min();
        let timer = tokio::time::Instant::from_std(timer.unwrap_or(deadline));
        tokio::select! {
            ev = alice.events.next() => on_transport(alice, ev)?,
            ev = bob.events.next() => on_transport(bob, ev)?,
            () = tokio::time::sleep_until(timer) => {
                ensure!(Instant::now() < deadline, "the demo did not finish within {DEADLINE:?}");
                for node in [&mut *alice, &mut *bob] {
                    if node.next_timeout().is_some_and(|t| t <= Instant::now()) {
                        node.handle(Input::Timeout)?;
                    }
                }
            }
        }
    }
}

fn on_transport(node: &mut Node, event: Option<TransportEvent>) -> anyhow::Result<()> {
    match event.ok_or_else(|| anyhow!("{}: the transport stopped", node.name))? {
        TransportEvent::Connected { peer } => {
            node.machine(&peer)?;
            node.handle(Input::Connected)?;
        }
        TransportEvent::Disconnected { peer, reason } => {
            bail!("{}: link to {peer} closed ({reason:?})", node.name)
        }
        TransportEvent::Frame { from, bytes } => {
            node.machine(&from)?;
            node.handle(Input::Frame(&bytes))?;
        }
        TransportEvent::Published { .. } => {}
    }
    Ok(())
}

/// Runs the demo.
pub(crate) async fn run() -> anyhow::Result<()> {
    strata_transport_peerjs::install_crypto_provider();
    let deadline = Instant::now() + DEADLINE;
    println!("Strata demo: two nodes, an embedded PeerJS broker, real WebRTC on loopback.\n");

    let t = Instant::now();
    let broker = Broker::bind(([127, 0, 0, 1], 0).into(), BrokerConfig::default()).await?;
    println!(
        "broker      listening on ws://{} ({})",
        broker.local_addr(),
        ms(t.elapsed())
    );
    let t = Instant::now();
    let mut alice = Node::start("alice", broker.local_addr()).await?;
    let mut bob = Node::start("bob", broker.local_addr()).await?;
    println!(
        "nodes       2 identities, 2 sealed stores, registered on the broker ({})",
        ms(t.elapsed())
    );
    for node in [&alice, &bob] {
        println!(
            "  {:<5} peer id {}  installation {}",
            node.name,
            node.local.peer_id(),
            node.addr
        );
    }

    println!("\nhandshake (P3 order; independent steps pipelined):");
    let t0 = Instant::now();
    alice.transport.connect(&bob.addr).await?;
    let open = t0.elapsed();
    println!("  {:>8}  data channel open", ms(open));
    let bob_addr = bob.addr.clone();
    alice.machine(&bob_addr)?.handle(Input::Command(Command::Open), now())?;
    pump(&mut alice, &mut bob, t0, Phase::Handshake, deadline, |a, b| {
        a.ready_at.is_some() && b.ready_at.is_some()
    })
    .await?;
    let ready = [alice.ready_at, bob.ready_at]
        .into_iter()
        .flatten()
        .max()
        .map_or(Duration::ZERO, |r| r - t0);

    println!("\nsafety numbers (compare them out of band):");
    let a_sees = alice
        .local
        .safety_number(bob.local.peer_id())
        .map_err(|e| anyhow!("{e}"))?
        .digits()?;
    let b_sees = bob
        .local
        .safety_number(alice.local.peer_id())
        .map_err(|e| anyhow!("{e}"))?
        .digits()?;
    println!("  alice sees {}", group_digits(&a_sees));
    println!("  bob sees   {}", group_digits(&b_sees));
    ensure!(a_sees == b_sees, "the two sides compute different safety numbers");

    println!("\nmessages through MLS → Signal → ML-KEM → AES-256-GCM:");
    let t = Instant::now();
    let hello = Content::Text {
        text: "Hello Bob, this is Alice.".into(),
    };
    let id = alice.machine(&bob_addr)?.send(hello.clone(), now())?;
    pump(&mut alice, &mut bob, t0, Phase::Traffic, deadline, |a, b| {
        a.delivered.contains(&id) && b.received.contains(&hello)
    })
    .await?;
    println!(
        "  alice → bob   {:?} delivered and acknowledged in {}",
        "Hello Bob, this is Alice.",
        ms(t.elapsed())
    );
    let t = Instant::now();
    let reply = Content::Text {
        text: "Hi Alice! Bob here.".into(),
    };
    let alice_addr = alice.addr.clone();
    let id = bob.machine(&alice_addr)?.send(reply.clone(), now())?;
    pump(&mut alice, &mut bob, t0, Phase::Traffic, deadline, |a, b| {
        b.delivered.contains(&id) && a.received.contains(&reply)
    })
    .await?;
    println!(
        "  bob → alice   {:?} delivered and acknowledged in {}",
        "Hi Alice! Bob here.",
        ms(t.elapsed())
    );

    // A file, streamed in chunks: each chunk is its own message.
    let mut file = vec![0u8; FILE_BYTES];
    rand::rng().fill_bytes(&mut file);
    let t = Instant::now();
    let total = u32::try_from(FILE_BYTES.div_ceil(FILE_CHUNK_BYTES))?;
    let mut ids = Vec::new();
    for (index, data) in (0..total).zip(file.chunks(FILE_CHUNK_BYTES)) {
        let chunk = Content::FileChunk {
            file_id: "demo-file".into(),
            name: "demo.bin".into(),
            size: FILE_BYTES as u64,
            index,
            total,
            data: data.to_vec(),
            sent_to: None,
        };
        ids.push(alice.machine(&bob_addr)?.send(chunk, now())?);
    }
    pump(&mut alice, &mut bob, t0, Phase::Traffic, deadline, |a, _| {
        ids.iter().all(|id| a.delivered.contains(id))
    })
    .await?;
    let mut pieces = BTreeMap::new();
    for content in &bob.received {
        if let Content::FileChunk { index, data, .. } = content {
            pieces.insert(*index, data.as_slice());
        }
    }
    let rebuilt: Vec<u8> = pieces.values().flat_map(|d| d.iter().copied()).collect();
    ensure!(rebuilt == file, "the file arrived damaged");
    let took = t.elapsed();
    println!(
        "  alice → bob   demo.bin, {} KiB in {total} chunks, intact and acknowledged in {} ({:.1} MB/s)",
        FILE_BYTES / 1024,
        ms(took),
        FILE_BYTES as f64 / took.as_secs_f64() / 1e6
    );

    println!("\ntimings:");
    println!("  connect → data channel open   {}", ms(open));
    println!("  connect → encryptionReady     {}", ms(ready));
    alice.transport.shutdown().await;
    bob.transport.shutdown().await;
    broker.shutdown().await;
    println!("\ndemo: success");
    Ok(())
}
