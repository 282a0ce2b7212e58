//! This installation's KeyPackage pool, with polyproto-mls rules:
//!
//! - N one-time KeyPackages plus one reusable last-resort package;
//! - a claim hands out each one-time package at most once (the claim is one
//!   write transaction, and writers are serialised), and falls back to the
//!   last-resort package only when no one-time package is left;
//! - `init_key` is unique across the pool;
//! - expired packages are deleted and never handed out;
//! - when the one-time stock falls below a threshold the claim reports
//!   [`LowKeyPackages`] (its payload is ours: polyproto never defined one),
//!   and the owner refills with [`Writer::add_key_packages`];
//! - once the last-resort package has been served it is flagged for
//!   replacement, which [`Writer::replace_last_resort`] performs;
//! - identity rotation replaces the whole pool in one transaction
//!   ([`Writer::replace_pool`]).
//!
//! For `strata keys`, [`Writer::key_package_status`] also reports when the
//! last-resort package was added (the `now_s` given to
//! [`Writer::add_key_packages`]), the next expiry, and the claims of the
//! last hour. Claims are counted per minute of `now_s`, in the claim's
//! transaction; counters older than an hour are dropped on each claim, so
//! the record holds at most [`CLAIM_WINDOW_MINUTES`] counters (16 bytes
//! each), whatever the claim rate.
//!
//! Each package's private parts (the cascade's `KeyPackageSecrets` blob,
//! opaque here) are sealed in a row of their own beside it and added with
//! it. Two ways out:
//!
//! - [`Writer::claim_key_package`] hands the private parts back with the
//!   package and deletes them (the handshake's step 2: the caller's MLS
//!   layer holds them from then on);
//! - [`Writer::hand_out_key_package`] (a peer's claim over a session)
//!   keeps them, sealed, in a *held* row naming the claimer, until the
//!   claimer's Welcome redeems them ([`Writer::redeem_key_package`]) or the
//!   package expires. A one-time package is redeemed once, by its claimer
//!   only; the last resort by anyone, until it expires — its private parts
//!   outlive its replacement while it is held. At most
//!   [`MAX_HELD_KEY_PACKAGES`] one-time packages are held at once; above
//!   that, claims are served the last resort, so claims cannot fill the
//!   disk.
//!
//! The node keeps this pool stocked (`strata_session::pool`).

use strata_cascade::{GeneratedKeyPackage, SecretBytes};

use crate::error::StoreError;
use crate::kv::Table;
use crate::records::StoredKeyPackage;
use crate::sealing::{open_sealed, put_sealed};
use crate::store::Writer;

/// Row prefixes inside [`Table::KeyPackages`].
const PACKAGE: u8 = b'p';
const INIT_KEY: u8 = b'i';
/// The sealed private parts of the package with this `key_ref`.
const SECRETS: u8 = b's';
const LAST_RESORT: &[u8] = b"r";
const LAST_RESORT_USED: &[u8] = b"u";
/// When the last-resort package was added: Unix seconds, big-endian.
const LAST_RESORT_ADDED: &[u8] = b"a";
/// Claim counters: `(minute, count)` pairs, 8 bytes big-endian each.
const CLAIMS: &[u8] = b"c";

/// A package handed out to a peer and not used yet: [`Held`], keyed by
/// its `key_ref`.
const HELD: u8 = b'h';
/// The held packages by expiry: `not_after_s` (8 bytes, big-endian), then
/// the `key_ref`; empty values. Sweeps read only what expired.
const HELD_BY_EXPIRY: u8 = b'e';
/// The one-time stock by expiry, like [`HELD_BY_EXPIRY`]: claims take the
/// soonest-expiring package and sweeps and counts read keys only.
const STOCK_BY_EXPIRY: u8 = b'x';
/// How many one-time packages are held: 8 bytes, big-endian.
const HELD_COUNT: &[u8] = b"n";

/// How many one-minute claim counters the pool keeps: an hour's worth.
pub const CLAIM_WINDOW_MINUTES: u64 = 60;

/// Most one-time packages handed out to peers and held (their private
/// parts kept) at once; claims above it are served the last resort. With
/// a package's private parts at about 1 KiB sealed, 4 MiB of store.
pub const MAX_HELD_KEY_PACKAGES: usize = 4096;

/// A handed-out package whose private parts are kept for its Welcome.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Held {
    /// The installation that claimed it (hex); a last resort is anyone's.
    claimer: String,
    not_after_s: u64,
    last_resort: bool,
}

/// A KeyPackage of ours in the pool; its `init_key` is unique across the
/// pool.
pub type PooledKeyPackage = StoredKeyPackage;

/// A package of ours with its private parts, as added to the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEntry {
    /// The package's public bytes and what the rules need to know of it.
    pub package: PooledKeyPackage,
    /// Its private parts (`KeyPackageSecrets` bytes, opaque to the store),
    /// sealed beside it.
    pub secrets: SecretBytes,
}

impl From<&GeneratedKeyPackage> for PoolEntry {
    fn from(made: &GeneratedKeyPackage) -> Self {
        Self {
            package: (&made.package).into(),
            secrets: SecretBytes::from_vec(made.secrets.as_bytes().to_vec()),
        }
    }
}

/// Raised when a claim leaves fewer one-time packages than the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowKeyPackages {
    /// One-time packages left.
    pub available: u64,
    /// The threshold that was crossed.
    pub threshold: u64,
    /// Whether the last-resort package has been served since it was made.
    pub last_resort_used: bool,
}

/// What a claim handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The package.
    pub package: PooledKeyPackage,
    /// Its private parts, as added. A one-time package's are no longer in
    /// the store: the caller keeps them until a Welcome for the package
    /// arrives or it expires.
    pub secrets: SecretBytes,
    /// Set when the pool needs refilling.
    pub low: Option<LowKeyPackages>,
}

/// What [`Writer::hand_out_key_package`] handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOut {
    /// The package, for the claimer.
    pub package: PooledKeyPackage,
    /// Set when the pool needs refilling.
    pub low: Option<LowKeyPackages>,
}

/// The pool's stock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// Unexpired one-time packages.
    pub available: u64,
    /// Whether an unexpired last-resort package is present.
    pub has_last_resort: bool,
    /// Whether it has been served and awaits replacement.
    pub last_resort_used: bool,
    /// When the unexpired last-resort package was added (Unix seconds, the
    /// `now_s` given to [`Writer::add_key_packages`]); `None` without one, or
    /// for one added before the store recorded it.
    pub last_resort_added_s: Option<u64>,
    /// The earliest `not_after_s` among the unexpired packages, last-resort
    /// one included; `None` for an empty pool.
    pub next_expiry_s: Option<u64>,
    /// Claims served in the last hour: those counted in the minute of
    /// `now_s` and the 59 before it.
    pub claims_last_hour: u64,
    /// One-time packages handed out to peers whose private parts are kept
    /// until a Welcome redeems them or they expire (expired ones count until
    /// the next sweep).
    pub held: u64,
}

fn encode_claims(counters: &[(u64, u64)]) -> Vec<u8> {
    counters
        .iter()
        .flat_map(|(minute, count)| minute.to_be_bytes().into_iter().chain(count.to_be_bytes()))
        .collect()
}

fn decode_claims(bytes: &[u8]) -> Result<Vec<(u64, u64)>, StoreError> {
    if !bytes.len().is_multiple_of(16) {
        return Err(StoreError::Corrupt {
            table: Table::KeyPackages.name(),
            reason: "a claim record of the wrong length".into(),
        });
    }
    Ok(bytes
        .chunks_exact(16)
        .map(|c| {
            let (minute, count) = c.split_at(8);
            (
                u64::from_be_bytes(minute.try_into().unwrap_or_default()),
                u64::from_be_bytes(count.try_into().unwrap_or_default()),
            )
        })
        .collect())
}

/// Whether the counter of `minute` is within the hour ending in the minute
/// of `now_s`.
fn in_window(minute: u64, now_s: u64) -> bool {
    let now_minute = now_s / 60;
    minute <= now_minute && now_minute - minute < CLAIM_WINDOW_MINUTES
}

fn expiry_row(prefix: u8, not_after_s: u64, key_ref: &[u8]) -> Vec<u8> {
    let mut key = row(prefix, &not_after_s.to_be_bytes());
    key.extend_from_slice(key_ref);
    key
}

/// The `not_after_s` and `key_ref` of an expiry index row.
fn split_expiry(key: &[u8]) -> (u64, &[u8]) {
    let (not_after, key_ref) = key.get(1..).unwrap_or_default().split_at_checked(8).unwrap_or_default();
    (<[u8; 8]>::try_from(not_after).map_or(0, u64::from_be_bytes), key_ref)
}

fn row(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(prefix);
    key.extend_from_slice(id);
    key
}

impl Writer<'_> {
    /// Adds one-time packages and/or a last-resort package (replacing the
    /// current last-resort one). Refuses the whole batch if any `init_key`
    /// is already in the pool or repeated in the batch, or if it holds more
    /// than one last-resort package. `now_s` is when, for a last resort's
    /// age.
    pub fn add_key_packages(&mut self, entries: &[PoolEntry], now_s: u64) -> Result<(), StoreError> {
        if entries.iter().filter(|e| e.package.last_resort).count() > 1 {
            return Err(StoreError::Misuse("more than one last-resort KeyPackage".into()));
        }
        for PoolEntry { package, secrets } in entries {
            let index = row(INIT_KEY, &package.init_key);
            if self.raw().get(Table::KeyPackages, &index)?.is_some() {
                return Err(StoreError::Misuse("KeyPackage init_key already in the pool".into()));
            }
            if package.last_resort {
                self.drop_last_resort()?;
                self.put_pool_record(LAST_RESORT, package)?;
                self.raw_mut().delete(Table::KeyPackages, LAST_RESORT_USED)?;
                self.raw_mut()
                    .put(Table::KeyPackages, LAST_RESORT_ADDED, &now_s.to_be_bytes())?;
            } else {
                self.put_pool_record(&row(PACKAGE, &package.key_ref), package)?;
                self.raw_mut().put(
                    Table::KeyPackages,
                    &expiry_row(STOCK_BY_EXPIRY, package.not_after_s, &package.key_ref),
                    &[],
                )?;
            }
            self.raw_mut().put(Table::KeyPackages, &index, &package.key_ref)?;
            let (tx, key) = self.sealing();
            put_sealed(
                tx,
                key,
                Table::KeyPackages,
                &row(SECRETS, &package.key_ref),
                secrets.as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Hands out one package: an unexpired one-time package (deleted as it
    /// is handed out), or the last-resort package when none is left.
    /// Expired packages met on the way are deleted. The private parts come
    /// back with it and leave the store (a one-time package's; the last
    /// resort keeps its own).
    pub fn claim_key_package(&mut self, now_s: u64, threshold: u64) -> Result<Claim, StoreError> {
        self.expire_key_packages(now_s)?;
        let package = match self.take_one_time()? {
            Some(package) => {
                let secrets = self.pool_secrets(&package.key_ref)?;
                self.raw_mut()
                    .delete(Table::KeyPackages, &row(SECRETS, &package.key_ref))?;
                (package, secrets)
            }
            None => {
                let package = self.serve_last_resort()?;
                let secrets = self.pool_secrets(&package.key_ref)?;
                (package, secrets)
            }
        };
        let (package, secrets) = package;
        let low = self.count_claim(now_s, threshold)?;
        Ok(Claim { package, secrets, low })
    }

    /// Hands out one package to `claimer` (an installation, hex) for later
    /// use: an unexpired one-time package when `one_time` allows it and
    /// fewer than [`MAX_HELD_KEY_PACKAGES`] are held, else the last resort.
    /// Its private parts stay, held for the claimer, until
    /// [`Writer::redeem_key_package`] or expiry.
    pub fn hand_out_key_package(
        &mut self,
        claimer: &str,
        one_time: bool,
        now_s: u64,
        threshold: u64,
    ) -> Result<HandOut, StoreError> {
        self.expire_key_packages(now_s)?;
        let room = self.held_count()? < MAX_HELD_KEY_PACKAGES as u64;
        let one_time = if one_time && room { self.take_one_time()? } else { None };
        let (package, held) = match one_time {
            Some(package) => {
                let held = Held {
                    claimer: claimer.to_owned(),
                    not_after_s: package.not_after_s,
                    last_resort: false,
                };
                (package, held)
            }
            None => {
                let package = self.serve_last_resort()?;
                let held = Held {
                    claimer: String::new(),
                    not_after_s: package.not_after_s,
                    last_resort: true,
                };
                (package, held)
            }
        };
        self.hold(&package.key_ref, &held)?;
        let low = self.count_claim(now_s, threshold)?;
        Ok(HandOut { package, low })
    }

    /// The private parts of the package `key_ref` that was handed out to
    /// `claimer` ([`Writer::hand_out_key_package`]), for joining from its
    /// Welcome: a one-time package's leave the store (used once); the last
    /// resort's stay until it expires. `None` when the package was not
    /// handed out to `claimer`, was used already, or expired at `now_s`.
    pub fn redeem_key_package(
        &mut self,
        claimer: &str,
        key_ref: &[u8],
        now_s: u64,
    ) -> Result<Option<SecretBytes>, StoreError> {
        let key = row(HELD, key_ref);
        let Some(held) = self.record::<Held>(Table::KeyPackages, &key)? else {
            return Ok(None);
        };
        if held.not_after_s < now_s {
            self.unhold(key_ref, &held)?;
            return Ok(None);
        }
        if !held.last_resort && held.claimer != claimer {
            return Ok(None);
        }
        let secrets = self.pool_secrets(key_ref)?;
        if !held.last_resort {
            self.unhold(key_ref, &held)?;
        }
        Ok(Some(secrets))
    }

    /// Records `key_ref` as handed out (replacing an earlier record of it).
    fn hold(&mut self, key_ref: &[u8], held: &Held) -> Result<(), StoreError> {
        if let Some(old) = self.record::<Held>(Table::KeyPackages, &row(HELD, key_ref))? {
            self.unhold(key_ref, &old)?;
        }
        self.put_record(Table::KeyPackages, &row(HELD, key_ref), held)?;
        self.raw_mut().put(
            Table::KeyPackages,
            &expiry_row(HELD_BY_EXPIRY, held.not_after_s, key_ref),
            &[],
        )?;
        if !held.last_resort {
            self.set_held_count(self.held_count()? + 1)?;
        }
        Ok(())
    }

    /// Forgets a handed-out package and, unless it is the current last
    /// resort, its private parts.
    fn unhold(&mut self, key_ref: &[u8], held: &Held) -> Result<(), StoreError> {
        self.raw_mut().delete(Table::KeyPackages, &row(HELD, key_ref))?;
        self.raw_mut().delete(
            Table::KeyPackages,
            &expiry_row(HELD_BY_EXPIRY, held.not_after_s, key_ref),
        )?;
        if !held.last_resort {
            self.set_held_count(self.held_count()?.saturating_sub(1))?;
        }
        self.release_secrets(key_ref)
    }

    fn held_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .raw()
            .get(Table::KeyPackages, HELD_COUNT)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn set_held_count(&mut self, n: u64) -> Result<(), StoreError> {
        self.raw_mut().put(Table::KeyPackages, HELD_COUNT, &n.to_be_bytes())
    }

    /// Takes the soonest-expiring one-time package out of the stock (its
    /// private parts stay, for the caller to take or hold). The caller
    /// swept expired ones first.
    fn take_one_time(&mut self) -> Result<Option<PooledKeyPackage>, StoreError> {
        let next = self
            .raw()
            .scan(Table::KeyPackages, &[STOCK_BY_EXPIRY], 1)?
            .into_iter()
            .next();
        let Some((index, _)) = next else {
            return Ok(None);
        };
        let package = self.remove_one_time(&index)?;
        Ok(Some(package))
    }

    /// Removes the one-time package of the stock index row `index` (its
    /// private parts stay).
    fn remove_one_time(&mut self, index: &[u8]) -> Result<PooledKeyPackage, StoreError> {
        let (_, key_ref) = split_expiry(index);
        let key = row(PACKAGE, key_ref);
        let package: PooledKeyPackage = self.pool_record(&key)?;
        self.raw_mut().delete(Table::KeyPackages, &key)?;
        self.raw_mut()
            .delete(Table::KeyPackages, &row(INIT_KEY, &package.init_key))?;
        self.raw_mut().delete(Table::KeyPackages, index)?;
        Ok(package)
    }

    /// The last-resort package, flagged as served.
    fn serve_last_resort(&mut self) -> Result<PooledKeyPackage, StoreError> {
        let package: PooledKeyPackage = self
            .pool_record(LAST_RESORT)
            .map_err(|_| StoreError::Misuse("the KeyPackage pool is empty and has no last-resort package".into()))?;
        self.raw_mut().put(Table::KeyPackages, LAST_RESORT_USED, &[1])?;
        Ok(package)
    }

    /// Deletes the private parts of `key_ref`, unless they belong to the
    /// current last resort.
    fn release_secrets(&mut self, key_ref: &[u8]) -> Result<(), StoreError> {
        let current = self.pool_record::<PooledKeyPackage>(LAST_RESORT).ok();
        if current.is_none_or(|p| p.key_ref != key_ref) {
            self.raw_mut().delete(Table::KeyPackages, &row(SECRETS, key_ref))?;
        }
        Ok(())
    }

    /// Deletes every package whose lifetime ended before `now_s`; returns
    /// how many.
    pub fn expire_key_packages(&mut self, now_s: u64) -> Result<usize, StoreError> {
        let mut expired = 0;
        // In expiry order: stops at the first package still valid.
        loop {
            let first = self.raw().scan(Table::KeyPackages, &[STOCK_BY_EXPIRY], 1)?;
            let Some((index, _)) = first.into_iter().next() else {
                break;
            };
            if split_expiry(&index).0 >= now_s {
                break;
            }
            let package = self.remove_one_time(&index)?;
            self.raw_mut()
                .delete(Table::KeyPackages, &row(SECRETS, &package.key_ref))?;
            expired += 1;
        }
        // In expiry order: stops at the first held package still valid.
        loop {
            let first = self.raw().scan(Table::KeyPackages, &[HELD_BY_EXPIRY], 1)?;
            let Some((key, _)) = first.into_iter().next() else {
                break;
            };
            let (not_after_s, key_ref) = split_expiry(&key);
            if not_after_s >= now_s {
                break;
            }
            match self.record::<Held>(Table::KeyPackages, &row(HELD, key_ref))? {
                Some(held) => self.unhold(key_ref, &held)?,
                None => {
                    self.raw_mut().delete(Table::KeyPackages, &key)?;
                }
            }
        }
        if let Ok(package) = self.pool_record::<PooledKeyPackage>(LAST_RESORT)
            && package.not_after_s < now_s
        {
            self.drop_last_resort()?;
            expired += 1;
        }
        Ok(expired)
    }

    /// Installs a fresh last-resort package after the old one was served.
    pub fn replace_last_resort(&mut self, entry: &PoolEntry, now_s: u64) -> Result<(), StoreError> {
        if !entry.package.last_resort {
            return Err(StoreError::Misuse("not a last-resort KeyPackage".into()));
        }
        self.add_key_packages(std::slice::from_ref(entry), now_s)
    }

    /// Identity rotation: drops every package and installs `packages` (which
    /// must include a last-resort one), all in this transaction. Packages
    /// already handed out stay redeemable until they expire.
    pub fn replace_pool(&mut self, entries: &[PoolEntry], now_s: u64) -> Result<(), StoreError> {
        if !entries.iter().any(|e| e.package.last_resort) {
            return Err(StoreError::Misuse(
                "a rotated pool needs a last-resort KeyPackage".into(),
            ));
        }
        let held: std::collections::BTreeSet<Vec<u8>> = self
            .raw()
            .scan(Table::KeyPackages, &[HELD], usize::MAX)?
            .into_iter()
            .filter_map(|(key, _)| key.get(1..).map(|r| row(SECRETS, r)))
            .collect();
        let kept = |key: &[u8]| {
            key == CLAIMS
                || key == HELD_COUNT
                || key.first().is_some_and(|k| [HELD, HELD_BY_EXPIRY].contains(k))
                || held.contains(key)
        };
        for (key, _) in self.raw().scan(Table::KeyPackages, &[], usize::MAX)? {
            // The claims served are history, not stock, and what was handed
            // out is the claimers': they stay.
            if !kept(&key) {
                self.raw_mut().delete(Table::KeyPackages, &key)?;
            }
        }
        self.add_key_packages(entries, now_s)
    }

    /// The pool's stock at `now_s` (expired packages do not count).
    pub fn key_package_status(&self, now_s: u64) -> Result<PoolStatus, StoreError> {
        let mut available = 0;
        let mut next_expiry_s: Option<u64> = None;
        for (index, _) in self.raw().scan(Table::KeyPackages, &[STOCK_BY_EXPIRY], usize::MAX)? {
            let not_after_s = split_expiry(&index).0;
            if not_after_s >= now_s {
                available += 1;
                next_expiry_s.get_or_insert(not_after_s);
            }
        }
        let last_resort = self
            .pool_record::<PooledKeyPackage>(LAST_RESORT)
            .ok()
            .filter(|p| p.not_after_s >= now_s);
        let has_last_resort = last_resort.is_some();
        let mut last_resort_added_s = None;
        if let Some(p) = &last_resort {
            next_expiry_s = Some(next_expiry_s.map_or(p.not_after_s, |n| n.min(p.not_after_s)));
            last_resort_added_s = self
                .raw()
                .get(Table::KeyPackages, LAST_RESORT_ADDED)?
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_be_bytes);
        }
        let last_resort_used = self.raw().get(Table::KeyPackages, LAST_RESORT_USED)?.is_some();
        let held = self.held_count()?;
        let claims_last_hour = self
            .claim_counters()?
            .into_iter()
            .filter(|(minute, _)| in_window(*minute, now_s))
            .map(|(_, count)| count)
            .sum();
        Ok(PoolStatus {
            available,
            has_last_resort,
            last_resort_used,
            last_resort_added_s,
            next_expiry_s,
            claims_last_hour,
            held,
        })
    }

    fn claim_counters(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        match self.raw().get(Table::KeyPackages, CLAIMS)? {
            Some(bytes) => decode_claims(&bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Counts a claim at `now_s`; reports a stock below `threshold`.
    fn count_claim(&mut self, now_s: u64, threshold: u64) -> Result<Option<LowKeyPackages>, StoreError> {
        self.count_claim_minute(now_s)?;
        let status = self.key_package_status(now_s)?;
        Ok((status.available < threshold).then_some(LowKeyPackages {
            available: status.available,
            threshold,
            last_resort_used: status.last_resort_used,
        }))
    }

    /// Counts a claim at `now_s` and drops the counters that left the hour.
    fn count_claim_minute(&mut self, now_s: u64) -> Result<(), StoreError> {
        let minute = now_s / 60;
        let mut counters = self.claim_counters()?;
        counters.retain(|(m, _)| in_window(*m, now_s));
        match counters.iter_mut().find(|(m, _)| *m == minute) {
            Some((_, count)) => *count += 1,
            None => counters.push((minute, 1)),
        }
        self.raw_mut()
            .put(Table::KeyPackages, CLAIMS, &encode_claims(&counters))
    }

    fn drop_last_resort(&mut self) -> Result<(), StoreError> {
        if let Ok(old) = self.pool_record::<PooledKeyPackage>(LAST_RESORT) {
            self.raw_mut()
                .delete(Table::KeyPackages, &row(INIT_KEY, &old.init_key))?;
            // Handed out, it stays redeemable until it expires.
            if self.raw().get(Table::KeyPackages, &row(HELD, &old.key_ref))?.is_none() {
                self.raw_mut().delete(Table::KeyPackages, &row(SECRETS, &old.key_ref))?;
            }
        }
        self.raw_mut().delete(Table::KeyPackages, LAST_RESORT)?;
        self.raw_mut().delete(Table::KeyPackages, LAST_RESORT_ADDED)?;
        Ok(())
    }

    /// The sealed private parts of the package `key_ref`; a package
    /// without them is a damaged pool.
    fn pool_secrets(&self, key_ref: &[u8]) -> Result<SecretBytes, StoreError> {
        let (tx, key) = self.sealing_read();
        let mut secrets =
            open_sealed(tx, key, Table::KeyPackages, &row(SECRETS, key_ref))?.ok_or(StoreError::Corrupt {
                table: Table::KeyPackages.name(),
                reason: "a pooled KeyPackage without its private parts".into(),
            })?;
        Ok(SecretBytes::from_vec(std::mem::take(&mut *secrets)))
    }

    fn pool_record<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<T, StoreError> {
        self.record(Table::KeyPackages, key)?
            .ok_or_else(|| StoreError::Misuse("no such KeyPackage".into()))
    }

    fn put_pool_record(&mut self, key: &[u8], package: &PooledKeyPackage) -> Result<(), StoreError> {
        self.put_record(Table::KeyPackages, key, package)
    }
}
