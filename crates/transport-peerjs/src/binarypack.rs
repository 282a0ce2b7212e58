//! PeerJS's BinaryPack (`peerjs-js-binarypack` 2.1.0) and its chunked form.
//!
//! BinaryPack looks like MessagePack but is not: strings are `0xb0`/`0xd8`/
//! `0xd9`, binary is `0xa0`/`0xda`/`0xdb`, and `0xc1`, `0xd4`–`0xd7` decode to
//! `undefined`. A `binary` DataConnection sends every value as one packed
//! message, or — when the packed bytes exceed [`CHUNK_MTU`] — as chunk maps
//! `{__peerData: id, n, data, total}` that the receiver concatenates and
//! unpacks again. `{__peerData: {type: "close"}}` is PeerJS's graceful close.
//!
//! Decoding is bounded: nesting depth, element counts (checked against the
//! bytes left before anything is allocated), chunk counts, concurrent
//! reassemblies and buffered bytes all have caps, and every violation is a
//! [`DecodeError`], never a panic.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

/// PeerJS's `chunkedMTU`: packed values larger than this travel in chunks.
pub const CHUNK_MTU: usize = 16_300;

/// Deepest array/map nesting [`decode`] accepts.
pub const MAX_DEPTH: usize = strata_proto::limits::MAX_JSON_DEPTH;

/// The key that marks PeerJS's control maps (chunks and close).
const PEER_DATA: &str = "__peerData";

/// A BinaryPack value: the JavaScript values PeerJS can pack.
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    /// `null` (also what `undefined` decodes to).
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// An integer. JavaScript numbers above `i64::MAX` decode as [`Value::Float`].
    Int(i64),
    /// A non-integer number.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// Bytes (`ArrayBuffer`, typed arrays, `Blob`).
    Bin(Bytes),
    /// An array.
    Array(Vec<Value>),
    /// An object, keys in wire order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// The value under `key` if this is a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// JavaScript truthiness, as PeerJS's `if (peerData)` applies it.
    fn is_truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0 && !f.is_nan(),
            Value::Str(s) => !s.is_empty(),
            Value::Bin(_) | Value::Array(_) | Value::Map(_) => true,
        }
    }

    /// The value as JSON. Binary becomes an array of byte values, so a frame
    /// a JavaScript peer packed as an object reaches Rust as JSON text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Nil => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Bin(b) => J::Array(b.iter().map(|&byte| J::from(byte)).collect()),
            Value::Array(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

/// Why bytes are not a valid BinaryPack message.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("truncated BinaryPack value")]
    Truncated,
    /// Bytes follow the top-level value.
    #[error("{0} trailing bytes after the BinaryPack value")]
    Trailing(usize),
    /// A string is not UTF-8.
    #[error("BinaryPack string is not UTF-8")]
    InvalidUtf8,
    /// A map key is neither a string nor an integer.
    #[error("BinaryPack map key is not a string")]
    NonStringKey,
    /// Arrays or maps nest deeper than [`MAX_DEPTH`].
    #[error("BinaryPack nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A chunk map lacks a field or has one of the wrong type.
    #[error("malformed PeerJS chunk: {0}")]
    BadChunk(&'static str),
    /// A message or reassembly exceeds a configured cap.
    #[error("PeerJS message exceeds a limit: {0}")]
    Limit(&'static str),
}

/// Packs `value` into a new buffer.
pub fn encode(value: &Value) -> Bytes {
    let mut out = BytesMut::new();
    encode_into(value, &mut out);
    out.freeze()
}

/// Appends the packed `value` to `out`.
pub fn encode_into(value: &Value, out: &mut BytesMut) {
    match value {
        Value::Nil => out.put_u8(0xc0),
        Value::Bool(false) => out.put_u8(0xc2),
        Value::Bool(true) => out.put_u8(0xc3),
        Value::Int(i) => encode_int(*i, out),
        Value::Float(f) => {
            out.put_u8(0xcb);
            out.put_f64(*f);
        }
        Value::Str(s) => {
            put_len(out, s.len(), 0xb0, 0xd8, 0xd9);
            out.put_slice(s.as_bytes());
        }
        Value::Bin(b) => {
            put_bin_header(out, b.len());
            out.put_slice(b);
        }
        Value::Array(items) => {
            put_len(out, items.len(), 0x90, 0xdc, 0xdd);
            for item in items {
                encode_into(item, out);
            }
        }
        Value::Map(entries) => {
            put_len(out, entries.len(), 0x80, 0xde, 0xdf);
            for (k, v) in entries {
                put_len(out, k.len(), 0xb0, 0xd8, 0xd9);
                out.put_slice(k.as_bytes());
                encode_into(v, out);
            }
        }
    }
}

/// The header of a binary value of `len` bytes (the bytes follow it).
fn put_bin_header(out: &mut BytesMut, len: usize) {
    put_len(out, len, 0xa0, 0xda, 0xdb);
}

/// Writes a length with the fix/16-bit/32-bit codes of one type. Lengths
/// above `u32::MAX` cannot occur: callers cap frames far below it, and the
/// value is clamped rather than wrapped so a bug cannot forge a short length.
fn put_len(out: &mut BytesMut, len: usize, fix: u8, code16: u8, code32: u8) {
    if let Ok(small) = u8::try_from(len)
        && small <= 0x0f
    {
        out.put_u8(fix | small);
    } else if let Ok(len16) = u16::try_from(len) {
        out.put_u8(code16);
        out.put_u16(len16);
    } else {
        out.put_u8(code32);
        out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    }
}

/// Integers with the smallest code `peerjs-js-binarypack` would pick.
fn encode_int(i: i64, out: &mut BytesMut) {
    if (-0x20..=0x7f).contains(&i) {
        // Positive and negative fixints are the low byte of the two's complement.
        out.put_u8(i.to_le_bytes()[0]);
    } else if let Ok(v) = u8::try_from(i) {
        out.put_u8(0xcc);
        out.put_u8(v);
    } else if let Ok(v) = i8::try_from(i) {
        out.put_u8(0xd0);
        out.put_i8(v);
    } else if let Ok(v) = u16::try_from(i) {
        out.put_u8(0xcd);
        out.put_u16(v);
    } else if let Ok(v) = i16::try_from(i) {
        out.put_u8(0xd1);
        out.put_i16(v);
    } else if let Ok(v) = u32::try_from(i) {
        out.put_u8(0xce);
        out.put_u32(v);
    } else if let Ok(v) = i32::try_from(i) {
        out.put_u8(0xd2);
        out.put_i32(v);
    } else {
        out.put_u8(0xd3);
        out.put_i64(i);
    }
}

/// Unpacks exactly one value from `data`; trailing bytes are an error.
pub fn decode(data: &Bytes) -> Result<Value, DecodeError> {
    let mut reader = Reader { data, pos: 0 };
    let value = reader.value(0)?;
    match data.len() - reader.pos {
        0 => Ok(value),
        n => Err(DecodeError::Trailing(n)),
    }
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let slice = self.data.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn u32(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| DecodeError::Limit("length"))
    }

    fn bin(&mut self, len: usize) -> Result<Value, DecodeError> {
        let start = self.pos;
        self.take(len)?;
        Ok(Value::Bin(self.data.slice(start..self.pos)))
    }

    fn string(&mut self, len: usize) -> Result<String, DecodeError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8)
    }

    fn items(&mut self, count: usize, depth: usize) -> Result<Value, DecodeError> {
        // Every element takes at least one byte: refuse counts the input cannot
        // hold before allocating for them.
        if count > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn entries(&mut self, count: usize, depth: usize) -> Result<Value, DecodeError> {
        if count.saturating_mul(2) > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key = match self.value(depth + 1)? {
                Value::Str(s) => s,
                // JavaScript turns any key into a string; integers are the only
                // other keys a real peer could produce.
                Value::Int(i) => i.to_string(),
                _ => return Err(DecodeError::NonStringKey),
            };
            let value = self.value(depth + 1)?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let code = self.u8()?;
        let low = usize::from(code & 0x0f);
        Ok(match code {
            0x00..=0x7f => Value::Int(i64::from(code)),
            0xe0..=0xff => Value::Int(i64::from(i8::from_be_bytes([code]))),
            0x80..=0x8f => self.entries(low, depth)?,
            0x90..=0x9f => self.items(low, depth)?,
            0xa0..=0xaf => self.bin(low)?,
            0xb0..=0xbf => Value::Str(self.string(low)?),
            0xc0 | 0xc1 | 0xc4..=0xc9 | 0xd4..=0xd7 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.array()?))),
            0xcb => Value::Float(f64::from_be_bytes(self.array()?)),
            0xcc => Value::Int(i64::from(self.u8()?)),
            0xcd => Value::Int(i64::from(u16::from_be_bytes(self.array()?))),
            0xce => Value::Int(i64::from(u32::from_be_bytes(self.array()?))),
            0xcf => {
                let v = u64::from_be_bytes(self.array()?);
                // JavaScript would round it to a double; so do we, past i64.
                i64::try_from(v).map_or(Value::Float(v as f64), Value::Int)
            }
            0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.array()?))),
            0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Value::Int(i64::from_be_bytes(self.array()?)),
            0xd8 => {
                let len = self.u16()?;
                Value::Str(self.string(len)?)
            }
            0xd9 => {
                let len = self.u32()?;
                Value::Str(self.string(len)?)
            }
            0xda => {
                let len = self.u16()?;
                self.bin(len)?
            }
            0xdb => {
                let len = self.u32()?;
                self.bin(len)?
            }
            0xdc => {
                let count = self.u16()?;
                self.items(count, depth)?
            }
            0xdd => {
                let count = self.u32()?;
                self.items(count, depth)?
            }
            0xde => {
                let count = self.u16()?;
                self.entries(count, depth)?
            }
            0xdf => {
                let count = self.u32()?;
                self.entries(count, depth)?
            }
        })
    }
}

/// What one `binary` DataConnection message carries once chunks are joined.
#[derive(Clone, PartialEq, Debug)]
pub enum Message {
    /// A complete value.
    Value(Value),
    /// PeerJS's graceful close, `{__peerData: {type: "close"}}`.
    Close,
}

/// The packed `{__peerData: {type: "close"}}` PeerJS sends on `close({flush})`.
pub fn close_message() -> Bytes {
    encode(&Value::Map(vec![(
        PEER_DATA.to_owned(),
        Value::Map(vec![("type".to_owned(), Value::Str("close".to_owned()))]),
    )]))
}

/// Packs `payload` as one binary value and splits it into DataConnection
/// messages: one message when the packed size is at most `mtu`, else chunk
/// maps numbered from 0 under `id` (which must be non-zero, as PeerJS tests
/// it for truthiness).
pub fn encode_bin_messages(payload: &[u8], id: u64, mtu: usize) -> Vec<Bytes> {
    let mut header = BytesMut::with_capacity(5);
    put_bin_header(&mut header, payload.len());
    let packed_len = header.len() + payload.len();
    if packed_len <= mtu {
        let mut out = BytesMut::with_capacity(packed_len);
        out.put_slice(&header);
        out.put_slice(payload);
        return vec![out.freeze()];
    }
    let mtu = mtu.max(1);
    let total = packed_len.div_ceil(mtu);
    let id = i64::try_from(id).unwrap_or(i64::MAX).max(1);
    let total_value = i64::try_from(total).unwrap_or(i64::MAX);
    // The packed value is `header ++ payload`; chunk it without building it.
    let mut messages = Vec::with_capacity(total);
    for n in 0..total {
        let start = n * mtu;
        let end = (start + mtu).min(packed_len);
        let from_header = header
            .get(start.min(header.len())..end.min(header.len()))
            .unwrap_or_default();
        let payload_range = start.saturating_sub(header.len())..end.saturating_sub(header.len());
        let from_payload = payload.get(payload_range).unwrap_or_default();
        messages.push(chunk_message(id, n, total_value, &[from_header, from_payload]));
    }
    messages
}

/// One chunk map, keys in PeerJS's order: `__peerData, n, data, total`.
fn chunk_message(id: i64, n: usize, total: i64, pieces: &[&[u8]]) -> Bytes {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(len + 40);
    put_len(&mut out, 4, 0x80, 0xde, 0xdf);
    for (key, value) in [
        (PEER_DATA, Value::Int(id)),
        ("n", Value::Int(i64::try_from(n).unwrap_or(i64::MAX))),
    ] {
        encode_into(&Value::Str(key.to_owned()), &mut out);
        encode_into(&value, &mut out);
    }
    encode_into(&Value::Str("data".to_owned()), &mut out);
    put_bin_header(&mut out, len);
    for piece in pieces {
        out.put_slice(piece);
    }
    encode_into(&Value::Str("total".to_owned()), &mut out);
    encode_into(&Value::Int(total), &mut out);
    out.freeze()
}

/// Caps for a [`Reassembler`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReassemblyLimits {
    /// Largest packed message, chunked or not.
    pub max_message: usize,
    /// Most chunks one message may announce.
    pub max_chunks: usize,
    /// Most messages under reassembly at once.
    pub max_pending: usize,
}

impl ReassemblyLimits {
    /// Limits for messages of up to `max_message` packed bytes.
    pub fn for_message_size(max_message: usize) -> Self {
        Self {
            max_message,
            // Chunks may be smaller than PeerJS's MTU; allow 4x the count.
            max_chunks: max_message.div_ceil(CHUNK_MTU).saturating_mul(4).max(16),
            max_pending: 8,
        }
    }
}

/// Joins chunked `binary` messages of one DataConnection.
///
/// Chunks of different ids may interleave and arrive in any order (PeerJS's
/// default channel is unordered). Buffered bytes never exceed
/// `max_pending × max_message`.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    pending: HashMap<i64, Partial>,
}

#[derive(Debug)]
struct Partial {
    parts: Vec<Option<Bytes>>,
    count: usize,
    bytes: usize,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
        }
    }

    /// Messages under reassembly.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one DataConnection message; returns a message once complete.
    pub fn push(&mut self, data: &Bytes) -> Result<Option<Message>, DecodeError> {
        if data.len() > self.limits.max_message.saturating_add(64) {
            return Err(DecodeError::Limit("message size"));
        }
        let value = decode(data)?;
        self.handle(value)
    }

    fn handle(&mut self, value: Value) -> Result<Option<Message>, DecodeError> {
        let peer_data = match value.get(PEER_DATA) {
            Some(peer_data) if peer_data.is_truthy() => peer_data,
            _ => return Ok(Some(Message::Value(value))),
        };
        if let Value::Map(_) = peer_data {
            return match peer_data.get("type") {
                Some(Value::Str(t)) if t == "close" => Ok(Some(Message::Close)),
                _ => Err(DecodeError::BadChunk("unknown __peerData control")),
            };
        }
        let id = match peer_data {
            Value::Int(id) => *id,
            _ => return Err(DecodeError::BadChunk("__peerData is not an integer")),
        };
        let (n, total, piece) = match (value.get("n"), value.get("total"), value.get("data")) {
            (Some(Value::Int(n)), Some(Value::Int(total)), Some(Value::Bin(piece))) => (*n, *total, piece.clone()),
            _ => return Err(DecodeError::BadChunk("n, total or data missing")),
        };
        let total = usize::try_from(total).map_err(|_| DecodeError::BadChunk("negative total"))?;
        let n = usize::try_from(n).map_err(|_| DecodeError::BadChunk("negative n"))?;
        if total == 0 || total > self.limits.max_chunks {
            return Err(DecodeError::Limit("chunk count"));
        }
        if n >= total {
            return Err(DecodeError::BadChunk("n >= total"));
        }
        if !self.pending.contains_key(&id) && self.pending.len() >= self.limits.max_pending {
            return Err(DecodeError::Limit("concurrent chunked messages"));
        }
        let partial = self.pending.entry(id).or_insert_with(|| Partial {
            parts: vec![None; total],
            count: 0,
            bytes: 0,
        });
        if partial.parts.len() != total {
            self.pending.remove(&id);
            return Err(DecodeError::BadChunk("total changed between chunks"));
        }
        let Some(slot) = partial.parts.get_mut(n) else {
            return Err(DecodeError::BadChunk("n >= total"));
        };
        if slot.is_some() {
            self.pending.remove(&id);
            return Err(DecodeError::BadChunk("duplicate chunk"));
        }
        partial.bytes += piece.len();
        if partial.bytes > self.limits.max_message {
            self.pending.remove(&id);
            return Err(DecodeError::Limit("chunked message size"));
        }
        *slot = Some(piece);
        partial.count += 1;
        if partial.count < total {
            return Ok(None);
        }
        let Some(done) = self.pending.remove(&id) else {
            return Ok(None);
        };
        let mut joined = BytesMut::with_capacity(done.bytes);
        for part in done.parts.into_iter().flatten() {
            joined.put_slice(&part);
        }
        // PeerJS hands the joined bytes to the same handler again; a chunk map
        // inside a chunked message would recurse, which we refuse.
        let value = decode(&joined.freeze())?;
        match value.get(PEER_DATA) {
            Some(inner) if inner.is_truthy() => Err(DecodeError::BadChunk("nested chunking")),
            _ => Ok(Some(Message::Value(value))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;

    fn roundtrip(value: Value) {
        let packed = encode(&value);
        assert_eq!(decode(&packed).unwrap(), value, "{packed:02x?}");
    }

    #[test]
    fn known_encodings_match_peerjs() {
        // From the spec capture: {hello: "bp", n: 7}.
        let value = Value::Map(vec![
            ("hello".into(), Value::Str("bp".into())),
            ("n".into(), Value::Int(7)),
        ]);
        let expected = [
            0x82, 0xb5, b'h', b'e', b'l', b'l', b'o', 0xb2, b'b', b'p', 0xb1, b'n', 0x07,
        ];
        assert_eq!(&encode(&value)[..], &expected[..]);
        assert_eq!(&encode(&Value::Int(-1))[..], &[0xff]);
        assert_eq!(&encode(&Value::Int(-32))[..], &[0xe0]);
        assert_eq!(&encode(&Value::Int(-33))[..], &[0xd0, 0xdf]);
        assert_eq!(&encode(&Value::Int(200))[..], &[0xcc, 200]);
        assert_eq!(&encode(&Value::Int(300))[..], &[0xcd, 0x01, 0x2c]);
        assert_eq!(&encode(&Value::Int(-300))[..], &[0xd1, 0xfe, 0xd4]);
        assert_eq!(&encode(&Value::Int(70_000))[..], &[0xce, 0x00, 0x01, 0x11, 0x70]);
        assert_eq!(&encode(&Value::Bin(Bytes::from_static(b"ab")))[..], &[0xa2, b'a', b'b']);
        let long = "x".repeat(20);
        assert_eq!(&encode(&Value::Str(long.clone()))[..3], &[0xd8, 0x00, 20]);
        assert_eq!(&encode(&Value::Nil)[..], &[0xc0]);
        assert_eq!(&encode(&Value::Float(0.5))[..], &[0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn roundtrips() {
        for i in [
            0,
            1,
            127,
            128,
            255,
            256,
            -1,
            -32,
            -33,
            -128,
            -129,
            65_535,
            65_536,
            -32_769,
            1 << 40,
            i64::MIN,
        ] {
            roundtrip(Value::Int(i));
        }
        roundtrip(Value::Float(-1.25e300));
        roundtrip(Value::Bool(true));
        roundtrip(Value::Str("héllo ü".into()));
        roundtrip(Value::Str("y".repeat(70_000)));
        roundtrip(Value::Bin(Bytes::from(vec![7; 70_000])));
        roundtrip(Value::Array((0..20).map(Value::Int).collect()));
        roundtrip(Value::Map((0..20).map(|i| (format!("k{i}"), Value::Nil)).collect()));
    }

    #[test]
    fn decodes_undefined_and_f32() {
        for code in [0xc1, 0xd4, 0xd5, 0xd6, 0xd7] {
            assert_eq!(decode(&Bytes::from(vec![code])).unwrap(), Value::Nil);
        }
        let f32_one = [0xca, 0x3f, 0x80, 0, 0];
        assert_eq!(decode(&Bytes::copy_from_slice(&f32_one)).unwrap(), Value::Float(1.0));
    }

    #[test]
    fn hostile_input_is_a_typed_error() {
        let cases: &[(&[u8], DecodeError)] = &[
            (&[], DecodeError::Truncated),
            (&[0xdb, 0xff, 0xff, 0xff, 0xff], DecodeError::Truncated),
            (&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x00], DecodeError::Truncated),
            (&[0xdf, 0xff, 0xff, 0xff, 0xff, 0x00], DecodeError::Truncated),
            (&[0xb1, 0xff], DecodeError::InvalidUtf8),
            (&[0x81, 0xc3, 0x00], DecodeError::NonStringKey),
            (&[0x01, 0x02], DecodeError::Trailing(1)),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &decode(&Bytes::copy_from_slice(input)).unwrap_err(),
                expected,
                "{input:02x?}"
            );
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x91, MAX_DEPTH + 2).chain([0xc0]).collect();
        assert_eq!(decode(&Bytes::from(deep)).unwrap_err(), DecodeError::TooDeep);
    }

    #[test]
    fn every_prefix_of_a_message_fails_cleanly() {
        let value = Value::Map(vec![
            ("blob".into(), Value::Bin(Bytes::from(vec![1; 300]))),
            ("s".into(), Value::Str("héllo".into())),
            ("a".into(), Value::Array(vec![Value::Float(1.5), Value::Int(-70_000)])),
        ]);
        let packed = encode(&value);
        for cut in 0..packed.len() {
            assert!(decode(&packed.slice(..cut)).is_err(), "prefix of {cut} bytes decoded");
        }
    }

    #[test]
    fn chunked_roundtrip_in_any_order() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut messages = encode_bin_messages(&payload, 1, CHUNK_MTU);
        assert_eq!(messages.len(), 7);
        // PeerJS's layout: 84 ba "__peerData" 01 b1 "n" 00 b4 "data" da 3f ac ...
        assert_eq!(&messages[0][..2], &[0x84, 0xba]);
        assert_eq!(&messages[0][12..15], &[0x01, 0xb1, b'n']);
        assert_eq!(&messages[0][21..24], &[0xda, 0x3f, 0xac]);
        assert_eq!(messages[0].len(), 16_331);
        messages.reverse();
        let mut reassembler = Reassembler::new(ReassemblyLimits::for_message_size(1 << 20));
        let mut done = None;
        for message in &messages {
            if let Some(complete) = reassembler.push(message).unwrap() {
                assert!(done.is_none());
                done = Some(complete);
            }
        }
        assert_eq!(done, Some(Message::Value(Value::Bin(Bytes::from(payload)))));
        assert_eq!(reassembler.pending(), 0);
    }

    #[test]
    fn chunk_boundaries_anywhere_reassemble() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        for mtu in [1, 2, 3, 5, 6, 7, 100, 299, 304, 305] {
            let messages = encode_bin_messages(&payload, 9, mtu);
            let mut r = Reassembler::new(ReassemblyLimits {
                max_message: 1024,
                max_chunks: 1024,
                max_pending: 1,
            });
            let done: Vec<_> = messages.iter().filter_map(|m| r.push(m).unwrap()).collect();
            assert_eq!(
                done,
                vec![Message::Value(Value::Bin(Bytes::from(payload.clone())))],
                "mtu {mtu}"
            );
        }
    }

    #[test]
    fn small_payload_is_one_plain_message() {
        let messages = encode_bin_messages(b"hi", 3, CHUNK_MTU);
        assert_eq!(messages, vec![Bytes::from_static(&[0xa2, b'h', b'i'])]);
    }

    #[test]
    fn close_is_recognised() {
        let mut reassembler = Reassembler::new(ReassemblyLimits::for_message_size(1024));
        assert_eq!(reassembler.push(&close_message()).unwrap(), Some(Message::Close));
    }

    #[test]
    fn reassembly_caps_hold() {
        let limits = ReassemblyLimits {
            max_message: 100,
            max_chunks: 4,
            max_pending: 2,
        };
        let mut r = Reassembler::new(limits);
        // Too many chunks announced.
        let too_many = chunk_message(1, 0, 5, &[b"x"]);
        assert_eq!(r.push(&too_many).unwrap_err(), DecodeError::Limit("chunk count"));
        // Too many concurrent messages.
        r.push(&chunk_message(1, 0, 2, &[b"x"])).unwrap();
        r.push(&chunk_message(2, 0, 2, &[b"x"])).unwrap();
        let third = chunk_message(3, 0, 2, &[b"x"]);
        assert_eq!(
            r.push(&third).unwrap_err(),
            DecodeError::Limit("concurrent chunked messages")
        );
        // Duplicates and inconsistent totals drop the partial message.
        assert_eq!(
            r.push(&chunk_message(1, 0, 2, &[b"x"])).unwrap_err(),
            DecodeError::BadChunk("duplicate chunk")
        );
        assert_eq!(
            r.push(&chunk_message(2, 1, 3, &[b"x"])).unwrap_err(),
            DecodeError::BadChunk("total changed between chunks")
        );
        assert_eq!(r.pending(), 0);
        // Too many bytes.
        r.push(&chunk_message(4, 0, 2, &[&[0; 60]])).unwrap();
        assert_eq!(
            r.push(&chunk_message(4, 1, 2, &[&[0; 60]])).unwrap_err(),
            DecodeError::Limit("chunked message size")
        );
        // Out-of-range index.
        assert_eq!(
            r.push(&chunk_message(5, 2, 2, &[b"x"])).unwrap_err(),
            DecodeError::BadChunk("n >= total")
        );
    }
}
