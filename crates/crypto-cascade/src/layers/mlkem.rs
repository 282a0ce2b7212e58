//! The ML-KEM-768 layer: one KEM exchange per epoch, in-band, feeding a
//! symmetric hash ratchet that derives a fresh AES-256-GCM key per message.
//!
//! Each side has *receive keys*: ML-KEM-768 key pairs whose encapsulation
//! key is signed by the account identity key ([`SignedKemKey`]). The peer
//! verifies that signature against the pinned identity before it
//! encapsulates. A sender's epoch starts with an encapsulation to the peer's
//! current receive key; the KEM ciphertext rides in the layer header of
//! every message of that epoch until the peer's own messages acknowledge
//! the epoch (`ack`), so losing or reordering the first messages of an
//! epoch costs nothing.

use std::convert::Infallible;
use std::fmt;

use ml_kem::kem::common::rand_core::{TryCryptoRng, TryRng};
use ml_kem::{Decapsulate as _, DecapsulationKey, Encapsulate as _, EncapsulationKey, KeyExport as _, MlKem768, Seed};
use rand::{CryptoRng, Rng};
use strata_proto::{Blob, LayerParameters, ParamValue};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::identity::{InstallationId, InstallationIdentity, PeerIdentity, verify_kem_binding};
use crate::layer::{Contribution, Layer, LayerContext, LayerInfo, Sealed};
use crate::schedule::{
    ChainRefusal, LABEL_PREFIX, RecvChain, RecvStep, SendChain, aead_open, aead_seal, expand32, extract,
};
use crate::secret::{Secret32, SecretBytes};

/// `LayerMetadata.algorithm` of this layer.
pub const KEM_ALGORITHM: &str = "ML-KEM";
/// `LayerMetadata.version` of this layer.
pub const KEM_VERSION: &str = "strata-1";
/// ML-KEM-768 encapsulation key length.
pub const ENCAPSULATION_KEY_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;

const LABEL: &str = "ml-kem-768";
const NONCE_TAG: [u8; 4] = *b"MLKM";
const STATE_MAGIC: &[u8] = b"strata-ml-kem-layer-v1";
const SIGNED_KEY_MAGIC: &[u8] = b"strata-ml-kem-key-v1";
/// Own receive keys kept (current and previous).
const MAX_RECEIVE_KEYS: usize = 2;
/// Peer epochs kept for late messages.
const MAX_RECV_EPOCHS: usize = 3;

/// An ML-KEM-768 encapsulation key bound to an installation by the account
/// identity key's signature. Public; this is what the `mlkem-key-exchange`
/// PDU carries.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedKemKey {
    /// The installation that owns the key.
    pub installation_id: InstallationId,
    /// The key's id within that installation.
    pub key_id: u32,
    /// The 1184-byte encapsulation key.
    pub encapsulation_key: Vec<u8>,
    /// XEdDSA signature by the identity key (see [`crate::identity`]).
    pub signature: Vec<u8>,
}

impl fmt::Debug for SignedKemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedKemKey")
            .field("installation_id", &self.installation_id)
            .field("key_id", &self.key_id)
            .field(
                "encapsulation_key",
                &format_args!("{} bytes", self.encapsulation_key.len()),
            )
            .finish_non_exhaustive()
    }
}

impl SignedKemKey {
    /// Wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(SIGNED_KEY_MAGIC);
        w.raw(self.installation_id.as_bytes())
            .u32(self.key_id)
            .bytes(&self.encapsulation_key)
            .bytes(&self.signature);
        w.finish_public()
    }

    /// Parses [`SignedKemKey::to_bytes`] output (peer input: bounded).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let malformed = |_| CascadeError::Malformed {
            what: "signed ML-KEM key",
        };
        let mut r = Reader::new(bytes, SIGNED_KEY_MAGIC, "signed ML-KEM key").map_err(malformed)?;
        let installation_id = InstallationId::from_bytes(r.array().map_err(malformed)?);
        let key_id = r.u32().map_err(malformed)?;
        let encapsulation_key = r.bytes(ENCAPSULATION_KEY_LEN).map_err(malformed)?.to_vec();
        let signature = r.bytes(64).map_err(malformed)?.to_vec();
        r.finish().map_err(malformed)?;
        Ok(Self {
            installation_id,
            key_id,
            encapsulation_key,
            signature,
        })
    }

    /// Checks the binding to `peer` and that the key is a valid ML-KEM-768
    /// encapsulation key.
    fn verify(&self, peer: &PeerIdentity) -> Result<EncapsulationKey<MlKem768>> {
        if self.installation_id != peer.installation_id {
            return Err(CascadeError::BadBinding("ML-KEM key of another installation"));
        }
        if !verify_kem_binding(peer, self.key_id, &self.encapsulation_key, &self.signature) {
            return Err(CascadeError::BadBinding("ML-KEM key not signed by the identity key"));
        }
        parse_encapsulation_key(&self.encapsulation_key)
    }
}

fn parse_encapsulation_key(bytes: &[u8]) -> Result<EncapsulationKey<MlKem768>> {
    let array = bytes.try_into().map_err(|_| CascadeError::Malformed {
        what: "ML-KEM key length",
    })?;
    EncapsulationKey::<MlKem768>::new(&array).map_err(|_| CascadeError::Malformed {
        what: "ML-KEM encapsulation key",
    })
}

/// A receive key: the 64-byte ML-KEM seed (FIPS 203 `d ‖ z`) and its signed
/// public half. Zeroized on drop; `Debug` is redacted.
pub struct KemKeyPair {
    seed: Zeroizing<[u8; 64]>,
    public: SignedKemKey,
}

impl fmt::Debug for KemKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemKeyPair")
            .field("public", &self.public)
            .field("seed", &"[redacted]")
            .finish()
    }
}

impl KemKeyPair {
    /// A fresh key pair with id `key_id`, signed by `installation`.
    pub fn generate<R: Rng + CryptoRng>(installation: &InstallationIdentity, key_id: u32, rng: &mut R) -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(seed.as_mut());
        let dk = DecapsulationKey::<MlKem768>::from_seed(Seed::from(*seed));
        let ek = dk.encapsulation_key().to_bytes().to_vec();
        let signature = installation.sign_kem_key(key_id, &ek, rng)?;
        let public = SignedKemKey {
            installation_id: installation.installation_id(),
            key_id,
            encapsulation_key: ek,
            signature,
        };
        Ok(Self { seed, public })
    }

    /// The signed public half, to send to the peer.
    pub fn public(&self) -> &SignedKemKey {
        &self.public
    }

    fn decapsulate(&self, ciphertext: &[u8]) -> Result<Secret32> {
        let dk = DecapsulationKey::<MlKem768>::from_seed(Seed::from(*self.seed));
        let ss = dk.decapsulate_slice(ciphertext).map_err(|_| CascadeError::Malformed {
            what: "ML-KEM ciphertext length",
        })?;
        Secret32::from_slice(ss.as_slice()).ok_or_else(|| CascadeError::internal(KEM_ALGORITHM, "shared secret length"))
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.raw(self.seed.as_ref());
        w.bytes(&self.public.to_bytes());
    }

    /// A copy, for a layer seeded from installation-wide keys (the seed
    /// stays in zeroizing memory).
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            seed: self.seed.clone(),
            public: self.public.clone(),
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let seed = Zeroizing::new(r.array::<64>()?);
        let public =
            SignedKemKey::from_bytes(r.bytes(4096)?).map_err(|_| CascadeError::CorruptState("ML-KEM receive key"))?;
        Ok(Self { seed, public })
    }
}

/// rand 0.9 → rand_core 0.10 bridge: ml-kem 0.3 takes a rand_core 0.10
/// RNG, the rest of the stack (libsignal) a rand 0.9 one.
struct KemRng<'a>(&'a mut dyn CryptoRng);

impl TryRng for KemRng<'_> {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> std::result::Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> std::result::Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl TryCryptoRng for KemRng<'_> {}

/// One direction's epoch secrets (crate docs, "ML-KEM-768 layer").
fn derive_epoch(
    shared_secret: &Secret32,
    sender: InstallationId,
    receiver: InstallationId,
    epoch: u64,
    key_id: u32,
    kem_ciphertext: &[u8],
) -> Result<(Secret32, Secret32)> {
    let prk = extract(b"strata/v1/ml-kem-768/epoch", shared_secret.expose());
    let mut info = Writer::new(b"");
    info.raw(sender.as_bytes())
        .raw(receiver.as_bytes())
        .u64(epoch)
        .u32(key_id)
        .bytes(kem_ciphertext);
    let info = info.finish_public();
    let chain = expand32(&prk, &[LABEL_PREFIX.as_bytes(), b"ml-kem-768/epoch-chain", &info])?;
    let export = expand32(&prk, &[LABEL_PREFIX.as_bytes(), b"ml-kem-768/epoch-export", &info])?;
    Ok((chain, export))
}

#[derive(Clone, Debug)]
struct SendEpoch {
    epoch: u64,
    key_id: u32,
    kem_ciphertext: Vec<u8>,
    chain: SendChain,
    export: Secret32,
    acked: bool,
}

#[derive(Clone, Debug)]
struct RecvEpoch {
    epoch: u64,
    chain: RecvChain,
    export: Secret32,
}

#[derive(Debug, Default)]
struct Staged {
    send: Option<SendEpoch>,
    new_recv: Option<RecvEpoch>,
    recv_step: Option<(u64, RecvStep)>,
    ack: Option<u64>,
}

/// The ML-KEM-768 layer between this installation and one peer.
pub struct MlKemLayer {
    local: InstallationId,
    peer: PeerIdentity,
    receive_keys: Vec<KemKeyPair>,
    peer_key: Option<SignedKemKey>,
    send: Option<SendEpoch>,
    next_epoch: u64,
    rotate: bool,
    recv: Vec<RecvEpoch>,
    highest_recv: u64,
    staged: Staged,
}

impl fmt::Debug for MlKemLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MlKemLayer")
            .field("local", &self.local)
            .field("peer", &self.peer.installation_id)
            .field("send_epoch", &self.send.as_ref().map(|s| s.epoch))
            .field("recv_epochs", &self.recv.iter().map(|r| r.epoch).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl MlKemLayer {
    /// A layer for `local` talking to `peer`, receiving under `receive_key`
    /// (whose public half the peer must get through [`MlKemLayer::set_peer_key`]).
    pub fn new(local: InstallationId, peer: PeerIdentity, receive_key: KemKeyPair) -> Self {
        Self {
            local,
            peer,
            receive_keys: vec![receive_key],
            peer_key: None,
            send: None,
            next_epoch: 1,
            rotate: false,
            recv: Vec::new(),
            highest_recv: 0,
            staged: Staged::default(),
        }
    }

    /// Installs the peer's signed receive key after verifying its binding
    /// to the pinned peer identity. The next message starts a new epoch.
    pub fn set_peer_key(&mut self, key: SignedKemKey) -> Result<()> {
        key.verify(&self.peer)?;
        self.peer_key = Some(key);
        self.rotate = true;
        Ok(())
    }

    /// Starts a new sending epoch (a new KEM exchange) with the next message.
    pub fn rotate_send_epoch(&mut self) {
        self.rotate = true;
    }

    /// Adds a new own receive key (keeping the previous one for epochs the
    /// peer started before it learned the new key). Returns the public half
    /// to send to the peer.
    pub fn rotate_receive_key<R: Rng + CryptoRng>(
        &mut self,
        installation: &InstallationIdentity,
        rng: &mut R,
    ) -> Result<SignedKemKey> {
        let next_id = self
            .receive_keys
            .iter()
            .map(|k| k.public.key_id)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(CascadeError::InvalidArgument("ML-KEM key ids exhausted"))?;
        let key = KemKeyPair::generate(installation, next_id, rng)?;
        let public = key.public.clone();
        self.receive_keys.push(key);
        if self.receive_keys.len() > MAX_RECEIVE_KEYS {
            self.receive_keys.remove(0);
        }
        Ok(public)
    }

    /// The current sending epoch, if one has started.
    pub fn send_epoch(&self) -> Option<u64> {
        self.send.as_ref().map(|s| s.epoch)
    }

    /// Reads back what [`Layer::export_state`] wrote.
    pub fn import_state(bytes: &[u8]) -> Result<Self> {
        let corrupt = CascadeError::CorruptState("ML-KEM layer");
        let mut r = Reader::new(bytes, STATE_MAGIC, "ML-KEM layer")?;
        let local = InstallationId::from_bytes(r.array()?);
        let identity_key = libsignal_protocol_syft::IdentityKey::decode(r.bytes(64)?)
            .map_err(|_| CascadeError::CorruptState("ML-KEM peer identity"))?;
        let peer = PeerIdentity {
            identity_key,
            installation_id: InstallationId::from_bytes(r.array()?),
        };
        let n = r.count(MAX_RECEIVE_KEYS)?;
        let receive_keys = (0..n).map(|_| KemKeyPair::read(&mut r)).collect::<Result<Vec<_>>>()?;
        let peer_key = match r.u8()? {
            0 => None,
            _ => Some(SignedKemKey::from_bytes(r.bytes(4096)?).map_err(|_| corrupt)?),
        };
        let send = match r.u8()? {
            0 => None,
            _ => Some(SendEpoch {
                epoch: r.u64()?,
                key_id: r.u32()?,
                kem_ciphertext: r.bytes(KEM_CIPHERTEXT_LEN)?.to_vec(),
                chain: SendChain::read(&mut r)?,
                export: r.secret()?,
                acked: r.u8()? != 0,
            }),
        };
        let next_epoch = r.u64()?;
        let rotate = r.u8()? != 0;
        let n = r.count(MAX_RECV_EPOCHS)?;
        let mut recv = Vec::with_capacity(n);
        for _ in 0..n {
            recv.push(RecvEpoch {
                epoch: r.u64()?,
                chain: RecvChain::read(&mut r)?,
                export: r.secret()?,
            });
        }
        let highest_recv = r.u64()?;
        r.finish()?;
        Ok(Self {
            local,
            peer,
            receive_keys,
            peer_key,
            send,
            next_epoch,
            rotate,
            recv,
            highest_recv,
            staged: Staged::default(),
        })
    }

    fn start_epoch(&self, rng: &mut dyn CryptoRng) -> Result<SendEpoch> {
        let peer_key = self.peer_key.as_ref().ok_or(CascadeError::NotReady {
            layer: KEM_ALGORITHM,
            why: "no verified peer ML-KEM key",
        })?;
        let ek = peer_key.verify(&self.peer)?;
        let (ct, ss) = ek.encapsulate_with_rng(&mut KemRng(rng));
        let ss = Secret32::from_slice(ss.as_slice())
            .ok_or_else(|| CascadeError::internal(KEM_ALGORITHM, "shared secret length"))?;
        let epoch = self.next_epoch;
        let (chain, export) = derive_epoch(&ss, self.local, self.peer.installation_id, epoch, peer_key.key_id, &ct)?;
        Ok(SendEpoch {
            epoch,
            key_id: peer_key.key_id,
            kem_ciphertext: ct.to_vec(),
            chain: SendChain::new(chain),
            export,
            acked: false,
        })
    }

    fn recv_epoch(&self, epoch: u64) -> Option<&RecvEpoch> {
        match &self.staged.new_recv {
            Some(e) if e.epoch == epoch => Some(e),
            _ => self.recv.iter().find(|e| e.epoch == epoch),
        }
    }
}

fn put(params: &mut LayerParameters, name: &str, value: ParamValue) -> Result<()> {
    params
        .insert(name, value)
        .map_err(|e| CascadeError::internal(KEM_ALGORITHM, e))
}

impl Layer for MlKemLayer {
    fn info(&self) -> LayerInfo {
        LayerInfo {
            algorithm: KEM_ALGORITHM,
            version: KEM_VERSION,
        }
    }

    fn seal(&mut self, input: &[u8], ctx: &mut LayerContext<'_>) -> Result<Sealed> {
        let mut send = match &self.send {
            Some(s) if !self.rotate => s.clone(),
            _ => self.start_epoch(ctx.rng())?,
        };
        let (counter, key, next) = send.chain.peek(LABEL)?;
        let mut params = LayerParameters::new();
        put(&mut params, "epoch", ParamValue::Uint(send.epoch))?;
        put(&mut params, "counter", ParamValue::Uint(counter))?;
        if self.highest_recv > 0 {
            put(&mut params, "ack", ParamValue::Uint(self.highest_recv))?;
        }
        if !send.acked {
            put(&mut params, "kemKeyId", ParamValue::Uint(u64::from(send.key_id)))?;
            let ct = Blob::new(send.kem_ciphertext.clone()).map_err(|e| CascadeError::internal(KEM_ALGORITHM, e))?;
            put(&mut params, "kemCiphertext", ParamValue::Bytes(ct))?;
        }
        let aad = ctx.associated_data(&params);
        let output = aead_seal(&key, NONCE_TAG, counter, &aad, input)
            .ok_or_else(|| CascadeError::internal(KEM_ALGORITHM, "seal failed"))?;
        let contribution = Contribution::new(KEM_ALGORITHM, send.epoch, send.export.clone());
        send.chain = next;
        self.staged = Staged {
            send: Some(send),
            ..Staged::default()
        };
        Ok(Sealed {
            output,
            params,
            contribution: Some(contribution),
        })
    }

    fn resolve(&mut self, params: &LayerParameters) -> Result<Option<Contribution>> {
        self.staged = Staged::default();
        let epoch = params
            .uint("epoch")
            .ok_or(CascadeError::Malformed { what: "ML-KEM epoch" })?;
        if let Some(ack) = params.uint("ack")
            && self.send.as_ref().is_some_and(|s| !s.acked && s.epoch <= ack)
        {
            self.staged.ack = Some(ack);
        }
        if let Some(e) = self.recv.iter().find(|e| e.epoch == epoch) {
            return Ok(Some(Contribution::new(KEM_ALGORITHM, epoch, e.export.clone())));
        }
        let unknown = CascadeError::UnknownEpoch {
            layer: KEM_ALGORITHM,
            epoch,
        };
        if epoch <= self.highest_recv {
            return Err(unknown);
        }
        let (Some(key_id), Some(ct)) = (params.uint("kemKeyId"), params.bytes("kemCiphertext")) else {
            return Err(unknown);
        };
        let key = self
            .receive_keys
            .iter()
            .find(|k| u64::from(k.public.key_id) == key_id)
            .ok_or(CascadeError::UnknownEpoch {
                layer: KEM_ALGORITHM,
                epoch,
            })?;
        if ct.len() != KEM_CIPHERTEXT_LEN {
            return Err(CascadeError::Malformed {
                what: "ML-KEM ciphertext length",
            });
        }
        // Implicit rejection: a forged ciphertext yields a random secret,
        // and the AEAD below (and the AES-GCM layer) reject the message.
        let ss = key.decapsulate(ct)?;
        let (chain, export) = derive_epoch(&ss, self.peer.installation_id, self.local, epoch, key.public.key_id, ct)?;
        self.staged.new_recv = Some(RecvEpoch {
            epoch,
            chain: RecvChain::new(chain),
            export: export.clone(),
        });
        Ok(Some(Contribution::new(KEM_ALGORITHM, epoch, export)))
    }

    fn open(&mut self, input: &[u8], params: &LayerParameters, ctx: &mut LayerContext<'_>) -> Result<Vec<u8>> {
        let epoch = params
            .uint("epoch")
            .ok_or(CascadeError::Malformed { what: "ML-KEM epoch" })?;
        let counter = params
            .uint("counter")
            .ok_or(CascadeError::Malformed { what: "ML-KEM counter" })?;
        let recv = self.recv_epoch(epoch).ok_or(CascadeError::UnknownEpoch {
            layer: KEM_ALGORITHM,
            epoch,
        })?;
        let (key, step) = recv.chain.key_for(counter, LABEL).map_err(|r| match r {
            ChainRefusal::Replay => CascadeError::Replay { layer: KEM_ALGORITHM },
            ChainRefusal::OutOfWindow => CascadeError::OutOfWindow { layer: KEM_ALGORITHM },
            ChainRefusal::Internal => CascadeError::internal(KEM_ALGORITHM, "key schedule"),
        })?;
        let aad = ctx.associated_data(params);
        let plaintext = aead_open(&key, NONCE_TAG, counter, &aad, input)
            .ok_or(CascadeError::Authentication { layer: KEM_ALGORITHM })?;
        self.staged.recv_step = Some((epoch, step));
        Ok(plaintext)
    }

    fn commit(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        if let Some(send) = staged.send {
            if self.send.as_ref().is_none_or(|s| s.epoch != send.epoch) {
                self.next_epoch = send.epoch.saturating_add(1);
                self.rotate = false;
            }
            self.send = Some(send);
        }
        if let Some(ack) = staged.ack
            && let Some(send) = self.send.as_mut()
            && send.epoch <= ack
        {
            send.acked = true;
        }
        if let Some(new) = staged.new_recv {
            self.highest_recv = self.highest_recv.max(new.epoch);
            self.recv.push(new);
            self.recv.sort_by_key(|e| e.epoch);
            while self.recv.len() > MAX_RECV_EPOCHS {
                self.recv.remove(0);
            }
        }
        if let Some((epoch, step)) = staged.recv_step
            && let Some(e) = self.recv.iter_mut().find(|e| e.epoch == epoch)
        {
            e.chain.apply(step);
        }
    }

    fn abort(&mut self) {
        self.staged = Staged::default();
    }

    fn export_state(&self) -> Result<SecretBytes> {
        let mut w = Writer::new(STATE_MAGIC);
        w.raw(self.local.as_bytes())
            .bytes(&self.peer.identity_key.serialize())
            .raw(self.peer.installation_id.as_bytes());
        w.u32(u32::try_from(self.receive_keys.len()).unwrap_or(u32::MAX));
        for k in &self.receive_keys {
            k.write(&mut w);
        }
        match &self.peer_key {
            None => w.u8(0),
            Some(k) => w.u8(1).bytes(&k.to_bytes()),
        };
        match &self.send {
            None => {
                w.u8(0);
            }
            Some(s) => {
                w.u8(1).u64(s.epoch).u32(s.key_id).bytes(&s.kem_ciphertext);
                s.chain.write(&mut w);
                w.secret(&s.export).u8(u8::from(s.acked));
            }
        }
        w.u64(self.next_epoch).u8(u8::from(self.rotate));
        w.u32(u32::try_from(self.recv.len()).unwrap_or(u32::MAX));
        for e in &self.recv {
            w.u64(e.epoch);
            e.chain.write(&mut w);
            w.secret(&e.export);
        }
        w.u64(self.highest_recv);
        Ok(w.finish())
    }
}
