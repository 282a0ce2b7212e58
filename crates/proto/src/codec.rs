//! Bounded field types: every byte string, text and array a peer sends is
//! capped *while* it is parsed, so a hostile PDU cannot make us allocate more
//! than the cap of the field it fills.
//!
//! Byte strings travel as standard base64 (RFC 4648 §4, padded). Decoders also
//! accept the P5 form, a JSON array of integers 0–255.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::error::LimitError;

/// Prefix of every serde error raised by a cap in this module. `decode` maps
/// errors that carry it to [`crate::DecodeError::LimitExceeded`].
pub(crate) const LIMIT_PREFIX: &str = "limit exceeded: ";

fn limit_error<E: de::Error>(what: &str, max: usize) -> E {
    E::custom(format_args!("{LIMIT_PREFIX}{what} longer than {max}"))
}

/// A byte string of at most `MAX` bytes.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Blob<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> Blob<MAX> {
    /// Wraps `bytes`, refusing more than `MAX` of them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, LimitError> {
        let bytes = bytes.into();
        if bytes.len() > MAX {
            return Err(LimitError::TooLong {
                field: "bytes",
                len: bytes.len(),
                max: MAX,
            });
        }
        Ok(Self(bytes))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Takes the bytes out.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const MAX: usize> AsRef<[u8]> for Blob<MAX> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

// Blobs carry key material and ciphertexts: show their size, not their bytes.
impl<const MAX: usize> fmt::Debug for Blob<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl<const MAX: usize> Serialize for Blob<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Blob<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BytesVisitor::<MAX>).map(Self)
    }
}

/// Visits a base64 string or a JSON array of bytes, capped at `MAX` bytes.
struct BytesVisitor<const MAX: usize>;

impl<'de, const MAX: usize> Visitor<'de> for BytesVisitor<MAX> {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a base64 string or an array of bytes, at most {MAX} bytes")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
        // Check the encoded length first: never decode more than the cap allows.
        if s.len() > MAX.div_ceil(3) * 4 {
            return Err(limit_error("byte string", MAX));
        }
        let bytes = B64
            .decode(s)
            .map_err(|e| E::custom(format_args!("invalid base64: {e}")))?;
        if bytes.len() > MAX {
            return Err(limit_error("byte string", MAX));
        }
        Ok(bytes)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            if bytes.len() == MAX {
                return Err(limit_error("byte array", MAX));
            }
            bytes.push(b);
        }
        Ok(bytes)
    }
}

/// UTF-8 text of at most `MAX` bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    /// Wraps `text`, refusing more than `MAX` bytes of UTF-8.
    pub fn new(text: impl Into<String>) -> Result<Self, LimitError> {
        let text = text.into();
        if text.len() > MAX {
            return Err(LimitError::TooLong {
                field: "text",
                len: text.len(),
                max: MAX,
            });
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes the text out.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MAX: usize> fmt::Debug for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> AsRef<str> for Text<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Serialize for Text<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<const MAX: usize>;
        impl<const MAX: usize> Visitor<'_> for V<MAX> {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a string of at most {MAX} bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<String, E> {
                if s.len() > MAX {
                    return Err(limit_error("string", MAX));
                }
                Ok(s.to_owned())
            }
        }
        deserializer.deserialize_str(V::<MAX>).map(Self)
    }
}

/// A list of at most `MAX` items.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    /// Wraps `items`, refusing more than `MAX` of them.
    pub fn new(items: Vec<T>) -> Result<Self, LimitError> {
        if items.len() > MAX {
            return Err(LimitError::TooLong {
                field: "list",
                len: items.len(),
                max: MAX,
            });
        }
        Ok(Self(items))
    }

    /// The items.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// Takes the items out.
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the items.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T, const MAX: usize> Default for BoundedVec<T, MAX> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'a, T, const MAX: usize> IntoIterator for &'a BoundedVec<T, MAX> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize, const MAX: usize> Serialize for BoundedVec<T, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for item in &self.0 {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T, const MAX: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of at most {MAX} items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX));
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX {
                        return Err(limit_error("array", MAX));
                    }
                    items.push(item);
                }
                Ok(items)
            }
        }
        deserializer.deserialize_seq(V::<T, MAX>(PhantomData)).map(Self)
    }
}

/// The value of one public per-layer parameter (see [`LayerParameters`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParamValue {
    /// A counter, epoch number, length or tag.
    Uint(u64),
    /// A flag.
    Bool(bool),
    /// A public byte string: a KEM ciphertext, a ratchet public key, a group id.
    Bytes(Blob<{ crate::limits::MAX_PARAM_BYTES }>),
}

impl Serialize for ParamValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Uint(n) => serializer.serialize_u64(*n),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Bytes(b) => b.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unsigned integer, a bool, or bytes")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ParamValue, E> {
                Ok(ParamValue::Uint(n))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<ParamValue, E> {
                Ok(ParamValue::Bool(b))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ParamValue, E> {
                BytesVisitor::<{ crate::limits::MAX_PARAM_BYTES }>
                    .visit_str(s)
                    .map(|b| ParamValue::Bytes(Blob(b)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ParamValue, A::Error> {
                BytesVisitor::<{ crate::limits::MAX_PARAM_BYTES }>
                    .visit_seq(seq)
                    .map(|b| ParamValue::Bytes(Blob(b)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Public, per-layer decrypt parameters of one cascade layer (P5.3
/// `layerParameters[i]`): counters, epoch ids, KEM ciphertexts. Never a key:
/// the values are limited to integers, flags and public byte strings, and the
/// cascade crate decides what it puts here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct LayerParameters(BTreeMap<Text<{ crate::limits::MAX_PARAM_NAME }>, ParamValue>);

impl LayerParameters {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, refusing more than
    /// [`MAX_LAYER_PARAMS`](crate::limits::MAX_LAYER_PARAMS) entries or an
    /// over-long name.
    pub fn insert(&mut self, name: &str, value: ParamValue) -> Result<(), LimitError> {
        let name = Text::new(name)?;
        if !self.0.contains_key(&name) && self.0.len() >= crate::limits::MAX_LAYER_PARAMS {
            return Err(LimitError::TooLong {
                field: "layerParameters",
                len: self.0.len() + 1,
                max: crate::limits::MAX_LAYER_PARAMS,
            });
        }
        self.0.insert(name, value);
        Ok(())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v)
    }

    /// The integer value of `name`, if it is one.
    pub fn uint(&self, name: &str) -> Option<u64> {
        match self.get(name)? {
            ParamValue::Uint(n) => Some(*n),
            _ => None,
        }
    }

    /// The byte value of `name`, if it is one.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        match self.get(name)? {
            ParamValue::Bytes(b) => Some(b.as_bytes()),
            _ => None,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over `(name, value)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Serialize for LayerParameters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LayerParameters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LayerParameters;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of layer parameters")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LayerParameters, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<Text<{ crate::limits::MAX_PARAM_NAME }>, ParamValue>()? {
                    if out.len() == crate::limits::MAX_LAYER_PARAMS {
                        return Err(limit_error("layer parameters", crate::limits::MAX_LAYER_PARAMS));
                    }
                    if out.insert(k, v).is_some() {
                        return Err(de::Error::custom("duplicate layer parameter"));
                    }
                }
                Ok(LayerParameters(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A fixed-length identifier of `N` random bytes, carried as base64.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FixedBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Debug for FixedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl<const N: usize> Serialize for FixedBytes<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&B64.encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for FixedBytes<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserializer.deserialize_any(BytesVisitor::<N>)?;
        let array: [u8; N] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| de::Error::invalid_length(v.len(), &"exactly the id length"))?;
        Ok(Self(array))
    }
}

#[cfg(feature = "arbitrary")]
mod arb {
    //! Cap-respecting generators, for property tests and fuzz targets.
    use arbitrary::{Arbitrary, Result, Unstructured};

    use super::*;

    impl<'a, const MAX: usize> Arbitrary<'a> for Blob<MAX> {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let len = u.int_in_range(0..=MAX.min(2048))?;
            Ok(Self(u.bytes(len)?.to_vec()))
        }
    }

    impl<'a, const MAX: usize> Arbitrary<'a> for Text<MAX> {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let mut s = String::arbitrary(u)?;
            while s.len() > MAX {
                s.pop();
            }
            Ok(Self(s))
        }
    }

    impl<'a, T: Arbitrary<'a>, const MAX: usize> Arbitrary<'a> for BoundedVec<T, MAX> {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let len = u.int_in_range(0..=MAX.min(8))?;
            (0..len).map(|_| T::arbitrary(u)).collect::<Result<_>>().map(Self)
        }
    }

    impl<'a> Arbitrary<'a> for ParamValue {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            Ok(match u.int_in_range(0..=2u8)? {
                0 => Self::Uint(u.arbitrary()?),
                1 => Self::Bool(u.arbitrary()?),
                _ => Self::Bytes(u.arbitrary()?),
            })
        }
    }

    impl<'a> Arbitrary<'a> for LayerParameters {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let mut p = Self::new();
            for _ in 0..u.int_in_range(0..=4u8)? {
                let name: Text<{ crate::limits::MAX_PARAM_NAME }> = u.arbitrary()?;
                let _ = p.insert(name.as_str(), u.arbitrary()?);
            }
            Ok(p)
        }
    }

    impl<'a, const N: usize> Arbitrary<'a> for FixedBytes<N> {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            Ok(Self(u.arbitrary()?))
        }
    }
}
