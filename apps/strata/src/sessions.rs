//! The boundary to the session layer: everything `connect`, `send`,
//! `inbox` and `peers` need, and nothing else.
//!
//! The CLI turns those commands into a [`SessionCall`] and sends it over the
//! control API (method = the call's name, params = its JSON); the daemon
//! hands it to its [`Sessions`], which is [`crate::node::NodeSessions`].
//! Without a daemon, `inbox` and `peers` read the store directly.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A request for the session layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "method",
    content = "params",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub(crate) enum SessionCall {
    /// Open a session with a peer (contact URI, peer id, installation id,
    /// PeerJS id or multiaddr) and report handshake progress.
    Connect {
        /// The peer, as the user gave it (validated by the CLI).
        peer: String,
    },
    /// Send a text or a file; returns the message id.
    Send {
        /// The peer.
        peer: String,
        /// What to send.
        body: SendBody,
        /// Return only when the peer acknowledged it.
        wait_ack: bool,
    },
    /// Received messages and node events.
    Inbox {
        /// Keep streaming new ones.
        follow: bool,
    },
    /// Sessions and their state.
    Peers,
    /// A group chat request.
    Group {
        /// What.
        action: GroupAction,
    },
    /// This account's devices.
    Devices {
        /// What.
        action: DeviceAction,
    },
    /// Make an invite; returns its URI.
    Invite {
        /// How long it holds, seconds.
        expires_s: u64,
        /// The name it shows.
        name: String,
    },
    /// Introduce two contacts: `to` is asked to meet `target`.
    Introduce {
        /// Who is told.
        to: String,
        /// Whom it is to meet.
        target: String,
    },
    /// Run the key exchange again with a peer met by invite.
    Reset {
        /// The peer.
        peer: String,
    },
    /// Accept an invite and open a session with its maker.
    Accept {
        /// The invite URI.
        invite: String,
        /// The name the inviter sees.
        name: String,
    },
}

/// What `strata devices` asks: the CLI's subcommands and the API's
/// `devices` params alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub(crate) enum DeviceAction {
    /// This account's devices: the signed list's version, and when each
    /// device was last heard from
    List,
    /// Remove one of this account's devices: a new list without it goes
    /// to your contacts and devices, and contacts stop sending to it
    Remove {
        /// Its installation id
        installation: String,
    },
    /// Show a one-time pairing URI (and QR code) for a new device; it
    /// holds 10 minutes and pairs one device
    Pair {
        /// Also draw the URI as a QR code
        #[arg(long)]
        #[serde(default)]
        qr: bool,
    },
    /// Make this fresh data directory a device of the account whose
    /// device showed `uri` (no daemon: run `strata run` after)
    Join {
        /// The pairing URI (`strata-pair:…`)
        uri: String,
    },
}

/// What `strata group` asks: the CLI's subcommands and the API's `group`
/// params alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub(crate) enum GroupAction {
    /// Start a group chat (you are its admin); prints its id
    Create {
        /// Its name
        #[arg(long)]
        name: Option<String>,
    },
    /// Add a peer with an open session (claims one of its KeyPackages)
    Add {
        /// The group id
        group: String,
        /// The peer: contact URI, peer id or installation id
        peer: String,
    },
    /// Remove a member (admins commit it; members ask the admins)
    Remove {
        /// The group id
        group: String,
        /// The member's installation id
        member: String,
    },
    /// Leave a group (asks its admins)
    Leave {
        /// The group id
        group: String,
    },
    /// Send a text or a file (at most 2 MiB) to a group
    Send {
        /// The group id
        group: String,
        /// The text
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Send this file instead (an absolute path on the daemon's
        /// machine in the API)
        #[arg(long, value_name = "PATH")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<PathBuf>,
    },
    /// Show a group's name, epoch, members and admins
    Members {
        /// The group id
        group: String,
    },
    /// List the group chats this node is in
    List,
}

/// What `send` sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SendBody {
    /// A UTF-8 text message.
    Text(String),
    /// A file, by absolute path on the daemon's machine (the same machine:
    /// the API is loopback only).
    File(PathBuf),
}

impl SessionCall {
    /// The control API method name, which is the CLI command's name.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Send { .. } => "send",
            Self::Inbox { .. } => "inbox",
            Self::Peers => "peers",
            Self::Group { .. } => "group",
            Self::Devices { .. } => "devices",
            Self::Invite { .. } => "invite",
            Self::Accept { .. } => "accept",
            Self::Reset { .. } => "reset",
            Self::Introduce { .. } => "introduce",
        }
    }
}

/// What the CLI and the control API need from the session layer. Results
/// are JSON because the session layer defines their shape.
#[async_trait]
pub(crate) trait Sessions: Send + Sync {
    /// Carries out `call`.
    async fn call(&self, call: SessionCall) -> Result<serde_json::Value>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_travel_as_method_and_params() {
        let call = SessionCall::Send {
            peer: "abc".into(),
            body: SendBody::Text("hi".into()),
            wait_ack: true,
        };
        let json = serde_json::to_value(&call).unwrap();
        assert_eq!(json["method"], "send");
        assert_eq!(json["params"]["body"]["text"], "hi");
        assert_eq!(json["params"]["waitAck"], true);
        let back: SessionCall = serde_json::from_value(json).unwrap();
        assert_eq!(back, call);
        let peers: SessionCall = serde_json::from_value(serde_json::json!({"method": "peers"})).unwrap();
        assert_eq!(peers, SessionCall::Peers);
    }
}
