//! Starting the two transports: PeerJS/WebRTC (with its registration token)
//! and libp2p (with its host key), from the typed [`Network`] settings.

use std::path::{Path, PathBuf};

use strata_transport::{EventStream, PeerAddr};
use strata_transport_libp2p::Libp2pTransport;
use strata_transport_peerjs::{IceServer, PeerJsConfig, PeerJsTransport, RtcConfig, SignalingConfig};

use crate::config::{BrokerChoice, Libp2pNetwork, Network};
use crate::error::{AppError, ErrorKind, Result};
use crate::paths::{DataDir, write_atomic};

/// Registers with the PeerJS broker `choice`.
pub(crate) async fn start_peerjs(
    network: &Network,
    dir: &DataDir,
    addr: &str,
    choice: &BrokerChoice,
) -> Result<(PeerJsTransport, EventStream)> {
    let (mut signaling, loopback) = match choice {
        BrokerChoice::Embedded(socket) => {
            let host = if socket.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                socket.ip().to_string()
            };
            let mut s = SignalingConfig::new(host, socket.port());
            s.secure = false;
            (s, socket.ip().is_loopback())
        }
        BrokerChoice::External(url) => {
            if let Some(warning) = crate::config::broker_warning(url) {
                tracing::warn!("{warning}");
            }
            let host = url.host_str().unwrap_or_default().to_owned();
            let secure = url.scheme() == "wss";
            let port = url.port().unwrap_or(if secure { 443 } else { 80 });
            let mut s = SignalingConfig::new(host.clone(), port);
            s.secure = secure;
            s.path = url.path().to_owned();
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            (s, loopback)
        }
    };
    signaling.key = network.peerjs_key.clone();
    // The same token across restarts reclaims our id at once, even while
    // the broker still holds a crashed process's socket.
    signaling.token = Some(peerjs_token(&dir.root().join("peerjs.token"))?);
    let mut peerjs = PeerJsConfig::new(addr, signaling);
    // A broker on loopback only serves this machine, so its peers are
    // here too: loopback candidates (webrtc-rs leaves them out otherwise).
    peerjs.rtc = if loopback {
        RtcConfig::loopback()
    } else {
        RtcConfig::default()
    };
    peerjs.rtc.ice_servers = network
        .ice_servers
        .iter()
        .map(|s| IceServer {
            urls: vec![s.url.clone()],
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect();
    PeerJsTransport::start(peerjs).await.map_err(|e| {
        AppError::new(
            ErrorKind::Network,
            format!("cannot register with the PeerJS broker: {e}"),
        )
        .hint("check peerjs.broker in the config, or set peerjs.enabled = false")
    })
}

/// The PeerJS registration token, made once.
fn peerjs_token(path: &Path) -> Result<String> {
    if let Ok(token) = std::fs::read_to_string(path)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let token = hex::encode(bytes);
    write_atomic(path, token.as_bytes(), 0o600)?;
    Ok(token)
}

pub(crate) async fn start_libp2p(
    libp2p_net: &Libp2pNetwork,
    dir: &DataDir,
    addr: &str,
    (bundles, follow): (strata_transport_libp2p::BundleConfig, Vec<strata_transport::Topic>),
) -> Result<(Libp2pTransport, EventStream)> {
    let mut lp = strata_transport_libp2p::Config::new(PeerAddr::new(addr));
    lp.bundles = Some(bundles);
    lp.topics = follow;
    lp.listen.clone_from(&libp2p_net.listen);
    lp.bootstrap.clone_from(&libp2p_net.bootstrap);
    lp.mdns = libp2p_net.mdns;
    lp.keypair = Some(libp2p_keypair(&dir.root().join("libp2p.key"))?);
    // Keep recent messages for the peers we relay for, so one that was
    // offline gets them when it is back.
    lp.store = strata_transport_libp2p::StoreConfig::serving();
    Libp2pTransport::start(lp).await.map_err(|e| {
        AppError::new(ErrorKind::Network, format!("cannot start the libp2p transport: {e}"))
            .hint("check libp2p.listen in the config, or set libp2p.enabled = false")
    })
}

/// The libp2p host key, made once: it only secures hops between relays
/// (Strata's identity is in the store), but a stable one keeps the node's
/// `/p2p/…` address valid across restarts.
fn libp2p_keypair(path: &PathBuf) -> Result<libp2p::identity::Keypair> {
    if let Ok(bytes) = std::fs::read(path) {
        return libp2p::identity::Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            AppError::new(
                ErrorKind::Storage,
                format!("{} is not a libp2p key: {e}", path.display()),
            )
            .hint("remove it to get a new libp2p address")
        });
    }
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| AppError::internal(format!("cannot encode the libp2p key: {e}")))?;
    write_atomic(path, &bytes, 0o600)?;
    Ok(keypair)
}

/// The addresses the libp2p transport listens on, with `/p2p/<id>`.
/// Listeners come up asynchronously; a moment is enough on start.
pub(super) async fn reachable_addrs(t: &Libp2pTransport) -> Vec<libp2p::Multiaddr> {
    let id = t.peer_id();
    for _ in 0..20 {
        let addrs = t.listen_addrs().await.unwrap_or_default();
        if !addrs.is_empty() {
            return addrs
                .into_iter()
                .map(|a| match a.iter().last() {
                    Some(libp2p::multiaddr::Protocol::P2p(_)) => a,
                    _ => a.with(libp2p::multiaddr::Protocol::P2p(id)),
                })
                .collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Vec::new()
}
