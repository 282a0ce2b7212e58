//! The composition: plaintext → layer 0 → … → layer n−1 → `finalCiphertext`
//! (P5.2 order), and back. The same code runs the real four layers and the
//! Appendix A mock layers.

use std::time::Instant;

use rand::CryptoRng;
use strata_proto::limits::{MAX_LAYERS, MAX_PDU_BYTES};
use strata_proto::{Blob, BoundedVec, CascadedPayload, LayerMetadata, LayerParameters, Text};

use crate::error::{CascadeError, Result};
use crate::identity::InstallationId;
use crate::layer::{Contribution, Envelope, Layer, LayerContext, LayerInfo};

/// Measures `processingTime`. Informative only (never authenticated), so it
/// is injectable: golden vectors need zero.
pub trait Stopwatch {
    /// Microseconds since an arbitrary fixed origin.
    fn now_micros(&self) -> u64;
}

/// A [`Stopwatch`] on the monotonic clock.
#[derive(Debug)]
pub struct MonotonicStopwatch(Instant);

impl Default for MonotonicStopwatch {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Stopwatch for MonotonicStopwatch {
    fn now_micros(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A [`Stopwatch`] that never moves: every `processingTime` is 0.
#[derive(Debug, Default)]
pub struct FrozenStopwatch;

impl Stopwatch for FrozenStopwatch {
    fn now_micros(&self) -> u64 {
        0
    }
}

/// A stack of layers between two installations.
pub struct Cascade {
    layers: Vec<Box<dyn Layer>>,
    local: InstallationId,
    remote: InstallationId,
    stopwatch: Box<dyn Stopwatch>,
}

impl std::fmt::Debug for Cascade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.layers.iter().map(|l| l.info().algorithm).collect();
        f.debug_struct("Cascade")
            .field("layers", &names)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Cascade {
    /// A cascade of `layers` in encrypt order (layer 0 runs first on
    /// encrypt, last on decrypt) from `local` to `remote`.
    pub fn new(layers: Vec<Box<dyn Layer>>, local: InstallationId, remote: InstallationId) -> Result<Self> {
        check_count(layers.len())?;
        Ok(Self {
            layers,
            local,
            remote,
            stopwatch: Box::new(MonotonicStopwatch::default()),
        })
    }

    /// Replaces the stopwatch that measures `processingTime`.
    pub fn with_stopwatch(mut self, stopwatch: Box<dyn Stopwatch>) -> Self {
        self.stopwatch = stopwatch;
        self
    }

    /// The layers, in encrypt order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The layers, mutably (for rotation calls on a concrete layer).
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }

    /// Encrypts `plaintext` at `now_ms` (Unix milliseconds, passed in: the
    /// crate reads no wall clock). Every layer's staged change is committed
    /// only if all layers succeed.
    pub fn encrypt(&mut self, plaintext: &[u8], now_ms: u64, rng: &mut dyn CryptoRng) -> Result<CascadedPayload> {
        self.compose(|c| c.encrypt(plaintext, now_ms, rng))
    }

    /// Decrypts a payload from the remote installation. On any error no
    /// plaintext is returned and no layer's state changes.
    pub fn decrypt(&mut self, payload: &CascadedPayload, rng: &mut dyn CryptoRng) -> Result<Vec<u8>> {
        self.compose(|c| c.decrypt(payload, rng))
    }

    /// Encrypts through layers the caller keeps (e.g. a Signal layer used on
    /// its own during the handshake, before the full stack exists). Same
    /// composition as [`Cascade::encrypt`].
    pub fn encrypt_with(
        layers: &mut [&mut dyn Layer],
        local: InstallationId,
        remote: InstallationId,
        plaintext: &[u8],
        now_ms: u64,
        rng: &mut dyn CryptoRng,
    ) -> Result<CascadedPayload> {
        Self::compose_kept(layers, local, remote, |c| c.encrypt(plaintext, now_ms, rng))
    }

    /// Decrypts through layers the caller keeps; see
    /// [`Cascade::encrypt_with`].
    pub fn decrypt_with(
        layers: &mut [&mut dyn Layer],
        local: InstallationId,
        remote: InstallationId,
        payload: &CascadedPayload,
        rng: &mut dyn CryptoRng,
    ) -> Result<Vec<u8>> {
        Self::compose_kept(layers, local, remote, |c| c.decrypt(payload, rng))
    }

    /// Runs `run` on this cascade's layers as one [`Composition`].
    fn compose<R>(&mut self, run: impl FnOnce(&mut Composition<'_, '_>) -> R) -> R {
        let mut layers: Vec<&mut dyn Layer> = self.layers.iter_mut().map(|l| &mut **l as &mut dyn Layer).collect();
        run(&mut Composition {
            layers: &mut layers,
            local: self.local,
            remote: self.remote,
            stopwatch: &*self.stopwatch,
        })
    }

    /// Runs `run` on layers the caller keeps, timed by a fresh stopwatch.
    fn compose_kept<R>(
        layers: &mut [&mut dyn Layer],
        local: InstallationId,
        remote: InstallationId,
        run: impl FnOnce(&mut Composition<'_, '_>) -> Result<R>,
    ) -> Result<R> {
        check_count(layers.len())?;
        let stopwatch = MonotonicStopwatch::default();
        run(&mut Composition {
            layers,
            local,
            remote,
            stopwatch: &stopwatch,
        })
    }

    /// Every layer's state, in encrypt order, to persist.
    pub fn export_states(&self) -> Result<Vec<crate::secret::SecretBytes>> {
        self.layers.iter().map(|l| l.export_state()).collect()
    }
}

/// The composition itself, over borrowed layers: the one code path that
/// both [`Cascade`] and [`crate::PairCascade`] (and so the golden vectors and
/// the real layers) run.
pub(crate) struct Composition<'a, 'l> {
    pub(crate) layers: &'a mut [&'l mut dyn Layer],
    pub(crate) local: InstallationId,
    pub(crate) remote: InstallationId,
    pub(crate) stopwatch: &'a dyn Stopwatch,
}

impl Composition<'_, '_> {
    /// Encrypts `plaintext` at `now_ms` (Unix milliseconds, passed in: the
    /// crate reads no wall clock). Every layer's staged change is committed
    /// only if all layers succeed.
    pub(crate) fn encrypt(
        &mut self,
        plaintext: &[u8],
        now_ms: u64,
        rng: &mut dyn CryptoRng,
    ) -> Result<CascadedPayload> {
        let result = self.seal_all(plaintext, now_ms, rng);
        self.settle(result)
    }

    /// Decrypts a payload from the remote installation. On any error no
    /// plaintext is returned and no layer's state changes.
    pub(crate) fn decrypt(&mut self, payload: &CascadedPayload, rng: &mut dyn CryptoRng) -> Result<Vec<u8>> {
        let ciphertext = self.check_shape(payload)?;
        let result = self.decrypt_checked(payload, ciphertext, rng);
        self.settle(result)
    }

    /// Ends a two-phase call: every layer commits what it staged if
    /// `result` is a success, and drops it otherwise.
    fn settle<T>(&mut self, result: Result<T>) -> Result<T> {
        match result {
            Ok(_) => self.layers.iter_mut().for_each(|l| l.commit()),
            Err(_) => self.layers.iter_mut().for_each(|l| l.abort()),
        }
        result
    }

    /// Every layer seals in turn, staging its change; then the payload is
    /// assembled.
    fn seal_all(&mut self, plaintext: &[u8], now_ms: u64, rng: &mut dyn CryptoRng) -> Result<CascadedPayload> {
        let total_start = self.stopwatch.now_micros();
        let envelope = Envelope {
            sender: self.local,
            receiver: self.remote,
            timestamp: Some(now_ms),
            original_size: len64(plaintext.len()),
            layer_count: self.layers.len(),
        };
        let mut data = plaintext.to_vec();
        let mut infos: Vec<LayerInfo> = Vec::with_capacity(self.layers.len());
        let mut headers: Vec<LayerParameters> = Vec::with_capacity(self.layers.len());
        let mut contributions: Vec<Contribution> = Vec::new();
        let mut metadata = Vec::with_capacity(self.layers.len());
        for layer in self.layers.iter_mut() {
            let start = self.stopwatch.now_micros();
            let info = layer.info();
            let mut ctx = LayerContext {
                envelope,
                inner_infos: &infos,
                inner_params: &headers,
                own: info,
                contributions: &contributions,
                rng: &mut *rng,
            };
            let sealed = layer.seal(&data, &mut ctx)?;
            let elapsed = self.stopwatch.now_micros().saturating_sub(start);
            metadata.push(layer_metadata(info, now_ms, data.len(), sealed.output.len(), elapsed)?);
            data = sealed.output;
            infos.push(info);
            headers.push(sealed.params);
            contributions.extend(sealed.contribution);
        }
        self.assemble(data, headers, metadata, plaintext.len(), now_ms, total_start)
    }

    fn assemble(
        &self,
        data: Vec<u8>,
        headers: Vec<LayerParameters>,
        metadata: Vec<LayerMetadata>,
        original_size: usize,
        now_ms: u64,
        total_start: u64,
    ) -> Result<CascadedPayload> {
        let final_size = len64(data.len());
        let final_ciphertext = Blob::<MAX_PDU_BYTES>::new(data)
            .map_err(|_| CascadeError::InvalidArgument("ciphertext over the 16 MiB PDU cap"))?;
        let too_many = |_| CascadeError::internal("cascade", "layer count over the cap");
        Ok(CascadedPayload {
            final_ciphertext: Some(final_ciphertext),
            layers: BoundedVec::new(metadata).map_err(too_many)?,
            layer_parameters: BoundedVec::new(headers).map_err(too_many)?,
            total_processing_time: micros_to_ms(self.stopwatch.now_micros().saturating_sub(total_start)),
            original_size: len64(original_size),
            final_size,
            timestamp: Some(now_ms),
        })
    }

    /// Checks the payload against this stack before any cryptography: the
    /// layer names and versions, and that the declared sizes chain up.
    fn check_shape<'p>(&self, payload: &'p CascadedPayload) -> Result<&'p [u8]> {
        let ciphertext = payload
            .final_ciphertext
            .as_ref()
            .ok_or(CascadeError::StackMismatch(
                "finalCiphertext missing (reassemble chunks first)",
            ))?
            .as_bytes();
        let metas = payload.layers.as_slice();
        if metas.len() != self.layers.len() || payload.layer_parameters.len() != self.layers.len() {
            return Err(CascadeError::StackMismatch("layer count"));
        }
        if payload.final_size != len64(ciphertext.len()) {
            return Err(CascadeError::StackMismatch("finalSize"));
        }
        let mut expected_input = payload.original_size;
        for (layer, meta) in self.layers.iter().zip(metas) {
            let info = layer.info();
            if meta.algorithm.as_str() != info.algorithm || meta.version.as_str() != info.version {
                return Err(CascadeError::StackMismatch("layer algorithm or version"));
            }
            if meta.input_size != expected_input {
                return Err(CascadeError::StackMismatch("layer sizes do not chain"));
            }
            if Some(meta.timestamp) != payload.timestamp {
                return Err(CascadeError::StackMismatch("layer timestamp"));
            }
            expected_input = meta.output_size;
        }
        if expected_input != payload.final_size {
            return Err(CascadeError::StackMismatch("last layer output is not finalSize"));
        }
        Ok(ciphertext)
    }

    fn decrypt_checked(
        &mut self,
        payload: &CascadedPayload,
        ciphertext: &[u8],
        rng: &mut dyn CryptoRng,
    ) -> Result<Vec<u8>> {
        let params = payload.layer_parameters.as_slice();
        let metas = payload.layers.as_slice();
        let infos: Vec<LayerInfo> = self.layers.iter().map(|l| l.info()).collect();

        // Pre-pass, innermost first: stage epochs, collect contributions in
        // layer order; `inside[i]` counts those of the layers inside layer i.
        let mut contributions: Vec<Contribution> = Vec::new();
        let mut inside = Vec::with_capacity(self.layers.len());
        for (layer, p) in self.layers.iter_mut().zip(params) {
            inside.push(contributions.len());
            contributions.extend(layer.resolve(p)?);
        }

        let envelope = Envelope {
            sender: self.remote,
            receiver: self.local,
            timestamp: payload.timestamp,
            original_size: payload.original_size,
            layer_count: self.layers.len(),
        };
        let mut data = ciphertext.to_vec();
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            let parts = (
                infos.get(..i),
                params.get(..i),
                infos.get(i),
                params.get(i),
                inside.get(i),
            );
            let (Some(inner_infos), Some(inner_params), Some(own), Some(own_params), Some(n)) = parts else {
                return Err(CascadeError::internal("cascade", "layer index"));
            };
            let mut ctx = LayerContext {
                envelope,
                inner_infos,
                inner_params,
                own: *own,
                contributions: contributions.get(..*n).unwrap_or_default(),
                rng: &mut *rng,
            };
            data = layer.open(&data, own_params, &mut ctx)?;
            let declared = metas.get(i).map(|m| m.input_size);
            if declared != Some(len64(data.len())) {
                return Err(CascadeError::StackMismatch("layer inputSize"));
            }
        }
        Ok(data)
    }
}

fn layer_metadata(
    info: LayerInfo,
    now_ms: u64,
    input: usize,
    output: usize,
    elapsed_micros: u64,
) -> Result<LayerMetadata> {
    let name = |s: &str| Text::new(s).map_err(|_| CascadeError::InvalidArgument("layer name over 32 bytes"));
    Ok(LayerMetadata {
        algorithm: name(info.algorithm)?,
        version: name(info.version)?,
        timestamp: now_ms,
        input_size: len64(input),
        output_size: len64(output),
        processing_time: micros_to_ms(elapsed_micros),
    })
}

fn check_count(n: usize) -> Result<()> {
    if n == 0 || n > MAX_LAYERS {
        return Err(CascadeError::InvalidArgument("a cascade has 1 to 8 layers"));
    }
    Ok(())
}

fn micros_to_ms(us: u64) -> u64 {
    us / 1000
}

pub(crate) fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
