//! The node's multi-device part: device lists in and out, fan-out of a
//! text to an account, sent copies, partitioned devices. The rules are in
//! [`crate::devices`]; this file does their I/O.

use std::path::PathBuf;

use strata_cascade::devices::{VerifiedDeviceList, verify_device_list};
use strata_cascade::{IdentityKey, InstallationId};

use super::*;
use crate::content::Content;
use crate::devices::{Admitted, DeviceBook};

/// Send a text or a file to an account: to its devices and, as a sent
/// copy, to this account's other devices (see
/// [`crate::devices`]). Answered once every copy is queued (a file: once
/// its chunks are on their way), or could not be.
#[derive(Debug, Message)]
#[rtype(result = "Reply<Vec<FannedOut>>")]
pub struct SendToAccount {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The account's identity key (serialized).
    pub account: Vec<u8>,
    /// What.
    pub message: AccountMessage,
}

/// What a [`SendToAccount`] sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountMessage {
    /// A text.
    Text(String),
    /// The file at this path, streamed to each device of the account and,
    /// as a sent copy, to this account's other devices.
    File(PathBuf),
}

/// One copy of a [`SendToAccount`] text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FannedOut {
    /// The installation it went to.
    pub installation: InstallationId,
    /// Its session's address.
    pub peer: PeerAddr,
    /// The message id it was queued under, or why it could not be.
    pub outcome: Result<String, String>,
    /// A device of this account (the copy is a `sent-copy`).
    pub own_device: bool,
}

/// This account's devices as this node knows them.
#[derive(Debug, Message)]
#[rtype(result = "Result<DeviceList, SessionError>")]
pub struct ListDevices;

/// This account's device list, with what the node saw of each device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    /// The list's version.
    pub version: u64,
    /// Whether the list names this installation (false: it was removed).
    pub paired: bool,
    /// The listed devices.
    pub devices: Vec<DeviceStatus>,
}

/// One listed device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Its installation.
    pub installation: InstallationId,
    /// This installation.
    pub this: bool,
    /// When this node last heard from it, Unix ms.
    pub last_active_ms: Option<u64>,
}

/// Change this account's device list: add or remove one installation.
/// The new list is stored, then sent to every peer with a ready session
/// (a removed device included, so it knows). Answered with its version.
#[derive(Debug, Message)]
#[rtype(result = "Reply<u64>")]
pub struct ChangeDevices {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// Installations to add.
    pub add: Vec<InstallationId>,
    /// Installations to remove.
    pub remove: Vec<InstallationId>,
}

/// Open a pairing offer on this device (`strata devices pair`): the
/// secret a new device needs, to show in a pairing URI.
#[derive(Debug, Message)]
#[rtype(result = "Reply<PairingOffer>")]
pub struct OfferPairing {
    /// Correlates the reply.
    pub request_id: RequestId,
}

/// An open pairing offer.
#[derive(Clone, Debug)]
pub struct PairingOffer {
    /// Its one-time secret.
    pub secret: strata_cascade::pairing::PairingSecret,
    /// When it expires, Unix ms.
    pub expires_ms: u64,
}

/// What the node keeps for multi-device.
#[derive(Default)]
pub(super) struct Devices {
    /// Made at start, from the store.
    pub(super) book: Option<DeviceBook>,
    /// The account each peer's session is pinned to, learnt when it
    /// became ready.
    accounts: BTreeMap<PeerAddr, IdentityKey>,
    /// The version of our list each peer was last sent.
    pushed: BTreeMap<PeerAddr, u64>,
    /// Pairing offers open on this device.
    offers: crate::pairing::Offers,
    /// The highest bundle version seen of each installation.
    bundle_versions: BTreeMap<InstallationId, u64>,
    /// Devices paired here whose groups wait for their session.
    new_devices: BTreeSet<InstallationId>,
    /// Requests to add a device of the asker's account to a group this
    /// installation sequences, waiting for a list that names it.
    pub(super) pending_adds: VecDeque<super::device_groups::PendingAdd>,
    /// The last texts sent to each account, and the installations each
    /// went to: when the account's list names one it missed (the list
    /// held was older, or none was), it is sent again (Sesame's retry).
    recent: BTreeMap<Vec<u8>, VecDeque<Recent>>,
}

/// A text recently sent to an account.
struct Recent {
    text: String,
    sent_to: BTreeSet<InstallationId>,
}

/// Texts remembered per account for [`Devices::recent`], and accounts.
const RECENT_TEXTS: usize = 32;
const RECENT_ACCOUNTS: usize = 256;

impl<T: Transport> Node<T> {
    /// Builds the device book from the store (signing and storing this
    /// account's first list if it has none), and opens sessions with this
    /// account's other devices.
    pub(super) fn restore_devices(&mut self, ctx: &mut Context<Self>) {
        let book = (|| {
            let held = durable::read(&*self.setup.store, |r| r.device_lists())?;
            let lists = held.iter().filter_map(|b| verify_device_list(b).ok());
            let (book, signed) = DeviceBook::new(&self.setup.local, lists, now().unix_ms, &mut rand::rng())?;
            if let Some(list) = signed {
                self.store_list(&list)?;
            }
            Ok::<_, SessionError>(book)
        })();
        match book {
            Ok(book) => {
                let own = book.own_devices();
                self.devices.book = Some(book);
                for installation in own {
                    self.open_own_device(installation, ctx);
                }
            }
            Err(e) => tracing::error!(error = %e, "multi-device is off: cannot read the device lists"),
        }
    }

    fn store_list(&self, list: &strata_cascade::devices::VerifiedDeviceList) -> Result<(), SessionError> {
        let key = list.identity_key().serialize();
        durable::write(&*self.setup.store, |w| w.set_device_list(&key, list.as_bytes()))?;
        Ok(())
    }

    /// Where the session with `installation` is, or would be: Strata's
    /// transports name an installation by its id.
    pub(super) fn address_of(&self, installation: InstallationId) -> PeerAddr {
        self.addresses()
            .remove(&installation)
            .unwrap_or_else(|| PeerAddr::new(installation.to_hex()))
    }

    pub(super) fn own_account(&self) -> IdentityKey {
        *self.setup.local.account().identity_key()
    }

    /// Opens the session with one of this account's devices, expecting
    /// this account's key.
    fn open_own_device(&mut self, installation: InstallationId, ctx: &mut Context<Self>) {
        let peer = self.address_of(installation);
        let account = self.own_account().serialize().to_vec();
        self.open_expecting(peer, account, ctx);
    }

    /// The account the session with `peer` is pinned to.
    fn account_at(&self, peer: &PeerAddr) -> Option<IdentityKey> {
        if let Some(account) = self.devices.accounts.get(peer) {
            return Some(*account);
        }
        self.pinned_account(&self.installation_at(peer)?.to_hex())
    }

    /// The account `installation` (hex) is pinned to in the store.
    pub(super) fn pinned_account(&self, installation: &str) -> Option<IdentityKey> {
        let contact = durable::read(&*self.setup.store, |r| r.contact(installation)).ok()??;
        IdentityKey::decode(&contact.identity_key).ok()
    }

    /// Sends `content` to `peer` as a message of the node's own (its
    /// queueing and delivery are not the user's events).
    /// Sends `content`, the node's own business (a device list, an
    /// introduction), to `peer`: its delivery is not the user's.
    pub(super) fn send_internal(&mut self, peer: PeerAddr, content: Content, ctx: &mut Context<Self>) {
        let session = match self.session(&peer, ctx) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no session to send the node's message to");
                return;
            }
        };
        ctx.spawn(
            session
                .send(SessionRequest::Command(Command::Send(content)))
                .into_actor(self)
                .map(move |reply, act, _| match reply {
                    Ok(Ok(Some(id))) => act.groups.remember(peer, id),
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "the node's message not queued"),
                    _ => {}
                }),
        );
    }

    /// Sends our list to `peer` unless it has this version already.
    fn push_list(&mut self, peer: &PeerAddr, ctx: &mut Context<Self>) {
        let Some(book) = &self.devices.book else { return };
        let own = book.own();
        if self.devices.pushed.get(peer) == Some(&own.version()) {
            return;
        }
        if self.devices.pushed.len() >= MAX_SESSIONS * 4 {
            self.devices.pushed.clear();
        }
        self.devices.pushed.insert(peer.clone(), own.version());
        let list = own.as_bytes().to_vec();
        self.send_internal(peer.clone(), Content::Devices { list }, ctx);
    }

    /// Looks at a session event for multi-device; true when the event is
    /// the node's own business (a device list) or refused (a sent copy
    /// from another account), and goes no further.
    pub(super) fn device_event(&mut self, event: &NodeEvent, ctx: &mut Context<Self>) -> bool {
        let NodeEventKind::Session(session_event) = &event.kind else {
            return false;
        };
        let peer = &event.peer;
        match session_event {
            Event::EncryptionReady { installation, .. } => {
                self.devices.accounts.remove(peer);
                if let Some(account) = self.pinned_account(installation) {
                    self.devices.accounts.insert(peer.clone(), account);
                }
                if let Ok(id) = installation.parse() {
                    self.touch(id);
                }
                if let Ok(id) = installation.parse()
                    && self.devices.new_devices.remove(&id)
                {
                    self.add_to_our_groups(peer.clone(), id, ctx);
                }
                // A device the list no longer names does not speak for
                // the account: it answers messages, below, and nothing else.
                if self.devices.book.as_ref().is_some_and(DeviceBook::paired) {
                    self.push_list(peer, ctx);
                }
                false
            }
            Event::Received { content, .. } => {
                if let Some(installation) = self.installation_at(peer) {
                    self.touch(installation);
                }
                match content {
                    Content::Devices { list } => {
                        self.take_list(peer, list, ctx);
                        true
                    }
                    Content::SentCopy { .. } | Content::FileChunk { sent_to: Some(_), .. } => {
                        let own = self.account_at(peer) == Some(self.own_account());
                        if !own {
                            tracing::warn!(%peer, "a sent copy from another account: dropped");
                        }
                        !own
                    }
                    Content::Text { .. } | Content::FileChunk { .. } => {
                        self.answer_if_partitioned(peer, ctx);
                        false
                    }
                    Content::GroupPdu { .. } | Content::Introduction { .. } => false,
                }
            }
            _ => false,
        }
    }

    fn touch(&mut self, installation: InstallationId) {
        if let Some(book) = &mut self.devices.book {
            book.touch(installation, now().unix_ms);
        }
    }

    /// Tells subscribers that `list` is now the list of its account
    /// (`from`: where it came from, this installation for our own change).
    fn list_changed(&mut self, from: PeerAddr, list: &VerifiedDeviceList, ctx: &mut Context<Self>) {
        let event = NodeEvent {
            peer: from,
            kind: NodeEventKind::DevicesChanged {
                account: list.identity_key().serialize().to_vec(),
                version: list.version(),
                installations: list.installations().to_vec(),
            },
        };
        self.publish(event, ctx);
        self.retry_pending_adds(list.identity_key(), ctx);
    }

    /// A partitioned device (one its account's list does not name) answers
    /// a contact's message with that list, once per list version.
    fn answer_if_partitioned(&mut self, peer: &PeerAddr, ctx: &mut Context<Self>) {
        let partitioned = self.devices.book.as_ref().is_some_and(|b| !b.paired());
        if partitioned && self.account_at(peer) != Some(self.own_account()) {
            tracing::info!(%peer, "a message to this removed device: telling the sender our device list");
            self.push_list(peer, ctx);
        }
    }

    /// A device list from `peer`: taken when it is signed by the account
    /// the session is pinned to and newer than the one held.
    fn take_list(&mut self, peer: &PeerAddr, bytes: &[u8], ctx: &mut Context<Self>) {
        let list = match verify_device_list(bytes) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "a device list refused");
                return;
            }
        };
        if self.account_at(peer) != Some(*list.identity_key()) {
            tracing::warn!(%peer, "a device list of another account than the session's: refused");
            return;
        }
        let Some(book) = &mut self.devices.book else { return };
        let Admitted::Updated { added, removed } = book.admit(list.clone()) else {
            return;
        };
        if let Err(e) = self.store_list(&list) {
            tracing::warn!(error = %e, "cannot store a device list");
        }
        let own = *list.identity_key() == self.own_account();
        tracing::info!(%peer, version = list.version(), own, ?added, ?removed, "device list updated");
        self.list_changed(peer.clone(), &list, ctx);
        if !own {
            self.send_missed(&list, ctx);
        }
        if own {
            let local = self.setup.local.installation_id();
            for installation in added.into_iter().filter(|i| *i != local) {
                self.open_own_device(installation, ctx);
            }
            let paired = self.devices.book.as_ref().is_some_and(DeviceBook::paired);
            if paired {
                // Our contacts hear of the change from us too.
                self.spread_list(ctx);
            }
        }
    }

    /// Sends the recent texts to `list`'s account again to the listed
    /// installations (at most `max_devices`) that did not get them.
    fn send_missed(&mut self, list: &strata_cascade::devices::VerifiedDeviceList, ctx: &mut Context<Self>) {
        let key = list.identity_key().serialize().to_vec();
        let Some(book) = &self.devices.book else { return };
        let targets = book.targets(list.identity_key(), &[], self.setup.config.max_devices);
        let Some(recent) = self.devices.recent.get_mut(&key) else {
            return;
        };
        let mut copies = Vec::new();
        for text in recent.iter_mut() {
            for installation in &targets {
                if text.sent_to.insert(*installation) {
                    copies.push((*installation, text.text.clone()));
                }
            }
        }
        let account = *list.identity_key();
        let wait = self.setup.config.fan_out_wait;
        for (installation, text) in copies {
            tracing::info!(%installation, "sending a text again to a device it missed");
            let copy = Copy {
                installation,
                peer: self.address_of(installation),
                account,
                content: CopyBody::Content(Content::Text { text }),
                own_device: false,
                known: self.knows(installation),
            };
            ctx.spawn(
                deliver_copy(ctx.address(), copy, wait)
                    .into_actor(self)
                    .map(|sent, _, _| {
                        if let Err(e) = sent.outcome {
                            tracing::debug!(installation = %sent.installation, error = %e, "a missed text not sent");
                        }
                    }),
            );
        }
    }

    /// Whether the node knows the session with `installation` (stored or
    /// named by a handshake), so a copy can be queued at once.
    fn knows(&self, installation: InstallationId) -> bool {
        self.addresses().contains_key(&installation)
    }

    /// Remembers a text sent to `account`'s `installations`.
    fn remember_text(&mut self, account: &IdentityKey, text: &str, installations: &[InstallationId]) {
        let recent = &mut self.devices.recent;
        if recent.len() >= RECENT_ACCOUNTS && !recent.contains_key(account.serialize().as_ref()) {
            recent.clear();
        }
        let texts = recent.entry(account.serialize().to_vec()).or_default();
        texts.push_back(Recent {
            text: text.to_owned(),
            sent_to: installations.iter().copied().collect(),
        });
        while texts.len() > RECENT_TEXTS {
            texts.pop_front();
        }
    }

    /// A publication on a followed topic: a peer's bundle (the transport
    /// checked its freshness; it is verified again here, where keys are
    /// known). A higher version than the one seen before of an
    /// installation with a session expires that session: the next send
    /// opens a new one from the bundle (54/WAKU2-X3DH-SESSIONS re-keying).
    pub(super) fn bundle_published(&mut self, bytes: &[u8], ctx: &mut Context<Self>) {
        let Ok(bundle) = strata_cascade::bundle::verify_bundle(bytes) else {
            return;
        };
        let installation = bundle.peer().installation_id;
        let version = bundle.header().version;
        if self.devices.bundle_versions.len() >= MAX_SESSIONS * 4
            && !self.devices.bundle_versions.contains_key(&installation)
        {
            self.devices.bundle_versions.clear();
        }
        let seen = self.devices.bundle_versions.entry(installation).or_insert(version);
        if version <= *seen {
            return;
        }
        *seen = version;
        if !self.knows(installation) {
            return;
        }
        let peer = self.address_of(installation);
        let session = match self.session(&peer, ctx) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no session to re-key");
                return;
            }
        };
        tracing::info!(%peer, version, "a newer bundle: re-keying at the next send");
        ctx.spawn(
            session
                .send(SessionRequest::Expire(Box::new(bundle)))
                .into_actor(self)
                .map(|_, _, _| ()),
        );
    }

    /// A `device-pairing` frame from `from` (a new device: no session).
    pub(super) fn pairing_frame(&mut self, from: PeerAddr, frame: &[u8], ctx: &mut Context<Self>) {
        let ask = match strata_proto::Pdu::decode(frame) {
            Ok(strata_proto::Pdu::DevicePairing(ask)) => ask,
            _ => {
                tracing::debug!(%from, "an undecodable pairing frame");
                return;
            }
        };
        let answer = match self.devices.offers.on_ask(&ask, now().unix_ms) {
            crate::pairing::AskOutcome::Answer(frame) => {
                if let Ok(strata_proto::Pdu::DevicePairing(p)) = strata_proto::Pdu::decode(&frame)
                    && let Some(reason) = &p.reason
                {
                    tracing::warn!(%from, reason = reason.as_str(), "a pairing request refused");
                }
                frame
            }
            crate::pairing::AskOutcome::Pair { offer, installation } => match self.pair(offer, installation, ctx) {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::warn!(%from, error = %e, "pairing failed");
                    return;
                }
            },
        };
        let Some(transport) = self.transport_actor.clone() else {
            return;
        };
        let transmit = Transmit {
            to: from.clone(),
            frames: vec![Bytes::from(answer)],
        };
        ctx.spawn(transport.send(transmit).into_actor(self).map(move |sent, _, _| {
            if !matches!(sent, Ok(Ok(()))) {
                tracing::debug!(%from, "a pairing answer not sent (the new device asks again)");
            }
        }));
    }

    /// Adds `installation` to this account's device list and seals the
    /// grant for it: the account key, the new list, the contacts and the
    /// device lists held.
    fn pair(
        &mut self,
        offer: [u8; 16],
        installation: InstallationId,
        ctx: &mut Context<Self>,
    ) -> Result<Vec<u8>, SessionError> {
        let local = Arc::clone(&self.setup.local);
        let book = self
            .devices
            .book
            .as_mut()
            .ok_or(SessionError::Unavailable("device lists"))?;
        let list = book.change(&local, &[installation], &[], now().unix_ms, &mut rand::rng())?;
        self.store_list(&list)?;
        let own = list.identity_key().serialize();
        let (contacts, lists) = durable::read(&*self.setup.store, |r| Ok((r.contacts()?, r.device_lists()?)))?;
        let grant = crate::pairing::Grant {
            account: local.account().export().as_bytes().to_vec(),
            devices: list.as_bytes().to_vec(),
            contacts: contacts
                .into_iter()
                .filter(|c| c.identity_key != *own && !c.is_blocked())
                .map(|c| crate::pairing::GrantedContact {
                    installation_id: c.installation_id,
                    identity_key: c.identity_key,
                    verified: c.verified,
                    invited: c.invited,
                    first_seen_ms: c.first_seen_ms,
                })
                .collect(),
            lists: lists
                .iter()
                .filter(|l| verify_device_list(l).is_ok_and(|l| l.identity_key().serialize() != own))
                .map(|l| l.to_vec())
                .collect(),
        };
        let frame = self
            .devices
            .offers
            .grant(offer, installation, &grant, &mut rand::rng())?;
        tracing::info!(%installation, "a new device paired");
        self.list_changed(PeerAddr::new(local.installation_id().to_hex()), &list, ctx);
        self.open_own_device(installation, ctx);
        self.spread_list(ctx);
        if self.devices.new_devices.len() < crate::devices::MAX_ACCOUNTS {
            self.devices.new_devices.insert(installation);
        }
        Ok(frame)
    }

    /// Sends our list to every peer with a ready session.
    fn spread_list(&mut self, ctx: &mut Context<Self>) {
        let ready: Vec<PeerAddr> = self
            .status
            .iter()
            .filter(|(_, s)| s.state == SessionState::Ready)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in ready {
            self.push_list(&peer, ctx);
        }
    }
}

impl<T: Transport> Handler<ChangeDevices> for Node<T> {
    type Result = MessageResult<ChangeDevices>;

    fn handle(&mut self, msg: ChangeDevices, ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        let local = Arc::clone(&self.setup.local);
        let result = (|| {
            let book = self
                .devices
                .book
                .as_mut()
                .ok_or(SessionError::Unavailable("device lists"))?;
            let list = book.change(&local, &msg.add, &msg.remove, now().unix_ms, &mut rand::rng())?;
            self.store_list(&list)?;
            Ok(list)
        })();
        let result = result.map(|list| {
            self.list_changed(PeerAddr::new(local.installation_id().to_hex()), &list, ctx);
            for installation in msg.add.iter().filter(|i| **i != local.installation_id()) {
                self.open_own_device(*installation, ctx);
            }
            // A removed device is told too, so that it knows.
            self.spread_list(ctx);
            list.version()
        });
        MessageResult(Reply { request_id, result })
    }
}

impl<T: Transport> Handler<OfferPairing> for Node<T> {
    type Result = MessageResult<OfferPairing>;

    fn handle(&mut self, msg: OfferPairing, _ctx: &mut Self::Context) -> Self::Result {
        let result = self
            .devices
            .offers
            .create(now().unix_ms, &mut rand::rng())
            .map(|(secret, expires_ms)| PairingOffer { secret, expires_ms });
        MessageResult(Reply {
            request_id: msg.request_id,
            result,
        })
    }
}

impl<T: Transport> Handler<ListDevices> for Node<T> {
    type Result = Result<DeviceList, SessionError>;

    fn handle(&mut self, _: ListDevices, _ctx: &mut Self::Context) -> Self::Result {
        let book = self
            .devices
            .book
            .as_ref()
            .ok_or(SessionError::Unavailable("device lists"))?;
        let local = self.setup.local.installation_id();
        let own = book.own();
        Ok(DeviceList {
            version: own.version(),
            paired: book.paired(),
            devices: own
                .installations()
                .iter()
                .map(|i| DeviceStatus {
                    installation: *i,
                    this: *i == local,
                    last_active_ms: book.last_active(i),
                })
                .collect(),
        })
    }
}

impl<T: Transport> Handler<SendToAccount> for Node<T> {
    type Result = ResponseFuture<Reply<Vec<FannedOut>>>;

    fn handle(&mut self, msg: SendToAccount, ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        let plan = self.fan_out_plan(&msg);
        if let (Ok(plan), AccountMessage::Text(text)) = (&plan, &msg.message) {
            let theirs: Vec<InstallationId> = plan.iter().filter(|c| !c.own_device).map(|c| c.installation).collect();
            if let Some(first) = plan.iter().find(|c| !c.own_device) {
                self.remember_text(&first.account, text, &theirs);
            }
        }
        let node = ctx.address();
        let wait = self.setup.config.fan_out_wait;
        Box::pin(async move {
            let plan = match plan {
                Ok(p) => p,
                Err(e) => {
                    return Reply {
                        request_id,
                        result: Err(e),
                    };
                }
            };
            let sends = plan.into_iter().map(|copy| deliver_copy(node.clone(), copy, wait));
            Reply {
                request_id,
                result: Ok(futures::future::join_all(sends).await),
            }
        })
    }
}

/// One copy a fan-out sends.
struct Copy {
    installation: InstallationId,
    peer: PeerAddr,
    account: IdentityKey,
    content: CopyBody,
    own_device: bool,
    /// The node knows the installation at that address: send at once.
    known: bool,
}

/// What one copy carries.
#[derive(Clone)]
enum CopyBody {
    Content(Content),
    File(PathBuf),
    /// A file's sent copy: the account it went to.
    FileCopy(PathBuf, Vec<u8>),
}

impl<T: Transport> Node<T> {
    /// Who a [`SendToAccount`] goes to, and what each gets.
    fn fan_out_plan(&self, msg: &SendToAccount) -> Result<Vec<Copy>, SessionError> {
        let account =
            IdentityKey::decode(&msg.account).map_err(|_| SessionError::Misuse("not an account identity key"))?;
        let book = self
            .devices
            .book
            .as_ref()
            .ok_or(SessionError::Unavailable("device lists"))?;
        let own_account = self.own_account();
        if account == own_account {
            return Err(SessionError::Misuse("a text to this account itself"));
        }
        let pinned = pinned_to(&*self.setup.store, &account)?;
        let max = self.setup.config.max_devices;
        let theirs = book
            .targets(&account, &pinned, max)
            .into_iter()
            .map(|i| (i, account, false));
        let (theirs_get, ours_get) = match &msg.message {
            AccountMessage::Text(text) => (
                CopyBody::Content(Content::Text { text: text.clone() }),
                CopyBody::Content(Content::SentCopy {
                    to: msg.account.clone(),
                    text: text.clone(),
                }),
            ),
            AccountMessage::File(path) => (
                CopyBody::File(path.clone()),
                CopyBody::FileCopy(path.clone(), msg.account.clone()),
            ),
        };
        let ours = book
            .targets(&own_account, &[], max)
            .into_iter()
            .map(|i| (i, own_account, true));
        let plan: Vec<Copy> = theirs
            .chain(ours)
            .map(|(installation, account, own_device)| Copy {
                installation,
                peer: self.address_of(installation),
                known: self.knows(installation),
                account,
                content: if own_device {
                    ours_get.clone()
                } else {
                    theirs_get.clone()
                },
                own_device,
            })
            .collect();
        if plan.iter().all(|c| c.own_device) {
            return Err(SessionError::UnknownPeer(
                "no installation of that account is known".into(),
            ));
        }
        Ok(plan)
    }
}

/// The installations pinned to `account` (every contact with its key).
fn pinned_to(store: &dyn Durable, account: &IdentityKey) -> Result<Vec<InstallationId>, SessionError> {
    let key = account.serialize();
    let contacts = durable::read(store, |r| r.contacts())?;
    Ok(contacts
        .iter()
        .filter(|c| *c.identity_key == *key)
        .filter_map(|c| c.installation_id.parse().ok())
        .collect())
}

/// Queues one copy: at once where the node knows the installation,
/// otherwise after opening a session with it (at most `wait`).
async fn deliver_copy<T: Transport>(node: Addr<Node<T>>, copy: Copy, wait: Duration) -> FannedOut {
    let outcome = async {
        if !copy.known {
            super::device_groups::open_session(&node, &copy.peer, &copy.account, wait).await?;
        }
        node.send(PeerRequest {
            request_id: 0,
            peer: copy.peer.clone(),
            request: match &copy.content {
                CopyBody::Content(content) => SessionRequest::Command(Command::Send(content.clone())),
                CopyBody::File(path) => SessionRequest::SendFile(path.clone()),
                CopyBody::FileCopy(path, to) => SessionRequest::SendFileCopy {
                    path: path.clone(),
                    to: to.clone(),
                },
            },
        })
        .await
        .map_err(|_| SessionError::Unavailable("node"))?
        .result?
        .ok_or_else(|| SessionError::Internal("queued without an id".into()))
    }
    .await;
    FannedOut {
        installation: copy.installation,
        peer: copy.peer,
        outcome: outcome.map_err(|e| e.to_string()),
        own_device: copy.own_device,
    }
}
