//! A small bounded binary codec for exported layer state and for the
//! canonical encodings that go into signatures and AEAD associated data.
//!
//! Integers are big-endian; byte strings are prefixed with a `u32` length.
//! Every read is bounds-checked and returns [`CascadeError::CorruptState`]
//! (state) or [`CascadeError::Malformed`] (peer input, mapped by callers).

use strata_proto::{LayerParameters, ParamValue};
use zeroize::Zeroizing;

use crate::error::{CascadeError, Result};
use crate::secret::{Secret32, SecretBytes};

/// Appends fields to a buffer that is zeroized when dropped (state may hold
/// secrets).
pub(crate) struct Writer {
    buf: Zeroizing<Vec<u8>>,
}

impl Writer {
    pub(crate) fn new(magic: &[u8]) -> Self {
        let mut buf = Zeroizing::new(Vec::with_capacity(256));
        buf.extend_from_slice(magic);
        Self { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A length-prefixed byte string. Lengths above `u32::MAX` cannot occur:
    /// every field we write is far below the 16 MiB PDU cap.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    pub(crate) fn secret(&mut self, s: &Secret32) -> &mut Self {
        self.raw(s.expose())
    }

    /// Makes room for `additional` more bytes at once. Secret encodings
    /// reserve what they need before writing: growing the buffer moves it,
    /// and the allocation left behind is not zeroized.
    pub(crate) fn reserve(&mut self, additional: usize) -> &mut Self {
        self.buf.reserve(additional);
        self
    }

    /// The encoding, moved out (not copied: a copy would cost a whole pair
    /// state per message and leave one more buffer to zeroize).
    pub(crate) fn finish(mut self) -> SecretBytes {
        SecretBytes::new(std::mem::take(&mut *self.buf))
    }

    pub(crate) fn finish_public(mut self) -> Vec<u8> {
        std::mem::take(&mut *self.buf)
    }
}

/// Reads fields back; every method checks bounds.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`, which must begin with `magic`.
    pub(crate) fn new(buf: &'a [u8], magic: &[u8], what: &'static str) -> Result<Self> {
        let rest = buf.strip_prefix(magic).ok_or(CascadeError::CorruptState(what))?;
        Ok(Self { buf: rest, what })
    }

    fn err(&self) -> CascadeError {
        CascadeError::CorruptState(self.what)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| self.err())
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_be_bytes(self.array::<1>()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array::<4>()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = usize::try_from(self.u32()?).map_err(|_| self.err())?;
        if len > max {
            return Err(self.err());
        }
        self.take(len)
    }

    pub(crate) fn secret(&mut self) -> Result<Secret32> {
        Ok(Secret32::new(self.array::<32>()?))
    }

    /// A count of items that will follow, at most `max`.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize> {
        let n = usize::try_from(self.u32()?).map_err(|_| self.err())?;
        if n > max {
            return Err(self.err());
        }
        Ok(n)
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.buf.is_empty() { Ok(()) } else { Err(self.err()) }
    }
}

/// Appends the canonical encoding of one layer's public parameters: the
/// entry count, then each `(name, type, value)` in name order. Used in AEAD
/// associated data, so it must never change within a format version.
pub(crate) fn encode_params(w: &mut Writer, params: &LayerParameters) {
    w.u32(u32::try_from(params.len()).unwrap_or(u32::MAX));
    for (name, value) in params.iter() {
        w.bytes(name.as_bytes());
        match value {
            ParamValue::Uint(n) => {
                w.u8(1).u64(*n);
            }
            ParamValue::Bool(b) => {
                w.u8(2).u8(u8::from(*b));
            }
            ParamValue::Bytes(b) => {
                w.u8(3).bytes(b.as_bytes());
            }
        }
    }
}
