//! The PeerJS broker wire protocol (`peer` 1.0.2 / `peerjs` 1.5.5).
//!
//! Every frame on the broker WebSocket is a JSON text message
//! `{"type", "src"?, "dst"?, "payload"?}`. Clients send `{type, dst,
//! payload}`; the broker overwrites `src` with the sender's registered id and
//! forwards only those four fields. The payloads of `OFFER`, `ANSWER` and
//! `CANDIDATE` are opaque to the broker and typed here for the data-channel
//! side ([`OfferPayload`], [`AnswerPayload`], [`CandidatePayload`]).
//!
//! Only SDP and ICE ever cross the broker: no payload here carries
//! application data.

use serde::{Deserialize, Serialize};

/// Longest signaling message either side accepts (SDP with many candidates
/// stays far below it).
pub const MAX_SIGNAL_MESSAGE: usize = 64 * 1024;

/// A broker message type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum MessageType {
    /// Broker → client: registration accepted (fresh ids only).
    Open,
    /// Client → broker: liveness; the only thing that keeps a client alive.
    Heartbeat,
    /// SDP offer, relayed.
    Offer,
    /// SDP answer, relayed.
    Answer,
    /// ICE candidate, relayed.
    Candidate,
    /// The peer `src` is gone (or a client leaving).
    Leave,
    /// A message to `src` could not be delivered in time.
    Expire,
    /// Broker error; the socket is closed after it.
    Error,
    /// The id is registered with another token.
    IdTaken,
    /// Legacy cloud message (never sent by `peer` 1.0.2).
    InvalidKey,
    /// Anything else: ignored by both sides.
    #[serde(other)]
    Unknown,
}

/// One broker frame.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Message {
    /// The message type.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The sender's id (set by the broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// The destination id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// The type's payload, opaque to the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

impl Message {
    /// A message with no addresses or payload (`OPEN`, `HEARTBEAT`).
    pub fn bare(kind: MessageType) -> Self {
        Self {
            kind,
            src: None,
            dst: None,
            payload: None,
        }
    }

    /// A client → broker message to `dst`.
    pub fn to(kind: MessageType, dst: &str, payload: serde_json::Value) -> Self {
        Self {
            kind,
            src: None,
            dst: Some(dst.to_owned()),
            payload: Some(payload),
        }
    }

    /// A broker `ERROR`/`ID-TAKEN` with `{msg}`.
    pub fn error(kind: MessageType, msg: &str) -> Self {
        Self {
            kind,
            src: None,
            dst: None,
            payload: Some(serde_json::json!({ "msg": msg })),
        }
    }

    /// Parses one frame, refusing oversized input before parsing it.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        if text.len() > MAX_SIGNAL_MESSAGE {
            return Err(ProtocolError::TooLarge(text.len()));
        }
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // Serializing this type cannot fail: every field is plain JSON.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `payload.msg` of an `ERROR`/`ID-TAKEN`.
    pub fn error_text(&self) -> Option<&str> {
        self.payload.as_ref()?.get("msg")?.as_str()
    }

    /// Decodes the payload as `T`.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProtocolError> {
        let payload = self.payload.clone().ok_or(ProtocolError::MissingPayload)?;
        serde_json::from_value(payload).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }
}

/// Why a broker frame or payload was refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame is larger than [`MAX_SIGNAL_MESSAGE`].
    #[error("signaling message of {0} bytes is too large")]
    TooLarge(usize),
    /// Not the JSON shape expected.
    #[error("malformed signaling message: {0}")]
    Malformed(String),
    /// The message type needs a payload.
    #[error("signaling message has no payload")]
    MissingPayload,
}

/// `RTCSessionDescriptionInit` as JSON: `{"type": "offer"|"answer", "sdp"}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SessionDescription {
    /// `"offer"` or `"answer"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The SDP text.
    pub sdp: String,
}

/// The connection type of a PeerJS payload: Strata only speaks `data`.
pub const CONNECTION_TYPE_DATA: &str = "data";

/// The payload of a DataConnection `OFFER`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferPayload {
    /// The offer.
    pub sdp: SessionDescription,
    /// `"data"` or `"media"`.
    #[serde(rename = "type")]
    pub connection_type: String,
    /// `"dc_" + random`, unique per connection.
    pub connection_id: String,
    /// The channel label (defaults to the connection id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Ordered channel when true; PeerJS defaults to false (unordered).
    #[serde(default)]
    pub reliable: bool,
    /// The serializer name (`"binary"`, `"json"`, `"raw"`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serialization: Option<String>,
    /// Free-form application metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// The payload of an `ANSWER`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerPayload {
    /// The answer.
    pub sdp: SessionDescription,
    /// `"data"`.
    #[serde(rename = "type")]
    pub connection_type: String,
    /// The offer's connection id.
    pub connection_id: String,
}

/// `RTCIceCandidate.toJSON()`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// `candidate:...` (node-datachannel sends `a=candidate:...`).
    pub candidate: String,
    /// The media id the candidate belongs to.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// The m-line index (null from node-datachannel).
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_m_line_index: Option<u16>,
    /// The ICE ufrag.
    #[serde(default)]
    pub username_fragment: Option<String>,
}

impl IceCandidate {
    /// The candidate line without an `a=` prefix, as webrtc-rs wants it.
    pub fn normalized(&self) -> &str {
        self.candidate.strip_prefix("a=").unwrap_or(&self.candidate)
    }
}

/// The payload of a `CANDIDATE`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidatePayload {
    /// The candidate.
    pub candidate: IceCandidate,
    /// `"data"`.
    #[serde(rename = "type")]
    pub connection_type: String,
    /// The connection it belongs to.
    pub connection_id: String,
}

/// Peer ids the PeerJS client accepts for itself:
/// `^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$`, capped at 64 bytes.
pub fn is_valid_peer_id(id: &str) -> bool {
    if id.is_empty() || id.len() > 64 {
        return false;
    }
    let mut previous_separator = true;
    for c in id.chars() {
        if c.is_ascii_alphanumeric() {
            previous_separator = false;
        } else if matches!(c, ' ' | '_' | '-') && !previous_separator {
            previous_separator = true;
        } else {
            return false;
        }
    }
    !previous_separator
}

/// A PeerJS-style random base-36 token (`Math.random().toString(36).slice(2)`):
/// 11 characters of `[0-9a-z]`, used for broker tokens and connection ids.
pub(crate) fn random_token() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..11)
        .map(|_| {
            let i = rand::random_range(0..ALPHABET.len());
            ALPHABET.get(i).map_or('0', |&b| char::from(b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_captured_frames() {
        let offer = r#"{"type":"OFFER","src":"alice","dst":"bob","payload":{
            "sdp":{"type":"offer","sdp":"v=0\r\n"},"type":"data","connectionId":"dc_okc7o1rm9ym",
            "metadata":{"hi":1},"label":"dc_okc7o1rm9ym","reliable":false,"serialization":"binary"}}"#;
        let message = Message::parse(offer).unwrap();
        assert_eq!(message.kind, MessageType::Offer);
        assert_eq!(message.src.as_deref(), Some("alice"));
        let payload: OfferPayload = message.payload_as().unwrap();
        assert_eq!(payload.connection_id, "dc_okc7o1rm9ym");
        assert_eq!(payload.serialization.as_deref(), Some("binary"));
        assert!(!payload.reliable);
        assert_eq!(payload.metadata, Some(serde_json::json!({"hi": 1})));

        let candidate = r#"{"type":"CANDIDATE","src":"n","dst":"r","payload":{"candidate":{
            "candidate":"a=candidate:1 1 UDP 2114977791 192.0.2.2 50413 typ host","sdpMLineIndex":null,
            "sdpMid":"0","usernameFragment":null},"type":"data","connectionId":"dc_x"}}"#;
        let payload: CandidatePayload = Message::parse(candidate).unwrap().payload_as().unwrap();
        assert_eq!(
            payload.candidate.normalized(),
            "candidate:1 1 UDP 2114977791 192.0.2.2 50413 typ host"
        );
        assert_eq!(payload.candidate.sdp_m_line_index, None);

        for (text, kind) in [
            (r#"{"type":"OPEN"}"#, MessageType::Open),
            (
                r#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#,
                MessageType::IdTaken,
            ),
            (r#"{"type":"EXPIRE","src":"ghost","dst":"me"}"#, MessageType::Expire),
            (r#"{"type":"SOMETHING-NEW"}"#, MessageType::Unknown),
        ] {
            assert_eq!(Message::parse(text).unwrap().kind, kind);
        }
    }

    #[test]
    fn serializes_like_peerjs() {
        assert_eq!(
            Message::bare(MessageType::Heartbeat).to_text(),
            r#"{"type":"HEARTBEAT"}"#
        );
        let error = Message::error(MessageType::IdTaken, "ID is taken");
        assert_eq!(
            error.to_text(),
            r#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#
        );
        assert_eq!(error.error_text(), Some("ID is taken"));
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert!(matches!(Message::parse("not json"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(
            Message::parse(r#"{"payload":1}"#),
            Err(ProtocolError::Malformed(_))
        ));
        let huge = format!(r#"{{"type":"OFFER","payload":"{}"}}"#, "x".repeat(MAX_SIGNAL_MESSAGE));
        assert!(matches!(Message::parse(&huge), Err(ProtocolError::TooLarge(_))));
        let no_payload = Message::parse(r#"{"type":"OFFER"}"#).unwrap();
        assert_eq!(
            no_payload.payload_as::<OfferPayload>().unwrap_err(),
            ProtocolError::MissingPayload
        );
    }

    #[test]
    fn peer_id_rule() {
        for ok in ["a", "rust1", "node-1234", "a_b c-d"] {
            assert!(is_valid_peer_id(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "a/b", "ü", &"x".repeat(65)] {
            assert!(!is_valid_peer_id(bad), "{bad}");
        }
    }
}
