//! Account recovery (54/WAKU2-X3DH-SESSIONS: "account recovery is the same
//! as adding a new device"): `strata account export` writes the account
//! key sealed with a passphrase; `strata init --restore FILE` makes a new
//! installation of that account on a fresh data directory.
//!
//! A restored device is a new installation: contacts see a new device of
//! the same account (the same peer id and safety number, no identity
//! change), and it signs a device list naming only itself, newer than any
//! before: the account's other devices, if any are left, pair again.
//!
//! # Backup file (JSON)
//!
//! ```text
//! {"format": "strata-account-backup/1", "peerId": …, "salt": b64 (16 B),
//!  "mCostKib": …, "tCost": …, "pCost": …, "sealed": b64}
//! ```
//!
//! `sealed` is the account key pair (`AccountIdentity::export`) sealed with
//! the key Argon2id derives from `STRATA_BACKUP_PASSPHRASE` and the salt
//! (`strata_cascade::at_rest`), bound to `"strata/v1/account-backup"` and
//! the peer id: a file whose peer id was changed does not open.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use strata_cascade::AccountIdentity;
use strata_cascade::at_rest::{KdfParams, StorageKey};
use zeroize::Zeroizing;

use crate::error::{AppError, ErrorKind, Result};
use crate::identity::{Local, PeerId};

/// The variable the backup passphrase comes from.
pub(crate) const BACKUP_PASSPHRASE_ENV: &str = "STRATA_BACKUP_PASSPHRASE";

const FORMAT: &str = "strata-account-backup/1";
const LABEL: &[u8] = b"strata/v1/account-backup";
/// Shortest passphrase accepted: the file may leave the machine.
const MIN_PASSPHRASE: usize = 12;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Backup {
    format: String,
    peer_id: String,
    salt: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    sealed: String,
}

/// The backup passphrase, from [`BACKUP_PASSPHRASE_ENV`].
pub(crate) fn passphrase() -> Result<Zeroizing<Vec<u8>>> {
    let value = std::env::var(BACKUP_PASSPHRASE_ENV).map_err(|_| {
        AppError::new(ErrorKind::Locked, format!("{BACKUP_PASSPHRASE_ENV} is not set"))
            .hint("set it to the passphrase that seals (or sealed) the account backup")
    })?;
    if value.chars().count() < MIN_PASSPHRASE {
        return Err(AppError::new(
            ErrorKind::Usage,
            format!("{BACKUP_PASSPHRASE_ENV} is shorter than {MIN_PASSPHRASE} characters"),
        )
        .hint("a backup may leave this machine: use a long passphrase"));
    }
    Ok(Zeroizing::new(value.into_bytes()))
}

fn aad(peer_id: &str) -> Vec<u8> {
    [LABEL, &[0], peer_id.as_bytes()].concat()
}

/// The backup of `local`'s account key, sealed with `passphrase`.
pub(crate) fn export(local: &Local, passphrase: &[u8]) -> Result<String> {
    let mut rng = rand::rng();
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let params = KdfParams::RECOMMENDED;
    let key =
        StorageKey::derive(passphrase, &salt, params).map_err(|e| AppError::caused("cannot derive the key", &e))?;
    let peer_id = local.peer_id().to_string();
    let secret = local.installation().account().export();
    let sealed = key
        .seal(&aad(&peer_id), secret.as_bytes(), &mut rng)
        .map_err(|e| AppError::caused("cannot seal the account key", &e))?;
    let backup = Backup {
        format: FORMAT.to_owned(),
        peer_id,
        salt: STANDARD.encode(salt),
        m_cost_kib: params.m_cost_kib,
        t_cost: params.t_cost,
        p_cost: params.p_cost,
        sealed: STANDARD.encode(sealed),
    };
    serde_json::to_string_pretty(&backup).map_err(|e| AppError::internal(e.to_string()))
}

/// The account key in a backup, opened with `passphrase`. A wrong
/// passphrase, or a changed file, is `locked`; a file that is no backup is
/// `usage`.
pub(crate) fn restore(text: &str, passphrase: &[u8]) -> Result<AccountIdentity> {
    let bad = |why: &str| {
        AppError::new(ErrorKind::Usage, format!("not a Strata account backup: {why}"))
            .hint("`strata account export` writes one")
    };
    let backup: Backup = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    if backup.format != FORMAT {
        return Err(bad(&format!("format {:?}", backup.format)));
    }
    let salt: [u8; 16] = STANDARD
        .decode(&backup.salt)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("salt"))?;
    let sealed = STANDARD.decode(&backup.sealed).map_err(|_| bad("sealed"))?;
    // Bounded: a hostile file must not ask for gigabytes of memory.
    if backup.m_cost_kib > 1024 * 1024 || backup.t_cost > 16 || backup.p_cost > 16 {
        return Err(bad("unreasonable key-derivation cost"));
    }
    let params = KdfParams {
        m_cost_kib: backup.m_cost_kib,
        t_cost: backup.t_cost,
        p_cost: backup.p_cost,
    };
    let key = StorageKey::derive(passphrase, &salt, params).map_err(|_| bad("key-derivation cost"))?;
    let opened = key.open(&aad(&backup.peer_id), &sealed).map_err(|_| {
        AppError::new(ErrorKind::Locked, "the backup does not open with this passphrase")
            .hint(format!("check {BACKUP_PASSPHRASE_ENV}; nothing was written"))
    })?;
    let account = AccountIdentity::import(&opened).map_err(|_| bad("the sealed key"))?;
    if PeerId::from_key(*account.identity_key()).to_string() != backup.peer_id {
        return Err(bad("its key is not its peer id's"));
    }
    Ok(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_opens_with_its_passphrase_only() {
        let local = Local::generate().unwrap();
        let text = export(&local, b"correct horse battery").unwrap();
        let account = restore(&text, b"correct horse battery").unwrap();
        assert_eq!(account.identity_key(), local.installation().account().identity_key());
        let wrong = restore(&text, b"wrong horse battery!").unwrap_err();
        assert_eq!(wrong.kind, ErrorKind::Locked);
        // Another peer id in the file: the seal is bound to it.
        let mut backup: Backup = serde_json::from_str(&text).unwrap();
        backup.peer_id = Local::generate().unwrap().peer_id().to_string();
        let moved = serde_json::to_string(&backup).unwrap();
        assert_eq!(
            restore(&moved, b"correct horse battery").unwrap_err().kind,
            ErrorKind::Locked
        );
        assert_eq!(restore("{}", b"x").unwrap_err().kind, ErrorKind::Usage);
    }
}
