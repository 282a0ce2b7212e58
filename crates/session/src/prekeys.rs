//! This installation's bundle pre-keys: made once, kept (sealed) in the
//! store beside the identity, replaced on re-keying, and signed into the
//! bundle the app broadcasts (over libp2p: `strata-transport-libp2p`'s
//! `BundleSource`). A [`crate::PeerMachine`] seeds the layers of a session
//! that a peer opens from that bundle with them (see the crate docs,
//! "Opening from a bundle").

use strata_cascade::bundle::sign_bundle;
use strata_cascade::{InstallationId, InstallationIdentity, InstallationPreKeys};

use crate::config::Config;
use crate::durable::{self, Durable};
use crate::error::SessionError;

/// The pre-keys in the store, or (first use) a fresh set of version 1,
/// stored before they are returned.
pub fn ensure(
    store: &dyn Durable,
    local: &InstallationIdentity,
    config: &Config,
    now_ms: u64,
) -> Result<InstallationPreKeys, SessionError> {
    if let Some(bytes) = durable::read(store, |r| r.pre_keys())? {
        return Ok(InstallationPreKeys::import(&bytes)?);
    }
    replace(store, local, config, 1, now_ms)
}

/// Re-keys: a fresh set with the next version replaces the stored one.
/// Bundles of older versions are refused from then on, and a peer that
/// opens from one gets the full handshake instead.
pub fn rotate(
    store: &dyn Durable,
    local: &InstallationIdentity,
    config: &Config,
    now_ms: u64,
) -> Result<InstallationPreKeys, SessionError> {
    let version = ensure(store, local, config, now_ms)?.version().saturating_add(1);
    replace(store, local, config, version, now_ms)
}

fn replace(
    store: &dyn Durable,
    local: &InstallationIdentity,
    config: &Config,
    version: u64,
    now_ms: u64,
) -> Result<InstallationPreKeys, SessionError> {
    let pre_keys = InstallationPreKeys::generate(
        local,
        version,
        config.key_package_lifetime_secs,
        now_ms,
        &mut rand::rng(),
    )?;
    let bytes = pre_keys.export()?;
    durable::write(store, |w| w.set_pre_keys(bytes.as_bytes()))?;
    Ok(pre_keys)
}

/// This installation's bundle, signed now (`now_ms`), listing `paired`.
pub fn signed_bundle(
    local: &InstallationIdentity,
    pre_keys: &InstallationPreKeys,
    now_ms: u64,
    paired: Vec<InstallationId>,
) -> Result<Vec<u8>, SessionError> {
    let contents = pre_keys.contents(now_ms, paired)?;
    Ok(sign_bundle(local, &contents, &mut rand::rng())?)
}
