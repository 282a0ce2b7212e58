//! The inner catalog: what the plaintext of a `message` PDU is.
//!
//! The plaintext is one UTF-8 JSON object with a string `type`, camelCase
//! fields, byte fields in standard base64 — except a `file-chunk`'s `data`,
//! which travels *detached*: the object with `"data":""`, one NUL byte, then
//! the raw bytes. JSON text never holds a raw NUL, so the split is
//! unambiguous, and file bytes cross the wire (and sit in the store) without
//! base64's third more. The all-JSON form of a chunk is still read.
//!
//! | `type` | fields | stored, acknowledged |
//! |---|---|---|
//! | `text` | `text` | yes |
//! | `file-chunk` | `fileId`, `name`, `size`, `index`, `total`, `data`; `sentTo` on a sent copy | yes |
//! | `group-pdu` | `data`: one encoded group PDU (`strata_proto`), detached, ≤ 1 MiB | yes |
//! | `devices` | `list`: the sender's account's signed device list (`strata_proto::devices`), ≤ 1 KiB | yes |
//! | `sent-copy` | `to` (an account's identity key), `text` | yes |
//! | `introduction` | `step`: one step of an introduction ([`IntroStep`]) | yes |
//! | `ack` | — | no (it *is* an acknowledgement) |
//! | `key-package-claim` | `claim` | no (answered) |
//! | `key-package-grant` | `claim`, `keyPackage` | no (answers a claim) |
//!
//! `key-package-claim` asks the receiving installation for one of its MLS
//! KeyPackages (polyproto-mls "claim", peer to peer); `claim` is an id of
//! the claimer's choosing (at most 64 bytes), repeated in the answer. A
//! claim sent again with the same id gets the same package. The
//! `key-package-grant` carries one KeyPackage (`keyPackage`, a serialized
//! `MLSMessage`, base64, at most 48 KiB): a one-time package, or the
//! last-resort one when the claimer is over its allowance or the one-time
//! stock is gone. Claims travel inside the session's cascade, never in the
//! clear: only the peer of the session can claim, and the rate limit is
//! per authenticated installation. The rules are in the crate docs,
//! "KeyPackage pool".
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
//! `devices` and `sent-copy` are multi-device traffic (see
//! [`crate::devices`]): a device list goes to the account's contacts and
//! its own devices, and to a contact that sends to an installation the
//! list no longer names; a `sent-copy` tells the sender's other devices of
//! a text it sent to an account, and is taken only from a device of the
//! same account. A file's sent copy is its chunks with `sentTo` (the
//! account's identity key, base64), taken on the same terms.
//!
//! `introduction` carries BisonRelay's auto-KX between a member, a
//! mediator (a group's admin, or whoever suggests the introduction) and
//! another member (see [`crate::kx`]); the node takes it, never the
//! application.
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
/// Whether a file chunk's place adds up: `total` is the chunk count of a
/// `size`-byte file (an empty file is one empty chunk), `index` is one of
/// them, and the chunk holds exactly the bytes at that place. A receiver
/// writes a chunk at `index × FILE_CHUNK_BYTES`: one that does not fit
/// could grow a file far past its size.
pub(crate) fn chunk_fits(size: u64, index: u32, total: u32, len: usize) -> bool {
    let chunk = FILE_CHUNK_BYTES as u64;
    let offset = u64::from(index) * chunk;
    u64::from(total) == chunk_count(size) && index < total && len as u64 == size.saturating_sub(offset).min(chunk)
}

/// Chunks a file of `size` bytes takes (an empty file is one empty chunk).
pub(crate) fn chunk_count(size: u64) -> u64 {
    size.div_ceil(FILE_CHUNK_BYTES as u64).max(1)
}

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
        /// On a copy of a file this account sent to another account from
        /// another of its devices: that account's identity key. Taken only
        /// from a device of the same account, like a `sent-copy`.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_key")]
        sent_to: Option<Vec<u8>>,
    },
    /// A group chat's PDU for this peer (a Welcome, a commit with its
    /// group secret, a proposal, a catch-up): carried like any message,
    /// so it is stored, acknowledged and delivered once. The node hands it
    /// to the group, never to the application.
    GroupPdu {
        /// The encoded PDU (`strata_proto::Pdu::encode`), sent detached.
        #[serde(with = "b64")]
        data: Vec<u8>,
    },
    /// The sender's account's signed device list
    /// (`strata_cascade::devices`). The node takes it, never the
    /// application.
    Devices {
        /// The signed list, as signed.
        #[serde(with = "b64")]
        list: Vec<u8>,
    },
    /// A text this account sent to another account from another of its
    /// devices, so that every device shows the whole conversation.
    SentCopy {
        /// The identity key of the account it was sent to.
        #[serde(with = "b64")]
        to: Vec<u8>,
        /// The text.
        text: String,
    },
    /// One step of an introduction (BisonRelay's auto-KX). The node takes
    /// it, never the application.
    Introduction {
        /// The step.
        step: IntroStep,
    },
}

/// The steps of an introduction, named after BisonRelay's messages.
/// Installations are hex; identities are a `strata_proto::kx::PublicIdentity`
/// as JSON; sealed invites are what `strata_cascade::kx::seal` makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum IntroStep {
    /// `mediateidentity`: the sender asks the receiver (the mediator) to
    /// introduce it to the installation `target`; `identity` is the
    /// sender's.
    MediateIdentity {
        /// The installation to meet.
        target: String,
        /// The sender's public identity.
        #[serde(with = "b64")]
        identity: Vec<u8>,
    },
    /// `invite`: the mediator asks the receiver to invite the installation
    /// `installation`, whose account's public identity this is.
    Invite {
        /// The installation to invite.
        installation: String,
        /// Its public identity.
        #[serde(with = "b64")]
        identity: Vec<u8>,
    },
    /// `transitivemessage`: an invite sealed to `to`'s KEM key, for the
    /// mediator to forward.
    Transitive {
        /// The installation it is for.
        to: String,
        /// The sealed invite.
        #[serde(with = "b64")]
        sealed: Vec<u8>,
    },
    /// `tmessageforward`: what the installation `from` sealed for the
    /// receiver, forwarded by the mediator.
    Forward {
        /// The installation that sealed it.
        from: String,
        /// The sealed invite.
        #[serde(with = "b64")]
        sealed: Vec<u8>,
    },
    /// `kxsuggestion`: the sender suggests the receiver meet the
    /// installation `target`, through the sender.
    Suggestion {
        /// The installation to meet.
        target: String,
    },
}

/// Most bytes of an identity in an [`IntroStep`].
pub const MAX_INTRO_IDENTITY_BYTES: usize = 4096;
/// Most bytes of a sealed invite in an [`IntroStep`].
pub const MAX_INTRO_SEALED_BYTES: usize = strata_proto::kx::MAX_RMO_BYTES + 2048;
/// Most bytes of an installation in an [`IntroStep`].
const MAX_INTRO_ID_BYTES: usize = 64;

impl IntroStep {
    fn check(&self) -> Result<(), &'static str> {
        let (ids, bytes, cap): (&[&String], &[u8], usize) = match self {
            Self::MediateIdentity { target, identity } => (&[target], identity, MAX_INTRO_IDENTITY_BYTES),
            Self::Invite { installation, identity } => (&[installation], identity, MAX_INTRO_IDENTITY_BYTES),
            Self::Transitive { to, sealed } => (&[to], sealed, MAX_INTRO_SEALED_BYTES),
            Self::Forward { from, sealed } => (&[from], sealed, MAX_INTRO_SEALED_BYTES),
            Self::Suggestion { target } => (&[target], &[], 0),
        };
        if ids.iter().any(|id| id.len() > MAX_INTRO_ID_BYTES) {
            return Err("an introduction's installation over 64 bytes");
        }
        if bytes.len() > cap {
            return Err("an introduction's identity or invite over its cap");
        }
        Ok(())
    }
}

/// Most bytes of the account key a sent copy names.
const MAX_KEY_BYTES: usize = 64;

/// Most bytes of a [`Content::Devices`] list.
pub const MAX_DEVICE_LIST_BYTES: usize = strata_proto::devices::MAX_DEVICE_LIST_BYTES;

/// Most bytes of one [`Content::GroupPdu`] (a Welcome with the ratchet
/// tree of a few hundred members fits).
pub const MAX_GROUP_PDU_BYTES: usize = 1024 * 1024;

impl Content {
    /// Serialized, as stored in the outbox and inbox.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.detached_data() {
            Some(data) => detached::encode(&self.header(), data),
            None => detached::encode(self, &[]),
        }
    }

    /// Parses a stored or received payload, in either form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let (head, data) = detached::split(bytes);
        let mut content: Self = serde_json::from_slice(head)?;
        if let Some(data) = data {
            content
                .attach(data)
                .map_err(<serde_json::Error as serde::de::Error>::custom)?;
        }
        Ok(content)
    }

    /// The bytes sent detached, if this is a file chunk.
    fn detached_data(&self) -> Option<&[u8]> {
        match self {
            Self::FileChunk { data, .. } | Self::GroupPdu { data } => Some(data),
            Self::Text { .. } | Self::Devices { .. } | Self::SentCopy { .. } | Self::Introduction { .. } => None,
        }
    }

    /// A copy without the detached bytes.
    fn header(&self) -> Self {
        match self {
            Self::FileChunk {
                file_id,
                name,
                size,
                index,
                total,
                sent_to,
                ..
            } => Self::FileChunk {
                file_id: file_id.clone(),
                name: name.clone(),
                size: *size,
                index: *index,
                total: *total,
                data: Vec::new(),
                sent_to: sent_to.clone(),
            },
            Self::GroupPdu { .. } => Self::GroupPdu { data: Vec::new() },
            Self::Text { .. } | Self::Devices { .. } | Self::SentCopy { .. } | Self::Introduction { .. } => {
                self.clone()
            }
        }
    }

    /// Puts detached bytes back into a parsed header.
    fn attach(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        match self {
            Self::FileChunk { data, .. } if !data.is_empty() => Err("file chunk data both inline and detached"),
            Self::FileChunk { .. } if bytes.len() > FILE_CHUNK_BYTES => Err("file chunk over 48 KiB"),
            Self::FileChunk { data, .. } => {
                *data = bytes.to_vec();
                Ok(())
            }
            Self::GroupPdu { data } if !data.is_empty() => Err("group PDU both inline and detached"),
            Self::GroupPdu { .. } if bytes.len() > MAX_GROUP_PDU_BYTES => Err("group PDU over 1 MiB"),
            Self::GroupPdu { data } => {
                *data = bytes.to_vec();
                Ok(())
            }
            Self::Text { .. } | Self::Devices { .. } | Self::SentCopy { .. } | Self::Introduction { .. } => {
                Err("detached bytes after a text")
            }
        }
    }

    /// Checks the caps a sender must respect.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        match self {
            Self::Text { text } | Self::SentCopy { text, .. } if text.len() > MAX_TEXT_BYTES => Err("text over 1 MiB"),
            Self::Devices { list } if list.len() > MAX_DEVICE_LIST_BYTES => Err("device list over 1 KiB"),
            Self::SentCopy { to, .. } | Self::FileChunk { sent_to: Some(to), .. } if to.len() > MAX_KEY_BYTES => {
                Err("sent copy to a key over 64 bytes")
            }
            Self::FileChunk { data, .. } if data.len() > FILE_CHUNK_BYTES => Err("file chunk over 48 KiB"),
            Self::FileChunk { index, total, .. } if index >= total => Err("file chunk index out of range"),
            Self::GroupPdu { data } if data.len() > MAX_GROUP_PDU_BYTES => Err("group PDU over 1 MiB"),
            Self::Introduction { step } => step.check(),
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
    KeyPackageClaim {
        claim: String,
    },
    #[serde(rename_all = "camelCase")]
    KeyPackageGrant {
        claim: String,
        #[serde(with = "b64")]
        key_package: Vec<u8>,
    },
}

impl Plaintext {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let Body::Content(content) = &self.body else {
            return detached::encode(self, &[]);
        };
        let Some(data) = content.detached_data() else {
            return detached::encode(self, &[]);
        };
        let header = Self {
            body: Body::Content(content.header()),
            seq: self.seq,
            sent_ms: self.sent_ms,
            acks: self.acks.clone(),
            kem_key_ack: self.kem_key_ack,
        };
        detached::encode(&header, data)
    }

    /// Parses a decrypted plaintext (authenticated, but still checked).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, &'static str> {
        let (head, data) = detached::split(bytes);
        let mut p: Self = serde_json::from_slice(head).map_err(|_| "plaintext is not a known JSON object")?;
        if let Some(data) = data {
            match &mut p.body {
                Body::Content(content) => content.attach(data)?,
                Body::Control(_) => return Err("detached bytes after a control plaintext"),
            }
        }
        if p.acks.len() > MAX_ACKS || p.acks.iter().any(|a| a.len() > strata_proto::limits::MAX_ID) {
            return Err("too many or too long acks");
        }
        match &p.body {
            Body::Content(c) => {
                c.check()?;
                if p.seq.is_none() {
                    return Err("content without seq");
                }
            }
            Body::Control(Control::KeyPackageClaim { claim } | Control::KeyPackageGrant { claim, .. })
                if claim.is_empty() || claim.len() > strata_proto::limits::MAX_ID =>
            {
                return Err("claim id empty or over 64 bytes");
            }
            Body::Control(_) => {}
        }
        Ok(p)
    }
}

/// The detached form: `json`, then — only where there are detached bytes
/// to carry — a NUL and the bytes.
mod detached {
    use serde::Serialize;

    const SEPARATOR: u8 = 0;

    pub(super) fn encode<T: Serialize>(header: &T, data: &[u8]) -> Vec<u8> {
        // Strings, integers and base64: serialization cannot fail.
        let mut out = serde_json::to_vec(header).unwrap_or_default();
        if !data.is_empty() {
            out.reserve_exact(1 + data.len());
            out.push(SEPARATOR);
            out.extend_from_slice(data);
        }
        out
    }

    /// The JSON head, and the detached bytes if there is a separator.
    pub(super) fn split(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
        let mut parts = bytes.splitn(2, |b| *b == SEPARATOR);
        (parts.next().unwrap_or_default(), parts.next())
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

/// An optional account key, base64, at most [`MAX_KEY_BYTES`].
mod b64_key {
    use super::*;

    pub(super) fn serialize<S: Serializer>(key: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(k) => s.serialize_str(&STANDARD.encode(k)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(s) = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? else {
            return Ok(None);
        };
        if s.len() > MAX_KEY_BYTES.div_ceil(3) * 4 {
            return Err(serde::de::Error::custom("sent copy to a key over 64 bytes"));
        }
        STANDARD
            .decode(s.as_bytes())
            .map(Some)
            .map_err(serde::de::Error::custom)
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
        let control = |body| Plaintext {
            body: Body::Control(body),
            seq: None,
            sent_ms: None,
            acks: Vec::new(),
            kem_key_ack: None,
        };
        let claim = control(Control::KeyPackageClaim { claim: "c1".into() });
        let json = String::from_utf8(claim.to_bytes()).unwrap();
        assert_eq!(json, r#"{"type":"key-package-claim","claim":"c1"}"#);
        assert_eq!(Plaintext::from_bytes(json.as_bytes()).unwrap(), claim);
        let grant = control(Control::KeyPackageGrant {
            claim: "c1".into(),
            key_package: vec![0, 1, 2],
        });
        let json = String::from_utf8(grant.to_bytes()).unwrap();
        assert_eq!(json, r#"{"type":"key-package-grant","claim":"c1","keyPackage":"AAEC"}"#);
        assert_eq!(Plaintext::from_bytes(json.as_bytes()).unwrap(), grant);
        for bad in [
            r#"{"type":"key-package-claim","claim":""}"#.to_owned(),
            format!(r#"{{"type":"key-package-claim","claim":"{}"}}"#, "c".repeat(65)),
            format!(
                r#"{{"type":"key-package-grant","claim":"c","keyPackage":"{}"}}"#,
                "A".repeat(70_000)
            ),
        ] {
            assert!(Plaintext::from_bytes(bad.as_bytes()).is_err(), "{bad}");
        }
        let chunk = Content::FileChunk {
            file_id: "f".into(),
            name: "a.bin".into(),
            size: 3,
            index: 0,
            total: 1,
            data: vec![1, 2, 3],
            sent_to: None,
        };
        let header = br#"{"type":"file-chunk","fileId":"f","name":"a.bin","size":3,"index":0,"total":1,"data":""}"#;
        assert_eq!(chunk.to_bytes(), [&header[..], b"\0\x01\x02\x03"].concat());
        assert_eq!(Content::from_bytes(&chunk.to_bytes()).unwrap(), chunk);
        // The all-JSON form, which earlier versions stored, is still read.
        let inline = br#"{"type":"file-chunk","fileId":"f","name":"a.bin","size":3,"index":0,"total":1,"data":"AQID"}"#;
        assert_eq!(Content::from_bytes(inline).unwrap(), chunk);
        let sent = Plaintext {
            body: Body::Content(chunk.clone()),
            seq: Some(9),
            sent_ms: None,
            acks: vec!["y".into()],
            kem_key_ack: None,
        };
        let bytes = sent.to_bytes();
        assert!(bytes.ends_with(b"\0\x01\x02\x03"));
        assert_eq!(Plaintext::from_bytes(&bytes).unwrap(), sent);
        // An empty file's one chunk needs no detached part.
        let empty = Content::FileChunk {
            file_id: "e".into(),
            name: "empty".into(),
            size: 0,
            index: 0,
            total: 1,
            data: Vec::new(),
            sent_to: None,
        };
        assert!(!empty.to_bytes().contains(&0));
        assert_eq!(Content::from_bytes(&empty.to_bytes()).unwrap(), empty);
        // A sent copy names the account it went to.
        let copy = Content::FileChunk {
            file_id: "f".into(),
            name: "a.bin".into(),
            size: 3,
            index: 0,
            total: 1,
            data: vec![1, 2, 3],
            sent_to: Some(vec![5; 33]),
        };
        assert!(copy.to_bytes().windows(10).any(|w| w == b"\"sentTo\":\""));
        assert_eq!(Content::from_bytes(&copy.to_bytes()).unwrap(), copy);
        let too_long = format!(
            r#"{{"type":"file-chunk","fileId":"f","name":"n","size":0,"index":0,"total":1,"data":"","sentTo":"{}"}}"#,
            "A".repeat(100)
        );
        assert!(Content::from_bytes(too_long.as_bytes()).is_err());
    }

    #[test]
    fn file_bytes_cost_no_base64() {
        let chunk = Content::FileChunk {
            file_id: "0123456789abcdef".into(),
            name: "video.mp4".into(),
            size: 1 << 30,
            index: 7,
            total: 21846,
            data: vec![0xa5; FILE_CHUNK_BYTES],
            sent_to: None,
        };
        let overhead = chunk.to_bytes().len() - FILE_CHUNK_BYTES;
        assert!(overhead < 160, "{overhead} bytes around {FILE_CHUNK_BYTES}");
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
            // Detached bytes where none belong, or twice.
            b"{\"type\":\"text\",\"text\":\"t\",\"seq\":1}\0x",
            b"{\"type\":\"ack\"}\0x",
            b"{\"type\":\"file-chunk\",\"fileId\":\"f\",\"name\":\"n\",\"size\":2,\"index\":0,\"total\":1,\"data\":\"AQ==\",\"seq\":1}\0x",
            b"\0x",
        ] {
            assert!(Plaintext::from_bytes(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let header = br#"{"type":"file-chunk","fileId":"f","name":"n","size":1,"index":0,"total":1,"data":"","seq":1}"#;
        let too_long = [&header[..], b"\0", &[0; FILE_CHUNK_BYTES + 1]].concat();
        assert!(Plaintext::from_bytes(&too_long).is_err());
        assert!(Content::from_bytes(&too_long).is_err());
        let longest = [&header[..], b"\0", &[0; FILE_CHUNK_BYTES]].concat();
        assert!(Plaintext::from_bytes(&longest).is_ok());
    }

    /// Each introduction step in its frozen form, and its caps enforced on
    /// receipt.
    #[test]
    fn introduction_steps_are_frozen_and_capped() {
        let steps = [
            (
                IntroStep::MediateIdentity {
                    target: "ab".into(),
                    identity: vec![1],
                },
                r#"{"type":"introduction","step":{"kind":"mediate-identity","target":"ab","identity":"AQ=="}}"#,
            ),
            (
                IntroStep::Invite {
                    installation: "ab".into(),
                    identity: vec![1],
                },
                r#"{"type":"introduction","step":{"kind":"invite","installation":"ab","identity":"AQ=="}}"#,
            ),
            (
                IntroStep::Transitive {
                    to: "ab".into(),
                    sealed: vec![2],
                },
                r#"{"type":"introduction","step":{"kind":"transitive","to":"ab","sealed":"Ag=="}}"#,
            ),
            (
                IntroStep::Forward {
                    from: "ab".into(),
                    sealed: vec![2],
                },
                r#"{"type":"introduction","step":{"kind":"forward","from":"ab","sealed":"Ag=="}}"#,
            ),
            (
                IntroStep::Suggestion { target: "ab".into() },
                r#"{"type":"introduction","step":{"kind":"suggestion","target":"ab"}}"#,
            ),
        ];
        for (step, json) in steps {
            let content = Content::Introduction { step };
            assert_eq!(String::from_utf8(content.to_bytes()).unwrap(), json);
            assert_eq!(Content::from_bytes(json.as_bytes()).unwrap(), content);
        }
        let oversized = Content::Introduction {
            step: IntroStep::Forward {
                from: "ab".into(),
                sealed: vec![0; MAX_INTRO_SEALED_BYTES + 1],
            },
        };
        let long_id = Content::Introduction {
            step: IntroStep::Suggestion { target: "a".repeat(65) },
        };
        for bad in [oversized, long_id] {
            assert!(bad.check().is_err());
            let received = Plaintext {
                body: Body::Content(bad),
                seq: Some(1),
                sent_ms: None,
                acks: Vec::new(),
                kem_key_ack: None,
            };
            assert!(Plaintext::from_bytes(&received.to_bytes()).is_err());
        }
    }
}
