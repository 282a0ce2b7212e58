//! The database file holds no plaintext, key or session state in the clear,
//! and refuses what it cannot open without changing anything.

use strata_cascade::at_rest::KdfParams;
use strata_store::kv::{Backend, Table};
use strata_store::{IncomingMessage, KeySource, OutgoingMessage, RedbBackend, SCHEMA_VERSION, Store, StoreError};

const PASS: KeySource<'static> = KeySource::Passphrase {
    passphrase: b"hunter2",
    params: KdfParams::INSECURE_FAST,
};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_file_holds_no_secret_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.redb");
    // Stand-ins for what the store keeps: a private key, session state,
    // message bodies. Long and distinctive so a match cannot be chance.
    let private_key = b"PRIVATE-KEY-0123456789abcdef0123456789abcdef";
    let session_state = b"SESSION-STATE-root-key-chain-key-9876543210";
    let secret_out = b"the eagle lands at midnight (outgoing)";
    let secret_in = b"the eagle has landed (incoming)";
    {
        let store = Store::open(RedbBackend::open(&path).unwrap(), PASS).unwrap();
        store
            .write(|w| {
                w.set_identity(private_key)?;
                w.set_layer_state("bob", session_state)?;
                w.set_handshake("bob", session_state)?;
                w.queue_outgoing(&OutgoingMessage {
                    message_id: "m1".into(),
                    peer: "bob".into(),
                    created_ms: 1,
                    body: secret_out.to_vec(),
                    frames: vec![],
                    attempts: 0,
                })?;
                w.accept_incoming(
                    &IncomingMessage {
                        peer: "bob".into(),
                        message_id: "b1".into(),
                        received_ms: 2,
                        body: secret_in.to_vec(),
                    },
                    session_state,
                )?;
                Ok(())
            })
            .unwrap();
    }
    let raw = std::fs::read(&path).unwrap();
    assert!(raw.len() > 1000, "the database was written");
    for needle in [&private_key[..], session_state, secret_out, secret_in, b"hunter2"] {
        assert!(
            !contains(&raw, needle),
            "found {:?} in the clear",
            String::from_utf8_lossy(needle)
        );
    }
    // Base64 would hide nothing: the records are sealed, not just encoded.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret_out);
    assert!(!contains(&raw, &b64.as_bytes()[..24]));
}

#[test]
fn a_wrong_passphrase_corrupts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.redb");
    Store::open(RedbBackend::open(&path).unwrap(), PASS)
        .unwrap()
        .write(|w| w.set_identity(b"me"))
        .unwrap();
    let backend = RedbBackend::open(&path).unwrap();
    for attempt in 0..3 {
        let wrong = KeySource::Passphrase {
            passphrase: b"hunter3",
            params: KdfParams::INSECURE_FAST,
        };
        let err = Store::open(backend.clone(), wrong).err().expect("refused");
        assert!(matches!(err, StoreError::WrongKey), "attempt {attempt}: {err}");
    }
    // redb rewrites its own header on open and close, so the bytes may
    // differ; what matters is that every record is intact.
    drop(backend);
    let store = Store::open(RedbBackend::open(&path).unwrap(), PASS).unwrap();
    assert_eq!(store.read(|r| r.identity()).unwrap().unwrap().as_slice(), b"me");
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let backend = strata_store::MemoryBackend::new();
    Store::open(backend.clone(), PASS).unwrap();
    backend
        .write(|tx| tx.put(Table::Meta, b"schema", &(SCHEMA_VERSION + 1).to_be_bytes()))
        .unwrap();
    let err = Store::open(backend.clone(), PASS).err().expect("refused");
    assert!(
        matches!(err, StoreError::NewerSchema { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
    let version = backend.read(|tx| tx.get(Table::Meta, b"schema")).unwrap().unwrap();
    assert_eq!(version, (SCHEMA_VERSION + 1).to_be_bytes(), "left as found");
}

#[test]
fn a_moved_value_fails_to_open() {
    let backend = strata_store::MemoryBackend::new();
    let store = Store::open(backend.clone(), PASS).unwrap();
    store.write(|w| w.set_layer_state("alice", b"alice-state")).unwrap();
    // An attacker with the file copies alice's sealed state into bob's row.
    let sealed = backend.read(|tx| tx.get(Table::Layers, b"alice")).unwrap().unwrap();
    backend.write(|tx| tx.put(Table::Layers, b"bob", &sealed)).unwrap();
    assert!(matches!(
        store.read(|r| r.layer_state("bob")),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(
        store.read(|r| r.layer_state("alice")).unwrap().unwrap().as_slice(),
        b"alice-state"
    );
}

#[test]
fn key_files_are_private_and_stable() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storage.key");
    let k1 = strata_store::load_or_create_key_file(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let k2 = strata_store::load_or_create_key_file(&path).unwrap();
    assert_eq!(k1, k2);
    let store = Store::open(strata_store::MemoryBackend::new(), KeySource::Key(k1)).unwrap();
    store.write(|w| w.set_identity(b"x")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        strata_store::load_or_create_key_file(&path),
        Err(StoreError::KeyFile(_))
    ));
}

#[test]
fn a_database_in_use_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.redb");
    let first = RedbBackend::open(&path).unwrap();
    // redb holds a lock on the file for as long as it is open, against this
    // process as much as another one.
    let err = RedbBackend::open(&path).err().expect("second open refused");
    assert!(matches!(&err, StoreError::InUse { path: p } if *p == path), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    RedbBackend::open(&path).unwrap();
}
