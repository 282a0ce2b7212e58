//! The one place this crate talks to `strata-cascade`: building the layers
//! during the handshake, converting keys and bundles to and from their PDU
//! fields, and the step-7 key confirmation. Keeping it in one module keeps
//! the rest of the crate independent of the cascade's exact API.

use std::cell::RefCell;
use std::rc::Rc;

use rand_chacha::ChaCha20Rng;
use strata_cascade::layers::signal::SIGNAL_ALGORITHM;
use strata_cascade::{
    Cascade, CascadeError, InstallationId, InstallationIdentity, Layer, LayerContext, LayerInfo, PeerIdentity, Sealed,
    SignalBundle, SignalLayer, SignedKemKey,
};
use strata_proto::{
    Blob, BoundedVec, CascadedPayload, KeyBytes, LayerMetadata, LayerParameters, ParamValue, SignalPreKeyBundle, Text,
};

use crate::error::SessionError;

/// The hex form of an installation id, as it travels in PDUs and keys the
/// store.
pub(crate) fn installation_hex(id: InstallationId) -> String {
    hex::encode(id.as_bytes())
}

/// Parses the hex form of an installation id (peer input).
pub(crate) fn parse_installation(text: &str) -> Option<InstallationId> {
    let bytes: [u8; 16] = hex::decode(text).ok()?.try_into().ok()?;
    Some(InstallationId::from_bytes(bytes))
}

/// The serialized account identity key of this installation.
pub(crate) fn own_identity_key(local: &InstallationIdentity) -> Vec<u8> {
    local.account().identity_key().serialize().to_vec()
}

/// Builds the identity a peer presents (peer input). The cascade does not
/// re-export the key type, so the field's own type drives the conversion.
pub(crate) fn peer_identity(identity_key: &[u8], installation_id: InstallationId) -> Option<PeerIdentity> {
    Some(PeerIdentity {
        identity_key: TryFrom::try_from(identity_key).ok()?,
        installation_id,
    })
}

/// The serialized identity key of a peer identity.
pub(crate) fn peer_identity_key(peer: &PeerIdentity) -> Vec<u8> {
    peer.identity_key.serialize().to_vec()
}

fn key_bytes(bytes: impl Into<Vec<u8>>) -> Result<KeyBytes, SessionError> {
    Blob::new(bytes).map_err(|_| SessionError::Internal("key longer than the PDU field".into()))
}

/// A signed ML-KEM key as `(key_id, encapsulation_key, signature)` PDU fields.
pub(crate) fn kem_key_fields(key: &SignedKemKey) -> Result<(u32, KeyBytes, KeyBytes), SessionError> {
    Ok((
        key.key_id,
        key_bytes(key.encapsulation_key.clone())?,
        key_bytes(key.signature.clone())?,
    ))
}

/// A peer's signed ML-KEM key from PDU fields (verified later by the layer).
pub(crate) fn kem_key_from_fields(owner: InstallationId, key_id: u32, key: &[u8], signature: &[u8]) -> SignedKemKey {
    SignedKemKey {
        installation_id: owner,
        key_id,
        encapsulation_key: key.to_vec(),
        signature: signature.to_vec(),
    }
}

/// The PDU form of a Signal pre-key bundle.
pub(crate) fn bundle_to_pdu(bundle: &SignalBundle) -> Result<SignalPreKeyBundle, SessionError> {
    let b = bundle.inner();
    let bad = |_| SessionError::Internal("Signal bundle field".into());
    let pre_key_id = b.pre_key_id().map_err(bad)?.map(u32::from);
    let pre_key = match b.pre_key_public().map_err(bad)? {
        Some(k) => Some(key_bytes(k.serialize().to_vec())?),
        None => None,
    };
    Ok(SignalPreKeyBundle {
        registration_id: b.registration_id().map_err(bad)?,
        device_id: u32::from(b.device_id().map_err(bad)?),
        pre_key_id,
        pre_key,
        signed_pre_key_id: u32::from(b.signed_pre_key_id().map_err(bad)?),
        signed_pre_key: key_bytes(b.signed_pre_key_public().map_err(bad)?.serialize().to_vec())?,
        signed_pre_key_signature: key_bytes(b.signed_pre_key_signature().map_err(bad)?.to_vec())?,
        kyber_pre_key_id: u32::from(b.kyber_pre_key_id().map_err(bad)?),
        kyber_pre_key: key_bytes(b.kyber_pre_key_public().map_err(bad)?.serialize().to_vec())?,
        kyber_pre_key_signature: key_bytes(b.kyber_pre_key_signature().map_err(bad)?.to_vec())?,
        identity_key: key_bytes(b.identity_key().map_err(bad)?.serialize().to_vec())?,
    })
}

/// Magic of `SignalBundle::to_bytes` (the cascade's bundle wire encoding).
const BUNDLE_MAGIC: &[u8] = b"strata-signal-bundle-v1";

/// A peer's bundle from its PDU form (peer input). Re-encodes the fields in
/// the cascade's bundle wire encoding, which validates every key.
pub(crate) fn bundle_from_pdu(pdu: &SignalPreKeyBundle) -> Result<SignalBundle, CascadeError> {
    fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = BUNDLE_MAGIC.to_vec();
    out.extend_from_slice(&pdu.registration_id.to_be_bytes());
    out.extend_from_slice(&pdu.device_id.to_be_bytes());
    match (pdu.pre_key_id, &pdu.pre_key) {
        (Some(id), Some(key)) => {
            out.push(1);
            out.extend_from_slice(&id.to_be_bytes());
            lp(&mut out, key.as_bytes());
        }
        _ => out.push(0),
    }
    out.extend_from_slice(&pdu.signed_pre_key_id.to_be_bytes());
    lp(&mut out, pdu.signed_pre_key.as_bytes());
    lp(&mut out, pdu.signed_pre_key_signature.as_bytes());
    out.extend_from_slice(&pdu.kyber_pre_key_id.to_be_bytes());
    lp(&mut out, pdu.kyber_pre_key.as_bytes());
    lp(&mut out, pdu.kyber_pre_key_signature.as_bytes());
    lp(&mut out, pdu.identity_key.as_bytes());
    SignalBundle::from_bytes(&out)
}

/// Lends a Signal layer to a one-layer [`Cascade`] (which owns boxed
/// layers) and gets it back afterwards.
struct Lent(Rc<RefCell<SignalLayer>>);

impl Layer for Lent {
    fn info(&self) -> LayerInfo {
        self.0.borrow().info()
    }
    fn seal(&mut self, input: &[u8], ctx: &mut LayerContext<'_>) -> strata_cascade::Result<Sealed> {
        self.0.borrow_mut().seal(input, ctx)
    }
    fn resolve(&mut self, params: &LayerParameters) -> strata_cascade::Result<Option<strata_cascade::Contribution>> {
        self.0.borrow_mut().resolve(params)
    }
    fn open(
        &mut self,
        input: &[u8],
        params: &LayerParameters,
        ctx: &mut LayerContext<'_>,
    ) -> strata_cascade::Result<Vec<u8>> {
        self.0.borrow_mut().open(input, params, ctx)
    }
    fn commit(&mut self) {
        self.0.borrow_mut().commit();
    }
    fn abort(&mut self) {
        self.0.borrow_mut().abort();
    }
    fn export_state(&self) -> strata_cascade::Result<strata_cascade::SecretBytes> {
        self.0.borrow().export_state()
    }
}

/// A Signal layer that can be lent to a one-layer [`Cascade`] during the
/// handshake; [`take_signal`] gets it back once the handshake is done.
pub(crate) type SharedSignal = Rc<RefCell<SignalLayer>>;

/// Runs `f` on a one-layer cascade made of `layer`.
fn with_signal_cascade<T>(
    layer: &SharedSignal,
    local: InstallationId,
    remote: InstallationId,
    f: impl FnOnce(&mut Cascade) -> strata_cascade::Result<T>,
) -> strata_cascade::Result<T> {
    let mut cascade = Cascade::new(vec![Box::new(Lent(Rc::clone(layer)))], local, remote)?;
    f(&mut cascade)
}

/// The Signal layer back from its handshake wrapper.
pub(crate) fn take_signal(layer: SharedSignal) -> Result<SignalLayer, SessionError> {
    Rc::try_unwrap(layer)
        .map(RefCell::into_inner)
        .map_err(|_| SessionError::Internal("Signal layer still lent".into()))
}

/// Step 7, sender: the first Signal message of the session (a PreKey
/// message) whose plaintext is the session id. Returns the serialized
/// libsignal message.
pub(crate) fn signal_confirmation(
    layer: &SharedSignal,
    local: InstallationId,
    remote: InstallationId,
    session_id: &[u8; 16],
    now_ms: u64,
    rng: &mut ChaCha20Rng,
) -> strata_cascade::Result<Vec<u8>> {
    with_signal_cascade(layer, local, remote, |cascade| {
        let payload = cascade.encrypt(session_id, now_ms, rng)?;
        payload
            .final_ciphertext
            .map(Blob::into_vec)
            .ok_or(CascadeError::InvalidArgument("no ciphertext"))
    })
}

/// Step 7, receiver: decrypts the confirmation and checks its plaintext is
/// `session_id`. Builds the responder's Signal session.
pub(crate) fn open_signal_confirmation(
    layer: &SharedSignal,
    local: InstallationId,
    remote: InstallationId,
    session_id: &[u8; 16],
    message: &[u8],
    rng: &mut ChaCha20Rng,
) -> strata_cascade::Result<()> {
    // The cascade commits a successful decryption; a confirmation of the
    // wrong session must leave no session behind, so keep a snapshot.
    let snapshot = layer.borrow().export_state()?;
    let opened = with_signal_cascade(layer, local, remote, |cascade| {
        let payload = confirmation_payload(message)?;
        cascade.decrypt(&payload, rng)
    })?;
    if opened.as_slice() == session_id.as_slice() {
        return Ok(());
    }
    *layer.borrow_mut() = SignalLayer::import_state(snapshot.as_bytes())?;
    Err(CascadeError::Authentication {
        layer: SIGNAL_ALGORITHM,
    })
}

/// The one-layer payload a step-7 message stands for: a PreKey message
/// (`type` 3) over the 16-byte session id.
fn confirmation_payload(message: &[u8]) -> strata_cascade::Result<CascadedPayload> {
    let malformed = |_| CascadeError::Malformed {
        what: "signal-session-complete",
    };
    let size = u64::try_from(message.len()).unwrap_or(u64::MAX);
    let mut params = LayerParameters::new();
    params.insert("type", ParamValue::Uint(3)).map_err(malformed)?;
    let meta = LayerMetadata {
        algorithm: Text::new(SIGNAL_ALGORITHM).map_err(malformed)?,
        version: Text::new(strata_cascade::layers::signal::SIGNAL_VERSION).map_err(malformed)?,
        timestamp: 0,
        input_size: 16,
        output_size: size,
        processing_time: 0,
    };
    Ok(CascadedPayload {
        final_ciphertext: Some(Blob::new(message.to_vec()).map_err(malformed)?),
        layers: BoundedVec::new(vec![meta]).map_err(malformed)?,
        layer_parameters: BoundedVec::new(vec![params]).map_err(malformed)?,
        total_processing_time: 0,
        original_size: 16,
        final_size: size,
        timestamp: Some(0),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rand::SeedableRng;
    use strata_cascade::AccountIdentity;

    use super::*;

    fn installation(rng: &mut ChaCha20Rng) -> InstallationIdentity {
        InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
    }

    /// Guards the re-encoding of received bundles against drift in the
    /// cascade's bundle wire encoding.
    #[test]
    fn bundle_survives_the_pdu_round_trip() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (a, b) = (installation(&mut rng), installation(&mut rng));
        let mut layer = SignalLayer::new(&b, a.peer_identity()).unwrap();
        let bundle = layer.pre_key_bundle(1_760_000_000_000, &mut rng).unwrap();
        let back = bundle_from_pdu(&bundle_to_pdu(&bundle).unwrap()).unwrap();
        assert_eq!(back.to_bytes().unwrap(), bundle.to_bytes().unwrap());
    }

    #[test]
    fn identities_and_ids_parse_back() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let a = installation(&mut rng);
        let id = a.installation_id();
        assert_eq!(parse_installation(&installation_hex(id)), Some(id));
        assert_eq!(parse_installation("zz"), None);
        let peer = peer_identity(&own_identity_key(&a), id).unwrap();
        assert_eq!(peer, a.peer_identity());
        assert!(peer_identity(&[1, 2, 3], id).is_none());
    }

    #[test]
    fn step_seven_confirms_the_session_id_and_nothing_else() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (a, b) = (installation(&mut rng), installation(&mut rng));
        let (ai, bi) = (a.installation_id(), b.installation_id());
        let a_sig: SharedSignal = Rc::new(RefCell::new(SignalLayer::new(&a, b.peer_identity()).unwrap()));
        let b_sig: SharedSignal = Rc::new(RefCell::new(SignalLayer::new(&b, a.peer_identity()).unwrap()));
        let bundle = b_sig.borrow_mut().pre_key_bundle(1, &mut rng).unwrap();
        a_sig.borrow_mut().process_bundle(&bundle, 1, &mut rng).unwrap();
        let id = [7u8; 16];
        let m = signal_confirmation(&a_sig, ai, bi, &id, 1, &mut rng).unwrap();
        assert!(open_signal_confirmation(&b_sig, bi, ai, &[8u8; 16], &m, &mut rng).is_err());
        assert!(!b_sig.borrow().has_session(), "a failed confirmation changes nothing");
        open_signal_confirmation(&b_sig, bi, ai, &id, &m, &mut rng).unwrap();
        assert!(b_sig.borrow().has_session());
        assert!(take_signal(b_sig).is_ok());
    }
}
