//! The Signal layer: libsignal's PQXDH (Kyber1024 pre-key mandatory) and
//! Double Ratchet with SPQR, for one pair of installations.
//!
//! libsignal works on store traits with `!Send` futures. This layer owns
//! its records and lends them to libsignal through small store *views* that
//! write into an overlay; the overlay is applied on `commit` and dropped on
//! `abort`, so a failed message leaves the session untouched. The futures
//! are polled once on the caller's thread: our stores never wait.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use libsignal_protocol_syft::{
    CiphertextMessageType, DeviceId, Direction, GenericSignedPreKey as _, IdentityChange, IdentityKey, IdentityKeyPair,
    IdentityKeyStore, KeyPair, KyberPreKeyId, KyberPreKeyRecord, KyberPreKeyStore, PreKeyBundle, PreKeyId,
    PreKeyRecord, PreKeySignalMessage, PreKeyStore, ProtocolAddress, PublicKey, SessionRecord, SessionStore,
    SignalMessage, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore, Timestamp, kem,
    message_decrypt_prekey, message_decrypt_signal, message_encrypt, process_prekey_bundle,
};
use rand::{CryptoRng, Rng};
use strata_proto::{Blob, LayerParameters, ParamValue, SignalPreKeyBundle};

use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::identity::{InstallationIdentity, PeerIdentity};
use crate::layer::{Layer, LayerContext, LayerInfo, Sealed};
use crate::secret::SecretBytes;

/// `LayerMetadata.algorithm` of this layer.
pub const SIGNAL_ALGORITHM: &str = "Signal";
/// `LayerMetadata.version` of this layer.
pub const SIGNAL_VERSION: &str = "strata-1";

const STATE_MAGIC: &[u8] = b"strata-signal-layer-v1";
const BUNDLE_MAGIC: &[u8] = b"strata-signal-bundle-v1";
/// Replay-protection entries kept for used Kyber pre-keys.
const MAX_KYBER_SEEN: usize = 1024;
/// Pre-key records of each kind kept.
const MAX_PRE_KEYS: usize = 64;
/// The Signal device id every Strata installation uses inside the pairwise
/// session (installations are told apart by the address name).
const DEVICE_ID: u8 = 1;

/// Polls a libsignal future once. Our stores answer synchronously, so the
/// future is always ready; if it is not, that is a bug, not a hang.
fn run_ready<F: Future>(f: F) -> Result<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(CascadeError::internal(SIGNAL_ALGORITHM, "store future pending")),
    }
}

fn system_time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Maps a libsignal error on a received message to our classes.
fn peer_error(e: SignalProtocolError) -> CascadeError {
    use SignalProtocolError as E;
    match e {
        E::DuplicatedMessage(..) => CascadeError::Replay {
            layer: SIGNAL_ALGORITHM,
        },
        E::UntrustedIdentity(_) => CascadeError::UntrustedIdentity,
        E::SignatureValidationFailed => CascadeError::Authentication {
            layer: SIGNAL_ALGORITHM,
        },
        E::InvalidProtobufEncoding
        | E::CiphertextMessageTooShort(_)
        | E::LegacyCiphertextVersion(_)
        | E::UnrecognizedCiphertextVersion(_)
        | E::UnrecognizedMessageVersion(_)
        | E::NoKeyTypeIdentifier
        | E::BadKeyType(_)
        | E::BadKeyLength(..)
        | E::BadKEMKeyType(_)
        | E::BadKEMKeyLength(..)
        | E::BadKEMCiphertextLength(..) => CascadeError::Malformed { what: "Signal message" },
        E::InvalidMessage(_, why) => CascadeError::PeerProtocol {
            layer: SIGNAL_ALGORITHM,
            detail: why.to_owned(),
        },
        other => CascadeError::PeerProtocol {
            layer: SIGNAL_ALGORITHM,
            detail: other.to_string(),
        },
    }
}

fn internal(e: impl fmt::Display) -> CascadeError {
    CascadeError::internal(SIGNAL_ALGORITHM, e)
}

/// A PQXDH pre-key bundle (what `signal-key-exchange-response` carries).
#[derive(Clone)]
pub struct SignalBundle(PreKeyBundle);

impl fmt::Debug for SignalBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalBundle")
            .field("registration_id", &self.0.registration_id().ok())
            .field("signed_pre_key_id", &self.0.signed_pre_key_id().ok())
            .field("kyber_pre_key_id", &self.0.kyber_pre_key_id().ok())
            .finish_non_exhaustive()
    }
}

impl SignalBundle {
    /// Wraps a libsignal bundle (e.g. one another implementation published).
    pub fn new(bundle: PreKeyBundle) -> Self {
        Self(bundle)
    }

    /// The libsignal bundle.
    pub fn inner(&self) -> &PreKeyBundle {
        &self.0
    }

    /// Wire encoding.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let b = &self.0;
        let mut w = Writer::new(BUNDLE_MAGIC);
        w.u32(b.registration_id().map_err(internal)?);
        w.u32(u32::from(b.device_id().map_err(internal)?));
        match (b.pre_key_id().map_err(internal)?, b.pre_key_public().map_err(internal)?) {
            (Some(id), Some(key)) => w.u8(1).u32(id.into()).bytes(&key.serialize()),
            _ => w.u8(0),
        };
        w.u32(b.signed_pre_key_id().map_err(internal)?.into())
            .bytes(&b.signed_pre_key_public().map_err(internal)?.serialize())
            .bytes(b.signed_pre_key_signature().map_err(internal)?)
            .u32(b.kyber_pre_key_id().map_err(internal)?.into())
            .bytes(&b.kyber_pre_key_public().map_err(internal)?.serialize())
            .bytes(b.kyber_pre_key_signature().map_err(internal)?)
            .bytes(&b.identity_key().map_err(internal)?.serialize());
        Ok(w.finish_public())
    }

    /// Parses [`SignalBundle::to_bytes`] output (peer input: bounded).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |_| CascadeError::Malformed {
            what: "Signal pre-key bundle",
        };
        let mut r = Reader::new(bytes, BUNDLE_MAGIC, "Signal bundle").map_err(bad)?;
        let registration_id = r.u32().map_err(bad)?;
        let device_id = r.u32().map_err(bad)?;
        let pre_key = match r.u8().map_err(bad)? {
            0 => None,
            _ => Some((r.u32().map_err(bad)?, r.bytes(64).map_err(bad)?)),
        };
        let fields = BundleFields {
            registration_id,
            device_id,
            pre_key,
            signed: (
                r.u32().map_err(bad)?,
                r.bytes(64).map_err(bad)?,
                r.bytes(64).map_err(bad)?,
            ),
            kyber: (
                r.u32().map_err(bad)?,
                r.bytes(2048).map_err(bad)?,
                r.bytes(64).map_err(bad)?,
            ),
            identity_key: r.bytes(64).map_err(bad)?,
        };
        r.finish().map_err(bad)?;
        fields.build()
    }

    /// The `signal-key-exchange-response` PDU form.
    pub fn to_pdu(&self) -> Result<SignalPreKeyBundle> {
        let b = &self.0;
        let blob = |v: Vec<u8>| Blob::new(v).map_err(internal);
        let pre_key = match b.pre_key_public().map_err(internal)? {
            Some(k) => Some(blob(k.serialize().to_vec())?),
            None => None,
        };
        Ok(SignalPreKeyBundle {
            registration_id: b.registration_id().map_err(internal)?,
            device_id: u32::from(b.device_id().map_err(internal)?),
            pre_key_id: b.pre_key_id().map_err(internal)?.map(u32::from),
            pre_key,
            signed_pre_key_id: b.signed_pre_key_id().map_err(internal)?.into(),
            signed_pre_key: blob(b.signed_pre_key_public().map_err(internal)?.serialize().to_vec())?,
            signed_pre_key_signature: blob(b.signed_pre_key_signature().map_err(internal)?.to_vec())?,
            kyber_pre_key_id: b.kyber_pre_key_id().map_err(internal)?.into(),
            kyber_pre_key: blob(b.kyber_pre_key_public().map_err(internal)?.serialize().to_vec())?,
            kyber_pre_key_signature: blob(b.kyber_pre_key_signature().map_err(internal)?.to_vec())?,
            identity_key: blob(b.identity_key().map_err(internal)?.serialize().to_vec())?,
        })
    }

    /// Reads the PDU form (peer input): every key is parsed and checked for
    /// type and length; signatures are checked later by
    /// [`SignalLayer::process_bundle`].
    pub fn from_pdu(pdu: &SignalPreKeyBundle) -> Result<Self> {
        let pre_key = match (pdu.pre_key_id, &pdu.pre_key) {
            (Some(id), Some(key)) => Some((id, key.as_bytes())),
            (None, None) => None,
            _ => {
                return Err(CascadeError::Malformed {
                    what: "Signal one-time pre-key",
                });
            }
        };
        BundleFields {
            registration_id: pdu.registration_id,
            device_id: pdu.device_id,
            pre_key,
            signed: (
                pdu.signed_pre_key_id,
                pdu.signed_pre_key.as_bytes(),
                pdu.signed_pre_key_signature.as_bytes(),
            ),
            kyber: (
                pdu.kyber_pre_key_id,
                pdu.kyber_pre_key.as_bytes(),
                pdu.kyber_pre_key_signature.as_bytes(),
            ),
            identity_key: pdu.identity_key.as_bytes(),
        }
        .build()
    }
}

/// A bundle's fields as received: ids, serialized keys, signatures.
struct BundleFields<'a> {
    registration_id: u32,
    device_id: u32,
    pre_key: Option<(u32, &'a [u8])>,
    signed: (u32, &'a [u8], &'a [u8]),
    kyber: (u32, &'a [u8], &'a [u8]),
    identity_key: &'a [u8],
}

impl BundleFields<'_> {
    fn build(self) -> Result<SignalBundle> {
        let key = |b: &[u8]| PublicKey::deserialize(b).map_err(|_| CascadeError::Malformed { what: "Signal key" });
        let device_id = DeviceId::try_from(self.device_id).map_err(|_| CascadeError::Malformed {
            what: "Signal device id",
        })?;
        let pre_key = match self.pre_key {
            Some((id, k)) => Some((PreKeyId::from(id), key(k)?)),
            None => None,
        };
        let kyber_key =
            kem::PublicKey::deserialize(self.kyber.1).map_err(|_| CascadeError::Malformed { what: "Kyber pre-key" })?;
        let identity = IdentityKey::decode(self.identity_key).map_err(|_| CascadeError::Malformed {
            what: "Signal identity key",
        })?;
        PreKeyBundle::new(
            self.registration_id,
            device_id,
            pre_key,
            SignedPreKeyId::from(self.signed.0),
            key(self.signed.1)?,
            self.signed.2.to_vec(),
            KyberPreKeyId::from(self.kyber.0),
            kyber_key,
            self.kyber.2.to_vec(),
            identity,
        )
        .map(SignalBundle)
        .map_err(|_| CascadeError::Malformed {
            what: "Signal pre-key bundle",
        })
    }
}

/// Staged writes of one libsignal call.
#[derive(Default)]
struct Overlay {
    session: Option<SessionRecord>,
    removed_pre_keys: Vec<u32>,
    kyber_seen: Vec<(u32, u32, Vec<u8>)>,
}

/// The Signal layer for one pair of installations.
pub struct SignalLayer {
    identity: IdentityKeyPair,
    registration_id: u32,
    peer: PeerIdentity,
    address: ProtocolAddress,
    session: Option<SessionRecord>,
    pre_keys: BTreeMap<u32, PreKeyRecord>,
    signed_pre_keys: BTreeMap<u32, SignedPreKeyRecord>,
    kyber_pre_keys: BTreeMap<u32, KyberPreKeyRecord>,
    kyber_seen: BTreeSet<(u32, u32, Vec<u8>)>,
    next_pre_key_id: u32,
    staged: Option<Overlay>,
}

impl fmt::Debug for SignalLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalLayer")
            .field("peer", &self.peer.installation_id)
            .field("has_session", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

fn address_for(peer: &PeerIdentity) -> Result<ProtocolAddress> {
    let device = DeviceId::new(DEVICE_ID).map_err(|_| internal("device id"))?;
    Ok(ProtocolAddress::new(peer.installation_id.to_string(), device))
}

impl SignalLayer {
    /// A layer with no session yet, talking to `peer`.
    pub fn new(local: &InstallationIdentity, peer: PeerIdentity) -> Result<Self> {
        Ok(Self {
            identity: *local.account().key_pair(),
            registration_id: local.registration_id(),
            address: address_for(&peer)?,
            peer,
            session: None,
            pre_keys: BTreeMap::new(),
            signed_pre_keys: BTreeMap::new(),
            kyber_pre_keys: BTreeMap::new(),
            kyber_seen: BTreeSet::new(),
            next_pre_key_id: 1,
            staged: None,
        })
    }

    /// A responder layer holding pre-keys made elsewhere (the
    /// installation's bundle pre-keys, [`crate::InstallationPreKeys`]): it
    /// accepts a PreKey message built from a bundle of those keys.
    pub(crate) fn with_pre_keys(
        local: &InstallationIdentity,
        peer: PeerIdentity,
        id: u32,
        signed: SignedPreKeyRecord,
        kyber: KyberPreKeyRecord,
    ) -> Result<Self> {
        let mut layer = Self::new(local, peer)?;
        layer.signed_pre_keys.insert(id, signed);
        layer.kyber_pre_keys.insert(id, kyber);
        layer.next_pre_key_id = id.checked_add(1).unwrap_or(id);
        Ok(layer)
    }

    /// True once a session exists (the initiator after processing the
    /// bundle, the responder after the first PreKey message).
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Responder: a fresh pre-key bundle — a one-time EC pre-key, a signed EC
    /// pre-key and a signed Kyber1024 pre-key — whose private halves this
    /// layer keeps.
    pub fn pre_key_bundle<R: Rng + CryptoRng>(&mut self, now_ms: u64, rng: &mut R) -> Result<SignalBundle> {
        let id = self.next_pre_key_id;
        self.next_pre_key_id = id
            .checked_add(1)
            .ok_or(CascadeError::InvalidArgument("pre-key ids exhausted"))?;
        let private = self.identity.private_key();
        let one_time = KeyPair::generate(rng);
        let signed = KeyPair::generate(rng);
        let signed_sig = private
            .calculate_signature(&signed.public_key.serialize(), rng)
            .map_err(internal)?;
        let kyber = kem::KeyPair::generate(kem::KeyType::Kyber1024, rng);
        let kyber_sig = private
            .calculate_signature(&kyber.public_key.serialize(), rng)
            .map_err(internal)?;
        let ts = Timestamp::from_epoch_millis(now_ms);
        self.pre_keys
            .insert(id, PreKeyRecord::new(PreKeyId::from(id), &one_time));
        self.signed_pre_keys.insert(
            id,
            SignedPreKeyRecord::new(SignedPreKeyId::from(id), ts, &signed, &signed_sig),
        );
        self.kyber_pre_keys.insert(
            id,
            KyberPreKeyRecord::new(KyberPreKeyId::from(id), ts, &kyber, &kyber_sig),
        );
        // Oldest first: a bundle older than MAX_PRE_KEYS newer ones is dead.
        while self.pre_keys.len() > MAX_PRE_KEYS {
            self.pre_keys.pop_first();
        }
        while self.signed_pre_keys.len() > MAX_PRE_KEYS {
            self.signed_pre_keys.pop_first();
        }
        while self.kyber_pre_keys.len() > MAX_PRE_KEYS {
            self.kyber_pre_keys.pop_first();
        }
        let bundle = PreKeyBundle::new(
            self.registration_id,
            DeviceId::new(DEVICE_ID).map_err(|_| internal("device id"))?,
            Some((PreKeyId::from(id), one_time.public_key)),
            SignedPreKeyId::from(id),
            signed.public_key,
            signed_sig.into_vec(),
            KyberPreKeyId::from(id),
            kyber.public_key,
            kyber_sig.into_vec(),
            *self.identity.identity_key(),
        )
        .map_err(internal)?;
        Ok(SignalBundle(bundle))
    }

    /// Reusable pre-keys for a broadcast bundle, not tied to any peer: a
    /// signed EC pre-key and a signed Kyber1024 pre-key with id `id`, and
    /// the bundle of their public halves (no one-time pre-key: a broadcast
    /// bundle is read by anyone).
    pub(crate) fn reusable_pre_keys<R: Rng + CryptoRng>(
        local: &InstallationIdentity,
        id: u32,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(SignedPreKeyRecord, KyberPreKeyRecord, SignalBundle)> {
        let identity = local.account().key_pair();
        let private = identity.private_key();
        let signed = KeyPair::generate(rng);
        let signed_sig = private
            .calculate_signature(&signed.public_key.serialize(), rng)
            .map_err(internal)?;
        let kyber = kem::KeyPair::generate(kem::KeyType::Kyber1024, rng);
        let kyber_sig = private
            .calculate_signature(&kyber.public_key.serialize(), rng)
            .map_err(internal)?;
        let ts = Timestamp::from_epoch_millis(now_ms);
        let bundle = PreKeyBundle::new(
            local.registration_id(),
            DeviceId::new(DEVICE_ID).map_err(|_| internal("device id"))?,
            None,
            SignedPreKeyId::from(id),
            signed.public_key,
            signed_sig.to_vec(),
            KyberPreKeyId::from(id),
            kyber.public_key.clone(),
            kyber_sig.to_vec(),
            *identity.identity_key(),
        )
        .map_err(internal)?;
        Ok((
            SignedPreKeyRecord::new(SignedPreKeyId::from(id), ts, &signed, &signed_sig),
            KyberPreKeyRecord::new(KyberPreKeyId::from(id), ts, &kyber, &kyber_sig),
            SignalBundle(bundle),
        ))
    }

    /// Initiator: runs PQXDH against the peer's bundle. The bundle's identity
    /// key must be the pinned one; libsignal checks both pre-key signatures.
    pub fn process_bundle<R: Rng + CryptoRng>(
        &mut self,
        bundle: &SignalBundle,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<()> {
        if *bundle.0.identity_key().map_err(internal)? != self.peer.identity_key {
            return Err(CascadeError::UntrustedIdentity);
        }
        let mut overlay = Overlay::default();
        {
            let (mut session, mut identity) = self.session_views(&mut overlay.session);
            run_ready(process_prekey_bundle(
                &self.address,
                &mut session,
                &mut identity,
                &bundle.0,
                system_time(now_ms),
                rng,
            ))?
            .map_err(peer_error)?;
        }
        self.staged = Some(overlay);
        self.commit();
        Ok(())
    }

    /// Reads back what [`Layer::export_state`] wrote.
    pub fn import_state(bytes: &[u8]) -> Result<Self> {
        let corrupt = |what| move |_| CascadeError::CorruptState(what);
        let mut r = Reader::new(bytes, STATE_MAGIC, "Signal layer")?;
        let identity = IdentityKeyPair::try_from(r.bytes(1024)?).map_err(corrupt("identity"))?;
        let registration_id = r.u32()?;
        let identity_key = IdentityKey::decode(r.bytes(64)?).map_err(corrupt("peer identity"))?;
        let installation_id = crate::identity::InstallationId::from_bytes(r.array()?);
        let peer = PeerIdentity {
            identity_key,
            installation_id,
        };
        let session = match r.u8()? {
            0 => None,
            _ => Some(SessionRecord::deserialize(r.bytes(1 << 20)?).map_err(corrupt("session"))?),
        };
        let mut pre_keys = BTreeMap::new();
        for _ in 0..r.count(MAX_PRE_KEYS)? {
            let id = r.u32()?;
            pre_keys.insert(
                id,
                PreKeyRecord::deserialize(r.bytes(4096)?).map_err(corrupt("pre-key"))?,
            );
        }
        let mut signed_pre_keys = BTreeMap::new();
        for _ in 0..r.count(MAX_PRE_KEYS)? {
            let id = r.u32()?;
            let rec = SignedPreKeyRecord::deserialize(r.bytes(4096)?).map_err(corrupt("signed pre-key"))?;
            signed_pre_keys.insert(id, rec);
        }
        let mut kyber_pre_keys = BTreeMap::new();
        for _ in 0..r.count(MAX_PRE_KEYS)? {
            let id = r.u32()?;
            let rec = KyberPreKeyRecord::deserialize(r.bytes(16384)?).map_err(corrupt("Kyber pre-key"))?;
            kyber_pre_keys.insert(id, rec);
        }
        let mut kyber_seen = BTreeSet::new();
        for _ in 0..r.count(MAX_KYBER_SEEN)? {
            let k = r.u32()?;
            let e = r.u32()?;
            kyber_seen.insert((k, e, r.bytes(64)?.to_vec()));
        }
        let next_pre_key_id = r.u32()?;
        r.finish()?;
        Ok(Self {
            identity,
            registration_id,
            address: address_for(&peer)?,
            peer,
            session,
            pre_keys,
            signed_pre_keys,
            kyber_pre_keys,
            kyber_seen,
            next_pre_key_id,
            staged: None,
        })
    }
}

impl Layer for SignalLayer {
    fn info(&self) -> LayerInfo {
        LayerInfo {
            algorithm: SIGNAL_ALGORITHM,
            version: SIGNAL_VERSION,
        }
    }

    fn seal(&mut self, input: &[u8], ctx: &mut LayerContext<'_>) -> Result<Sealed> {
        if self.session.is_none() {
            return Err(CascadeError::NotReady {
                layer: SIGNAL_ALGORITHM,
                why: "no session yet",
            });
        }
        let now = system_time(ctx.envelope.timestamp.unwrap_or(0));
        let mut overlay = Overlay::default();
        let message = {
            let (mut session, mut identity) = self.session_views(&mut overlay.session);
            let mut rng = ctx.rng();
            run_ready(message_encrypt(
                input,
                &self.address,
                &mut session,
                &mut identity,
                now,
                &mut rng,
            ))?
            .map_err(internal)?
        };
        let kind: u8 = match message.message_type() {
            CiphertextMessageType::Whisper => 2,
            CiphertextMessageType::PreKey => 3,
            _ => return Err(internal("unexpected message type")),
        };
        let mut params = LayerParameters::new();
        params
            .insert("type", ParamValue::Uint(u64::from(kind)))
            .map_err(internal)?;
        self.staged = Some(overlay);
        Ok(Sealed {
            output: message.serialize().to_vec(),
            params,
            contribution: None,
        })
    }

    fn open(&mut self, input: &[u8], params: &LayerParameters, ctx: &mut LayerContext<'_>) -> Result<Vec<u8>> {
        let mut overlay = Overlay::default();
        let plaintext = {
            let (mut session, mut identity) = self.session_views(&mut overlay.session);
            let mut rng = ctx.rng();
            match params.uint("type") {
                Some(2) => {
                    let m = SignalMessage::try_from(input).map_err(peer_error)?;
                    run_ready(message_decrypt_signal(
                        &m,
                        &self.address,
                        &mut session,
                        &mut identity,
                        &mut rng,
                    ))?
                }
                Some(3) => {
                    let m = PreKeySignalMessage::try_from(input).map_err(peer_error)?;
                    let mut pre_keys = PreKeyView {
                        base: &self.pre_keys,
                        removed: &mut overlay.removed_pre_keys,
                    };
                    let signed = SignedPreKeyView {
                        base: &self.signed_pre_keys,
                    };
                    let mut kyber = KyberView {
                        base: &self.kyber_pre_keys,
                        seen: &self.kyber_seen,
                        overlay: &mut overlay.kyber_seen,
                    };
                    run_ready(message_decrypt_prekey(
                        &m,
                        &self.address,
                        &mut session,
                        &mut identity,
                        &mut pre_keys,
                        &signed,
                        &mut kyber,
                        &mut rng,
                    ))?
                }
                _ => {
                    return Err(CascadeError::Malformed {
                        what: "Signal message type",
                    });
                }
            }
            .map_err(peer_error)?
        };
        self.staged = Some(overlay);
        Ok(plaintext)
    }

    fn commit(&mut self) {
        let Some(overlay) = self.staged.take() else { return };
        if let Some(session) = overlay.session {
            self.session = Some(session);
        }
        for id in overlay.removed_pre_keys {
            self.pre_keys.remove(&id);
        }
        self.kyber_seen.extend(overlay.kyber_seen);
        while self.kyber_seen.len() > MAX_KYBER_SEEN {
            self.kyber_seen.pop_first();
        }
    }

    fn abort(&mut self) {
        self.staged = None;
    }

    fn export_state(&self) -> Result<SecretBytes> {
        let mut w = Writer::new(STATE_MAGIC);
        w.bytes(&self.identity.serialize()).u32(self.registration_id);
        w.bytes(&self.peer.identity_key.serialize())
            .raw(self.peer.installation_id.as_bytes());
        match &self.session {
            None => w.u8(0),
            Some(s) => w.u8(1).bytes(&s.serialize().map_err(internal)?),
        };
        w.u32(u32::try_from(self.pre_keys.len()).unwrap_or(u32::MAX));
        for (id, rec) in &self.pre_keys {
            w.u32(*id).bytes(&rec.serialize().map_err(internal)?);
        }
        w.u32(u32::try_from(self.signed_pre_keys.len()).unwrap_or(u32::MAX));
        for (id, rec) in &self.signed_pre_keys {
            w.u32(*id).bytes(&rec.serialize().map_err(internal)?);
        }
        w.u32(u32::try_from(self.kyber_pre_keys.len()).unwrap_or(u32::MAX));
        for (id, rec) in &self.kyber_pre_keys {
            w.u32(*id).bytes(&rec.serialize().map_err(internal)?);
        }
        w.u32(u32::try_from(self.kyber_seen.len()).unwrap_or(u32::MAX));
        for (k, e, base) in &self.kyber_seen {
            w.u32(*k).u32(*e).bytes(base);
        }
        w.u32(self.next_pre_key_id);
        Ok(w.finish())
    }
}

// ---- store views ---------------------------------------------------------

impl SignalLayer {
    /// The session and identity stores lent to libsignal for one message:
    /// the session it writes goes to `overlay`.
    fn session_views<'a>(&'a self, overlay: &'a mut Option<SessionRecord>) -> (SessionView<'a>, IdentityView<'a>) {
        let session = SessionView {
            base: self.session.as_ref(),
            overlay,
        };
        let identity = IdentityView {
            layer_identity: &self.identity,
            registration_id: self.registration_id,
            peer: &self.peer,
        };
        (session, identity)
    }
}

/// A copy of pre-key record `id`, or `missing` when there is none.
fn lend<R: Clone>(
    records: &BTreeMap<u32, R>,
    id: u32,
    missing: SignalProtocolError,
) -> std::result::Result<R, SignalProtocolError> {
    records.get(&id).cloned().ok_or(missing)
}

/// The pre-key views only lend records: libsignal saves pre-keys when they
/// are made, never while it decrypts.
fn read_only(method: &'static str) -> SignalProtocolError {
    SignalProtocolError::InvalidState(method, "not supported while decrypting".into())
}

struct SessionView<'a> {
    base: Option<&'a SessionRecord>,
    overlay: &'a mut Option<SessionRecord>,
}

#[async_trait(?Send)]
impl SessionStore for SessionView<'_> {
    async fn load_session(
        &self,
        _address: &ProtocolAddress,
    ) -> std::result::Result<Option<SessionRecord>, SignalProtocolError> {
        Ok(self.overlay.clone().or_else(|| self.base.cloned()))
    }

    async fn store_session(
        &mut self,
        _address: &ProtocolAddress,
        record: &SessionRecord,
    ) -> std::result::Result<(), SignalProtocolError> {
        *self.overlay = Some(record.clone());
        Ok(())
    }
}

/// The identity store pins the peer: any other identity key is untrusted.
struct IdentityView<'a> {
    layer_identity: &'a IdentityKeyPair,
    registration_id: u32,
    peer: &'a PeerIdentity,
}

#[async_trait(?Send)]
impl IdentityKeyStore for IdentityView<'_> {
    async fn get_identity_key_pair(&self) -> std::result::Result<IdentityKeyPair, SignalProtocolError> {
        Ok(*self.layer_identity)
    }

    async fn get_local_registration_id(&self) -> std::result::Result<u32, SignalProtocolError> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> std::result::Result<IdentityChange, SignalProtocolError> {
        if *identity == self.peer.identity_key {
            Ok(IdentityChange::NewOrUnchanged)
        } else {
            Err(SignalProtocolError::UntrustedIdentity(address.clone()))
        }
    }

    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        identity: &IdentityKey,
        _direction: Direction,
    ) -> std::result::Result<bool, SignalProtocolError> {
        Ok(*identity == self.peer.identity_key)
    }

    async fn get_identity(
        &self,
        _address: &ProtocolAddress,
    ) -> std::result::Result<Option<IdentityKey>, SignalProtocolError> {
        Ok(Some(self.peer.identity_key))
    }
}

struct PreKeyView<'a> {
    base: &'a BTreeMap<u32, PreKeyRecord>,
    removed: &'a mut Vec<u32>,
}

#[async_trait(?Send)]
impl PreKeyStore for PreKeyView<'_> {
    async fn get_pre_key(&self, id: PreKeyId) -> std::result::Result<PreKeyRecord, SignalProtocolError> {
        let id = u32::from(id);
        if self.removed.contains(&id) {
            return Err(SignalProtocolError::InvalidPreKeyId);
        }
        lend(self.base, id, SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(
        &mut self,
        _id: PreKeyId,
        _record: &PreKeyRecord,
    ) -> std::result::Result<(), SignalProtocolError> {
        Err(read_only("save_pre_key"))
    }

    async fn remove_pre_key(&mut self, id: PreKeyId) -> std::result::Result<(), SignalProtocolError> {
        self.removed.push(u32::from(id));
        Ok(())
    }
}

struct SignedPreKeyView<'a> {
    base: &'a BTreeMap<u32, SignedPreKeyRecord>,
}

#[async_trait(?Send)]
impl SignedPreKeyStore for SignedPreKeyView<'_> {
    async fn get_signed_pre_key(
        &self,
        id: SignedPreKeyId,
    ) -> std::result::Result<SignedPreKeyRecord, SignalProtocolError> {
        lend(self.base, u32::from(id), SignalProtocolError::InvalidSignedPreKeyId)
    }

    async fn save_signed_pre_key(
        &mut self,
        _id: SignedPreKeyId,
        _record: &SignedPreKeyRecord,
    ) -> std::result::Result<(), SignalProtocolError> {
        Err(read_only("save_signed_pre_key"))
    }
}

/// Kyber pre-keys are last-resort keys: they stay, and the `(kyber id,
/// signed id, base key)` triples already seen are refused (replay set,
/// persisted with the layer).
struct KyberView<'a> {
    base: &'a BTreeMap<u32, KyberPreKeyRecord>,
    seen: &'a BTreeSet<(u32, u32, Vec<u8>)>,
    overlay: &'a mut Vec<(u32, u32, Vec<u8>)>,
}

#[async_trait(?Send)]
impl KyberPreKeyStore for KyberView<'_> {
    async fn get_kyber_pre_key(
        &self,
        id: KyberPreKeyId,
    ) -> std::result::Result<KyberPreKeyRecord, SignalProtocolError> {
        lend(self.base, u32::from(id), SignalProtocolError::InvalidKyberPreKeyId)
    }

    async fn save_kyber_pre_key(
        &mut self,
        _id: KyberPreKeyId,
        _record: &KyberPreKeyRecord,
    ) -> std::result::Result<(), SignalProtocolError> {
        Err(read_only("save_kyber_pre_key"))
    }

    async fn mark_kyber_pre_key_used(
        &mut self,
        kyber_id: KyberPreKeyId,
        ec_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> std::result::Result<(), SignalProtocolError> {
        let entry = (u32::from(kyber_id), u32::from(ec_id), base_key.serialize().into_vec());
        if self.seen.contains(&entry) || self.overlay.contains(&entry) {
            return Err(SignalProtocolError::InvalidMessage(
                CiphertextMessageType::PreKey,
                "reused base key",
            ));
        }
        self.overlay.push(entry);
        Ok(())
    }
}
