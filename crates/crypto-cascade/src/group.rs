//! A group chat's MLS group (issue #17): one group per chat, ciphersuite
//! 0x0001, each member installation a leaf bound to its account identity
//! (the same credential binding as the pair layer's), members added from
//! KeyPackages their owners handed out (pool claims).
//!
//! **Members' own updates** go through an admin: [`GroupMls::propose_update`]
//! makes an Update proposal, the admin commits it
//! ([`GroupMls::commit_update`]), the other members process it before the
//! commit ([`GroupMls::process_commit_with`]).
//!
//! **Admins.** The group context carries the admin list in a private-use
//! extension ([`GROUP_ADMINS_EXTENSION`]: the admins' installation ids,
//! 16 bytes each), so every member agrees on it; the creator is the first
//! admin. Commits are the admins': a commit whose sender is not an admin
//! of the epoch it was made in is refused ([`CascadeError::PeerProtocol`])
//! and changes nothing, as is a commit for another epoch
//! ([`CascadeError::UnknownEpoch`]). An admin list never goes empty.
//!
//! **Group messages keep the cascade's post-quantum layer.** A group
//! message ([`GroupMls::seal`]) is an MLS application message wrapped in
//! AES-256-GCM under the epoch's [`GroupMessageKey`], from HKDF-SHA256 over
//! the epoch's MLS exporter secret salted with a [`GroupEpochSecret`]: 32
//! random bytes the
//! committer makes for each epoch and sends to each member through that
//! member's pairwise cascade (Signal PQXDH + ML-KEM). A removed member
//! gets neither the next epoch's MLS secrets nor its group secret. The
//! wire form is `epoch (8 bytes, big-endian) ‖ nonce (12 random bytes) ‖
//! AES-256-GCM(MLSMessage)`, the group id and epoch as associated data.
//!
//! **What this type is not.** It is the cryptographic group of one
//! member. Sequencing commits, carrying them (and Welcomes, proposals,
//! group secrets and catch-up) between members is the group machine of the
//! session crate (`strata_session::group`).

use std::fmt;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Credential, CredentialWithKey, Extension, ExtensionType, Extensions, GroupId, LeafNodeIndex,
    MlsGroup, MlsGroupCreateConfig, MlsMessageIn, MlsMessageOut, ProcessedMessageContent, ProcessedWelcome,
    RequiredCapabilitiesExtension, Sender, UnknownExtension,
};
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use rayon::iter::{IntoParallelRefIterator as _, ParallelIterator as _};

use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::identity::{
    InstallationId, InstallationIdentity, MLS_CIPHERSUITE, MlsBinding, PeerIdentity, decode_signer, encode_signer,
};
use crate::key_packages::KeyPackageSecrets;
use crate::layers::mls::{
    GROUP_ADMINS_EXTENSION, LayerSigner, MLS_ALGORITHM, clone_signer, internal, load_group, map_process_error,
    parse_welcome, read_storage, sender_ratchet, validate_key_package_bytes, wipe, write_storage,
};
use crate::secret::{Secret32, SecretBytes};

const STATE_MAGIC: &[u8] = b"strata-mls-group-v1";
/// Past epochs whose application messages still open (openmls keeps their
/// secrets): a message sent just before a commit still reaches members
/// that processed the commit first.
pub const MAX_PAST_EPOCHS: u64 = 4;
/// The exporter label of the group message key.
const GROUP_EXPORTER_LABEL: &str = "strata/v1/group/aes-256-gcm";
/// Epoch and nonce before a sealed group message's ciphertext.
const SEALED_HEADER: usize = 8 + 12;
/// Storage entries accepted on import (a few per member and epoch).
const MAX_STORAGE_ENTRIES: usize = 1 << 16;
/// Most admins of one group.
pub const MAX_ADMINS: usize = 64;

/// A 12-byte nonce as the schedule's (tag, counter) pair.
fn split_nonce(nonce: &[u8]) -> Result<([u8; 4], u64)> {
    let bad = || CascadeError::Malformed {
        what: "group message nonce",
    };
    let (tag, counter) = nonce.split_at_checked(4).ok_or_else(bad)?;
    let tag = <[u8; 4]>::try_from(tag).map_err(|_| bad())?;
    let counter = <[u8; 8]>::try_from(counter).map_err(|_| bad())?;
    Ok((tag, u64::from_be_bytes(counter)))
}

fn peer_error(detail: impl Into<String>) -> CascadeError {
    CascadeError::PeerProtocol {
        layer: MLS_ALGORITHM,
        detail: detail.into(),
    }
}

/// One member of a group: its installation, its account identity key and
/// its leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// The member installation.
    pub installation_id: InstallationId,
    /// Its account identity key, serialized (as the pair handshake carries it).
    pub identity_key: Vec<u8>,
    /// Its leaf index in the group's tree.
    pub leaf: u32,
}

/// A commit this member made, to send: the commit (serialized
/// `MLSMessage`) for the members, a Welcome for those it added, and the
/// epoch it moved to.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    /// For the other members ([`GroupMls::process_commit`]).
    pub commit: Vec<u8>,
    /// For the members it added ([`GroupMls::join`]), if any.
    pub welcome: Option<Vec<u8>>,
    /// The epoch after it.
    pub epoch: u64,
}

/// What a processed commit changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The admin that made it.
    pub committer: InstallationId,
    /// The epoch after it.
    pub epoch: u64,
    /// Members it added.
    pub added: Vec<InstallationId>,
    /// Members it removed.
    pub removed: Vec<InstallationId>,
    /// Whether it removed this member: the group is over for it.
    pub removed_us: bool,
}

/// A group message, decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPlaintext {
    /// The member that sent it.
    pub sender: InstallationId,
    /// The epoch it was sent in.
    pub epoch: u64,
    /// What it said.
    pub plaintext: Vec<u8>,
}

/// A group's secret for one epoch: 32 random bytes from the committer,
/// sent to every member through its pairwise cascade, mixed into the key
/// of every group message of the epoch. Zeroized on drop; `Debug` shows
/// no bytes.
#[derive(Clone, PartialEq)]
pub struct GroupEpochSecret(Secret32);

impl fmt::Debug for GroupEpochSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupEpochSecret([redacted])")
    }
}

impl GroupEpochSecret {
    /// A fresh secret.
    pub fn generate<R: rand::CryptoRng + rand::RngCore>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let secret = Self(Secret32::new(bytes));
        zeroize::Zeroize::zeroize(&mut bytes);
        secret
    }

    /// Reads one back (as received through a pairwise cascade).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Secret32::from_slice(bytes).map(Self).ok_or(CascadeError::Malformed {
            what: "group epoch secret",
        })
    }

    /// The bytes, to send through a pairwise cascade or seal at rest.
    pub fn to_bytes(&self) -> SecretBytes {
        SecretBytes::from_vec(self.0.expose().to_vec())
    }
}

/// The key of one epoch's group messages ([`GroupMls::message_key`]):
/// kept by the member for [`MAX_PAST_EPOCHS`] epochs so late messages
/// still open. Zeroized on drop; `Debug` shows no bytes.
#[derive(Clone, PartialEq)]
pub struct GroupMessageKey {
    epoch: u64,
    key: Secret32,
}

impl fmt::Debug for GroupMessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupMessageKey(epoch {}, [redacted])", self.epoch)
    }
}

impl GroupMessageKey {
    /// The epoch it belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The key's bytes and epoch, to seal at rest.
    pub fn to_bytes(&self) -> SecretBytes {
        let mut w = Writer::new(b"strata-group-key-v1");
        w.u64(self.epoch).raw(self.key.expose());
        w.finish()
    }

    /// Reads back [`GroupMessageKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, b"strata-group-key-v1", "group message key")?;
        let epoch = r.u64()?;
        let key = Secret32::new(r.array()?);
        r.finish()?;
        Ok(Self { epoch, key })
    }
}

/// One member's state of a group chat's MLS group.
pub struct GroupMls {
    provider: OpenMlsRustCrypto,
    signer: LayerSigner,
    credential: CredentialWithKey,
    local: InstallationId,
    group: MlsGroup,
}

impl fmt::Debug for GroupMls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupMls")
            .field("local", &self.local)
            .field("epoch", &self.epoch())
            .field("members", &self.group.members().count())
            .finish_non_exhaustive()
    }
}

impl Drop for GroupMls {
    fn drop(&mut self) {
        // openmls's memory storage does not wipe the epoch secrets.
        if let Ok(mut values) = self.provider.storage().values.write() {
            wipe(&mut values);
        }
    }
}

/// The admin extension's value: the admins' installation ids.
fn admins_extension(admins: &[InstallationId]) -> Result<Extensions<openmls::prelude::GroupContext>> {
    if admins.is_empty() || admins.len() > MAX_ADMINS {
        return Err(CascadeError::InvalidArgument("a group has 1 to 64 admins"));
    }
    let ids: Vec<u8> = admins.iter().flat_map(|a| *a.as_bytes()).collect();
    let required = RequiredCapabilitiesExtension::new(&[ExtensionType::Unknown(GROUP_ADMINS_EXTENSION)], &[], &[]);
    Extensions::from_vec(vec![
        Extension::RequiredCapabilities(required),
        Extension::Unknown(GROUP_ADMINS_EXTENSION, UnknownExtension(ids)),
    ])
    .map_err(internal)
}

/// The admin list of a group context's extensions.
fn admins_of(extensions: &Extensions<openmls::prelude::GroupContext>) -> Result<Vec<InstallationId>> {
    let ext = extensions
        .unknown(GROUP_ADMINS_EXTENSION)
        .ok_or_else(|| peer_error("group without an admin list"))?;
    if ext.0.is_empty() || !ext.0.len().is_multiple_of(16) || ext.0.len() / 16 > MAX_ADMINS {
        return Err(peer_error("malformed admin list"));
    }
    Ok(ext
        .0
        .chunks_exact(16)
        .filter_map(|c| <[u8; 16]>::try_from(c).ok())
        .map(InstallationId::from_bytes)
        .collect())
}

/// The installation and identity a member's credential binds its leaf's
/// signature key to, checked (the binding is signed by the account key):
/// for leaves entering the group.
fn member_of(credential: &openmls::prelude::Credential, signature_key: &[u8]) -> Result<(InstallationId, Vec<u8>)> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| CascadeError::BadBinding("not a basic credential"))?;
    let binding = MlsBinding::verify(basic.identity(), signature_key)?;
    Ok((binding.installation_id, binding.identity_key.serialize().to_vec()))
}

/// [`member_of`] for a leaf already in the group (checked as it entered):
/// parsed, not verified again.
fn known_member(credential: &openmls::prelude::Credential) -> Result<(InstallationId, Vec<u8>)> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|_| CascadeError::BadBinding("not a basic credential"))?;
    let binding = MlsBinding::parse(basic.identity())?;
    Ok((binding.installation_id, binding.identity_key.serialize().to_vec()))
}

impl GroupMls {
    /// A new group with `local` its only member and admin. `group_id` names
    /// the chat (random, chosen by the creator).
    pub fn create(local: &InstallationIdentity, group_id: &[u8]) -> Result<Self> {
        if group_id.is_empty() || group_id.len() > 256 {
            return Err(CascadeError::InvalidArgument("a group id is 1 to 256 bytes"));
        }
        let provider = OpenMlsRustCrypto::default();
        let signer = LayerSigner::new(clone_signer(local.mls_signer())?)?;
        let credential = local.mls_credential();
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(MLS_CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .sender_ratchet_configuration(sender_ratchet())
            .max_past_epochs(MAX_PAST_EPOCHS as usize)
            .capabilities(
                openmls::prelude::Capabilities::builder()
                    .extensions(vec![ExtensionType::Unknown(GROUP_ADMINS_EXTENSION)])
                    .build(),
            )
            .with_group_context_extensions(admins_extension(&[local.installation_id()])?)
            .build();
        let group = MlsGroup::new_with_group_id(
            &provider,
            &signer,
            &config,
            GroupId::from_slice(group_id),
            credential.clone(),
        )
        .map_err(internal)?;
        Ok(Self {
            provider,
            signer,
            credential,
            local: local.installation_id(),
            group,
        })
    }

    /// Joins from a Welcome made for one of `local`'s pooled KeyPackages,
    /// with that package's private parts (redeemed from the pool). Refuses
    /// a group without an admin list, and one whose members' credentials
    /// do not bind their leaves to their identities.
    pub fn join(local: &InstallationIdentity, secrets: &KeyPackageSecrets, welcome: &[u8]) -> Result<Self> {
        let (_, entries) = KeyPackageSecrets::parse(secrets.as_bytes())?;
        let provider = OpenMlsRustCrypto::default();
        provider
            .storage()
            .values
            .write()
            .map_err(|_| internal("storage lock"))?
            .extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        let welcome = parse_welcome(welcome)?;
        let config = openmls::prelude::MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .sender_ratchet_configuration(sender_ratchet())
            .max_past_epochs(MAX_PAST_EPOCHS as usize)
            .build();
        let processed =
            ProcessedWelcome::new_from_welcome(&provider, &config, welcome).map_err(|e| peer_error(e.to_string()))?;
        // One XEdDSA verification per member is as much work as openmls's
        // own check of the tree (one signature per leaf), so the two run
        // side by side, the bindings spread over the other cores. The
        // leaves checked are the tree's as received; the group is kept
        // only if openmls accepts that same tree and its leaves are exactly
        // these.
        let leaves: Vec<(Credential, Vec<u8>)> = processed
            .unverified_group_info()
            .extensions()
            .ratchet_tree()
            .ok_or_else(|| peer_error("Welcome without its ratchet tree"))?
            .ratchet_tree()
            .leaves()
            .map(|leaf| (leaf.credential().clone(), leaf.signature_key().as_slice().to_vec()))
            .collect();
        let (bound, staged) = rayon::join(
            || {
                leaves
                    .par_iter()
                    .try_for_each(|(credential, key)| member_of(credential, key).map(drop))
            },
            || processed.into_staged_welcome(&provider, None),
        );
        bound?;
        let staged = staged.map_err(|e| peer_error(e.to_string()))?;
        if !staged.members().map(|m| (m.credential, m.signature_key)).eq(leaves) {
            return Err(peer_error("the group's leaves are not the tree's"));
        }
        admins_of(staged.group_context().extensions())?;
        let group = staged.into_group(&provider).map_err(internal)?;
        Ok(Self {
            provider,
            signer: LayerSigner::new(clone_signer(local.mls_signer())?)?,
            credential: local.mls_credential(),
            local: local.installation_id(),
            group,
        })
    }

    /// The group id.
    pub fn group_id(&self) -> &[u8] {
        self.group.group_id().as_slice()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// The members, by leaf.
    pub fn members(&self) -> Result<Vec<GroupMember>> {
        self.group
            .members()
            .map(|m| {
                let (installation_id, identity_key) = known_member(&m.credential)?;
                Ok(GroupMember {
                    installation_id,
                    identity_key,
                    leaf: m.index.u32(),
                })
            })
            .collect()
    }

    /// The admins of the current epoch.
    pub fn admins(&self) -> Result<Vec<InstallationId>> {
        admins_of(self.group.extensions())
    }

    /// Whether `member` is an admin of the current epoch.
    pub fn is_admin(&self, member: InstallationId) -> Result<bool> {
        Ok(self.admins()?.contains(&member))
    }

    fn require_admin(&self) -> Result<()> {
        if self.is_admin(self.local)? {
            Ok(())
        } else {
            Err(CascadeError::InvalidArgument("only an admin commits"))
        }
    }

    /// Admin: adds the owners of `packages` (each a serialized KeyPackage
    /// with the identity it must be bound to, checked as the pair layer
    /// checks one). One commit; the Welcome is for all of them.
    pub fn add(&mut self, packages: &[(PeerIdentity, Vec<u8>)]) -> Result<GroupCommit> {
        self.require_admin()?;
        if packages.is_empty() {
            return Err(CascadeError::InvalidArgument("nobody to add"));
        }
        let present: Vec<InstallationId> = self.members()?.iter().map(|m| m.installation_id).collect();
        let mut checked = Vec::with_capacity(packages.len());
        for (peer, bytes) in packages {
            if present.contains(&peer.installation_id) {
                return Err(CascadeError::InvalidArgument("already a member"));
            }
            checked.push(validate_key_package_bytes(&self.provider, peer, bytes)?);
        }
        let (commit, welcome, _) = self
            .group
            .add_members(&self.provider, &self.signer, &checked)
            .map_err(internal)?;
        self.merge(commit, Some(welcome))
    }

    /// Admin: adds `member` again from a fresh KeyPackage of its own (a
    /// member behind beyond every commit log), its old leaf replaced in the
    /// same commit, so it stays in the admin list if it is there. The
    /// Welcome is for its new leaf.
    pub fn readd(&mut self, member: InstallationId, package: &(PeerIdentity, Vec<u8>)) -> Result<GroupCommit> {
        self.require_admin()?;
        if package.0.installation_id != member {
            return Err(CascadeError::InvalidArgument("a KeyPackage of another installation"));
        }
        if member == self.local {
            return Err(CascadeError::InvalidArgument("an admin cannot add itself again"));
        }
        let leaves = self.leaves_of(&[member])?;
        let checked = validate_key_package_bytes(&self.provider, &package.0, &package.1)?;
        let messages = self
            .group
            .swap_members(&self.provider, &self.signer, &leaves, &[checked])
            .map_err(internal)?;
        self.merge(messages.commit, Some(messages.welcome))
    }

    /// Admin: removes `members`. One commit.
    pub fn remove(&mut self, members: &[InstallationId]) -> Result<GroupCommit> {
        self.require_admin()?;
        let leaves = self.leaves_of(members)?;
        let (commit, welcome, _) = self
            .group
            .remove_members(&self.provider, &self.signer, &leaves)
            .map_err(internal)?;
        self.merge(commit, welcome)
    }

    /// Admin: replaces the admin list (handing the role over, or sharing
    /// it). Every admin must be a member.
    pub fn set_admins(&mut self, admins: &[InstallationId]) -> Result<GroupCommit> {
        self.require_admin()?;
        self.leaves_of(admins)?;
        let (commit, welcome, _) = self
            .group
            .update_group_context_extensions(&self.provider, admins_extension(admins)?, &self.signer)
            .map_err(internal)?;
        self.merge(commit, welcome)
    }

    /// Admin: a fresh leaf key for this member (RFC 9420 update path).
    pub fn self_update(&mut self) -> Result<GroupCommit> {
        self.require_admin()?;
        let bundle = self
            .group
            .self_update(
                &self.provider,
                &self.signer,
                openmls::prelude::LeafNodeParameters::default(),
            )
            .map_err(internal)?;
        self.merge(bundle.into_commit(), None)
    }

    /// A member's own key update (RFC 9420 Update proposal), for an admin
    /// to commit ([`GroupMls::commit_update`]). The new leaf's private key
    /// stays here until the commit arrives.
    pub fn propose_update(&mut self) -> Result<Vec<u8>> {
        let (message, _) = self
            .group
            .propose_self_update(
                &self.provider,
                &self.signer,
                openmls::prelude::LeafNodeParameters::default(),
            )
            .map_err(internal)?;
        message.tls_serialize_detached().map_err(internal)
    }

    /// Admin: commits a member's Update proposal (and nothing else). The
    /// other members process the proposal before the commit
    /// ([`GroupMls::process_commit_with`]); its proposer needs only the
    /// commit. A proposal that is not a member's update is refused and
    /// nothing changes.
    pub fn commit_update(&mut self, proposal: &[u8]) -> Result<GroupCommit> {
        self.require_admin()?;
        let result = self.store_update(proposal).and_then(|()| {
            let (commit, welcome, _) = self
                .group
                .commit_to_pending_proposals(&self.provider, &self.signer)
                .map_err(internal)?;
            self.merge(commit, welcome)
        });
        if result.is_err() {
            self.group
                .clear_pending_proposals(self.provider.storage())
                .map_err(internal)?;
        }
        result
    }

    /// Processes a member's Update proposal and keeps it for the commit.
    fn store_update(&mut self, proposal: &[u8]) -> Result<()> {
        let message = MlsMessageIn::tls_deserialize_exact(proposal)
            .map_err(|_| CascadeError::Malformed { what: "MLS proposal" })?
            .try_into_protocol_message()
            .map_err(|_| CascadeError::Malformed { what: "MLS proposal" })?;
        let processed = self
            .group
            .process_message(&self.provider, message)
            .map_err(map_process_error)?;
        let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
            return Err(peer_error("not a proposal"));
        };
        let openmls::prelude::Proposal::Update(update) = queued.proposal() else {
            return Err(peer_error("a proposal other than a member's update"));
        };
        let leaf = update.leaf_node();
        member_of(leaf.credential(), leaf.signature_key().as_slice())?;
        self.group
            .store_pending_proposal(self.provider.storage(), *queued)
            .map_err(internal)
    }

    /// [`GroupMls::process_commit`] of a commit that references member
    /// proposals: each is processed first. On any refusal nothing changes.
    pub fn process_commit_with(&mut self, proposals: &[Vec<u8>], commit: &[u8]) -> Result<CommitOutcome> {
        let mut result = Ok(());
        for proposal in proposals {
            result = self.store_update(proposal);
            if result.is_err() {
                break;
            }
        }
        let outcome = result.and_then(|()| self.process_commit(commit));
        if outcome.is_err() && !proposals.is_empty() {
            self.group
                .clear_pending_proposals(self.provider.storage())
                .map_err(internal)?;
        }
        outcome
    }

    fn leaves_of(&self, members: &[InstallationId]) -> Result<Vec<LeafNodeIndex>> {
        let all = self.members()?;
        members
            .iter()
            .map(|id| {
                all.iter()
                    .find(|m| m.installation_id == *id)
                    .map(|m| LeafNodeIndex::new(m.leaf))
                    .ok_or(CascadeError::InvalidArgument("not a member"))
            })
            .collect()
    }

    /// Merges our own pending commit and serializes what goes out.
    fn merge(&mut self, commit: MlsMessageOut, welcome: Option<MlsMessageOut>) -> Result<GroupCommit> {
        self.group.merge_pending_commit(&self.provider).map_err(internal)?;
        Ok(GroupCommit {
            commit: commit.tls_serialize_detached().map_err(internal)?,
            welcome: welcome
                .map(|w| w.tls_serialize_detached())
                .transpose()
                .map_err(internal)?,
            epoch: self.epoch(),
        })
    }

    /// Processes another member's commit: refused (nothing changes) unless
    /// it is for the current epoch, its sender is an admin of this epoch,
    /// it keeps an admin list of members, and every leaf it adds is bound
    /// to its identity.
    pub fn process_commit(&mut self, commit: &[u8]) -> Result<CommitOutcome> {
        let message = MlsMessageIn::tls_deserialize_exact(commit)
            .map_err(|_| CascadeError::Malformed { what: "MLS commit" })?
            .try_into_protocol_message()
            .map_err(|_| CascadeError::Malformed { what: "MLS commit" })?;
        if message.epoch().as_u64() != self.epoch() {
            return Err(CascadeError::UnknownEpoch {
                layer: MLS_ALGORITHM,
                epoch: message.epoch().as_u64(),
            });
        }
        let admins = self.admins()?;
        let before = self.members()?;
        let processed = self
            .group
            .process_message(&self.provider, message)
            .map_err(map_process_error)?;
        let Sender::Member(sender) = *processed.sender() else {
            return Err(peer_error("commit not from a member"));
        };
        let committer = before
            .iter()
            .find(|m| m.leaf == sender.u32())
            .map(|m| m.installation_id)
            .ok_or_else(|| peer_error("commit from an unknown leaf"))?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(CascadeError::Malformed {
                what: "MLS message is not a commit",
            });
        };
        // Refusing here drops the staged commit: the group stays as it was.
        if !admins.contains(&committer) {
            return Err(peer_error("commit from a member that is not an admin"));
        }
        let new_admins = admins_of(staged.group_context().extensions())?;
        let mut added = Vec::new();
        for add in staged.add_proposals() {
            let leaf = add.add_proposal().key_package().leaf_node();
            let (id, _) = member_of(leaf.credential(), leaf.signature_key().as_slice())?;
            added.push(id);
        }
        if let Some(leaf) = staged.update_path_leaf_node() {
            member_of(leaf.credential(), leaf.signature_key().as_slice())?;
        }
        for update in staged.update_proposals() {
            let leaf = update.update_proposal().leaf_node();
            member_of(leaf.credential(), leaf.signature_key().as_slice())?;
        }
        let removed: Vec<InstallationId> = staged
            .remove_proposals()
            .filter_map(|r| {
                let leaf = r.remove_proposal().removed().u32();
                before.iter().find(|m| m.leaf == leaf).map(|m| m.installation_id)
            })
            .collect();
        let remaining: Vec<InstallationId> = before
            .iter()
            .map(|m| m.installation_id)
            .filter(|id| !removed.contains(id))
            .chain(added.iter().copied())
            .collect();
        if !new_admins.iter().all(|a| remaining.contains(a)) {
            return Err(peer_error("an admin that is not a member"));
        }
        let removed_us = staged.self_removed();
        self.group
            .merge_staged_commit(&self.provider, *staged)
            .map_err(internal)?;
        Ok(CommitOutcome {
            committer,
            epoch: self.epoch(),
            added,
            removed,
            removed_us,
        })
    }

    /// An application message to the group (serialized `MLSMessage`,
    /// a `PrivateMessage` of the current epoch).
    fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let message = self
            .group
            .create_message(&self.provider, &self.signer, plaintext)
            .map_err(internal)?;
        message.tls_serialize_detached().map_err(internal)
    }

    /// Decrypts another member's application message.
    fn decrypt(&mut self, message: &[u8]) -> Result<GroupPlaintext> {
        let message = MlsMessageIn::tls_deserialize_exact(message)
            .map_err(|_| CascadeError::Malformed { what: "MLS message" })?
            .try_into_protocol_message()
            .map_err(|_| CascadeError::Malformed { what: "MLS message" })?;
        let epoch = message.epoch().as_u64();
        let processed = self
            .group
            .process_message(&self.provider, message)
            .map_err(map_process_error)?;
        if !matches!(processed.sender(), Sender::Member(_)) {
            return Err(peer_error("message not from a member"));
        }
        // The sender's leaf as of the message's epoch (a past one too).
        let sender = known_member(processed.credential())?.0;
        let ProcessedMessageContent::ApplicationMessage(app) = processed.into_content() else {
            return Err(peer_error("not an application message"));
        };
        Ok(GroupPlaintext {
            sender,
            epoch,
            plaintext: app.into_bytes(),
        })
    }

    /// A group message of the current epoch: `plaintext` as an MLS
    /// application message, wrapped in AES-256-GCM under `key`, this
    /// epoch's [`GroupMls::message_key`] (see the module docs).
    pub fn seal<R: rand::CryptoRng + rand::RngCore>(
        &mut self,
        plaintext: &[u8],
        key: &GroupMessageKey,
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        if key.epoch != self.epoch() {
            return Err(CascadeError::InvalidArgument("a message key of another epoch"));
        }
        let inner = self.encrypt(plaintext)?;
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let (tag, counter) = split_nonce(&nonce)?;
        let aad = self.message_aad(key.epoch);
        let sealed =
            crate::schedule::aead_seal(&key.key, tag, counter, &aad, &inner).ok_or_else(|| internal("AES-GCM"))?;
        let mut out = Vec::with_capacity(SEALED_HEADER + sealed.len());
        out.extend_from_slice(&key.epoch.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The epoch a sealed group message says it belongs to (to pick its
    /// key); unauthenticated until [`GroupMls::open`].
    pub fn sealed_epoch(sealed: &[u8]) -> Result<u64> {
        sealed
            .get(..8)
            .and_then(|e| <[u8; 8]>::try_from(e).ok())
            .map(u64::from_be_bytes)
            .ok_or(CascadeError::Malformed { what: "group message" })
    }

    /// Opens another member's group message with the key of its epoch (the
    /// current one or one of the [`MAX_PAST_EPOCHS`] before):
    /// [`CascadeError::UnknownEpoch`] when `key` is not of the message's
    /// epoch or that epoch is out of reach, [`CascadeError::Authentication`]
    /// when the outer layer does not verify; MLS then checks the sender and
    /// its own authentication.
    pub fn open(&mut self, sealed: &[u8], key: &GroupMessageKey) -> Result<GroupPlaintext> {
        let (header, ciphertext) = sealed
            .split_at_checked(SEALED_HEADER)
            .ok_or(CascadeError::Malformed { what: "group message" })?;
        let epoch = Self::sealed_epoch(header)?;
        if epoch != key.epoch || epoch > self.epoch() || self.epoch() - epoch > MAX_PAST_EPOCHS {
            return Err(CascadeError::UnknownEpoch {
                layer: MLS_ALGORITHM,
                epoch,
            });
        }
        let (tag, counter) = split_nonce(header.get(8..).unwrap_or_default())?;
        let inner = crate::schedule::aead_open(&key.key, tag, counter, &self.message_aad(epoch), ciphertext)
            .ok_or(CascadeError::Authentication { layer: "AES" })?;
        self.decrypt(&inner)
    }

    /// The key of the current epoch's group messages under the epoch's
    /// group `secret`: HKDF-SHA256 over the MLS exporter secret, salted
    /// with the group secret.
    pub fn message_key(&self, secret: &GroupEpochSecret) -> Result<GroupMessageKey> {
        let (epoch, exporter) = self.export_secret(GROUP_EXPORTER_LABEL, self.group_id())?;
        let prk = crate::schedule::extract(secret.0.expose(), exporter.expose());
        let key = crate::schedule::expand32(
            &prk,
            &[GROUP_EXPORTER_LABEL.as_bytes(), self.group_id(), &epoch.to_be_bytes()],
        )?;
        Ok(GroupMessageKey { epoch, key })
    }

    fn message_aad(&self, epoch: u64) -> Vec<u8> {
        let mut aad = self.group_id().to_vec();
        aad.extend_from_slice(&epoch.to_be_bytes());
        aad
    }

    /// RFC 9420 `MLS-Exporter(label, context, 32)` of the current epoch,
    /// with the epoch: every member at this epoch derives the same value.
    fn export_secret(&self, label: &str, context: &[u8]) -> Result<(u64, Secret32)> {
        let mut bytes = self
            .group
            .export_secret(self.provider.crypto(), label, context, 32)
            .map_err(internal)?;
        let secret = Secret32::from_slice(&bytes).ok_or_else(|| internal("exporter length"));
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok((self.epoch(), secret?))
    }

    /// The whole state (signer, credential, the openmls storage), to seal
    /// at rest.
    pub fn export_state(&self) -> Result<SecretBytes> {
        let mut w = Writer::new(STATE_MAGIC);
        w.bytes(encode_signer(&self.signer.pair)?.as_bytes());
        let basic = BasicCredential::try_from(self.credential.credential.clone()).map_err(internal)?;
        w.bytes(basic.identity()).raw(self.local.as_bytes());
        w.bytes(self.group_id());
        write_storage(&mut w, &self.provider)?;
        Ok(w.finish())
    }

    /// Reads back what [`GroupMls::export_state`] wrote.
    pub fn import_state(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, STATE_MAGIC, "MLS group")?;
        let signer = LayerSigner::new(decode_signer(r.bytes(1024)?)?)?;
        let public = signer.pair.public().to_vec();
        let credential = BasicCredential::new(r.bytes(1024)?.to_vec());
        let local = InstallationId::from_bytes(r.array()?);
        let group_id = GroupId::from_slice(r.bytes(256)?);
        let provider = read_storage(&mut r, MAX_STORAGE_ENTRIES)?;
        r.finish()?;
        let group = load_group(&provider, &group_id)?;
        Ok(Self {
            provider,
            signer,
            credential: CredentialWithKey {
                credential: credential.into(),
                signature_key: public.into(),
            },
            local,
            group,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::{AccountIdentity, KeyPackageKind, generate_key_package};

    struct Member {
        identity: InstallationIdentity,
        group: GroupMls,
    }

    fn installation(rng: &mut ChaCha20Rng) -> InstallationIdentity {
        InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
    }

    /// A group of `n` members, all added by the creator (member 0) in one
    /// commit and joined from its Welcome with their pooled packages'
    /// private parts.
    fn group(n: usize, rng: &mut ChaCha20Rng) -> Vec<Member> {
        let creator = installation(rng);
        let mut members = vec![Member {
            group: GroupMls::create(&creator, b"chat-1").unwrap(),
            identity: creator,
        }];
        let joiners: Vec<_> = (1..n).map(|_| installation(rng)).collect();
        let made: Vec<_> = joiners
            .iter()
            .map(|j| generate_key_package(j, KeyPackageKind::OneTime, 3600).unwrap())
            .collect();
        let packages: Vec<_> = joiners
            .iter()
            .zip(&made)
            .map(|(j, m)| (j.peer_identity(), m.package.bytes().to_vec()))
            .collect();
        let commit = members[0].group.add(&packages).unwrap();
        let welcome = commit.welcome.unwrap();
        for (identity, made) in joiners.into_iter().zip(made) {
            let group = GroupMls::join(&identity, &made.secrets, &welcome).unwrap();
            assert_eq!(group.epoch(), commit.epoch);
            members.push(Member { identity, group });
        }
        members
    }

    fn id(m: &Member) -> InstallationId {
        m.identity.installation_id()
    }

    /// Every member but `from` processes `commit`.
    fn apply(members: &mut [Member], from: usize, commit: &[u8]) {
        for (i, m) in members.iter_mut().enumerate() {
            if i != from {
                m.group.process_commit(commit).unwrap();
            }
        }
    }

    #[test]
    fn a_ten_member_group_forms_and_every_member_reads_every_other() {
        let mut rng = ChaCha20Rng::seed_from_u64(170);
        let mut members = group(10, &mut rng);
        let ids: Vec<InstallationId> = members.iter().map(id).collect();
        for m in &members {
            let listed: Vec<InstallationId> = m.group.members().unwrap().iter().map(|x| x.installation_id).collect();
            assert_eq!(listed.len(), 10);
            assert!(ids.iter().all(|i| listed.contains(i)));
            assert_eq!(m.group.admins().unwrap(), vec![ids[0]]);
        }
        let secret = GroupEpochSecret::generate(&mut rng);
        let keys: Vec<GroupMessageKey> = members.iter().map(|m| m.group.message_key(&secret).unwrap()).collect();
        assert!(keys.iter().all(|k| *k == keys[0]), "every member derives one key");
        let secret = keys[0].clone();
        for from in [0, 4, 9] {
            let sealed = members[from]
                .group
                .seal(format!("hi from {from}").as_bytes(), &secret, &mut rng)
                .unwrap();
            for (i, m) in members.iter_mut().enumerate().filter(|(i, _)| *i != from) {
                let got = m.group.open(&sealed, &secret).unwrap();
                assert_eq!(
                    (got.sender, got.plaintext.as_slice()),
                    (ids[from], format!("hi from {from}").as_bytes()),
                    "member {i}"
                );
            }
        }
        // The outer layer is keyed by the epoch secret too: without it,
        // nothing opens.
        let sealed = members[1].group.seal(b"x", &secret, &mut rng).unwrap();
        let wrong = members[2]
            .group
            .message_key(&GroupEpochSecret::generate(&mut rng))
            .unwrap();
        assert!(matches!(
            members[2].group.open(&sealed, &wrong),
            Err(CascadeError::Authentication { .. })
        ));
        for cut in [0, 7, SEALED_HEADER, sealed.len() - 1] {
            assert!(members[2].group.open(&sealed[..cut], &secret).is_err());
        }
    }

    /// A removed member that keeps all its state reads nothing sent after
    /// its removal, neither with the old epoch's secret nor by guessing the
    /// new one.
    #[test]
    fn a_removed_member_cannot_read_what_follows() {
        let mut rng = ChaCha20Rng::seed_from_u64(171);
        let mut members = group(4, &mut rng);
        let old_key = members[3]
            .group
            .message_key(&GroupEpochSecret::generate(&mut rng))
            .unwrap();
        let gone = id(&members[3]);
        let commit = members[0].group.remove(&[gone]).unwrap();
        for m in members.iter_mut().skip(1) {
            let outcome = m.group.process_commit(&commit.commit).unwrap();
            assert_eq!(outcome.removed, vec![gone]);
            assert_eq!(outcome.removed_us, id(m) == gone);
        }
        let new_secret = GroupEpochSecret::generate(&mut rng);
        let new_key = members[0].group.message_key(&new_secret).unwrap();
        let sealed = members[0].group.seal(b"after", &new_key, &mut rng).unwrap();
        assert_eq!(members[1].group.open(&sealed, &new_key).unwrap().plaintext, b"after");
        // Even handed the new key, the removed member's MLS state cannot
        // follow: it never got the epoch's secrets.
        for key in [&old_key, &new_key] {
            assert!(members[3].group.open(&sealed, key).is_err());
        }
        // Nor can it derive that key itself: its group is evicted.
        assert!(members[3].group.message_key(&new_secret).is_err());
        assert_eq!(members[1].group.members().unwrap().len(), 3);
    }

    /// A commit from a member that is not an admin, a replayed commit of a
    /// past epoch and garbage are refused and change nothing: the admin's
    /// next commit still applies everywhere.
    #[test]
    fn only_admins_commit_and_stale_commits_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(172);
        let mut members = group(4, &mut rng);
        // Member 2 forges a self-update commit, bypassing the admin check.
        let m2 = &mut members[2].group;
        let forged = m2
            .group
            .self_update(
                &m2.provider,
                &m2.signer,
                openmls::prelude::LeafNodeParameters::default(),
            )
            .unwrap()
            .into_commit()
            .tls_serialize_detached()
            .unwrap();
        assert!(matches!(m2.remove(&[]), Err(CascadeError::InvalidArgument(_))));
        let epoch = members[1].group.epoch();
        for i in [0, 1, 3] {
            let err = members[i].group.process_commit(&forged).unwrap_err();
            assert!(matches!(err, CascadeError::PeerProtocol { .. }), "{err}");
            assert_eq!(members[i].group.epoch(), epoch);
        }
        let m2 = &mut members[2].group;
        m2.group.clear_pending_commit(m2.provider.storage()).unwrap();
        // The admin's commit moves everyone on; replayed, it is stale.
        let commit = members[0].group.self_update().unwrap();
        apply(&mut members, 0, &commit.commit);
        for m in &members {
            assert_eq!(m.group.epoch(), commit.epoch);
        }
        let err = members[1].group.process_commit(&commit.commit).unwrap_err();
        assert!(matches!(err, CascadeError::UnknownEpoch { .. }), "{err}");
        assert!(members[1].group.process_commit(b"garbage").is_err());
        let secret = members[3]
            .group
            .message_key(&GroupEpochSecret::generate(&mut rng))
            .unwrap();
        let sealed = members[3].group.seal(b"still one group", &secret, &mut rng).unwrap();
        for m in members.iter_mut().take(3) {
            assert_eq!(m.group.open(&sealed, &secret).unwrap().plaintext, b"still one group");
        }
    }

    /// The admin hands the role over: the new admin commits, the old one
    /// cannot any more.
    /// A message sealed just before a commit still opens at members that
    /// processed the commit first (up to MAX_PAST_EPOCHS back), with its
    /// own epoch's key; beyond that, it is out of reach.
    #[test]
    fn late_messages_of_past_epochs_still_open() {
        let mut rng = ChaCha20Rng::seed_from_u64(175);
        let mut members = group(3, &mut rng);
        let key0 = members[0]
            .group
            .message_key(&GroupEpochSecret::generate(&mut rng))
            .unwrap();
        let late = members[2].group.seal(b"sent at epoch 1", &key0, &mut rng).unwrap();
        assert_eq!(GroupMls::sealed_epoch(&late).unwrap(), key0.epoch());
        let commit = members[0].group.self_update().unwrap();
        members[1].group.process_commit(&commit.commit).unwrap();
        assert_eq!(
            members[1].group.open(&late, &key0).unwrap().plaintext,
            b"sent at epoch 1"
        );
        let key1 = members[1]
            .group
            .message_key(&GroupEpochSecret::generate(&mut rng))
            .unwrap();
        assert!(matches!(
            members[1].group.open(&late, &key1),
            Err(CascadeError::UnknownEpoch { .. })
        ));
        members[2].group.process_commit(&commit.commit).unwrap();
        let late = members[2].group.seal(b"epoch 2", &key1, &mut rng).unwrap();
        for _ in 0..=MAX_PAST_EPOCHS {
            let commit = members[0].group.self_update().unwrap();
            members[1].group.process_commit(&commit.commit).unwrap();
        }
        assert!(matches!(
            members[1].group.open(&late, &key1),
            Err(CascadeError::UnknownEpoch { .. })
        ));
    }

    /// A member updates its own key: it proposes, the admin commits, the
    /// others process the proposal then the commit, the proposer the commit
    /// alone; one epoch, and messages flow. A proposal that is not a
    /// member's update is refused and changes nothing.
    #[test]
    fn a_member_updates_its_key_through_the_admin() {
        let mut rng = ChaCha20Rng::seed_from_u64(176);
        let mut members = group(4, &mut rng);
        let proposal = members[2].group.propose_update().unwrap();
        let commit = members[0].group.commit_update(&proposal).unwrap();
        for i in [1, 3] {
            members[i]
                .group
                .process_commit_with(std::slice::from_ref(&proposal), &commit.commit)
                .unwrap();
        }
        members[2].group.process_commit(&commit.commit).unwrap();
        for m in &members {
            assert_eq!(m.group.epoch(), commit.epoch);
        }
        let key = members[0]
            .group
            .message_key(&GroupEpochSecret::generate(&mut rng))
            .unwrap();
        let sealed = members[2].group.seal(b"fresh leaf", &key, &mut rng).unwrap();
        assert_eq!(members[3].group.open(&sealed, &key).unwrap().plaintext, b"fresh leaf");

        // A member's remove proposal is not an update: refused, unchanged.
        let m3 = &mut members[3].group;
        let leaf = m3
            .group
            .members()
            .find(|m| m.index.u32() != m3.group.own_leaf_index().u32())
            .unwrap()
            .index;
        let (remove, _) = m3.group.propose_remove_member(&m3.provider, &m3.signer, leaf).unwrap();
        let remove = remove.tls_serialize_detached().unwrap();
        let epoch = members[0].group.epoch();
        assert!(members[0].group.commit_update(&remove).is_err());
        assert_eq!(members[0].group.epoch(), epoch);
        let commit = members[0].group.self_update().unwrap();
        for i in [1, 2] {
            members[i].group.process_commit(&commit.commit).unwrap();
        }
    }

    #[test]
    fn the_admin_role_is_handed_over() {
        let mut rng = ChaCha20Rng::seed_from_u64(173);
        let mut members = group(3, &mut rng);
        let next = id(&members[1]);
        let commit = members[0].group.set_admins(&[next]).unwrap();
        apply(&mut members, 0, &commit.commit);
        for m in &members {
            assert_eq!(m.group.admins().unwrap(), vec![next]);
        }
        assert!(matches!(
            members[0].group.self_update(),
            Err(CascadeError::InvalidArgument(_))
        ));
        let gone = id(&members[2]);
        let commit = members[1].group.remove(&[gone]).unwrap();
        assert_eq!(members[0].group.process_commit(&commit.commit).unwrap().committer, next);
        // An admin list must name members.
        let stranger = installation(&mut rng).installation_id();
        assert!(members[1].group.set_admins(&[stranger]).is_err());
        assert!(members[1].group.set_admins(&[]).is_err());
    }

    /// A member that missed commits is added again: its old leaf replaced
    /// by a fresh one in one commit, it joins from the Welcome and reads
    /// and is read as before; its old state is left behind.
    #[test]
    fn a_member_behind_is_added_again() {
        let mut rng = ChaCha20Rng::seed_from_u64(176);
        let mut members = group(4, &mut rng);
        let missed = members[0].group.self_update().unwrap();
        for m in &mut members[1..3] {
            m.group.process_commit(&missed.commit).unwrap();
        }
        let behind = id(&members[3]);
        let made = generate_key_package(&members[3].identity, KeyPackageKind::OneTime, 3600).unwrap();
        let package = (members[3].identity.peer_identity(), made.package.bytes().to_vec());
        let other = id(&members[1]);
        assert!(members[0].group.readd(other, &package).is_err(), "another's package");
        let commit = members[0].group.readd(behind, &package).unwrap();
        for m in &mut members[1..3] {
            let outcome = m.group.process_commit(&commit.commit).unwrap();
            assert_eq!((outcome.added, outcome.removed), (vec![behind], vec![behind]));
        }
        assert!(
            members[3].group.process_commit(&commit.commit).is_err(),
            "the old state is behind"
        );
        members[3].group = GroupMls::join(&members[3].identity, &made.secrets, &commit.welcome.unwrap()).unwrap();
        assert_eq!(members[3].group.epoch(), commit.epoch);
        assert_eq!(members[3].group.members().unwrap().len(), 4);
        let key = members[0]
            .group
            .message_key(&GroupEpochSecret::generate(&mut rng))
            .unwrap();
        let sealed = members[3].group.seal(b"back", &key, &mut rng).unwrap();
        let got = members[1].group.open(&sealed, &key).unwrap();
        assert_eq!((got.sender, got.plaintext.as_slice()), (behind, b"back".as_slice()));
        let sealed = members[2].group.seal(b"welcome back", &key, &mut rng).unwrap();
        assert_eq!(members[3].group.open(&sealed, &key).unwrap().plaintext, b"welcome back");
    }

    /// An admin that bypasses its own checks and adds a leaf claiming
    /// another member's installation (its credential copied, the
    /// signature key the admin's own) cannot get a joiner to accept the
    /// group: the joiner checks every leaf's binding.
    #[test]
    fn a_joiner_refuses_a_tree_with_an_impostor_leaf() {
        use openmls::prelude::{Capabilities, KeyPackage, MlsMessageBodyIn, ProtocolVersion};
        use openmls_basic_credential::SignatureKeyPair;

        let mut rng = ChaCha20Rng::seed_from_u64(175);
        let mut members = group(3, &mut rng);
        let copied = members[1].identity.mls_credential().credential;
        let admin = &mut members[0].group;
        let impostor_signer = SignatureKeyPair::new(MLS_CIPHERSUITE.signature_algorithm()).unwrap();
        let impostor = KeyPackage::builder()
            .leaf_node_capabilities(
                Capabilities::builder()
                    .extensions(vec![ExtensionType::Unknown(GROUP_ADMINS_EXTENSION)])
                    .build(),
            )
            .build(
                MLS_CIPHERSUITE,
                &admin.provider,
                &impostor_signer,
                CredentialWithKey {
                    credential: copied,
                    signature_key: impostor_signer.public().into(),
                },
            )
            .unwrap()
            .key_package()
            .clone();
        let joiner = installation(&mut rng);
        let made = generate_key_package(&joiner, KeyPackageKind::OneTime, 3600).unwrap();
        let MlsMessageBodyIn::KeyPackage(honest) = MlsMessageIn::tls_deserialize_exact(made.package.bytes())
            .unwrap()
            .extract()
        else {
            panic!("not a KeyPackage");
        };
        let honest = honest
            .validate(admin.provider.crypto(), ProtocolVersion::Mls10)
            .unwrap();
        let (_, welcome, _) = admin
            .group
            .add_members(&admin.provider, &admin.signer, &[impostor, honest])
            .unwrap();
        admin.group.merge_pending_commit(&admin.provider).unwrap();
        let welcome = welcome.tls_serialize_detached().unwrap();
        assert!(matches!(
            GroupMls::join(&joiner, &made.secrets, &welcome),
            Err(CascadeError::BadBinding(_))
        ));
    }

    /// The state survives export and import mid-conversation; damaged
    /// state is a typed error.
    #[test]
    fn state_round_trips() {
        let mut rng = ChaCha20Rng::seed_from_u64(174);
        let mut members = group(3, &mut rng);
        let secret = members[0]
            .group
            .message_key(&GroupEpochSecret::generate(&mut rng))
            .unwrap();
        let first = members[1].group.seal(b"one", &secret, &mut rng).unwrap();
        members[2].group.open(&first, &secret).unwrap();
        let saved = members[2].group.export_state().unwrap();
        members[2].group = GroupMls::import_state(saved.as_bytes()).unwrap();
        let second = members[1].group.seal(b"two", &secret, &mut rng).unwrap();
        assert_eq!(members[2].group.open(&second, &secret).unwrap().plaintext, b"two");
        let commit = members[0].group.self_update().unwrap();
        members[2].group.process_commit(&commit.commit).unwrap();
        let key = GroupMessageKey::from_bytes(secret.to_bytes().as_bytes()).unwrap();
        assert_eq!(key, secret);
        let bytes = saved.as_bytes();
        for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(GroupMls::import_state(&bytes[..cut]).is_err());
        }
    }
}
