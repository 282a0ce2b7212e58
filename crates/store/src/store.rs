//! [`Store`]: sealed, typed records over a [`Backend`], and the atomicity
//! rules as single methods (one method, one transaction).

use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_cascade::at_rest::StorageKey;

use crate::error::StoreError;
use crate::kv::{Backend, ReadTx, Table, WriteTx};
use crate::records::{Accepted, Contact, IdentityCheck, IncomingMessage, KeyChange, OutgoingMessage, PeerKeyPackage};
use crate::schema::{self, SCHEMA_VERSION};
use crate::sealing::{KeySource, open_sealed, open_value, put_sealed};

/// Durable, sealed state of one installation.
pub struct Store<B: Backend> {
    backend: B,
    key: StorageKey,
}

impl<B: Backend> Store<B> {
    /// Opens (or initialises) the store on `backend`: checks the schema
    /// version, derives or takes the storage key and proves it opens this
    /// database. A wrong key or a newer schema changes nothing.
    pub fn open(backend: B, key: KeySource<'_>) -> Result<Self, StoreError> {
        let key = schema::open(&backend, key)?;
        Ok(Self { backend, key })
    }

    /// Gives the backend back (to reopen it, as after a restart).
    pub fn into_backend(self) -> B {
        self.backend
    }

    /// The schema version this build writes.
    pub const fn schema_version() -> u32 {
        SCHEMA_VERSION
    }

    /// Runs `f` on a consistent snapshot.
    pub fn read<R>(&self, f: impl FnOnce(&Reader<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        self.backend.read(|tx| f(&Reader { tx, key: &self.key }))
    }

    /// Runs `f` as one atomic transaction: all of its writes commit together
    /// or none does.
    pub fn write<R>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        self.backend.write(|tx| f(&mut Writer { tx, key: &self.key }))
    }
}

/// Composite keys: a length-prefixed peer id, then the rest. Unambiguous for
/// any peer id, and a prefix scan by peer finds exactly that peer's rows.
/// After the peer, the rows of its KeyPackages in
/// [`Table::PeerKeyPackages`] start with this (see `peer_key_packages`).
pub(crate) const PEER_PACKAGE: &str = "p";

pub(crate) fn peer_key(peer: &str, rest: &str) -> Result<Vec<u8>, StoreError> {
    let len = u16::try_from(peer.len()).map_err(|_| StoreError::Misuse("peer id longer than 65535 bytes".into()))?;
    let mut key = Vec::with_capacity(2 + peer.len() + rest.len());
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(peer.as_bytes());
    key.extend_from_slice(rest.as_bytes());
    Ok(key)
}

fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: table.name(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    serde_json::to_vec(value)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| StoreError::Misuse(e.to_string()))
}

const IDENTITY_KEY: &[u8] = b"identity";
/// Beside the identity: the private halves of the pre-keys this
/// installation publishes in its bundle (not tied to any peer).
const PRE_KEYS_KEY: &[u8] = b"pre-keys";

/// Reads within one snapshot.
pub struct Reader<'a> {
    tx: &'a dyn ReadTx,
    key: &'a StorageKey,
}

/// Reads and writes within one transaction.
pub struct Writer<'a> {
    tx: &'a mut dyn WriteTx,
    key: &'a StorageKey,
}

/// Typed reads, shared by [`Reader`] and [`Writer`].
macro_rules! reads {
    ($ty:ident) => {
        impl $ty<'_> {
            pub(crate) fn record<T: DeserializeOwned>(&self, table: Table, k: &[u8]) -> Result<Option<T>, StoreError> {
                match open_sealed(&*self.tx, self.key, table, k)? {
                    Some(bytes) => decode(table, &bytes).map(Some),
                    None => Ok(None),
                }
            }

            fn get_blob(&self, table: Table, k: &[u8]) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                open_sealed(&*self.tx, self.key, table, k)
            }

            /// The serialized identity (opaque to the store).
            pub fn identity(&self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                self.get_blob(Table::Identity, IDENTITY_KEY)
            }

            /// The serialized installation pre-keys (`InstallationPreKeys`), if any.
            pub fn pre_keys(&self) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                self.get_blob(Table::Identity, PRE_KEYS_KEY)
            }

            /// The contact record of installation `peer`.
            pub fn contact(&self, peer: &str) -> Result<Option<Contact>, StoreError> {
                self.record(Table::Contacts, peer.as_bytes())
            }

            /// Every contact, in installation-id order.
            pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
                self.scan_records(Table::Contacts, &[])
            }

            /// The pair cascade state for `peer` (opaque to the store).
            pub fn layer_state(&self, peer: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                self.get_blob(Table::Layers, peer.as_bytes())
            }

            /// Handshake progress with `peer` (opaque to the store).
            pub fn handshake(&self, peer: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                self.get_blob(Table::Handshakes, peer.as_bytes())
            }

            /// The sealed state of group chat `group` (id, hex).
            pub fn group(&self, group: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                self.get_blob(Table::Groups, group.as_bytes())
            }

            /// The signed device list held for the account with this
            /// identity key (serialized; opaque to the store).
            pub fn device_list(&self, identity_key: &[u8]) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                self.get_blob(Table::Devices, identity_key)
            }

            /// Every signed device list held.
            pub fn device_lists(&self) -> Result<Vec<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                self.tx
                    .scan(Table::Devices, &[], usize::MAX)?
                    .into_iter()
                    .map(|(k, sealed)| open_value(self.key, Table::Devices, &k, &sealed))
                    .collect()
            }

            /// The ids (hex) of every group chat with a stored state.
            pub fn groups(&self) -> Result<Vec<String>, StoreError> {
                self.tx
                    .scan(Table::Groups, &[], usize::MAX)?
                    .into_iter()
                    .map(|(k, _)| {
                        String::from_utf8(k).map_err(|_| StoreError::Corrupt {
                            table: Table::Groups.name(),
                            reason: "a group id that is not UTF-8".into(),
                        })
                    })
                    .collect()
            }

            /// The KX entry under `key` (`strata_session::kx` names them).
            pub fn kx(&self, key: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                self.get_blob(Table::Kx, key.as_bytes())
            }

            /// Every KX entry whose key starts with `prefix`, in key order.
            pub fn kx_entries(&self, prefix: &str) -> Result<Vec<(String, zeroize::Zeroizing<Vec<u8>>)>, StoreError> {
                self.tx
                    .scan(Table::Kx, prefix.as_bytes(), usize::MAX)?
                    .into_iter()
                    .map(|(k, sealed)| {
                        let value = open_value(self.key, Table::Kx, &k, &sealed)?;
                        let key = String::from_utf8(k).map_err(|_| StoreError::Corrupt {
                            table: Table::Kx.name(),
                            reason: "a key that is not UTF-8".into(),
                        })?;
                        Ok((key, value))
                    })
                    .collect()
            }

            /// The messages group `group` keeps to send again, by key order.
            pub fn group_messages(&self, group: &str) -> Result<Vec<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
                let prefix = group_message_key(group, "");
                self.tx
                    .scan(Table::GroupMessages, &prefix, usize::MAX)?
                    .into_iter()
                    .filter_map(|(k, _)| self.get_blob(Table::GroupMessages, &k).transpose())
                    .collect()
            }

            /// The outgoing message `message_id` to `peer`.
            pub fn outgoing(&self, peer: &str, message_id: &str) -> Result<Option<OutgoingMessage>, StoreError> {
                self.record(Table::Outbox, &peer_key(peer, message_id)?)
            }

            /// Every unacknowledged message to `peer`, oldest first.
            pub fn outbox(&self, peer: &str) -> Result<Vec<OutgoingMessage>, StoreError> {
                let mut out: Vec<OutgoingMessage> = self.scan_records(Table::Outbox, &peer_key(peer, "")?)?;
                out.sort_by(|a, b| (a.created_ms, &a.message_id).cmp(&(b.created_ms, &b.message_id)));
                Ok(out)
            }

            /// Every received message from `peer`, oldest first.
            pub fn inbox(&self, peer: &str) -> Result<Vec<IncomingMessage>, StoreError> {
                let mut out: Vec<IncomingMessage> = self.scan_records(Table::Inbox, &peer_key(peer, "")?)?;
                out.sort_by(|a, b| (a.received_ms, &a.message_id).cmp(&(b.received_ms, &b.message_id)));
                Ok(out)
            }

            /// The stored KeyPackages of installation `peer` (hex), expired
            /// ones included (they are deleted by the writers).
            pub fn peer_key_packages(&self, peer: &str) -> Result<Vec<PeerKeyPackage>, StoreError> {
                self.scan_records(Table::PeerKeyPackages, &peer_key(peer, PEER_PACKAGE)?)
            }

            /// Whether message `message_id` from `peer` was already processed.
            pub fn is_processed(&self, peer: &str, message_id: &str) -> Result<bool, StoreError> {
                Ok(self
                    .tx
                    .get(Table::Processed, &peer_key(peer, message_id)?)?
                    .is_some())
            }

            fn scan_records<T: DeserializeOwned>(&self, table: Table, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
                let mut out = Vec::new();
                for (k, sealed) in self.tx.scan(table, prefix, usize::MAX)? {
                    let bytes = open_value(self.key, table, &k, &sealed)?;
                    out.push(decode(table, &bytes)?);
                }
                Ok(out)
            }
        }
    };
}

reads!(Reader);
reads!(Writer);

impl Writer<'_> {
    pub(crate) fn raw(&self) -> &dyn ReadTx {
        &*self.tx
    }

    pub(crate) fn raw_mut(&mut self) -> &mut dyn WriteTx {
        &mut *self.tx
    }

    /// The transaction and the storage key, to seal a value into a row.
    pub(crate) fn sealing(&mut self) -> (&mut dyn WriteTx, &StorageKey) {
        (&mut *self.tx, self.key)
    }

    /// The transaction and the storage key, to open a sealed row.
    pub(crate) fn sealing_read(&self) -> (&dyn ReadTx, &StorageKey) {
        (&*self.tx, self.key)
    }

    pub(crate) fn put_record<T: Serialize>(&mut self, table: Table, k: &[u8], value: &T) -> Result<(), StoreError> {
        put_sealed(self.tx, self.key, table, k, &encode(value)?)
    }

    /// Stores the serialized identity.
    pub fn set_identity(&mut self, identity: &[u8]) -> Result<(), StoreError> {
        put_sealed(self.tx, self.key, Table::Identity, IDENTITY_KEY, identity)
    }

    /// Stores the serialized installation pre-keys, replacing older ones.
    pub fn set_pre_keys(&mut self, pre_keys: &[u8]) -> Result<(), StoreError> {
        put_sealed(self.tx, self.key, Table::Identity, PRE_KEYS_KEY, pre_keys)
    }

    /// Stores the pair cascade state for `peer`.
    pub fn set_layer_state(&mut self, peer: &str, state: &[u8]) -> Result<(), StoreError> {
        put_sealed(self.tx, self.key, Table::Layers, peer.as_bytes(), state)
    }

    /// Forgets the pair cascade state for `peer` (it will handshake again).
    pub fn clear_layer_state(&mut self, peer: &str) -> Result<bool, StoreError> {
        self.tx.delete(Table::Layers, peer.as_bytes())
    }

    /// Stores handshake progress with `peer`.
    pub fn set_handshake(&mut self, peer: &str, progress: &[u8]) -> Result<(), StoreError> {
        put_sealed(self.tx, self.key, Table::Handshakes, peer.as_bytes(), progress)
    }

    /// Stores the signed device list of the account with this identity
    /// key, replacing the one held (the caller keeps the newer: see
    /// `strata_proto::devices`).
    pub fn set_device_list(&mut self, identity_key: &[u8], list: &[u8]) -> Result<(), StoreError> {
        put_sealed(self.tx, self.key, Table::Devices, identity_key, list)
    }

    /// Stores the state of group chat `group` (id, hex), replacing it.
    pub fn set_group(&mut self, group: &str, state: &[u8]) -> Result<(), StoreError> {
        put_sealed(self.tx, self.key, Table::Groups, group.as_bytes(), state)
    }

    /// Forgets group chat `group`, with the messages it kept.
    pub fn delete_group(&mut self, group: &str) -> Result<bool, StoreError> {
        for (k, _) in self
            .tx
            .scan(Table::GroupMessages, &group_message_key(group, ""), usize::MAX)?
        {
            self.tx.delete(Table::GroupMessages, &k)?;
        }
        self.tx.delete(Table::Groups, group.as_bytes())
    }

    /// Keeps `message` (sealed) for group `group` under `key`.
    pub fn put_group_message(&mut self, group: &str, key: &str, message: &[u8]) -> Result<(), StoreError> {
        put_sealed(
            self.tx,
            self.key,
            Table::GroupMessages,
            &group_message_key(group, key),
            message,
        )
    }

    /// Forgets the message group `group` kept under `key`.
    pub fn delete_group_message(&mut self, group: &str, key: &str) -> Result<bool, StoreError> {
        self.tx.delete(Table::GroupMessages, &group_message_key(group, key))
    }

    /// Stores the KX entry `key` (sealed), replacing it.
    pub fn set_kx(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        put_sealed(self.tx, self.key, Table::Kx, key.as_bytes(), value)
    }

    /// Forgets the KX entry `key`.
    pub fn delete_kx(&mut self, key: &str) -> Result<bool, StoreError> {
        self.tx.delete(Table::Kx, key.as_bytes())
    }

    /// Pins `identity_key` for `peer` as learned from a completed
    /// out-of-band key exchange: a new contact starts verified by invite;
    /// a contact with the same key becomes so. A contact pinned to another
    /// key is left as it is ([`IdentityCheck::Changed`]: the caller refuses
    /// the exchange).
    pub fn pin_invited(&mut self, peer: &str, identity_key: &[u8], now_ms: u64) -> Result<IdentityCheck, StoreError> {
        let (mut contact, check) = match self.contact(peer)? {
            None => (Contact::first_seen(peer, identity_key, now_ms), IdentityCheck::Pinned),
            Some(c) if c.identity_key == identity_key && c.offered_key.is_none() => (c, IdentityCheck::Same),
            Some(_) => return Ok(IdentityCheck::Changed),
        };
        contact.invited = true;
        self.put_record(Table::Contacts, peer.as_bytes(), &contact)?;
        Ok(check)
    }

    /// Forgets handshake progress with `peer`.
    pub fn clear_handshake(&mut self, peer: &str) -> Result<bool, StoreError> {
        self.tx.delete(Table::Handshakes, peer.as_bytes())
    }

    /// Trust on first use: pins `identity_key` for a new contact, confirms
    /// the pinned one, or records a different one as offered and blocks the
    /// contact until the user decides.
    pub fn observe_identity(
        &mut self,
        peer: &str,
        identity_key: &[u8],
        now_ms: u64,
    ) -> Result<IdentityCheck, StoreError> {
        let Some(mut contact) = self.contact(peer)? else {
            let contact = Contact::first_seen(peer, identity_key, now_ms);
            self.put_record(Table::Contacts, peer.as_bytes(), &contact)?;
            return Ok(IdentityCheck::Pinned);
        };
        if contact.identity_key == identity_key {
            return Ok(IdentityCheck::Same);
        }
        if contact.offered_key.as_deref() != Some(identity_key) {
            contact.offered_key = Some(identity_key.to_vec());
            self.put_record(Table::Contacts, peer.as_bytes(), &contact)?;
        }
        Ok(IdentityCheck::Changed)
    }

    /// The user accepts the offered identity key of `peer`: it becomes the
    /// pinned key (unverified), the change is kept in the history, and the
    /// contact is unblocked.
    pub fn accept_identity_change(&mut self, peer: &str, now_ms: u64) -> Result<Contact, StoreError> {
        let mut contact = self
            .contact(peer)?
            .ok_or_else(|| StoreError::Misuse(format!("no contact {peer}")))?;
        let new_key = contact
            .offered_key
            .take()
            .ok_or_else(|| StoreError::Misuse(format!("{peer} has no identity change to accept")))?;
        let old_key = std::mem::replace(&mut contact.identity_key, new_key.clone());
        contact.key_history.push(KeyChange {
            old_key,
            new_key,
            accepted_ms: now_ms,
        });
        contact.verified = false;
        contact.invited = false;
        self.put_record(Table::Contacts, peer.as_bytes(), &contact)?;
        Ok(contact)
    }

    /// Records that the user verified the pinned key of `peer` (safety
    /// numbers compared).
    pub fn mark_verified(&mut self, peer: &str) -> Result<Contact, StoreError> {
        let mut contact = self
            .contact(peer)?
            .ok_or_else(|| StoreError::Misuse(format!("no contact {peer}")))?;
        contact.verified = true;
        self.put_record(Table::Contacts, peer.as_bytes(), &contact)?;
        Ok(contact)
    }

    /// Rule: an outgoing message is in the outbox *before* it is encrypted.
    /// Refuses a message id already queued to that peer.
    pub fn queue_outgoing(&mut self, message: &OutgoingMessage) -> Result<(), StoreError> {
        let k = peer_key(&message.peer, &message.message_id)?;
        if self.tx.get(Table::Outbox, &k)?.is_some() {
            return Err(StoreError::Misuse(format!(
                "message {} already queued",
                message.message_id
            )));
        }
        self.put_record(Table::Outbox, &k, message)
    }

    /// Rule: a ratchet step and the ciphertext it produced commit together.
    /// Stores the frames of a queued message with the cascade state that
    /// produced them.
    pub fn record_encrypted(
        &mut self,
        peer: &str,
        message_id: &str,
        frames: Vec<Vec<u8>>,
        layer_state: &[u8],
    ) -> Result<(), StoreError> {
        self.record_encrypted_batch(peer, vec![(message_id.to_owned(), frames)], layer_state)
    }

    /// Rule 1 for a burst: several queued messages to `peer`, encrypted one
    /// after another, commit with the one cascade state that follows the
    /// last of them. The state is sealed once, whatever the burst's length
    /// (calling [`Writer::record_encrypted`] per message in one transaction
    /// is also atomic, but seals the whole pair state each time).
    pub fn record_encrypted_batch(
        &mut self,
        peer: &str,
        messages: Vec<(String, Vec<Vec<u8>>)>,
        layer_state: &[u8],
    ) -> Result<(), StoreError> {
        for (message_id, frames) in messages {
            self.update_queued(peer, &message_id, |message| message.frames = frames)?;
        }
        self.set_layer_state(peer, layer_state)
    }

    /// Counts one more transmission of a queued message.
    pub fn record_attempt(&mut self, peer: &str, message_id: &str) -> Result<u32, StoreError> {
        let message = self.update_queued(peer, message_id, |message| {
            message.attempts = message.attempts.saturating_add(1);
        })?;
        Ok(message.attempts)
    }

    /// Applies `change` to the queued message `message_id` to `peer` and
    /// stores it; refuses a message that is not queued.
    fn update_queued(
        &mut self,
        peer: &str,
        message_id: &str,
        change: impl FnOnce(&mut OutgoingMessage),
    ) -> Result<OutgoingMessage, StoreError> {
        let k = peer_key(peer, message_id)?;
        let mut message: OutgoingMessage = self
            .record(Table::Outbox, &k)?
            .ok_or_else(|| StoreError::Misuse(format!("message {message_id} is not queued")))?;
        change(&mut message);
        self.put_record(Table::Outbox, &k, &message)?;
        Ok(message)
    }

    /// Rule: a message leaves the outbox only when the peer acknowledges it.
    /// Returns whether it was still there (a repeated ack is harmless).
    pub fn ack_outgoing(&mut self, peer: &str, message_id: &str) -> Result<bool, StoreError> {
        self.tx.delete(Table::Outbox, &peer_key(peer, message_id)?)
    }

    /// Rule: an incoming message is acknowledged only after this commits.
    /// Stores the message, marks its id processed and stores the cascade
    /// state that decrypted it — or, for an id already processed, writes
    /// nothing.
    pub fn accept_incoming(&mut self, message: &IncomingMessage, layer_state: &[u8]) -> Result<Accepted, StoreError> {
        let accepted = self.insert_incoming(message)?;
        if accepted == Accepted::New {
            self.set_layer_state(&message.peer, layer_state)?;
        }
        Ok(accepted)
    }

    /// [`Writer::accept_incoming`] for a burst that `peer`'s cascade
    /// decrypted in order: each message as there, then the cascade state
    /// after the last, sealed once for the whole burst. The state is written
    /// even when every message was a duplicate: the caller's ratchet moved.
    pub fn accept_incoming_batch(
        &mut self,
        peer: &str,
        messages: &[IncomingMessage],
        layer_state: &[u8],
    ) -> Result<Vec<Accepted>, StoreError> {
        let mut accepted = Vec::with_capacity(messages.len());
        for m in messages {
            if m.peer != peer {
                return Err(StoreError::Misuse(format!(
                    "message {} is not from {peer}",
                    m.message_id
                )));
            }
            accepted.push(self.insert_incoming(m)?);
        }
        self.set_layer_state(peer, layer_state)?;
        Ok(accepted)
    }

    fn insert_incoming(&mut self, message: &IncomingMessage) -> Result<Accepted, StoreError> {
        let k = peer_key(&message.peer, &message.message_id)?;
        if self.tx.get(Table::Processed, &k)?.is_some() {
            return Ok(Accepted::Duplicate);
        }
        self.put_record(Table::Inbox, &k, message)?;
        self.tx.put(Table::Processed, &k, &message.received_ms.to_be_bytes())?;
        Ok(Accepted::New)
    }

    /// Removes a delivered message from the inbox; its id stays processed.
    pub fn remove_incoming(&mut self, peer: &str, message_id: &str) -> Result<bool, StoreError> {
        self.tx.delete(Table::Inbox, &peer_key(peer, message_id)?)
    }
}

/// The key of a group's kept message: the group id, `/`, the message key
/// (a group id is hex, so no group's prefix is another's).
fn group_message_key(group: &str, key: &str) -> Vec<u8> {
    format!("{group}/{key}").into_bytes()
}
