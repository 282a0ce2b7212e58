//! The command line.

use std::time::Duration;

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

/// A peer-to-peer, end-to-end encrypted messaging node.
///
/// While `strata run` is up, the other commands talk to it through its
/// control API; without a daemon, read-only commands work on the store.
#[derive(Debug, Parser)]
#[command(name = "strata", version)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// The node's data directory [default: the platform's data directory,
    /// e.g. ~/.local/share/strata]
    #[arg(long, env = "STRATA_HOME", global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The config file [default: config.toml in the data directory]
    #[arg(short = 'c', long, env = "STRATA_CONFIG", global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print results as JSON (one object per line), and errors as JSON on
    /// stderr
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG
    /// overrides it
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create this node's identity and a commented default config
    Init(InitArgs),
    /// Run the node: store, transports, control API
    #[command(visible_alias = "daemon")]
    Run,
    /// Show the peer id, installation id, identity key and contact URI
    Id(IdArgs),
    /// Open a session with a peer and show the handshake until it is ready
    Connect(PeerArgs),
    /// Send a text or a file to a peer; prints the message id
    Send(SendArgs),
    /// Show received messages and node events
    Inbox(InboxArgs),
    /// List sessions with their state, transport, activity and trust
    Peers,
    /// Show the KeyPackage pool: stock, last resort, next expiry, claims in
    /// the last hour
    Keys,
    /// Show the safety number with a peer; record that you compared it
    Verify(VerifyArgs),
    /// Make an invite: a URI (and QR code) one person accepts to start a
    /// conversation with you, both identities pinned (over libp2p)
    Invite(InviteArgs),
    /// Accept an invite: run the key exchange with its maker and open a
    /// session, its identity pinned from the invite
    Accept(AcceptArgs),
    /// Run the key exchange again with a peer met by invite, when a side
    /// lost its session: a fresh invite goes, sealed, to its reset point
    Reset(PeerArgs),
    /// Introduce two of your contacts: the first is asked to meet the
    /// second, through you; they then run the key exchange and talk
    /// directly
    Introduce(IntroduceArgs),
    /// Group chats: create, add, remove, leave, send, list
    Group {
        #[command(subcommand)]
        command: crate::sessions::GroupAction,
    },
    /// This account's devices: list them, remove one
    Devices {
        #[command(subcommand)]
        command: crate::sessions::DeviceAction,
    },
    /// The account key: a backup to restore the account on a new device
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Show the configuration in effect, or where it is read from
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run a standalone PeerJS-compatible signaling broker
    Broker(BrokerArgs),
    /// Run the node's main job on embedded defaults.
    Demo,
}

#[derive(Debug, Args)]
pub(crate) struct InviteArgs {
    /// How long the invite holds: a number and s, m, h or d (at most 30d)
    #[arg(long, default_value = "7d", value_parser = parse_ttl)]
    pub(crate) expires: Duration,
    /// The name the invite shows
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Also draw the invite as a QR code
    #[arg(long)]
    pub(crate) qr: bool,
}

#[derive(Debug, Args)]
pub(crate) struct IntroduceArgs {
    /// The contact told to meet the other: contact URI, peer id or
    /// installation id
    pub(crate) to: String,
    /// The contact to meet
    pub(crate) target: String,
}

#[derive(Debug, Args)]
pub(crate) struct AcceptArgs {
    /// The invite (`strata-invite:…`), or a file holding it
    pub(crate) invite: String,
    /// The name the inviter sees
    #[arg(long)]
    pub(crate) name: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Replace an existing identity: its sessions, contacts and messages
    /// are deleted, and peers will see a new safety number
    #[arg(long)]
    pub(crate) force: bool,
    /// Restore the account from a backup (`strata account export`) as a
    /// new device of it; its passphrase comes from STRATA_BACKUP_PASSPHRASE
    #[arg(long, value_name = "FILE")]
    pub(crate) restore: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// Also show the contact URI as a QR code
    #[arg(long, conflicts_with = "json")]
    pub(crate) qr: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PeerArgs {
    /// Contact URI (strata:…), peer id, installation id, PeerJS id or libp2p
    /// multiaddr
    pub(crate) peer: String,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The recipient: contact URI, peer id or installation id
    pub(crate) peer: String,
    /// The text to send
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub(crate) text: Option<String>,
    /// Send this file instead
    #[arg(long, value_name = "PATH")]
    pub(crate) file: Option<PathBuf>,
    /// Wait until the peer acknowledges the message
    #[arg(long)]
    pub(crate) wait_ack: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InboxArgs {
    /// Keep printing new messages and events as they arrive
    #[arg(long, short)]
    pub(crate) follow: bool,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The peer: contact URI, peer id, or installation id of a contact
    pub(crate) peer: String,
    /// Also show the scannable form as a QR code
    #[arg(long, conflicts_with = "json")]
    pub(crate) qr: bool,
    /// Record the peer as verified if these 60 digits (spaces allowed), or
    /// this base64 scanned code, match; compared in constant time
    #[arg(long, value_name = "DIGITS")]
    pub(crate) mark_verified: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AccountCommand {
    /// Write the account key, sealed with STRATA_BACKUP_PASSPHRASE, to a
    /// file (`strata init --restore FILE` on a new device reads it). Whoever
    /// has the file and the passphrase has the account: keep both apart
    Export {
        /// Where to write the backup (refused if it exists)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the configuration in effect (file + STRATA_* variables)
    Show,
    /// Print the config file's path
    Path,
}

#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// The port [default: broker.port of the config, 9000]; 0 picks a free one
    #[arg(long, short)]
    pub(crate) port: Option<u16>,
    /// The address to bind [default: broker.address of the config,
    /// 127.0.0.1]; 0.0.0.0 serves other machines too
    #[arg(long)]
    pub(crate) host: Option<std::net::IpAddr>,
    /// The broker key clients must present [default: peerjs.key of the
    /// config, "peerjs"]
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// The mount path
    #[arg(long, default_value = "/")]
    pub(crate) path: String,
    /// Answer `GET /<key>/peers` with the connected ids
    #[arg(long)]
    pub(crate) allow_discovery: bool,
    /// Serve wss:// with this certificate chain (PEM); needs --tls-key
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}

/// Parses an invite's lifetime: a number and a unit, `s`, `m`, `h` or `d`
/// (`7d`, `12h`).
fn parse_ttl(text: &str) -> std::result::Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a lifetime like 7d or 12h"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    let max = strata_session::kx::MAX_INVITE_TTL;
    match n.checked_mul(unit).map(Duration::from_secs) {
        Some(d) if d > Duration::ZERO && d <= max => Ok(d),
        _ => Err(format!("an invite lives from 1s to {} days", max.as_secs() / 86_400)),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_takes_a_text_or_a_file() {
        assert!(Cli::try_parse_from(["strata", "send", "peer", "hello"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "send", "peer", "--file", "x"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "send", "peer"]).is_err());
        assert!(Cli::try_parse_from(["strata", "send", "peer", "hi", "--file", "x"]).is_err());
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from(["strata", "id", "--data-dir", "/d", "--json"]).unwrap();
        assert_eq!(cli.global.data_dir.as_deref(), Some(std::path::Path::new("/d")));
        assert!(cli.global.json);
        assert!(Cli::try_parse_from(["strata", "id", "--qr", "--json"]).is_err());
        let cli = Cli::try_parse_from(["strata", "daemon"]).unwrap();
        assert!(matches!(cli.command, Command::Run));
    }

    #[test]
    fn lifetimes_take_a_unit_and_stay_in_bounds() {
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("3"), Ok(Duration::from_secs(3 * 86_400)));
        for bad in ["", "d", "0d", "31d", "5w", "-1d", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
