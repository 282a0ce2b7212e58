//! This node's bundle on libp2p, and the bundles of its contacts (issue 7).
//!
//! - **Publishing.** The installation pre-keys live in the store
//!   (`strata_session::prekeys`); [`Published`] signs them into a bundle
//!   whenever the libp2p transport re-broadcasts. They are replaced at
//!   start when the bundle's KeyPackage has less than half its lifetime
//!   left (a peer holding the old bundle then gets the full handshake).
//! - **Following.** The transport follows the bundle topic of every
//!   contact, and of a contact URI given to `connect`; it keeps the newest
//!   verified bundle of each installation.
//! - **Using.** `connect` opens the session from a held bundle of the
//!   target installation (one round trip instead of three) and falls back
//!   to the full handshake when it holds none.

use std::sync::Arc;

use strata_cascade::bundle::{VerifiedBundle, verify_bundle};
use strata_cascade::{InstallationId, InstallationIdentity, InstallationPreKeys};
use strata_session::prekeys;
use strata_transport::{Topic, Transport as _};
use strata_transport_libp2p::bundle::SourceError;
use strata_transport_libp2p::topic::bundle_topic;
use strata_transport_libp2p::{BundleConfig, BundleSource, Libp2pTransport};

use crate::error::{AppError, Result};
use crate::storage::NodeStore;

/// This installation's bundle, signed on demand.
pub(crate) struct Published {
    identity: Arc<InstallationIdentity>,
    pre_keys: InstallationPreKeys,
}

impl BundleSource for Published {
    fn identity_key(&self) -> Vec<u8> {
        self.identity.account().identity_key().serialize().to_vec()
    }

    fn signed_bundle(&self, now_ms: u64) -> std::result::Result<Vec<u8>, SourceError> {
        Ok(prekeys::signed_bundle(
            &self.identity,
            &self.pre_keys,
            now_ms,
            Vec::new(),
        )?)
    }
}

/// The bundle configuration of the libp2p transport: publish ours (the
/// stored pre-keys, re-keyed if due) and follow every contact's.
pub(crate) fn config(
    store: &NodeStore,
    identity: &Arc<InstallationIdentity>,
    session: &strata_session::Config,
    now_ms: u64,
) -> Result<(BundleConfig, Vec<Topic>)> {
    let fail = |e: strata_session::SessionError| AppError::internal(format!("cannot prepare the bundle: {e}"));
    let mut pre_keys = prekeys::ensure(store, identity, session, now_ms).map_err(fail)?;
    if renewal_due(identity, &pre_keys, session, now_ms) {
        pre_keys = prekeys::rotate(store, identity, session, now_ms).map_err(fail)?;
        tracing::info!(version = pre_keys.version(), "bundle pre-keys renewed");
    }
    let published = Arc::new(Published {
        identity: Arc::clone(identity),
        pre_keys,
    });
    let verifier = Arc::new(|bytes: &[u8]| verify_bundle(bytes).map(|v| v.header().clone()));
    let contacts = store
        .read(|r| r.contacts())
        .map_err(|e| AppError::internal(format!("cannot read the contacts: {e}")))?;
    let topics = contacts.iter().map(|c| bundle_topic(&c.identity_key)).collect();
    Ok((BundleConfig::new(verifier).with_source(published), topics))
}

/// Whether the published KeyPackage has less than half its lifetime left
/// (or the stored pre-keys no longer make a bundle that verifies).
fn renewal_due(
    identity: &InstallationIdentity,
    pre_keys: &InstallationPreKeys,
    session: &strata_session::Config,
    now_ms: u64,
) -> bool {
    let Ok(bytes) = prekeys::signed_bundle(identity, pre_keys, now_ms, Vec::new()) else {
        return true;
    };
    let Ok(bundle) = verify_bundle(&bytes) else {
        return true;
    };
    let left = bundle.key_package().not_after_s().saturating_sub(now_ms / 1000);
    left < session.key_package_lifetime_secs / 2
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
