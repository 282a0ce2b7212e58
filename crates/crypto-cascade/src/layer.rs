//! The one trait every cascade layer implements, and what the composition
//! hands a layer while it runs.

use std::fmt;

use rand::CryptoRng;
use strata_proto::LayerParameters;

use crate::codec::{Writer, encode_params};
use crate::error::Result;
use crate::identity::InstallationId;
use crate::secret::{Secret32, SecretBytes};

/// A layer's P5.3 `LayerMetadata` name and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// `algorithm`, e.g. `MLS`, `Signal`, `ML-KEM`, `AES-GCM-256`.
    pub algorithm: &'static str,
    /// `version`.
    pub version: &'static str,
}

/// A secret an inner layer contributes to the keys of the layers outside
/// it, for one message: the MLS exporter secret of the message's MLS epoch,
/// or the ML-KEM layer's export secret of the message's KEM epoch.
///
/// The AES-GCM layer keys itself from these (see the crate docs). Never
/// leaves the process; `Debug` is redacted.
#[derive(Clone)]
pub struct Contribution {
    pub(crate) source: &'static str,
    pub(crate) epoch: u64,
    pub(crate) secret: Secret32,
}

impl Contribution {
    pub(crate) fn new(source: &'static str, epoch: u64, secret: Secret32) -> Self {
        Self { source, epoch, secret }
    }

    /// The contributing layer's algorithm name.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The contributing layer's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl fmt::Debug for Contribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contribution")
            .field("source", &self.source)
            .field("epoch", &self.epoch)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// What a layer's `seal` returns.
#[derive(Debug)]
pub struct Sealed {
    /// The layer's ciphertext: the next layer's input.
    pub output: Vec<u8>,
    /// The layer's public header (P5.3 `layerParameters[i]`). Never a key.
    pub params: LayerParameters,
    /// The secret this layer contributes to outer layers for this message.
    pub contribution: Option<Contribution>,
}

/// Which installation sends the message and which receives it, plus the
/// payload fields every layer's associated data covers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Envelope {
    pub(crate) sender: InstallationId,
    pub(crate) receiver: InstallationId,
    pub(crate) timestamp: Option<u64>,
    pub(crate) original_size: u64,
    pub(crate) layer_count: usize,
}

/// What the composition hands a layer: the binding of this message, the
/// headers and contributions of the layers inside it, and randomness.
pub struct LayerContext<'a> {
    pub(crate) envelope: Envelope,
    pub(crate) inner_infos: &'a [LayerInfo],
    pub(crate) inner_params: &'a [LayerParameters],
    pub(crate) own: LayerInfo,
    pub(crate) contributions: &'a [Contribution],
    pub(crate) rng: &'a mut dyn CryptoRng,
}

impl LayerContext<'_> {
    /// The associated data that binds this layer's ciphertext to the whole
    /// payload: see "Binding the layers together" in the crate docs.
    pub fn associated_data(&self, own_params: &LayerParameters) -> Vec<u8> {
        let mut w = Writer::new(b"strata/v1/cascade-aad\0");
        w.raw(self.envelope.sender.as_bytes())
            .raw(self.envelope.receiver.as_bytes());
        match self.envelope.timestamp {
            Some(t) => w.u8(1).u64(t),
            None => w.u8(0).u64(0),
        };
        w.u64(self.envelope.original_size);
        w.u32(u32::try_from(self.envelope.layer_count).unwrap_or(u32::MAX));
        let own = (self.own, own_params);
        let inner = self.inner_infos.iter().copied().zip(self.inner_params);
        for (info, params) in inner.chain(std::iter::once(own)) {
            w.bytes(info.algorithm.as_bytes()).bytes(info.version.as_bytes());
            encode_params(&mut w, params);
        }
        w.finish_public()
    }

    /// Contributions of the layers inside this one, innermost first.
    pub fn contributions(&self) -> &[Contribution] {
        self.contributions
    }

    /// The sending installation.
    pub fn sender(&self) -> InstallationId {
        self.envelope.sender
    }

    /// The receiving installation.
    pub fn receiver(&self) -> InstallationId {
        self.envelope.receiver
    }

    /// The caller's CSPRNG.
    pub fn rng(&mut self) -> &mut dyn CryptoRng {
        self.rng
    }
}

/// One layer of the cascade.
///
/// A layer is two-phase: `seal`, `resolve` and `open` only *stage* their
/// state changes; the composition then calls [`Layer::commit`] on every
/// layer once the whole message has gone through, or [`Layer::abort`] on
/// every layer if any of them failed. So a forged or failed message never
/// advances a ratchet, and a send that fails half-way never burns a key.
pub trait Layer {
    /// The layer's name and version, as written in `LayerMetadata`.
    fn info(&self) -> LayerInfo;

    /// Encrypts `input`, staging the state change.
    fn seal(&mut self, input: &[u8], ctx: &mut LayerContext<'_>) -> Result<Sealed>;

    /// Receive pre-pass, run on every layer (innermost first) before any
    /// layer decrypts: reads the layer's public header, stages what deriving
    /// its key needs (e.g. a new KEM epoch), and returns its contribution
    /// to the outer layers' keys.
    fn resolve(&mut self, params: &LayerParameters) -> Result<Option<Contribution>> {
        let _ = params;
        Ok(None)
    }

    /// Decrypts `input`, staging the state change.
    fn open(&mut self, input: &[u8], params: &LayerParameters, ctx: &mut LayerContext<'_>) -> Result<Vec<u8>>;

    /// Makes the staged change permanent.
    fn commit(&mut self);

    /// Drops the staged change.
    fn abort(&mut self);

    /// The layer's whole state, to persist. Call between messages (nothing
    /// staged).
    fn export_state(&self) -> Result<SecretBytes>;
}
