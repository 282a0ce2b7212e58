//! The profile's four-layer cascade between two installations, with typed
//! access to each layer for setup and rotation.

use rand::CryptoRng;
use strata_proto::CascadedPayload;

use crate::cascade::{Composition, MonotonicStopwatch, Stopwatch};
use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::identity::InstallationId;
use crate::layer::Layer;
use crate::layers::aes::AesGcmLayer;
use crate::layers::mlkem::MlKemLayer;
use crate::layers::mls::MlsLayer;
use crate::layers::signal::SignalLayer;
use crate::secret::SecretBytes;

const STATE_MAGIC: &[u8] = b"strata-pair-cascade-v1";
/// The MLS exporter label of resume proofs.
const RESUME_LABEL: &str = "strata/v1/resume-proof";
/// Length of a resume proof ([`PairCascade::resume_proof`]).
pub const RESUME_PROOF_LEN: usize = 32;

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
        self.compose(|c| c.encrypt(plaintext, now_ms, rng))
    }

    /// Decrypts a payload from the remote installation; on error nothing
    /// changes.
    pub fn decrypt(&mut self, payload: &CascadedPayload, rng: &mut dyn CryptoRng) -> Result<Vec<u8>> {
        self.compose(|c| c.decrypt(payload, rng))
    }

    /// Runs `run` on the four layers, in cascade order, as one
    /// [`Composition`].
    fn compose<R>(&mut self, run: impl FnOnce(&mut Composition<'_, '_>) -> R) -> R {
        let mut layers: [&mut dyn Layer; 4] = [&mut self.mls, &mut self.signal, &mut self.kem, &mut self.aes];
        run(&mut Composition {
            layers: &mut layers,
            local: self.local,
            remote: self.remote,
            stopwatch: &*self.stopwatch,
        })
    }

    /// The MLS layer, read-only (group id, epoch).
    pub fn mls(&self) -> &MlsLayer {
        &self.mls
    }

    /// A proof that this side holds this pair's MLS group at its current
    /// epoch, bound to `context` (the caller's session id, nonces, role):
    ///
    /// ```text
    /// proof = MLS-Exporter("strata/v1/resume-proof", lp(context) ‖ S ‖ R, 32)
    /// ```
    ///
    /// with `S` this installation and `R` the peer, so a proof is never
    /// accepted back by its maker (no reflection). Only a member of the same
    /// group at the same epoch can make or check it, and it reveals nothing
    /// of the epoch's secrets, so it may travel in the clear. Returns the
    /// epoch with the proof.
    pub fn resume_proof(&self, context: &[u8]) -> Result<(u64, [u8; RESUME_PROOF_LEN])> {
        self.resume_proof_between(context, self.local, self.remote)
    }

    /// Checks, in constant time, a proof the peer made with
    /// [`PairCascade::resume_proof`] over `context`. False for a proof of
    /// another group or epoch, of this side, or of the wrong length.
    pub fn verify_resume_proof(&self, context: &[u8], proof: &[u8]) -> Result<bool> {
        use subtle::ConstantTimeEq as _;
        let (_, expected) = self.resume_proof_between(context, self.remote, self.local)?;
        Ok(proof.len() == RESUME_PROOF_LEN && bool::from(expected.as_slice().ct_eq(proof)))
    }

    fn resume_proof_between(
        &self,
        context: &[u8],
        sender: InstallationId,
        receiver: InstallationId,
    ) -> Result<(u64, [u8; RESUME_PROOF_LEN])> {
        let len = u32::try_from(context.len()).map_err(|_| CascadeError::InvalidArgument("resume context too long"))?;
        let mut bound = Vec::with_capacity(4 + context.len() + 32);
        bound.extend_from_slice(&len.to_be_bytes());
        bound.extend_from_slice(context);
        bound.extend_from_slice(sender.as_bytes());
        bound.extend_from_slice(receiver.as_bytes());
        let (epoch, secret) = self.mls.export(RESUME_LABEL, &bound)?;
        Ok((epoch, *secret.expose()))
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
        let states = [&self.mls as &dyn Layer, &self.signal, &self.kem, &self.aes].map(|layer| layer.export_state());
        let mut w = Writer::new(STATE_MAGIC);
        w.reserve(
            32 + states
                .iter()
                .map(|s| s.as_ref().map_or(0, |s| 4 + s.len()))
                .sum::<usize>(),
        );
        w.raw(self.local.as_bytes()).raw(self.remote.as_bytes());
        for state in states {
            w.bytes(state?.as_bytes());
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
