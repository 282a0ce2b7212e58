//! The Waku relay envelope: `WakuMessage` (14/WAKU2-MESSAGE), as carried in
//! the `data` field of a gossipsub message on `/vac/waku/relay/2.0.0`.
//!
//! ```protobuf
//! syntax = "proto3";
//! message WakuMessage {
//!   bytes payload = 1;
//!   string content_topic = 2;
//!   optional uint32 version = 3;
//!   optional sint64 timestamp = 10;       // ns since the Unix epoch, zigzag
//!   optional bytes meta = 11;             // at most 64 bytes
//!   optional bytes rate_limit_proof = 21; // RLN; opaque to us
//!   optional bool ephemeral = 31;
//! }
//! ```
//!
//! The schema is the one of js-waku's `message.proto` and nwaku; the derive
//! below is hand-written (no build script) and frozen by golden bytes in the
//! tests. [`WakuMessage::decode_bounded`] is the only way remote bytes become
//! a `WakuMessage` in Strata: it checks the size before parsing and then the
//! relay validation rules that js-waku and nwaku apply (non-empty payload and
//! content topic, `meta` ≤ 64 bytes), so a message we accept is one every
//! Waku relay would forward.

use prost::Message as _;

/// 64/WAKU2-NETWORK: a serialized `WakuMessage` must not exceed 150 KiB
/// (nwaku's `DefaultMaxWakuMessageSize`).
pub const MAX_WAKU_MESSAGE_BYTES: usize = 150 * 1024;

/// nwaku's `MaxMetaAttrLength`.
pub const MAX_META_BYTES: usize = 64;

/// Ours: content topics longer than this are refused (Waku sets no cap; ours
/// are under 100 bytes).
pub const MAX_CONTENT_TOPIC_BYTES: usize = 256;

/// `version` 0: the payload is unencrypted at the Waku layer (Strata's frames
/// are already sealed by the session layer).
pub const VERSION_APP_ENCRYPTED: u32 = 0;

/// One Waku relay message (14/WAKU2-MESSAGE).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct WakuMessage {
    /// The application payload; relays reject an empty one.
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
    /// `/{application}/{version}/{topic-name}/{encoding}`.
    #[prost(string, tag = "2")]
    pub content_topic: String,
    /// 0: no Waku-level encryption; 1: 26/WAKU-PAYLOAD; 2: Noise.
    #[prost(uint32, optional, tag = "3")]
    pub version: Option<u32>,
    /// Sender's clock, nanoseconds since the Unix epoch (zigzag `sint64`).
    /// Always set and non-zero: the gossipsub message id is the SHA-256 of
    /// these bytes, so the timestamp keeps two equal payloads apart.
    #[prost(sint64, optional, tag = "10")]
    pub timestamp: Option<i64>,
    /// Up to 64 bytes of application metadata, unauthenticated.
    #[prost(bytes = "vec", optional, tag = "11")]
    pub meta: Option<Vec<u8>>,
    /// An RLN proof; carried, never interpreted.
    #[prost(bytes = "vec", optional, tag = "21")]
    pub rate_limit_proof: Option<Vec<u8>>,
    /// The sender asks stores not to keep this message (unauthenticated).
    #[prost(bool, optional, tag = "31")]
    pub ephemeral: Option<bool>,
}

/// Why bytes received as a `WakuMessage` were refused. All variants are bad
/// peer input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WakuError {
    /// Over [`MAX_WAKU_MESSAGE_BYTES`]; refused before parsing.
    #[error("WakuMessage of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not a valid protobuf encoding of `WakuMessage`.
    #[error("malformed WakuMessage: {0}")]
    Malformed(String),
    /// The payload is empty (js-waku and nwaku reject these).
    #[error("WakuMessage has an empty payload")]
    EmptyPayload,
    /// The content topic is empty, too long or not
    /// `/{app}/{version}/{name}/{encoding}`.
    #[error("invalid content topic: {0}")]
    InvalidContentTopic(&'static str),
    /// `meta` is longer than [`MAX_META_BYTES`].
    #[error("meta of {0} bytes exceeds {MAX_META_BYTES}")]
    MetaTooLong(usize),
}

impl WakuMessage {
    /// Decodes and validates a received message: size first, then the
    /// protobuf, then the relay rules (non-empty payload, well-formed content
    /// topic, bounded `meta`).
    pub fn decode_bounded(bytes: &[u8]) -> Result<Self, WakuError> {
        if bytes.len() > MAX_WAKU_MESSAGE_BYTES {
            return Err(WakuError::TooLarge {
                len: bytes.len(),
                max: MAX_WAKU_MESSAGE_BYTES,
            });
        }
        let message = Self::decode(bytes).map_err(|e| WakuError::Malformed(e.to_string()))?;
        message.validate()?;
        Ok(message)
    }

    /// Checks the relay rules without the size cap (see
    /// [`decode_bounded`](Self::decode_bounded)).
    pub fn validate(&self) -> Result<(), WakuError> {
        if self.payload.is_empty() {
            return Err(WakuError::EmptyPayload);
        }
        validate_content_topic(&self.content_topic)?;
        if let Some(meta) = &self.meta
            && meta.len() > MAX_META_BYTES
        {
            return Err(WakuError::MetaTooLong(meta.len()));
        }
        Ok(())
    }

    /// The protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// Checks the 23/WAKU2-TOPICS content-topic shape
/// `/{application}/{version}/{topic-name}/{encoding}`, optionally preceded
/// by a generation field (`/{generation}/…`), every field non-empty.
pub fn validate_content_topic(topic: &str) -> Result<(), WakuError> {
    if topic.is_empty() {
        return Err(WakuError::InvalidContentTopic("empty"));
    }
    if topic.len() > MAX_CONTENT_TOPIC_BYTES {
        return Err(WakuError::InvalidContentTopic("too long"));
    }
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(WakuError::InvalidContentTopic("must start with '/'"));
    };
    let fields: Vec<&str> = rest.split('/').collect();
    if !(4..=5).contains(&fields.len()) {
        return Err(WakuError::InvalidContentTopic("expected 4 or 5 '/'-separated fields"));
    }
    if fields.iter().any(|f| f.is_empty()) {
        return Err(WakuError::InvalidContentTopic("empty field"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample() -> WakuMessage {
        WakuMessage {
            payload: b"hi".to_vec(),
            content_topic: "/strata/1/x/proto".into(),
            version: Some(VERSION_APP_ENCRYPTED),
            timestamp: Some(1_795_323_512_627_890_393),
            meta: Some(b"meta".to_vec()),
            rate_limit_proof: None,
            ephemeral: Some(true),
        }
    }

    /// The encoding is frozen against bytes built independently (a
    /// hand-written protobuf encoder in Python): tags 1, 2, 3, 10 (zigzag
    /// `sint64`), 11 and 31, and `version = 0` present.
    #[test]
    fn golden_bytes() {
        let expected = "0a02686912112f7374726174612f312f782f70726f746f180050b2a3bcb1a0cea2ea315a046d657461f80101";
        let bytes = sample().to_bytes();
        assert_eq!(hex_string(&bytes), expected);
        assert_eq!(WakuMessage::decode_bounded(&bytes).unwrap(), sample());
    }

    #[test]
    fn hostile_input_is_a_typed_error() {
        let too_big = vec![0u8; MAX_WAKU_MESSAGE_BYTES + 1];
        assert_eq!(
            WakuMessage::decode_bounded(&too_big),
            Err(WakuError::TooLarge {
                len: MAX_WAKU_MESSAGE_BYTES + 1,
                max: MAX_WAKU_MESSAGE_BYTES
            })
        );
        assert!(matches!(
            WakuMessage::decode_bounded(&[0xff, 0xff, 0xff, 0x01]),
            Err(WakuError::Malformed(_))
        ));
        // A length prefix pointing past the end.
        assert!(matches!(
            WakuMessage::decode_bounded(&[0x0a, 0x7f, 0x00]),
            Err(WakuError::Malformed(_))
        ));
        let empty = WakuMessage {
            payload: Vec::new(),
            ..sample()
        };
        assert_eq!(
            WakuMessage::decode_bounded(&empty.to_bytes()),
            Err(WakuError::EmptyPayload)
        );
        let long_meta = WakuMessage {
            meta: Some(vec![0; MAX_META_BYTES + 1]),
            ..sample()
        };
        assert_eq!(
            WakuMessage::decode_bounded(&long_meta.to_bytes()),
            Err(WakuError::MetaTooLong(MAX_META_BYTES + 1))
        );
        for topic in ["", "strata/1/x/proto", "/strata/1/proto", "/a//b/c", "/a/b/c/d/e/f"] {
            let bad = WakuMessage {
                content_topic: topic.into(),
                ..sample()
            };
            assert!(
                matches!(
                    WakuMessage::decode_bounded(&bad.to_bytes()),
                    Err(WakuError::InvalidContentTopic(_))
                ),
                "{topic:?}"
            );
        }
        // Generation-prefixed topics and js-waku's keep-alive topic are valid.
        validate_content_topic("/0/strata/1/x/proto").unwrap();
        validate_content_topic("/relay-ping/1/ping/null").unwrap();
    }

    fn hex_string(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
