//! The MLS layer (RFC 9420 via openmls, ciphersuite 0x0001): the pair's
//! two-member group. KeyPackages carry a lifetime and may be last-resort
//! (flag *and* capability); received ones are checked for signature,
//! lifetime, a maximum lifetime openmls does not enforce, and the binding
//! of the MLS signature key to the pinned identity key.
//!
//! openmls writes its state into the provider's storage as it goes; to make
//! `seal`/`open` two-phase this layer snapshots the storage map before each
//! message and restores it (reloading the group) on `abort`.

use std::collections::HashMap;
use std::fmt;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _, VLBytes};
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, ExtensionType, GroupId, KeyPackage, KeyPackageBundle,
    KeyPackageIn, KeyPackageRef, LeafNodeParameters, Lifetime, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig,
    MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, ProcessMessageError, ProcessedMessage, ProcessedMessageContent,
    ProtocolMessage, ProtocolVersion, Sender, SenderRatchetConfiguration, StagedWelcome, ValidationError,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::storage::StorageProvider as _;
use openmls_traits::types::SignatureScheme;
use strata_proto::{LayerParameters, ParamValue};

use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::identity::{InstallationIdentity, MLS_CIPHERSUITE, MlsBinding, PeerIdentity, decode_signer, encode_signer};
use crate::layer::{Contribution, Layer, LayerContext, LayerInfo, Sealed};
use crate::schedule::{MAX_FORWARD_GAP, MAX_SKIPPED_KEYS};
use crate::secret::{Secret32, SecretBytes};

/// `LayerMetadata.algorithm` of this layer.
pub const MLS_ALGORITHM: &str = "MLS";
/// `LayerMetadata.version` of this layer.
pub const MLS_VERSION: &str = "strata-1";
/// The group context extension of a group chat's admin list (private use
/// range, RFC 9420 §17.3); every KeyPackage lists it in its capabilities.
pub const GROUP_ADMINS_EXTENSION: u16 = 0xF0A1;
/// Lifetime of the KeyPackages this layer makes by default: 28 days.
pub const DEFAULT_KEY_PACKAGE_LIFETIME_SECS: u64 = 28 * 24 * 3600;
/// The longest lifetime (`not_after − not_before`) accepted on a received
/// KeyPackage: 12 weeks plus openmls' one-hour back-dating margin. RFC 9420
/// §10.1 leaves the bound to the application; openmls accepts any.
pub const MAX_KEY_PACKAGE_LIFETIME_SECS: u64 = 84 * 24 * 3600 + 3600;
/// The label of the MLS exporter secret the AES-GCM layer is keyed from.
const EXPORTER_LABEL: &str = "strata/v1/cascade/aes-256-gcm";
/// The label of the value that settles two pair sessions made at once.
const TIE_BREAK_LABEL: &str = "strata/v1/pair/tie-break";
const STATE_MAGIC: &[u8] = b"strata-mls-layer-v1";
/// Storage entries accepted on import.
const MAX_STORAGE_ENTRIES: usize = 4096;

/// Which kind of KeyPackage to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPackageKind {
    /// Deleted by openmls once a Welcome consumed it.
    OneTime,
    /// Kept after use: the `last_resort` extension (RFC 9420 extension 0x000a)
    /// and the matching `LastResort` leaf capability.
    LastResort,
}

/// What a call that needs the pair's group answers before there is one.
const NO_GROUP: CascadeError = CascadeError::NotReady {
    layer: MLS_ALGORITHM,
    why: "no group",
};

pub(crate) fn internal(e: impl fmt::Debug) -> CascadeError {
    CascadeError::internal(MLS_ALGORITHM, format!("{e:?}"))
}

pub(crate) fn sender_ratchet() -> SenderRatchetConfiguration {
    let tolerance = u32::try_from(MAX_SKIPPED_KEYS).unwrap_or(u32::MAX);
    let distance = u32::try_from(MAX_FORWARD_GAP).unwrap_or(u32::MAX);
    SenderRatchetConfiguration::new(tolerance, distance)
}

pub(crate) fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .sender_ratchet_configuration(sender_ratchet())
        .build()
}

pub(crate) fn clone_signer(s: &SignatureKeyPair) -> Result<SignatureKeyPair> {
    decode_signer(encode_signer(s)?.as_bytes())
}

/// The layer's MLS signer with its Ed25519 signing key parsed once.
/// `SignatureKeyPair::sign` rebuilds the key from its bytes on every call
/// (a SHA-512 and a base-point multiplication, about 7 % of a message
/// burst); the signatures are the same (Ed25519 is deterministic).
pub(crate) struct LayerSigner {
    pub(crate) pair: SignatureKeyPair,
    ed25519: Option<ed25519_dalek::SigningKey>,
}

impl LayerSigner {
    pub(crate) fn new(pair: SignatureKeyPair) -> Result<Self> {
        let ed25519 = match pair.signature_scheme() {
            SignatureScheme::ED25519 => {
                // The TLS encoding starts with the private key (a
                // length-prefixed vector): see `encode_signer`.
                let encoded = encode_signer(&pair)?;
                let mut rest = encoded.as_bytes();
                let private: zeroize::Zeroizing<Vec<u8>> =
                    zeroize::Zeroizing::new(VLBytes::tls_deserialize(&mut rest).map_err(internal)?.into());
                let mut seed: [u8; 32] = private
                    .as_slice()
                    .try_into()
                    .map_err(|_| CascadeError::CorruptState("MLS signature key"))?;
                let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                zeroize::Zeroize::zeroize(&mut seed);
                if key.verifying_key().as_bytes().as_slice() != pair.public() {
                    return Err(CascadeError::CorruptState("MLS signature key"));
                }
                Some(key)
            }
            _ => None,
        };
        Ok(Self { pair, ed25519 })
    }
}

impl Signer for LayerSigner {
    fn sign(&self, payload: &[u8]) -> std::result::Result<Vec<u8>, SignerError> {
        match &self.ed25519 {
            Some(key) => Ok(ed25519_dalek::Signer::sign(key, payload).to_bytes().to_vec()),
            None => self.pair.sign(payload),
        }
    }

    fn signature_scheme(&self) -> SignatureScheme {
        self.pair.signature_scheme()
    }
}

/// A copy of an openmls storage map: group secrets and private keys,
/// wiped when dropped.
#[derive(Default)]
pub(crate) struct StorageMap(HashMap<Vec<u8>, Vec<u8>>);

impl StorageMap {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self(HashMap::with_capacity(n))
    }

    /// The map itself, for the provider's storage; this wrapper is left
    /// empty.
    pub(crate) fn take(&mut self) -> HashMap<Vec<u8>, Vec<u8>> {
        std::mem::take(&mut self.0)
    }
}

impl std::ops::Deref for StorageMap {
    type Target = HashMap<Vec<u8>, Vec<u8>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for StorageMap {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for StorageMap {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Zeroizes every key and value of a storage map, leaving it empty.
pub(crate) fn wipe(map: &mut HashMap<Vec<u8>, Vec<u8>>) {
    for (mut k, mut v) in map.drain() {
        zeroize::Zeroize::zeroize(&mut k);
        zeroize::Zeroize::zeroize(&mut v);
    }
}

/// The MLS layer of one pair of installations.
pub struct MlsLayer {
    provider: OpenMlsRustCrypto,
    signer: LayerSigner,
    credential: CredentialWithKey,
    peer: PeerIdentity,
    group: Option<MlsGroup>,
    snapshot: Option<StorageMap>,
    exporter: Option<(u64, Secret32)>,
}

impl fmt::Debug for MlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MlsLayer")
            .field("peer", &self.peer.installation_id)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl Drop for MlsLayer {
    fn drop(&mut self) {
        // openmls's memory storage does not wipe what it held: the group's
        // epoch secrets and the KeyPackages' private keys.
        if let Ok(mut values) = self.provider.storage().values.write() {
            wipe(&mut values);
        }
    }
}

impl MlsLayer {
    /// A layer for `local` (its MLS signature key and bound credential)
    /// talking to `peer`. No group yet.
    pub fn new(local: &InstallationIdentity, peer: PeerIdentity) -> Result<Self> {
        Ok(Self {
            provider: OpenMlsRustCrypto::default(),
            signer: LayerSigner::new(clone_signer(local.mls_signer())?)?,
            credential: local.mls_credential(),
            peer,
            group: None,
            snapshot: None,
            exporter: None,
        })
    }

    /// A KeyPackage of `local` that no layer holds yet, and the storage
    /// entries with its private keys (for [`MlsLayer::with_key_package`]).
    pub(crate) fn detached_key_package(
        local: &InstallationIdentity,
        kind: KeyPackageKind,
        lifetime_secs: u64,
    ) -> Result<(Vec<u8>, StorageMap)> {
        // A scratch layer: only its storage (the KeyPackage's private keys)
        // is kept; the peer is irrelevant to building a KeyPackage.
        let mut layer = Self::new(local, local.peer_identity())?;
        let bytes = layer.key_package(kind, lifetime_secs)?;
        Ok((bytes, layer.storage_map()?))
    }

    /// Whether this layer's storage holds the private bundle of the
    /// KeyPackage `key_ref` (its RFC 9420 `KeyPackageRef`), that bundle is
    /// for that very package, and the package is this installation's (its
    /// leaf has this layer's signature key).
    pub(crate) fn holds_key_package(&self, key_ref: &[u8]) -> Result<bool> {
        let corrupt = |_| CascadeError::CorruptState("MLS KeyPackage reference");
        let encoded = VLBytes::from(key_ref).tls_serialize_detached().map_err(corrupt)?;
        let wanted = KeyPackageRef::tls_deserialize_exact(encoded).map_err(corrupt)?;
        let bundle: Option<KeyPackageBundle> = self
            .provider
            .storage()
            .key_package(&wanted)
            .map_err(|_| CascadeError::CorruptState("MLS KeyPackage bundle"))?;
        let Some(bundle) = bundle else {
            return Ok(false);
        };
        let actual = bundle
            .key_package()
            .hash_ref(self.provider.crypto())
            .map_err(internal)?;
        let own_key =
            bundle.key_package().leaf_node().signature_key().as_slice() == self.credential.signature_key.as_slice();
        Ok(actual == wanted && own_key)
    }

    /// A layer for `local` talking to `peer` that holds the private keys of
    /// a KeyPackage made by [`MlsLayer::detached_key_package`], so it can
    /// join a group from a Welcome for that KeyPackage.
    pub(crate) fn with_key_package(
        local: &InstallationIdentity,
        peer: PeerIdentity,
        entries: &StorageMap,
    ) -> Result<Self> {
        let layer = Self::new(local, peer)?;
        layer
            .provider
            .storage()
            .values
            .write()
            .map_err(|_| internal("storage lock"))?
            .extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(layer)
    }

    /// The group id (for `mls-commit` / `mls-welcome-ack` PDUs), once
    /// there is a group.
    pub fn group_id(&self) -> Option<Vec<u8>> {
        self.group.as_ref().map(|g| g.group_id().as_slice().to_vec())
    }

    /// The group's current epoch, once there is a group.
    pub fn epoch(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.epoch().as_u64())
    }

    /// A new KeyPackage (serialized `MLSMessage`), valid for `lifetime_secs`
    /// from now. Its private keys stay in this layer's storage.
    pub fn key_package(&mut self, kind: KeyPackageKind, lifetime_secs: u64) -> Result<Vec<u8>> {
        if lifetime_secs.saturating_add(3600) > MAX_KEY_PACKAGE_LIFETIME_SECS {
            return Err(CascadeError::InvalidArgument("KeyPackage lifetime over the maximum"));
        }
        let mut extensions = vec![ExtensionType::Unknown(GROUP_ADMINS_EXTENSION)];
        let mut builder = KeyPackage::builder().key_package_lifetime(Lifetime::new(lifetime_secs));
        if kind == KeyPackageKind::LastResort {
            extensions.push(ExtensionType::LastResort);
            builder = builder.mark_as_last_resort();
        }
        // Every package can join a group chat, whose context carries the
        // admin list (RFC 9420 §13.4: members must list it).
        let builder = builder.leaf_node_capabilities(Capabilities::builder().extensions(extensions).build());
        let bundle = builder
            .build(MLS_CIPHERSUITE, &self.provider, &self.signer, self.credential.clone())
            .map_err(internal)?;
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .map_err(internal)
    }

    /// Validates a received KeyPackage: encoding, signatures, current
    /// lifetime and ciphersuite (openmls), the maximum lifetime, and that
    /// its credential binds the leaf's signature key to the pinned peer.
    pub fn validate_key_package(&self, bytes: &[u8]) -> Result<KeyPackage> {
        validate_key_package_bytes(&self.provider, &self.peer, bytes)
    }

    /// Checks that a member's credential binds `signature_key` to the
    /// pinned peer identity and installation.
    fn check_member(&self, credential: openmls::prelude::Credential, signature_key: &[u8]) -> Result<()> {
        check_binding(&self.peer, credential, signature_key)
    }

    /// Initiator: creates the pair's group, adds the peer's KeyPackage
    /// (validated as in [`MlsLayer::validate_key_package`]) and returns the
    /// Welcome (serialized `MLSMessage`, ratchet tree included).
    pub fn create_group(&mut self, peer_key_package: &[u8]) -> Result<Vec<u8>> {
        if self.group.is_some() {
            return Err(CascadeError::InvalidArgument("the MLS group already exists"));
        }
        let kp = self.validate_key_package(peer_key_package)?;
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(MLS_CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .sender_ratchet_configuration(sender_ratchet())
            .build();
        let mut group =
            MlsGroup::new(&self.provider, &self.signer, &config, self.credential.clone()).map_err(internal)?;
        let (_commit, welcome, _info) = group
            .add_members(&self.provider, &self.signer, &[kp])
            .map_err(internal)?;
        group.merge_pending_commit(&self.provider).map_err(internal)?;
        self.group = Some(group);
        self.exporter = None;
        welcome.tls_serialize_detached().map_err(internal)
    }

    /// Responder: joins the group from the peer's Welcome, after checking
    /// that the group is exactly this installation and the pinned peer.
    pub fn join_group(&mut self, welcome: &[u8]) -> Result<()> {
        if self.group.is_some() {
            return Err(CascadeError::InvalidArgument("the MLS group already exists"));
        }
        let welcome = parse_welcome(welcome)?;
        let staged = StagedWelcome::new_from_welcome(&self.provider, &join_config(), welcome, None).map_err(|e| {
            CascadeError::PeerProtocol {
                layer: MLS_ALGORITHM,
                detail: e.to_string(),
            }
        })?;
        let own = staged.own_leaf_index();
        let members: Vec<_> = staged.members().collect();
        if members.len() != 2 {
            return Err(CascadeError::PeerProtocol {
                layer: MLS_ALGORITHM,
                detail: "pair group must have two members".into(),
            });
        }
        for m in members.into_iter().filter(|m| m.index != own) {
            self.check_member(m.credential, &m.signature_key)?;
        }
        let group = staged.into_group(&self.provider).map_err(internal)?;
        self.group = Some(group);
        self.exporter = None;
        Ok(())
    }

    /// Key rotation: commits a fresh leaf key (RFC 9420 update path) and
    /// moves this side to the next epoch. Returns the commit for the peer,
    /// who must process it ([`MlsLayer::process_commit`]) before it can read
    /// messages of the new epoch.
    pub fn self_update(&mut self) -> Result<Vec<u8>> {
        let group = self.group.as_mut().ok_or(NO_GROUP)?;
        let bundle = group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .map_err(internal)?;
        group.merge_pending_commit(&self.provider).map_err(internal)?;
        self.exporter = None;
        bundle.into_commit().tls_serialize_detached().map_err(internal)
    }

    /// Processes the peer's commit (from [`MlsLayer::self_update`]). Any
    /// new leaf it installs for the peer must still be bound to the pinned
    /// identity; otherwise nothing changes. Returns the new epoch.
    pub fn process_commit(&mut self, commit: &[u8]) -> Result<u64> {
        let message = MlsMessageIn::tls_deserialize_exact(commit)
            .map_err(|_| CascadeError::Malformed { what: "MLS commit" })?
            .try_into_protocol_message()
            .map_err(|_| CascadeError::Malformed { what: "MLS commit" })?;
        self.take_snapshot()?;
        let result = self.process_commit_inner(message);
        match result {
            Ok(epoch) => {
                self.commit();
                self.exporter = None;
                Ok(epoch)
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    fn process_commit_inner(&mut self, message: ProtocolMessage) -> Result<u64> {
        let processed = self.process_from_peer(message, "commit")?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(CascadeError::Malformed {
                what: "MLS message is not a commit",
            });
        };
        if staged.add_proposals().next().is_some() || staged.remove_proposals().next().is_some() {
            return Err(CascadeError::PeerProtocol {
                layer: MLS_ALGORITHM,
                detail: "membership change in the pair group".into(),
            });
        }
        if let Some(leaf) = staged.update_path_leaf_node() {
            let (credential, key) = (leaf.credential().clone(), leaf.signature_key().as_slice().to_vec());
            self.check_member(credential, &key)?;
        }
        for update in staged.update_proposals() {
            let leaf = update.update_proposal().leaf_node();
            let (credential, key) = (leaf.credential().clone(), leaf.signature_key().as_slice().to_vec());
            self.check_member(credential, &key)?;
        }
        let group = self.group.as_mut().ok_or(NO_GROUP)?;
        group.merge_staged_commit(&self.provider, *staged).map_err(internal)?;
        Ok(group.epoch().as_u64())
    }

    /// Processes `message` in the group, and refuses it unless the peer's
    /// leaf sent it (`what` names it in the error).
    fn process_from_peer(&mut self, message: ProtocolMessage, what: &str) -> Result<ProcessedMessage> {
        let group = self.group.as_mut().ok_or(NO_GROUP)?;
        let own = group.own_leaf_index();
        let processed = group
            .process_message(&self.provider, message)
            .map_err(map_process_error)?;
        if !matches!(processed.sender(), Sender::Member(i) if *i != own) {
            return Err(CascadeError::PeerProtocol {
                layer: MLS_ALGORITHM,
                detail: format!("{what} not from the peer's leaf"),
            });
        }
        Ok(processed)
    }

    fn group(&self) -> Result<&MlsGroup> {
        self.group.as_ref().ok_or(NO_GROUP)
    }

    /// The exporter secret of the current epoch (cached per epoch).
    fn exporter_secret(&mut self) -> Result<(u64, Secret32)> {
        let group = self.group()?;
        let epoch = group.epoch().as_u64();
        if let Some((e, s)) = &self.exporter
            && *e == epoch
        {
            return Ok((epoch, s.clone()));
        }
        let bytes = group
            .export_secret(self.provider.crypto(), EXPORTER_LABEL, group.group_id().as_slice(), 32)
            .map_err(internal)?;
        let secret = Secret32::from_slice(&bytes).ok_or_else(|| internal("exporter length"))?;
        let mut bytes = bytes;
        zeroize::Zeroize::zeroize(&mut bytes);
        self.exporter = Some((epoch, secret.clone()));
        Ok((epoch, secret))
    }

    /// RFC 9420 §8.5 `MLS-Exporter(label, context, 32)` of the current
    /// epoch, with the epoch. Both members derive the same value; anyone
    /// else, or a member at another epoch, cannot.
    pub(crate) fn export(&self, label: &str, context: &[u8]) -> Result<(u64, Secret32)> {
        let group = self.group()?;
        let mut bytes = group
            .export_secret(self.provider.crypto(), label, context, 32)
            .map_err(internal)?;
        let secret = Secret32::from_slice(&bytes).ok_or_else(|| internal("exporter length"));
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok((group.epoch().as_u64(), secret?))
    }

    /// The tie-break value of this pair session (54/WAKU2-X3DH-SESSIONS):
    /// `MLS-Exporter("strata/v1/pair/tie-break", group id, 32)` of the
    /// current epoch. Both members compute the same value and no one else
    /// can, nor choose it: of two sessions opened at once between the same
    /// two installations, both keep the one whose value comes first.
    /// Taken when the session is established (the epoch then is the same
    /// on both sides).
    pub fn tie_break(&self) -> Result<[u8; 32]> {
        let group = self.group()?;
        let (_, value) = self.export(TIE_BREAK_LABEL, group.group_id().as_slice())?;
        let mut out = [0u8; 32];
        out.copy_from_slice(value.expose());
        Ok(out)
    }

    fn storage_map(&self) -> Result<StorageMap> {
        let values = self
            .provider
            .storage()
            .values
            .read()
            .map_err(|_| internal("storage lock"))?;
        Ok(StorageMap(values.clone()))
    }

    fn take_snapshot(&mut self) -> Result<()> {
        self.snapshot = Some(self.storage_map()?);
        Ok(())
    }

    /// Reads back what [`Layer::export_state`] wrote.
    pub fn import_state(bytes: &[u8]) -> Result<Self> {
        let corrupt = |w| move |_| CascadeError::CorruptState(w);
        let mut r = Reader::new(bytes, STATE_MAGIC, "MLS layer")?;
        let signer = LayerSigner::new(decode_signer(r.bytes(1024)?)?)?;
        let public = signer.pair.public().to_vec();
        let credential = BasicCredential::new(r.bytes(1024)?.to_vec());
        let identity_key =
            libsignal_protocol_syft::IdentityKey::decode(r.bytes(64)?).map_err(corrupt("MLS peer identity"))?;
        let installation_id = crate::identity::InstallationId::from_bytes(r.array()?);
        let group_id = match r.u8()? {
            0 => None,
            _ => Some(GroupId::from_slice(r.bytes(256)?)),
        };
        let provider = read_storage(&mut r, MAX_STORAGE_ENTRIES)?;
        r.finish()?;
        let group = group_id.map(|id| load_group(&provider, &id)).transpose()?;
        Ok(Self {
            provider,
            signer,
            credential: CredentialWithKey {
                credential: credential.into(),
                signature_key: public.into(),
            },
            peer: PeerIdentity {
                identity_key,
                installation_id,
            },
            group,
            snapshot: None,
            exporter: None,
        })
    }
}

/// A received KeyPackage (serialized `MLSMessage`), parsed and checked
/// against `peer` ([`validate_received`]).
pub(crate) fn validate_key_package_bytes(
    provider: &OpenMlsRustCrypto,
    peer: &PeerIdentity,
    bytes: &[u8],
) -> Result<KeyPackage> {
    let msg =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| CascadeError::Malformed { what: "MLS KeyPackage" })?;
    let MlsMessageBodyIn::KeyPackage(kp_in) = msg.extract() else {
        return Err(CascadeError::Malformed {
            what: "MLS message is not a KeyPackage",
        });
    };
    validate_received(provider, peer, kp_in)
}

/// A received Welcome (serialized `MLSMessage`).
pub(crate) fn parse_welcome(bytes: &[u8]) -> Result<openmls::prelude::Welcome> {
    let msg =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| CascadeError::Malformed { what: "MLS Welcome" })?;
    let MlsMessageBodyIn::Welcome(welcome) = msg.extract() else {
        return Err(CascadeError::Malformed {
            what: "MLS message is not a Welcome",
        });
    };
    Ok(welcome)
}

/// Writes `provider`'s whole storage, sorted, read in place: a clone of
/// the storage map would be one more un-zeroized copy of the group's
/// secrets, and an allocation per entry, on every message.
pub(crate) fn write_storage(w: &mut Writer, provider: &OpenMlsRustCrypto) -> Result<()> {
    let map = provider.storage().values.read().map_err(|_| internal("storage lock"))?;
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort();
    w.reserve(4 + entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>());
    w.u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
    for (k, v) in entries {
        w.bytes(k).bytes(v);
    }
    Ok(())
}

/// A provider with the storage [`write_storage`] wrote (at most `max`
/// entries).
pub(crate) fn read_storage(r: &mut Reader<'_>, max: usize) -> Result<OpenMlsRustCrypto> {
    let n = r.count(max)?;
    let mut map = StorageMap::with_capacity(n);
    for _ in 0..n {
        let k = r.bytes(1 << 20)?.to_vec();
        let v = r.bytes(16 << 20)?.to_vec();
        map.insert(k, v);
    }
    let provider = OpenMlsRustCrypto::default();
    *provider
        .storage()
        .values
        .write()
        .map_err(|_| internal("storage lock"))? = map.take();
    Ok(provider)
}

/// Group `id` from `provider`'s storage.
pub(crate) fn load_group(provider: &OpenMlsRustCrypto, id: &GroupId) -> Result<MlsGroup> {
    MlsGroup::load(provider.storage(), id)
        .map_err(|_| CascadeError::CorruptState("MLS group"))?
        .ok_or(CascadeError::CorruptState("MLS group missing"))
}

/// Encoding aside, what [`MlsLayer::validate_key_package`] checks: openmls'
/// signature, lifetime and extension checks, the ciphersuite, the maximum
/// lifetime, and the binding of the leaf's signature key to `peer`.
pub(crate) fn validate_received(
    provider: &OpenMlsRustCrypto,
    peer: &PeerIdentity,
    kp_in: KeyPackageIn,
) -> Result<KeyPackage> {
    let kp = kp_in
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|_| CascadeError::KeyPackageRejected("signature, lifetime or extensions"))?;
    if kp.ciphersuite() != MLS_CIPHERSUITE {
        return Err(CascadeError::KeyPackageRejected("ciphersuite"));
    }
    let lifetime = kp.life_time();
    if lifetime.not_after().saturating_sub(lifetime.not_before()) > MAX_KEY_PACKAGE_LIFETIME_SECS {
        return Err(CascadeError::KeyPackageRejected("lifetime longer than the maximum"));
    }
    let leaf = kp.leaf_node();
    check_binding(peer, leaf.credential().clone(), leaf.signature_key().as_slice())?;
    Ok(kp)
}

/// Checks that a credential binds `signature_key` to `peer`'s pinned
/// identity key and installation.
fn check_binding(peer: &PeerIdentity, credential: openmls::prelude::Credential, signature_key: &[u8]) -> Result<()> {
    let basic =
        BasicCredential::try_from(credential).map_err(|_| CascadeError::BadBinding("not a basic credential"))?;
    let binding = MlsBinding::verify(basic.identity(), signature_key)?;
    if binding.identity_key != peer.identity_key || binding.installation_id != peer.installation_id {
        return Err(CascadeError::UntrustedIdentity);
    }
    Ok(())
}

/// A KeyPackage that passed [`verify_key_package`]: only that function
/// makes one, so holding one proves the check ran. Public data only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKeyPackage {
    installation_id: crate::identity::InstallationId,
    key_ref: Vec<u8>,
    init_key: Vec<u8>,
    not_after_s: u64,
    last_resort: bool,
    bytes: Vec<u8>,
}

impl VerifiedKeyPackage {
    /// The installation it belongs to (the peer it was checked against).
    pub fn installation_id(&self) -> crate::identity::InstallationId {
        self.installation_id
    }

    /// Its RFC 9420 `KeyPackageRef`.
    pub fn key_ref(&self) -> &[u8] {
        &self.key_ref
    }

    /// Its HPKE `init_key`.
    pub fn init_key(&self) -> &[u8] {
        &self.init_key
    }

    /// End of its lifetime, Unix seconds.
    pub fn not_after_s(&self) -> u64 {
        self.not_after_s
    }

    /// Whether it carries the `last_resort` extension.
    pub fn last_resort(&self) -> bool {
        self.last_resort
    }

    /// The serialized `MLSMessage`, exactly as received.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Checks a KeyPackage received from `peer` (serialized `MLSMessage`)
/// without an MLS layer: the same checks as
/// [`MlsLayer::validate_key_package`] (signatures, current lifetime,
/// ciphersuite, maximum lifetime, binding to `peer`). Stores keep only what
/// passed, so a forged or tampered package never reaches them.
pub fn verify_key_package(bytes: &[u8], peer: &PeerIdentity) -> Result<VerifiedKeyPackage> {
    let msg =
        MlsMessageIn::tls_deserialize_exact(bytes).map_err(|_| CascadeError::Malformed { what: "MLS KeyPackage" })?;
    let MlsMessageBodyIn::KeyPackage(kp_in) = msg.extract() else {
        return Err(CascadeError::Malformed {
            what: "MLS message is not a KeyPackage",
        });
    };
    let provider = OpenMlsRustCrypto::default();
    let kp = validate_received(&provider, peer, kp_in)?;
    let key_ref = kp.hash_ref(provider.crypto()).map_err(internal)?;
    Ok(VerifiedKeyPackage {
        installation_id: peer.installation_id,
        key_ref: key_ref.as_slice().to_vec(),
        init_key: kp.hpke_init_key().as_slice().to_vec(),
        not_after_s: kp.life_time().not_after(),
        last_resort: kp.last_resort(),
        bytes: bytes.to_vec(),
    })
}

pub(crate) fn map_process_error<E: fmt::Debug + fmt::Display>(e: ProcessMessageError<E>) -> CascadeError {
    match e {
        // openmls keeps its decryption error kinds private; tell them apart
        // by their (stable, documented) messages. The outer layers catch
        // replays and window violations first anyway.
        ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(d)) => {
            let text = d.to_string();
            if text.contains("deleted to preserve forward secrecy") {
                CascadeError::Replay { layer: MLS_ALGORITHM }
            } else if text.contains("too old") || text.contains("too far") {
                CascadeError::OutOfWindow { layer: MLS_ALGORITHM }
            } else {
                CascadeError::Authentication { layer: MLS_ALGORITHM }
            }
        }
        ProcessMessageError::ValidationError(ValidationError::InvalidSignature) => {
            CascadeError::Authentication { layer: MLS_ALGORITHM }
        }
        ProcessMessageError::ValidationError(ValidationError::WrongEpoch | ValidationError::NoPastEpochData) => {
            CascadeError::UnknownEpoch {
                layer: MLS_ALGORITHM,
                epoch: 0,
            }
        }
        ProcessMessageError::LibraryError(l) => internal(l),
        other => CascadeError::PeerProtocol {
            layer: MLS_ALGORITHM,
            detail: other.to_string(),
        },
    }
}

impl Layer for MlsLayer {
    fn info(&self) -> LayerInfo {
        LayerInfo {
            algorithm: MLS_ALGORITHM,
            version: MLS_VERSION,
        }
    }

    fn seal(&mut self, input: &[u8], _ctx: &mut LayerContext<'_>) -> Result<Sealed> {
        let (epoch, secret) = self.exporter_secret()?;
        self.take_snapshot()?;
        let group = self.group.as_mut().ok_or(NO_GROUP)?;
        let message = group
            .create_message(&self.provider, &self.signer, input)
            .map_err(internal)?;
        let output = message.tls_serialize_detached().map_err(internal)?;
        let mut params = LayerParameters::new();
        params.insert("epoch", ParamValue::Uint(epoch)).map_err(internal)?;
        Ok(Sealed {
            output,
            params,
            contribution: Some(Contribution::new(MLS_ALGORITHM, epoch, secret)),
        })
    }

    fn resolve(&mut self, params: &LayerParameters) -> Result<Option<Contribution>> {
        let epoch = params
            .uint("epoch")
            .ok_or(CascadeError::Malformed { what: "MLS epoch" })?;
        let (current, secret) = self.exporter_secret()?;
        if epoch != current {
            return Err(CascadeError::UnknownEpoch {
                layer: MLS_ALGORITHM,
                epoch,
            });
        }
        Ok(Some(Contribution::new(MLS_ALGORITHM, epoch, secret)))
    }

    fn open(&mut self, input: &[u8], params: &LayerParameters, _ctx: &mut LayerContext<'_>) -> Result<Vec<u8>> {
        let epoch = params
            .uint("epoch")
            .ok_or(CascadeError::Malformed { what: "MLS epoch" })?;
        let message = MlsMessageIn::tls_deserialize_exact(input)
            .map_err(|_| CascadeError::Malformed { what: "MLS message" })?
            .try_into_protocol_message()
            .map_err(|_| CascadeError::Malformed {
                what: "MLS protocol message",
            })?;
        if message.epoch().as_u64() != epoch {
            return Err(CascadeError::UnknownEpoch {
                layer: MLS_ALGORITHM,
                epoch,
            });
        }
        self.take_snapshot()?;
        match self.process_from_peer(message, "message")?.into_content() {
            ProcessedMessageContent::ApplicationMessage(m) => Ok(m.into_bytes()),
            _ => Err(CascadeError::PeerProtocol {
                layer: MLS_ALGORITHM,
                detail: "handshake message inside the cascade".into(),
            }),
        }
    }

    fn commit(&mut self) {
        self.snapshot = None;
    }

    fn abort(&mut self) {
        let Some(mut snapshot) = self.snapshot.take() else {
            return;
        };
        if let Ok(mut values) = self.provider.storage().values.write() {
            let mut replaced = std::mem::replace(&mut *values, snapshot.take());
            wipe(&mut replaced);
        }
        if let Some(id) = self.group.as_ref().map(|g| g.group_id().clone()) {
            // Reload the in-memory group from the restored storage.
            self.group = MlsGroup::load(self.provider.storage(), &id).ok().flatten();
        }
    }

    fn export_state(&self) -> Result<SecretBytes> {
        let mut w = Writer::new(STATE_MAGIC);
        w.bytes(encode_signer(&self.signer.pair)?.as_bytes());
        let basic = BasicCredential::try_from(self.credential.credential.clone()).map_err(internal)?;
        w.bytes(basic.identity());
        w.bytes(&self.peer.identity_key.serialize())
            .raw(self.peer.installation_id.as_bytes());
        match &self.group {
            None => w.u8(0),
            Some(g) => w.u8(1).bytes(g.group_id().as_slice()),
        };
        write_storage(&mut w, &self.provider)?;
        Ok(w.finish())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn the_cached_signer_signs_as_the_key_pair_does() {
        let mut rng = ChaCha20Rng::seed_from_u64(41);
        let local = InstallationIdentity::generate(crate::AccountIdentity::generate(&mut rng), &mut rng).unwrap();
        let signer = LayerSigner::new(clone_signer(local.mls_signer()).unwrap()).unwrap();
        assert!(signer.ed25519.is_some());
        for payload in [&b""[..], b"strata", &[7u8; 1000]] {
            assert_eq!(signer.sign(payload).unwrap(), local.mls_signer().sign(payload).unwrap());
        }
    }

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::identity::{AccountIdentity, InstallationIdentity};

    fn install(rng: &mut ChaCha20Rng) -> InstallationIdentity {
        InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    /// A KeyPackage from `owner` with an arbitrary lifetime, built with
    /// openmls directly (our own builder refuses long lifetimes).
    fn key_package_with_lifetime(owner: &InstallationIdentity, lifetime: Lifetime) -> Vec<u8> {
        let provider = OpenMlsRustCrypto::default();
        let bundle = KeyPackage::builder()
            .key_package_lifetime(lifetime)
            .build(MLS_CIPHERSUITE, &provider, owner.mls_signer(), owner.mls_credential())
            .unwrap();
        MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .unwrap()
    }

    #[test]
    fn key_package_lifetime_is_bounded_on_receipt() {
        let mut rng = ChaCha20Rng::seed_from_u64(20);
        let (alice, bob) = (install(&mut rng), install(&mut rng));
        let layer = MlsLayer::new(&alice, bob.peer_identity()).unwrap();
        let n = now();
        let at_max = Lifetime::init(n - 3600, n - 3600 + MAX_KEY_PACKAGE_LIFETIME_SECS);
        assert!(
            layer
                .validate_key_package(&key_package_with_lifetime(&bob, at_max))
                .is_ok()
        );
        let too_long = Lifetime::init(n - 3600, n - 3600 + MAX_KEY_PACKAGE_LIFETIME_SECS + 1);
        let err = layer
            .validate_key_package(&key_package_with_lifetime(&bob, too_long))
            .unwrap_err();
        assert!(matches!(
            err,
            CascadeError::KeyPackageRejected("lifetime longer than the maximum")
        ));
        // What ts-mls sends by default: 0 .. 2^63-1.
        let forever = Lifetime::init(0, (1 << 63) - 1);
        assert!(
            layer
                .validate_key_package(&key_package_with_lifetime(&bob, forever))
                .is_err()
        );
        // Expired ones are refused by openmls.
        let expired = Lifetime::init(n - 7200, n - 3600);
        assert!(
            layer
                .validate_key_package(&key_package_with_lifetime(&bob, expired))
                .is_err()
        );
        // Our own builder refuses to make an over-long one.
        let mut bob_layer = MlsLayer::new(&bob, alice.peer_identity()).unwrap();
        assert!(
            bob_layer
                .key_package(KeyPackageKind::OneTime, MAX_KEY_PACKAGE_LIFETIME_SECS)
                .is_err()
        );
    }

    #[test]
    fn last_resort_key_package_has_flag_and_capability() {
        let mut rng = ChaCha20Rng::seed_from_u64(21);
        let (alice, bob) = (install(&mut rng), install(&mut rng));
        let mut bob_layer = MlsLayer::new(&bob, alice.peer_identity()).unwrap();
        let alice_layer = MlsLayer::new(&alice, bob.peer_identity()).unwrap();
        let lr = bob_layer
            .key_package(KeyPackageKind::LastResort, DEFAULT_KEY_PACKAGE_LIFETIME_SECS)
            .unwrap();
        let kp = alice_layer.validate_key_package(&lr).unwrap();
        assert!(kp.last_resort());
        assert!(
            kp.leaf_node()
                .capabilities()
                .extensions()
                .contains(&ExtensionType::LastResort)
        );
        let one = bob_layer.key_package(KeyPackageKind::OneTime, 3600).unwrap();
        let kp = alice_layer.validate_key_package(&one).unwrap();
        assert!(!kp.last_resort());
        let life = kp.life_time();
        assert!(life.not_after() - life.not_before() <= 2 * 3600);
    }

    #[test]
    fn key_package_binding_is_checked() {
        let mut rng = ChaCha20Rng::seed_from_u64(22);
        let (alice, bob, carol) = (install(&mut rng), install(&mut rng), install(&mut rng));
        let mut bob_layer = MlsLayer::new(&bob, alice.peer_identity()).unwrap();
        let kp = bob_layer.key_package(KeyPackageKind::OneTime, 3600).unwrap();
        // Alice expecting Carol refuses Bob's (validly bound) package.
        let expecting_carol = MlsLayer::new(&alice, carol.peer_identity()).unwrap();
        assert!(matches!(
            expecting_carol.validate_key_package(&kp),
            Err(CascadeError::UntrustedIdentity)
        ));
        // A credential claiming Bob's identity over Carol's MLS key fails the
        // binding signature.
        let provider = OpenMlsRustCrypto::default();
        let forged = CredentialWithKey {
            credential: bob.mls_credential().credential,
            signature_key: carol.mls_signer().public().into(),
        };
        let bundle = KeyPackage::builder()
            .build(MLS_CIPHERSUITE, &provider, carol.mls_signer(), forged)
            .unwrap();
        let bytes = MlsMessageOut::from(bundle.key_package().clone())
            .tls_serialize_detached()
            .unwrap();
        let expecting_bob = MlsLayer::new(&alice, bob.peer_identity()).unwrap();
        assert!(matches!(
            expecting_bob.validate_key_package(&bytes),
            Err(CascadeError::BadBinding(_))
        ));
        // Tampered bytes.
        let mut bad = kp.clone();
        let i = bad.len() - 10;
        bad[i] ^= 1;
        assert!(expecting_bob.validate_key_package(&bad).is_err());
        assert!(expecting_bob.validate_key_package(&kp).is_ok());
    }

    #[test]
    fn welcome_from_an_unexpected_peer_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(23);
        let (alice, bob, carol) = (install(&mut rng), install(&mut rng), install(&mut rng));
        let mut carol_layer = MlsLayer::new(&carol, bob.peer_identity()).unwrap();
        let mut bob_layer = MlsLayer::new(&bob, alice.peer_identity()).unwrap();
        let kp = bob_layer.key_package(KeyPackageKind::LastResort, 3600).unwrap();
        let welcome = carol_layer.create_group(&kp).unwrap();
        assert!(matches!(
            bob_layer.join_group(&welcome),
            Err(CascadeError::UntrustedIdentity)
        ));
        assert!(bob_layer.epoch().is_none());
    }

    /// Both members of a pair session compute the same tie-break value;
    /// another session between the same two has another.
    #[test]
    fn both_members_share_the_tie_break_value() {
        let mut rng = ChaCha20Rng::seed_from_u64(24);
        let (alice, bob) = (install(&mut rng), install(&mut rng));
        let session = || {
            let mut a = MlsLayer::new(&alice, bob.peer_identity()).unwrap();
            let mut b = MlsLayer::new(&bob, alice.peer_identity()).unwrap();
            let kp = b.key_package(KeyPackageKind::OneTime, 3600).unwrap();
            let welcome = a.create_group(&kp).unwrap();
            b.join_group(&welcome).unwrap();
            (a, b)
        };
        let (a1, b1) = session();
        let (a2, b2) = session();
        assert!(MlsLayer::new(&alice, bob.peer_identity()).unwrap().tie_break().is_err());
        assert_eq!(a1.tie_break().unwrap(), b1.tie_break().unwrap());
        assert_eq!(a2.tie_break().unwrap(), b2.tie_break().unwrap());
        assert_ne!(a1.tie_break().unwrap(), a2.tie_break().unwrap());
    }
}
