//! Files sent to a group chat.
//!
//! A group file travels as [`Content::FileChunk`] group messages, all sent
//! at once: a group message has no acknowledgement, so what makes a file
//! arrive whole is the group's recovery of lost messages (`group-sync`),
//! which reaches as far back as the messages each member keeps
//! ([`crate::group::KEPT_BYTES`]). Hence the cap, [`MAX_GROUP_FILE_BYTES`]:
//! a bigger file could lose chunks for good.
//!
//! A receiver writes each chunk at its offset in
//! `<downloads>/<file id>.group.part`, with the chunks it has in a
//! sidecar (`….part.json`, rewritten per chunk, so a restart goes on
//! where it was), and renames the file to `<file id>-<name>` when it is
//! whole. Every chunk is checked against the first one seen (name, size,
//! count) and against its place (index, exact length); a chunk that does
//! not fit is refused and changes nothing. At most
//! [`MAX_INCOMING_GROUP_FILES`] files are in progress; past that the
//! oldest is given up.

use std::collections::{BTreeSet, VecDeque};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use crate::content::{Content, FILE_CHUNK_BYTES, chunk_count, chunk_fits};
use crate::error::SessionError;

/// The largest file sent to a group: its sealed chunks must fit in what
/// every member keeps to send again.
pub const MAX_GROUP_FILE_BYTES: u64 = 2 * 1024 * 1024;
/// Group files received in part at once.
pub const MAX_INCOMING_GROUP_FILES: usize = 16;
/// Completed file ids remembered, so a late copy does not start it again.
const DONE_MEMORY: usize = 1024;

const CHUNK: u64 = FILE_CHUNK_BYTES as u64;

/// The chunks of the file at `path`, under a fresh file id; refused when
/// the file is over [`MAX_GROUP_FILE_BYTES`].
pub fn chunks(path: &Path) -> Result<(String, Vec<Content>), SessionError> {
    let io = |e: std::io::Error| SessionError::Internal(format!("file {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_GROUP_FILE_BYTES {
        return Err(SessionError::Misuse("a group file is at most 2 MiB"));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let file_id = hex::encode(id);
    let total = u32::try_from(chunk_count(size)).map_err(|_| SessionError::Misuse("file too large"))?;
    let pieces: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[]]
    } else {
        bytes.chunks(FILE_CHUNK_BYTES).collect()
    };
    let chunks = pieces
        .into_iter()
        .zip(0u32..)
        .map(|(data, index)| Content::FileChunk {
            file_id: file_id.clone(),
            name: name.clone(),
            size,
            index,
            total,
            data: data.to_vec(),
            sent_to: None,
        })
        .collect();
    Ok((file_id, chunks))
}

/// What a receiver keeps beside a `.part` file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sidecar {
    name: String,
    size: u64,
    total: u32,
    have: BTreeSet<u32>,
}

/// A group file that arrived whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupFile {
    /// The transfer id.
    pub file_id: String,
    /// The file's name, as sent.
    pub name: String,
    /// Where it was written.
    pub path: PathBuf,
}

/// The group files a node receives.
#[derive(Debug)]
pub struct GroupFiles {
    downloads: PathBuf,
    /// Files in progress, oldest first.
    incoming: VecDeque<String>,
    done: VecDeque<String>,
}

/// `s` when it is a usable file id (it names files on disk).
fn file_id_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `name` with only characters safe in a file name.
fn safe_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

impl GroupFiles {
    /// Receives into `downloads`.
    pub fn new(downloads: PathBuf) -> Self {
        Self {
            downloads,
            incoming: VecDeque::new(),
            done: VecDeque::new(),
        }
    }

    fn part(&self, file_id: &str) -> PathBuf {
        self.downloads.join(format!("{file_id}.group.part"))
    }

    fn sidecar(&self, file_id: &str) -> PathBuf {
        self.downloads.join(format!("{file_id}.group.part.json"))
    }

    /// A chunk of a group file: written in place; the whole file when it
    /// is complete. `Err` is a reason to refuse it (nothing changed) or a
    /// local I/O failure.
    pub fn received(&mut self, chunk: &Content) -> Result<Option<GroupFile>, String> {
        let Content::FileChunk {
            file_id,
            name,
            size,
            index,
            total,
            data,
            ..
        } = chunk
        else {
            return Ok(None);
        };
        if !file_id_ok(file_id) {
            return Err("a group file id that cannot name a file".into());
        }
        if self.done.contains(file_id) {
            return Ok(None);
        }
        if *size > MAX_GROUP_FILE_BYTES || !chunk_fits(*size, *index, *total, data.len()) {
            return Err("a group file chunk whose size, count, index or length do not add up".into());
        }
        let offset = u64::from(*index) * CHUNK;
        let io = |e: std::io::Error| format!("group file: {e}");
        let mut sidecar = match std::fs::read(self.sidecar(file_id)) {
            Ok(bytes) => serde_json::from_slice::<Sidecar>(&bytes).map_err(|e| format!("group file sidecar: {e}"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sidecar {
                name: name.clone(),
                size: *size,
                total: *total,
                have: BTreeSet::new(),
            },
            Err(e) => return Err(io(e)),
        };
        if (&sidecar.name, sidecar.size, sidecar.total) != (name, *size, *total) {
            return Err("a group file chunk that disagrees with the file's first".into());
        }
        if !self.incoming.contains(file_id) {
            self.incoming.push_back(file_id.clone());
            while self.incoming.len() > MAX_INCOMING_GROUP_FILES {
                if let Some(old) = self.incoming.pop_front() {
                    let _ = std::fs::remove_file(self.part(&old));
                    let _ = std::fs::remove_file(self.sidecar(&old));
                }
            }
        }
        std::fs::create_dir_all(&self.downloads).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(self.part(file_id))
            .map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        file.write_all(data).map_err(io)?;
        sidecar.have.insert(*index);
        if u32::try_from(sidecar.have.len()).unwrap_or(u32::MAX) < *total {
            let json = serde_json::to_vec(&sidecar).map_err(|e| format!("group file sidecar: {e}"))?;
            std::fs::write(self.sidecar(file_id), json).map_err(io)?;
            return Ok(None);
        }
        file.set_len(*size).map_err(io)?;
        file.sync_all().map_err(io)?;
        let shown = safe_name(name);
        let shown = if shown.is_empty() { "file".to_owned() } else { shown };
        let path = self.downloads.join(format!("{file_id}-{shown}"));
        std::fs::rename(self.part(file_id), &path).map_err(io)?;
        let _ = std::fs::remove_file(self.sidecar(file_id));
        self.incoming.retain(|f| f != file_id);
        self.done.push_back(file_id.clone());
        while self.done.len() > DONE_MEMORY {
            self.done.pop_front();
        }
        Ok(Some(GroupFile {
            file_id: file_id.clone(),
            name: name.clone(),
            path,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn a_file_arrives_whole_in_any_order_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("photo.jpg");
        let bytes: Vec<u8> = (0..(FILE_CHUNK_BYTES * 3 + 100)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &bytes).unwrap();
        let (file_id, mut chunks) = chunks(&src).unwrap();
        assert_eq!(chunks.len(), 4);
        chunks.reverse();
        let downloads = dir.path().join("in");
        let mut files = GroupFiles::new(downloads.clone());
        assert_eq!(files.received(&chunks[0]).unwrap(), None);
        assert_eq!(files.received(&chunks[1]).unwrap(), None);
        // A restart: a new receiver goes on from the sidecar.
        let mut files = GroupFiles::new(downloads.clone());
        assert_eq!(files.received(&chunks[1]).unwrap(), None, "a copy changes nothing");
        assert_eq!(files.received(&chunks[2]).unwrap(), None);
        let done = files.received(&chunks[3]).unwrap().unwrap();
        assert_eq!(done.file_id, file_id);
        assert_eq!(std::fs::read(&done.path).unwrap(), bytes);
        assert_eq!(done.path, downloads.join(format!("{file_id}-photo.jpg")));
        assert_eq!(
            files.received(&chunks[0]).unwrap(),
            None,
            "a late copy does not start it again"
        );
    }

    #[test]
    fn chunks_that_do_not_fit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = GroupFiles::new(dir.path().to_owned());
        let chunk = |file_id: &str, size: u64, index: u32, total: u32, len: usize| Content::FileChunk {
            file_id: file_id.into(),
            name: "../../etc/passwd".into(),
            size,
            index,
            total,
            data: vec![7; len],
            sent_to: None,
        };
        let bad = [
            chunk("../x", 10, 0, 1, 10),
            chunk("f1", MAX_GROUP_FILE_BYTES + 1, 0, 43, FILE_CHUNK_BYTES),
            chunk("f2", 10, 0, 2, 10),
            chunk("f3", 10, 0, 1, 9),
            chunk("f4", CHUNK * 2, 1, 2, FILE_CHUNK_BYTES - 1),
            chunk("f5", u64::MAX, 4_000_000_000, u32::MAX, 0),
        ];
        for c in &bad {
            assert!(files.received(c).is_err(), "{c:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
        // The name is made safe; a chunk that disagrees with the first is
        // refused.
        assert!(
            files
                .received(&chunk("f6", CHUNK + 1, 0, 2, FILE_CHUNK_BYTES))
                .unwrap()
                .is_none()
        );
        let mut other = chunk("f6", CHUNK + 1, 1, 2, 1);
        if let Content::FileChunk { name, .. } = &mut other {
            *name = "other".into();
        }
        assert!(files.received(&other).is_err());
        let done = files.received(&chunk("f6", CHUNK + 1, 1, 2, 1)).unwrap().unwrap();
        assert_eq!(done.path, dir.path().join("f6-etcpasswd"));
        // Too big to send.
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; usize::try_from(MAX_GROUP_FILE_BYTES).unwrap() + 1]).unwrap();
        assert!(chunks(&big).is_err());
    }
}
