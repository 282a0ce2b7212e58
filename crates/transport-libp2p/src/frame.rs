//! The link frame: how a point-to-point frame rides in a `WakuMessage`.
//!
//! A link frame is a `WakuMessage` on the recipient's installation content
//! topic whose `meta` is a fixed 26-byte header:
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0 | magic `0x53` (`'S'`) | a Strata link frame, layout version 1 |
//! | 1 | kind | 1 `OPEN`, 2 `OPEN_ACK`, 3 `DATA`, 4 `ACK`, 5 `CLOSE`, 6 `DATA` with an empty body |
//! | 2..10 | link id | u64 big-endian, chosen at random by the opener |
//! | 10..18 | seq | u64 big-endian: the `DATA` frame's sequence number, else 0 |
//! | 18..26 | ack | u64 big-endian: the next sequence number the sender expects (cumulative) |
//!
//! and whose `payload` is:
//! - `DATA`: the session layer's frame, byte for byte (so relays see exactly
//!   the ciphertext the session produced, nothing more);
//! - `OPEN` and `OPEN_ACK`: a [`Hello`] protobuf naming the sender, the
//!   addressee and the sender's incarnation (a random number per start, so
//!   a restarted peer is told apart from a late copy); the only place a
//!   sender address travels;
//! - every other kind: the single byte `0` (Waku relays drop empty payloads).
//!
//! In `OPEN_ACK`, `seq` names the link id the responder gave up when both
//! sides opened at once (0: none).
//!
//! The header never carries an address: after `OPEN`, both ends know the
//! peer behind a link id, so an observer of `DATA` frames learns the
//! recipient (from the content topic) but not the sender.

use bytes::Bytes;
use prost::Message as _;
use strata_transport::PeerAddr;

use crate::error::FrameError;

/// Length of the link header carried in `WakuMessage.meta`.
pub(crate) const HEADER_LEN: usize = 26;

const MAGIC: u8 = 0x53;

/// The payload of frames that carry nothing: relays refuse empty payloads.
pub(crate) const FILLER: &[u8] = &[0];

/// Longest installation address accepted, in bytes.
pub const MAX_ADDR_LEN: usize = 128;

/// What a link frame does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    /// Opens link `link`; the payload is a [`Hello`].
    Open,
    /// Confirms link `link` to its opener.
    OpenAck,
    /// Carries frame `seq` of the link.
    Data,
    /// Acknowledges; also the keep-alive beacon.
    Ack,
    /// Closes the link.
    Close,
}

/// The fixed link header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) link: u64,
    pub(crate) seq: u64,
    pub(crate) ack: u64,
}

/// `OPEN`'s payload.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct Hello {
    /// The opener's installation address.
    #[prost(string, tag = "1")]
    pub(crate) from: String,
    /// The addressee's installation address.
    #[prost(string, tag = "2")]
    pub(crate) to: String,
    /// The sender's incarnation: random per start of a node.
    #[prost(fixed64, tag = "3")]
    pub(crate) incarnation: u64,
}

/// A decoded link frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct LinkFrame {
    pub(crate) header: Header,
    /// `OPEN`: the hello; `DATA`: the frame; otherwise empty.
    pub(crate) body: Body,
}

/// What follows the header.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Body {
    None,
    Hello {
        from: PeerAddr,
        to: PeerAddr,
        incarnation: u64,
    },
    Data(Bytes),
}

impl LinkFrame {
    /// The `(meta, payload)` pair to put in a `WakuMessage`.
    pub(crate) fn encode(&self) -> ([u8; HEADER_LEN], Bytes) {
        let empty_data = matches!(&self.body, Body::Data(b) if b.is_empty());
        let kind = match self.header.kind {
            Kind::Open => 1,
            Kind::OpenAck => 2,
            Kind::Data if empty_data => 6,
            Kind::Data => 3,
            Kind::Ack => 4,
            Kind::Close => 5,
        };
        let mut meta = [0u8; HEADER_LEN];
        let fields = [MAGIC, kind]
            .into_iter()
            .chain(self.header.link.to_be_bytes())
            .chain(self.header.seq.to_be_bytes())
            .chain(self.header.ack.to_be_bytes());
        for (slot, byte) in meta.iter_mut().zip(fields) {
            *slot = byte;
        }
        let payload = match &self.body {
            Body::Data(bytes) if !bytes.is_empty() => bytes.clone(),
            Body::Hello { from, to, incarnation } => Bytes::from(
                Hello {
                    from: from.as_str().to_owned(),
                    to: to.as_str().to_owned(),
                    incarnation: *incarnation,
                }
                .encode_to_vec(),
            ),
            Body::Data(_) | Body::None => Bytes::from_static(FILLER),
        };
        (meta, payload)
    }

    /// Parses a link frame from a validated `WakuMessage`'s `meta` and
    /// `payload`.
    pub(crate) fn decode(meta: &[u8], payload: Bytes) -> Result<Self, FrameError> {
        let header: &[u8; HEADER_LEN] = meta.try_into().map_err(|_| FrameError::HeaderLength(meta.len()))?;
        let [magic, kind, rest @ ..] = header;
        if *magic != MAGIC {
            return Err(FrameError::BadMagic(*magic));
        }
        let (link, rest) = split_u64(rest);
        let (seq, rest) = split_u64(rest);
        let (ack, _) = split_u64(rest);
        let (kind, body) = match kind {
            1 => (Kind::Open, decode_hello(&payload)?),
            2 => (Kind::OpenAck, decode_hello(&payload)?),
            3 => (Kind::Data, Body::Data(payload)),
            4 => (Kind::Ack, Body::None),
            5 => (Kind::Close, Body::None),
            6 => (Kind::Data, Body::Data(Bytes::new())),
            other => return Err(FrameError::UnknownKind(*other)),
        };
        Ok(Self {
            header: Header { kind, link, seq, ack },
            body,
        })
    }
}

fn split_u64(bytes: &[u8]) -> (u64, &[u8]) {
    let (head, rest) = bytes.split_at(bytes.len().min(8));
    let mut buf = [0u8; 8];
    for (slot, byte) in buf.iter_mut().zip(head) {
        *slot = *byte;
    }
    (u64::from_be_bytes(buf), rest)
}

fn decode_hello(payload: &[u8]) -> Result<Body, FrameError> {
    // Two addresses, an incarnation and protobuf tags; anything longer is
    // not a hello.
    if payload.len() > 2 * MAX_ADDR_LEN + 16 {
        return Err(FrameError::HelloTooLong(payload.len()));
    }
    let hello = Hello::decode(payload).map_err(|e| FrameError::Hello(e.to_string()))?;
    let from = check_addr(hello.from)?;
    let to = check_addr(hello.to)?;
    Ok(Body::Hello {
        from,
        to,
        incarnation: hello.incarnation,
    })
}

/// An installation address must be non-empty and at most
/// [`MAX_ADDR_LEN`] bytes.
pub(crate) fn check_addr(addr: String) -> Result<PeerAddr, FrameError> {
    if addr.is_empty() || addr.len() > MAX_ADDR_LEN {
        return Err(FrameError::BadAddr(addr.len()));
    }
    Ok(PeerAddr::new(addr))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn frame(kind: Kind, body: Body) -> LinkFrame {
        LinkFrame {
            header: Header {
                kind,
                link: 0x0102_0304_0506_0708,
                seq: 9,
                ack: 0x10,
            },
            body,
        }
    }

    /// The header layout is a wire format: frozen here byte for byte.
    #[test]
    fn header_golden_bytes() {
        let (meta, payload) = frame(Kind::Data, Body::Data(Bytes::from_static(b"hi"))).encode();
        assert_eq!(
            hex::encode(meta),
            "5303010203040506070800000000000000090000000000000010"
        );
        assert_eq!(&payload[..], b"hi");
        let (meta, payload) = frame(
            Kind::Open,
            Body::Hello {
                from: "a".into(),
                to: "bc".into(),
                incarnation: 0x1122,
            },
        )
        .encode();
        assert_eq!(meta[1], 1);
        assert_eq!(
            hex::encode(&payload),
            "0a01611202626319 2211000000000000".replace(' ', "")
        );
    }

    #[test]
    fn every_kind_round_trips() {
        let cases = [
            frame(
                Kind::Open,
                Body::Hello {
                    from: "alice".into(),
                    to: "bob".into(),
                    incarnation: 7,
                },
            ),
            frame(
                Kind::OpenAck,
                Body::Hello {
                    from: "bob".into(),
                    to: "alice".into(),
                    incarnation: u64::MAX,
                },
            ),
            frame(Kind::Data, Body::Data(Bytes::from_static(b"\0\xff payload"))),
            frame(Kind::Data, Body::Data(Bytes::new())),
            frame(Kind::Ack, Body::None),
            frame(Kind::Close, Body::None),
        ];
        for case in cases {
            let (meta, payload) = case.encode();
            assert!(!payload.is_empty(), "relays drop empty payloads");
            assert_eq!(LinkFrame::decode(&meta, payload).unwrap(), case);
        }
    }

    /// Seeded random and mutated inputs: every outcome is a value or a
    /// typed error, never a panic, and whatever decodes re-encodes to a
    /// frame that decodes the same.
    #[test]
    fn random_and_mutated_input_never_panics() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let mut rng = StdRng::seed_from_u64(7);
        let (valid_meta, valid_hello) = frame(
            Kind::Open,
            Body::Hello {
                from: "alice".into(),
                to: "bob".into(),
                incarnation: 3,
            },
        )
        .encode();
        for _ in 0..20_000 {
            let mut meta = valid_meta.to_vec();
            let mut payload = valid_hello.to_vec();
            match rng.random_range(0..3) {
                0 => {
                    meta = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
                    payload = (0..rng.random_range(0..300)).map(|_| rng.random()).collect();
                }
                1 => {
                    for _ in 0..rng.random_range(1..4) {
                        let i = rng.random_range(0..meta.len());
                        meta[i] = rng.random();
                    }
                }
                _ => {
                    if !payload.is_empty() {
                        let i = rng.random_range(0..payload.len());
                        payload[i] = rng.random();
                        payload.truncate(rng.random_range(0..=payload.len()));
                    }
                }
            }
            if let Ok(decoded) = LinkFrame::decode(&meta, Bytes::from(payload)) {
                let (meta, payload) = decoded.encode();
                assert_eq!(LinkFrame::decode(&meta, payload).as_ref(), Ok(&decoded));
            }
        }
    }

    #[test]
    fn hostile_headers_are_typed_errors() {
        let (meta, payload) = frame(Kind::Ack, Body::None).encode();
        assert_eq!(
            LinkFrame::decode(&meta[..25], payload.clone()),
            Err(FrameError::HeaderLength(25))
        );
        let mut bad = meta;
        bad[0] = 0;
        assert_eq!(LinkFrame::decode(&bad, payload.clone()), Err(FrameError::BadMagic(0)));
        let mut bad = meta;
        bad[1] = 77;
        assert_eq!(LinkFrame::decode(&bad, payload), Err(FrameError::UnknownKind(77)));
        let mut open = meta;
        open[1] = 1;
        assert!(matches!(
            LinkFrame::decode(&open, Bytes::from_static(b"\xff\xff")),
            Err(FrameError::Hello(_))
        ));
        assert_eq!(
            LinkFrame::decode(&open, Bytes::from(vec![0x0a; 400])),
            Err(FrameError::HelloTooLong(400))
        );
        let empty_from = Hello {
            from: String::new(),
            to: "b".into(),
            incarnation: 1,
        }
        .encode_to_vec();
        assert_eq!(
            LinkFrame::decode(&open, Bytes::from(empty_from)),
            Err(FrameError::BadAddr(0))
        );
    }
}
