//! Invites on the daemon: `invite` makes one (its URI carries this node's
//! libp2p addresses), `accept` runs the key exchange and waits until the
//! session with the inviter is ready (`strata_session::kx`).

use std::time::Duration;

use serde_json::{Value, json};
use strata_session::SessionError;
use strata_session::actors::{AcceptInvite, AwaitReady, Introduce, MakeInvite, NodeEventKind, Ready, ResetExchange};
use strata_session::kx::KxRefusal;
use strata_transport::PeerAddr;

use super::{NodeSessions, WAIT, session_error, stopped, wait_for};
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::InviteUri;
use crate::identity::PeerId;

impl NodeSessions {
    pub(super) async fn invite(&self, expires_s: u64, name: String) -> Result<Value> {
        let reply = self
            .node
            .send(MakeInvite {
                request_id: self.request_id(),
                ttl: Duration::from_secs(expires_s),
                name,
            })
            .await
            .map_err(|_| stopped())?;
        let invite = reply.result.map_err(kx_error)?;
        let expires = invite.expires;
        let uri = InviteUri {
            invite,
            addrs: self.reach.1.clone(),
        };
        Ok(json!({"uri": uri.to_string(), "expires": expires}))
    }

    pub(super) async fn accept(&self, text: &str, name: String) -> Result<Value> {
        let uri = InviteUri::parse(text).map_err(crate::identity::bad_invite)?;
        let Some(libp2p) = &self.libp2p else {
            return Err(AppError::new(
                ErrorKind::NotAvailable,
                "an invite is accepted over libp2p, which is off",
            )
            .hint("set libp2p.enabled = true in the config"));
        };
        for addr in &uri.addrs {
            if let Err(e) = libp2p.dial(addr.clone()).await {
                tracing::info!(%addr, error = %e, "cannot dial an inviter's address");
            }
        }
        let reply = self
            .node
            .send(AcceptInvite {
                request_id: self.request_id(),
                invite: Box::new(uri.invite),
                name,
            })
            .await
            .map_err(|_| stopped())?;
        let inviter = reply.result.map_err(kx_error)?;
        let peer = PeerAddr::new(inviter.installation.to_hex());
        let peer_id = PeerId::from_key_bytes(&inviter.identity_key)
            .map(|p| p.to_string())
            .map_err(AppError::internal)?;
        let ready = self.ready_within(&peer, &peer_id).await?;
        Ok(json!({
            "peer": peer.as_str(),
            "peerId": peer_id,
            "name": inviter.name,
            "installation": inviter.installation.to_hex(),
            "state": "ready",
            "resumed": ready.resumed,
            "trust": "verified-by-invite",
        }))
    }
}

impl NodeSessions {
    /// Resets the exchange with a peer met by invite, and waits until it
    /// ran again and the session is ready.
    pub(super) async fn reset(&self, text: &str) -> Result<Value> {
        let peer = self.resolve(text).await?;
        let installation: strata_cascade::InstallationId = peer.as_str().parse().map_err(|_| {
            AppError::new(ErrorKind::Usage, format!("{peer} is not an installation"))
                .hint("name the peer by its installation id, peer id or contact URI")
        })?;
        let mut live = self.observed.subscribe();
        let reply = self
            .node
            .send(ResetExchange {
                request_id: self.request_id(),
                installation,
            })
            .await
            .map_err(|_| stopped())?;
        reply.result.map_err(kx_error)?;
        let exchanged = wait_for(&mut live, WAIT, |o| {
            o.event.peer == peer && matches!(o.event.kind, NodeEventKind::KeyExchanged { reset: true, .. })
        })
        .await;
        if !exchanged {
            return Err(AppError::new(
                ErrorKind::Network,
                format!("{peer} did not answer the reset within {}s", WAIT.as_secs()),
            )
            .hint("the reset invite holds 7 days: the peer answers when it is online"));
        }
        let ready = self.ready_within(&peer, &peer).await?;
        Ok(json!({"peer": peer.as_str(), "state": "ready", "resumed": ready.resumed}))
    }

    /// Asks the contact `to` to meet the contact `target` through this node.
    pub(super) async fn introduce(&self, to: &str, target: &str) -> Result<Value> {
        let installation = |peer: PeerAddr| {
            peer.as_str().parse::<strata_cascade::InstallationId>().map_err(|_| {
                AppError::new(ErrorKind::Usage, format!("{peer} is not an installation"))
                    .hint("name each contact by its installation id, peer id or contact URI")
            })
        };
        let to = installation(self.resolve(to).await?)?;
        let target = installation(self.resolve(target).await?)?;
        let reply = self
            .node
            .send(Introduce {
                request_id: self.request_id(),
                to,
                target,
            })
            .await
            .map_err(|_| stopped())?;
        reply.result.map_err(session_error)?;
        Ok(json!({"to": to.to_hex(), "target": target.to_hex()}))
    }

    /// Waits (at most [`WAIT`]) until the session with `peer` is ready.
    async fn ready_within(&self, peer: &PeerAddr, who: &(dyn std::fmt::Display + Sync)) -> Result<Ready> {
        let ready = self.node.send(AwaitReady {
            request_id: self.request_id(),
            peer: peer.clone(),
        });
        match tokio::time::timeout(WAIT, ready).await {
            Ok(reply) => reply.map_err(|_| stopped())?.result.map_err(session_error),
            Err(_) => Err(AppError::new(
                ErrorKind::Network,
                format!("the key exchange with {who} did not finish within {}s", WAIT.as_secs()),
            )
            .hint("the node keeps trying until the invite expires; `strata inbox --follow` shows kx-completed and encryption-ready")),
        }
    }
}

/// A refused invite or exchange, as the CLI reports it.
fn kx_error(e: SessionError) -> AppError {
    let SessionError::Kx(refusal) = &e else {
        return session_error(e);
    };
    let kind = match refusal {
        KxRefusal::Expired | KxRefusal::AlreadyAccepted | KxRefusal::SelfAddressed | KxRefusal::Used => {
            ErrorKind::Usage
        }
        KxRefusal::TooMany => ErrorKind::Busy,
        KxRefusal::NotMet => ErrorKind::NotFound,
        _ => ErrorKind::VerificationFailed,
    };
    let hint = match refusal {
        KxRefusal::Expired => "ask its maker for a new invite",
        KxRefusal::SelfAddressed => "this invite is your own: give it to someone else",
        KxRefusal::AlreadyAccepted => "`strata peers` shows the session it opened",
        KxRefusal::TooMany => "wait for open invites to be used or to expire",
        KxRefusal::NotMet => "a reset is for peers met through `strata invite` and `strata accept`",
        _ => "the invite was altered or is not an invite: ask its maker for it again over a channel you trust",
    };
    AppError::new(kind, format!("invite refused: {refusal}")).hint(hint)
}
