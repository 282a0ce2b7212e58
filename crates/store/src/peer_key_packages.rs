//! KeyPackages received from other installations, with the polyproto-mls
//! rules a holder of others' packages must keep:
//!
//! - a package is stored only after its check
//!   ([`strata_cascade::verify_key_package`]: encoding, signatures,
//!   ciphersuite, lifetime within the cap, credential bound to the expected
//!   peer); a failed one is refused with [`StoreError::KeyPackageRejected`]
//!   and nothing is written;
//! - rows are keyed by the peer installation, so a package can only be used
//!   for the peer it was checked against;
//! - an `init_key` is accepted from one peer once (RFC 9420 §10: a one-time
//!   package is used once). Every package received — stored
//!   ([`Writer::receive_peer_key_package`]) or used at once as it arrives
//!   ([`Writer::use_peer_key_package`], the handshake's step 2) — leaves a
//!   row of its `init_key` until the package's lifetime ends, and a package
//!   that repeats the `init_key` of another, or comes again after it was
//!   used, is refused with [`StoreError::KeyPackageReused`] (one lookup,
//!   however many packages are stored). The one exception is the peer's
//!   last-resort package, reusable by design: the *same* last-resort
//!   package (same `KeyPackageRef`) may come again;
//! - expired packages and `init_key` rows are deleted, and expired packages
//!   are never handed out. An `init_key` row lives at most as long as the
//!   lifetime cap (12 weeks), and a peer's packages only arrive when this
//!   node asked for one (a claim, or a handshake it opened), so the rows
//!   are bounded by this node's own rate;
//! - each use consumes one package ([`Writer::take_peer_key_package`]):
//!   one-time packages first, soonest-expiring first.

use serde::{Deserialize, Serialize};
use strata_cascade::{PeerIdentity, verify_key_package};

use crate::error::StoreError;
use crate::kv::Table;
use crate::records::{PeerKeyPackage, b64};
use crate::store::{PEER_PACKAGE, Writer, peer_key};

/// Row kinds inside one peer's rows of [`Table::PeerKeyPackages`]: its
/// packages ([`PEER_PACKAGE`]) and its `init_key`s.
const SEEN: &str = "u";

/// An `init_key` of the peer that was received, until its package expires.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    #[serde(with = "b64")]
    key_ref: Vec<u8>,
    not_after_s: u64,
    last_resort: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn package_key(peer: &str, key_ref: &[u8]) -> Result<Vec<u8>, StoreError> {
    peer_key(peer, &format!("{PEER_PACKAGE}{}", hex(key_ref)))
}

fn seen_key(peer: &str, init_key: &[u8]) -> Result<Vec<u8>, StoreError> {
    peer_key(peer, &format!("{SEEN}{}", hex(init_key)))
}

/// The row kind of a key of [`Table::PeerKeyPackages`]: what follows the
/// length-prefixed peer.
fn row_kind(key: &[u8]) -> Option<&[u8]> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    rest.get(usize::from(u16::from_be_bytes(*len))..)?.get(..1)
}

impl Writer<'_> {
    /// Checks a KeyPackage received from `peer` and stores it under that
    /// peer, until it is used or expires. Refuses — storing nothing — a
    /// package that fails the check or has expired at `now_s`
    /// ([`StoreError::KeyPackageRejected`]), or that repeats the `init_key`
    /// of another package of that peer, stored or used
    /// ([`StoreError::KeyPackageReused`]). Storing the same package twice is
    /// harmless.
    pub fn receive_peer_key_package(
        &mut self,
        peer: &PeerIdentity,
        bytes: &[u8],
        now_s: u64,
    ) -> Result<PeerKeyPackage, StoreError> {
        self.accept_peer_key_package(peer, bytes, now_s, true)
    }

    /// Checks a KeyPackage `peer` sent for use at once (the handshake's step
    /// 2) as [`Writer::receive_peer_key_package`] does, and records its
    /// `init_key` as used instead of storing it.
    pub fn use_peer_key_package(
        &mut self,
        peer: &PeerIdentity,
        bytes: &[u8],
        now_s: u64,
    ) -> Result<PeerKeyPackage, StoreError> {
        self.accept_peer_key_package(peer, bytes, now_s, false)
    }

    /// Checks a package and records its `init_key`; stores it when `keep`,
    /// else consumes a stored copy.
    fn accept_peer_key_package(
        &mut self,
        peer: &PeerIdentity,
        bytes: &[u8],
        now_s: u64,
        keep: bool,
    ) -> Result<PeerKeyPackage, StoreError> {
        let package = self.check_peer_key_package(peer, bytes, now_s)?;
        let key = package_key(&package.installation_id, &package.key_package.key_ref)?;
        if keep {
            self.put_record(Table::PeerKeyPackages, &key, &package)?;
        } else {
            self.raw_mut().delete(Table::PeerKeyPackages, &key)?;
        }
        self.mark_seen(&package)?;
        Ok(package)
    }

    /// Consumes one unexpired package of installation `peer` (hex) for one
    /// use — a one-time package if any, else a last-resort one — and deletes
    /// the peer's expired packages on the way. `None` when none is left.
    pub fn take_peer_key_package(&mut self, peer: &str, now_s: u64) -> Result<Option<PeerKeyPackage>, StoreError> {
        let mut usable = Vec::new();
        for package in self.peer_key_packages(peer)? {
            let key = package_key(peer, &package.key_package.key_ref)?;
            if package.key_package.not_after_s < now_s {
                self.raw_mut().delete(Table::PeerKeyPackages, &key)?;
            } else {
                usable.push((key, package));
            }
        }
        let Some((key, package)) = usable
            .into_iter()
            .min_by_key(|(_, p)| (p.key_package.last_resort, p.key_package.not_after_s))
        else {
            return Ok(None);
        };
        // Its init_key row stays: the package may not come again.
        self.raw_mut().delete(Table::PeerKeyPackages, &key)?;
        Ok(Some(package))
    }

    /// Deletes every peer's packages and used `init_key` rows whose package
    /// expired before `now_s`; returns how many packages.
    pub fn expire_peer_key_packages(&mut self, now_s: u64) -> Result<u64, StoreError> {
        let mut expired = 0;
        for (key, _) in self.raw().scan(Table::PeerKeyPackages, &[], usize::MAX)? {
            let (not_after_s, package) = match row_kind(&key).map(|k| k == PEER_PACKAGE.as_bytes()) {
                Some(true) => (self.stored::<PeerKeyPackage>(&key)?.key_package.not_after_s, true),
                Some(false) => (self.stored::<Seen>(&key)?.not_after_s, false),
                None => return Err(corrupt("a KeyPackage row with a damaged key")),
            };
            if not_after_s < now_s {
                self.raw_mut().delete(Table::PeerKeyPackages, &key)?;
                expired += u64::from(package);
            }
        }
        Ok(expired)
    }

    /// The checks every received package passes before it is stored or
    /// used; writes nothing.
    fn check_peer_key_package(
        &self,
        peer: &PeerIdentity,
        bytes: &[u8],
        now_s: u64,
    ) -> Result<PeerKeyPackage, StoreError> {
        let verified =
            verify_key_package(bytes, peer).map_err(|e| StoreError::KeyPackageRejected { reason: e.to_string() })?;
        let package = PeerKeyPackage::from(&verified);
        let new = &package.key_package;
        if new.not_after_s < now_s {
            return Err(StoreError::KeyPackageRejected {
                reason: "expired".into(),
            });
        }
        let peer_hex = &package.installation_id;
        if let Some(seen) = self.record::<Seen>(Table::PeerKeyPackages, &seen_key(peer_hex, &new.init_key)?)? {
            let same = seen.key_ref == new.key_ref;
            // The same last resort may come again; the same package, still
            // stored and unused, is a harmless duplicate.
            let again = same
                && ((seen.last_resort && new.last_resort)
                    || self
                        .raw()
                        .get(Table::PeerKeyPackages, &package_key(peer_hex, &new.key_ref)?)?
                        .is_some());
            if !again {
                return Err(StoreError::KeyPackageReused);
            }
        }
        Ok(package)
    }

    fn mark_seen(&mut self, package: &PeerKeyPackage) -> Result<(), StoreError> {
        let p = &package.key_package;
        let seen = Seen {
            key_ref: p.key_ref.clone(),
            not_after_s: p.not_after_s,
            last_resort: p.last_resort,
        };
        self.put_record(
            Table::PeerKeyPackages,
            &seen_key(&package.installation_id, &p.init_key)?,
            &seen,
        )
    }

    fn stored<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<T, StoreError> {
        self.record(Table::PeerKeyPackages, key)?
            .ok_or_else(|| StoreError::Misuse("KeyPackage vanished mid-transaction".into()))
    }
}

fn corrupt(reason: &str) -> StoreError {
    StoreError::Corrupt {
        table: Table::PeerKeyPackages.name(),
        reason: reason.into(),
    }
}
