//! `strata devices join <uri>`: makes a fresh data directory a device of
//! the account whose device showed the pairing URI
//! ([`crate::identity::PairingUri`], `strata_session::pairing`).

use std::time::Duration;

use serde::Serialize;
use strata_cascade::{AccountIdentity, InstallationId, InstallationIdentity};
use strata_session::pairing::{Joiner, PairingError, join, store_grant};
use strata_transport::PeerAddr;
use strata_transport::duo::Duo;

use crate::config::{BrokerChoice, Config};
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::{Local, PairingUri};
use crate::paths::DataDir;
use crate::storage::{self, Unlock};

/// How long `devices join` tries to reach the device.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// What `devices join` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Joined {
    /// The account this device now belongs to.
    pub(crate) peer_id: String,
    /// This device.
    pub(crate) installation_id: String,
    /// The device it paired with.
    pub(crate) paired_with: String,
    /// Contacts handed over.
    pub(crate) contacts: usize,
}

/// `strata devices join <uri>`: pairs this (fresh) data directory with the
/// device the URI names, over its broker or its libp2p addresses, and
/// stores the account key, a new installation's own keys, the device list
/// and the contacts. Refused, with nothing written, when the directory has
/// an identity, the URI expired, or the device refuses.
pub(crate) async fn join_device(
    dir: &DataDir,
    config_file: &std::path::Path,
    config: &Config,
    text: &str,
) -> Result<Joined> {
    let uri = PairingUri::parse(text).map_err(|reason| {
        AppError::new(ErrorKind::Usage, format!("not a pairing URI: {reason}"))
            .hint("`strata devices pair` on your other device shows one")
    })?;
    dir.create()?;
    if dir.store_file().exists() {
        return Err(AppError::new(
            ErrorKind::AlreadyInitialized,
            format!("{} already has an identity", dir.root().display()),
        )
        .hint("pair from a new data directory (--data-dir)"));
    }
    if crate::ops::now_ms() >= uri.expires_ms {
        return Err(refused("the pairing URI expired"));
    }
    let installation = InstallationId::generate(&mut rand::rng());
    let addr = installation.to_hex();
    let (wire, mut stream, peerjs, libp2p) = transports(dir, config, &uri, &addr).await?;
    let device = PeerAddr::new(uri.device.to_hex());
    let joiner = Joiner::new(uri.secret.clone(), installation)
        .map_err(|e| AppError::caused("cannot prepare the pairing request", &e))?;
    let grant = join(&wire, &mut stream, &device, &joiner, JOIN_DEADLINE).await;
    if let Some(t) = peerjs {
        t.shutdown().await;
    }
    if let Some(t) = libp2p {
        t.shutdown().await;
    }
    let grant = grant.map_err(|e| match e {
        PairingError::Refused(_) | PairingError::BadGrant(_) => refused(&e.to_string()),
        PairingError::NoAnswer | PairingError::Transport(_) => {
            AppError::new(ErrorKind::Network, format!("cannot pair with {}: {e}", uri.device))
                .hint("is `strata run` up on that device? The URI names where it listens")
        }
    })?;
    let account = AccountIdentity::import(&grant.account).map_err(|_| refused("the account key granted"))?;
    let store_dir = dir.clone();
    let contacts = grant.contacts.len();
    let local = tokio::task::spawn_blocking(move || -> Result<Local> {
        let local = Local::from_installation(
            InstallationIdentity::generate_with_id(account, installation, &mut rand::rng())
                .map_err(|e| AppError::caused("cannot generate the installation keys", &e))?,
        );
        let store = storage::create(&store_dir, &Unlock::from_env()?)?;
        local.save(&store, &store_dir.store_file())?;
        store_grant(&store, &grant).map_err(|e| AppError::caused("cannot store what the device handed over", &e))?;
        Ok(local)
    })
    .await
    .map_err(|e| AppError::internal(format!("pairing task failed: {e}")))??;
    if !config_file.exists() {
        crate::paths::write_atomic(config_file, crate::config::DEFAULT_FILE.as_bytes(), 0o600)?;
    }
    Ok(Joined {
        peer_id: local.peer_id().to_string(),
        installation_id: installation.to_hex(),
        paired_with: uri.device.to_hex(),
        contacts,
    })
}

fn refused(what: &str) -> AppError {
    AppError::new(ErrorKind::VerificationFailed, format!("pairing refused: {what}"))
        .hint("nothing was written; show a fresh URI with `strata devices pair` on your other device")
}

/// Both transports, as far as the URI and the config allow, under
/// `addr` (the new installation's id): PeerJS with the URI's broker (or
/// an external one the config names), libp2p dialling the URI's
/// addresses.
async fn transports(
    dir: &DataDir,
    config: &Config,
    uri: &PairingUri,
    addr: &str,
) -> Result<(
    crate::node::Wire,
    strata_transport::EventStream,
    Option<strata_transport_peerjs::PeerJsTransport>,
    Option<strata_transport_libp2p::Libp2pTransport>,
)> {
    let mut network = config.network()?;
    network.broker = match (&uri.broker, &network.broker) {
        (Some(url), Some(_)) => Some(BrokerChoice::External(url.clone())),
        (None, Some(BrokerChoice::External(url))) => Some(BrokerChoice::External(url.clone())),
        _ => None,
    };
    if uri.addrs.is_empty() {
        network.libp2p = None;
    }
    let peerjs = match &network.broker {
        Some(choice) => Some(crate::node::start_peerjs(&network, dir, addr, choice).await?),
        None => None,
    };
    let libp2p = match &network.libp2p {
        Some(net) => {
            let verifier = std::sync::Arc::new(|bytes: &[u8]| {
                strata_cascade::bundle::verify_bundle(bytes).map(|v| v.header().clone())
            });
            let bundles = strata_transport_libp2p::BundleConfig::new(verifier);
            let (t, s) = crate::node::start_libp2p(net, dir, addr, (bundles, Vec::new())).await?;
            for a in &uri.addrs {
                if let Err(e) = t.dial(a.clone()).await {
                    tracing::info!(addr = %a, error = %e, "cannot dial the device's libp2p address");
                }
            }
            Some((t, s))
        }
        None => None,
    };
    if peerjs.is_none() && libp2p.is_none() {
        return Err(AppError::new(
            ErrorKind::NotAvailable,
            "no way to reach the device: the URI names no broker or address this node can use",
        )
        .hint("pair from a device whose `strata run` uses a broker or libp2p reachable from here"));
    }
    let handles = (
        peerjs.as_ref().map(|(t, _)| t.clone()),
        libp2p.as_ref().map(|(t, _)| t.clone()),
    );
    let (wire, stream) =
        Duo::new(peerjs, libp2p, 1024).map_err(|e| AppError::internal(format!("cannot join the transports: {e}")))?;
    Ok((wire, stream, handles.0, handles.1))
}
