//! Pairing a new device: the pairing URI that `strata devices pair` shows,
//! and `strata devices join <uri>`, which makes a fresh data directory a
//! device of the account (`strata_session::pairing`).
//!
//! # Pairing URI
//!
//! ```text
//! strata-pair:<installation id>?secret=<base64url>&expires=<Unix ms>[&broker=<ws(s) URL>][&addr=<multiaddr>]...
//! ```
//!
//! The installation is the existing device (the new one reaches it there),
//! `secret` the one-time pairing secret (32 bytes, unpadded base64url),
//! `expires` when the offer lapses, `broker` the PeerJS broker the device
//! registers with, `addr` a libp2p address it listens on. Whoever holds the
//! URI until it expires can pair a device with the account: show it only
//! to the new device.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use strata_cascade::pairing::PairingSecret;
use strata_cascade::{AccountIdentity, InstallationId, InstallationIdentity};
use strata_session::pairing::{Joiner, PairingError, join, store_grant};
use strata_transport::PeerAddr;
use strata_transport::duo::Duo;

use crate::commands::Ctx;
use crate::config::BrokerChoice;
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::Local;
use crate::storage::{self, Unlock};

/// The pairing URI scheme.
const SCHEME: &str = "strata-pair";

/// How long `devices join` tries to reach the device.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// What a pairing URI names (see the module docs).
#[derive(Clone, PartialEq)]
pub(crate) struct PairingUri {
    /// The existing device.
    pub(crate) device: InstallationId,
    /// The offer's secret.
    pub(crate) secret: PairingSecret,
    /// When the offer lapses, Unix ms.
    pub(crate) expires_ms: u64,
    /// Its PeerJS broker.
    pub(crate) broker: Option<url::Url>,
    /// Its libp2p addresses.
    pub(crate) addrs: Vec<libp2p::Multiaddr>,
}

impl fmt::Debug for PairingUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingUri")
            .field("device", &self.device)
            .field("secret", &"[redacted]")
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

impl PairingUri {
    /// Parses `strata-pair:…`.
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URI: {e}"))?;
        if url.scheme() != SCHEME {
            return Err(format!("a pairing URI starts with `{SCHEME}:`"));
        }
        let device: InstallationId = url.path().parse().map_err(|e| format!("{e}"))?;
        let (mut secret, mut expires_ms, mut broker, mut addrs) = (None, None, None, Vec::new());
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "secret" => {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(value.as_bytes())
                        .map_err(|_| "the secret is not base64url")?;
                    secret = Some(PairingSecret::from_bytes(&bytes).ok_or("the secret is not 32 bytes")?);
                }
                "expires" => expires_ms = Some(value.parse().map_err(|_| "`expires` is not a number")?),
                "broker" => broker = Some(crate::config::parse_broker_url(&value)?),
                "addr" => addrs.push(
                    value
                        .parse()
                        .map_err(|e| format!("bad libp2p address {value:?}: {e}"))?,
                ),
                _ => {}
            }
        }
        Ok(Self {
            device,
            secret: secret.ok_or("no `secret`")?,
            expires_ms: expires_ms.ok_or("no `expires`")?,
            broker,
            addrs,
        })
    }
}

impl fmt::Display for PairingUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("secret", &URL_SAFE_NO_PAD.encode(self.secret.as_bytes()));
        query.append_pair("expires", &self.expires_ms.to_string());
        if let Some(broker) = &self.broker {
            query.append_pair("broker", broker.as_str());
        }
        for addr in &self.addrs {
            query.append_pair("addr", &addr.to_string());
        }
        write!(f, "{SCHEME}:{}?{}", self.device, query.finish())
    }
}

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
pub(crate) async fn join_device(ctx: &Ctx, text: &str) -> Result<Joined> {
    let uri = PairingUri::parse(text).map_err(|reason| {
        AppError::new(ErrorKind::Usage, format!("not a pairing URI: {reason}"))
            .hint("`strata devices pair` on your other device shows one")
    })?;
    ctx.dir.create()?;
    if ctx.dir.store_file().exists() {
        return Err(AppError::new(
            ErrorKind::AlreadyInitialized,
            format!("{} already has an identity", ctx.dir.root().display()),
        )
        .hint("pair from a new data directory (--data-dir)"));
    }
    if crate::ops::now_ms() >= uri.expires_ms {
        return Err(refused("the pairing URI expired"));
    }
    let installation = InstallationId::generate(&mut rand::rng());
    let addr = installation.to_hex();
    let (wire, mut stream, peerjs, libp2p) = transports(ctx, &uri, &addr).await?;
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
    let dir = ctx.dir.clone();
    let contacts = grant.contacts.len();
    let local = tokio::task::spawn_blocking(move || -> Result<Local> {
        let local = Local::from_installation(
            InstallationIdentity::generate_with_id(account, installation, &mut rand::rng())
                .map_err(|e| AppError::caused("cannot generate the installation keys", &e))?,
        );
        let store = storage::create(&dir, &Unlock::from_env()?)?;
        local.save(&store, &dir.store_file())?;
        store_grant(&store, &grant).map_err(|e| AppError::caused("cannot store what the device handed over", &e))?;
        Ok(local)
    })
    .await
    .map_err(|e| AppError::internal(format!("pairing task failed: {e}")))??;
    if !ctx.config_file.exists() {
        crate::paths::write_atomic(&ctx.config_file, crate::config::DEFAULT_FILE.as_bytes(), 0o600)?;
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
    ctx: &Ctx,
    uri: &PairingUri,
    addr: &str,
) -> Result<(
    crate::node::Wire,
    strata_transport::EventStream,
    Option<strata_transport_peerjs::PeerJsTransport>,
    Option<strata_transport_libp2p::Libp2pTransport>,
)> {
    let config = ctx.config_or_defaults()?;
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
        Some(choice) => Some(crate::node::start_peerjs(&network, &ctx.dir, addr, choice).await?),
        None => None,
    };
    let libp2p = match &network.libp2p {
        Some(net) => {
            let verifier = std::sync::Arc::new(|bytes: &[u8]| {
                strata_cascade::bundle::verify_bundle(bytes).map(|v| v.header().clone())
            });
            let bundles = strata_transport_libp2p::BundleConfig::new(verifier);
            let (t, s) = crate::node::start_libp2p(net, &ctx.dir, addr, (bundles, Vec::new())).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_uris_round_trip_and_say_what_is_wrong() {
        let uri = PairingUri {
            device: InstallationId::from_bytes([7; 16]),
            secret: PairingSecret::generate(&mut rand::rng()),
            expires_ms: 1_800_000_000_000,
            broker: Some("ws://127.0.0.1:9000/".parse().unwrap()),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        };
        let text = uri.to_string();
        assert!(
            text.starts_with("strata-pair:07070707070707070707070707070707?secret="),
            "{text}"
        );
        assert_eq!(PairingUri::parse(&text).unwrap(), uri);
        assert!(!format!("{uri:?}").contains(&URL_SAFE_NO_PAD.encode(uri.secret.as_bytes())));
        for (bad, why) in [
            (
                "strata:07070707070707070707070707070707?secret=AA&expires=1",
                "starts with",
            ),
            ("strata-pair:0707?secret=AA&expires=1", "32 hex"),
            ("strata-pair:07070707070707070707070707070707?expires=1", "secret"),
            (
                "strata-pair:07070707070707070707070707070707?secret=AAAA&expires=1",
                "32 bytes",
            ),
            ("strata-pair:07070707070707070707070707070707?secret=%%%", "base64url"),
        ] {
            let err = PairingUri::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
