//! This installation's KeyPackage pool (polyproto-mls: many one-time
//! packages and one reusable last-resort package, issue #16), kept stocked
//! by the node: real packages from the cascade, each with its private parts
//! sealed beside it in the store (`strata_store::pool`), so a package
//! claimed today still opens a Welcome days later.
//!
//! [`keep_stocked`] sweeps expired packages, tops the one-time stock up to
//! [`PoolConfig::stock`], and makes a last-resort package when there is
//! none or the current one has been served. The node calls it at start and
//! every hour. The handshake's step 2 and peers' claims over their
//! sessions (`machine/claims.rs`) take from the pool; a claim that
//! reports `LowKeyPackages` raises [`Event::LowKeyPackages`](crate::Event::LowKeyPackages)
//! and the node actor calls [`keep_stocked`] too. [`replace_all`] is for
//! identity rotation, which the node does not have yet.

use strata_cascade::layers::mls::DEFAULT_KEY_PACKAGE_LIFETIME_SECS;
use strata_cascade::{InstallationIdentity, KeyPackageKind, generate_key_package};
use strata_store::PoolEntry;

use crate::durable::{self, Durable};
use crate::error::SessionError;

/// How the KeyPackage pool is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// One-time packages kept in stock: [`keep_stocked`] tops the pool up
    /// to this many.
    pub stock: u64,
    /// A claim that leaves fewer one-time packages than this reports
    /// `LowKeyPackages`, and the node refills.
    pub refill_below: u64,
    /// Lifetime of a pooled package, seconds (the cascade refuses more than
    /// its cap, 12 weeks).
    pub lifetime_secs: u64,
    /// One-time packages one peer may claim at once over its session ...
    pub claim_burst: u32,
    /// ... and then one more per this long. Claims above the allowance are
    /// served the last resort.
    pub claim_interval: std::time::Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            stock: 64,
            refill_below: 16,
            lifetime_secs: DEFAULT_KEY_PACKAGE_LIFETIME_SECS,
            claim_burst: 8,
            claim_interval: std::time::Duration::from_secs(120),
        }
    }
}

/// What [`keep_stocked`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restock {
    /// Expired packages deleted.
    pub expired: usize,
    /// Expired packages of peers deleted (claimed, never used).
    pub peer_expired: u64,
    /// One-time packages added.
    pub added: u64,
    /// Whether a new last-resort package replaced a missing, expired or
    /// served one.
    pub last_resort: bool,
}

/// Sweeps expired packages, ours and those claimed from peers (at `now_s`,
/// Unix seconds), tops the one-time
/// stock up to `config.stock`, and makes a last-resort package if there is
/// no unexpired one or it has been served. The new packages and their
/// private parts are added in one transaction; the packages are made
/// outside it (KeyPackage generation is the slow part, and writers are
/// serialised).
pub fn keep_stocked(
    store: &dyn Durable,
    local: &InstallationIdentity,
    config: &PoolConfig,
    now_s: u64,
) -> Result<Restock, SessionError> {
    let (expired, peer_expired, status) = durable::write(store, |w| {
        let expired = w.expire_key_packages(now_s)?;
        let peer_expired = w.expire_peer_key_packages(now_s)?;
        Ok((expired, peer_expired, w.key_package_status(now_s)?))
    })?;
    let missing = config.stock.saturating_sub(status.available);
    let last_resort = !status.has_last_resort || status.last_resort_used;
    let mut entries = Vec::new();
    for _ in 0..missing {
        let made = generate_key_package(local, KeyPackageKind::OneTime, config.lifetime_secs)?;
        entries.push(PoolEntry::from(&made));
    }
    if last_resort {
        let made = generate_key_package(local, KeyPackageKind::LastResort, config.lifetime_secs)?;
        entries.push(PoolEntry::from(&made));
    }
    if !entries.is_empty() {
        durable::write(store, |w| w.add_key_packages(&entries, now_s))?;
    }
    Ok(Restock {
        expired,
        peer_expired,
        added: missing,
        last_resort,
    })
}

/// Identity rotation (polyproto-mls: new KeyPackages with the new
/// credential): replaces the whole pool, in one transaction, with
/// `config.stock` fresh one-time packages of `local` and a fresh last
/// resort. Returns how many one-time packages it holds.
pub fn replace_all(
    store: &dyn Durable,
    local: &InstallationIdentity,
    config: &PoolConfig,
    now_s: u64,
) -> Result<u64, SessionError> {
    let mut entries = Vec::new();
    for _ in 0..config.stock {
        let made = generate_key_package(local, KeyPackageKind::OneTime, config.lifetime_secs)?;
        entries.push(PoolEntry::from(&made));
    }
    let made = generate_key_package(local, KeyPackageKind::LastResort, config.lifetime_secs)?;
    entries.push(PoolEntry::from(&made));
    durable::write(store, |w| w.replace_pool(&entries, now_s))?;
    Ok(config.stock)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use std::time::{SystemTime, UNIX_EPOCH};

    use strata_cascade::at_rest::StorageKey;
    use strata_cascade::{AccountIdentity, KeyPackageSecrets, MlsLayer};
    use strata_store::{KeySource, MemoryBackend, Store};

    use super::*;

    fn installation() -> InstallationIdentity {
        let mut rng = rand::rng();
        InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap()
    }

    fn now_s() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn memory_store() -> Store<MemoryBackend> {
        Store::open(
            MemoryBackend::new(),
            KeySource::Key(StorageKey::generate(&mut rand::rng())),
        )
        .unwrap()
    }

    fn small() -> PoolConfig {
        PoolConfig {
            stock: 6,
            refill_below: 2,
            lifetime_secs: 3600,
            ..PoolConfig::default()
        }
    }

    #[test]
    fn an_empty_pool_is_stocked_and_a_full_one_left_alone() {
        let store = memory_store();
        let (owner, peer) = (installation(), installation());
        let now = now_s();
        let done = keep_stocked(&store, &owner, &small(), now).unwrap();
        assert_eq!(
            done,
            Restock {
                expired: 0,
                peer_expired: 0,
                added: 6,
                last_resort: true
            }
        );
        let status = store.write(|w| w.key_package_status(now)).unwrap();
        assert_eq!((status.available, status.has_last_resort), (6, true));
        assert_eq!(
            keep_stocked(&store, &owner, &small(), now).unwrap(),
            Restock::default(),
            "nothing to do"
        );
        // What was stocked is real: a claimed package opens a Welcome.
        let claim = store.write(|w| w.claim_key_package(now, 2)).unwrap();
        let mut creator = MlsLayer::new(&peer, owner.peer_identity()).unwrap();
        let welcome = creator.create_group(&claim.package.bytes).unwrap();
        let secrets = KeyPackageSecrets::from_bytes(claim.secrets.as_bytes()).unwrap();
        let mut joiner = MlsLayer::with_key_package_secrets(&owner, peer.peer_identity(), &secrets).unwrap();
        joiner.join_group(&welcome).unwrap();
    }

    #[test]
    fn a_low_pool_is_refilled_and_a_served_last_resort_replaced() {
        let store = memory_store();
        let owner = installation();
        let now = now_s();
        keep_stocked(&store, &owner, &small(), now).unwrap();
        let mut low = None;
        for _ in 0..5 {
            low = store.write(|w| w.claim_key_package(now, 2)).unwrap().low.or(low);
        }
        let low = low.expect("the claims crossed the threshold");
        assert_eq!((low.available, low.last_resort_used), (1, false));
        let done = keep_stocked(&store, &owner, &small(), now).unwrap();
        assert_eq!((done.added, done.last_resort), (5, false));
        assert_eq!(store.write(|w| w.key_package_status(now)).unwrap().available, 6);

        // Exhaust the one-time stock; the last resort is served, then
        // replaced by the next restock.
        for _ in 0..7 {
            store.write(|w| w.claim_key_package(now, 2)).unwrap();
        }
        let status = store.write(|w| w.key_package_status(now)).unwrap();
        assert_eq!((status.available, status.last_resort_used), (0, true));
        let done = keep_stocked(&store, &owner, &small(), now).unwrap();
        assert_eq!((done.added, done.last_resort), (6, true));
        let status = store.write(|w| w.key_package_status(now)).unwrap();
        assert_eq!(
            (status.available, status.has_last_resort, status.last_resort_used),
            (6, true, false)
        );
    }

    #[test]
    fn rotation_replaces_the_whole_pool() {
        let store = memory_store();
        let owner = installation();
        let now = now_s();
        keep_stocked(&store, &owner, &small(), now).unwrap();
        // Serve the last resort, then add one-time packages without
        // replacing it: the pool holds 5 old one-time packages and an old,
        // served last resort.
        let claims: Vec<_> = (0..7)
            .map(|_| store.write(|w| w.claim_key_package(now, 2)).unwrap())
            .collect();
        let old_last_resort = claims[6].package.clone();
        assert!(old_last_resort.last_resort);
        let old: Vec<_> = (0..5)
            .map(|_| PoolEntry::from(&generate_key_package(&owner, KeyPackageKind::OneTime, 3600).unwrap()))
            .collect();
        store.write(|w| w.add_key_packages(&old, now)).unwrap();
        let status = store.write(|w| w.key_package_status(now)).unwrap();
        assert_eq!((status.available, status.last_resort_used), (5, true));

        assert_eq!(replace_all(&store, &owner, &small(), now).unwrap(), 6);
        let status = store.write(|w| w.key_package_status(now)).unwrap();
        assert_eq!(
            (status.available, status.has_last_resort, status.last_resort_used),
            (6, true, false),
            "only the new packages: the old ones left with the rotation"
        );
        let claims: Vec<_> = (0..7)
            .map(|_| store.write(|w| w.claim_key_package(now, 2)).unwrap())
            .collect();
        let last = &claims[6].package;
        assert!(last.last_resort);
        assert_ne!(last.key_ref, old_last_resort.key_ref);
        for claim in &claims[..6] {
            assert!(old.iter().all(|o| o.package.key_ref != claim.package.key_ref));
        }
    }

    #[test]
    fn expired_packages_are_swept_and_replaced() {
        let store = memory_store();
        let owner = installation();
        let now = now_s();
        // Lifetimes run on the wall clock (openmls): a stock that lives ten
        // seconds is expired half a minute on. (One second was too short on
        // a loaded machine: a package could expire before it was stored.)
        let short = PoolConfig {
            lifetime_secs: 10,
            ..small()
        };
        keep_stocked(&store, &owner, &short, now).unwrap();
        // And a package claimed from a peer, never used.
        let peer = installation();
        let claimed = generate_key_package(&peer, KeyPackageKind::OneTime, 1).unwrap();
        store
            .write(|w| w.receive_peer_key_package(&peer.peer_identity(), claimed.package.bytes(), now))
            .unwrap();
        let later = now + 30;
        let done = keep_stocked(&store, &owner, &small(), later).unwrap();
        assert_eq!(
            done,
            Restock {
                expired: 7,
                peer_expired: 1,
                added: 6,
                last_resort: true
            }
        );
        let peer_hex = peer.installation_id().to_hex();
        assert!(store.read(|r| r.peer_key_packages(&peer_hex)).unwrap().is_empty());
        // Only the new packages are left: nothing expired is ever served.
        let status = store.write(|w| w.key_package_status(later)).unwrap();
        assert_eq!((status.available, status.has_last_resort), (6, true));
        assert_eq!(store.write(|w| w.expire_key_packages(later)).unwrap(), 0);
    }
}
