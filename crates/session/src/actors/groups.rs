//! Group chats on the node: one [`GroupActor`] per group, owning its
//! [`GroupMachine`] and its sealed record in the store, and the node's
//! routing around them.
//!
//! - Pairwise group PDUs travel as [`Content::GroupPdu`] messages of the
//!   pair session with the member (stored, acknowledged, delivered once,
//!   inside the cascade); the node takes them out of the session's events
//!   and hands them to the group, named by the installation the session
//!   authenticated. A `group-welcome` for a group this node is not in
//!   starts one, with the KeyPackage private parts the pool held for the
//!   welcomer.
//! - `group-message` frames arrive on the transport beside the pair
//!   frames; the node hands them to the group they name before any pair
//!   session sees them. Broadcasts go out as one publish on the group's
//!   topic ([`group_topic`]) when the transport has gossip, else as one
//!   frame per member link this node has; members without a link get them
//!   from the admin, which passes every member's message on (not on
//!   gossip: everyone hears the one publish). A node subscribes to the
//!   topic of every group it is in, and unsubscribes when it is removed.
//! - Every second the group's clock ticks ([`GroupInput::Tick`]): its
//!   `group-sync` rounds recover the group messages lost on the way.
//! - After every step the group's record is written (one transaction),
//!   then its outputs go: pairwise PDUs through the member's pair session,
//!   broadcasts to the transport, events to subscribers as
//!   [`NodeEventKind::Group`].

use super::*;
use crate::content::Content;
use crate::group::{GroupCommand, GroupEvent, GroupInput, GroupMachine, GroupOutput, Invitee};
use std::time::Instant;

/// What a [`GroupActor`] is asked to do.
#[derive(Debug)]
pub enum GroupStepInput {
    /// A group PDU from a member's pair session.
    Pairwise {
        /// The installation the pair session authenticated.
        from: strata_cascade::InstallationId,
        /// The PDU.
        pdu: strata_proto::Pdu,
    },
    /// A group message from the transport.
    Message(strata_proto::GroupMessage),
    /// A request of the local user.
    Command(GroupCommand),
}

/// One step of a group.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct GroupStep(pub GroupStepInput);

/// A group's outputs, for the node to send.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromGroup {
    /// The group id, hex.
    pub group: String,
    /// What to send and tell, in order.
    pub outputs: Vec<GroupOutput>,
}

/// One group chat's actor.
pub struct GroupActor {
    id: String,
    machine: GroupMachine,
    store: Arc<dyn Durable + Send + Sync>,
    node: Recipient<FromGroup>,
}

impl GroupActor {
    /// An actor for `machine`, persisting to `store`, sending through
    /// `node`.
    pub fn new(machine: GroupMachine, store: Arc<dyn Durable + Send + Sync>, node: Recipient<FromGroup>) -> Self {
        Self {
            id: hex::encode(machine.group_id()),
            machine,
            store,
            node,
        }
    }

    /// Writes the record, then hands the outputs to the node (waiting for
    /// room in its mailbox, as a pair session does).
    fn flush(&mut self, ctx: &mut Context<Self>) -> Result<(), SessionError> {
        let state = self.machine.export()?;
        let kept = self.machine.pending_kept()?;
        let id = self.id.clone();
        durable::write(&*self.store, |w| {
            w.set_group(&id, state.as_bytes())?;
            for (key, row) in &kept.put {
                w.put_group_message(&id, key, row)?;
            }
            for key in &kept.delete {
                w.delete_group_message(&id, key)?;
            }
            Ok(())
        })?;
        self.machine.kept_stored();
        let mut outputs = Vec::new();
        while let Some(out) = self.machine.poll_output() {
            outputs.push(out);
        }
        if !outputs.is_empty() {
            let send = self.node.send(FromGroup {
                group: self.id.clone(),
                outputs,
            });
            ctx.wait(
                async move {
                    let _ = send.await;
                }
                .into_actor(self),
            );
        }
        Ok(())
    }
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        // A joined group's first outputs (its catch-up request) go now.
        if let Err(e) = self.flush(ctx) {
            tracing::warn!(group = %self.id, error = %e, "cannot store a group");
        }
        // The machine's clock: `group-sync` rounds.
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            let ticked = act.machine.handle(GroupInput::Tick(Instant::now()));
            // Most ticks do nothing: the record is written when one did.
            if act.machine.has_output()
                && let Err(e) = ticked.and_then(|()| act.flush(ctx))
            {
                tracing::warn!(group = %act.id, error = %e, "a group's sync round failed");
            }
        });
    }
}

impl Handler<GroupStep> for GroupActor {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, GroupStep(input): GroupStep, ctx: &mut Self::Context) -> Self::Result {
        let result = match input {
            GroupStepInput::Pairwise { from, pdu } => self.machine.handle(GroupInput::Pairwise { from, pdu: &pdu }),
            GroupStepInput::Message(m) => self.machine.handle(GroupInput::Message(&m)),
            GroupStepInput::Command(c) => self.machine.handle(GroupInput::Command(c)),
        };
        self.flush(ctx)?;
        result
    }
}

/// What a group is: its name, epoch, members and admins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group id, hex.
    pub group: String,
    /// The chat's name.
    pub name: Option<String>,
    /// The current epoch.
    pub epoch: u64,
    /// The members' installations, hex.
    pub members: Vec<String>,
    /// The admins' installations, hex.
    pub admins: Vec<String>,
}

/// Send the file at `path` to a group (at most
/// [`crate::group_files::MAX_GROUP_FILE_BYTES`]); answers its transfer id
/// once every chunk is sealed and on its way.
#[derive(Debug, Message)]
#[rtype(result = "Reply<String>")]
pub struct SendGroupFile {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The group id, hex.
    pub group: String,
    /// The file.
    pub path: PathBuf,
}

/// Ask a group what it is.
#[derive(Debug, Message)]
#[rtype(result = "Result<GroupSummary, SessionError>")]
pub struct DescribeGroup;

impl Handler<DescribeGroup> for GroupActor {
    type Result = Result<GroupSummary, SessionError>;

    fn handle(&mut self, _: DescribeGroup, _ctx: &mut Self::Context) -> Self::Result {
        let hex = |ids: Vec<strata_cascade::InstallationId>| ids.iter().map(|i| i.to_hex()).collect();
        Ok(GroupSummary {
            group: self.id.clone(),
            name: self.machine.name().map(str::to_owned),
            epoch: self.machine.epoch(),
            members: hex(self.machine.members()?),
            admins: hex(self.machine.admins()?),
        })
    }
}

impl Handler<Shutdown> for GroupActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// This member's join of its group from a later Welcome of `from`: it was
/// added again ([`GroupMachine::adopt`]).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct Rejoin {
    /// Who sent the Welcome.
    pub from: strata_cascade::InstallationId,
    /// The joined state.
    pub machine: GroupMachine,
}

impl Handler<Rejoin> for GroupActor {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, Rejoin { from, machine }: Rejoin, ctx: &mut Self::Context) -> Self::Result {
        let adopted = self.machine.adopt(from, machine);
        self.flush(ctx)?;
        adopted
    }
}

/// Start a new group chat; answered with its id (hex).
#[derive(Debug, Message)]
#[rtype(result = "Reply<String>")]
pub struct CreateGroup {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The chat's name.
    pub name: Option<String>,
}

/// A request to one group (send, remove, leave, hand the admin role over,
/// update).
#[derive(Debug, Message)]
#[rtype(result = "Reply<()>")]
pub struct GroupRequest {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The group id, hex.
    pub group: String,
    /// What.
    pub command: GroupCommand,
}

/// Admin: add the peer at an address (a session with it must be
/// established): claims one of its KeyPackages over the session, then
/// commits the add.
#[derive(Debug, Message)]
#[rtype(result = "Reply<()>")]
pub struct AddToGroup {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The group id, hex.
    pub group: String,
    /// The peer to add.
    pub peer: PeerAddr,
}

/// What one group chat is ([`GroupSummary`]).
#[derive(Debug, Message)]
#[rtype(result = "Reply<GroupSummary>")]
pub struct GroupInfo {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The group id, hex.
    pub group: String,
}

/// The group chats this node is in: id (hex) → name.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(String, Option<String>)>")]
pub struct ListGroups;

/// The group chats of a node.
#[derive(Default)]
pub(super) struct Groups {
    pub(super) actors: BTreeMap<String, (Addr<GroupActor>, Option<String>)>,
    /// Group files being received (made with the downloads directory on
    /// first use).
    files: Option<crate::group_files::GroupFiles>,
    /// Pair messages that carry group PDUs, by peer and message id: their
    /// `delivered` events are the group's business, not the user's (the
    /// last [`INTERNAL_KEPT`]). A `queued` event is filtered too when the
    /// session's reply naming the message comes first, which is not
    /// guaranteed: it may reach the event stream.
    internal: BTreeSet<(PeerAddr, String)>,
    internal_order: VecDeque<(PeerAddr, String)>,
}

/// Group PDU messages remembered to keep their events from subscribers.
const INTERNAL_KEPT: usize = 4096;

impl Groups {
    pub(super) fn remember(&mut self, peer: PeerAddr, message_id: String) {
        let key = (peer, message_id);
        if self.internal.insert(key.clone()) {
            self.internal_order.push_back(key);
        }
        while self.internal_order.len() > INTERNAL_KEPT {
            if let Some(old) = self.internal_order.pop_front() {
                self.internal.remove(&old);
            }
        }
    }

    /// Whether `event` is the queueing or delivery of a group PDU (which
    /// subscribers do not see).
    pub(super) fn is_internal(&self, event: &NodeEvent) -> bool {
        match &event.kind {
            NodeEventKind::Session(Event::Queued { message_id } | Event::Delivered { message_id }) => {
                self.internal.contains(&(event.peer.clone(), message_id.clone()))
            }
            _ => false,
        }
    }
}

/// A fresh seed for a machine's random generator.
pub(super) fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    seed
}

/// Whether `frame` is a `group-message` PDU (the encoder writes `type`
/// first), so the node routes it to its group rather than a pair session.
pub(super) fn is_group_message(frame: &[u8]) -> bool {
    frame.starts_with(br#"{"type":"group-message""#)
}

/// The group PDU a pair session delivered, if the event is one.
pub(super) fn group_pdu(event: &NodeEvent) -> Option<Result<strata_proto::Pdu, String>> {
    match &event.kind {
        NodeEventKind::Session(Event::Received {
            content: Content::GroupPdu { data },
            ..
        }) => Some(strata_proto::Pdu::decode(data).map_err(|e| e.to_string())),
        _ => None,
    }
}

/// Claims one KeyPackage of `peer` over the session with it: the invitee
/// to add.
async fn claim_invitee<T: Transport>(
    node: Addr<Node<T>>,
    store: &dyn Durable,
    request_id: RequestId,
    peer: PeerAddr,
) -> Result<Invitee, SessionError> {
    let claimed = node
        .send(ClaimKeyPackage { request_id, peer })
        .await
        .map_err(|_| SessionError::Unavailable("node"))?
        .result?;
    invitee(store, &claimed.installation, now().unix_ms / 1000)
}

/// The invitee for the peer `installation` (hex): one of its stored
/// KeyPackages (as claimed) and its pinned identity.
pub(super) fn invitee(store: &dyn Durable, installation: &str, now_s: u64) -> Result<Invitee, SessionError> {
    let package = durable::write(store, |w| w.take_peer_key_package(installation, now_s))?
        .ok_or(SessionError::Misuse("no KeyPackage of the peer to add"))?;
    let contact = durable::read(store, |r| r.contact(installation))?
        .ok_or(SessionError::Misuse("the peer to add is not a contact"))?;
    let identity_key = strata_cascade::IdentityKey::decode(&contact.identity_key)
        .map_err(|_| SessionError::Internal("a contact's identity key".into()))?;
    let installation_id: strata_cascade::InstallationId = installation
        .parse()
        .map_err(|_| SessionError::Internal("a contact's installation id".into()))?;
    Ok(Invitee {
        peer: strata_cascade::PeerIdentity {
            identity_key,
            installation_id,
        },
        key_package: package.key_package.bytes,
        key_ref: package.key_package.key_ref,
    })
}

/// The content topic a group's messages are published on over gossip:
/// `/strata/1/group-<id>/proto` (23/WAKU2-TOPICS). Relays learn the group
/// id and the sizes and times of its messages, not who sent them nor what
/// they say (the group seals them).
pub fn group_topic(group: &str) -> Topic {
    Topic::new(format!("/strata/1/group-{group}/proto"))
}

/// The `peer` of a group's events: `group/<id>`.
fn group_addr(group: &str) -> PeerAddr {
    PeerAddr::new(format!("group/{group}"))
}

/// A group event for subscribers.
pub(super) fn group_event(group: &str, event: GroupEvent) -> NodeEvent {
    NodeEvent {
        peer: group_addr(group),
        kind: NodeEventKind::Group {
            group: group.to_owned(),
            event,
        },
    }
}

impl<T: Transport> Node<T> {
    /// Sends `msg` to `addr` without waiting for it (the node never
    /// waits) and without dropping it on a full mailbox: what a group is
    /// handed was acknowledged to its sender already.
    pub(super) fn forward<A, M>(&self, addr: Addr<A>, msg: M, ctx: &mut Context<Self>)
    where
        A: Actor<Context = Context<A>> + Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        ctx.spawn(addr.send(msg).into_actor(self).map(|sent, _, _| {
            if sent.is_err() {
                tracing::debug!("a group input or output found its actor stopped");
            }
        }));
    }

    /// Starts an actor for every group chat in the store.
    pub(super) fn restore_groups(&mut self, ctx: &mut Context<Self>) {
        let store: Arc<dyn Durable> = self.setup.store.clone();
        let ids = match durable::read(&*store, |r| r.groups()) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the group chats");
                return;
            }
        };
        for id in ids {
            let restored = durable::read(&*store, |r| Ok((r.group(&id)?, r.group_messages(&id)?)))
                .map_err(SessionError::from)
                .and_then(|(bytes, kept)| {
                    let bytes = bytes.ok_or(SessionError::Misuse("group vanished"))?;
                    GroupMachine::restore(&self.setup.local, &bytes, &kept, seed())
                });
            match restored {
                Ok(machine) if !machine.is_removed() => {
                    self.start_group(machine, ctx);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(group = %id, error = %e, "cannot restore a group"),
            }
        }
    }

    fn start_group(&mut self, machine: GroupMachine, ctx: &mut Context<Self>) -> String {
        let id = hex::encode(machine.group_id());
        if self.broadcast
            && let Some(transport) = self.transport_actor.clone()
        {
            self.forward(transport, SubscribeTopic(group_topic(&id)), ctx);
        }
        let name = machine.name().map(str::to_owned);
        let actor = GroupActor::new(machine, self.setup.store.clone(), ctx.address().recipient()).start();
        self.groups.actors.insert(id.clone(), (actor, name));
        id
    }

    /// The installation of the established session at `peer`.
    pub(super) fn installation_at(&self, peer: &PeerAddr) -> Option<strata_cascade::InstallationId> {
        self.stored.get(peer).copied().or_else(|| {
            self.status
                .get(peer)
                .and_then(|s| s.installation.as_deref())
                .and_then(|i| i.parse().ok())
        })
    }

    /// Where the session with each installation is (built once per batch
    /// of a group's outputs, not once per member).
    pub(super) fn addresses(&self) -> BTreeMap<strata_cascade::InstallationId, PeerAddr> {
        let mut map: BTreeMap<_, _> = self
            .status
            .iter()
            .filter_map(|(p, s)| Some((s.installation.as_deref()?.parse().ok()?, p.clone())))
            .collect();
        // A stored session names its installation for sure.
        map.extend(self.stored.iter().map(|(p, i)| (*i, p.clone())));
        map
    }

    /// A group PDU a pair session delivered from `peer`.
    pub(super) fn group_pdu(
        &mut self,
        peer: &PeerAddr,
        pdu: Result<strata_proto::Pdu, String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(from) = self.installation_at(peer) else {
            tracing::debug!(%peer, "group PDU from a session with no installation");
            return;
        };
        let pdu = match pdu {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "undecodable group PDU");
                return;
            }
        };
        let group = match &pdu {
            strata_proto::Pdu::GroupWelcome(w) => hex::encode(w.group_id.as_bytes()),
            strata_proto::Pdu::GroupCommit(c) => hex::encode(c.group_id.as_bytes()),
            strata_proto::Pdu::GroupProposal(p) => hex::encode(p.group_id.as_bytes()),
            strata_proto::Pdu::GroupCatchUpRequest(r) => hex::encode(r.group_id.as_bytes()),
            strata_proto::Pdu::GroupCatchUp(c) => hex::encode(c.group_id.as_bytes()),
            strata_proto::Pdu::GroupSync(s) => hex::encode(s.group_id.as_bytes()),
            // Sent again in answer to a `group-sync`.
            strata_proto::Pdu::GroupMessage(m) => hex::encode(m.group_id.as_bytes()),
            _ => {
                tracing::debug!(%peer, "not a pairwise group PDU");
                return;
            }
        };
        let actor = self.groups.actors.get(&group).map(|(a, _)| a.clone());
        let strata_proto::Pdu::GroupWelcome(welcome) = pdu else {
            match actor {
                Some(actor) => self.forward(actor, GroupStep(GroupStepInput::Pairwise { from, pdu }), ctx),
                None => tracing::debug!(%peer, %group, "group PDU for a group this node is not in"),
            }
            return;
        };
        let machine = match self.join_group(from, &welcome) {
            Ok(machine) => machine,
            Err(e) => {
                tracing::warn!(%peer, %group, error = %e, "cannot join a group");
                return;
            }
        };
        match actor {
            // Added again (it was behind beyond every commit log): its
            // actor takes the new state, if the Welcome is its admin's.
            Some(actor) => self.forward(actor, Rejoin { from, machine }, ctx),
            None => {
                self.start_group(machine, ctx);
            }
        }
    }

    /// The sequencer's owner adds `member` (at `peer`) again: a fresh
    /// KeyPackage claimed over the session with it, then the commit.
    fn add_again(
        &mut self,
        group: &str,
        member: strata_cascade::InstallationId,
        peer: Option<PeerAddr>,
        ctx: &mut Context<Self>,
    ) {
        let (Some(peer), Some((actor, _))) = (peer, self.groups.actors.get(group)) else {
            tracing::warn!(%group, member = %member.to_hex(), "no session with a member to add again");
            return;
        };
        let (actor, node, store) = (actor.clone(), ctx.address(), self.setup.store.clone());
        let group = group.to_owned();
        ctx.spawn(
            async move {
                let invitee = claim_invitee(node, &*store, 0, peer).await?;
                actor
                    .send(GroupStep(GroupStepInput::Command(GroupCommand::AddAgain(invitee))))
                    .await
                    .map_err(|_| SessionError::Unavailable("group"))?
            }
            .into_actor(self)
            .map(move |result, _, _| {
                if let Err(e) = result {
                    tracing::warn!(%group, member = %member.to_hex(), error = %e, "cannot add a member again");
                }
            }),
        );
    }

    /// Joins from a Welcome, with the private parts the pool held for the
    /// welcomer's claim.
    fn join_group(
        &self,
        from: strata_cascade::InstallationId,
        welcome: &strata_proto::GroupWelcome,
    ) -> Result<GroupMachine, SessionError> {
        let now_s = now().unix_ms / 1000;
        let key_ref = welcome.key_package_ref.as_bytes().to_vec();
        let from_hex = from.to_hex();
        let secrets = durable::write(&*self.setup.store, |w| w.redeem_key_package(&from_hex, &key_ref, now_s))?.ok_or(
            SessionError::Misuse("a Welcome for a KeyPackage not handed out to its sender"),
        )?;
        let secrets = strata_cascade::KeyPackageSecrets::from_bytes(secrets.as_bytes())?;
        GroupMachine::join(&self.setup.local, from, welcome, &secrets, seed())
    }

    /// A `group-message` frame from the transport: from a link, or
    /// published on a group's topic (by a sender gossip may not name).
    pub(super) fn group_message(&mut self, peer: Option<&PeerAddr>, frame: &[u8]) {
        let message = match strata_proto::Pdu::decode(frame) {
            Ok(strata_proto::Pdu::GroupMessage(m)) => m,
            _ => {
                tracing::debug!(?peer, "undecodable group message");
                return;
            }
        };
        match self.groups.actors.get(&hex::encode(message.group_id.as_bytes())) {
            // Anyone on a link can send these: a full mailbox drops them
            // (never a queue of waiting sends), as a lossy link would.
            Some((actor, _)) => {
                if actor.try_send(GroupStep(GroupStepInput::Message(message))).is_err() {
                    tracing::debug!(?peer, "group mailbox full; group message dropped");
                }
            }
            None => tracing::debug!(?peer, "group message for a group this node is not in"),
        }
    }
}

impl<T: Transport> Handler<FromGroup> for Node<T> {
    type Result = ();

    fn handle(&mut self, FromGroup { group, outputs }: FromGroup, ctx: &mut Self::Context) {
        let addresses = self.addresses();
        for out in outputs {
            match out {
                GroupOutput::Pairwise { to, pdu } => {
                    let Some(peer) = addresses.get(&to).cloned() else {
                        tracing::warn!(%group, member = %to.to_hex(), "no session with a group member");
                        continue;
                    };
                    let content = Content::GroupPdu { data: pdu.encode() };
                    match self.session(&peer, ctx) {
                        Ok(s) => {
                            let send = s.send(SessionRequest::Command(Command::Send(content)));
                            ctx.spawn(send.into_actor(self).map(move |sent, act, _| match sent {
                                Ok(Ok(Some(id))) => act.groups.remember(peer, id),
                                Ok(Err(e)) => tracing::warn!(%peer, error = %e, "a group PDU was not queued"),
                                _ => {}
                            }));
                        }
                        Err(e) => tracing::warn!(%group, %peer, error = %e, "cannot reach a group member"),
                    }
                }
                GroupOutput::Broadcast { message, to, forwarded } => {
                    let frame = Bytes::from(strata_proto::Pdu::GroupMessage(message).encode());
                    let Some(transport) = self.transport_actor.clone() else {
                        continue;
                    };
                    if self.broadcast {
                        // Every member hears the sender's one publish.
                        if !forwarded {
                            let topic = group_topic(&group);
                            self.forward(transport, Publish { topic, frame }, ctx);
                        }
                        continue;
                    }
                    for member in to {
                        if let Some(peer) = addresses.get(&member).cloned() {
                            let frames = vec![frame.clone()];
                            self.forward(transport.clone(), Transmit { to: peer, frames }, ctx);
                        }
                    }
                }
                GroupOutput::Event(event) => {
                    if let GroupEvent::Received {
                        sender,
                        content: chunk @ Content::FileChunk { .. },
                        ..
                    } = &event
                    {
                        self.group_file_chunk(&group, *sender, chunk, ctx);
                    }
                    if let GroupEvent::Joined { by, .. } = &event {
                        self.meet_members(&group, *by, ctx);
                    }
                    if let GroupEvent::AddAgain { member } = &event {
                        self.add_again(&group, *member, addresses.get(member).cloned(), ctx);
                    }
                    // A member's own new device: the node adds it.
                    if self.add_requested(&group, &event, ctx) {
                        continue;
                    }
                    if event == GroupEvent::Removed
                        && let Some((actor, _)) = self.groups.actors.remove(&group)
                    {
                        self.forward(actor, Shutdown, ctx);
                        if self.broadcast
                            && let Some(transport) = self.transport_actor.clone()
                        {
                            self.forward(transport, UnsubscribeTopic(group_topic(&group)), ctx);
                        }
                    }
                    self.publish(group_event(&group, event), ctx);
                }
            }
        }
    }
}

impl<T: Transport> Handler<CreateGroup> for Node<T> {
    type Result = MessageResult<CreateGroup>;

    fn handle(&mut self, msg: CreateGroup, ctx: &mut Self::Context) -> Self::Result {
        let result = GroupMachine::create(&self.setup.local, msg.name, seed()).map(|m| self.start_group(m, ctx));
        MessageResult(Reply {
            request_id: msg.request_id,
            result,
        })
    }
}

impl<T: Transport> Node<T> {
    /// Writes a chunk of a group file; tells subscribers when the file is
    /// whole. A chunk that does not fit its file is dropped.
    fn group_file_chunk(
        &mut self,
        group: &str,
        sender: strata_cascade::InstallationId,
        chunk: &Content,
        ctx: &mut Context<Self>,
    ) {
        let downloads = self.setup.downloads.clone();
        let files = self
            .groups
            .files
            .get_or_insert_with(|| crate::group_files::GroupFiles::new(downloads));
        match files.received(chunk) {
            Ok(Some(file)) => {
                let event = NodeEvent {
                    peer: group_addr(group),
                    kind: NodeEventKind::GroupFile {
                        group: group.to_owned(),
                        sender,
                        file_id: file.file_id,
                        name: file.name,
                        path: file.path,
                    },
                };
                self.publish(event, ctx);
            }
            Ok(None) => {}
            Err(reason) => tracing::warn!(%group, sender = %sender.to_hex(), %reason, "group file chunk dropped"),
        }
    }
}

impl<T: Transport> Handler<SendGroupFile> for Node<T> {
    type Result = ResponseFuture<Reply<String>>;

    fn handle(&mut self, msg: SendGroupFile, _ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        let actor = self.groups.actors.get(&msg.group).map(|(a, _)| a.clone());
        Box::pin(async move {
            let result = async {
                let actor = actor.ok_or_else(|| SessionError::UnknownPeer(format!("group {}", msg.group)))?;
                let (file_id, chunks) = crate::group_files::chunks(&msg.path)?;
                for chunk in chunks {
                    actor
                        .send(GroupStep(GroupStepInput::Command(GroupCommand::Send(chunk))))
                        .await
                        .unwrap_or(Err(SessionError::Unavailable("group")))?;
                }
                Ok(file_id)
            }
            .await;
            Reply { request_id, result }
        })
    }
}

impl<T: Transport> Handler<GroupRequest> for Node<T> {
    type Result = ResponseFuture<Reply<()>>;

    fn handle(&mut self, msg: GroupRequest, _ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        let actor = self.groups.actors.get(&msg.group).map(|(a, _)| a.clone());
        Box::pin(async move {
            let result = match actor {
                Some(a) => a
                    .send(GroupStep(GroupStepInput::Command(msg.command)))
                    .await
                    .unwrap_or(Err(SessionError::Unavailable("group"))),
                None => Err(SessionError::UnknownPeer(format!("group {}", msg.group))),
            };
            Reply { request_id, result }
        })
    }
}

impl<T: Transport> Handler<AddToGroup> for Node<T> {
    type Result = ResponseActFuture<Self, Reply<()>>;

    fn handle(&mut self, msg: AddToGroup, ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        let node = ctx.address();
        let actor = self.groups.actors.get(&msg.group).map(|(a, _)| a.clone());
        let store = self.setup.store.clone();
        Box::pin(
            async move {
                let actor = actor.ok_or_else(|| SessionError::UnknownPeer(format!("group {}", msg.group)))?;
                let invitee = claim_invitee(node, &*store, request_id, msg.peer).await?;
                actor
                    .send(GroupStep(GroupStepInput::Command(GroupCommand::Add(vec![invitee]))))
                    .await
                    .map_err(|_| SessionError::Unavailable("group"))?
            }
            .into_actor(self)
            .map(move |result, _, _| Reply { request_id, result }),
        )
    }
}

impl<T: Transport> Handler<ListGroups> for Node<T> {
    type Result = MessageResult<ListGroups>;

    fn handle(&mut self, _: ListGroups, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.groups
                .actors
                .iter()
                .map(|(id, (_, name))| (id.clone(), name.clone()))
                .collect(),
        )
    }
}

impl<T: Transport> Handler<GroupInfo> for Node<T> {
    type Result = ResponseFuture<Reply<GroupSummary>>;

    fn handle(&mut self, msg: GroupInfo, _ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        let actor = self.groups.actors.get(&msg.group).map(|(a, _)| a.clone());
        Box::pin(async move {
            let result = match actor {
                Some(a) => a
                    .send(DescribeGroup)
                    .await
                    .unwrap_or(Err(SessionError::Unavailable("group"))),
                None => Err(SessionError::UnknownPeer(format!("group {}", msg.group))),
            };
            Reply { request_id, result }
        })
    }
}
