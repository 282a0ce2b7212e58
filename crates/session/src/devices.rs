//! Multi-device (54/WAKU2-X3DH-SESSIONS, Sesame-like): which installations
//! of each account a node sends to, sans-I/O.
//!
//! An account is its identity key; each of its devices is an installation
//! with its own keys and its own pair session with every other
//! installation it talks to. The account's **device list** (signed by the
//! account key, [`strata_cascade::devices`]) says which installations are
//! its devices now. A [`DeviceBook`] holds this account's list and the
//! newest list heard of every other account, and how recently each
//! installation was active; the node ([`crate::actors::Node`]) does the
//! I/O around it:
//!
//! - **Spreading lists.** When a session becomes ready, a device sends its
//!   account's list to the peer, once per list version; a change (a device
//!   paired or removed) goes to every peer with a ready session. Lists
//!   travel as `devices` messages (stored, acknowledged). A list is taken
//!   only from an installation pinned to the account that signed it, and
//!   only when it supersedes the one held.
//! - **Fan-out.** A text to an account goes pairwise to the account's
//!   listed installations, most recently active first, at most
//!   [`Config::max_devices`](crate::Config::max_devices) of them (3 by
//!   default, as 54 recommends); while no list of the account is known, to
//!   the installations pinned to it. A `sent-copy` of it goes to this
//!   account's other listed devices, so each device shows the whole
//!   conversation; a file's copy is its chunks marked `sentTo`. Either
//!   copy is taken only from a device of the same account.
//! - **Partitioned devices.** A device whose own account's list does not
//!   name it (removed, or a stale copy of the account) answers each
//!   contact that sends it a message with that list, once per list
//!   version: the contact learns it is not a device of the account and
//!   sends it nothing more, or, if the list it held was older and does
//!   name the device, includes it.

use std::collections::{BTreeMap, HashMap};

use rand::{CryptoRng, Rng};
use strata_cascade::devices::{VerifiedDeviceList, sign_device_list};
use strata_cascade::{IdentityKey, InstallationId, InstallationIdentity};
use strata_proto::devices::{MAX_DEVICES, next_version};

use crate::error::SessionError;

/// Most accounts whose lists a book holds; the least recently admitted
/// goes first. Lists come only over authenticated sessions, so this bounds
/// a node with many contacts, not a hostile peer.
pub const MAX_ACCOUNTS: usize = 16_384;

/// What taking a received list changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Not newer than the list held: nothing changed.
    Unchanged,
    /// It replaced the held list (or is the first for its account).
    Updated {
        /// Installations it names that the held list did not.
        added: Vec<InstallationId>,
        /// Installations the held list named and it does not.
        removed: Vec<InstallationId>,
    },
}

/// The device lists a node knows, and when each installation was last
/// active (see the module docs).
#[derive(Debug)]
pub struct DeviceBook {
    local: InstallationId,
    own: VerifiedDeviceList,
    /// By serialized identity key.
    lists: HashMap<Vec<u8>, (u64, VerifiedDeviceList)>,
    admitted: u64,
    active: BTreeMap<InstallationId, u64>,
}

impl DeviceBook {
    /// The book of `local`, from the lists held (stored, in any order).
    /// Without a list of its own account, the installation signs the
    /// first one, naming itself: returned too, for the caller to store.
    pub fn new<R: Rng + CryptoRng>(
        local: &InstallationIdentity,
        held: impl IntoIterator<Item = VerifiedDeviceList>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(Self, Option<VerifiedDeviceList>), SessionError> {
        let account = *local.account().identity_key();
        let mut own: Option<VerifiedDeviceList> = None;
        let mut lists = HashMap::new();
        let mut admitted = 0;
        for list in held {
            if *list.identity_key() == account {
                if own.as_ref().is_none_or(|o| list.supersedes(o)) {
                    own = Some(list);
                }
            } else {
                admitted += 1;
                lists.insert(list.identity_key().serialize().to_vec(), (admitted, list));
            }
        }
        let (own, signed) = match own {
            Some(own) => (own, None),
            None => {
                let first = sign_device_list(
                    local.account(),
                    next_version(0, now_ms),
                    &[local.installation_id()],
                    rng,
                )?;
                (first.clone(), Some(first))
            }
        };
        Ok((
            Self {
                local: local.installation_id(),
                own,
                lists,
                admitted,
                active: BTreeMap::new(),
            },
            signed,
        ))
    }

    /// This account's list.
    pub fn own(&self) -> &VerifiedDeviceList {
        &self.own
    }

    /// Whether this account's list names this installation: false once it
    /// was removed (it then answers contacts as a partitioned device).
    pub fn paired(&self) -> bool {
        self.own.contains(&self.local)
    }

    /// This account's other listed devices.
    pub fn own_devices(&self) -> Vec<InstallationId> {
        self.own
            .installations()
            .iter()
            .copied()
            .filter(|i| *i != self.local)
            .collect()
    }

    /// The list held for `account`: this account's own, or the newest
    /// heard of.
    pub fn list_of(&self, account: &IdentityKey) -> Option<&VerifiedDeviceList> {
        if *account == *self.own.identity_key() {
            return Some(&self.own);
        }
        self.lists.get(account.serialize().as_ref()).map(|(_, l)| l)
    }

    /// Takes `list` (whose signature the caller checked, from an
    /// installation pinned to its account) if it supersedes the one held.
    pub fn admit(&mut self, list: VerifiedDeviceList) -> Admitted {
        let held = self.list_of(list.identity_key());
        if held.is_some_and(|h| !list.supersedes(h)) {
            return Admitted::Unchanged;
        }
        let before = held.map(|h| h.installations().to_vec()).unwrap_or_default();
        let added = list
            .installations()
            .iter()
            .filter(|i| !before.contains(i))
            .copied()
            .collect();
        let removed = before.iter().filter(|i| !list.contains(i)).copied().collect();
        if *list.identity_key() == *self.own.identity_key() {
            self.own = list;
        } else {
            self.admitted += 1;
            self.lists
                .insert(list.identity_key().serialize().to_vec(), (self.admitted, list));
            if self.lists.len() > MAX_ACCOUNTS
                && let Some(oldest) = self.lists.iter().min_by_key(|(_, (n, _))| *n).map(|(k, _)| k.clone())
            {
                self.lists.remove(&oldest);
            }
        }
        Admitted::Updated { added, removed }
    }

    /// Notes that `installation` was active at `now_ms` (a message from it,
    /// a session becoming ready).
    pub fn touch(&mut self, installation: InstallationId, now_ms: u64) {
        if self.active.len() >= MAX_ACCOUNTS * MAX_DEVICES && !self.active.contains_key(&installation) {
            // Bounded: the least recently active is forgotten.
            if let Some(oldest) = self.active.iter().min_by_key(|(_, at)| **at).map(|(i, _)| *i) {
                self.active.remove(&oldest);
            }
        }
        self.active.insert(installation, now_ms);
    }

    /// When `installation` was last active, Unix ms, as far as this book
    /// saw.
    pub fn last_active(&self, installation: &InstallationId) -> Option<u64> {
        self.active.get(installation).copied()
    }

    /// The installations a text to `account` goes to: its listed devices
    /// or, while no list is known, `pinned` (the installations pinned to
    /// it); never this installation; most recently active first, at most
    /// `max`.
    pub fn targets(&self, account: &IdentityKey, pinned: &[InstallationId], max: usize) -> Vec<InstallationId> {
        let mut targets: Vec<InstallationId> = match self.list_of(account) {
            Some(list) => list.installations().to_vec(),
            None => pinned.to_vec(),
        };
        targets.retain(|i| *i != self.local);
        targets.sort_unstable();
        targets.dedup();
        let last = |i: &InstallationId| self.active.get(i).copied().unwrap_or(0);
        targets.sort_by_key(|i| std::cmp::Reverse(last(i)));
        targets.truncate(max);
        targets
    }

    /// Signs and takes a new list of this account: the current one with
    /// `add` and without `remove`. The caller stores it and spreads it.
    pub fn change<R: Rng + CryptoRng>(
        &mut self,
        local: &InstallationIdentity,
        add: &[InstallationId],
        remove: &[InstallationId],
        now_ms: u64,
        rng: &mut R,
    ) -> Result<VerifiedDeviceList, SessionError> {
        let mut installations: Vec<InstallationId> = self.own.installations().to_vec();
        installations.extend_from_slice(add);
        installations.retain(|i| !remove.contains(i));
        installations.sort_unstable();
        installations.dedup();
        if installations.is_empty() {
            return Err(SessionError::Misuse("an account keeps at least one device"));
        }
        if installations.len() > MAX_DEVICES {
            return Err(SessionError::Misuse("an account has at most 17 devices"));
        }
        let list = sign_device_list(
            local.account(),
            next_version(self.own.version(), now_ms),
            &installations,
            rng,
        )?;
        self.own = list.clone();
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use strata_cascade::AccountIdentity;

    use super::*;

    fn installation(account: &AccountIdentity) -> InstallationIdentity {
        InstallationIdentity::generate(account.clone(), &mut rand::rng()).unwrap()
    }

    #[test]
    fn a_first_device_signs_a_list_naming_itself() {
        let mut rng = rand::rng();
        let me = installation(&AccountIdentity::generate(&mut rng));
        let (book, signed) = DeviceBook::new(&me, [], 5_000, &mut rng).unwrap();
        let signed = signed.unwrap();
        assert_eq!(signed.installations(), &[me.installation_id()]);
        assert_eq!(signed.version(), 5_000);
        assert!(book.paired());
        assert!(book.own_devices().is_empty());
        // Built again from what it stored, it signs nothing new.
        let (again, none) = DeviceBook::new(&me, [signed.clone()], 9_000, &mut rng).unwrap();
        assert!(none.is_none());
        assert_eq!(again.own(), &signed);
    }

    #[test]
    fn lists_are_taken_only_when_newer_and_report_what_changed() {
        let mut rng = rand::rng();
        let me = installation(&AccountIdentity::generate(&mut rng));
        let (mut book, _) = DeviceBook::new(&me, [], 1, &mut rng).unwrap();
        let them = AccountIdentity::generate(&mut rng);
        let (a, b, c) = (installation(&them), installation(&them), installation(&them));
        let v1 = sign_device_list(&them, 10, &[a.installation_id(), b.installation_id()], &mut rng).unwrap();
        let v2 = sign_device_list(&them, 11, &[a.installation_id(), c.installation_id()], &mut rng).unwrap();
        assert!(matches!(book.admit(v1.clone()), Admitted::Updated { .. }));
        assert_eq!(
            book.admit(v2.clone()),
            Admitted::Updated {
                added: vec![c.installation_id()],
                removed: vec![b.installation_id()]
            }
        );
        assert_eq!(book.admit(v1), Admitted::Unchanged, "an older list never rolls back");
        assert_eq!(book.admit(v2.clone()), Admitted::Unchanged);
        assert_eq!(book.list_of(them.identity_key()), Some(&v2));
    }

    #[test]
    fn a_text_goes_to_the_listed_devices_most_recently_active_first() {
        let mut rng = rand::rng();
        let me = installation(&AccountIdentity::generate(&mut rng));
        let (mut book, _) = DeviceBook::new(&me, [], 1, &mut rng).unwrap();
        let them = AccountIdentity::generate(&mut rng);
        let devices: Vec<InstallationId> = (0..4).map(|_| installation(&them).installation_id()).collect();
        let stale = installation(&them).installation_id();
        // No list yet: the pinned installations, stale one included.
        let pinned = [devices[0], stale];
        assert_eq!(book.targets(them.identity_key(), &pinned, 3).len(), 2);
        book.admit(sign_device_list(&them, 10, &devices, &mut rng).unwrap());
        book.touch(devices[2], 300);
        book.touch(devices[0], 200);
        book.touch(stale, 900);
        let targets = book.targets(them.identity_key(), &pinned, 3);
        assert_eq!(&targets[..2], &[devices[2], devices[0]]);
        assert_eq!(targets.len(), 3);
        assert!(
            !targets.contains(&stale),
            "a list that does not name it wins over a pin"
        );
        assert_eq!(book.targets(them.identity_key(), &pinned, 10).len(), 4);
    }

    #[test]
    fn a_removed_device_knows_it_is_partitioned() {
        let mut rng = rand::rng();
        let account = AccountIdentity::generate(&mut rng);
        let (first, second) = (installation(&account), installation(&account));
        let (mut one, _) = DeviceBook::new(&first, [], 1, &mut rng).unwrap();
        let paired = one
            .change(&first, &[second.installation_id()], &[], 2, &mut rng)
            .unwrap();
        assert_eq!(one.own_devices(), vec![second.installation_id()]);
        let (mut two, _) = DeviceBook::new(&second, [], 1, &mut rng).unwrap();
        assert!(matches!(two.admit(paired), Admitted::Updated { .. }));
        assert!(two.paired());
        assert_eq!(two.own_devices(), vec![first.installation_id()]);
        let removed = one
            .change(&first, &[], &[second.installation_id()], 3, &mut rng)
            .unwrap();
        two.admit(removed);
        assert!(!two.paired());
        assert!(
            one.change(&first, &[], &[first.installation_id()], 4, &mut rng)
                .is_err()
        );
    }
}
