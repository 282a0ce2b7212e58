//! Timers, windows and rotation schedules of a session.

use std::time::Duration;

/// How a session behaves in time. [`Config::default`] is the product's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// First retransmission timeout of a handshake PDU; doubles per retry.
    pub handshake_rto: Duration,
    /// Largest handshake retransmission timeout.
    pub handshake_rto_max: Duration,
    /// A handshake not finished after this long is abandoned (P8: 300 s).
    pub handshake_stall: Duration,
    /// First delay before retrying an abandoned handshake; doubles per
    /// stall, up to [`Config::handshake_stall`].
    pub handshake_retry: Duration,
    /// Retransmission timeout of an unacknowledged message until the
    /// round trip to the peer is measured (then RFC 6298's estimate, at
    /// least 1 s).
    pub message_rto: Duration,
    /// Largest message retransmission timeout.
    pub message_rto_max: Duration,
    /// Most messages encrypted and unacknowledged at once; later ones wait,
    /// durable in the outbox.
    pub window: usize,
    /// Most messages queued to one peer and not yet acknowledged: past it,
    /// a send is refused ([`SessionError::Busy`](crate::SessionError::Busy),
    /// a transient error: send again once some are delivered), so a flood
    /// of sends meets back-pressure rather than an outbox without end.
    pub max_outbox: usize,
    /// Most installations of one account a text goes to (fan-out, see
    /// [`crate::devices`]); 54/WAKU2-X3DH-SESSIONS recommends 3.
    pub max_devices: usize,
    /// How long a fan-out waits for the session with a device it has no
    /// session with yet before sending without it.
    pub fan_out_wait: Duration,
    /// How long a received message's acknowledgement may wait for company.
    pub ack_delay: Duration,
    /// Acknowledge at once when this many received messages await it: a
    /// sender whose window is full waits for nothing else.
    pub ack_every: usize,
    /// Start a new ML-KEM/AES epoch after this many messages sent ...
    pub kem_rotation_messages: u64,
    /// ... or after this long, whichever comes first.
    pub kem_rotation_interval: Duration,
    /// MLS self-update after this many messages sent ...
    pub mls_update_messages: u64,
    /// ... or after this long, whichever comes first.
    pub mls_update_interval: Duration,
    /// `protocol-error` replies allowed per second (token bucket refill).
    pub error_rate: u32,
    /// `protocol-error` burst.
    pub error_burst: u32,
    /// Lifetime of the KeyPackages made outside the pool (the bundle's, and
    /// step 2's when there is no pool to claim from), seconds.
    pub key_package_lifetime_secs: u64,
    /// How this installation's KeyPackage pool is kept
    /// ([`crate::pool::keep_stocked`]): 64 one-time packages by default.
    pub key_package_pool: crate::pool::PoolConfig,
    /// A KeyPackage claim of ours with no answer after this long fails
    /// ([`crate::Event::KeyPackageClaimFailed`]).
    pub claim_timeout: Duration,
    /// On joining a group, ask the admin that added this installation to
    /// introduce it to every member it has no session with (BisonRelay's
    /// auto-KX, [`crate::kx`]): a key exchange and a pair session with
    /// each, so a group of n costs n − 1 of them per joiner.
    pub introduce_group_members: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            handshake_rto: Duration::from_secs(1),
            handshake_rto_max: Duration::from_secs(16),
            handshake_stall: Duration::from_secs(300),
            handshake_retry: Duration::from_secs(5),
            message_rto: Duration::from_secs(2),
            message_rto_max: Duration::from_secs(60),
            window: 64,
            max_outbox: 10_000,
            max_devices: 3,
            fan_out_wait: Duration::from_secs(10),
            ack_delay: Duration::from_millis(20),
            ack_every: 8,
            kem_rotation_messages: 1000,
            kem_rotation_interval: Duration::from_secs(3600),
            mls_update_messages: 1000,
            mls_update_interval: Duration::from_secs(3600),
            error_rate: 5,
            error_burst: 20,
            key_package_lifetime_secs: 24 * 3600,
            key_package_pool: crate::pool::PoolConfig::default(),
            claim_timeout: Duration::from_secs(60),
            introduce_group_members: true,
        }
    }
}
