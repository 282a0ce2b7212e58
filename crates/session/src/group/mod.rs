//! The group machine: one member's side of one group chat, sans-I/O
//! (issue #17). The node runs one per group in a `GroupActor`
//! (`actors/groups.rs`), which stores its record after every step and
//! carries its outputs.
//!
//! ```text
//! handle(GroupInput, now) ──► poll_output() → Pairwise { to, pdu } | Broadcast { message, to } | Event(..)
//! ```
//!
//! - **Pairwise** outputs are group PDUs for one member, to go through
//!   the pair session with it (inside its cascade: they carry group
//!   secrets); **Pairwise** inputs arrive the same way, named by the
//!   installation the pair session authenticated.
//! - **Broadcast** outputs are `group-message`s for every other member
//!   (one publish on the group's topic over gossip, one frame per member
//!   link otherwise). Message inputs come from anyone: the MLS and AES layers
//!   of [`GroupMls`] decide what opens. An admin passes every member's
//!   message on to the other members once, so a member that has a link to
//!   the admin alone still reaches everyone; copies are dropped by id.
//!
//! The rules:
//!
//! - **One sequencer commits.** MLS refuses a commit that is not an
//!   admin's ([`GroupMls::process_commit`]), and of the admins the first of
//!   the list is the sequencer: the only one that commits, so there is one
//!   commit per epoch and no fork (other admins propose like members). It
//!   adds, removes, hands the role over and updates its key; a commit goes
//!   to every member as a `group-commit` with the next epoch's group secret
//!   (a member it removes gets the commit without the secret); joiners get
//!   a `group-welcome`. Members ask the sequencer with `group-proposal`:
//!   remove, leave, their own key update (an MLS Update proposal, carried
//!   in the commit for the others to process first), and add (raised as
//!   [`GroupEvent::AddRequested`] for the owner to claim the joiner's
//!   KeyPackage). A proposal made in an epoch that moves on before the
//!   sequencer commits it is refused; the member proposes again.
//! - **Order.** A commit for the current epoch applies; an older one is a
//!   duplicate and is dropped; a newer one waits (at most
//!   [`MAX_FUTURE_COMMITS`]) and the member asks its sender to catch it up
//!   (`group-catch-up-request`). So does a member that just joined (commits
//!   may overtake the Welcome) and one that receives a message of an epoch
//!   it has not reached (it asks an admin, once per epoch). Every member
//!   keeps the last [`COMMIT_LOG`] commits to answer (`group-catch-up`, up
//!   to 16 a time; the asker asks again after each batch, and at most once
//!   per epoch while an answer is due).
//! - **Added again.** A member behind beyond every log (its pair traffic
//!   lost, as after restoring an old backup) is told so, and the sequencer
//!   adds it again: its owner claims a fresh KeyPackage of the member
//!   ([`GroupEvent::AddAgain`], [`GroupCommand::AddAgain`]), one commit
//!   replaces the member's leaf (so it keeps its place in the admin list),
//!   and the member's owner joins from the Welcome and hands the new state
//!   to its machine ([`GroupMachine::adopt`]). An admin asked that no
//!   longer sequences asks the sequencer for the member (a `group-proposal`
//!   to add a current member). The member takes the new state only from
//!   an admin as it knew the group, for a later epoch: a member that was
//!   behind while every admin it knew left the role is reported, not
//!   added again.
//! - **Messages** are sealed with the epoch's [`GroupMessageKey`]; a
//!   message of an epoch not reached yet waits (at most
//!   [`MAX_EARLY_MESSAGES`]) for its commit, one of an epoch passed opens
//!   with that epoch's kept key (up to [`MAX_PAST_EPOCHS`] back), and a
//!   message id seen before is dropped (the last [`SEEN_MESSAGES`] ids).
//! - **Loss.** Group messages may be lost on the way; members compare
//!   what they have with `group-sync` over the pair sessions and send
//!   each other what is missing (the `sync` module: each sender numbers
//!   its messages per epoch, the sequencer is the hub, rounds at most every
//!   [`SYNC_INTERVAL`], [`KEPT_MESSAGES`] kept to send again). The owner
//!   ticks the machine ([`GroupInput::Tick`]) for these rounds.
//! - A member removed stops: [`GroupEvent::Removed`], and the machine
//!   refuses all input after it.

mod commits;
mod messages;
mod record;
mod sync;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use strata_cascade::group::{GroupEpochSecret, GroupMessageKey, GroupMls, MAX_PAST_EPOCHS};
use strata_cascade::{InstallationId, InstallationIdentity, KeyPackageSecrets, PeerIdentity};
use strata_proto::{GroupCommit, GroupMessage, GroupWelcome, Pdu};

pub use self::sync::{
    KEPT_BYTES, KEPT_MESSAGES, KeptChanges, RESEND_BATCH, RESEND_BYTES, SYNC_INTERVAL, SYNCS_PER_TICK,
};
use self::sync::{Kept, Seqs};
use crate::content::Content;
use crate::error::SessionError;

/// Commits each member keeps to catch others up.
pub const COMMIT_LOG: usize = 64;
/// Commits of future epochs kept while catching up.
pub const MAX_FUTURE_COMMITS: usize = 16;
/// Group messages of future epochs kept until their commit.
pub const MAX_EARLY_MESSAGES: usize = 256;
/// Most bytes of group messages of future epochs kept.
pub const MAX_EARLY_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes of one group message's ciphertext: the largest content (a
/// 1 MiB text, base64 in JSON) sealed, with room to spare. Larger ones
/// are refused before anything else.
pub const MAX_GROUP_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Message ids remembered to drop duplicates.
pub const SEEN_MESSAGES: usize = 4096;
/// How long the sequencer waits for a member's re-add
/// ([`GroupCommand::AddAgain`]) before it raises [`GroupEvent::AddAgain`]
/// again.
pub const ADD_AGAIN_RETRY: Duration = Duration::from_secs(60);

/// Where the sequencer is with adding a member behind again.
#[derive(Clone, Copy, Debug)]
enum AddAgain {
    /// Asked of the owner, at the time of the last tick then.
    Asked(Option<Instant>),
    /// Done: requests of epochs before this one came before it.
    Done(u64),
}

/// A member to add: the KeyPackage its owner handed out (a pool claim),
/// with the identity it was checked against and its `KeyPackageRef`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitee {
    /// The joiner installation.
    pub peer: PeerIdentity,
    /// Its KeyPackage (serialized `MLSMessage`).
    pub key_package: Vec<u8>,
    /// The package's `KeyPackageRef`, for the joiner to redeem it.
    pub key_ref: Vec<u8>,
}

/// Requests of the local user.
#[derive(Clone, Debug)]
pub enum GroupCommand {
    /// Send `content` to the group.
    Send(Content),
    /// The sequencer: add these members (one commit).
    Add(Vec<Invitee>),
    /// Anyone else: ask the sequencer to add `member`, reachable at
    /// `address` (raised there as [`GroupEvent::AddRequested`]).
    AskToAdd {
        /// The installation to add.
        member: InstallationId,
        /// Where it is reached.
        address: String,
    },
    /// The sequencer removes these members; anyone else asks it to.
    Remove(Vec<InstallationId>),
    /// Leave the group (asks the sequencer to remove us).
    Leave,
    /// The sequencer: replace the admin list.
    SetAdmins(Vec<InstallationId>),
    /// A fresh leaf key for this member: committed by the sequencer, or
    /// proposed to it.
    Update,
    /// The sequencer: add again a member behind beyond every commit log
    /// ([`GroupEvent::AddAgain`]), from a fresh KeyPackage of its own; its
    /// old leaf is replaced in the same commit.
    AddAgain(Invitee),
}

/// What happens to a group machine.
#[derive(Debug)]
pub enum GroupInput<'a> {
    /// A group PDU from `from` through the pair session with it.
    Pairwise {
        /// The installation the pair session authenticated.
        from: InstallationId,
        /// The PDU.
        pdu: &'a Pdu,
    },
    /// A group message, from a link or the group's topic.
    Message(&'a GroupMessage),
    /// A request of the local user.
    Command(GroupCommand),
    /// Time passes (the owner calls this every second or so).
    Tick(Instant),
}

/// What a group machine tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// This member joined from a Welcome.
    Joined {
        /// The epoch it joined at.
        epoch: u64,
        /// The chat's name.
        name: Option<String>,
        /// The admin that added it.
        by: InstallationId,
    },
    /// The group moved to a new epoch.
    Epoch {
        /// The new epoch.
        epoch: u64,
        /// The admin that committed.
        committer: InstallationId,
        /// Members added.
        added: Vec<InstallationId>,
        /// Members removed.
        removed: Vec<InstallationId>,
    },
    /// A message from a member.
    Received {
        /// Who sent it.
        sender: InstallationId,
        /// Its id.
        message_id: String,
        /// What it said.
        content: Content,
    },
    /// A member asks the admins to add `member` (at `address`): the owner
    /// claims its KeyPackage and commands [`GroupCommand::Add`].
    AddRequested {
        /// Who asks.
        by: InstallationId,
        /// Whom to add.
        member: String,
        /// Where to reach it, if given.
        address: Option<String>,
    },
    /// A member is behind beyond every commit log: the sequencer's owner
    /// claims a fresh KeyPackage of it and commands
    /// [`GroupCommand::AddAgain`]. Raised once per member while its
    /// re-add is pending (again after [`ADD_AGAIN_RETRY`]).
    AddAgain {
        /// The member behind.
        member: InstallationId,
    },
    /// This member was removed: the group is over for it.
    Removed,
    /// Input refused (nothing changed).
    Refused {
        /// The pairwise sender, when known.
        from: Option<InstallationId>,
        /// Why.
        reason: String,
    },
}

/// What a group machine asks its owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupOutput {
    /// Send `pdu` to member `to` through the pair session with it.
    Pairwise {
        /// The member.
        to: InstallationId,
        /// The PDU.
        pdu: Pdu,
    },
    /// Send `message` to every member in `to` (gossip: one publish).
    Broadcast {
        /// The message.
        message: GroupMessage,
        /// The other members.
        to: Vec<InstallationId>,
        /// An admin passing a member's message on, for members without a
        /// link to its sender: on gossip, where every member hears the
        /// sender's one publish, it is not sent.
        forwarded: bool,
    },
    /// Tell the user.
    Event(GroupEvent),
}

/// One member's machine for one group chat.
pub struct GroupMachine {
    local: InstallationId,
    group: GroupMls,
    name: Option<String>,
    /// Message keys of the current epoch and the ones before it, newest last.
    keys: VecDeque<GroupMessageKey>,
    /// The last commits, oldest first, each as sent.
    log: VecDeque<GroupCommit>,
    /// Commits of future epochs, by epoch.
    future: BTreeMap<u64, GroupCommit>,
    early: VecDeque<GroupMessage>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    removed: bool,
    /// The epoch at which this member last asked to be caught up.
    asked_at: Option<u64>,
    /// Sequence numbers of the messages this member has, by epoch and
    /// sender (its own included), for the epochs it can read.
    heard: BTreeMap<(u64, InstallationId), Seqs>,
    /// The last messages, as they came, to send again.
    kept: VecDeque<Kept>,
    /// Keys of kept messages not stored yet, and of stored ones dropped
    /// since: the owner stores them apart from the record
    /// ([`GroupMachine::pending_kept`]).
    kept_new: Vec<String>,
    kept_gone: Vec<String>,
    /// `group-sync`s answered since the last tick, by member.
    syncs_answered: BTreeMap<InstallationId, u8>,
    /// What this member has changed since its last `group-sync`.
    sync_due: bool,
    last_sync: Option<Instant>,
    /// The time of the last tick.
    now: Option<Instant>,
    /// The sequencer's re-adds of members behind (not stored: after a
    /// restart a member still behind asks again and is re-added).
    add_again: BTreeMap<InstallationId, AddAgain>,
    rng: ChaCha20Rng,
    out: VecDeque<GroupOutput>,
}

impl std::fmt::Debug for GroupMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMachine")
            .field("local", &self.local)
            .field("epoch", &self.group.epoch())
            .field("removed", &self.removed)
            .finish_non_exhaustive()
    }
}

impl GroupMachine {
    fn with_group(local: &InstallationIdentity, group: GroupMls, name: Option<String>, seed: [u8; 32]) -> Self {
        Self {
            local: local.installation_id(),
            group,
            name,
            keys: VecDeque::new(),
            log: VecDeque::new(),
            future: BTreeMap::new(),
            early: VecDeque::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            removed: false,
            asked_at: None,
            heard: BTreeMap::new(),
            kept: VecDeque::new(),
            kept_new: Vec::new(),
            kept_gone: Vec::new(),
            syncs_answered: BTreeMap::new(),
            sync_due: true,
            last_sync: None,
            now: None,
            add_again: BTreeMap::new(),
            rng: ChaCha20Rng::from_seed(seed),
            out: VecDeque::new(),
        }
    }

    /// A new group chat with `local` its only member and admin; `seed`
    /// seeds the machine's random generator (group id, secrets, nonces).
    pub fn create(local: &InstallationIdentity, name: Option<String>, seed: [u8; 32]) -> Result<Self, SessionError> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut group_id = [0u8; 16];
        rng.fill_bytes(&mut group_id);
        let group = GroupMls::create(local, &group_id)?;
        let mut m = Self::with_group(local, group, name, seed);
        m.rng = rng;
        let secret = GroupEpochSecret::generate(&mut m.rng);
        let key = m.group.message_key(&secret)?;
        m.keys.push_back(key);
        Ok(m)
    }

    /// Joins from an admin's `group-welcome` received from `from`, with
    /// the private parts of the KeyPackage it names (redeemed by the
    /// caller from the pool, as handed out to `from`). Refused unless
    /// `from` is an admin of the group it joins.
    pub fn join(
        local: &InstallationIdentity,
        from: InstallationId,
        welcome: &GroupWelcome,
        secrets: &KeyPackageSecrets,
        seed: [u8; 32],
    ) -> Result<Self, SessionError> {
        let group = GroupMls::join(local, secrets, welcome.welcome.as_bytes())?;
        if group.group_id() != welcome.group_id.as_bytes() || group.epoch() != welcome.epoch {
            return Err(SessionError::Cascade(strata_cascade::CascadeError::PeerProtocol {
                layer: "MLS",
                detail: "Welcome for another group or epoch than announced".into(),
            }));
        }
        if !group.is_admin(from)? {
            return Err(SessionError::Cascade(strata_cascade::CascadeError::PeerProtocol {
                layer: "MLS",
                detail: "Welcome from a member that is not an admin".into(),
            }));
        }
        let name = welcome.name.as_ref().map(|n| n.as_str().to_owned());
        let mut m = Self::with_group(local, group, name, seed);
        let secret = GroupEpochSecret::from_bytes(&welcome.epoch_secret.0)?;
        let key = m.group.message_key(&secret)?;
        m.keys.push_back(key);
        m.emit(GroupEvent::Joined {
            epoch: welcome.epoch,
            name: m.name.clone(),
            by: from,
        });
        // Commits made after the Welcome may have overtaken it (and been
        // dropped before this machine existed): ask the welcomer.
        m.ask_catch_up(from)?;
        Ok(m)
    }

    /// Takes the state of `joined`, this member's join of the same group
    /// from a later Welcome of `from` (the sequencer added it again,
    /// [`GroupCommand::AddAgain`]); the old state, behind beyond every
    /// commit log, is left, and its kept messages' rows are to be deleted
    /// ([`GroupMachine::pending_kept`]). Refused (nothing changes) unless
    /// `from` is an admin as this member last knew the group, and the
    /// Welcome is of a later epoch: a peer that is not an admin cannot
    /// take a member out of its group with a group of its own.
    pub fn adopt(&mut self, from: InstallationId, mut joined: GroupMachine) -> Result<(), SessionError> {
        if joined.group_id() != self.group_id() {
            return Err(SessionError::Misuse("a join of another group"));
        }
        if !self.group.is_admin(from)? {
            self.refuse(
                Some(from),
                "a Welcome for this group from a member that was not its admin",
            );
            return Ok(());
        }
        if joined.epoch() <= self.epoch() {
            self.refuse(Some(from), "a Welcome for this group of an epoch already reached");
            return Ok(());
        }
        joined.kept_gone = self.stored_kept();
        let mut out = std::mem::take(&mut self.out);
        out.append(&mut joined.out);
        joined.out = out;
        *self = joined;
        Ok(())
    }

    /// The group id.
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch()
    }

    /// The chat's name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The members' installations.
    pub fn members(&self) -> Result<Vec<InstallationId>, SessionError> {
        Ok(self.group.members()?.iter().map(|m| m.installation_id).collect())
    }

    /// The admins.
    pub fn admins(&self) -> Result<Vec<InstallationId>, SessionError> {
        Ok(self.group.admins()?)
    }

    /// Whether this member was removed.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<GroupOutput> {
        self.out.pop_front()
    }

    /// Whether outputs wait to be polled.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Runs one step. An `Err` is local (a bug, or a command this member
    /// may not give); peer input never makes it fail.
    pub fn handle(&mut self, input: GroupInput<'_>) -> Result<(), SessionError> {
        if self.removed {
            if let GroupInput::Command(_) = input {
                return Err(SessionError::Misuse("removed from the group"));
            }
            return Ok(());
        }
        match input {
            GroupInput::Pairwise { from, pdu } => self.on_pairwise(from, pdu),
            GroupInput::Message(m) => self.on_message(m),
            GroupInput::Command(c) => self.on_command(c),
            GroupInput::Tick(now) => self.on_tick(now),
        }
    }

    fn on_command(&mut self, command: GroupCommand) -> Result<(), SessionError> {
        match command {
            GroupCommand::Send(content) => self.send(&content),
            GroupCommand::Add(invitees) => self.add(&invitees),
            GroupCommand::AskToAdd { member, address } => self.ask_to_add(member, address),
            GroupCommand::Remove(members) => self.remove(&members),
            GroupCommand::Leave => self.leave(),
            GroupCommand::SetAdmins(admins) => {
                if !self.is_sequencer()? {
                    return Err(SessionError::Misuse("only the first admin changes the admin list"));
                }
                let commit = self.group.set_admins(&admins)?;
                self.committed(commit, &[], &[], &[])
            }
            GroupCommand::Update => self.update(),
            GroupCommand::AddAgain(invitee) => self.add_again(&invitee),
        }
    }

    fn on_pairwise(&mut self, from: InstallationId, pdu: &Pdu) -> Result<(), SessionError> {
        match pdu {
            Pdu::GroupCommit(c) if c.group_id.as_bytes() == self.group_id() => self.on_commit(from, c.clone()),
            Pdu::GroupCatchUpRequest(r) if r.group_id.as_bytes() == self.group_id() => {
                self.on_catch_up_request(from, r.epoch)
            }
            Pdu::GroupCatchUp(c) if c.group_id.as_bytes() == self.group_id() => {
                let before = self.epoch();
                // The question is answered: later early commits may ask
                // again (unless the answer says nobody can help).
                if c.complete || !c.commits.is_empty() {
                    self.asked_at = None;
                }
                for commit in c.commits.iter() {
                    self.on_commit(from, commit.clone())?;
                }
                if !c.complete && !self.removed {
                    if c.commits.is_empty() {
                        self.refuse(
                            Some(from),
                            "behind beyond the commit log: the sequencer adds this member again",
                        );
                    } else if self.epoch() > before {
                        // A batch brought us on: ask for the next one.
                        self.ask_catch_up(from)?;
                    }
                }
                Ok(())
            }
            Pdu::GroupProposal(p) if p.group_id.as_bytes() == self.group_id() => self.on_proposal(from, p),
            Pdu::GroupSync(s) if s.group_id.as_bytes() == self.group_id() => self.on_sync(from, s),
            // A message sent again in answer to a `group-sync`.
            Pdu::GroupMessage(m) if m.group_id.as_bytes() == self.group_id() => self.on_message(m),
            Pdu::GroupWelcome(_) => {
                self.refuse(Some(from), "a Welcome for a group this member is in");
                Ok(())
            }
            _ => {
                self.refuse(Some(from), "not a PDU of this group");
                Ok(())
            }
        }
    }

    fn emit(&mut self, event: GroupEvent) {
        self.out.push_back(GroupOutput::Event(event));
    }

    fn refuse(&mut self, from: Option<InstallationId>, reason: &str) {
        tracing::debug!(group = %hex::encode(self.group_id()), ?from, reason, "group input refused");
        self.emit(GroupEvent::Refused {
            from,
            reason: reason.to_owned(),
        });
    }

    /// The other members.
    fn others(&self) -> Result<Vec<InstallationId>, SessionError> {
        Ok(self.members()?.into_iter().filter(|m| *m != self.local).collect())
    }

    /// Keeps `key` as the current epoch's, dropping those out of reach.
    fn push_key(&mut self, key: GroupMessageKey) {
        self.keys.push_back(key);
        while self.keys.len() > usize::try_from(MAX_PAST_EPOCHS).unwrap_or(usize::MAX) + 1 {
            self.keys.pop_front();
        }
        if let Some(oldest) = self.keys.front().map(GroupMessageKey::epoch) {
            self.forget_before(oldest);
        }
        // Messages of the new epoch may have been lost before it came.
        self.sync_due = true;
    }

    /// Remembers message id `id`; false when it was seen before.
    fn first_sight(&mut self, id: &str) -> bool {
        if !self.seen.insert(id.to_owned()) {
            return false;
        }
        self.seen_order.push_back(id.to_owned());
        if self.seen_order.len() > SEEN_MESSAGES
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}
