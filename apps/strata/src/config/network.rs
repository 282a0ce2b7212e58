//! The network settings of the configuration as typed values: the PeerJS
//! broker, ICE servers (with TURN credentials), the libp2p addresses, and
//! the parsers loading checks them with.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::{Config, invalid_after_load};
use crate::error::Result;

/// Which PeerJS broker the node uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BrokerChoice {
    /// Run one inside the node, on this address.
    Embedded(SocketAddr),
    /// Use this one.
    External(url::Url),
}

/// A STUN or TURN server of `peerjs.ice_servers`, with the credentials a
/// TURN server needs split off its URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct IceServerConfig {
    /// The URL WebRTC is given, without credentials
    /// (`turn:host:3478?transport=udp`).
    pub(crate) url: String,
    /// The TURN username; empty for STUN.
    pub(crate) username: String,
    /// The TURN credential; empty for STUN.
    pub(crate) credential: String,
}

impl fmt::Debug for IceServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServerConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("credential", &"[redacted]")
            .finish()
    }
}

/// What the node's transports need of the configuration, as typed values:
/// parsed once, where the daemon starts, from what loading checked.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    /// The PeerJS broker, `None` with PeerJS off.
    pub(crate) broker: Option<BrokerChoice>,
    /// The broker key.
    pub(crate) peerjs_key: String,
    /// `peerjs.ice_servers`.
    pub(crate) ice_servers: Vec<IceServerConfig>,
    /// The libp2p transport, `None` when it is off.
    pub(crate) libp2p: Option<Libp2pNetwork>,
}

/// The `[libp2p]` section, parsed.
#[derive(Clone, Debug)]
pub(crate) struct Libp2pNetwork {
    /// Where to listen.
    pub(crate) listen: Vec<libp2p::Multiaddr>,
    /// Peers to dial at start.
    pub(crate) bootstrap: Vec<libp2p::Multiaddr>,
    /// Local discovery.
    pub(crate) mdns: bool,
}

impl Config {
    /// The network settings, typed (every value was checked at load).
    pub(crate) fn network(&self) -> Result<Network> {
        let ice_servers = self
            .peerjs
            .ice_servers
            .iter()
            .map(|s| parse_ice_server(s).map_err(|_| invalid_after_load("peerjs.ice_servers")))
            .collect::<Result<_>>()?;
        let multiaddrs = |key: &str, list: &[String]| {
            list.iter()
                .map(|a| a.parse().map_err(|_| invalid_after_load(key)))
                .collect::<Result<Vec<libp2p::Multiaddr>>>()
        };
        let libp2p = match self.libp2p.enabled {
            true => Some(Libp2pNetwork {
                listen: multiaddrs("libp2p.listen", &self.libp2p.listen)?,
                bootstrap: multiaddrs("libp2p.bootstrap", &self.libp2p.bootstrap)?,
                mdns: self.libp2p.mdns,
            }),
            false => None,
        };
        Ok(Network {
            broker: self.broker_choice()?,
            peerjs_key: self.peerjs.key.clone(),
            ice_servers,
            libp2p,
        })
    }
}

/// `stun:host[:port]`, `stuns:…`, or `turn:user:credential@host[:port][?…]`
/// (`turns:` alike). STUN takes no credentials; TURN needs them.
pub(crate) fn parse_ice_server(text: &str) -> std::result::Result<IceServerConfig, String> {
    let (scheme, rest) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a stun:, stuns:, turn: or turns: URL"))?;
    let turn = match scheme {
        "stun" | "stuns" => false,
        "turn" | "turns" => true,
        _ => return Err(format!("{text:?} is not a stun:, stuns:, turn: or turns: URL")),
    };
    let (userinfo, host) = match rest.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, rest),
    };
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{scheme}: URL {:?} has no host", redact(text)));
    }
    let url = format!("{scheme}:{host}");
    match (turn, userinfo) {
        (false, None) => Ok(IceServerConfig {
            url,
            username: String::new(),
            credential: String::new(),
        }),
        (false, Some(_)) => Err(format!(
            "{:?}: a {scheme}: server takes no username or credential",
            redact(text)
        )),
        (true, None) => Err(format!(
            "{text:?}: a {scheme}: server needs a username and credential, as \"{scheme}:user:credential@{host}\""
        )),
        (true, Some(userinfo)) => match userinfo.split_once(':') {
            Some((username, credential)) if !username.is_empty() && !credential.is_empty() => Ok(IceServerConfig {
                url,
                username: username.to_owned(),
                credential: credential.to_owned(),
            }),
            _ => Err(format!(
                "{:?}: the part before \"@\" must be \"user:credential\", both non-empty",
                redact(text)
            )),
        },
    }
}

/// An ICE server URL with its credential hidden, for error messages.
fn redact(text: &str) -> String {
    match (text.split_once(':'), text.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}:[credentials]@{host}"),
        _ => text.to_owned(),
    }
}

/// Why a broker URL given to `strata run` deserves a warning: `ws://` to a
/// host other than this machine carries signaling (SDP, ICE candidates,
/// peer ids) in the clear; P2 asks for WSS in production.
pub(crate) fn broker_warning(url: &url::Url) -> Option<String> {
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (url.scheme() == "ws" && !loopback).then(|| {
        format!(
            "signaling to {host} is unencrypted (ws://): the broker and anyone on the path see \
             peer ids, SDP and ICE candidates; use wss:// outside a test network"
        )
    })
}

/// A `ws://` or `wss://` broker URL with a host.
pub(crate) fn parse_broker_url(text: &str) -> std::result::Result<url::Url, String> {
    let url = url::Url::parse(text)
        .map_err(|e| format!("{text:?} is neither \"embedded\" nor a broker URL ({e}); e.g. \"wss://host:443/\""))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(format!("{text:?}: a broker URL starts with ws:// or wss://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?}: the broker URL has no host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_take_turn_credentials_and_refuse_the_rest() {
        let stun = parse_ice_server("stun:stun.example.org:3478").unwrap();
        assert_eq!(
            (stun.url.as_str(), stun.username.as_str(), stun.credential.as_str()),
            ("stun:stun.example.org:3478", "", "")
        );
        let turn = parse_ice_server("turn:alice:s3:cret@turn.example.org:3478?transport=udp").unwrap();
        assert_eq!(turn.url, "turn:turn.example.org:3478?transport=udp");
        assert_eq!((turn.username.as_str(), turn.credential.as_str()), ("alice", "s3:cret"));
        assert!(!format!("{turn:?}").contains("s3:cret"), "{turn:?}");
        for (bad, why) in [
            ("turn:turn.example.org:3478", "needs a username"),
            ("turn:alice@turn.example.org", "user:credential"),
            ("turn::pw@turn.example.org", "user:credential"),
            ("stun:alice:pw@stun.example.org", "takes no username"),
            ("turn:alice:pw@", "no host"),
            ("http://x", "not a stun:"),
            ("nope", "not a stun:"),
        ] {
            let e = parse_ice_server(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("pw@"), "credential in the error: {e}");
        }
    }

    #[test]
    fn only_cleartext_signaling_off_this_machine_is_warned_about() {
        let warn = |u: &str| broker_warning(&url::Url::parse(u).unwrap());
        assert!(warn("ws://broker.example.org:9000/").is_some_and(|w| w.contains("unencrypted")));
        assert!(warn("ws://192.0.2.7:9000/").is_some());
        for quiet in [
            "wss://broker.example.org/",
            "ws://127.0.0.1:9000/",
            "ws://localhost:1/",
            "ws://[::1]:1/",
        ] {
            assert_eq!(warn(quiet), None, "{quiet}");
        }
    }
}
