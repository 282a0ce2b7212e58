//! This node's identity as the CLI shows it: peer id, installation id,
//! identity key, the own half of the safety number, and the URIs that
//! carry them: contact, pairing and invite URIs.
//!
//! # Peer id
//!
//! The **peer id** names an account: the lowercase, unpadded RFC 4648
//! base32 of its serialized Signal identity key (33 bytes: `0x05` and the
//! Curve25519 key), 53 characters. Like a libp2p peer id it is
//! self-certifying — whoever holds a peer id holds the key it names, so a
//! peer id received out of band pins the identity without trust on first
//! use. It is also the *stable identifier* of safety numbers
//! ([`strata_cascade::SafetyNumber::new`] with the peer ids' UTF-8 bytes),
//! so every installation of an account shows the same number.
//!
//! The **installation id** (32 hex digits) names one device of the account.
//! Sessions are keyed by it, and it is the node's address on both
//! transports: its PeerJS id on the broker and its libp2p link address.
//!
//! # Contact URI
//!
//! ```text
//! strata:<peer id>/<installation id>[?broker=<ws(s) URL>][&addr=<multiaddr>]...
//! ```
//!
//! Query values are percent-encoded. `broker` is the PeerJS broker the node
//! registers with (present when it is not the embedded one), `addr` a libp2p
//! address it can be reached at (repeatable). Unknown query keys are
//! ignored, so later versions can add some.
//!
//! # Pairing URI
//!
//! ```text
//! strata-pair:<installation id>?secret=<base64url>&expires=<Unix ms>[&broker=<ws(s) URL>][&addr=<multiaddr>]...
//! ```
//!
//! What `strata devices pair` shows and `devices join` reads. The
//! installation is the existing device (the new one reaches it there),
//! `secret` the one-time pairing secret (32 bytes, unpadded base64url),
//! `expires` when the offer lapses, `broker` the PeerJS broker the device
//! registers with, `addr` a libp2p address it listens on. Whoever holds the
//! URI until it expires can pair a device with the account: show it only
//! to the new device.
//!
//! # Invite URI
//!
//! ```text
//! strata-invite:<base64url RMO>[?addr=<multiaddr>]...
//! ```
//!
//! The path is the invite as BisonRelay writes one out of band: its `RMO`
//! (zlib of the JSON header and the signed `oobpublicidentityinvite`),
//! unpadded base64url. `addr` is a libp2p address the inviter listens on
//! (repeatable): the invitee dials it to join the gossip network the
//! exchange runs over. Addresses are hints, not signed; everything that
//! matters — the account key, the KEM key, the installation, the
//! rendezvous points, the expiry — is inside the signed invite.
//!
//! Whoever holds an invite until it expires can start a conversation with
//! the inviter as themselves (once: the first answer uses it); it reveals
//! the inviter's account key and installation.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use data_encoding::BASE32_NOPAD;
use strata_cascade::pairing::PairingSecret;
use strata_cascade::{AccountIdentity, IdentityKey, InstallationId, InstallationIdentity, SafetyNumber};
use strata_proto::kx::{Invite, MAX_RMO_BYTES, Rmo};
use strata_store::{Backend, Store};

use crate::error::{AppError, ErrorKind, Result};

/// Length of a peer id: 33 bytes in base32 without padding.
const PEER_ID_LEN: usize = 53;
/// Length of the serialized identity key.
const IDENTITY_KEY_LEN: usize = 33;
/// The contact URI scheme.
pub(crate) const URI_SCHEME: &str = "strata";

/// An account's peer id, and the identity key it encodes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerId {
    key: IdentityKey,
}

impl PeerId {
    /// The peer id of `key`.
    pub(crate) fn from_key(key: IdentityKey) -> Self {
        Self { key }
    }

    /// Parses a peer id, rejecting anything but the canonical encoding of a
    /// valid identity key.
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        if text.len() != PEER_ID_LEN {
            return Err(format!("a peer id is {PEER_ID_LEN} characters, not {}", text.len()));
        }
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("a peer id is lowercase".to_owned());
        }
        let bytes = BASE32_NOPAD
            .decode(text.to_ascii_uppercase().as_bytes())
            .map_err(|e| format!("not base32: {e}"))?;
        Self::from_key_bytes(&bytes)
    }

    /// The identity key from its serialized form.
    pub(crate) fn from_key_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() != IDENTITY_KEY_LEN {
            return Err(format!(
                "an identity key is {IDENTITY_KEY_LEN} bytes, not {}",
                bytes.len()
            ));
        }
        let key = IdentityKey::decode(bytes).map_err(|e| format!("not an identity key: {e}"))?;
        // Only the canonical encoding: one key, one peer id.
        if *key.serialize() != *bytes {
            return Err("not the canonical encoding of an identity key".to_owned());
        }
        Ok(Self { key })
    }

    /// The identity key.
    pub(crate) fn identity_key(&self) -> &IdentityKey {
        &self.key
    }

    /// The identity key in hex.
    pub(crate) fn identity_key_hex(&self) -> String {
        hex::encode(self.key.serialize())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.key.serialize()).to_ascii_lowercase())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// This installation's keys and the names derived from them.
pub(crate) struct Local {
    installation: InstallationIdentity,
    peer_id: PeerId,
}

impl Local {
    /// A new account with its first installation.
    pub(crate) fn generate() -> Result<Self> {
        let mut rng = rand::rng();
        let account = AccountIdentity::generate(&mut rng);
        let installation = InstallationIdentity::generate(account, &mut rng)
            .map_err(|e| AppError::caused("cannot generate the installation keys", &e))?;
        Ok(Self::from_installation(installation))
    }

    /// The names of `installation`.
    pub(crate) fn from_installation(installation: InstallationIdentity) -> Self {
        let peer_id = PeerId::from_key(*installation.account().identity_key());
        Self { installation, peer_id }
    }

    /// Reads the identity from `store`.
    pub(crate) fn load<B: Backend>(store: &Store<B>, store_path: &std::path::Path) -> Result<Self> {
        let bytes = store
            .read(|r| r.identity())
            .map_err(|e| AppError::store(e, store_path))?
            .ok_or_else(|| {
                AppError::new(
                    ErrorKind::NotInitialized,
                    format!("the store {} holds no identity", store_path.display()),
                )
                .hint("run `strata init` to create one")
            })?;
        let installation = InstallationIdentity::import(&bytes).map_err(|e| {
            AppError::new(
                ErrorKind::Storage,
                format!("the identity in {} cannot be read: {e}", store_path.display()),
            )
            .hint("restore the data directory from a backup, or start over with `strata init --force`")
        })?;
        Ok(Self::from_installation(installation))
    }

    /// Writes the identity to `store` (one transaction).
    pub(crate) fn save<B: Backend>(&self, store: &Store<B>, store_path: &std::path::Path) -> Result<()> {
        let exported = self
            .installation
            .export()
            .map_err(|e| AppError::caused("cannot export the identity", &e))?;
        store
            .write(|w| w.set_identity(exported.as_bytes()))
            .map_err(|e| AppError::store(e, store_path))
    }

    /// The installation's keys.
    pub(crate) fn installation(&self) -> &InstallationIdentity {
        &self.installation
    }

    /// The account's peer id.
    pub(crate) fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    /// The installation id.
    pub(crate) fn installation_id(&self) -> InstallationId {
        self.installation.installation_id()
    }

    /// The safety number between this account and `remote`.
    pub(crate) fn safety_number(&self, remote: &PeerId) -> Result<SafetyNumber> {
        let local = self.peer_id.to_string();
        let remote_id = remote.to_string();
        SafetyNumber::new(
            local.as_bytes(),
            self.peer_id.identity_key(),
            remote_id.as_bytes(),
            remote.identity_key(),
        )
        .map_err(|e| AppError::caused("cannot compute the safety number", &e))
    }

    /// This account's half of every safety number it is part of: 30 digits.
    ///
    /// Each party's 30 digits depend only on its own stable id and key (the
    /// number is the two halves, smaller first), so the number of the
    /// account with itself is this half twice.
    pub(crate) fn own_half(&self) -> Result<String> {
        let digits = self
            .safety_number(&self.peer_id)?
            .digits()
            .map_err(|e| AppError::caused("cannot compute the safety number", &e))?;
        digits
            .get(..digits.len() / 2)
            .map(str::to_owned)
            .ok_or_else(|| AppError::internal("the safety number is empty"))
    }
}

/// Groups digits by five, as safety numbers are shown.
pub(crate) fn group_digits(digits: &str) -> String {
    digits
        .as_bytes()
        .chunks(5)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A parsed contact URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContactUri {
    /// The account.
    pub(crate) peer_id: PeerId,
    /// The installation to dial.
    pub(crate) installation: InstallationId,
    /// Its PeerJS broker, when not the embedded one.
    pub(crate) broker: Option<url::Url>,
    /// libp2p addresses it can be reached at.
    pub(crate) addrs: Vec<libp2p::Multiaddr>,
}

impl ContactUri {
    /// Parses `strata:<peer id>/<installation id>?…`.
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URI: {e}"))?;
        if url.scheme() != URI_SCHEME {
            return Err(format!("a contact URI starts with `{URI_SCHEME}:`"));
        }
        let (peer, installation) = url
            .path()
            .split_once('/')
            .ok_or("a contact URI is strata:<peer id>/<installation id>")?;
        let peer_id = PeerId::parse(peer).map_err(|e| format!("bad peer id: {e}"))?;
        let installation: InstallationId = installation.parse().map_err(|e| format!("{e}"))?;
        let mut broker = None;
        let mut addrs = Vec::new();
        for (key, value) in url.query_pairs() {
            read_reach(&key, &value, &mut broker, &mut addrs)?;
        }
        Ok(Self {
            peer_id,
            installation,
            broker,
            addrs,
        })
    }
}

impl fmt::Display for ContactUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{URI_SCHEME}:{}/{}", self.peer_id, self.installation)?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        write_reach(&mut query, self.broker.as_ref(), &self.addrs);
        let query = query.finish();
        if !query.is_empty() {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

/// Reads one query pair of the reach both URIs carry: `broker` (the PeerJS
/// broker) or `addr` (a libp2p address, repeatable). False for another
/// key, which the caller reads or ignores.
fn read_reach(
    key: &str,
    value: &str,
    broker: &mut Option<url::Url>,
    addrs: &mut Vec<libp2p::Multiaddr>,
) -> std::result::Result<bool, String> {
    match key {
        "broker" => *broker = Some(crate::config::parse_broker_url(value)?),
        "addr" => addrs.push(
            value
                .parse()
                .map_err(|e| format!("bad libp2p address {value:?}: {e}"))?,
        ),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Writes the reach [`read_reach`] reads.
fn write_reach(
    query: &mut url::form_urlencoded::Serializer<'_, String>,
    broker: Option<&url::Url>,
    addrs: &[libp2p::Multiaddr],
) {
    if let Some(broker) = broker {
        query.append_pair("broker", broker.as_str());
    }
    for addr in addrs {
        query.append_pair("addr", &addr.to_string());
    }
}

/// What a `<peer>` argument names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerRef {
    /// A contact URI: account, installation and where to reach it.
    Contact(ContactUri),
    /// An account.
    PeerId(PeerId),
    /// An installation (a contact of the store, or a PeerJS/libp2p address).
    Installation(InstallationId),
    /// A libp2p multiaddr.
    Multiaddr(libp2p::Multiaddr),
    /// Any other PeerJS id.
    PeerJsId(String),
}

impl PeerRef {
    /// Parses a `<peer>` argument.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let bad = |reason: String| {
            AppError::new(ErrorKind::Usage, format!("{text:?} does not name a peer: {reason}")).hint(
                "give a contact URI (strata:…), a peer id, an installation id, a libp2p multiaddr, or a PeerJS id",
            )
        };
        if text.starts_with(&format!("{URI_SCHEME}:")) {
            return ContactUri::parse(text).map(Self::Contact).map_err(bad);
        }
        if text.starts_with('/') {
            return text
                .parse()
                .map(Self::Multiaddr)
                .map_err(|e| bad(format!("bad multiaddr: {e}")));
        }
        if text.len() == PEER_ID_LEN
            && let Ok(peer) = PeerId::parse(text)
        {
            return Ok(Self::PeerId(peer));
        }
        if let Ok(installation) = text.parse::<InstallationId>() {
            return Ok(Self::Installation(installation));
        }
        if strata_transport_peerjs::protocol::is_valid_peer_id(text) {
            return Ok(Self::PeerJsId(text.to_owned()));
        }
        Err(bad(
            "not a contact URI, peer id, installation id, multiaddr or PeerJS id".to_owned(),
        ))
    }
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Contact(uri) => uri.fmt(f),
            Self::PeerId(peer) => peer.fmt(f),
            Self::Installation(id) => id.fmt(f),
            Self::Multiaddr(addr) => addr.fmt(f),
            Self::PeerJsId(id) => f.write_str(id),
        }
    }
}

/// The pairing URI scheme.
const PAIRING_SCHEME: &str = "strata-pair";

/// What a pairing URI names (see the module docs).
#[derive(Clone, PartialEq)]
pub(crate) struct PairingUri {
    /// The existing device.
    pub(crate) device: InstallationId,
    /// The offer's secret.
    pub(crate) secret: PairingSecret,
    /// When the offer lapses, Unix ms.
    pub(crate) expires_ms: u64,
    /// Its PeerJS broker.
    pub(crate) broker: Option<url::Url>,
    /// Its libp2p addresses.
    pub(crate) addrs: Vec<libp2p::Multiaddr>,
}

impl fmt::Debug for PairingUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairingUri")
            .field("device", &self.device)
            .field("secret", &"[redacted]")
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

impl PairingUri {
    /// Parses `strata-pair:…`.
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URI: {e}"))?;
        if url.scheme() != PAIRING_SCHEME {
            return Err(format!("a pairing URI starts with `{PAIRING_SCHEME}:`"));
        }
        let device: InstallationId = url.path().parse().map_err(|e| format!("{e}"))?;
        let (mut secret, mut expires_ms, mut broker, mut addrs) = (None, None, None, Vec::new());
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "secret" => {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(value.as_bytes())
                        .map_err(|_| "the secret is not base64url")?;
                    secret = Some(PairingSecret::from_bytes(&bytes).ok_or("the secret is not 32 bytes")?);
                }
                "expires" => expires_ms = Some(value.parse().map_err(|_| "`expires` is not a number")?),
                _ => {
                    read_reach(&key, &value, &mut broker, &mut addrs)?;
                }
            }
        }
        Ok(Self {
            device,
            secret: secret.ok_or("no `secret`")?,
            expires_ms: expires_ms.ok_or("no `expires`")?,
            broker,
            addrs,
        })
    }
}

impl fmt::Display for PairingUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("secret", &URL_SAFE_NO_PAD.encode(self.secret.as_bytes()));
        query.append_pair("expires", &self.expires_ms.to_string());
        write_reach(&mut query, self.broker.as_ref(), &self.addrs);
        write!(f, "{PAIRING_SCHEME}:{}?{}", self.device, query.finish())
    }
}

/// The invite URI scheme.
pub(crate) const INVITE_SCHEME: &str = "strata-invite";

/// A parsed invite URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InviteUri {
    /// The invite, as signed.
    pub(crate) invite: Invite,
    /// libp2p addresses the inviter listens on.
    pub(crate) addrs: Vec<libp2p::Multiaddr>,
}

impl InviteUri {
    /// Parses `strata-invite:…`.
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix(INVITE_SCHEME)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(|| format!("an invite starts with `{INVITE_SCHEME}:`"))?;
        let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
        if body.len() > MAX_RMO_BYTES.div_ceil(3) * 4 {
            return Err("the invite is too long".to_owned());
        }
        let rmo = URL_SAFE_NO_PAD
            .decode(body.as_bytes())
            .map_err(|_| "the invite is not base64url".to_owned())?;
        let invite = match Rmo::decompose(&rmo).map_err(|e| format!("not an invite: {e}"))? {
            (_, Rmo::Invite(invite)) => *invite,
            _ => return Err("not an invite: another KX message".to_owned()),
        };
        let mut addrs = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == "addr" {
                addrs.push(
                    value
                        .parse()
                        .map_err(|e| format!("bad libp2p address {value:?}: {e}"))?,
                );
            }
        }
        Ok(Self { invite, addrs })
    }
}

impl fmt::Display for InviteUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rmo = Rmo::Invite(Box::new(self.invite.clone())).compose(0);
        write!(f, "{INVITE_SCHEME}:{}", URL_SAFE_NO_PAD.encode(rmo))?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for addr in &self.addrs {
            query.append_pair("addr", &addr.to_string());
        }
        let query = query.finish();
        if !query.is_empty() {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

/// An invite that does not parse.
pub(crate) fn bad_invite(why: String) -> AppError {
    AppError::new(ErrorKind::Usage, format!("bad invite: {why}"))
        .hint("copy the whole invite, `strata-invite:` and all, or ask its maker to send it again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_round_trip_and_reject_non_canonical_forms() {
        let local = Local::generate().unwrap();
        let text = local.peer_id().to_string();
        assert_eq!(text.len(), PEER_ID_LEN);
        assert_eq!(PeerId::parse(&text).unwrap(), *local.peer_id());
        assert!(PeerId::parse(&text.to_ascii_uppercase()).is_err());
        assert!(PeerId::parse(&text[1..]).is_err());
        // The last character carries padding bits: changing them is another
        // encoding of the same bytes, which is refused.
        const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz234567";
        let mut last_changed = text.clone();
        let last = last_changed.pop().unwrap();
        let value = ALPHABET.find(last).unwrap();
        last_changed.push(ALPHABET.as_bytes()[value ^ 1] as char);
        assert!(PeerId::parse(&last_changed).is_err());
        // A wrong key type byte is not an identity key.
        let mut bytes = local.peer_id().identity_key().serialize().to_vec();
        bytes[0] = 0x07;
        assert!(PeerId::from_key_bytes(&bytes).is_err());
    }

    #[test]
    fn the_own_half_is_one_half_of_every_safety_number() {
        let alice = Local::generate().unwrap();
        let bob = Local::generate().unwrap();
        let (a, b) = (alice.own_half().unwrap(), bob.own_half().unwrap());
        assert_eq!(a.len(), 30);
        assert!(a.bytes().all(|c| c.is_ascii_digit()));
        assert_ne!(a, b);
        let from_alice = alice.safety_number(bob.peer_id()).unwrap().digits().unwrap();
        let from_bob = bob.safety_number(alice.peer_id()).unwrap().digits().unwrap();
        assert_eq!(from_alice, from_bob);
        let expected = if a < b { format!("{a}{b}") } else { format!("{b}{a}") };
        assert_eq!(from_alice, expected);
        assert_eq!(group_digits("1234567890123"), "12345 67890 123");
    }

    #[test]
    fn the_identity_survives_the_store() {
        let store = Store::open(
            strata_store::MemoryBackend::default(),
            strata_store::KeySource::Key(strata_cascade::at_rest::StorageKey::generate(&mut rand::rng())),
        )
        .unwrap();
        let path = std::path::Path::new("mem");
        let err = Local::load(&store, path).err().unwrap();
        assert_eq!(err.kind, ErrorKind::NotInitialized);
        let local = Local::generate().unwrap();
        local.save(&store, path).unwrap();
        let back = Local::load(&store, path).unwrap();
        assert_eq!(back.peer_id(), local.peer_id());
        assert_eq!(back.installation_id(), local.installation_id());
        assert_eq!(back.own_half().unwrap(), local.own_half().unwrap());
    }

    #[test]
    fn contact_uris_round_trip() {
        let local = Local::generate().unwrap();
        let mut uri = ContactUri {
            peer_id: *local.peer_id(),
            installation: local.installation_id(),
            broker: None,
            addrs: Vec::new(),
        };
        let plain = uri.to_string();
        assert_eq!(plain, format!("strata:{}/{}", local.peer_id(), local.installation_id()));
        assert_eq!(ContactUri::parse(&plain).unwrap(), uri);

        uri.broker = Some(url::Url::parse("wss://broker.example.org:8443/app/").unwrap());
        uri.addrs = vec![
            "/ip4/192.0.2.1/tcp/4001".parse().unwrap(),
            "/ip6/::1/udp/4001/quic-v1".parse().unwrap(),
        ];
        let full = uri.to_string();
        assert!(full.contains("?broker=wss%3A%2F%2Fbroker.example.org"), "{full}");
        assert_eq!(ContactUri::parse(&full).unwrap(), uri);
        // Unknown query keys are ignored; bad values are not.
        assert_eq!(ContactUri::parse(&format!("{plain}?future=1")).unwrap().broker, None);
        assert!(ContactUri::parse(&format!("{plain}?broker=http%3A%2F%2Fx")).is_err());
        assert!(ContactUri::parse(&format!("other:{}/{}", local.peer_id(), local.installation_id())).is_err());
        assert!(ContactUri::parse(&format!("strata:{}", local.peer_id())).is_err());
    }

    #[test]
    fn peer_arguments_are_told_apart() {
        let local = Local::generate().unwrap();
        let peer = local.peer_id().to_string();
        let inst = local.installation_id().to_string();
        assert!(matches!(PeerRef::parse(&peer).unwrap(), PeerRef::PeerId(_)));
        assert!(matches!(PeerRef::parse(&inst).unwrap(), PeerRef::Installation(_)));
        assert!(matches!(
            PeerRef::parse(&format!("strata:{peer}/{inst}")).unwrap(),
            PeerRef::Contact(_)
        ));
        assert!(matches!(
            PeerRef::parse("/ip4/127.0.0.1/tcp/1").unwrap(),
            PeerRef::Multiaddr(_)
        ));
        assert!(matches!(PeerRef::parse("alice-laptop").unwrap(), PeerRef::PeerJsId(_)));
        for bad in ["", "strata:nope", "/not/a/multiaddr", "has space!"] {
            let err = PeerRef::parse(bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Usage, "{bad}");
        }
    }

    #[test]
    fn pairing_uris_round_trip_and_say_what_is_wrong() {
        let uri = PairingUri {
            device: InstallationId::from_bytes([7; 16]),
            secret: PairingSecret::generate(&mut rand::rng()),
            expires_ms: 1_800_000_000_000,
            broker: Some("ws://127.0.0.1:9000/".parse().unwrap()),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        };
        let text = uri.to_string();
        assert!(
            text.starts_with("strata-pair:07070707070707070707070707070707?secret="),
            "{text}"
        );
        assert_eq!(PairingUri::parse(&text).unwrap(), uri);
        assert!(!format!("{uri:?}").contains(&URL_SAFE_NO_PAD.encode(uri.secret.as_bytes())));
        for (bad, why) in [
            (
                "strata:07070707070707070707070707070707?secret=AA&expires=1",
                "starts with",
            ),
            ("strata-pair:0707?secret=AA&expires=1", "32 hex"),
            ("strata-pair:07070707070707070707070707070707?expires=1", "secret"),
            (
                "strata-pair:07070707070707070707070707070707?secret=AAAA&expires=1",
                "32 bytes",
            ),
            ("strata-pair:07070707070707070707070707070707?secret=%%%", "base64url"),
        ] {
            let err = PairingUri::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    fn sample() -> InviteUri {
        let mut rng = rand::rng();
        let account = strata_cascade::AccountIdentity::generate(&mut rng);
        let kem = strata_cascade::kx::KxKeyPair::generate(&mut rng);
        let me = strata_cascade::kx::KxSelf {
            account: &account,
            kem: &kem,
            name: "alice",
            installation: strata_cascade::InstallationId::from_bytes([7; 16]),
        };
        InviteUri {
            invite: strata_cascade::kx::make_invite(me, 1_900_000_000, &mut rng).unwrap(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        }
    }

    #[test]
    fn an_invite_uri_goes_round_and_fits_a_qr_code() {
        let uri = sample();
        let text = uri.to_string();
        assert!(text.starts_with("strata-invite:"));
        assert_eq!(InviteUri::parse(&text).unwrap(), uri);
        assert_eq!(InviteUri::parse(&format!("  {text}\n")).unwrap(), uri);
        crate::qr::render(text.as_bytes()).unwrap();
        let bare = InviteUri {
            addrs: Vec::new(),
            ..uri
        };
        assert!(!bare.to_string().contains('?'));
        assert_eq!(InviteUri::parse(&bare.to_string()).unwrap(), bare);
    }

    #[test]
    fn bad_invite_uris_say_why() {
        let good = sample().to_string();
        let body = good
            .strip_prefix("strata-invite:")
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        for (bad, why) in [
            ("strata:abc".to_owned(), "starts with"),
            ("strata-invite:!!".to_owned(), "base64url"),
            ("strata-invite:AAAA".to_owned(), "not an invite"),
            (format!("strata-invite:{}", "A".repeat(30_000)), "too long"),
            (format!("strata-invite:{body}?addr=nope"), "bad libp2p address"),
        ] {
            let err = InviteUri::parse(&bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
