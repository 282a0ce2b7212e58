//! PeerJS DataConnection serializations and how Strata frames map onto them.
//!
//! A Strata frame is opaque bytes. On the data channel it becomes:
//!
//! | mode | frame → channel | channel → frame |
//! |---|---|---|
//! | `binary` (PeerJS's default, Strata's choice) | one BinaryPack *binary* value, chunked above [`CHUNK_MTU`](crate::binarypack::CHUNK_MTU) | a binary value as is; a string as its UTF-8; any other value as its JSON text |
//! | `json` | the frame, which must be UTF-8 JSON, in a binary message | the UTF-8 JSON text |
//! | `raw` | the frame in a binary message | the message's bytes (text messages as UTF-8) |
//!
//! So a PeerJS app that sends objects reaches Rust as JSON, and one that sends
//! `Uint8Array`s reaches it byte-exact. Only `binary` chunks, so only `binary`
//! carries frames larger than one SCTP message.

use bytes::Bytes;

use crate::binarypack::{self, DecodeError, Message, Reassembler, ReassemblyLimits, Value};

/// A DataConnection serialization, as named in the OFFER's `serialization`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Serialization {
    /// BinaryPack, chunked above 16 300 bytes (`"binary"`; PeerJS also
    /// accepts `"default"` and `"binary-utf8"` for it).
    #[default]
    Binary,
    /// UTF-8 JSON in binary messages (`"json"`).
    Json,
    /// Messages as they are (`"raw"`).
    Raw,
}

impl Serialization {
    /// The value PeerJS puts in an OFFER for this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Serialization::Binary => "binary",
            Serialization::Json => "json",
            Serialization::Raw => "raw",
        }
    }

    /// Parses an OFFER's `serialization`; `None` for modes a plain PeerJS
    /// `Peer` cannot speak either (e.g. `"MsgPack"`).
    pub fn from_offer(value: &str) -> Option<Self> {
        match value {
            "binary" | "default" | "binary-utf8" => Some(Serialization::Binary),
            "json" => Some(Serialization::Json),
            "raw" => Some(Serialization::Raw),
            _ => None,
        }
    }
}

impl std::fmt::Display for Serialization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One data-channel message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChannelMessage {
    /// A text (UTF-8) message rather than a binary one.
    pub is_text: bool,
    /// The message body.
    pub data: Bytes,
}

impl ChannelMessage {
    /// A binary message.
    pub fn binary(data: Bytes) -> Self {
        Self { is_text: false, data }
    }
}

/// What an incoming message meant.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Inbound {
    /// A complete frame.
    Frame(Bytes),
    /// Part of a chunked frame; more will follow.
    Partial,
    /// The peer closed the connection gracefully.
    Close,
}

/// Why a message or frame could not be translated.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A `binary` message is not valid BinaryPack (or breaks a cap).
    #[error(transparent)]
    BinaryPack(#[from] DecodeError),
    /// A `json` message is not UTF-8.
    #[error("json message is not UTF-8")]
    NotUtf8,
    /// A `json` frame to send is not JSON.
    #[error("the json serialization carries only JSON frames")]
    NotJson,
    /// The frame needs more than one message, which this mode cannot do.
    #[error("frame of {len} bytes exceeds the {max}-byte message limit of the {mode} serialization")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The largest frame this mode can send.
        max: usize,
        /// The mode.
        mode: Serialization,
    },
}

/// Encodes frames into messages and decodes messages into frames for one
/// DataConnection.
#[derive(Debug)]
pub struct Codec {
    mode: Serialization,
    /// Largest single message we send (the SCTP message size).
    max_message: usize,
    /// Size of BinaryPack chunks we send.
    chunk_mtu: usize,
    next_chunk_id: u64,
    reassembler: Reassembler,
    max_frame: usize,
}

impl Codec {
    /// A codec for `mode` that accepts and sends frames up to `max_frame`
    /// bytes, sends messages of at most `max_message` bytes and chunks
    /// `binary` values at `chunk_mtu`.
    pub fn new(mode: Serialization, max_frame: usize, max_message: usize, chunk_mtu: usize) -> Self {
        // A chunk map adds at most 40 bytes to its piece.
        let chunk_mtu = chunk_mtu.clamp(1, max_message.saturating_sub(40).max(1));
        Self {
            mode,
            max_message,
            chunk_mtu,
            next_chunk_id: 1,
            // Packing adds 5 bytes; JSON conversion of a non-binary value can
            // grow it, which the frame cap below catches.
            reassembler: Reassembler::new(ReassemblyLimits::for_message_size(max_frame.saturating_add(64))),
            max_frame,
        }
    }

    /// The serialization.
    pub fn mode(&self) -> Serialization {
        self.mode
    }

    /// The messages that carry `frame`.
    pub fn encode(&mut self, frame: &Bytes) -> Result<Vec<ChannelMessage>, CodecError> {
        match self.mode {
            Serialization::Binary => {
                let id = self.next_chunk_id;
                let messages = binarypack::encode_bin_messages(frame, id, self.chunk_mtu);
                if messages.len() > 1 {
                    self.next_chunk_id = self.next_chunk_id.wrapping_add(1).max(1);
                }
                Ok(messages.into_iter().map(ChannelMessage::binary).collect())
            }
            Serialization::Json => {
                if serde_json::from_slice::<serde::de::IgnoredAny>(frame).is_err() {
                    return Err(CodecError::NotJson);
                }
                self.single(frame)
            }
            Serialization::Raw => self.single(frame),
        }
    }

    fn single(&self, frame: &Bytes) -> Result<Vec<ChannelMessage>, CodecError> {
        if frame.len() > self.max_message {
            return Err(CodecError::TooLarge {
                len: frame.len(),
                max: self.max_message,
                mode: self.mode,
            });
        }
        Ok(vec![ChannelMessage::binary(frame.clone())])
    }

    /// The message that closes the connection gracefully, where the mode has
    /// one (`raw` does not interpret it).
    pub fn close_message(&self) -> Option<ChannelMessage> {
        match self.mode {
            Serialization::Binary => Some(ChannelMessage::binary(binarypack::close_message())),
            Serialization::Json => Some(ChannelMessage::binary(Bytes::from_static(
                br#"{"__peerData":{"type":"close"}}"#,
            ))),
            Serialization::Raw => None,
        }
    }

    /// Translates one incoming message.
    pub fn decode(&mut self, message: ChannelMessage) -> Result<Inbound, CodecError> {
        let frame = match self.mode {
            Serialization::Raw => message.data,
            Serialization::Json => {
                if std::str::from_utf8(&message.data).is_err() {
                    return Err(CodecError::NotUtf8);
                }
                if is_json_close(&message.data) {
                    return Ok(Inbound::Close);
                }
                message.data
            }
            Serialization::Binary => match self.reassembler.push(&message.data)? {
                None => return Ok(Inbound::Partial),
                Some(Message::Close) => return Ok(Inbound::Close),
                Some(Message::Value(Value::Bin(bytes))) => bytes,
                Some(Message::Value(Value::Str(text))) => Bytes::from(text),
                Some(Message::Value(other)) => Bytes::from(other.to_json().to_string()),
            },
        };
        if frame.len() > self.max_frame {
            return Err(CodecError::TooLarge {
                len: frame.len(),
                max: self.max_frame,
                mode: self.mode,
            });
        }
        Ok(Inbound::Frame(frame))
    }
}

/// Whether a `json` message is PeerJS's `{"__peerData":{"type":"close"}}`.
fn is_json_close(data: &[u8]) -> bool {
    // Cheap pre-check so ordinary frames are not parsed twice.
    if data.len() > 64 || !data.windows(10).any(|w| w == b"__peerData") {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("__peerData")?.get("type")?.as_str().map(|t| t == "close"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;
    use crate::binarypack::{CHUNK_MTU, encode};

    const MAX_FRAME: usize = 17 << 20;

    fn codec(mode: Serialization) -> Codec {
        Codec::new(mode, MAX_FRAME, 65_535, CHUNK_MTU)
    }

    fn through(mode: Serialization, frame: &Bytes) -> Bytes {
        let (mut tx, mut rx) = (codec(mode), codec(mode));
        let mut out = None;
        for message in tx.encode(frame).unwrap() {
            assert!(message.data.len() <= 65_535);
            match rx.decode(message).unwrap() {
                Inbound::Frame(f) => out = Some(f),
                Inbound::Partial => {}
                Inbound::Close => panic!("unexpected close"),
            }
        }
        out.unwrap()
    }

    #[test]
    fn frames_roundtrip_in_every_mode() {
        let json = Bytes::from_static(br#"{"type":"hello","n":[1,2]}"#);
        for mode in [Serialization::Binary, Serialization::Json, Serialization::Raw] {
            assert_eq!(through(mode, &json), json, "{mode}");
        }
        let binary: Bytes = (0..=255u8).cycle().take(1 << 20).collect();
        assert_eq!(through(Serialization::Binary, &binary), binary);
        assert_eq!(
            through(Serialization::Raw, &binary.slice(..60_000)),
            binary.slice(..60_000)
        );
    }

    #[test]
    fn peerjs_objects_arrive_as_json() {
        let mut rx = codec(Serialization::Binary);
        let object = Value::Map(vec![
            ("hello".into(), Value::Str("bp".into())),
            ("n".into(), Value::Int(7)),
        ]);
        let got = rx.decode(ChannelMessage::binary(encode(&object))).unwrap();
        assert_eq!(got, Inbound::Frame(Bytes::from_static(br#"{"hello":"bp","n":7}"#)));
        let text = rx
            .decode(ChannelMessage::binary(encode(&Value::Str("hé".into()))))
            .unwrap();
        assert_eq!(text, Inbound::Frame(Bytes::from("hé")));
    }

    #[test]
    fn limits_and_bad_input_are_typed_errors() {
        let mut json = codec(Serialization::Json);
        assert_eq!(
            json.encode(&Bytes::from_static(b"\x00not json")).unwrap_err(),
            CodecError::NotJson
        );
        assert_eq!(
            json.decode(ChannelMessage::binary(Bytes::from_static(b"\xff")))
                .unwrap_err(),
            CodecError::NotUtf8
        );
        let mut raw = codec(Serialization::Raw);
        assert!(matches!(
            raw.encode(&Bytes::from(vec![0; 70_000])).unwrap_err(),
            CodecError::TooLarge { len: 70_000, .. }
        ));
        let mut binary = codec(Serialization::Binary);
        assert!(
            binary
                .decode(ChannelMessage::binary(Bytes::from_static(&[0xdb, 1])))
                .is_err()
        );
    }

    #[test]
    fn close_messages_are_recognised() {
        for mode in [Serialization::Binary, Serialization::Json] {
            let mut c = codec(mode);
            let close = c.close_message().unwrap();
            assert_eq!(c.decode(close).unwrap(), Inbound::Close, "{mode}");
        }
        assert!(codec(Serialization::Raw).close_message().is_none());
    }

    #[test]
    fn offer_names() {
        for (name, mode) in [
            ("binary", Serialization::Binary),
            ("default", Serialization::Binary),
            ("binary-utf8", Serialization::Binary),
            ("json", Serialization::Json),
            ("raw", Serialization::Raw),
        ] {
            assert_eq!(Serialization::from_offer(name), Some(mode));
        }
        assert_eq!(Serialization::from_offer("MsgPack"), None);
        assert_eq!(Serialization::from_offer("none"), None);
    }
}
