//! WebRTC settings: ICE servers, the hermetic loopback network, timeouts,
//! and the webrtc-rs API built from them.

use std::time::Duration;

use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::dtls_transport::dtls_role::DTLSRole;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::peer_connection::configuration::RTCConfiguration;

/// A STUN or TURN server.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, ...
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: String,
    /// TURN password.
    pub credential: String,
}

/// Which addresses ICE gathers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum IceNetwork {
    /// Every non-loopback interface, IPv4 and IPv6 (webrtc's default).
    #[default]
    Interfaces,
    /// 127.0.0.1 only: hermetic tests on one machine, even one whose only
    /// interface is `lo` (webrtc-rs leaves loopback out by default).
    Loopback,
}

/// WebRTC settings for every peer connection of a transport.
#[derive(Clone, PartialEq, Debug)]
pub struct RtcConfig {
    /// STUN/TURN servers (none by default: host candidates only).
    pub ice_servers: Vec<IceServer>,
    /// Which local addresses become candidates.
    pub network: IceNetwork,
    /// Silence after which ICE reports `disconnected`; Strata treats that as
    /// the link being lost (PeerJS only logs it, so its `close` never fires).
    pub ice_disconnected_timeout: Duration,
    /// Silence after which ICE reports `failed`.
    pub ice_failed_timeout: Duration,
    /// STUN keepalive period while idle.
    pub ice_keepalive_interval: Duration,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            network: IceNetwork::Interfaces,
            // Prompt, yet clear of scheduling hiccups on a loaded machine: a
            // live peer answers the 1 s keepalives long before.
            ice_disconnected_timeout: Duration::from_secs(4),
            ice_failed_timeout: Duration::from_secs(8),
            ice_keepalive_interval: Duration::from_secs(1),
        }
    }
}

impl RtcConfig {
    /// The hermetic configuration: loopback only, no STUN/TURN.
    pub fn loopback() -> Self {
        Self {
            network: IceNetwork::Loopback,
            ..Self::default()
        }
    }

    pub(crate) fn api(&self) -> API {
        let mut engine = SettingEngine::default();
        // `.local` names cannot resolve in a hermetic or headless setup, and
        // mDNS sockets leaked on close before 0.17.
        engine.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        // As offerer Strata is the controlling agent and often first learns a
        // working pair as peer-reflexive; the 1 s default wait delays opening.
        engine.set_prflx_acceptance_min_wait(Some(Duration::ZERO));
        // The answerer is the controlled ICE agent and turns connected
        // first. As DTLS client (webrtc-rs's default) it would send its
        // ClientHello before the offerer has its DTLS endpoint: webrtc-rs
        // drops it ("mux: no endpoint") and retransmits only after 1 s, a
        // one-second stall on about one connect in seven. As DTLS server it
        // is listening before the offerer, connected a moment later, says
        // hello. (RFC 8842 lets the answerer pick either role.)
        // Only `Unspecified` is refused, and `Server` is not that.
        let _ = engine.set_answering_dtls_role(DTLSRole::Server);
        engine.set_ice_timeouts(
            Some(self.ice_disconnected_timeout),
            Some(self.ice_failed_timeout),
            Some(self.ice_keepalive_interval),
        );
        match self.network {
            IceNetwork::Interfaces => {
                engine.set_network_types(vec![NetworkType::Udp4, NetworkType::Udp6]);
            }
            IceNetwork::Loopback => {
                engine.set_network_types(vec![NetworkType::Udp4]);
                engine.set_include_loopback_candidate(true);
                engine.set_ip_filter(Box::new(|ip: std::net::IpAddr| ip.is_loopback()));
            }
        }
        APIBuilder::new().with_setting_engine(engine).build()
    }

    pub(crate) fn configuration(&self) -> RTCConfiguration {
        RTCConfiguration {
            ice_servers: self
                .ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect(),
            ..RTCConfiguration::default()
        }
    }
}

/// The first value of `a={attribute}:` in an SDP, e.g. the data m-line's mid.
pub(crate) fn sdp_attribute<'a>(sdp: &'a str, attribute: &str) -> Option<&'a str> {
    sdp.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix("a=")?
            .strip_prefix(attribute)?
            .strip_prefix(':')
    })
}

/// Adds `a=max-message-size:{max}` after `a=sctp-port` unless the SDP has
/// one. webrtc-rs does not advertise its limit (it reads messages into a
/// 65 535-byte buffer and closes the channel on a larger one), so peers
/// would assume RFC 8841's 64 KiB and could send one byte too many.
pub(crate) fn advertise_max_message_size(sdp: &str, max: usize) -> String {
    if sdp.lines().any(|l| l.starts_with("a=max-message-size:")) {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 32);
    for line in sdp.split_inclusive('\n') {
        out.push_str(line);
        if line.starts_with("a=sctp-port:") {
            out.push_str(&format!("a=max-message-size:{max}\r\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_the_message_size_once() {
        let sdp = "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\na=mid:0\r\n";
        let out = advertise_max_message_size(sdp, 65_535);
        assert_eq!(
            out,
            "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n\
             a=max-message-size:65535\r\na=mid:0\r\n"
        );
        assert_eq!(advertise_max_message_size(&out, 1), out);
    }

    #[test]
    fn reads_sdp_attributes() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";
        assert_eq!(sdp_attribute(sdp, "mid"), Some("0"));
        assert_eq!(sdp_attribute(sdp, "ice-ufrag"), Some("abcd"));
        assert_eq!(sdp_attribute(sdp, "ice-pwd"), None);
    }
}
