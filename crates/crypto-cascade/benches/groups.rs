//! Group chats against openmls alone, measured in the same run (issue
//! #17's bench targets):
//!
//! - **adding a member** to a group of N = 10, 100, 250: the admin's
//!   commit and Welcome (with the KeyPackage check), the joiner's join, and
//!   one existing member's processing of the commit — against openmls's
//!   KeyPackage parsing and `validate`, `add_members` + merge,
//!   `StagedWelcome` + `into_group`, and `process_message` + merge of the
//!   same: both start from the KeyPackage, Welcome and commit as bytes off
//!   the wire (target ≤ 1.5×);
//! - **a group message** at N = 100: `GroupMls::seal` and one member's
//!   `open` (MLS plus the AES-256-GCM layer and the admin and binding
//!   checks) against openmls's `create_message` and `process_message`
//!   (target ≤ 1.3×).
//!
//! The openmls groups are set up as Strata's are, so the ratio is what
//! Strata adds to the same MLS work: the same ciphersuite, the ratchet
//! tree in the Welcome, [`MAX_PAST_EPOCHS`] past epochs kept for late
//! messages, and credentials as long as Strata's (openmls keeps every
//! member's credential for each past epoch and writes them at every
//! commit, so both settings are part of the work).
//!
//! With `STRATA_BENCH_PARTS` set, each sample also prints the admin's,
//! the joiner's and the member's parts.
//!
//! Medians of `STRATA_BENCH_SAMPLES` (default 20) runs.
//!
//! `cargo bench -p strata-cascade --bench groups`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::time::Instant;

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::group::{GroupEpochSecret, GroupMls, MAX_PAST_EPOCHS};
use strata_cascade::{AccountIdentity, InstallationIdentity, KeyPackageKind, generate_key_package};
use strata_test_support::bench::{knob, median};

const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// The length of a Strata member's credential identity (checked in
/// `main` against a real one).
const STRATA_CREDENTIAL_LEN: usize = 114;

fn micros(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

// ---- openmls alone ----------------------------------------------------------

struct Plain {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl Plain {
    /// A member whose credential is as long as a Strata member's: openmls
    /// keeps every member's credential for each past epoch and writes them
    /// at every commit, so their length is part of the work.
    fn new(n: usize) -> Self {
        let signer = SignatureKeyPair::new(SUITE.signature_algorithm()).unwrap();
        let mut identity = format!("member-{n}").into_bytes();
        identity.resize(STRATA_CREDENTIAL_LEN, 0);
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity).into(),
            signature_key: signer.public().into(),
        };
        Self {
            provider: OpenMlsRustCrypto::default(),
            signer,
            credential,
        }
    }

    fn key_package(&self) -> KeyPackage {
        KeyPackage::builder()
            .build(SUITE, &self.provider, &self.signer, self.credential.clone())
            .unwrap()
            .key_package()
            .clone()
    }
}

fn plain_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(SUITE)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS as usize)
        .build()
}

fn plain_join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS as usize)
        .build()
}

/// An openmls group of `n`: the admin's and one other member's groups.
fn plain_group(n: usize) -> (Plain, MlsGroup, Plain, MlsGroup) {
    let admin = Plain::new(0);
    let mut group = MlsGroup::new(
        &admin.provider,
        &admin.signer,
        &plain_config(),
        admin.credential.clone(),
    )
    .unwrap();
    let members: Vec<Plain> = (1..n).map(Plain::new).collect();
    let packages: Vec<KeyPackage> = members.iter().map(Plain::key_package).collect();
    let (_, welcome, _) = group.add_members(&admin.provider, &admin.signer, &packages).unwrap();
    group.merge_pending_commit(&admin.provider).unwrap();
    let member = members.into_iter().next().unwrap();
    let welcome = welcome_in(&welcome);
    let joined = StagedWelcome::new_from_welcome(&member.provider, &plain_join_config(), welcome, None)
        .unwrap()
        .into_group(&member.provider)
        .unwrap();
    (admin, group, member, joined)
}

fn welcome_in(out: &MlsMessageOut) -> Welcome {
    let bytes = out.tls_serialize_detached().unwrap();
    match MlsMessageIn::tls_deserialize_exact(bytes).unwrap().extract() {
        MlsMessageBodyIn::Welcome(w) => w,
        _ => panic!("not a Welcome"),
    }
}

fn protocol_in(out: &MlsMessageOut) -> ProtocolMessage {
    let bytes = out.tls_serialize_detached().unwrap();
    MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .try_into_protocol_message()
        .unwrap()
}

/// Adds one member to the openmls group: commit, Welcome, join, one
/// member's processing.
fn plain_add(admin: &Plain, group: &mut MlsGroup, member: &Plain, other: &mut MlsGroup, k: usize) -> f64 {
    let joiner = Plain::new(10_000 + k);
    let bytes = MlsMessageOut::from(joiner.key_package())
        .tls_serialize_detached()
        .unwrap();
    let t = Instant::now();
    // From the wire, as Strata's admin gets it: parsed and validated.
    let MlsMessageBodyIn::KeyPackage(package) = MlsMessageIn::tls_deserialize_exact(bytes).unwrap().extract() else {
        panic!("not a KeyPackage");
    };
    let package = package
        .validate(admin.provider.crypto(), ProtocolVersion::Mls10)
        .unwrap();
    let (commit, welcome, _) = group.add_members(&admin.provider, &admin.signer, &[package]).unwrap();
    group.merge_pending_commit(&admin.provider).unwrap();
    let t1 = micros(t);
    let welcome = welcome_in(&welcome);
    StagedWelcome::new_from_welcome(&joiner.provider, &plain_join_config(), welcome, None)
        .unwrap()
        .into_group(&joiner.provider)
        .unwrap();
    let t2 = micros(t);
    let processed = other.process_message(&member.provider, protocol_in(&commit)).unwrap();
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        panic!("not a commit");
    };
    other.merge_staged_commit(&member.provider, *staged).unwrap();
    if std::env::var_os("STRATA_BENCH_PARTS").is_some() {
        println!(
            "  openmls parts: add {t1:.0} join {:.0} process {:.0}",
            t2 - t1,
            micros(t) - t2
        );
    }
    micros(t)
}

// ---- Strata -----------------------------------------------------------------

fn installation(rng: &mut ChaCha20Rng) -> InstallationIdentity {
    InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
}

/// A Strata group of `n`: the admin's and one other member's.
fn strata_group(n: usize, rng: &mut ChaCha20Rng) -> (GroupMls, GroupMls) {
    let admin = installation(rng);
    let mut group = GroupMls::create(&admin, b"bench-group").unwrap();
    let members: Vec<_> = (1..n).map(|_| installation(rng)).collect();
    let made: Vec<_> = members
        .iter()
        .map(|m| generate_key_package(m, KeyPackageKind::OneTime, 3600).unwrap())
        .collect();
    let packages: Vec<_> = members
        .iter()
        .zip(&made)
        .map(|(m, k)| (m.peer_identity(), k.package.bytes().to_vec()))
        .collect();
    let commit = group.add(&packages).unwrap();
    let other = GroupMls::join(&members[0], &made[0].secrets, &commit.welcome.unwrap()).unwrap();
    (group, other)
}

fn strata_add(group: &mut GroupMls, other: &mut GroupMls, rng: &mut ChaCha20Rng) -> f64 {
    let joiner = installation(rng);
    let made = generate_key_package(&joiner, KeyPackageKind::OneTime, 3600).unwrap();
    let package = (joiner.peer_identity(), made.package.bytes().to_vec());
    let t = Instant::now();
    let commit = group.add(&[package]).unwrap();
    let t1 = micros(t);
    GroupMls::join(&joiner, &made.secrets, &commit.welcome.unwrap()).unwrap();
    let t2 = micros(t);
    other.process_commit(&commit.commit).unwrap();
    if std::env::var_os("STRATA_BENCH_PARTS").is_some() {
        println!("  parts: add {t1:.0} join {:.0} process {:.0}", t2 - t1, micros(t) - t2);
    }
    micros(t)
}

fn main() {
    let samples: usize = knob("STRATA_BENCH_SAMPLES", 20);
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let made = generate_key_package(&installation(&mut rng), KeyPackageKind::OneTime, 3600).unwrap();
    let MlsMessageBodyIn::KeyPackage(package) = MlsMessageIn::tls_deserialize_exact(made.package.bytes())
        .unwrap()
        .extract()
    else {
        panic!("not a KeyPackage");
    };
    let credential = BasicCredential::try_from(package.unverified_credential().credential).unwrap();
    assert_eq!(
        credential.identity().len(),
        STRATA_CREDENTIAL_LEN,
        "the baseline's credentials"
    );
    for n in [10, 100, 250] {
        let (admin, mut group, member, mut other) = plain_group(n);
        let (mut s_group, mut s_other) = strata_group(n, &mut rng);
        // Alternated, so both see the same load on a shared machine.
        let (plain, strata): (Vec<f64>, Vec<f64>) = (0..samples)
            .map(|k| {
                (
                    plain_add(&admin, &mut group, &member, &mut other, k),
                    strata_add(&mut s_group, &mut s_other, &mut rng),
                )
            })
            .unzip();
        let (plain, strata) = (median(plain), median(strata));
        println!(
            "group/add a member at N = {n}: Strata {strata:.0} µs, openmls {plain:.0} µs = {:.2}× (target ≤ 1.5×)",
            strata / plain
        );
    }

    let n = 100;
    let (admin, mut group, member, mut other) = plain_group(n);
    let payload = vec![7u8; 256];
    let plain = median(
        (0..samples * 10)
            .map(|_| {
                let t = Instant::now();
                let message = group.create_message(&admin.provider, &admin.signer, &payload).unwrap();
                other.process_message(&member.provider, protocol_in(&message)).unwrap();
                micros(t)
            })
            .collect(),
    );
    let (mut group, mut other) = strata_group(n, &mut rng);
    let key = group.message_key(&GroupEpochSecret::generate(&mut rng)).unwrap();
    let strata = median(
        (0..samples * 10)
            .map(|_| {
                let t = Instant::now();
                let sealed = group.seal(&payload, &key, &mut rng).unwrap();
                other.open(&sealed, &key).unwrap();
                micros(t)
            })
            .collect(),
    );
    println!(
        "group/message of 256 B at N = {n}, sealed and opened: Strata {strata:.0} µs, openmls {plain:.0} µs = {:.2}× (target ≤ 1.3×)",
        strata / plain
    );
}
