//! The one place this crate talks to `strata-cascade`: building the layers
//! during the handshake, converting keys and bundles to and from their PDU
//! fields, and the step-7 key confirmation. Keeping it in one module keeps
//! the rest of the crate independent of the cascade's exact API.

use rand_chacha::ChaCha20Rng;
use strata_cascade::layers::signal::SIGNAL_ALGORITHM;
use strata_cascade::{
    Cascade, CascadeError, InstallationId, InstallationIdentity, Layer, MlKemLayer, PeerIdentity, SignalLayer,
    SignedKemKey,
};
use strata_proto::{Blob, BoundedVec, CascadedPayload, KeyBytes, LayerMetadata, LayerParameters, ParamValue, Text};

use crate::error::SessionError;

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

/// Installs a peer's signed ML-KEM key from PDU fields (peer input; the
/// layer verifies the signature against the pinned identity).
pub(crate) fn install_peer_kem(
    kem: &mut MlKemLayer,
    peer: PeerIdentity,
    key_id: u32,
    key: &KeyBytes,
    signature: &KeyBytes,
) -> strata_cascade::Result<()> {
    kem.set_peer_key(SignedKemKey {
        installation_id: peer.installation_id,
        key_id,
        encapsulation_key: key.as_bytes().to_vec(),
        signature: signature.as_bytes().to_vec(),
    })
}

/// Step 7, sender: the first Signal message of the session (a PreKey
/// message) whose plaintext is the session id, made by running the Signal
/// layer alone through the cascade's composition. Returns the serialized
/// libsignal message.
pub(crate) fn signal_confirmation(
    layer: &mut SignalLayer,
    local: InstallationId,
    remote: InstallationId,
    session_id: &[u8; 16],
    now_ms: u64,
    rng: &mut ChaCha20Rng,
) -> strata_cascade::Result<Vec<u8>> {
    let payload = Cascade::encrypt_with(&mut [layer as &mut dyn Layer], local, remote, session_id, now_ms, rng)?;
    payload
        .final_ciphertext
        .map(Blob::into_vec)
        .ok_or(CascadeError::InvalidArgument("no ciphertext"))
}

/// Step 7, receiver: decrypts the confirmation and checks its plaintext is
/// `session_id`. Builds the responder's Signal session.
pub(crate) fn open_signal_confirmation(
    layer: &mut SignalLayer,
    local: InstallationId,
    remote: InstallationId,
    session_id: &[u8; 16],
    message: &[u8],
    rng: &mut ChaCha20Rng,
) -> strata_cascade::Result<()> {
    // The cascade commits a successful decryption; a confirmation of the
    // wrong session must leave no session behind, so keep a snapshot.
    let snapshot = layer.export_state()?;
    let payload = confirmation_payload(message)?;
    let opened = Cascade::decrypt_with(&mut [&mut *layer as &mut dyn Layer], local, remote, &payload, rng)?;
    if opened.as_slice() == session_id.as_slice() {
        return Ok(());
    }
    *layer = SignalLayer::import_state(snapshot.as_bytes())?;
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

    #[test]
    fn identities_and_ids_parse_back() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let a = installation(&mut rng);
        let id = a.installation_id();
        let peer = peer_identity(&own_identity_key(&a), id).unwrap();
        assert_eq!(peer, a.peer_identity());
        assert!(peer_identity(&[1, 2, 3], id).is_none());
    }

    #[test]
    fn step_seven_confirms_the_session_id_and_nothing_else() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (a, b) = (installation(&mut rng), installation(&mut rng));
        let (ai, bi) = (a.installation_id(), b.installation_id());
        let mut a_sig = SignalLayer::new(&a, b.peer_identity()).unwrap();
        let mut b_sig = SignalLayer::new(&b, a.peer_identity()).unwrap();
        let bundle = b_sig.pre_key_bundle(1, &mut rng).unwrap();
        a_sig.process_bundle(&bundle, 1, &mut rng).unwrap();
        let id = [7u8; 16];
        let m = signal_confirmation(&mut a_sig, ai, bi, &id, 1, &mut rng).unwrap();
        assert!(open_signal_confirmation(&mut b_sig, bi, ai, &[8u8; 16], &m, &mut rng).is_err());
        assert!(!b_sig.has_session(), "a failed confirmation changes nothing");
        open_signal_confirmation(&mut b_sig, bi, ai, &id, &m, &mut rng).unwrap();
        assert!(b_sig.has_session());
    }
}
