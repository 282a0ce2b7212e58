//! Multi-device scenarios over any transport (issue #18): two accounts,
//! Alice with two devices and Bob with three, one of them stale; each
//! device is a [`TestNode`] whose store holds its account's signed device
//! list before it starts (what pairing leaves), and whose address is its
//! installation id, as Strata's transports name installations.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use strata_cascade::devices::sign_device_list;
use strata_cascade::{AccountIdentity, InstallationId, InstallationIdentity};
use strata_session::actors::{
    AccountMessage, ChangeDevices, FannedOut, ListDevices, NodeEvent, NodeEventKind, SendToAccount,
};
use strata_session::{Content, Event};
use strata_store::{Backend, Store};
use strata_transport::Transport;

use crate::TestNode;

/// The two accounts and their devices.
pub struct Accounts {
    /// Alice's account.
    pub alice: AccountIdentity,
    /// Bob's account.
    pub bob: AccountIdentity,
    /// Alice's two devices.
    pub a: [Arc<InstallationIdentity>; 2],
    /// Bob's three: the third holds the account key and Bob's list, but
    /// the list does not name it (a stale copy of the account).
    pub b: [Arc<InstallationIdentity>; 3],
}

impl Accounts {
    /// Keys from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (alice, bob) = (AccountIdentity::generate(&mut rng), AccountIdentity::generate(&mut rng));
        let mut device =
            |account: &AccountIdentity| Arc::new(InstallationIdentity::generate(account.clone(), &mut rng).unwrap());
        let a = [device(&alice), device(&alice)];
        let b = [device(&bob), device(&bob), device(&bob)];
        Self { alice, bob, a, b }
    }

    /// The signed list of `identity`'s account: Alice's names both her
    /// devices, Bob's his first two.
    pub fn list_of(&self, identity: &InstallationIdentity) -> Vec<u8> {
        let alice = identity.account().identity_key() == self.alice.identity_key();
        let (account, devices): (&AccountIdentity, Vec<InstallationId>) = if alice {
            (&self.alice, self.a.iter().map(|d| d.installation_id()).collect())
        } else {
            (&self.bob, self.b[..2].iter().map(|d| d.installation_id()).collect())
        };
        sign_device_list(account, 100, &devices, &mut rand::rng())
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    /// Writes `identity`'s account list into its store, before its node
    /// starts.
    pub fn seed<B: Backend>(&self, store: &Store<B>, identity: &InstallationIdentity) {
        let key = identity.account().identity_key().serialize();
        let list = self.list_of(identity);
        store.write(|w| w.set_device_list(&key, &list)).unwrap();
    }
}

/// The address (and node name) of an installation: its id in hex.
pub fn name_of(identity: &InstallationIdentity) -> &'static str {
    Box::leak(identity.installation_id().to_hex().into_boxed_str())
}

/// Sends `text` to `account` from `node`; every copy must be queued.
pub async fn send_to<T: Transport + Unpin + 'static>(
    node: &mut TestNode<T>,
    account: &AccountIdentity,
    text: &str,
) -> Vec<FannedOut> {
    send_message(node, account, AccountMessage::Text(text.into())).await
}

/// Sends `message` to `account` from `node`; every copy must be queued.
pub async fn send_message<T: Transport + Unpin + 'static>(
    node: &mut TestNode<T>,
    account: &AccountIdentity,
    message: AccountMessage,
) -> Vec<FannedOut> {
    let reply = node
        .addr
        .send(SendToAccount {
            request_id: 1,
            account: account.identity_key().serialize().to_vec(),
            message,
        })
        .await
        .unwrap();
    let sent = reply.result.unwrap();
    for copy in &sent {
        assert!(copy.outcome.is_ok(), "{}: {copy:?}", node.name);
    }
    sent
}

/// The installations of the account's devices a fan-out went to.
pub fn theirs(sent: &[FannedOut]) -> Vec<InstallationId> {
    let mut ids: Vec<InstallationId> = sent.iter().filter(|c| !c.own_device).map(|c| c.installation).collect();
    ids.sort();
    ids
}

fn is_text(e: &NodeEvent, want: &str) -> bool {
    matches!(&e.kind, NodeEventKind::Session(Event::Received { content: Content::Text { text }, .. }) if text == want)
}

fn is_copy(e: &NodeEvent, want: &str) -> bool {
    matches!(&e.kind, NodeEventKind::Session(Event::Received { content: Content::SentCopy { text, .. }, .. }) if text == want)
}

/// Waits until `node` received the text `text`.
pub async fn wait_text<T: Transport + Unpin + 'static>(node: &mut TestNode<T>, text: &str) {
    node.wait_for(text, |e| is_text(e, text)).await;
}

/// Waits until `node` received a sent copy of `text`.
pub async fn wait_copy<T: Transport + Unpin + 'static>(node: &mut TestNode<T>, text: &str) {
    node.wait_for(text, |e| is_copy(e, text)).await;
}

/// Waits until `node` has the whole file `name`, received (`sent_to`
/// `None`) or as a copy of a file its account sent to `sent_to`; its bytes.
pub async fn wait_file<T: Transport + Unpin + 'static>(
    node: &mut TestNode<T>,
    name: &str,
    sent_to: Option<&AccountIdentity>,
) -> Vec<u8> {
    let want = sent_to.map(|a| a.identity_key().serialize().to_vec());
    let got = node
        .wait_for(name, |e| {
            matches!(&e.kind, NodeEventKind::FileReceived { path, sent_to, .. }
                if *sent_to == want && path.to_string_lossy().ends_with(name))
        })
        .await;
    match got.kind {
        NodeEventKind::FileReceived { path, .. } => std::fs::read(path).unwrap(),
        _ => unreachable!("the wait matched FileReceived"),
    }
}

/// Waits until `node`'s session with `peer` is ready (a node also opens
/// sessions with its own devices on its own).
pub async fn wait_ready_with<T: Transport + Unpin + 'static>(node: &mut TestNode<T>, peer: &str) {
    node.wait_for("encryptionReady", |e| {
        e.peer.as_str() == peer && matches!(e.kind, NodeEventKind::Session(Event::EncryptionReady { .. }))
    })
    .await;
}

/// Waits until `node`'s session with `peer` is ready; its session id.
pub async fn ready_session<T: Transport + Unpin + 'static>(node: &mut TestNode<T>, peer: &str) -> [u8; 16] {
    let ready = node
        .wait_for("encryptionReady", |e| {
            e.peer.as_str() == peer && matches!(e.kind, NodeEventKind::Session(Event::EncryptionReady { .. }))
        })
        .await;
    match ready.kind {
        NodeEventKind::Session(Event::EncryptionReady { session_id, .. }) => session_id,
        _ => unreachable!("the wait matched encryptionReady"),
    }
}

/// The session `a` and `b` end in with each other after opening at once:
/// both handshakes complete and the twins are settled, so it waits until
/// the last `encryptionReady` each side saw names the same session.
pub async fn settled_session<T: Transport + Unpin + 'static>(a: &mut TestNode<T>, b: &mut TestNode<T>) -> [u8; 16] {
    fn last<T: Transport + Unpin + 'static>(node: &mut TestNode<T>, peer: &str) -> Option<[u8; 16]> {
        while let Ok(e) = node.events.try_recv() {
            node.seen.push(e);
        }
        node.seen.iter().rev().find_map(|e| match &e.kind {
            NodeEventKind::Session(Event::EncryptionReady { session_id, .. }) if e.peer.as_str() == peer => {
                Some(*session_id)
            }
            _ => None,
        })
    }
    for _ in 0..200 {
        let (x, y) = (last(a, b.name), last(b, a.name));
        if let (Some(x), Some(y)) = (x, y)
            && x == y
        {
            return x;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} and {}: simultaneous starts did not settle on one session",
        a.name, b.name
    );
}

/// Waits until `node` holds a list of `account` at `version`.
pub async fn wait_list<T: Transport + Unpin + 'static>(
    node: &mut TestNode<T>,
    account: &AccountIdentity,
    version: u64,
) {
    let key = account.identity_key().serialize().to_vec();
    node.wait_for("a device list", |e| {
        matches!(&e.kind, NodeEventKind::DevicesChanged { account, version: v, .. } if *account == key && *v == version)
    })
    .await;
}

/// Lets the network run for `quiet`, then whether `node` ever received
/// the text `text`.
pub async fn got_after<T: Transport + Unpin + 'static>(node: &mut TestNode<T>, text: &str, quiet: Duration) -> bool {
    tokio::time::sleep(quiet).await;
    while let Ok(e) = node.events.try_recv() {
        node.seen.push(e);
    }
    node.seen.iter().any(|e| is_text(e, text))
}

/// The whole scenario, on started nodes (`a`: Alice's two, `b`: Bob's
/// three, in [`Accounts`] order):
///
/// 0. Alice's first device and Bob's stale one open a session at once:
///    both handshakes complete and both end in the same session (the twin
///    whose tie-break value comes first).
/// 1. Alice's first device knows only Bob's stale one, and sends to Bob's
///    account: with no list of Bob's known, it goes to that pinned
///    installation, which answers with Bob's list (it is partitioned);
///    the text is sent again to the two devices the list names, and
///    Alice's second device gets a sent copy.
/// 2. The next text goes to Bob's two listed devices only.
/// 3. Bob answers from his second device, a text and a file: both of
///    Alice's get them, his first gets copies.
/// 4. The stale device got nothing after its answer.
/// 5. Bob removes his second device; Alice hears of it and her next text
///    reaches his first device only.
///
/// `quiet` is how long "nothing more arrives" is watched.
pub async fn two_and_three<T: Transport + Unpin + 'static>(
    accounts: &Accounts,
    a: [&mut TestNode<T>; 2],
    b: [&mut TestNode<T>; 3],
    quiet: Duration,
) {
    let [a1, a2] = a;
    let [b1, b2, b3] = b;
    let (alice, bob) = (&accounts.alice, &accounts.bob);
    let listed: Vec<InstallationId> = {
        let mut ids = vec![accounts.b[0].installation_id(), accounts.b[1].installation_id()];
        ids.sort();
        ids
    };

    // Both open at once: each ends in the same one session.
    a1.connect(b3.name).await;
    b3.connect(a1.name).await;
    ready_session(a1, b3.name).await;
    ready_session(b3, a1.name).await;
    settled_session(a1, b3).await;
    let first = send_to(a1, bob, "hello-1").await;
    assert_eq!(
        theirs(&first),
        vec![accounts.b[2].installation_id()],
        "no list known: the pinned installation"
    );
    assert!(
        first
            .iter()
            .any(|c| c.own_device && c.installation == accounts.a[1].installation_id())
    );
    wait_text(b3, "hello-1").await;
    wait_list(a1, bob, 100).await;
    wait_text(b1, "hello-1").await;
    wait_text(b2, "hello-1").await;
    wait_copy(a2, "hello-1").await;

    let second = send_to(a1, bob, "hello-2").await;
    assert_eq!(theirs(&second), listed);
    wait_text(b1, "hello-2").await;
    wait_text(b2, "hello-2").await;
    wait_copy(a2, "hello-2").await;

    let back = send_to(b2, alice, "hi-back").await;
    let mut alices: Vec<InstallationId> = accounts.a.iter().map(|d| d.installation_id()).collect();
    alices.sort();
    assert_eq!(theirs(&back), alices);
    wait_text(a1, "hi-back").await;
    wait_text(a2, "hi-back").await;
    wait_copy(b1, "hi-back").await;
    let bytes: Vec<u8> = (0..100_000u32).map(|i| i.to_le_bytes()[0] ^ 0x5a).collect();
    let dir = std::env::temp_dir().join(format!("strata-outgoing-{}", b2.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("photo.bin");
    std::fs::write(&file, &bytes).unwrap();
    let sent = send_message(b2, alice, AccountMessage::File(file.clone())).await;
    assert_eq!(theirs(&sent), alices);
    assert!(sent.iter().any(|c| c.own_device), "{sent:?}");
    assert_eq!(wait_file(a1, "photo.bin", None).await, bytes);
    assert_eq!(wait_file(a2, "photo.bin", None).await, bytes);
    assert_eq!(wait_file(b1, "photo.bin", Some(alice)).await, bytes);
    let _ = std::fs::remove_dir_all(dir);

    assert!(
        !got_after(b3, "hello-2", quiet).await,
        "the stale device gets nothing after its answer"
    );
    assert!(!got_after(b3, "hi-back", Duration::ZERO).await);
    let stale = b3.addr.send(ListDevices).await.unwrap().unwrap();
    assert!(!stale.paired);

    let version = b1
        .addr
        .send(ChangeDevices {
            request_id: 2,
            add: Vec::new(),
            remove: vec![accounts.b[1].installation_id()],
        })
        .await
        .unwrap()
        .result
        .unwrap();
    wait_list(a1, bob, version).await;
    let after = send_to(a1, bob, "hello-3").await;
    assert_eq!(theirs(&after), vec![accounts.b[0].installation_id()]);
    wait_text(b1, "hello-3").await;
    assert!(
        !got_after(b2, "hello-3", quiet).await,
        "a removed device stops receiving"
    );
}
