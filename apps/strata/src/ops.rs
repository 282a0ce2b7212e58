//! The operations that work on the store directly: `id`, `verify` and
//! `keys`. The
//! CLI runs them in-process when no daemon is up, and the daemon runs the
//! same functions for its control API, so both paths give the same answer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use strata_cascade::InstallationId;
use strata_store::{Backend, Contact, Store};

use crate::config::{BrokerChoice, Config};
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::{ContactUri, Local, PeerId, PeerRef};

/// What `strata id` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IdInfo {
    /// The account's peer id.
    pub(crate) peer_id: String,
    /// This installation's id (also its PeerJS id and libp2p link address).
    pub(crate) installation_id: String,
    /// The account identity key, hex.
    pub(crate) identity_key: String,
    /// This account's 30 digits of every safety number.
    pub(crate) safety_number_half: String,
    /// The contact URI to share.
    pub(crate) contact_uri: String,
}

/// The contact URI to share: the installation, the external broker if any,
/// and the libp2p addresses a running node listens on.
pub(crate) fn contact_uri(local: &Local, config: &Config, addrs: &[libp2p::Multiaddr]) -> Result<String> {
    let broker = match config.broker_choice()? {
        Some(BrokerChoice::External(url)) => Some(url),
        Some(BrokerChoice::Embedded(_)) | None => None,
    };
    let uri = ContactUri {
        peer_id: *local.peer_id(),
        installation: local.installation_id(),
        broker,
        addrs: addrs.to_vec(),
    };
    Ok(uri.to_string())
}

/// The identity as `strata id` shows it; `addrs` are the running node's
/// libp2p addresses (none without a daemon).
pub(crate) fn id_info(local: &Local, config: &Config, addrs: &[libp2p::Multiaddr]) -> Result<IdInfo> {
    let contact_uri = contact_uri(local, config, addrs)?;
    Ok(IdInfo {
        peer_id: local.peer_id().to_string(),
        installation_id: local.installation_id().to_string(),
        identity_key: local.peer_id().identity_key_hex(),
        safety_number_half: local.own_half()?,
        contact_uri,
    })
}

/// A `verify` request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifyParams {
    /// The peer: contact URI, peer id, or installation id of a contact.
    pub(crate) peer: String,
    /// The number the user compared: 60 digits (spaces allowed) or the
    /// base64 of a scanned QR payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mark_verified: Option<String>,
}

/// What `verify` found and did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifyReport {
    /// The peer's account.
    pub(crate) peer_id: String,
    /// The peer's installation, when the argument named one.
    pub(crate) installation_id: Option<String>,
    /// The 60 digits, the same on both sides.
    pub(crate) safety_number: String,
    /// The scannable form (for a QR code), base64.
    pub(crate) scannable: String,
    /// The stored contact, if the installation is one.
    pub(crate) contact: Option<ContactState>,
    /// What `--mark-verified` recorded.
    pub(crate) marked: Option<Marked>,
}

/// A stored contact's trust state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContactState {
    /// The account whose key is pinned for the installation.
    pub(crate) pinned_peer_id: String,
    /// Whether the pinned key was verified.
    pub(crate) verified: bool,
    /// When the pinned key was first seen, Unix milliseconds.
    pub(crate) first_seen_ms: u64,
    /// The installation presented a different identity key; nothing is sent
    /// to it until the user verifies the new key.
    pub(crate) identity_change_pending: bool,
    /// The safety number for the newly presented key, when one is pending.
    pub(crate) offered_safety_number: Option<String>,
    /// Accepted identity changes, oldest first.
    pub(crate) identity_changes: Vec<IdentityChange>,
}

/// One accepted change of a contact's identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IdentityChange {
    /// The account before.
    pub(crate) old_peer_id: String,
    /// The account after.
    pub(crate) new_peer_id: String,
    /// When it was accepted, Unix milliseconds.
    pub(crate) accepted_ms: u64,
}

/// What `--mark-verified` recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Marked {
    /// The pinned key is now verified.
    Verified,
    /// The installation was not a contact: its key is now pinned, verified.
    PinnedVerified,
    /// The pending new key replaced the pinned one, verified.
    ChangeAcceptedVerified,
}

/// Shows (and with `mark_verified`, records) the safety number with a peer.
pub(crate) fn verify<B: Backend>(
    store: &Store<B>,
    store_path: &std::path::Path,
    local: &Local,
    params: &VerifyParams,
    now_ms: u64,
) -> Result<VerifyReport> {
    let storage = |e| AppError::store(e, store_path);
    let (remote, installation) = match PeerRef::parse(&params.peer)? {
        PeerRef::Contact(uri) => (uri.peer_id, Some(uri.installation)),
        PeerRef::PeerId(peer) => (peer, None),
        PeerRef::Installation(id) => {
            let contact = store.read(|r| r.contact(&id.to_string())).map_err(storage)?;
            let contact = contact.ok_or_else(|| {
                AppError::new(ErrorKind::NotFound, format!("installation {id} is not a contact"))
                    .hint("verify with the peer's contact URI (`strata id` prints it on their side)")
            })?;
            (pinned(&contact)?, Some(id))
        }
        PeerRef::Multiaddr(_) | PeerRef::PeerJsId(_) => {
            return Err(AppError::new(
                ErrorKind::Usage,
                format!("{:?} is an address: it does not say whose keys to verify", params.peer),
            )
            .hint("give the peer's contact URI, peer id, or the installation id of a contact"));
        }
    };
    if remote == *local.peer_id() {
        return Err(AppError::new(ErrorKind::Usage, "that is this node's own peer id")
            .hint("verify the other side's contact URI, which `strata id` prints on their node"));
    }
    let number = local.safety_number(&remote)?;
    let digits = number.digits().map_err(|e| AppError::internal(e.to_string()))?;
    let scannable = number.scannable().map_err(|e| AppError::internal(e.to_string()))?;

    let marked = match &params.mark_verified {
        None => None,
        Some(typed) => {
            if !matches_typed(&number, typed)? {
                return Err(AppError::new(
                    ErrorKind::VerificationFailed,
                    format!("the safety number you gave does not match the one with {remote}; nothing was recorded"),
                )
                .hint(
                    "compare the numbers again over a channel you trust (in person, a call); if they \
                     really differ, someone may be in the middle: do not mark this peer verified",
                ));
            }
            let installation = installation.ok_or_else(|| {
                AppError::new(
                    ErrorKind::Usage,
                    "the numbers match, but a peer id alone does not say which installation to record",
                )
                .hint("run it again with the peer's contact URI or installation id")
            })?;
            Some(record_verified(store, installation, &remote, now_ms).map_err(storage)??)
        }
    };

    let contact = match installation {
        Some(id) => store.read(|r| r.contact(&id.to_string())).map_err(storage)?,
        None => None,
    };
    Ok(VerifyReport {
        peer_id: remote.to_string(),
        installation_id: installation.map(|i| i.to_string()),
        safety_number: digits,
        scannable: BASE64.encode(scannable),
        contact: contact.map(|c| contact_state(&c, local)).transpose()?,
        marked,
    })
}

/// Compares what the user typed or scanned with `number`, in constant time.
fn matches_typed(number: &strata_cascade::SafetyNumber, typed: &str) -> Result<bool> {
    let compact: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.chars().all(|c| c.is_ascii_digit()) {
        return number
            .matches_digits(&compact)
            .map_err(|e| AppError::internal(e.to_string()));
    }
    let scanned = BASE64.decode(compact.as_bytes()).map_err(|_| {
        AppError::new(
            ErrorKind::Usage,
            "--mark-verified takes the 60 digits (spaces allowed) or the base64 of a scanned code",
        )
        .hint("copy the digits exactly as `strata verify` prints them on the other side")
    })?;
    number.matches_scanned(&scanned).map_err(|e| {
        AppError::new(
            ErrorKind::VerificationFailed,
            format!("the scanned code cannot be compared: {e}"),
        )
        .hint("scan the code of the same Strata version, or compare the 60 digits instead")
    })
}

/// Records in one transaction that the user verified `remote`'s key for
/// `installation`.
fn record_verified<B: Backend>(
    store: &Store<B>,
    installation: InstallationId,
    remote: &PeerId,
    now_ms: u64,
) -> std::result::Result<Result<Marked>, strata_store::StoreError> {
    let inst = installation.to_string();
    let key = remote.identity_key().serialize();
    store.write(|w| {
        let Some(contact) = w.contact(&inst)? else {
            w.observe_identity(&inst, &key, now_ms)?;
            w.mark_verified(&inst)?;
            return Ok(Ok(Marked::PinnedVerified));
        };
        if *contact.identity_key == *key {
            w.mark_verified(&inst)?;
            return Ok(Ok(Marked::Verified));
        }
        if contact.offered_key.as_deref() == Some(&*key) {
            w.accept_identity_change(&inst, now_ms)?;
            w.mark_verified(&inst)?;
            return Ok(Ok(Marked::ChangeAcceptedVerified));
        }
        Ok(Err(AppError::new(
            ErrorKind::VerificationFailed,
            format!("installation {inst} is pinned to another account; nothing was recorded"),
        )
        .hint(
            "the contact URI and the stored contact disagree: ask the peer for their current contact URI",
        )))
    })
}

fn pinned(contact: &Contact) -> Result<PeerId> {
    PeerId::from_key_bytes(&contact.identity_key).map_err(|e| {
        AppError::new(
            ErrorKind::Storage,
            format!(
                "contact {} has an unreadable identity key: {e}",
                contact.installation_id
            ),
        )
        .hint("the store may be damaged; restore it from a backup")
    })
}

fn contact_state(contact: &Contact, local: &Local) -> Result<ContactState> {
    let key_peer = |bytes: &[u8]| {
        PeerId::from_key_bytes(bytes).map_err(|e| {
            AppError::new(ErrorKind::Storage, format!("a stored identity key is unreadable: {e}"))
                .hint("the store may be damaged; restore it from a backup")
        })
    };
    let offered_safety_number = match &contact.offered_key {
        Some(key) => Some(
            local
                .safety_number(&key_peer(key)?)?
                .digits()
                .map_err(|e| AppError::internal(e.to_string()))?,
        ),
        None => None,
    };
    let identity_changes = contact
        .key_history
        .iter()
        .map(|change| {
            Ok(IdentityChange {
                old_peer_id: key_peer(&change.old_key)?.to_string(),
                new_peer_id: key_peer(&change.new_key)?.to_string(),
                accepted_ms: change.accepted_ms,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ContactState {
        pinned_peer_id: pinned(contact)?.to_string(),
        verified: contact.verified,
        first_seen_ms: contact.first_seen_ms,
        identity_change_pending: contact.is_blocked(),
        offered_safety_number,
        identity_changes,
    })
}

/// What `strata keys` shows: this installation's KeyPackage pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeysInfo {
    /// When this was read, Unix seconds.
    pub(crate) now_s: u64,
    /// Unexpired one-time KeyPackages.
    pub(crate) available: u64,
    /// Whether an unexpired last-resort KeyPackage is present.
    pub(crate) last_resort: bool,
    /// Whether it has been served since it was made.
    pub(crate) last_resort_served: bool,
    /// When it was added, Unix seconds (unknown for one added by an older
    /// version).
    pub(crate) last_resort_added_s: Option<u64>,
    /// Its age in seconds.
    pub(crate) last_resort_age_s: Option<u64>,
    /// The earliest end of lifetime among the unexpired KeyPackages, Unix
    /// seconds.
    pub(crate) next_expiry_s: Option<u64>,
    /// KeyPackages handed out in the last hour.
    pub(crate) claims_last_hour: u64,
    /// One-time KeyPackages claimed by peers over a session whose private
    /// parts are kept until the claimer's Welcome.
    pub(crate) held: u64,
}

/// The KeyPackage pool at `now_s`, as `strata keys` shows it.
pub(crate) fn keys<B: Backend>(store: &Store<B>, store_path: &std::path::Path, now_s: u64) -> Result<KeysInfo> {
    let status = store
        .write(|w| w.key_package_status(now_s))
        .map_err(|e| AppError::store(e, store_path))?;
    Ok(KeysInfo {
        now_s,
        available: status.available,
        last_resort: status.has_last_resort,
        last_resort_served: status.last_resort_used,
        last_resort_added_s: status.last_resort_added_s,
        last_resort_age_s: status.last_resort_added_s.map(|added| now_s.saturating_sub(added)),
        next_expiry_s: status.next_expiry_s,
        claims_last_hour: status.claims_last_hour,
        held: status.held,
    })
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use strata_cascade::at_rest::StorageKey;
    use strata_store::{KeySource, MemoryBackend};

    use super::*;

    struct Node {
        store: Store<MemoryBackend>,
        local: Local,
    }

    fn node() -> Node {
        let store = Store::open(
            MemoryBackend::new(),
            KeySource::Key(StorageKey::generate(&mut rand::rng())),
        )
        .unwrap();
        let local = Local::generate().unwrap();
        local.save(&store, "mem".as_ref()).unwrap();
        Node { store, local }
    }

    fn uri(node: &Node) -> String {
        id_info(&node.local, &Config::default(), &[]).unwrap().contact_uri
    }

    fn run(node: &Node, peer: &str, mark: Option<&str>) -> Result<VerifyReport> {
        let params = VerifyParams {
            peer: peer.to_owned(),
            mark_verified: mark.map(str::to_owned),
        };
        verify(&node.store, "mem".as_ref(), &node.local, &params, 1000)
    }

    #[test]
    fn both_sides_see_the_same_number() {
        let (alice, bob) = (node(), node());
        let a = run(&alice, &uri(&bob), None).unwrap();
        let b = run(&bob, &uri(&alice), None).unwrap();
        assert_eq!(a.safety_number.len(), 60);
        assert_eq!(a.safety_number, b.safety_number);
        assert_ne!(a.scannable, b.scannable, "each side's QR names itself first");
        assert_eq!(a.contact, None);
        assert_eq!(a.marked, None);
        // A bare peer id shows the same number.
        let by_id = run(&alice, &bob.local.peer_id().to_string(), None).unwrap();
        assert_eq!(by_id.safety_number, a.safety_number);
        assert_eq!(by_id.installation_id, None);
    }

    #[test]
    fn marking_needs_the_right_digits_and_records_the_contact() {
        let (alice, bob) = (node(), node());
        let bob_uri = uri(&bob);
        let number = run(&alice, &bob_uri, None).unwrap().safety_number;

        let mut wrong = number.clone().into_bytes();
        wrong[59] = if wrong[59] == b'0' { b'1' } else { b'0' };
        let err = run(&alice, &bob_uri, Some(std::str::from_utf8(&wrong).unwrap())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::VerificationFailed);
        let err = run(&alice, &bob_uri, Some(&number[..59])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::VerificationFailed);
        let inst = bob.local.installation_id().to_string();
        assert!(
            alice.store.read(|r| r.contact(&inst)).unwrap().is_none(),
            "a failed check records nothing"
        );

        // Grouped digits, as shown on the other side, are accepted.
        let grouped = crate::identity::group_digits(&number);
        let report = run(&alice, &bob_uri, Some(&grouped)).unwrap();
        assert_eq!(report.marked, Some(Marked::PinnedVerified));
        let contact = report.contact.unwrap();
        assert!(contact.verified);
        assert_eq!(contact.pinned_peer_id, bob.local.peer_id().to_string());

        // Now the installation id alone finds the contact.
        let again = run(&alice, &inst, Some(&number)).unwrap();
        assert_eq!(again.marked, Some(Marked::Verified));
        assert_eq!(again.safety_number, number);

        // A scanned code from Bob's side matches too.
        let scanned = run(&bob, &uri(&alice), None).unwrap().scannable;
        assert_eq!(
            run(&alice, &bob_uri, Some(&scanned)).unwrap().marked,
            Some(Marked::Verified)
        );
        // Alice's own code is not Bob's.
        let own = run(&alice, &bob_uri, None).unwrap().scannable;
        assert!(run(&alice, &bob_uri, Some(&own)).is_err());
    }

    #[test]
    fn a_pending_identity_change_shows_and_is_accepted_by_verifying_the_new_key() {
        let (alice, bob, mallory) = (node(), node(), node());
        let inst = bob.local.installation_id().to_string();
        let bob_key = bob.local.peer_id().identity_key().serialize();
        let new_key = mallory.local.peer_id().identity_key().serialize();
        alice
            .store
            .write(|w| {
                w.observe_identity(&inst, &bob_key, 1)?;
                w.observe_identity(&inst, &new_key, 2)
            })
            .unwrap();
        let report = run(&alice, &inst, None).unwrap();
        let contact = report.contact.unwrap();
        assert!(contact.identity_change_pending);
        let offered = contact.offered_safety_number.unwrap();
        assert_ne!(offered, report.safety_number);

        // The new key, presented in a URI for that installation, verified.
        let new_uri = format!("strata:{}/{}", mallory.local.peer_id(), inst);
        let report = run(&alice, &new_uri, Some(&offered)).unwrap();
        assert_eq!(report.marked, Some(Marked::ChangeAcceptedVerified));
        let contact = report.contact.unwrap();
        assert!(!contact.identity_change_pending);
        assert!(contact.verified);
        assert_eq!(contact.identity_changes.len(), 1);
        assert_eq!(contact.identity_changes[0].old_peer_id, bob.local.peer_id().to_string());

        // A third key for the same installation is refused.
        let other = node();
        let other_uri = format!("strata:{}/{}", other.local.peer_id(), inst);
        let digits = run(&alice, &other_uri, None).unwrap().safety_number;
        let err = run(&alice, &other_uri, Some(&digits)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::VerificationFailed);
    }

    #[test]
    fn unknown_and_unusable_peers_are_refused() {
        let alice = node();
        let err = run(&alice, &"ab".repeat(16), None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        let err = run(&alice, "/ip4/127.0.0.1/tcp/1", None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Usage);
        let err = run(&alice, &uri(&alice), None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Usage);
        let bob = node();
        let digits = run(&alice, &uri(&bob), None).unwrap().safety_number;
        let err = run(&alice, &bob.local.peer_id().to_string(), Some(&digits)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Usage, "a peer id names no installation to record");
    }
}
