//! The Enkrypted Chat Appendix A mock layer ("golden" layer): layer *i*
//! appends the byte *i* on encrypt and removes it on decrypt. No security at
//! all — it exists so the Appendix A vectors run through the same
//! composition code as the real layers.

use strata_proto::{LayerParameters, ParamValue};

use crate::error::{CascadeError, Result};
use crate::layer::{Layer, LayerContext, LayerInfo, Sealed};
use crate::secret::SecretBytes;

/// The version string of every golden mock layer.
pub const GOLDEN_VERSION: &str = "1.0.0-golden";

/// The timestamp of every Appendix A vector, Unix milliseconds.
pub const GOLDEN_TIMESTAMP: u64 = 1_717_000_000_000;

/// Appendix A mock layer number `tag` (1-based) named `algorithm`.
#[derive(Debug, Clone)]
pub struct GoldenMockLayer {
    algorithm: &'static str,
    tag: u8,
}

impl GoldenMockLayer {
    /// Layer `tag` (its byte and its `goldenTag` parameter) named `algorithm`.
    pub fn new(algorithm: &'static str, tag: u8) -> Self {
        Self { algorithm, tag }
    }
}

impl Layer for GoldenMockLayer {
    fn info(&self) -> LayerInfo {
        LayerInfo {
            algorithm: self.algorithm,
            version: GOLDEN_VERSION,
        }
    }

    fn seal(&mut self, input: &[u8], _ctx: &mut LayerContext<'_>) -> Result<Sealed> {
        let mut output = Vec::with_capacity(input.len() + 1);
        output.extend_from_slice(input);
        output.push(self.tag);
        let mut params = LayerParameters::new();
        params
            .insert("goldenTag", ParamValue::Uint(u64::from(self.tag)))
            .map_err(|e| CascadeError::internal("mock", e))?;
        Ok(Sealed {
            output,
            params,
            contribution: None,
        })
    }

    fn open(&mut self, input: &[u8], params: &LayerParameters, _ctx: &mut LayerContext<'_>) -> Result<Vec<u8>> {
        if params.uint("goldenTag") != Some(u64::from(self.tag)) {
            return Err(CascadeError::Malformed { what: "goldenTag" });
        }
        match input.split_last() {
            Some((last, rest)) if *last == self.tag => Ok(rest.to_vec()),
            _ => Err(CascadeError::Authentication { layer: "mock" }),
        }
    }

    fn commit(&mut self) {}

    fn abort(&mut self) {}

    fn export_state(&self) -> Result<SecretBytes> {
        Ok(SecretBytes::new(vec![self.tag]))
    }
}
