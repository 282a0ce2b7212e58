//! File transfers, and how they survive a restart.
//!
//! A file travels as [`Content::FileChunk`] messages, each an ordinary
//! message of the session (encrypted, acknowledged, retransmitted), at most
//! [`FILE_WINDOW`] unacknowledged at once, read from disk one chunk at a
//! time so that neither side ever holds the whole file.
//!
//! **Restarts.** Both sides pick an unfinished transfer up where it was:
//!
//! - *Sending.* A manifest `<downloads>/.transfers/out-<file id>.json`
//!   (the peer, the path, the next chunk to queue) is rewritten after each
//!   chunk is queued. Chunks already queued are in the outbox, durable, and
//!   the machine retransmits them; their ids are found there again. A crash
//!   between queueing a chunk and the manifest write queues that chunk once
//!   more, which the receiver writes again at the same offset: harmless.
//! - *Receiving.* Every chunk is committed to the inbox before it is
//!   acknowledged, so the inbox holds each chunk of an unfinished file. On
//!   restart the chunks are written again to the `.part` file (idempotent:
//!   same bytes, same offset); when the file is whole it is renamed to
//!   `<file id>-<name>` and its chunks leave the inbox.
//!
//! The manifest holds a path and a file name, never file contents; the
//! received file itself is plaintext on disk, as the user asked.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use strata_cascade::InstallationId;
use strata_transport::PeerAddr;

use crate::content::{Content, FILE_CHUNK_BYTES, chunk_count, chunk_fits};
use crate::durable::{self, Durable};
use crate::error::SessionError;
use crate::machine::{Event, Now, PeerMachine};

/// File chunks of one transfer in flight at once: 1.5 MiB, enough to keep
/// a fast link busy while acknowledgements (sent every
/// [`crate::Config::ack_every`] messages) come back.
pub const FILE_WINDOW: usize = 32;

/// What a sender keeps on disk about an unfinished transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    peer: String,
    file_id: String,
    path: PathBuf,
    name: String,
    size: u64,
    total: u32,
    next: u32,
    /// A sent copy for this account's other device: the account the file
    /// went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent_to: Option<Vec<u8>>,
}

struct OutgoingFile {
    manifest: Manifest,
    file: std::fs::File,
    acked: u32,
    in_flight: BTreeSet<String>,
}

struct IncomingFile {
    file: std::fs::File,
    part: PathBuf,
    name: String,
    received: BTreeSet<u32>,
    total: u32,
    sent_to: Option<Vec<u8>>,
    /// The inbox rows of the chunks, removed once the file is whole.
    rows: Vec<String>,
}

/// A chunk the peer acknowledged.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The transfer.
    pub(crate) file_id: String,
    /// Chunks acknowledged so far.
    pub(crate) acked: u32,
    /// Chunks in all.
    pub(crate) total: u32,
    /// Bytes in all.
    pub(crate) size: u64,
    /// Whether that was the last one.
    pub(crate) finished: bool,
}

/// What a transfer tells the user, from a machine event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FileEvent {
    /// The peer acknowledged one more chunk of a file we send.
    Progress(Progress),
    /// A whole file arrived.
    Received(ReceivedFile),
}

/// A whole file received and written out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ReceivedFile {
    /// The transfer id.
    pub(crate) file_id: String,
    /// Where it is.
    pub(crate) path: PathBuf,
    /// A sent copy from this account's other device: the account it went
    /// to.
    pub(crate) sent_to: Option<Vec<u8>>,
}

/// The file transfers of one peer session.
pub(crate) struct Transfers {
    downloads: PathBuf,
    peer: PeerAddr,
    sending: VecDeque<OutgoingFile>,
    receiving: BTreeMap<String, IncomingFile>,
    /// Files completed since start: a late duplicate chunk of one (resent
    /// by a sender that crashed) must not start a new `.part`.
    done: BTreeSet<String>,
}

impl Transfers {
    /// No transfers yet, with `peer`; files land in `downloads`.
    pub(crate) fn new(downloads: PathBuf, peer: PeerAddr) -> Self {
        Self {
            downloads,
            peer,
            sending: VecDeque::new(),
            receiving: BTreeMap::new(),
            done: BTreeSet::new(),
        }
    }

    /// Follows the machine event `e`: an acknowledged chunk of ours, or a
    /// chunk of the peer's (`installation`) written to its file. A sent
    /// copy is taken only from a device of this account (`own_device`).
    pub(crate) fn on_event(
        &mut self,
        store: &dyn Durable,
        installation: Option<InstallationId>,
        own_device: bool,
        e: &Event,
    ) -> Option<FileEvent> {
        match e {
            Event::Delivered { message_id } => self.delivered(message_id).map(FileEvent::Progress),
            Event::Received {
                message_id,
                content: chunk @ Content::FileChunk { .. },
                ..
            } => {
                let installation = installation.map(|i| i.to_string());
                match self.received(store, installation.as_deref(), own_device, message_id, chunk) {
                    Ok(Some(file)) => Some(FileEvent::Received(file)),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(peer = %self.peer, error = %e, "cannot write a received file");
                        None
                    }
                }
            }
            _ => None,
        }
    }

    /// Queues the next chunks of outgoing files on `machine` while their
    /// windows allow, all in one burst (one outbox transaction, one
    /// encryption commit); true when it queued any. Reads from disk a
    /// window at a time: a file is never in memory whole.
    pub(crate) fn pump(&mut self, machine: &mut PeerMachine, now: Now) -> Result<bool, SessionError> {
        if !machine.is_ready() {
            return Ok(false);
        }
        let chunks = self.next_chunks()?;
        if chunks.is_empty() {
            return Ok(false);
        }
        let keys = Self::keys(&chunks);
        let ids = machine.send_all(chunks, now)?;
        self.queued(&keys, ids);
        Ok(true)
    }

    /// Whether no file is on its way, either direction.
    pub(crate) fn is_idle(&self) -> bool {
        self.sending.is_empty() && self.receiving.is_empty()
    }

    fn manifests(&self) -> PathBuf {
        self.downloads.join(".transfers")
    }

    fn manifest_path(&self, file_id: &str) -> PathBuf {
        self.manifests().join(format!("out-{}.json", safe(file_id)))
    }

    /// Starts sending the file at `path` (as a sent copy of a file sent to
    /// account `sent_to`, for a device of this account); returns its
    /// transfer id.
    pub(crate) fn start(&mut self, path: &Path, sent_to: Option<Vec<u8>>) -> Result<String, SessionError> {
        let io = |e: std::io::Error| SessionError::Internal(format!("file {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let total = u32::try_from(chunk_count(size)).map_err(|_| SessionError::Misuse("file too large"))?;
        let mut id = [0u8; 12];
        rand::rng().fill_bytes(&mut id);
        let manifest = Manifest {
            peer: self.peer.to_string(),
            file_id: hex::encode(id),
            path: path.to_owned(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size,
            total,
            next: 0,
            sent_to,
        };
        self.save(&manifest).map_err(io)?;
        let file_id = manifest.file_id.clone();
        self.sending.push_back(OutgoingFile {
            manifest,
            file,
            acked: 0,
            in_flight: BTreeSet::new(),
        });
        Ok(file_id)
    }

    fn save(&self, manifest: &Manifest) -> std::io::Result<()> {
        std::fs::create_dir_all(self.manifests())?;
        let path = self.manifest_path(&manifest.file_id);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(manifest).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    /// Reads the next chunks to queue, as many as the windows have room
    /// for. The caller queues them and reports their message ids, in the
    /// same order, with [`Transfers::queued`].
    pub(crate) fn next_chunks(&mut self) -> Result<Vec<Content>, SessionError> {
        let mut chunks = Vec::new();
        for f in &mut self.sending {
            let m = &f.manifest;
            let room = FILE_WINDOW.saturating_sub(f.in_flight.len());
            let first = m.next;
            let last = m
                .total
                .min(first.saturating_add(u32::try_from(room).unwrap_or(u32::MAX)));
            if first >= last {
                continue;
            }
            f.file
                .seek(SeekFrom::Start(u64::from(first) * FILE_CHUNK_BYTES as u64))
                .map_err(|e| SessionError::Internal(format!("reading {}: {e}", m.path.display())))?;
            for index in first..last {
                let mut data = vec![0u8; FILE_CHUNK_BYTES];
                let n = read_full(&mut f.file, &mut data)
                    .map_err(|e| SessionError::Internal(format!("reading {}: {e}", m.path.display())))?;
                data.truncate(n);
                chunks.push(Content::FileChunk {
                    file_id: m.file_id.clone(),
                    name: m.name.clone(),
                    size: m.size,
                    index,
                    total: m.total,
                    data,
                    sent_to: m.sent_to.clone(),
                });
            }
        }
        Ok(chunks)
    }

    /// Which transfer and chunk each of `chunks` is.
    pub(crate) fn keys(chunks: &[Content]) -> Vec<(String, u32)> {
        chunks
            .iter()
            .filter_map(|c| match c {
                Content::FileChunk { file_id, index, .. } => Some((file_id.clone(), *index)),
                _ => None,
            })
            .collect()
    }

    /// The chunks that [`Transfers::next_chunks`] gave (their
    /// [`Transfers::keys`]) are queued as these message ids, in order. Each
    /// transfer's manifest is rewritten once.
    pub(crate) fn queued(&mut self, keys: &[(String, u32)], message_ids: Vec<String>) {
        let mut touched = BTreeSet::new();
        for ((file_id, index), message_id) in keys.iter().zip(message_ids) {
            let Some(f) = self.sending.iter_mut().find(|f| &f.manifest.file_id == file_id) else {
                continue;
            };
            f.in_flight.insert(message_id);
            f.manifest.next = f.manifest.next.max(index.saturating_add(1));
            touched.insert(file_id.clone());
        }
        for f in self.sending.iter().filter(|f| touched.contains(&f.manifest.file_id)) {
            if let Err(e) = self.save(&f.manifest) {
                // The transfer goes on; a restart would only resend chunks.
                tracing::warn!(error = %e, "cannot update a transfer manifest");
            }
        }
    }

    /// The peer acknowledged `message_id`: progress of the file it belongs
    /// to, if any. A finished transfer is forgotten.
    pub(crate) fn delivered(&mut self, message_id: &str) -> Option<Progress> {
        let i = self.sending.iter().position(|f| f.in_flight.contains(message_id))?;
        let f = self.sending.get_mut(i)?;
        f.in_flight.remove(message_id);
        f.acked += 1;
        let m = &f.manifest;
        let finished = f.in_flight.is_empty() && m.next == m.total;
        let progress = Progress {
            file_id: m.file_id.clone(),
            acked: f.acked.min(m.total),
            total: m.total,
            size: m.size,
            finished,
        };
        if finished {
            let path = self.manifest_path(&progress.file_id);
            if let Err(e) = std::fs::remove_file(path) {
                tracing::debug!(error = %e, "transfer manifest already gone");
            }
            self.sending.remove(i);
        }
        Some(progress)
    }

    /// A chunk arrived (committed to the inbox as `message_id`) from a
    /// device of this account or not (`own_device`). Returns the file
    /// when it is whole.
    pub(crate) fn received(
        &mut self,
        store: &dyn Durable,
        installation: Option<&str>,
        own_device: bool,
        message_id: &str,
        chunk: &Content,
    ) -> std::io::Result<Option<ReceivedFile>> {
        let Content::FileChunk {
            file_id,
            name,
            size,
            index,
            total,
            data,
            sent_to,
        } = chunk
        else {
            return Ok(None);
        };
        let refused =
            |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("file chunk refused: {why}"));
        if sent_to.is_some() && !own_device {
            return Err(refused("a sent copy from another account"));
        }
        if !chunk_fits(*size, *index, *total, data.len()) {
            return Err(refused("its size, count, index or length do not add up"));
        }
        if self
            .receiving
            .get(file_id)
            .is_some_and(|f| f.total != *total || f.sent_to != *sent_to)
        {
            return Err(refused("its count or copy differs from the file's first chunk"));
        }
        if self.done.contains(file_id) {
            self.clear_rows(store, installation, &[message_id.to_owned()]);
            return Ok(None);
        }
        if !self.receiving.contains_key(file_id) {
            std::fs::create_dir_all(&self.downloads)?;
            let part = self.downloads.join(format!("{}.part", safe(file_id)));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&part)?;
            self.receiving.insert(
                file_id.clone(),
                IncomingFile {
                    file,
                    part,
                    name: safe(name),
                    received: BTreeSet::new(),
                    total: *total,
                    sent_to: sent_to.clone(),
                    rows: Vec::new(),
                },
            );
        }
        let Some(f) = self.receiving.get_mut(file_id) else {
            return Ok(None);
        };
        f.file
            .seek(SeekFrom::Start(u64::from(*index) * FILE_CHUNK_BYTES as u64))?;
        f.file.write_all(data)?;
        f.received.insert(*index);
        f.rows.push(message_id.to_owned());
        if u32::try_from(f.received.len()).unwrap_or(u32::MAX) < f.total {
            return Ok(None);
        }
        let Some(f) = self.receiving.remove(file_id) else {
            return Ok(None);
        };
        f.file.sync_all()?;
        let name = if f.name.is_empty() { safe(file_id) } else { f.name };
        let path = self.downloads.join(format!("{}-{name}", safe(file_id)));
        std::fs::rename(&f.part, &path)?;
        self.done.insert(file_id.clone());
        // The file is whole on disk: its chunks may leave the inbox.
        self.clear_rows(store, installation, &f.rows);
        Ok(Some(ReceivedFile {
            file_id: file_id.clone(),
            path,
            sent_to: f.sent_to,
        }))
    }

    fn clear_rows(&self, store: &dyn Durable, installation: Option<&str>, rows: &[String]) {
        let Some(installation) = installation else { return };
        let removed = durable::write(store, |w| {
            for id in rows {
                w.remove_incoming(installation, id)?;
            }
            Ok(())
        });
        if let Err(e) = removed {
            tracing::warn!(error = %e, "cannot clear a received file's chunks from the inbox");
        }
    }

    /// Picks up the transfers with this peer that a restart interrupted:
    /// outgoing ones from their manifests and the outbox, incoming ones
    /// from the inbox. Returns the files that the inbox completes.
    pub(crate) fn recover(&mut self, store: &dyn Durable, installation: &str, own_device: bool) -> Vec<ReceivedFile> {
        let mut completed = Vec::new();
        let (inbox, outbox) = match durable::read(store, |r| Ok((r.inbox(installation)?, r.outbox(installation)?))) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store to resume file transfers");
                return completed;
            }
        };
        for row in inbox {
            let Ok(chunk @ Content::FileChunk { .. }) = Content::from_bytes(&row.body) else {
                continue;
            };
            match self.received(store, Some(installation), own_device, &row.message_id, &chunk) {
                Ok(Some(file)) => completed.push(file),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot resume a received file"),
            }
        }
        for manifest in self.load_manifests() {
            let mut in_flight = BTreeSet::new();
            for row in &outbox {
                if let Ok(Content::FileChunk { file_id, .. }) = Content::from_bytes(&row.body)
                    && file_id == manifest.file_id
                {
                    in_flight.insert(row.message_id.clone());
                }
            }
            match std::fs::File::open(&manifest.path) {
                Ok(file) => self.sending.push_back(OutgoingFile {
                    acked: manifest
                        .next
                        .saturating_sub(u32::try_from(in_flight.len()).unwrap_or(u32::MAX)),
                    manifest,
                    file,
                    in_flight,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "a file being sent is gone; its transfer stops");
                    let _ = std::fs::remove_file(self.manifest_path(&manifest.file_id));
                }
            }
        }
        completed
    }

    fn load_manifests(&self) -> Vec<Manifest> {
        let Ok(entries) = std::fs::read_dir(self.manifests()) else {
            return Vec::new();
        };
        let mut out: Vec<Manifest> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice::<Manifest>(&bytes).ok())
            .filter(|m| m.peer == self.peer.as_str() && !self.sending.iter().any(|f| f.manifest.file_id == m.file_id))
            .collect();
        out.sort_by(|a, b| a.file_id.cmp(&b.file_id));
        out
    }
}

/// `s` with only characters safe in a file name.
fn safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect()
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match file.read(rest)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use strata_store::{KeySource, MemoryBackend, Store};

    use super::*;

    /// A chunk whose place does not add up (past the file's end, a count
    /// that is not the size's, the wrong length, a count that changes) is
    /// refused and writes nothing: a peer cannot grow a file past its size.
    #[test]
    fn chunks_that_do_not_fit_their_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            MemoryBackend::new(),
            KeySource::Key(strata_cascade::at_rest::StorageKey::generate(&mut rand::rng())),
        )
        .unwrap();
        let mut files = Transfers::new(dir.path().to_owned(), PeerAddr::new("bob"));
        let chunk = |size: u64, index: u32, total: u32, len: usize| Content::FileChunk {
            file_id: "f".into(),
            name: "n".into(),
            size,
            index,
            total,
            data: vec![1; len],
            sent_to: None,
        };
        let chunk_bytes = FILE_CHUNK_BYTES as u64;
        for bad in [
            chunk(10, 4_000_000_000, u32::MAX, 10),
            chunk(10, 0, 2, 10),
            chunk(10, 0, 1, 11),
            chunk(chunk_bytes + 1, 1, 2, 2),
        ] {
            assert!(files.received(&store, None, false, "m", &bad).is_err(), "{bad:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
        assert!(
            files
                .received(
                    &store,
                    None,
                    false,
                    "m1",
                    &chunk(chunk_bytes + 1, 0, 2, FILE_CHUNK_BYTES)
                )
                .unwrap()
                .is_none()
        );
        assert!(
            files
                .received(
                    &store,
                    None,
                    false,
                    "m2",
                    &chunk(chunk_bytes * 3, 1, 3, FILE_CHUNK_BYTES)
                )
                .is_err()
        );
        let path = files
            .received(&store, None, false, "m3", &chunk(chunk_bytes + 1, 1, 2, 1))
            .unwrap()
            .unwrap()
            .path;
        assert_eq!(std::fs::metadata(path).unwrap().len(), chunk_bytes + 1);
    }

    /// A sent copy (a file this account sent from another device) is taken
    /// from a device of this account only, and says where it went.
    #[test]
    fn a_sent_copy_of_a_file_is_taken_from_own_devices_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            MemoryBackend::new(),
            KeySource::Key(strata_cascade::at_rest::StorageKey::generate(&mut rand::rng())),
        )
        .unwrap();
        let mut files = Transfers::new(dir.path().to_owned(), PeerAddr::new("alice-laptop"));
        let copy = Content::FileChunk {
            file_id: "f".into(),
            name: "n".into(),
            size: 3,
            index: 0,
            total: 1,
            data: vec![1, 2, 3],
            sent_to: Some(vec![7; 33]),
        };
        assert!(files.received(&store, None, false, "m1", &copy).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
        let file = files.received(&store, None, true, "m1", &copy).unwrap().unwrap();
        assert_eq!(file.sent_to, Some(vec![7; 33]));
        assert_eq!(std::fs::read(file.path).unwrap(), [1, 2, 3]);
    }
}
