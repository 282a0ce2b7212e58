//! Pairing a new device with an account, sans-I/O (54/WAKU2-X3DH-SESSIONS
//! "pairing"; the channel's sealing is [`strata_cascade::pairing`]).
//!
//! ```text
//!  existing device                                   new device (fresh data directory)
//!  Offers::create ── pairing URI / QR: secret, expiry, addresses ──► Joiner::new
//!                 ◄── device-pairing step 1, sealed: its installation id
//!  Offers::on_ask: checks, adds it to the device list, Grant
//!                 ── device-pairing step 2, sealed: account key, device list, contacts ──►
//!                                                   Joiner::on_answer → Grant
//! ```
//!
//! - An offer lives [`PAIRING_TTL`] (10 minutes) and pairs **one** device.
//!   Its first valid ask uses it; the same ask again (its answer was lost)
//!   gets the same grant; an ask naming another installation is refused
//!   ([`PairingRefusal::Used`]), as is one after the expiry
//!   ([`PairingRefusal::Expired`]) or for an offer this device does not
//!   hold ([`PairingRefusal::UnknownOffer`]). An ask that does not open
//!   with the offer's secret ([`PairingRefusal::BadSeal`]) changes
//!   nothing: the offer stays for the right device.
//! - A refusal is a step-0 PDU in the clear: the asker may not hold the
//!   secret, so nothing can be sealed for it. The new device trusts only
//!   a grant that opens with the secret.
//! - At most [`MAX_OFFERS`] offers are open at once; a new one replaces
//!   the oldest.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use strata_cascade::InstallationId;
use strata_cascade::pairing::{PairingDirection, PairingSecret};
use strata_proto::{Blob, DevicePairing, FixedBytes, Pdu, Text};

use crate::error::SessionError;

/// How long an offer holds.
pub const PAIRING_TTL: Duration = Duration::from_secs(600);

/// Most offers open at once.
pub const MAX_OFFERS: usize = 4;

/// Step numbers of `device-pairing`.
const REFUSED: u8 = 0;
const ASK: u8 = 1;
const GRANT: u8 = 2;

/// Why an existing device refused an ask (what step 0 says).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PairingRefusal {
    /// No open offer has this id (never made, or replaced).
    #[error("no such pairing offer")]
    UnknownOffer,
    /// The offer's time is up.
    #[error("the pairing offer expired")]
    Expired,
    /// The offer paired another device already.
    #[error("the pairing offer was used")]
    Used,
    /// The ask did not open with the offer's secret.
    #[error("the pairing request is not sealed with the offer's secret")]
    BadSeal,
    /// Not a well-formed ask.
    #[error("malformed pairing request")]
    Malformed,
}

impl PairingRefusal {
    /// The refusal of a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::UnknownOffer,
            Self::Expired,
            Self::Used,
            Self::BadSeal,
            Self::Malformed,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }

    /// The reason's wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownOffer => "unknown-offer",
            Self::Expired => "expired",
            Self::Used => "used",
            Self::BadSeal => "bad-seal",
            Self::Malformed => "malformed",
        }
    }
}

/// What the new device gets: everything it needs to act as a device of
/// the account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The account key pair (`AccountIdentity::export`).
    #[serde(with = "b64")]
    pub account: Vec<u8>,
    /// The account's signed device list, naming the new device.
    #[serde(with = "b64")]
    pub devices: Vec<u8>,
    /// The contacts, with what the existing device trusts of each.
    pub contacts: Vec<GrantedContact>,
    /// The contacts' device lists the existing device holds.
    #[serde(default, with = "b64_list")]
    pub lists: Vec<Vec<u8>>,
}

/// One contact handed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantedContact {
    /// The contact's installation.
    pub installation_id: String,
    /// Its pinned account identity key.
    #[serde(with = "b64")]
    pub identity_key: Vec<u8>,
    /// Whether the user verified it (safety numbers compared).
    pub verified: bool,
    /// Whether its key was pinned by an out-of-band key exchange.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invited: bool,
    /// When it was first seen, Unix ms.
    pub first_seen_ms: u64,
}

/// The sealed body of an ask.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ask {
    installation: String,
}

/// An open offer.
struct Offer {
    secret: PairingSecret,
    id: [u8; 16],
    expires_ms: u64,
    /// The device it paired, and the grant sent (sent again on a repeat).
    used: Option<(InstallationId, Vec<u8>)>,
}

/// The offers an existing device holds.
#[derive(Default)]
pub struct Offers {
    offers: Vec<Offer>,
}

/// What to do about an ask.
#[derive(Debug, PartialEq, Eq)]
pub enum AskOutcome {
    /// Answer with this frame (a refusal, or the grant sent before).
    Answer(Vec<u8>),
    /// A first valid ask: add `installation` to the device list, then
    /// answer with [`Offers::grant`].
    Pair {
        /// The offer's id.
        offer: [u8; 16],
        /// The new device.
        installation: InstallationId,
    },
}

impl Offers {
    /// Opens an offer; returns its secret and when it expires (Unix ms).
    pub fn create<R: Rng + CryptoRng>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(PairingSecret, u64), SessionError> {
        self.offers.retain(|o| o.expires_ms > now_ms);
        if self.offers.len() >= MAX_OFFERS {
            self.offers.remove(0);
        }
        let secret = PairingSecret::generate(rng);
        let expires_ms = now_ms.saturating_add(u64::try_from(PAIRING_TTL.as_millis()).unwrap_or(u64::MAX));
        self.offers.push(Offer {
            id: secret.id()?,
            secret: secret.clone(),
            expires_ms,
            used: None,
        });
        Ok((secret, expires_ms))
    }

    /// Looks at an ask (a `device-pairing` of step 1).
    pub fn on_ask(&mut self, ask: &DevicePairing, now_ms: u64) -> AskOutcome {
        let id = ask.pairing.0;
        let refuse = |why: PairingRefusal| AskOutcome::Answer(refusal(id, why));
        if ask.step != ASK {
            return refuse(PairingRefusal::Malformed);
        }
        let Some(offer) = self.offers.iter_mut().find(|o| o.id == id) else {
            return refuse(PairingRefusal::UnknownOffer);
        };
        if offer.expires_ms <= now_ms {
            return refuse(PairingRefusal::Expired);
        }
        let Some(sealed) = &ask.sealed else {
            return refuse(PairingRefusal::Malformed);
        };
        let Ok(plain) = offer.secret.open(PairingDirection::ToDevice, ASK, sealed.as_ref()) else {
            return refuse(PairingRefusal::BadSeal);
        };
        let Some(installation) = serde_json::from_slice::<Ask>(&plain)
            .ok()
            .and_then(|a| a.installation.parse::<InstallationId>().ok())
        else {
            return refuse(PairingRefusal::Malformed);
        };
        match &offer.used {
            Some((paired, grant)) if *paired == installation => AskOutcome::Answer(grant.clone()),
            Some(_) => refuse(PairingRefusal::Used),
            None => AskOutcome::Pair {
                offer: id,
                installation,
            },
        }
    }

    /// Seals `grant` for the device offer `offer` pairs, and keeps it (a
    /// repeated ask gets it again); returns the frame to send.
    pub fn grant<R: Rng + CryptoRng>(
        &mut self,
        offer: [u8; 16],
        installation: InstallationId,
        grant: &Grant,
        rng: &mut R,
    ) -> Result<Vec<u8>, SessionError> {
        let offer = self
            .offers
            .iter_mut()
            .find(|o| o.id == offer)
            .ok_or(SessionError::Misuse("no such pairing offer"))?;
        let body = serde_json::to_vec(grant).map_err(|e| SessionError::Internal(e.to_string()))?;
        let sealed = offer.secret.seal(PairingDirection::ToJoiner, GRANT, &body, rng)?;
        let frame = pdu(offer.id, GRANT, Some(sealed), None)?;
        offer.used = Some((installation, frame.clone()));
        Ok(frame)
    }
}

fn pdu(id: [u8; 16], step: u8, sealed: Option<Vec<u8>>, reason: Option<&str>) -> Result<Vec<u8>, SessionError> {
    let sealed = sealed
        .map(Blob::new)
        .transpose()
        .map_err(|_| SessionError::Misuse("a pairing message over 1 MiB (too many contacts)"))?;
    let reason = reason
        .map(Text::new)
        .transpose()
        .map_err(|_| SessionError::Internal("reason".into()))?;
    Ok(Pdu::DevicePairing(DevicePairing {
        pairing: FixedBytes(id),
        step,
        sealed,
        reason,
    })
    .encode())
}

fn refusal(id: [u8; 16], why: PairingRefusal) -> Vec<u8> {
    // A reason of a few bytes and no body: encoding cannot fail.
    pdu(id, REFUSED, None, Some(why.as_str())).unwrap_or_default()
}

/// Whether `frame` is a `device-pairing` PDU (the encoder writes `type`
/// first), so the node takes it before any session.
pub fn is_pairing(frame: &[u8]) -> bool {
    frame.starts_with(br#"{"type":"device-pairing""#)
}

/// Why pairing failed on the new device.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// The existing device refused (its reason, unauthenticated: `None`
    /// for one this version does not know).
    #[error("the device refused to pair: {}", .0.map_or("for an unknown reason", |r| r.as_str()))]
    Refused(Option<PairingRefusal>),
    /// A grant that did not open with the secret, or did not parse.
    #[error("a pairing answer that is not the device's: {0}")]
    BadGrant(&'static str),
    /// No answer in time.
    #[error("the device did not answer in time")]
    NoAnswer,
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(String),
}

/// The new device's side of one pairing.
pub struct Joiner {
    secret: PairingSecret,
    id: [u8; 16],
    installation: InstallationId,
}

impl Joiner {
    /// Pairs `installation` (the new device's id, chosen first) through
    /// the offer `secret` opens.
    pub fn new(secret: PairingSecret, installation: InstallationId) -> Result<Self, SessionError> {
        Ok(Self {
            id: secret.id()?,
            secret,
            installation,
        })
    }

    /// The ask (step 1) to send; the same may be sent again.
    pub fn ask<R: Rng + CryptoRng>(&self, rng: &mut R) -> Result<Vec<u8>, SessionError> {
        let body = serde_json::to_vec(&Ask {
            installation: self.installation.to_hex(),
        })
        .map_err(|e| SessionError::Internal(e.to_string()))?;
        let sealed = self.secret.seal(PairingDirection::ToDevice, ASK, &body, rng)?;
        pdu(self.id, ASK, Some(sealed), None)
    }

    /// Looks at a frame from the existing device: `Ok(None)` when it is
    /// not an answer to this pairing (ignored), the grant, or why not.
    pub fn on_answer(&self, frame: &[u8]) -> Result<Option<Grant>, PairingError> {
        let Ok(Pdu::DevicePairing(answer)) = Pdu::decode(frame) else {
            return Ok(None);
        };
        if answer.pairing.0 != self.id {
            return Ok(None);
        }
        match (answer.step, &answer.sealed) {
            (REFUSED, _) => Err(PairingError::Refused(
                answer.reason.and_then(|r| PairingRefusal::from_name(r.as_str())),
            )),
            (GRANT, Some(sealed)) => {
                let plain = self
                    .secret
                    .open(PairingDirection::ToJoiner, GRANT, sealed.as_ref())
                    .map_err(|_| PairingError::BadGrant("it does not open with the secret"))?;
                serde_json::from_slice(&plain)
                    .map(Some)
                    .map_err(|_| PairingError::BadGrant("it does not parse"))
            }
            _ => Ok(None),
        }
    }
}

/// Pairs over `transport`: opens a link to the existing device at
/// `device`, asks (again every [`ASK_AGAIN`] while no answer comes) and
/// returns the grant, or why not within `deadline`.
pub async fn join<T: strata_transport::Transport>(
    transport: &T,
    events: &mut strata_transport::EventStream,
    device: &strata_transport::PeerAddr,
    joiner: &Joiner,
    deadline: Duration,
) -> Result<Grant, PairingError> {
    use strata_transport::TransportEvent;

    let run = async {
        let ask = joiner
            .ask(&mut rand::rng())
            .map_err(|e| PairingError::Transport(e.to_string()))?;
        let mut again = tokio::time::interval(ASK_AGAIN);
        loop {
            tokio::select! {
                _ = again.tick() => {
                    // Without a link (yet), the send fails: open one, and
                    // ask once it is up.
                    if transport.send(device, ask.clone().into()).await.is_err()
                        && let Err(e) = transport.connect(device).await
                    {
                        tracing::debug!(error = %e, "cannot reach the device yet");
                    }
                }
                event = events.next() => match event {
                    Some(TransportEvent::Connected { peer }) if peer == *device => {
                        let _ = transport.send(device, ask.clone().into()).await;
                    }
                    Some(TransportEvent::Frame { from, bytes }) if from == *device => {
                        if let Some(grant) = joiner.on_answer(&bytes)? {
                            return Ok(grant);
                        }
                    }
                    Some(_) => {}
                    None => return Err(PairingError::Transport("the transport stopped".into())),
                },
            }
        }
    };
    tokio::time::timeout(deadline, run)
        .await
        .unwrap_or(Err(PairingError::NoAnswer))
}

/// How often a new device asks again while no answer comes.
pub const ASK_AGAIN: Duration = Duration::from_secs(2);

/// Writes what a grant hands over into the new device's store: the device
/// lists (the account's and its contacts') and the contacts, pinned with
/// their verified flags. The account key is the caller's to keep (with the
/// installation identity it makes from it).
pub fn store_grant(store: &dyn crate::Durable, grant: &Grant) -> Result<(), SessionError> {
    use strata_cascade::devices::verify_device_list;

    let own = verify_device_list(&grant.devices).map_err(|_| SessionError::Misuse("the grant's device list"))?;
    let lists: Vec<_> = grant.lists.iter().filter_map(|l| verify_device_list(l).ok()).collect();
    crate::durable::write(store, |w| {
        w.set_device_list(&own.identity_key().serialize(), own.as_bytes())?;
        for list in &lists {
            w.set_device_list(&list.identity_key().serialize(), list.as_bytes())?;
        }
        for c in &grant.contacts {
            if c.installation_id.parse::<InstallationId>().is_err() {
                continue;
            }
            w.observe_identity(&c.installation_id, &c.identity_key, c.first_seen_ms)?;
            if c.verified {
                w.mark_verified(&c.installation_id)?;
            }
            if c.invited {
                w.pin_invited(&c.installation_id, &c.identity_key, c.first_seen_ms)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

mod b64 {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

mod b64_list {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| STANDARD.encode(b)))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter()
            .map(|s| STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn grant() -> Grant {
        Grant {
            account: vec![1, 2, 3],
            devices: vec![4],
            contacts: vec![GrantedContact {
                installation_id: "00".repeat(16),
                identity_key: vec![5; 33],
                verified: true,
                invited: true,
                first_seen_ms: 7,
            }],
            lists: vec![vec![8, 9]],
        }
    }

    fn ask_of(frame: &[u8]) -> DevicePairing {
        match Pdu::decode(frame).unwrap() {
            Pdu::DevicePairing(p) => p,
            other => panic!("not a pairing PDU: {other:?}"),
        }
    }

    #[test]
    fn a_device_pairs_once_and_gets_the_grant_again_on_a_repeat() {
        let mut rng = rand::rng();
        let mut offers = Offers::default();
        let (secret, _) = offers.create(1_000, &mut rng).unwrap();
        let new = InstallationId::from_bytes([7; 16]);
        let joiner = Joiner::new(secret.clone(), new).unwrap();
        let ask = joiner.ask(&mut rng).unwrap();
        assert!(is_pairing(&ask));
        let AskOutcome::Pair { offer, installation } = offers.on_ask(&ask_of(&ask), 2_000) else {
            panic!("a first valid ask pairs");
        };
        assert_eq!(installation, new);
        let frame = offers.grant(offer, installation, &grant(), &mut rng).unwrap();
        assert_eq!(joiner.on_answer(&frame).unwrap(), Some(grant()));
        // Its answer lost, it asks again: the same grant.
        let again = joiner.ask(&mut rng).unwrap();
        assert_eq!(offers.on_ask(&ask_of(&again), 3_000), AskOutcome::Answer(frame));
        // Another device with the same secret is refused.
        let other = Joiner::new(secret, InstallationId::from_bytes([8; 16])).unwrap();
        let AskOutcome::Answer(refused) = offers.on_ask(&ask_of(&other.ask(&mut rng).unwrap()), 3_000) else {
            panic!("refused");
        };
        assert_eq!(
            other.on_answer(&refused),
            Err(PairingError::Refused(Some(PairingRefusal::Used)))
        );
    }

    #[test]
    fn wrong_expired_and_unknown_asks_are_refused_and_change_nothing() {
        let mut rng = rand::rng();
        let mut offers = Offers::default();
        let (secret, expires) = offers.create(1_000, &mut rng).unwrap();
        let new = InstallationId::from_bytes([7; 16]);
        let refused = |o: AskOutcome| match o {
            AskOutcome::Answer(f) => Joiner::new(secret.clone(), new).unwrap().on_answer(&f),
            AskOutcome::Pair { .. } => panic!("paired"),
        };
        // Sealed with another secret under this offer's id.
        let forger = Joiner::new(PairingSecret::generate(&mut rng), new).unwrap();
        let mut forged = ask_of(&forger.ask(&mut rng).unwrap());
        forged.pairing = FixedBytes(secret.id().unwrap());
        assert_eq!(
            refused(offers.on_ask(&forged, 2_000)),
            Err(PairingError::Refused(Some(PairingRefusal::BadSeal)))
        );
        // An offer this device does not hold.
        let stranger = ask_of(&forger.ask(&mut rng).unwrap());
        assert!(matches!(offers.on_ask(&stranger, 2_000), AskOutcome::Answer(_)));
        // The right device still pairs after those, until the expiry.
        let joiner = Joiner::new(secret.clone(), new).unwrap();
        let ask = ask_of(&joiner.ask(&mut rng).unwrap());
        assert!(matches!(offers.on_ask(&ask, 2_000), AskOutcome::Pair { .. }));
        assert_eq!(
            refused(offers.on_ask(&ask, expires)),
            Err(PairingError::Refused(Some(PairingRefusal::Expired)))
        );
        // A grant from someone without the secret is not taken.
        let fake = pdu(secret.id().unwrap(), GRANT, Some(vec![0; 64]), None).unwrap();
        assert!(matches!(joiner.on_answer(&fake), Err(PairingError::BadGrant(_))));
        assert_eq!(joiner.on_answer(b"{\"type\":\"message\"}"), Ok(None));
    }

    #[test]
    fn at_most_a_few_offers_are_open() {
        let mut rng = rand::rng();
        let mut offers = Offers::default();
        let (first, _) = offers.create(1, &mut rng).unwrap();
        for _ in 0..MAX_OFFERS {
            offers.create(1, &mut rng).unwrap();
        }
        assert_eq!(offers.offers.len(), MAX_OFFERS);
        let ask = Joiner::new(first, InstallationId::from_bytes([1; 16]))
            .unwrap()
            .ask(&mut rng)
            .unwrap();
        assert!(matches!(offers.on_ask(&ask_of(&ask), 2), AskOutcome::Answer(_)));
    }
}
