//! The profile's four-layer cascade between two installations, with typed
//! access to each layer for setup and rotation.

use rand::CryptoRng;
use strata_proto::CascadedPayload;

use crate::cascade::{Composition, MonotonicStopwatch, Stopwatch};
use crate::codec::{Reader, Writer};
use crate::error::Result;
use crate::identity::InstallationId;
use crate::layer::Layer;
use crate::layers::aes::AesGcmLayer;
use crate::layers::mlkem::MlKemLayer;
use crate::layers::mls::MlsLayer;
use crate::layers::signal::SignalLayer;
use crate::secret::SecretBytes;

const STATE_MAGIC: &[u8] = b"strata-pair-cascade-v1";

/// MLS → Signal → ML-KEM → AES-GCM between `local` and `remote`.
pub struct PairCascade {
    local: InstallationId,
    remote: InstallationId,
    mls: MlsLayer,
    signal: SignalLayer,
    kem: MlKemLayer,
    aes: AesGcmLayer,
    stopwatch: Box<dyn Stopwatch>,
}

impl std::fmt::Debug for PairCascade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairCascade")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("mls", &self.mls)
            .field("signal", &self.signal)
            .field("kem", &self.kem)
            .finish_non_exhaustive()
    }
}

impl PairCascade {
    /// Assembles the cascade from set-up layers.
    pub fn new(
        local: InstallationId,
        remote: InstallationId,
        mls: MlsLayer,
        signal: SignalLayer,
        kem: MlKemLayer,
        aes: AesGcmLayer,
    ) -> Self {
        let stopwatch = Box::new(MonotonicStopwatch::default());
        Self {
            local,
            remote,
            mls,
            signal,
            kem,
            aes,
            stopwatch,
        }
    }

    /// Encrypts `plaintext` at `now_ms` (Unix milliseconds).
    pub fn encrypt(&mut self, plaintext: &[u8], now_ms: u64, rng: &mut dyn CryptoRng) -> Result<CascadedPayload> {
        let (local, remote) = (self.local, self.remote);
        let stopwatch = &*self.stopwatch;
        let mut layers: [&mut dyn Layer; 4] = [&mut self.mls, &mut self.signal, &mut self.kem, &mut self.aes];
        Composition {
            layers: &mut layers,
            local,
            remote,
            stopwatch,
        }
        .encrypt(plaintext, now_ms, rng)
    }

    /// Decrypts a payload from the remote installation; on error nothing
    /// changes.
    pub fn decrypt(&mut self, payload: &CascadedPayload, rng: &mut dyn CryptoRng) -> Result<Vec<u8>> {
        let (local, remote) = (self.local, self.remote);
        let stopwatch = &*self.stopwatch;
        let mut layers: [&mut dyn Layer; 4] = [&mut self.mls, &mut self.signal, &mut self.kem, &mut self.aes];
        Composition {
            layers: &mut layers,
            local,
            remote,
            stopwatch,
        }
        .decrypt(payload, rng)
    }

    /// The MLS layer.
    pub fn mls_mut(&mut self) -> &mut MlsLayer {
        &mut self.mls
    }

    /// The Signal layer.
    pub fn signal_mut(&mut self) -> &mut SignalLayer {
        &mut self.signal
    }

    /// The ML-KEM layer (rotation).
    pub fn kem_mut(&mut self) -> &mut MlKemLayer {
        &mut self.kem
    }

    /// The whole state, to persist after each message.
    pub fn export(&self) -> Result<SecretBytes> {
        let mut w = Writer::new(STATE_MAGIC);
        w.raw(self.local.as_bytes()).raw(self.remote.as_bytes());
        for layer in [&self.mls as &dyn Layer, &self.signal, &self.kem, &self.aes] {
            w.bytes(layer.export_state()?.as_bytes());
        }
        Ok(w.finish())
    }

    /// Reads back what [`PairCascade::export`] wrote.
    pub fn import(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, STATE_MAGIC, "pair cascade")?;
        let local = InstallationId::from_bytes(r.array()?);
        let remote = InstallationId::from_bytes(r.array()?);
        const MAX: usize = 64 << 20;
        let mls = MlsLayer::import_state(r.bytes(MAX)?)?;
        let signal = SignalLayer::import_state(r.bytes(MAX)?)?;
        let kem = MlKemLayer::import_state(r.bytes(MAX)?)?;
        let aes = AesGcmLayer::import_state(r.bytes(MAX)?)?;
        r.finish()?;
        Ok(Self::new(local, remote, mls, signal, kem, aes))
    }
}
