//! The AES-256-GCM layer: keyed from the inner layers' epoch secrets (the
//! MLS exporter secret and the ML-KEM epoch export secret), one hash-ratchet
//! chain per epoch combination and direction, counter nonces.

use strata_proto::{LayerParameters, ParamValue};

use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::identity::InstallationId;
use crate::layer::{Contribution, Layer, LayerContext, LayerInfo, Sealed};
use crate::schedule::{
    ChainRefusal, LABEL_PREFIX, RecvChain, RecvStep, SendChain, aead_open, aead_seal, expand32, extract,
};
use crate::secret::SecretBytes;

/// `LayerMetadata.algorithm` of this layer.
pub const AES_ALGORITHM: &str = "AES-GCM-256";
/// `LayerMetadata.version` of this layer.
pub const AES_VERSION: &str = "strata-1";

const LABEL: &str = "aes-256-gcm";
const NONCE_TAG: [u8; 4] = *b"AESG";
const STATE_MAGIC: &[u8] = b"strata-aes-gcm-layer-v1";
/// Receive chains kept for messages of earlier epoch combinations.
const MAX_RECV_CHAINS: usize = 4;
/// Inner contributions one epoch combination may have.
const MAX_SOURCES: usize = 8;

/// Which inner epochs keyed a chain: `(source layer, epoch)` in layer order.
type EpochId = Vec<(String, u64)>;

fn epoch_id(contributions: &[Contribution]) -> EpochId {
    contributions.iter().map(|c| (c.source.to_owned(), c.epoch)).collect()
}

/// The first chain key of the epoch combination `contributions`, sender to
/// receiver (crate docs, "AES-256-GCM layer").
fn epoch_chain_key(
    contributions: &[Contribution],
    sender: InstallationId,
    receiver: InstallationId,
) -> Result<crate::secret::Secret32> {
    if contributions.is_empty() {
        return Err(CascadeError::NotReady {
            layer: AES_ALGORITHM,
            why: "no inner layer contributes an epoch secret",
        });
    }
    let mut ikm = Writer::new(b"");
    contributions.iter().for_each(|c| {
        ikm.secret(&c.secret);
    });
    let ikm = ikm.finish();
    let prk = extract(b"strata/v1/aes-256-gcm/epoch", ikm.as_bytes());
    let mut info = Writer::new(b"");
    info.raw(sender.as_bytes()).raw(receiver.as_bytes());
    for c in contributions {
        info.bytes(c.source.as_bytes()).u64(c.epoch);
    }
    let info = info.finish_public();
    expand32(&prk, &[LABEL_PREFIX.as_bytes(), b"aes-256-gcm/epoch-chain", &info])
}

#[derive(Debug)]
enum Staged {
    Send {
        epoch: EpochId,
        chain: SendChain,
    },
    Recv {
        epoch: EpochId,
        new_chain: Option<RecvChain>,
        step: RecvStep,
    },
}

/// The AES-256-GCM layer between two installations.
#[derive(Debug)]
pub struct AesGcmLayer {
    local: InstallationId,
    remote: InstallationId,
    send: Option<(EpochId, SendChain)>,
    recv: Vec<(EpochId, RecvChain)>,
    staged: Option<Staged>,
}

impl AesGcmLayer {
    /// A fresh layer from `local` to `remote`. It has no key of its own:
    /// every key comes from the inner layers' contributions.
    pub fn new(local: InstallationId, remote: InstallationId) -> Self {
        Self {
            local,
            remote,
            send: None,
            recv: Vec::new(),
            staged: None,
        }
    }

    /// Reads back what [`Layer::export_state`] wrote.
    pub fn import_state(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, STATE_MAGIC, "AES-GCM layer")?;
        let local = InstallationId::from_bytes(r.array()?);
        let remote = InstallationId::from_bytes(r.array()?);
        let send = match r.u8()? {
            0 => None,
            _ => Some((read_epoch(&mut r)?, SendChain::read(&mut r)?)),
        };
        let n = r.count(MAX_RECV_CHAINS)?;
        let mut recv = Vec::with_capacity(n);
        for _ in 0..n {
            recv.push((read_epoch(&mut r)?, RecvChain::read(&mut r)?));
        }
        r.finish()?;
        Ok(Self {
            local,
            remote,
            send,
            recv,
            staged: None,
        })
    }
}

fn write_epoch(w: &mut Writer, e: &EpochId) {
    w.u32(u32::try_from(e.len()).unwrap_or(u32::MAX));
    for (s, n) in e {
        w.bytes(s.as_bytes()).u64(*n);
    }
}

fn read_epoch(r: &mut Reader<'_>) -> Result<EpochId> {
    let n = r.count(MAX_SOURCES)?;
    let mut e = Vec::with_capacity(n);
    for _ in 0..n {
        let s = std::str::from_utf8(r.bytes(32)?).map_err(|_| CascadeError::CorruptState("AES-GCM epoch source"))?;
        e.push((s.to_owned(), r.u64()?));
    }
    Ok(e)
}

impl Layer for AesGcmLayer {
    fn info(&self) -> LayerInfo {
        LayerInfo {
            algorithm: AES_ALGORITHM,
            version: AES_VERSION,
        }
    }

    fn seal(&mut self, input: &[u8], ctx: &mut LayerContext<'_>) -> Result<Sealed> {
        let epoch = epoch_id(ctx.contributions());
        let chain = match &self.send {
            Some((e, chain)) if *e == epoch => chain.clone(),
            _ => SendChain::new(epoch_chain_key(ctx.contributions(), self.local, self.remote)?),
        };
        let (counter, key, next) = chain.peek(LABEL)?;
        let mut params = LayerParameters::new();
        params
            .insert("counter", ParamValue::Uint(counter))
            .map_err(|e| CascadeError::internal(AES_ALGORITHM, e))?;
        let aad = ctx.associated_data(&params);
        let output = aead_seal(&key, NONCE_TAG, counter, &aad, input)
            .ok_or_else(|| CascadeError::internal(AES_ALGORITHM, "seal failed"))?;
        self.staged = Some(Staged::Send { epoch, chain: next });
        Ok(Sealed {
            output,
            params,
            contribution: None,
        })
    }

    fn open(&mut self, input: &[u8], params: &LayerParameters, ctx: &mut LayerContext<'_>) -> Result<Vec<u8>> {
        let counter = params.uint("counter").ok_or(CascadeError::Malformed {
            what: "AES-GCM counter",
        })?;
        let epoch = epoch_id(ctx.contributions());
        let existing = self.recv.iter().find(|(e, _)| *e == epoch).map(|(_, c)| c);
        let new_chain = match existing {
            Some(_) => None,
            None => Some(RecvChain::new(epoch_chain_key(
                ctx.contributions(),
                self.remote,
                self.local,
            )?)),
        };
        let chain = existing
            .or(new_chain.as_ref())
            .ok_or_else(|| CascadeError::internal(AES_ALGORITHM, "no chain"))?;
        let (key, step) = chain.key_for(counter, LABEL).map_err(|r| match r {
            ChainRefusal::Replay => CascadeError::Replay { layer: AES_ALGORITHM },
            ChainRefusal::OutOfWindow => CascadeError::OutOfWindow { layer: AES_ALGORITHM },
            ChainRefusal::Internal => CascadeError::internal(AES_ALGORITHM, "key schedule"),
        })?;
        let aad = ctx.associated_data(params);
        let plaintext = aead_open(&key, NONCE_TAG, counter, &aad, input)
            .ok_or(CascadeError::Authentication { layer: AES_ALGORITHM })?;
        self.staged = Some(Staged::Recv { epoch, new_chain, step });
        Ok(plaintext)
    }

    fn commit(&mut self) {
        match self.staged.take() {
            None => {}
            Some(Staged::Send { epoch, chain }) => self.send = Some((epoch, chain)),
            Some(Staged::Recv { epoch, new_chain, step }) => {
                if let Some(chain) = new_chain {
                    self.recv.push((epoch.clone(), chain));
                    if self.recv.len() > MAX_RECV_CHAINS {
                        self.recv.remove(0);
                    }
                }
                if let Some((_, chain)) = self.recv.iter_mut().find(|(e, _)| *e == epoch) {
                    chain.apply(step);
                }
            }
        }
    }

    fn abort(&mut self) {
        self.staged = None;
    }

    fn export_state(&self) -> Result<SecretBytes> {
        let mut w = Writer::new(STATE_MAGIC);
        w.raw(self.local.as_bytes()).raw(self.remote.as_bytes());
        match &self.send {
            None => {
                w.u8(0);
            }
            Some((e, chain)) => {
                w.u8(1);
                write_epoch(&mut w, e);
                chain.write(&mut w);
            }
        }
        w.u32(u32::try_from(self.recv.len()).unwrap_or(u32::MAX));
        for (e, chain) in &self.recv {
            write_epoch(&mut w, e);
            chain.write(&mut w);
        }
        Ok(w.finish())
    }
}
