//! The data directory and the files in it.
//!
//! ```text
//! <data dir>/            mode 0700
//!   config.toml          the node's configuration (commented; written by `init`)
//!   store.redb           the sealed store: identity, sessions, contacts, messages
//!   storage.key          the store's key, mode 0600 (absent with STRATA_PASSPHRASE)
//!   api.json             while `strata run` is up: where its control API listens
//!   api.token            while `strata run` is up: the API's bearer token, mode 0600
//! ```
//!
//! The directory is `--data-dir`, else `$STRATA_HOME`, else the platform's
//! data directory (`~/.local/share/strata` on Linux).

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::error::{AppError, ErrorKind, Result};

/// The data directory of one node.
#[derive(Clone, Debug)]
pub(crate) struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// `explicit` (from `--data-dir` or `STRATA_HOME`), else the platform
    /// default.
    pub(crate) fn resolve(explicit: Option<PathBuf>) -> Result<Self> {
        if let Some(root) = explicit {
            return Ok(Self { root });
        }
        let dirs = directories::ProjectDirs::from("org", "Strata", "strata").ok_or_else(|| {
            AppError::new(
                ErrorKind::Usage,
                "cannot find a home directory for the default data directory",
            )
            .hint("pass --data-dir DIR or set STRATA_HOME")
        })?;
        Ok(Self {
            root: dirs.data_local_dir().to_path_buf(),
        })
    }

    /// The directory itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The config file.
    pub(crate) fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The store.
    pub(crate) fn store_file(&self) -> PathBuf {
        self.root.join("store.redb")
    }

    /// The storage key file.
    pub(crate) fn key_file(&self) -> PathBuf {
        self.root.join("storage.key")
    }

    /// Where a running daemon says its control API listens.
    pub(crate) fn api_file(&self) -> PathBuf {
        self.root.join("api.json")
    }

    /// A running daemon's control API token.
    pub(crate) fn token_file(&self) -> PathBuf {
        self.root.join("api.token")
    }

    /// Creates the directory (mode 0700) if needed; warns when an existing
    /// one is open to other users.
    pub(crate) fn create(&self) -> Result<()> {
        match fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        dir = %self.root.display(),
                        mode = format_args!("{mode:o}"),
                        "the data directory is accessible to other users; `chmod 700` it"
                    );
                }
                Ok(())
            }
            Ok(_) => Err(AppError::new(
                ErrorKind::Usage,
                format!("{} exists and is not a directory", self.root.display()),
            )
            .hint("pass --data-dir with a directory path")),
            Err(_) => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|e| io_error("create the data directory", &self.root, &e)),
        }
    }
}

/// An I/O failure on `path`, said plainly.
pub(crate) fn io_error(action: &str, path: &Path, error: &std::io::Error) -> AppError {
    AppError::new(
        ErrorKind::Storage,
        format!("cannot {action} {}: {error}", path.display()),
    )
    .hint("check the path's permissions and free disk space")
}

/// Writes `contents` to `path` atomically (a temporary file in the same
/// directory, then a rename) with `mode`, so a reader never sees half a
/// file and a secret is never readable by others, not even briefly.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("write", path, &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_directory_and_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve(Some(tmp.path().join("a/b"))).unwrap();
        dir.create().unwrap();
        let mode = fs::metadata(dir.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        write_atomic(&dir.token_file(), b"secret", 0o600).unwrap();
        let mode = fs::metadata(dir.token_file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(dir.token_file()).unwrap(), b"secret");
        // Overwriting keeps the mode and leaves no temporary file behind.
        write_atomic(&dir.token_file(), b"other", 0o600).unwrap();
        assert_eq!(fs::read(dir.token_file()).unwrap(), b"other");
        assert_eq!(fs::read_dir(dir.root()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        let err = DataDir::resolve(Some(file)).unwrap().create().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Usage);
    }
}
