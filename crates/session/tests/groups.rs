//! The group machine (issue #17), driven by a router between members:
//! pairwise PDUs as pair sessions carry them (authenticated sender,
//! delivered once, in any order; held while a member is cut off), group
//! messages as gossip or a lossy link would (dropped, duplicated and
//! reordered here). Seeded, with a clock for the machines' sync rounds.
//!
//! The seeded simulation runs 1,000 seeds in CI; `STRATA_GROUP_SIM_RUNS`
//! changes it, `STRATA_GROUP_SIM_SEED=n` replays one seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use strata_cascade::{
    AccountIdentity, InstallationId, InstallationIdentity, KeyPackageKind, KeyPackageSecrets, generate_key_package,
};
use strata_proto::{GroupMessage, Pdu};
use strata_session::Content;
use strata_session::group::{GroupCommand, GroupEvent, GroupInput, GroupMachine, GroupOutput, Invitee};

enum Delivery {
    Pairwise { from: InstallationId, pdu: Pdu },
    Message(GroupMessage),
}

struct Net {
    ids: Vec<InstallationIdentity>,
    machines: Vec<Option<GroupMachine>>,
    events: Vec<Vec<GroupEvent>>,
    /// The private parts of the packages handed out, by KeyPackageRef.
    held: BTreeMap<Vec<u8>, KeyPackageSecrets>,
    wire: VecDeque<(usize, Delivery)>,
    rng: ChaCha20Rng,
    /// Chance that a group message is delivered twice.
    duplicate: f64,
    /// Shuffle what is in flight before each delivery.
    shuffle: bool,
    /// Deliveries to these members wait (a partition), in order.
    held_back: Vec<usize>,
    /// Group messages between these two members are lost (no link).
    no_link: Vec<(usize, usize)>,
    /// Chance that a group message is lost on its way.
    drop: f64,
    /// Group messages to and from held-back members are lost (a real
    /// partition), rather than held.
    cut_loses_messages: bool,
    now: Instant,
}

impl Net {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ids: Vec<_> = (0..n)
            .map(|_| InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap())
            .collect();
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        let creator = GroupMachine::create(&ids[0], Some("climbing".into()), seed).unwrap();
        let mut machines: Vec<Option<GroupMachine>> = (0..n).map(|_| None).collect();
        machines[0] = Some(creator);
        Self {
            ids,
            machines,
            events: vec![Vec::new(); n],
            held: BTreeMap::new(),
            wire: VecDeque::new(),
            rng,
            duplicate: 0.0,
            shuffle: false,
            held_back: Vec::new(),
            no_link: Vec::new(),
            drop: 0.0,
            cut_loses_messages: false,
            now: Instant::now(),
        }
    }

    fn id(&self, i: usize) -> InstallationId {
        self.ids[i].installation_id()
    }

    fn index(&self, id: InstallationId) -> usize {
        self.ids.iter().position(|x| x.installation_id() == id).unwrap()
    }

    /// What the pool service does: `i` hands out one KeyPackage.
    fn invitee(&mut self, i: usize) -> Invitee {
        let made = generate_key_package(&self.ids[i], KeyPackageKind::OneTime, 3600).unwrap();
        let key_ref = made.package.key_ref().to_vec();
        self.held.insert(key_ref.clone(), made.secrets);
        Invitee {
            peer: self.ids[i].peer_identity(),
            key_package: made.package.bytes().to_vec(),
            key_ref,
        }
    }

    fn command(&mut self, i: usize, c: GroupCommand) {
        self.machines[i]
            .as_mut()
            .unwrap()
            .handle(GroupInput::Command(c))
            .unwrap();
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        let from = self.id(i);
        let mut add_again = Vec::new();
        while let Some(out) = self.machines[i].as_mut().and_then(GroupMachine::poll_output) {
            match out {
                GroupOutput::Pairwise { to, pdu } => {
                    let to = self.index(to);
                    self.wire.push_back((to, Delivery::Pairwise { from, pdu }));
                }
                GroupOutput::Broadcast { message, to, .. } => {
                    for member in to {
                        let to = self.index(member);
                        if self.no_link.contains(&(i, to)) || self.no_link.contains(&(to, i)) {
                            continue;
                        }
                        let cut = self.held_back.contains(&i) || self.held_back.contains(&to);
                        if (cut && self.cut_loses_messages) || self.rng.random_bool(self.drop) {
                            continue;
                        }
                        self.wire.push_back((to, Delivery::Message(message.clone())));
                        if self.rng.random_bool(self.duplicate) {
                            self.wire.push_back((to, Delivery::Message(message.clone())));
                        }
                    }
                }
                GroupOutput::Event(e) => {
                    if let GroupEvent::AddAgain { member } = e {
                        add_again.push(self.index(member));
                    }
                    self.events[i].push(e);
                }
            }
        }
        // What the sequencer's owner does: claim a fresh package, add again.
        for member in add_again {
            let invitee = self.invitee(member);
            self.command(i, GroupCommand::AddAgain(invitee));
        }
    }

    /// Delivers everything (but what is held back), in shuffled order when
    /// asked.
    fn run(&mut self) {
        let mut waiting = VecDeque::new();
        while !self.wire.is_empty() {
            if self.shuffle {
                let k = self.rng.random_range(0..self.wire.len());
                self.wire.swap(0, k);
            }
            let (to, d) = self.wire.pop_front().unwrap();
            let from_cut = match &d {
                Delivery::Pairwise { from, .. } => self.held_back.contains(&self.index(*from)),
                Delivery::Message(_) => false,
            };
            if self.held_back.contains(&to) || from_cut {
                waiting.push_back((to, d));
                continue;
            }
            self.deliver(to, d);
        }
        self.wire = waiting;
    }

    fn deliver(&mut self, to: usize, d: Delivery) {
        match d {
            Delivery::Pairwise {
                from,
                pdu: Pdu::GroupWelcome(w),
            } => {
                let secrets = self.held.remove(w.key_package_ref.as_bytes()).unwrap();
                let mut seed = [0u8; 32];
                self.rng.fill(&mut seed);
                let joined = GroupMachine::join(&self.ids[to], from, &w, &secrets, seed).unwrap();
                match self.machines[to].as_mut() {
                    // Added again: the member's state is the new join.
                    Some(m) => m.adopt(from, joined).unwrap(),
                    None => self.machines[to] = Some(joined),
                }
            }
            Delivery::Pairwise { from, pdu } => {
                if let Some(m) = self.machines[to].as_mut() {
                    m.handle(GroupInput::Pairwise { from, pdu: &pdu }).unwrap();
                }
            }
            Delivery::Message(msg) => {
                if let Some(m) = self.machines[to].as_mut() {
                    m.handle(GroupInput::Message(&msg)).unwrap();
                }
            }
        }
        self.drain(to);
    }

    /// Time passes by `by`: every machine's clock ticks.
    fn tick(&mut self, by: Duration) {
        self.now += by;
        for i in 0..self.ids.len() {
            if let Some(m) = self.machines[i].as_mut() {
                m.handle(GroupInput::Tick(self.now)).unwrap();
            }
            self.drain(i);
        }
    }

    fn received(&self, i: usize) -> Vec<(InstallationId, String)> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                GroupEvent::Received {
                    sender,
                    content: Content::Text { text },
                    ..
                } => Some((*sender, text.clone())),
                _ => None,
            })
            .collect()
    }

    fn live(&self) -> Vec<usize> {
        (0..self.ids.len())
            .filter(|i| self.machines[*i].as_ref().is_some_and(|m| !m.is_removed()))
            .collect()
    }

    /// Every live member is at one epoch with one member list.
    fn converged(&self) -> (u64, Vec<InstallationId>) {
        let live = self.live();
        let first = self.machines[live[0]].as_ref().unwrap();
        let (epoch, mut members) = (first.epoch(), first.members().unwrap());
        members.sort();
        for i in live {
            let m = self.machines[i].as_ref().unwrap();
            let mut theirs = m.members().unwrap();
            theirs.sort();
            assert_eq!((m.epoch(), &theirs), (epoch, &members), "member {i} diverged");
        }
        (epoch, members)
    }
}

fn text(s: &str) -> GroupCommand {
    GroupCommand::Send(Content::Text { text: s.into() })
}

/// Ten members, added in three commits while everything is in flight in
/// shuffled order and group messages are duplicated: one epoch, one
/// member list, and every message reaches every other member exactly once.
#[test]
fn ten_members_converge_and_every_message_arrives_once() {
    for seed in 0..20 {
        let mut net = Net::new(10, seed);
        net.shuffle = true;
        net.duplicate = 0.3;
        for batch in [1..4, 4..7, 7..10] {
            let invitees: Vec<_> = batch.map(|i| net.invitee(i)).collect();
            net.command(0, GroupCommand::Add(invitees));
        }
        net.run();
        let (epoch, members) = net.converged();
        assert_eq!((epoch, members.len()), (3, 10), "seed {seed}");
        // Two members update their keys at once: the sequencer commits the
        // first proposal to reach it; the other, made for an epoch gone,
        // is refused. One epoch everywhere either way.
        net.command(3, GroupCommand::Update);
        net.command(6, GroupCommand::Update);
        net.run();
        let (epoch, _) = net.converged();
        assert!((4..=5).contains(&epoch), "seed {seed}: epoch {epoch}");
        for i in 0..10 {
            net.command(i, text(&format!("from {i}")));
        }
        net.run();
        for i in 0..10 {
            let mut got = net.received(i);
            got.sort();
            let mut want: Vec<_> = (0..10)
                .filter(|j| *j != i)
                .map(|j| (net.id(j), format!("from {j}")))
                .collect();
            want.sort();
            assert_eq!(got, want, "seed {seed}: member {i}");
        }
    }
}

/// A member cut off while three commits go by gets them late and in any
/// order: it keeps the early ones, asks for the rest, and converges; a
/// message of an epoch it has not reached waits for its commit.
#[test]
fn a_member_behind_catches_up() {
    let mut net = Net::new(6, 40);
    let invitees: Vec<_> = (1..4).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    net.held_back = vec![2];
    net.command(0, GroupCommand::Update);
    let invitee = net.invitee(4);
    net.command(0, GroupCommand::Add(vec![invitee]));
    let invitee = net.invitee(5);
    net.command(0, GroupCommand::Add(vec![invitee]));
    net.run();
    net.command(5, text("newest epoch"));
    net.run();
    // Member 2 gets its backlog newest first.
    net.held_back.clear();
    net.wire = net.wire.drain(..).rev().collect();
    net.run();
    let (epoch, members) = net.converged();
    assert_eq!((epoch, members.len()), (4, 6));
    assert_eq!(net.received(2), vec![(net.id(5), "newest epoch".to_owned())]);
}

/// A removed member, its state intact and still handed every message,
/// reads nothing sent after its removal; the others go on.
#[test]
fn a_removed_member_reads_nothing_after_its_removal() {
    let mut net = Net::new(4, 41);
    let invitees: Vec<_> = (1..4).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    let gone = net.id(3);
    net.command(0, GroupCommand::Remove(vec![gone]));
    net.run();
    assert!(net.machines[3].as_ref().unwrap().is_removed());
    assert!(net.events[3].contains(&GroupEvent::Removed));
    net.command(1, text("after"));
    // The removed member is handed the message all the same.
    let sent: Vec<GroupMessage> = net
        .wire
        .iter()
        .filter_map(|(_, d)| match d {
            Delivery::Message(m) => Some(m.clone()),
            Delivery::Pairwise { .. } => None,
        })
        .collect();
    net.run();
    for m in &sent {
        net.machines[3]
            .as_mut()
            .unwrap()
            .handle(GroupInput::Message(m))
            .unwrap();
    }
    assert!(net.received(3).is_empty());
    assert_eq!(net.received(2), vec![(net.id(1), "after".to_owned())]);
    let (_, members) = net.converged();
    assert!(!members.contains(&gone));
}

/// Members ask; admins commit. A leave and a remove requested by members
/// are committed by the admin; an add request is raised for the owner to
/// claim the joiner's package; a member's own commit attempt is an error
/// and a forged commit is refused without a fork.
#[test]
fn members_propose_and_admins_commit() {
    let mut net = Net::new(5, 42);
    let invitees: Vec<_> = (1..5).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    net.command(4, GroupCommand::Leave);
    net.run();
    assert!(net.machines[4].as_ref().unwrap().is_removed());
    let target = net.id(3);
    net.command(2, GroupCommand::Remove(vec![target]));
    net.run();
    assert!(net.machines[3].as_ref().unwrap().is_removed());
    let (epoch, members) = net.converged();
    assert_eq!((epoch, members.len()), (3, 3));

    // A member's own key update: proposed, committed by the admin, one
    // epoch everywhere.
    net.command(2, GroupCommand::Update);
    net.run();
    let (epoch, _) = net.converged();
    assert_eq!(epoch, 4);
    let m1 = net.machines[1].as_mut().unwrap();
    assert!(m1.handle(GroupInput::Command(GroupCommand::Leave)).is_ok());
    // An admin cannot leave without handing the role over.
    let admin = net.machines[0].as_mut().unwrap();
    assert!(admin.handle(GroupInput::Command(GroupCommand::Leave)).is_err());
    net.drain(1);
    net.run();
    assert!(net.machines[1].as_ref().unwrap().is_removed());

    // A forged commit (garbage) is refused; the group stays one.
    let forged = strata_proto::GroupCommit {
        group_id: strata_proto::Blob::new(net.machines[0].as_ref().unwrap().group_id().to_vec()).unwrap(),
        epoch: net.machines[2].as_ref().unwrap().epoch(),
        commit: strata_proto::Blob::new(vec![0; 64]).unwrap(),
        proposals: strata_proto::BoundedVec::default(),
        epoch_secret: None,
    };
    let from = net.id(0);
    net.wire.push_back((
        2,
        Delivery::Pairwise {
            from,
            pdu: forged.into(),
        },
    ));
    net.run();
    assert!(net.events[2].iter().any(|e| matches!(e, GroupEvent::Refused { .. })));
    net.converged();
    net.command(2, text("still here"));
    net.run();
    assert_eq!(net.received(0), vec![(net.id(2), "still here".to_owned())]);
}

/// The admin hands its role over; the new admin adds and removes; the old
/// one is a member like any other.
#[test]
fn the_admin_role_moves() {
    let mut net = Net::new(4, 43);
    let invitees: Vec<_> = (1..3).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    let next = net.id(1);
    net.command(0, GroupCommand::SetAdmins(vec![next]));
    net.run();
    for i in 0..3 {
        assert_eq!(net.machines[i].as_ref().unwrap().admins().unwrap(), vec![next]);
    }
    let invitee = net.invitee(3);
    net.command(1, GroupCommand::Add(vec![invitee]));
    net.run();
    let old = net.id(0);
    net.command(1, GroupCommand::Remove(vec![old]));
    net.run();
    assert!(net.machines[0].as_ref().unwrap().is_removed());
    let (_, members) = net.converged();
    assert_eq!(members.len(), 3);
}

/// A member restarts from its stored state (sealed in a real store) in
/// the middle of the conversation: it goes on through later commits and
/// messages, and a message it had before is not delivered again.
#[test]
fn a_member_restarts_from_its_stored_state() {
    use strata_store::{KeySource, MemoryBackend, Store};
    let mut net = Net::new(4, 44);
    let invitees: Vec<_> = (1..4).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    net.command(1, text("before"));
    let before: Vec<GroupMessage> = net
        .wire
        .iter()
        .filter_map(|(to, d)| match d {
            Delivery::Message(m) if *to == 2 => Some(m.clone()),
            _ => None,
        })
        .collect();
    net.run();

    let key = strata_cascade::at_rest::StorageKey::generate(&mut net.rng);
    let store = Store::open(MemoryBackend::new(), KeySource::Key(key)).unwrap();
    let group = hex::encode(net.machines[2].as_ref().unwrap().group_id());
    let m2 = net.machines[2].as_mut().unwrap();
    let state = m2.export().unwrap();
    let kept = m2.pending_kept().unwrap();
    assert!(!kept.put.is_empty(), "the message member 2 got is kept, as a row");
    store
        .write(|w| {
            w.set_group(&group, state.as_bytes())?;
            for (key, row) in &kept.put {
                w.put_group_message(&group, key, row)?;
            }
            Ok(())
        })
        .unwrap();
    m2.kept_stored();
    assert!(m2.pending_kept().unwrap().put.is_empty());
    net.machines[2] = None;
    assert_eq!(store.read(|r| r.groups()).unwrap(), vec![group.clone()]);
    let stored = store.read(|r| r.group(&group)).unwrap().unwrap();
    let rows = store.read(|r| r.group_messages(&group)).unwrap();
    assert_eq!(rows.len(), kept.put.len());
    net.machines[2] = Some(GroupMachine::restore(&net.ids[2], &stored, &rows, [9; 32]).unwrap());

    for m in &before {
        net.machines[2]
            .as_mut()
            .unwrap()
            .handle(GroupInput::Message(m))
            .unwrap();
    }
    net.drain(2);
    net.command(0, GroupCommand::Update);
    net.run();
    net.command(3, text("after"));
    net.run();
    let got: Vec<String> = net.received(2).into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, ["before", "after"]);
    net.converged();
    assert!(GroupMachine::restore::<Vec<u8>>(&net.ids[2], b"{}", &[], [0; 32]).is_err());
    assert!(GroupMachine::restore(&net.ids[2], &stored, &[b"not a row".to_vec()], [0; 32]).is_err());
    store.write(|w| w.delete_group(&group).map(drop)).unwrap();
    assert!(
        store.read(|r| r.group_messages(&group)).unwrap().is_empty(),
        "rows go with their group"
    );
}

/// Members with a link to the admin alone still reach each other: the
/// admin passes their messages on, and each arrives once.
#[test]
fn the_admin_passes_messages_on_to_members_without_a_link() {
    let mut net = Net::new(5, 45);
    let invitees: Vec<_> = (1..5).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    for a in 1..5 {
        for b in (a + 1)..5 {
            net.no_link.push((a, b));
        }
    }
    net.duplicate = 0.2;
    for i in 1..5 {
        net.command(i, text(&format!("from {i}")));
    }
    net.run();
    for i in 0..5 {
        let mut got = net.received(i);
        got.sort();
        let mut want: Vec<_> = (1..5)
            .filter(|j| *j != i)
            .map(|j| (net.id(j), format!("from {j}")))
            .collect();
        want.sort();
        assert_eq!(got, want, "member {i}");
    }
}

/// Hostile group messages change nothing and are refused: the same
/// ciphertext again under a new message id (MLS has used its key), a
/// message whose epoch field lies, garbage, one over the size cap, and one
/// for another group.
#[test]
fn hostile_group_messages_are_refused() {
    let mut net = Net::new(3, 46);
    let invitees: Vec<_> = (1..3).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    net.command(1, text("once"));
    let sent: GroupMessage = net
        .wire
        .iter()
        .find_map(|(to, d)| match d {
            Delivery::Message(m) if *to == 2 => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    net.run();
    assert_eq!(net.received(2).len(), 1);
    let refusals = |net: &Net| {
        net.events[2]
            .iter()
            .filter(|e| matches!(e, GroupEvent::Refused { .. }))
            .count()
    };
    let before = refusals(&net);
    let m2 = net.machines[2].as_mut().unwrap();
    let replay = GroupMessage {
        message_id: strata_proto::Text::new("another-id").unwrap(),
        ..sent.clone()
    };
    let lying = GroupMessage {
        epoch: sent.epoch + 1,
        message_id: strata_proto::Text::new("lying-id").unwrap(),
        ..sent.clone()
    };
    let garbage = GroupMessage {
        message_id: strata_proto::Text::new("garbage-id").unwrap(),
        ciphertext: strata_proto::Blob::new(vec![0; 64]).unwrap(),
        ..sent.clone()
    };
    let elsewhere = GroupMessage {
        group_id: strata_proto::Blob::new(vec![9; 16]).unwrap(),
        message_id: strata_proto::Text::new("elsewhere-id").unwrap(),
        ..sent.clone()
    };
    let huge = GroupMessage {
        message_id: strata_proto::Text::new("huge-id").unwrap(),
        ciphertext: strata_proto::Blob::new(vec![0; strata_session::group::MAX_GROUP_MESSAGE_BYTES + 1]).unwrap(),
        ..sent.clone()
    };
    for m in [&replay, &lying, &garbage, &elsewhere, &huge] {
        m2.handle(GroupInput::Message(m)).unwrap();
    }
    net.drain(2);
    assert_eq!(net.received(2).len(), 1, "nothing delivered twice or forged");
    assert_eq!(
        refusals(&net) - before,
        4,
        "replay, lie, garbage and the oversized one refused; another group's ignored"
    );
    // Nor can a member send a group PDU as a message.
    let pdu = GroupCommand::Send(Content::GroupPdu { data: vec![1] });
    assert!(
        net.machines[1]
            .as_mut()
            .unwrap()
            .handle(GroupInput::Command(pdu))
            .is_err()
    );
    // The group goes on.
    net.command(1, text("twice"));
    net.run();
    assert_eq!(net.received(2).len(), 2);
}

/// One seeded run of a 10-member group: texts from random members, key
/// updates (the sequencer's and members'), a member cut off and healed
/// (group messages to and from it lost, its pair traffic held), and a
/// member restarted from its stored state, over shuffled delivery with
/// group messages dropped and duplicated. It must end at one epoch and
/// member list, with every text at every other member exactly once.
fn group_scenario(seed: u64) -> Result<(), String> {
    let mut net = Net::new(10, seed);
    net.shuffle = true;
    net.duplicate = 0.1;
    net.drop = 0.2;
    net.cut_loses_messages = true;
    let invitees: Vec<_> = (1..10).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    let mut sent: Vec<(usize, String)> = Vec::new();
    for step in 0..30 {
        let who = net.rng.random_range(0..10);
        let roll: f64 = net.rng.random();
        let partitioned = !net.held_back.is_empty();
        if roll < 0.55 {
            let t = format!("seed {seed} step {step}");
            net.command(who, text(&t));
            sent.push((who, t));
        } else if roll < 0.7 && !partitioned {
            // Epochs stand still while a member is cut off, so what it
            // missed stays within reach (MAX_PAST_EPOCHS).
            net.command(who, GroupCommand::Update);
        } else if roll < 0.85 {
            if partitioned {
                net.held_back.clear();
            } else if who != 0 {
                net.held_back = vec![who];
            }
        } else if !net.held_back.contains(&who) {
            let machine = net.machines[who].as_ref().unwrap();
            let (state, rows) = (machine.export().unwrap(), machine.kept_rows().unwrap());
            let mut fresh = [0u8; 32];
            net.rng.fill(&mut fresh);
            net.machines[who] = Some(GroupMachine::restore(&net.ids[who], state.as_bytes(), &rows, fresh).unwrap());
        }
        net.run();
        net.tick(Duration::from_secs(1));
        net.run();
    }
    net.held_back.clear();
    // Sync rounds until every text is everywhere (or clearly never will be).
    let complete =
        |net: &Net| (0..10).all(|i| net.received(i).len() == sent.iter().filter(|(from, _)| *from != i).count());
    for _ in 0..40 {
        if complete(&net) && net.wire.is_empty() {
            break;
        }
        net.tick(strata_session::group::SYNC_INTERVAL);
        net.run();
    }
    let live = net.live();
    let first = net.machines[live[0]].as_ref().unwrap();
    let (epoch, mut members) = (first.epoch(), first.members().unwrap());
    members.sort();
    if members.len() != 10 {
        return Err(format!("{} members", members.len()));
    }
    for i in live {
        let m = net.machines[i].as_ref().unwrap();
        let mut theirs = m.members().unwrap();
        theirs.sort();
        if (m.epoch(), &theirs) != (epoch, &members) {
            return Err(format!("member {i} at epoch {} diverged from {epoch}", m.epoch()));
        }
    }
    for i in 0..10 {
        let mut got: Vec<(InstallationId, String)> = net.received(i);
        got.sort();
        let mut want: Vec<(InstallationId, String)> = sent
            .iter()
            .filter(|(from, _)| *from != i)
            .map(|(from, t)| (net.id(*from), t.clone()))
            .collect();
        want.sort();
        if got != want {
            let missing = want.iter().filter(|w| !got.contains(w)).count();
            return Err(format!(
                "member {i}: {} received, {missing} missing of {}",
                got.len(),
                want.len()
            ));
        }
    }
    Ok(())
}

#[test]
fn seeded_runs_of_a_ten_member_group_converge_over_a_faulty_network() {
    use strata_test_support::bench::knob;
    let seeds: Vec<u64> = match knob("STRATA_GROUP_SIM_SEED", u64::MAX) {
        u64::MAX => (0..knob("STRATA_GROUP_SIM_RUNS", 1000)).collect(),
        one => vec![one],
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let failures = strata_test_support::run_seeds(&seeds, threads, group_scenario);
    assert!(
        failures.is_empty(),
        "{} of {} runs failed: {failures:#?}",
        failures.len(),
        seeds.len()
    );
}

/// A `group-sync` from a non-member, or with a sender that is not an id
/// or ranges out of order, is refused and answered with nothing; a
/// member's empty one gets back every message the receiver keeps, at most
/// a batch a time, and one that claims everything gets nothing back; past
/// a few a tick, a member's syncs are refused.
#[test]
fn group_syncs_are_checked() {
    use strata_proto::{BoundedVec, GroupSync, HeardSeqs, Text};
    let mut net = Net::new(4, 47);
    let invitees: Vec<_> = (1..3).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    for n in 0..3 {
        net.command(1, text(&format!("text {n}")));
    }
    net.run();
    let group_id = net.machines[0].as_ref().unwrap().group_id().to_vec();
    let sync = |heard: Vec<HeardSeqs>, epoch: u64| GroupSync {
        group_id: strata_proto::Blob::new(group_id.clone()).unwrap(),
        from_epoch: epoch,
        to_epoch: epoch,
        heard: BoundedVec::new(heard).unwrap(),
        answer: true,
    };
    let epoch = net.machines[0].as_ref().unwrap().epoch();
    let claim = |sender: String, seqs: Vec<[u64; 2]>| HeardSeqs {
        epoch,
        sender: Text::new(sender).unwrap(),
        seqs: BoundedVec::new(seqs).unwrap(),
    };
    let sender = net.id(1).to_hex();
    let admin = net.machines[0].as_mut().unwrap();
    let outsider = net.ids[3].installation_id();
    let hostile = [
        (outsider, sync(vec![], epoch)),
        (
            net.ids[2].installation_id(),
            sync(vec![claim("not-an-id".into(), vec![[0, 1]])], epoch),
        ),
        (
            net.ids[2].installation_id(),
            sync(vec![claim(sender.clone(), vec![[5, 6], [0, 5]])], epoch),
        ),
    ];
    for (from, pdu) in hostile {
        admin.handle(GroupInput::Pairwise { from, pdu: &pdu.into() }).unwrap();
        let outputs: Vec<_> = std::iter::from_fn(|| admin.poll_output()).collect();
        assert!(
            matches!(outputs.as_slice(), [GroupOutput::Event(GroupEvent::Refused { .. })]),
            "{outputs:?}"
        );
    }
    // An empty sync gets the three texts back, pairwise.
    let member = net.ids[2].installation_id();
    let empty = sync(vec![], epoch).into();
    admin
        .handle(GroupInput::Pairwise {
            from: member,
            pdu: &empty,
        })
        .unwrap();
    let resent = std::iter::from_fn(|| admin.poll_output())
        .filter(|o| matches!(o, GroupOutput::Pairwise { to, pdu: Pdu::GroupMessage(_) } if *to == member))
        .count();
    assert_eq!(resent, 3);
    // One that has them all gets nothing.
    let full = sync(vec![claim(sender, vec![[0, 2]])], epoch).into();
    admin
        .handle(GroupInput::Pairwise {
            from: member,
            pdu: &full,
        })
        .unwrap();
    assert!(admin.poll_output().is_none());
    // Past four a tick (two bad ones, the empty and the full one), a
    // member's syncs are refused until the next tick: a flood of them
    // cannot make the admin resend its store again and again.
    let again = |admin: &mut GroupMachine| {
        admin
            .handle(GroupInput::Pairwise {
                from: member,
                pdu: &empty,
            })
            .unwrap();
        std::iter::from_fn(|| admin.poll_output()).collect::<Vec<_>>()
    };
    let outputs = again(admin);
    assert!(
        matches!(outputs.as_slice(), [GroupOutput::Event(GroupEvent::Refused { .. })]),
        "{outputs:?}"
    );
    admin.handle(GroupInput::Tick(std::time::Instant::now())).unwrap();
    while admin.poll_output().is_some() {}
    let resent = again(admin)
        .iter()
        .filter(|o| {
            matches!(
                o,
                GroupOutput::Pairwise {
                    pdu: Pdu::GroupMessage(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(resent, 3, "answered again after a tick");
    // The resent copies are dropped by id at the member.
    let before = net.received(2).len();
    net.command(1, text("after"));
    net.run();
    assert_eq!(net.received(2).len(), before + 1);
}

/// A member that lost more commits than anyone's log keeps (its pair
/// traffic gone, as after restoring an old backup) is added again by the
/// sequencer: from a fresh KeyPackage, its old leaf replaced in one
/// commit, it joins from the Welcome, and reads and is read as before.
/// Its requests do not multiply, and it is added once. A member less far
/// behind catches up batch after batch.
#[test]
fn a_member_behind_beyond_the_commit_log_is_added_again() {
    let mut net = behind_beyond_the_log(48);
    net.command(1, text("still there?"));
    deliver_all(&mut net);
    let (epoch, members) = net.converged();
    assert_eq!(members.len(), 4);
    assert_eq!(net.machines[2].as_ref().unwrap().epoch(), epoch, "member 2 added again");
    assert_eq!(net.machines[3].as_ref().unwrap().epoch(), epoch, "member 3 caught up");
    let added_again = |e: &GroupEvent| matches!(e, GroupEvent::AddAgain { .. });
    assert_eq!(net.events[0].iter().filter(|e| added_again(e)).count(), 1, "added once");
    reads_and_is_read(&mut net, 2);
}

/// The same when the role moved on while the member was behind: the admin
/// it asks (an admin no longer sequencing) asks the sequencer for it, and
/// the Welcome of the new sequencer (an admin as the member knew the group)
/// is taken.
#[test]
fn a_member_behind_is_added_again_by_a_new_sequencer() {
    let mut net = Net::new(4, 49);
    let invitees: Vec<_> = (1..4).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    let (zero, one) = (net.id(0), net.id(1));
    net.command(0, GroupCommand::SetAdmins(vec![zero, one]));
    net.run();
    lose_beyond_the_log(&mut net);
    net.command(0, GroupCommand::SetAdmins(vec![one, zero]));
    net.run();
    net.command(3, text("still there?"));
    deliver_all(&mut net);
    net.converged();
    assert!(
        net.events[0]
            .iter()
            .any(|e| matches!(e, GroupEvent::Refused { reason, .. } if reason.contains("the sequencer is asked"))),
        "the old sequencer turned to the new one"
    );
    assert!(net.events[1].iter().any(|e| matches!(e, GroupEvent::AddAgain { .. })));
    assert_eq!(
        net.machines[2].as_ref().unwrap().epoch(),
        net.machines[1].as_ref().unwrap().epoch()
    );
    reads_and_is_read(&mut net, 2);
}

/// A member takes a new state of its group only from a Welcome of an admin
/// as it knew the group, and of a later epoch: one that came from any other
/// member (which could have made a group of its own under the same id) is
/// refused, and so is one of an epoch already reached; nothing changes.
#[test]
fn only_an_admin_takes_a_member_into_a_new_state() {
    let mut net = Net::new(3, 50);
    let invitees: Vec<_> = (1..3).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    let epoch = net.machines[2].as_ref().unwrap().epoch();
    let invitee = net.invitee(2);
    net.command(0, GroupCommand::AddAgain(invitee));
    let welcome = net
        .wire
        .iter()
        .find_map(|(to, d)| match d {
            Delivery::Pairwise {
                pdu: Pdu::GroupWelcome(w),
                ..
            } if *to == 2 => Some(w.clone()),
            _ => None,
        })
        .unwrap();
    net.wire.clear();
    let secrets = net.held.remove(welcome.key_package_ref.as_bytes()).unwrap();
    let (zero, one) = (net.id(0), net.id(1));
    let joined = |net: &mut Net| {
        let mut seed = [0u8; 32];
        net.rng.fill(&mut seed);
        GroupMachine::join(&net.ids[2], zero, &welcome, &secrets, seed).unwrap()
    };
    let from_member = joined(&mut net);
    let m = net.machines[2].as_mut().unwrap();
    m.adopt(one, from_member).unwrap();
    assert_eq!(m.epoch(), epoch, "a member's Welcome is refused");
    let twice = joined(&mut net);
    let m = net.machines[2].as_mut().unwrap();
    m.adopt(zero, twice).unwrap();
    assert_eq!(m.epoch(), epoch + 1, "the admin's is taken");
    let again = joined(&mut net);
    let m = net.machines[2].as_mut().unwrap();
    m.adopt(zero, again).unwrap();
    assert_eq!(m.epoch(), epoch + 1);
    net.drain(2);
    let refused = net.events[2]
        .iter()
        .filter(|e| matches!(e, GroupEvent::Refused { .. }))
        .count();
    assert_eq!(refused, 2, "{:?}", net.events[2]);
}

/// Four members; member 2 loses every commit past the log's reach, member
/// 3 the commits past the first 30 (a catch-up still reaches it).
fn behind_beyond_the_log(seed: u64) -> Net {
    let mut net = Net::new(4, seed);
    let invitees: Vec<_> = (1..4).map(|i| net.invitee(i)).collect();
    net.command(0, GroupCommand::Add(invitees));
    net.run();
    lose_beyond_the_log(&mut net);
    net
}

fn lose_beyond_the_log(net: &mut Net) {
    use strata_session::group::COMMIT_LOG;
    net.held_back = vec![2, 3];
    for _ in 0..COMMIT_LOG + 6 {
        net.command(0, GroupCommand::Update);
        net.run();
    }
    let mut kept = 0;
    net.wire.retain(|(to, _)| match to {
        3 => {
            kept += 1;
            kept <= 30
        }
        2 => false,
        _ => true,
    });
    net.held_back.clear();
    net.run();
}

/// Delivers everything in order, one at a time: requests must not multiply.
fn deliver_all(net: &mut Net) {
    let mut steps = 0;
    while let Some((to, d)) = net.wire.pop_front() {
        net.deliver(to, d);
        steps += 1;
        assert!(steps < 10_000, "catch-up requests multiply");
    }
}

/// Member `i` and the others read each other.
fn reads_and_is_read(net: &mut Net, i: usize) {
    let others: Vec<usize> = net.live().into_iter().filter(|k| *k != i).collect();
    net.command(i, text("back"));
    net.command(others[0], text("welcome back"));
    net.run();
    let me = net.id(i);
    for k in &others {
        assert!(net.received(*k).contains(&(me, "back".into())), "member {k}");
    }
    let them = net.id(others[0]);
    assert!(net.received(i).contains(&(them, "welcome back".into())));
}
