//! The storage seam: a transactional key-value map of byte strings, split
//! into named tables. Backends implement only this; everything the store
//! means by its records (sealing, encodings, atomicity rules) is written once
//! above it, so every backend behaves the same.

use crate::error::StoreError;

/// The tables. Their names are part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Schema version, key-derivation parameters, the key check.
    Meta,
    /// The account identity and this installation's own keys.
    Identity,
    /// Signal sessions, pre-keys, signed/Kyber pre-keys, known identities,
    /// and the Kyber base-key replay set.
    Signal,
    /// The openmls storage provider's entries.
    Mls,
    /// Per-peer cascade state (the pair's layer chains).
    Layers,
    /// Contacts and their trust-on-first-use state.
    Contacts,
    /// This installation's own KeyPackage pool.
    KeyPackages,
    /// KeyPackages received from others, after their signature check.
    PeerKeyPackages,
    /// Outgoing messages until the peer acknowledges them.
    Outbox,
    /// Received messages.
    Inbox,
    /// Ids of messages already processed, for replay and duplicate rejection.
    Processed,
    /// Handshake progress per peer.
    Handshakes,
    /// Group chats: each member machine's sealed state, by group id.
    Groups,
    /// The group messages each group keeps to send again, by group id and
    /// message key (apart from the group's state, which is rewritten at
    /// every step: these are written once each).
    GroupMessages,
    /// Accounts' signed device lists, by identity key (this account's
    /// own too).
    Devices,
    /// Out-of-band key exchanges: this account's KX key pair, open
    /// invites, answers awaiting the full KX, and the peers met that way
    /// (`strata_session::kx`), by the keys that module gives them.
    Kx,
}

impl Table {
    /// Every table.
    pub const ALL: &'static [Table] = &[
        Table::Meta,
        Table::Identity,
        Table::Signal,
        Table::Mls,
        Table::Layers,
        Table::Contacts,
        Table::KeyPackages,
        Table::PeerKeyPackages,
        Table::Outbox,
        Table::Inbox,
        Table::Processed,
        Table::Handshakes,
        Table::Groups,
        Table::GroupMessages,
        Table::Devices,
        Table::Kx,
    ];

    /// The table's on-disk name.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Identity => "identity",
            Table::Signal => "signal",
            Table::Mls => "mls",
            Table::Layers => "layers",
            Table::Contacts => "contacts",
            Table::KeyPackages => "key_packages",
            Table::PeerKeyPackages => "peer_key_packages",
            Table::Outbox => "outbox",
            Table::Inbox => "inbox",
            Table::Processed => "processed",
            Table::Handshakes => "handshakes",
            Table::Groups => "groups",
            Table::GroupMessages => "group_messages",
            Table::Devices => "devices",
            Table::Kx => "kx",
        }
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Reads within one transaction: a consistent snapshot.
pub trait ReadTx {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// Number of entries in `table`.
    fn count(&self, table: Table) -> Result<u64, StoreError>;
}

/// Reads and writes within one transaction; nothing is visible to others
/// until it commits, and nothing of it survives if it does not.
pub trait WriteTx: ReadTx {
    /// Sets `key` to `value`.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Removes `key`; returns whether it was there.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, StoreError>;
}

/// A transactional key-value backend.
///
/// `write` runs the closure in one write transaction and commits it if and
/// only if the closure returns `Ok`: an `Err`, a panic or a crash leaves the
/// store as it was. Write transactions are serialised. Clones are handles to
/// the same data.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Runs `f` on a consistent snapshot.
    fn read<R>(&self, f: impl FnOnce(&dyn ReadTx) -> Result<R, StoreError>) -> Result<R, StoreError>;

    /// Runs `f` in one atomic write transaction.
    fn write<R>(&self, f: impl FnOnce(&mut dyn WriteTx) -> Result<R, StoreError>) -> Result<R, StoreError>;
}

/// The smallest key greater than every key starting with `prefix`, for range
/// scans; `None` when there is none (the prefix is all `0xff` or empty).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
