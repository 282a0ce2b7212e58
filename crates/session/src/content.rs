//! The inner catalog: what the plaintext of a `message` PDU is.
//!
//! The plaintext is one UTF-8 JSON object with a string `type`, camelCase
//! fields, byte fields in standard base64:
//!
//! | `type` | fields | stored, acknowledged |
//! |---|---|---|
//! | `text` | `text` | yes |
//! | `file-chunk` | `fileId`, `name`, `size`, `index`, `total`, `data` | yes |
//! | `ack` | — | no (it *is* an acknowledgement) |
//!
//! Every plaintext may also carry:
//! - `seq`: the sender's per-peer sequence number of a stored message
//!   (ordering, below);
//! - `sentMs`: the sender's clock, Unix milliseconds (informative);
//! - `acks`: ids of the peer's messages this side has committed to its inbox
//!   (end-to-end acknowledgements ride on any message);
//! - `kemKeyAck`: the highest ML-KEM key id of the peer this side installed
//!   (acknowledges a `rotation-timestamp-broadcast`).
//!
//! `text` and `file-chunk` are [`Content`]: the application's payload, kept
//! in the outbox until acknowledged and in the inbox once received.
//!
//! # Ordering
//!
//! Delivery is exactly once and in *arrival* order, without head-of-line
//! blocking: on an ordered, lossless link that is send order; after a loss
//! the retransmitted message arrives late. Every stored message carries the
//! sender's `seq` (1, 2, … per peer, never reused) so an application that
//! needs send order sorts by it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most bytes of one [`Content::FileChunk`]'s data. 48 KiB of data is 64 KiB
/// of base64, which the cascade output then splits into 8 KiB chunks.
pub const FILE_CHUNK_BYTES: usize = 48 * 1024;
/// Most bytes of a text message.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Most ids in one `acks` list.
pub const MAX_ACKS: usize = 512;

/// An application payload: what the user sends and receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Content {
    /// A text message.
    Text {
        /// The text.
        text: String,
    },
    /// One piece of a file. Files travel as many of these, each its own
    /// message, so neither side holds the whole file in memory.
    #[serde(rename_all = "camelCase")]
    FileChunk {
        /// Names the transfer; the same in every chunk.
        file_id: String,
        /// The file's name (no path).
        name: String,
        /// The whole file's size in bytes.
        size: u64,
        /// This chunk's position, from 0.
        index: u32,
        /// Number of chunks.
        total: u32,
        /// At most [`FILE_CHUNK_BYTES`] bytes of the file, at offset
        /// `index × FILE_CHUNK_BYTES`.
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
}

impl Content {
    /// Serialized, as stored in the outbox and inbox.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, integers and base64: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored or received payload.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Checks the caps a sender must respect.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        match self {
            Self::Text { text } if text.len() > MAX_TEXT_BYTES => Err("text over 1 MiB"),
            Self::FileChunk { data, .. } if data.len() > FILE_CHUNK_BYTES => Err("file chunk over 48 KiB"),
            Self::FileChunk { index, total, .. } if index >= total => Err("file chunk index out of range"),
            _ => Ok(()),
        }
    }
}

/// The whole plaintext: a [`Content`] or a bare `ack`, plus the fields every
/// plaintext may carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Plaintext {
    #[serde(flatten)]
    pub(crate) body: Body,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sent_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) acks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kem_key_ack: Option<u32>,
}

/// What a plaintext carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Body {
    Content(Content),
    Control(Control),
}

/// Plaintexts that are not stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub(crate) enum Control {
    Ack,
}

impl Plaintext {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a decrypted plaintext (authenticated, but still checked).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, &'static str> {
        let p: Self = serde_json::from_slice(bytes).map_err(|_| "plaintext is not a known JSON object")?;
        if p.acks.len() > MAX_ACKS || p.acks.iter().any(|a| a.len() > strata_proto::limits::MAX_ID) {
            return Err("too many or too long acks");
        }
        if let Body::Content(c) = &p.body {
            c.check()?;
            if p.seq.is_none() {
                return Err("content without seq");
            }
        }
        Ok(p)
    }
}

mod b64 {
    use super::*;

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() > super::FILE_CHUNK_BYTES.div_ceil(3) * 4 {
            return Err(serde::de::Error::custom("file chunk over 48 KiB"));
        }
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plaintext_forms_are_frozen() {
        let p = Plaintext {
            body: Body::Content(Content::Text { text: "hi".into() }),
            seq: Some(3),
            sent_ms: Some(7),
            acks: vec!["a".into()],
            kem_key_ack: None,
        };
        let json = String::from_utf8(p.to_bytes()).unwrap();
        assert_eq!(json, r#"{"type":"text","text":"hi","seq":3,"sentMs":7,"acks":["a"]}"#);
        assert_eq!(Plaintext::from_bytes(json.as_bytes()).unwrap(), p);
        let ack = Plaintext {
            body: Body::Control(Control::Ack),
            seq: None,
            sent_ms: None,
            acks: vec!["x".into()],
            kem_key_ack: Some(2),
        };
        let json = String::from_utf8(ack.to_bytes()).unwrap();
        assert_eq!(json, r#"{"type":"ack","acks":["x"],"kemKeyAck":2}"#);
        assert_eq!(Plaintext::from_bytes(json.as_bytes()).unwrap(), ack);
        let chunk = Content::FileChunk {
            file_id: "f".into(),
            name: "a.bin".into(),
            size: 3,
            index: 0,
            total: 1,
            data: vec![1, 2, 3],
        };
        assert_eq!(
            String::from_utf8(chunk.to_bytes()).unwrap(),
            r#"{"type":"file-chunk","fileId":"f","name":"a.bin","size":3,"index":0,"total":1,"data":"AQID"}"#
        );
    }

    #[test]
    fn bad_plaintexts_are_refused() {
        for bad in [
            &b"{}"[..],
            br#"{"type":"text"}"#,
            br#"{"type":"text","text":"no seq"}"#,
            br#"{"type":"bogus","seq":1}"#,
            b"not json",
            br#"{"type":"file-chunk","fileId":"f","name":"n","size":1,"index":2,"total":1,"data":"","seq":1}"#,
        ] {
            assert!(Plaintext::from_bytes(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
