//! KeyPackages received from other installations, with the polyproto-mls
//! rules a holder of others' packages must keep:
//!
//! - a package is stored only after its signature check
//!   ([`strata_cascade::verify_key_package`]: signatures, lifetime,
//!   ciphersuite, binding to the expected peer); a failed one is refused
//!   with [`StoreError::KeyPackageRejected`] and nothing is written;
//! - rows are keyed by the peer installation, so a package can only be used
//!   for the peer it was checked against;
//! - `init_key` is unique among one peer's packages (RFC 9420 §10);
//! - expired packages are deleted, never handed out;
//! - each use consumes one package ([`Writer::take_peer_key_package`]):
//!   one-time packages first, soonest-expiring first.

use strata_cascade::{PeerIdentity, verify_key_package};

use crate::error::StoreError;
use crate::kv::Table;
use crate::records::PeerKeyPackage;
use crate::store::{Writer, peer_key};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Writer<'_> {
    /// Checks a KeyPackage received from `peer` and stores it under that
    /// peer. Refuses — storing nothing — a package that fails the check, has
    /// expired at `now_s`, or repeats the `init_key` of another package of
    /// that peer. Storing the same package twice is harmless.
    pub fn receive_peer_key_package(
        &mut self,
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
        let key = peer_key(&package.installation_id, &hex(&new.key_ref))?;
        for other in self.peer_key_packages(&package.installation_id)? {
            if other.key_package.init_key == new.init_key && other.key_package.key_ref != new.key_ref {
                return Err(StoreError::KeyPackageRejected {
                    reason: "init_key repeated across the peer's KeyPackages".into(),
                });
            }
        }
        self.put_record(Table::PeerKeyPackages, &key, &package)?;
        Ok(package)
    }

    /// Consumes one unexpired package of installation `peer` (hex) for one
    /// use — a one-time package if any, else a last-resort one — and deletes
    /// the peer's expired packages on the way. `None` when none is left.
    pub fn take_peer_key_package(&mut self, peer: &str, now_s: u64) -> Result<Option<PeerKeyPackage>, StoreError> {
        let mut usable = Vec::new();
        for package in self.peer_key_packages(peer)? {
            let key = peer_key(peer, &hex(&package.key_package.key_ref))?;
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
        self.raw_mut().delete(Table::PeerKeyPackages, &key)?;
        Ok(Some(package))
    }

    /// Deletes every peer's packages that expired before `now_s`; returns
    /// how many.
    pub fn expire_peer_key_packages(&mut self, now_s: u64) -> Result<u64, StoreError> {
        let mut expired = 0;
        for (key, _) in self.raw().scan(Table::PeerKeyPackages, &[], usize::MAX)? {
            let package: PeerKeyPackage = self
                .record(Table::PeerKeyPackages, &key)?
                .ok_or_else(|| StoreError::Misuse("KeyPackage vanished mid-transaction".into()))?;
            if package.key_package.not_after_s < now_s {
                self.raw_mut().delete(Table::PeerKeyPackages, &key)?;
                expired += 1;
            }
        }
        Ok(expired)
    }
}
