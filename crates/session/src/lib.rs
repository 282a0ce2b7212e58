//! Strata's sessions: the sans-I/O session machine that runs the Enkrypted
//! Chat P3 handshake and the encrypted traffic after it, and the actix
//! actors around it.
//!
//! - [`machine::PeerMachine`]: one per remote installation (the pair
//!   machine). `handle(Input, Now)`, then `poll_output()` (frames to send,
//!   events) and `poll_timeout()`. Time is passed in, randomness comes from
//!   a ChaCha20 generator seeded by the caller, storage is a provider
//!   ([`Durable`], the store) used synchronously inside a step. It never
//!   reads a clock, never does network I/O, never panics on peer input.
//!   One type over several files, one `impl` block per concern (see
//!   [Where to find what](#where-to-find-what)).
//! - [`durable`]: storage as a provider (and the pin of a first contact's
//!   key, written with the session it completed).
//! - [`actors`]: `Node` (the facade), `TransportActor<T: Transport>`, one
//!   `PeerSession` per peer. Thin shells: they move frames, run timers,
//!   stream files and publish events.
//! - [`content`]: the inner catalog (what a `message` plaintext is).
//! - `files`: file transfers in chunks, resumed after a restart of either
//!   side (a sender's manifest plus the outbox; the receiver's inbox).
//!
//! This crate knows the `Transport` trait only, never a concrete transport,
//! and it never sends a `message` PDU before `encryptionReady`.
//!
//! # Where to find what
//!
//! The pair machine is the `machine/` module: `mod.rs` holds its public
//! face and state, each other file one concern of [`machine::PeerMachine`].
//!
//! | to find | look in |
//! | --- | --- |
//! | `Input`, `Output`, `Event`, `Command`; `handle`, `poll_output`, `poll_timeout` | `machine/mod.rs` |
//! | the handshake, steps 1–11, and opening from a bundle | `machine/handshake.rs` |
//! | which PDU belongs to a handshake in progress; duplicates, strays | `machine/attempt.rs` |
//! | binding to a peer installation; TOFU, an expected key, a changed key | `machine/peer.rs` |
//! | resuming a stored session (probes and answers) | `machine/resume.rs` |
//! | sending: the outbox, encrypted bursts, acknowledgements | `machine/outgoing.rs` |
//! | receiving: frames dispatched, chunks, decryption, the commit, the peer's errors | `machine/incoming.rs` |
//! | a rotation rule: when ML-KEM keys rotate, who commits MLS updates | `machine/rotation.rs` |
//! | retransmission, stalls, retries, the link coming up | `machine/retransmission.rs` |
//! | the rate limits: `protocol-error` replies, a peer's KeyPackage claims | `machine/ratelimit.rs` |
//! | KeyPackage claims over a session, both sides; checks of a peer's package | `machine/claims.rs` |
//! | this installation's KeyPackage pool, kept stocked | `pool.rs` |
//! | the persistence of a session: its record (a frozen format), restoring it | `machine/durable.rs` |
//! | the storage provider; the pin of a first contact | `durable.rs` |
//! | the node: routing, session limits, subscribers, `AwaitReady` | `actors/node.rs` |
//! | one peer's actor: machine steps, timer, footprint | `actors/session.rs` |
//! | the transport actor | `actors/transport.rs`; the messages in `actors/mod.rs` |
//! | file transfers: chunks out (pumping), chunks in, resuming after a restart | `files.rs` |
//! | files to a group: chunks out, checked and written in, resuming after a restart | `group_files.rs` |
//! | multi-device: device lists, fan-out, partitioned devices | `devices.rs` (the rules), `actors/devices.rs` (the node's side) |
//! | pairing a new device | `pairing.rs` |
//! | out-of-band key exchange: invites, half and full KX, rendezvous topics, resets, introductions | `kx/` (the node's side: `actors/kx.rs`) |
//!
//! The group machine sits beside it, in `group/` (its rules in
//! [`group`]'s docs), run by a Group actor per group (`actors/groups.rs`:
//! how group PDUs and messages reach it). The out-of-band key exchange
//! (BisonRelay's invites, half and full KX over rendezvous topics) is the
//! sans-I/O [`kx::KxBook`], run by the node (`actors/kx.rs`).
//!
//! # The handshake (P3), as Strata runs it
//!
//! A is the initiator (it sends step 1), B the responder.
//!
//! ```text
//!  A                                              B
//!  1  mls-key-package-request  ─────────────────►    TOFU(A's identity key); claim a pooled KeyPackage
//!     ◄──────────────────────────────────────────  2  mls-key-package
//!  TOFU(B); create the 2-member MLS group from B's KeyPackage; ML-KEM key pair
//!  3  mls-encryption-sync-request ──────────────►
//!  5  signal-key-exchange-request ──────────────►    (3, 5, 8 and 10 are pipelined:
//!  8  mlkem-key-exchange (A's signed key) ──────►     one flight)
//!  10 mls-welcome ──────────────────────────────►    B joins the group
//!     ◄──────────────────────────────────────────  4  mls-encryption-sync-response
//!     ◄──────────────────────────────────────────  6  signal-key-exchange-response (PQXDH bundle)
//!     ◄──────────────────────────────────────────  9  mlkem-key-exchange-response (B's signed key)
//!  PQXDH with B's bundle
//!  7  signal-session-complete ──────────────────►    B's Signal session; B checks the plaintext
//!                                                    is the session id (key confirmation)
//!                                                    B: every layer ready → encryptionReady
//!     ◄──────────────────────────────────────────  11 mls-welcome-ack
//!  A: encryptionReady
//! ```
//!
//! Three round trips on a clean link. Rules:
//!
//! - **Completion.** B sends step 11 only when *all* its layers are set up
//!   (3, 7, 8 and 10 processed): step 11 tells A that B is ready, so A's
//!   `encryptionReady` (P3.3: layers initialised *and* the peer in the
//!   encrypted set) is reached on step 11. A message from B that A can
//!   decrypt with the finished cascade also counts as step 11 (it proves
//!   the same). B is ready when it has verified A's key confirmation (7).
//! - **Retransmission.** The initiator retransmits each request until its
//!   answer arrives (1 s, doubling to 16 s): 1 until 2; 3, 5, 8 until 4, 6,
//!   9; 7 and 10 until 11. The responder keeps every answer it gave and
//!   sends it again on a duplicate request, also after the session is
//!   established (kept in the session record until the peer's first
//!   decrypted message). Duplicates of answers are ignored. Handlers are
//!   idempotent, so duplicated, reordered and interleaved handshake PDUs
//!   are harmless.
//! - **Stall.** A handshake not finished within 300 s is abandoned
//!   ([`Event::HandshakeStalled`]); the initiator retries after 5 s,
//!   doubling up to 300 s. PDUs of abandoned sessions are ignored.
//! - **Simultaneous open** (54/WAKU2-X3DH-SESSIONS). When both sides send
//!   step 1, both handshakes run to the end (each PDU goes to the attempt
//!   it names) and the two sessions are *twins*: each side, once it holds
//!   both, keeps the one whose tie-break value comes first in byte order
//!   and drops the other. The value is an MLS exporter value of each
//!   session ([`strata_cascade::MlsLayer::tie_break`]): both sides compute
//!   the same and no one can choose it, so a *forged* step 1 (anyone can
//!   send one in the peer's name) picks nothing; it never completes, and
//!   the session carries on. A start names the session its sender knows
//!   (`prior`), so a deliberate re-key is never taken for a twin. The twin
//!   dropped stays aside for the stall time, for a peer that could not
//!   complete the other: its messages are still taken, and a refusal of
//!   ours at the outer layer moves us to it. The rules are in
//!   `machine/twins.rs`; [`PeerMachine::last_tie_break`] tells how the last
//!   pair was settled.
//! - **Make before break.** A step 1 (or bundle step 3) while a session is
//!   established starts a responder attempt *beside* it: the start is
//!   unauthenticated, so the session keeps working until the new handshake
//!   completes; only then is the reset reported. An initiator told that the
//!   responder does not know its handshake (it restarted, or failed to save)
//!   starts a new one after its backoff.
//! - **TOFU.** Steps 1 and 2 carry the identity key. For an installation
//!   seen for the first time it is pinned when the handshake completes, in
//!   the transaction that saves the session (`observe_identity`): a start
//!   that never proves anything leaves nothing in the store. A different key
//!   blocks the peer: [`Event::IdentityChanged`], `protocol-error
//!   identity-changed`, nothing is sent (messages stay queued) until
//!   [`Command::AcceptIdentity`], which voids the old session and runs a
//!   new handshake. Every layer then checks its keys against the pinned
//!   identity (MLS credential binding, Signal bundle identity, signed
//!   ML-KEM keys). Safety numbers: `SessionRequest::SafetyNumber`.
//! - **An expected key: no TOFU window.** A caller that knows the peer's
//!   account key from outside the handshake (a contact URI names it) opens
//!   with [`Command::OpenExpecting`]. A step 1 or 2 presenting another key
//!   is refused before the machine binds to the claimed installation
//!   (nothing loaded, pinned or stored): [`Event::IdentityMismatch`], and
//!   our own attempt, answered by the wrong key, is given up rather than
//!   retried. A session or contact already pinned to another key fails the
//!   command with [`SessionError::IdentityMismatch`].
//! - **Step 2's KeyPackage comes from the pool.** B claims one package of
//!   its KeyPackage pool ([`pool`]) per attempt, in one store transaction:
//!   a one-time package, deleted as it is handed out, or the last-resort
//!   package when no one-time package is left (step 2 then says
//!   `lastResort`). B's MLS layer is built from the claimed package's
//!   private parts (`MlsLayer::with_key_package_secrets`) and joins from
//!   step 10's Welcome. A duplicate step 1 of the same attempt gets the
//!   cached step 2 again and claims nothing. A claim that leaves fewer
//!   one-time packages than [`PoolConfig::refill_below`] raises
//!   [`Event::LowKeyPackages`]; the node refills the pool
//!   ([`keep_stocked`]). When there is no pool at all (a store never
//!   stocked: no one-time package and no last resort), B makes a fresh
//!   one-time package, `MlsLayer::key_package`, as before the pool.
//! - **What A accepts as step 2.** A checks B's package before building on
//!   it and records its `init_key` as used, in one transaction
//!   (`Writer::use_peer_key_package`): signature, credential bound to B's
//!   identity, ciphersuite, lifetime within the cap, extensions, and an
//!   `init_key` B never used before (only the same last resort may come
//!   again). A refused one is answered with `protocol-error` and
//!   [`Event::Refused`] ([`Refusal::BadKeyPackage`]). A bundle's package
//!   (below) goes through the same check.
//! - **Cascade mapping.** Step 2 is a claimed pooled package (above); A runs
//!   `create_group` (its Welcome is step 10) and B `join_group`. Step 6 is
//!   `SignalLayer::pre_key_bundle`, A runs `process_bundle`; step 7 is the
//!   first Signal message (a PreKey message over the session id), made by
//!   running the Signal layer alone as a one-layer cascade. Steps 8 and 9
//!   carry each side's identity-signed ML-KEM-768 key (`set_peer_key`).
//!   The MLS group id on the wire (`groupId` of `mls-welcome`,
//!   `mls-welcome-ack`, `mls-commit`) is `MlsLayer::group_id`; a commit
//!   for another group is refused.
//!
//! # Traffic
//!
//! Outgoing: the plaintext ([`content`]) is written to the outbox first
//! (`queue_outgoing`), then — only while ready, at most
//! [`Config::window`] at a time — cascade-encrypted, split into
//! `__mls_chunk__` PDUs when over 8192 bytes (`strata_proto::split`), and
//! its frames committed with the ratchet state that produced them
//! (`record_encrypted_batch`: every message encrypted in one step, e.g. a
//! burst queued with [`PeerMachine::send_all`], commits in one transaction
//! with the state after the last, so the pair state is sealed once per
//! burst) before they leave. It is retransmitted (2 s,
//! doubling to 60 s; at once after a reconnect) until the peer's
//! end-to-end acknowledgement deletes it (`ack_outgoing`). At most
//! [`Config::max_outbox`] messages wait for one peer: past that a send is
//! refused with [`SessionError::Busy`] (transient; the control API answers
//! `busy`), so a flood of sends meets back-pressure. A message goes
//! again when its timeout passes: RFC 6298's estimate from the round trips
//! of acknowledged messages sent once (SRTT + 4·RTTVAR, at least 1 s; 2 s
//! before the first measure), doubled by each timeout until the next
//! measure, so a peer slowed by load is not sent everything twice.
//! Retransmission resends the same frames, so a chunked message completes across
//! attempts from the chunks the receiver kept; it re-encrypts only when
//! the peer reports it cannot decrypt them (`protocol-error decrypt-failed`
//! naming the message) or when our MLS epoch moved since.
//!
//! Incoming: chunks are reassembled per peer (P8 caps, 120 s); a message
//! id already processed is acknowledged again and not decrypted; a whole
//! message is decrypted and committed (`accept_incoming`: inbox, processed
//! id and ratchet state in one transaction) *before* its acknowledgement
//! is produced. Acknowledgements ride on the next outgoing message or, after
//! 20 ms, in an `ack` plaintext of their own. Delivery is exactly once, in
//! arrival order, with the sender's `seq` for ordering (see [`content`]).
//!
//! # Bad input
//!
//! A malformed, oversized, unknown, unexpected-in-this-state or
//! undecryptable PDU is answered with a `protocol-error` (token bucket:
//! 20 burst, 5/s), reported as [`Event::Refused`], and dropped: the cascade
//! is two-phase, so nothing changes and nothing is stored. Exceptions that
//! are not errors: duplicates (replays of processed messages, duplicate
//! chunks and handshake answers) are dropped silently, and so are
//! messages of an MLS epoch whose commit has not arrived yet (the sender
//! retransmits). A `protocol-error` is never answered.
//!
//! # Reconnection, restart and resume
//!
//! Established sessions persist (the session record in the store's
//! handshake table, the cascade in its layer table). On every link-up a
//! side holding a session sends a *resume probe*:
//! `mls-encryption-sync-request` with the stored session id and
//! `resume = {epoch: MLS epoch, proof: nonce ‖ P}`, where `nonce` is 32
//! fresh random bytes and `P` =
//! [`PairCascade::resume_proof`](strata_cascade::PairCascade::resume_proof)
//! over `"strata/v1/resume/probe\0" ‖ session id ‖ nonce`: an MLS exporter
//! value of the current epoch, bound to both installation ids in sender
//! order. The peer answers `resumed` only when it holds the same session at
//! the same MLS epoch and `P` checks out (constant-time), with its own
//! proof over `"strata/v1/resume/answer\0" ‖ session id ‖ nonce`;
//! otherwise `unknown`, and nothing changes on its side (the session id
//! travels in the clear, so a probe may be forged).
//!
//! A verified `resumed` (or a verified probe of the peer, or a decrypted
//! message) makes the session ready again, `resumed: true`, without a
//! handshake. `unknown` raises [`Event::SessionReset`] (`PeerLostState`)
//! and a `resumed` whose proof does not match raises it with
//! `StateMismatch`; both start a full handshake, which resets the peer's
//! session too (it is told `PeerRestarted`). A side that lost its state
//! also answers `message` PDUs with `protocol-error unexpected`, which
//! triggers the same. Messages encrypted for a replaced session are
//! encrypted again for the new one.
//!
//! What a probe does not prove is freshness: a recorded probe replayed at
//! the same epoch gets `resumed` and makes the peer ready. That only makes
//! it send what the real holder of the session alone can decrypt, kept in
//! its outbox until acknowledged. The answer is fresh (it covers the
//! prober's nonce), so the prober cannot be fooled that way.
//!
//! # Opening from a bundle (one round trip)
//!
//! An installation that publishes a bundle (Waku 53/54 style, see
//! [`prekeys`]) keeps the private halves of its pre-keys installation-wide
//! in the store. A peer A holding B's verified bundle calls
//! [`PeerMachine::open_from_bundle`]: the bundle stands in for steps 1–2
//! (B's identity, pinned by TOFU as step 2 would, and its KeyPackage) and
//! 5–6 (B's PQXDH pre-keys), and B's ML-KEM key from it stands in for 9.
//!
//! ```text
//!  A (holds B's bundle, version v)                 B
//!  3  mls-encryption-sync-request + bundle{A's installation id, identity key, v} ─►
//!  7  signal-session-complete (PQXDH on the bundle's pre-keys) ──────────────────►
//!  8  mlkem-key-exchange (A's signed key) ───────────────────────────────────────►
//!  10 mls-welcome (group made from the bundle's KeyPackage) ─────────────────────►
//!                       B: TOFU(A); layers seeded from the pre-keys of version v;
//!                       7, 8, 10 processed as in the full handshake → encryptionReady
//!     ◄─────────────────────────────────────────────  4, 9, 11
//!  A: encryptionReady
//! ```
//!
//! Each of 7, 8 and 10 is bound to A's identity as in the full handshake
//! (the Signal PreKey message, the signed ML-KEM key, the MLS credential),
//! so a forged step 3 leads nowhere. B refuses a step 3 naming a bundle
//! version it no longer holds (a `protocol-error` naming the session), and
//! A then runs the full handshake. Because a bundle is public, its pre-keys
//! serve any number of initiators (no one-time pre-key; the KeyPackage is
//! last-resort), as 53/WAKU2-X3DH accepts.
//!
//! # Re-keying on a newer bundle
//!
//! A bundle of a higher version than the one seen before of an
//! installation (a re-keying, 54/WAKU2-X3DH-SESSIONS) expires the session
//! with it ([`PeerMachine::expire`]): the next send opens a new session
//! from that bundle as above, replacing the old one once established
//! ([`ResetReason::Rekeyed`]; the peer sees
//! [`ResetReason::PeerRestarted`]). Messages queued meanwhile wait for the
//! new session. The node does this for every bundle its transport
//! delivers (the libp2p transport, on followed bundle topics).
//!
//! # Multi-device
//!
//! An account's installations are named by its signed device list; texts
//! and files to an account fan out to its devices, with sent copies to
//! this account's own; a new device pairs through a one-time secret and
//! joins the account's groups (the sequencer of each adds a device the
//! asking member's list names: `actors/device_groups.rs`). The rules are
//! in [`devices`] and [`pairing`].
//!
//! # KeyPackage pool
//!
//! Each installation keeps a pool of its own KeyPackages ([`pool`],
//! `strata_store::pool`): [`PoolConfig::stock`] one-time packages (64) and
//! one last resort, each with its private parts sealed beside it. The node
//! stocks it at start and hourly, and refills on [`Event::LowKeyPackages`]
//! (a claim that left fewer than [`PoolConfig::refill_below`], 16). Two
//! ways out:
//!
//! - **step 2** of a handshake takes one package (above);
//! - **a claim over an established session** ([`Command::ClaimKeyPackage`],
//!   the node's `ClaimKeyPackage`): a `key-package-claim` inner message
//!   ([`content`]), answered by a `key-package-grant` with one package.
//!   The owner hands it out in one store transaction and keeps its private
//!   parts sealed, *held for the claimer*, until the claimer's Welcome
//!   redeems them (`Writer::redeem_key_package`; a one-time package once,
//!   by its claimer only) or it expires. Each peer may take
//!   [`PoolConfig::claim_burst`] one-time packages (8), then one per
//!   [`PoolConfig::claim_interval`] (2 minutes: 30 an hour); above that,
//!   and when the one-time stock is gone, the last resort is served, so a
//!   peer cannot drain the pool faster than the refill (about 230 µs a
//!   package on the development machine: the `key_packages` bench). At most
//!   4,096 one-time packages are held for claimers at once (above that,
//!   the last resort), so claims cannot fill the disk. The claimer checks
//!   the package exactly as step 2's ([`Refusal::BadKeyPackage`] and
//!   [`Event::KeyPackageClaimFailed`] when it fails) and stores it until
//!   used or expired (`Writer::take_peer_key_package`). A claim is sent
//!   again with backoff while the session is ready, and given up after
//!   [`Config::claim_timeout`]; the owner answers a claim id it already
//!   answered with the same package. The allowance and the answers kept
//!   for repeated claims live in memory: a restart refills the allowance.
//!
//! Group chats add members from claimed packages (`AddToGroup` claims one,
//! the joiner redeems the held private parts from its Welcome); the pair
//! handshake does not use claimed packages. The bundle's KeyPackage is not the pool's: it is the
//! bundle's own last resort, rotated with the bundle's pre-keys, because
//! everyone who reads a broadcast may use it (a bundle whose package is
//! not a last resort is refused).
//!
//! # Rotation
//!
//! - ML-KEM/AES epochs: every [`Config::kem_rotation_messages`] messages
//!   sent or [`Config::kem_rotation_interval`], a side makes a new receive
//!   key (`rotate_receive_key`), starts a new send epoch and sends
//!   `rotation-timestamp-broadcast` (retransmitted until the peer's
//!   `kemKeyAck`); the peer verifies and installs the key (`set_peer_key`).
//!   The layer keeps older epochs, so messages in flight still decrypt.
//! - MLS: every [`Config::mls_update_messages`] messages or
//!   [`Config::mls_update_interval`], the side with the *lower
//!   installation id* commits a self-update (`mls-commit`, retransmitted
//!   until answered by `mls-welcome-ack` at the new epoch); only one side
//!   commits, one commit at a time, so commits never race. Messages of the
//!   old epoch that arrive after the commit are re-encrypted by their
//!   sender (see Traffic).
//!
//! # Actors
//!
//! See [`actors`]: bounded mailboxes, request ids, events to subscribed
//! `Recipient<NodeEvent>`; `examples/auto_reply.rs` is a custom actor.
//!
//! A session is made for any address that sends a frame, so the node
//! bounds them ([`actors::NodeLimits`]): each session reports its
//! [`Footprint`] (what dropping it would lose); empty ones are dropped
//! after an idle minute, and at the session limit the least recently used
//! droppable one (empty, then a stranger's handshake, then a stored
//! session whose link is down) makes room. A stored session is loaded
//! again when its peer comes back.
#![forbid(unsafe_code)]

pub mod actors;
pub mod config;
pub mod content;
mod crypto;
pub mod devices;
pub mod durable;
pub mod error;
mod files;
pub mod group;
pub mod group_files;
pub mod kx;
pub mod machine;
pub mod pairing;
pub mod pool;
pub mod prekeys;

pub use config::Config;
pub use content::{Content, FILE_CHUNK_BYTES, IntroStep};
pub use durable::Durable;
pub use error::{ErrorKind, SessionError};
pub use machine::{
    ClaimedKeyPackage, Command, Event, Footprint, Input, Now, Output, PeerMachine, Refusal, ResetReason, Role,
    Rotation, TieBreak,
};
pub use pool::{PoolConfig, Restock, keep_stocked};
