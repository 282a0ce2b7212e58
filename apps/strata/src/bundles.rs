//! This node's bundle on libp2p, and the bundles of its contacts (issue 7).
//!
//! - **Publishing.** The installation pre-keys live in the store
//!   (`strata_session::prekeys`); [`Published`] signs them into a bundle
//!   whenever the libp2p transport re-broadcasts. They are replaced when
//!   the bundle's KeyPackage has less than half its lifetime left — at
//!   start, and then on a check every [`RENEWAL_CHECK`] while the node
//!   runs, which re-publishes at once (a peer holding the old bundle then
//!   gets the full handshake).
//! - **Following.** The transport follows the bundle topic of every
//!   contact, and of a contact URI given to `connect`; it keeps the newest
//!   verified bundle of each installation.
//! - **Using.** `connect` opens the session from a held bundle of the
//!   target installation (one round trip instead of three) and falls back
//!   to the full handshake when it holds none.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use strata_cascade::bundle::{VerifiedBundle, verify_bundle};
use strata_cascade::{InstallationId, InstallationIdentity, InstallationPreKeys};
use strata_session::prekeys;
use strata_transport::{Topic, Transport as _};
use strata_transport_libp2p::bundle::SourceError;
use strata_transport_libp2p::topic::bundle_topic;
use strata_transport_libp2p::{BundleConfig, BundleSource, Libp2pTransport};

use crate::error::{AppError, Result};
use crate::storage::NodeStore;

/// How often a running node checks whether its pre-keys are due for
/// renewal. With the default 24 h KeyPackage lifetime, renewal is due at
/// 12 h left, so the published KeyPackage never has less than 11 h.
pub(crate) const RENEWAL_CHECK: Duration = Duration::from_secs(3600);

/// This installation's bundle, signed on demand.
pub(crate) struct Published {
    identity: Arc<InstallationIdentity>,
    pre_keys: RwLock<InstallationPreKeys>,
    /// The account's other devices, from its device list.
    paired: RwLock<Vec<InstallationId>>,
}

impl Published {
    /// Lists `paired` (the account's other devices) from now on; when that
    /// changes the list, the pre-keys are renewed too, so the bundle's
    /// version rises (54/WAKU2-X3DH-SESSIONS: a paired or removed device
    /// is a new bundle version). True when the bundle changed and should
    /// be re-published. Blocking: a store write.
    pub(crate) fn set_paired(
        &self,
        store: &NodeStore,
        session: &strata_session::Config,
        mut paired: Vec<InstallationId>,
        now_ms: u64,
    ) -> Result<bool> {
        paired.sort_unstable();
        if *self.paired.read().unwrap_or_else(PoisonError::into_inner) == paired {
            return Ok(false);
        }
        let renewed = prekeys::rotate(store, &self.identity, session, now_ms)
            .map_err(|e| AppError::caused("cannot renew the bundle pre-keys", &e))?;
        tracing::info!(version = renewed.version(), ?paired, "bundle lists new paired devices");
        *self.pre_keys.write().unwrap_or_else(PoisonError::into_inner) = renewed;
        *self.paired.write().unwrap_or_else(PoisonError::into_inner) = paired;
        Ok(true)
    }

    /// Replaces the pre-keys (in the store first) when renewal is due;
    /// true when it did, and the bundle should be re-published. Blocking:
    /// a store write.
    pub(crate) fn renew_if_due(
        &self,
        store: &NodeStore,
        session: &strata_session::Config,
        now_ms: u64,
    ) -> Result<bool> {
        let due = renewal_due(
            &self.identity,
            &self.pre_keys.read().unwrap_or_else(PoisonError::into_inner),
            session,
            now_ms,
        );
        if !due {
            return Ok(false);
        }
        let renewed = prekeys::rotate(store, &self.identity, session, now_ms)
            .map_err(|e| AppError::caused("cannot renew the bundle pre-keys", &e))?;
        tracing::info!(version = renewed.version(), "bundle pre-keys renewed");
        *self.pre_keys.write().unwrap_or_else(PoisonError::into_inner) = renewed;
        Ok(true)
    }
}

impl BundleSource for Published {
    fn identity_key(&self) -> Vec<u8> {
        self.identity.account().identity_key().serialize().to_vec()
    }

    fn signed_bundle(&self, now_ms: u64) -> std::result::Result<Vec<u8>, SourceError> {
        let pre_keys = self.pre_keys.read().unwrap_or_else(PoisonError::into_inner);
        let paired = self.paired.read().unwrap_or_else(PoisonError::into_inner).clone();
        Ok(prekeys::signed_bundle(&self.identity, &pre_keys, now_ms, paired)?)
    }
}

/// The bundle configuration of the libp2p transport: publish ours (the
/// stored pre-keys, re-keyed if due) and follow every contact's. The
/// [`Published`] source is returned too, for [`renew_periodically`].
pub(crate) fn config(
    store: &NodeStore,
    identity: &Arc<InstallationIdentity>,
    session: &strata_session::Config,
    now_ms: u64,
) -> Result<(BundleConfig, Vec<Topic>, Arc<Published>)> {
    let pre_keys = prekeys::ensure(store, identity, session, now_ms)
        .map_err(|e| AppError::caused("cannot prepare the bundle", &e))?;
    let published = Arc::new(Published {
        identity: Arc::clone(identity),
        pre_keys: RwLock::new(pre_keys),
        paired: RwLock::new(paired_devices(store, identity)),
    });
    published.renew_if_due(store, session, now_ms)?;
    let verifier = Arc::new(|bytes: &[u8]| verify_bundle(bytes).map(|v| v.header().clone()));
    let contacts = store
        .read(|r| r.contacts())
        .map_err(|e| AppError::caused("cannot read the contacts", &e))?;
    let topics = contacts.iter().map(|c| bundle_topic(&c.identity_key)).collect();
    let source: Arc<dyn BundleSource> = published.clone();
    Ok((BundleConfig::new(verifier).with_source(source), topics, published))
}

/// The account's other devices, as its stored device list names them
/// (none before the node signed the first list).
pub(crate) fn paired_devices(store: &NodeStore, identity: &InstallationIdentity) -> Vec<InstallationId> {
    let key = identity.account().identity_key().serialize();
    let list = store.read(|r| r.device_list(&key)).ok().flatten();
    let mut paired: Vec<InstallationId> = list
        .and_then(|bytes| strata_cascade::devices::verify_device_list(&bytes).ok())
        .map(|l| l.installations().to_vec())
        .unwrap_or_default();
    paired.retain(|i| *i != identity.installation_id());
    paired
}

/// Renews the pre-keys whenever due, every `period`, and lists the
/// account's other devices whenever `paired` changes, re-publishing the
/// bundle after either; runs until aborted.
pub(crate) async fn renew_periodically(
    published: Arc<Published>,
    store: Arc<NodeStore>,
    session: strata_session::Config,
    libp2p: Libp2pTransport,
    period: Duration,
    mut paired: tokio::sync::watch::Receiver<Vec<InstallationId>>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut watching = true;
    loop {
        let devices = tokio::select! {
            _ = ticks.tick() => None,
            changed = paired.changed(), if watching => {
                watching = changed.is_ok();
                Some(paired.borrow_and_update().clone())
            }
        };
        let (published, store, session) = (Arc::clone(&published), Arc::clone(&store), session.clone());
        let renewed = tokio::task::spawn_blocking(move || match devices {
            Some(devices) => published.set_paired(&store, &session, devices, crate::ops::now_ms()),
            None => published.renew_if_due(&store, &session, crate::ops::now_ms()),
        })
        .await;
        match renewed {
            Ok(Ok(true)) => {
                if let Err(e) = libp2p.refresh_bundle().await {
                    tracing::warn!(error = %e, "cannot re-publish the renewed bundle");
                }
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "bundle pre-key renewal failed; retried at the next check"),
            Err(e) => tracing::warn!(error = %e, "bundle pre-key renewal stopped"),
        }
    }
}

/// Whether the published KeyPackage has less than half its lifetime left
/// (or no longer verifies: expired).
fn renewal_due(
    identity: &InstallationIdentity,
    pre_keys: &InstallationPreKeys,
    session: &strata_session::Config,
    now_ms: u64,
) -> bool {
    pre_keys.key_package_not_after_s(identity).map_or(true, |not_after| {
        not_after.saturating_sub(now_ms / 1000) < session.key_package_lifetime_secs / 2
    })
}

/// The verified bundle of `installation` (account `identity_key`) that the
/// transport holds, following the account's bundle topic from now on if it
/// did not yet.
pub(crate) async fn held(
    libp2p: &Libp2pTransport,
    identity_key: &[u8],
    installation: InstallationId,
) -> Option<VerifiedBundle> {
    if let Err(e) = libp2p.subscribe(&bundle_topic(identity_key)).await {
        tracing::debug!(error = %e, "cannot follow a bundle topic");
    }
    let held = libp2p.bundles_of(identity_key).await.ok()?;
    held.iter()
        .filter_map(|h| verify_bundle(&h.bytes).ok())
        .find(|b| b.peer().installation_id == installation)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use strata_cascade::AccountIdentity;
    use strata_store::{KeySource, RedbBackend, Store, load_or_create_key_file};

    use super::*;

    #[test]
    fn pre_keys_are_renewed_at_half_their_lifetime_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key_file(&dir.path().join("key")).unwrap();
        let backend = RedbBackend::open(&dir.path().join("store.redb")).unwrap();
        let store = Store::open(backend, KeySource::Key(key)).unwrap();
        let mut rng = rand::rng();
        let identity = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap());
        let session = strata_session::Config {
            key_package_lifetime_secs: 3600,
            ..strata_session::Config::default()
        };
        // KeyPackage lifetimes run on the wall clock.
        let now = crate::ops::now_ms();
        let (_, _, published) = config(&store, &identity, &session, now).unwrap();
        let version = |p: &Published| verify_bundle(&p.signed_bundle(now).unwrap()).unwrap().header().version;
        let first = version(&published);
        assert!(!published.renew_if_due(&store, &session, now + 60_000).unwrap());
        assert_eq!(version(&published), first);
        // 29 minutes left of the hour: due.
        assert!(published.renew_if_due(&store, &session, now + 31 * 60_000).unwrap());
        assert_eq!(version(&published), first + 1);
        let stored = prekeys::ensure(&store, &identity, &session, now).unwrap();
        assert_eq!(stored.version(), first + 1, "the renewal is in the store");
        // A restart publishes what the store holds, renewing nothing more.
        let (_, _, restarted) = config(&store, &identity, &session, now).unwrap();
        assert_eq!(version(&restarted), first + 1);
    }
}
