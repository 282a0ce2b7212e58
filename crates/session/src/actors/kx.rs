//! The node's side of the out-of-band key exchange: the [`KxBook`] loaded
//! at start, invites made and accepted on request, rendezvous frames from
//! the transport, the book's outputs carried out (subscriptions,
//! publications, completions), its timer.
//!
//! A completed exchange is published as [`NodeEventKind::KeyExchanged`]
//! for the peer's installation; on the side that accepted the invite, the
//! node then opens the Strata handshake to it, expecting the account key
//! the exchange pinned. The key exchange needs a transport that publishes
//! to topics (libp2p); without one, invites are refused as unavailable.

use strata_cascade::InstallationId;
use strata_proto::kx::Invite;

use super::*;
use crate::content::{Content, IntroStep};
use crate::kx::{AcceptedInvite, KxBook, KxOutput, topic_rendezvous};

/// Make an invite (`strata invite`): valid for `ttl`, showing `name`.
#[derive(Debug, Message)]
#[rtype(result = "Reply<Invite>")]
pub struct MakeInvite {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// How long it holds (capped by [`crate::kx::MAX_INVITE_TTL`]).
    pub ttl: Duration,
    /// The name it shows.
    pub name: String,
}

/// Accept an invite (`strata accept`): the half KX goes out; the exchange
/// completes when the inviter answers ([`NodeEventKind::KeyExchanged`]),
/// and the Strata handshake to the inviter follows.
#[derive(Debug, Message)]
#[rtype(result = "Reply<AcceptedInvite>")]
pub struct AcceptInvite {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The invite.
    pub invite: Box<Invite>,
    /// The name this side shows.
    pub name: String,
}

/// Reset the key exchange with the peer at an installation met through one
/// (`strata reset`): a fresh invite goes, sealed, to its reset point; the
/// exchange runs again ([`NodeEventKind::KeyExchanged`] with `reset`), and
/// the session with it after.
#[derive(Debug, Message)]
#[rtype(result = "Reply<()>")]
pub struct ResetExchange {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The peer's installation.
    pub installation: strata_cascade::InstallationId,
}

/// The node's key-exchange state.
#[derive(Default)]
pub(super) struct Exchanges {
    book: Option<KxBook>,
    timer: Option<SpawnHandle>,
    /// Introductions this node mediates: (asker, target) → when asked.
    mediating: BTreeMap<(InstallationId, InstallationId), std::time::Instant>,
}

impl<T: Transport> Node<T> {
    /// Loads the book and subscribes to its rendezvous points; off when the
    /// transport cannot publish to topics.
    pub(super) fn restore_exchanges(&mut self, ctx: &mut Context<Self>) {
        if !self.broadcast {
            return;
        }
        let loaded = KxBook::load(
            Arc::clone(&self.setup.store),
            Arc::clone(&self.setup.local),
            rand::random(),
            now().unix_ms,
        );
        match loaded {
            Ok(mut book) => {
                // Peers met by invite whose session is gone: the exchange
                // runs again, so the handshake meets a pinned key.
                match book.reset_lost("", now().unix_ms) {
                    Ok(reset) if !reset.is_empty() => {
                        tracing::info!(peers = reset.len(), "sessions lost with peers met by invite: reset");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot reset the exchanges of lost sessions"),
                }
                self.exchanges.book = Some(book);
                self.drain_exchanges(ctx);
            }
            Err(e) => tracing::error!(error = %e, "key exchanges are off: cannot load them"),
        }
    }

    fn book(&mut self) -> Result<&mut KxBook, SessionError> {
        if !self.broadcast {
            return Err(SessionError::Unavailable(
                "a key exchange needs a transport that publishes to topics (libp2p)",
            ));
        }
        self.exchanges
            .book
            .as_mut()
            .ok_or(SessionError::Unavailable("key exchanges"))
    }

    /// Runs one request on the book, then carries out what it asks.
    fn book_step<R>(
        &mut self,
        ctx: &mut Context<Self>,
        step: impl FnOnce(&mut KxBook, u64) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let result = self.book().and_then(|book| step(book, now().unix_ms));
        self.drain_exchanges(ctx);
        result
    }

    /// A frame published on `topic`, if it is a rendezvous point: true
    /// when it was taken.
    pub(super) fn rendezvous_frame(&mut self, topic: &Topic, frame: &[u8], ctx: &mut Context<Self>) -> bool {
        let Some(rv) = topic_rendezvous(topic) else {
            return false;
        };
        let Some(book) = self.exchanges.book.as_mut() else {
            return true;
        };
        if let Err(e) = book.on_frame(&rv, frame, now().unix_ms) {
            // Anyone can publish there: a refusal is logged (quietly: it
            // costs a stranger nothing), not answered.
            tracing::debug!(error = %e, "a key-exchange message refused");
        }
        self.drain_exchanges(ctx);
        true
    }

    /// Carries out the book's outputs and sets its timer.
    fn drain_exchanges(&mut self, ctx: &mut Context<Self>) {
        let Some(book) = self.exchanges.book.as_mut() else {
            return;
        };
        let mut outputs = Vec::new();
        while let Some(o) = book.poll_output() {
            outputs.push(o);
        }
        let deadline = book.next_deadline();
        let transport = self.transport_actor.clone();
        for output in outputs {
            match (output, transport.clone()) {
                (KxOutput::Subscribe(topic), Some(t)) => self.forward(t, SubscribeTopic(topic), ctx),
                (KxOutput::Unsubscribe(topic), Some(t)) => self.forward(t, UnsubscribeTopic(topic), ctx),
                (KxOutput::Publish { topic, frame }, Some(t)) => self.forward(t, Publish { topic, frame }, ctx),
                (KxOutput::Completed(done), _) => {
                    let peer = self.address_of(done.installation);
                    tracing::info!(%peer, accepted = done.accepted, reset = done.reset, "key exchange completed");
                    if done.accepted {
                        self.open_expecting(peer.clone(), done.identity_key.clone(), ctx);
                    }
                    self.publish(
                        NodeEvent {
                            peer,
                            kind: NodeEventKind::KeyExchanged {
                                account: done.identity_key,
                                name: done.name,
                                accepted: done.accepted,
                                reset: done.reset,
                            },
                        },
                        ctx,
                    );
                }
                (_, None) => tracing::debug!("a key-exchange output with no transport"),
            }
        }
        if let Some(timer) = self.exchanges.timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(at) = deadline {
            // A floor, so that an upkeep that keeps failing cannot spin.
            let delay = Duration::from_millis(at.saturating_sub(now().unix_ms)).max(Duration::from_millis(100));
            self.exchanges.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.exchanges.timer = None;
                if let Some(book) = act.exchanges.book.as_mut()
                    && let Err(e) = book.tick(now().unix_ms)
                {
                    tracing::warn!(error = %e, "key-exchange upkeep failed");
                }
                act.drain_exchanges(ctx);
            }));
        }
    }
}

impl<T: Transport> Handler<MakeInvite> for Node<T> {
    type Result = MessageResult<MakeInvite>;

    fn handle(&mut self, msg: MakeInvite, ctx: &mut Self::Context) -> Self::Result {
        let result = self.book_step(ctx, |book, now_ms| book.invite(&msg.name, msg.ttl, now_ms));
        MessageResult(Reply {
            request_id: msg.request_id,
            result,
        })
    }
}

impl<T: Transport> Handler<ResetExchange> for Node<T> {
    type Result = MessageResult<ResetExchange>;

    fn handle(&mut self, msg: ResetExchange, ctx: &mut Self::Context) -> Self::Result {
        let result = self.book_step(ctx, |book, now_ms| book.reset(msg.installation, "", now_ms));
        MessageResult(Reply {
            request_id: msg.request_id,
            result,
        })
    }
}

impl<T: Transport> Handler<AcceptInvite> for Node<T> {
    type Result = MessageResult<AcceptInvite>;

    fn handle(&mut self, msg: AcceptInvite, ctx: &mut Self::Context) -> Self::Result {
        let result = self.book_step(ctx, |book, now_ms| book.accept(&msg.invite, &msg.name, now_ms));
        MessageResult(Reply {
            request_id: msg.request_id,
            result,
        })
    }
}

/// Introduce two peers (`strata introduce`): `to` is told to meet
/// `target` through this node (BisonRelay's KX suggestion); it asks, and
/// this node mediates. Both must be contacts.
#[derive(Debug, Message)]
#[rtype(result = "Reply<()>")]
pub struct Introduce {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// Who is told.
    pub to: InstallationId,
    /// Whom it is to meet.
    pub target: InstallationId,
}

/// Most introductions a mediator passes on at once.
const MAX_MEDIATING: usize = 256;

impl<T: Transport> Node<T> {
    /// A session event carrying an introduction step: the node's, never
    /// the user's (true when taken).
    pub(super) fn kx_event(&mut self, event: &NodeEvent, ctx: &mut Context<Self>) -> bool {
        let NodeEventKind::Session(Event::Received {
            content: Content::Introduction { step },
            ..
        }) = &event.kind
        else {
            return false;
        };
        match self.installation_at(&event.peer) {
            Some(from) => self.introduction_step(&event.peer, from, step.clone(), ctx),
            None => tracing::debug!(peer = %event.peer, "an introduction step from no known installation"),
        }
        self.drain_exchanges(ctx);
        true
    }

    fn introduction_step(&mut self, peer: &PeerAddr, from: InstallationId, step: IntroStep, ctx: &mut Context<Self>) {
        let now_ms = now().unix_ms;
        match step {
            IntroStep::MediateIdentity { target, identity } => {
                let Ok(target) = target.parse::<InstallationId>() else {
                    return;
                };
                // The asker's own identity, and a target this node knows.
                let asker = self.pinned_account(&from.to_hex());
                let presented = serde_json::from_slice(&identity)
                    .ok()
                    .and_then(|p| strata_cascade::kx::verify_identity(&p).ok());
                let known = target != from && self.pinned_account(&target.to_hex()).is_some();
                if !known || asker.is_none() || presented.map(|p| p.identity_key) != asker {
                    tracing::info!(%from, %target, "a request to be introduced refused");
                    return;
                }
                let mediating = &mut self.exchanges.mediating;
                mediating.retain(|_, at| at.elapsed() < crate::kx::MEDIATION_TTL);
                if mediating.len() >= MAX_MEDIATING {
                    tracing::info!(%from, "too many introductions under way: one refused");
                    return;
                }
                mediating.insert((from, target), std::time::Instant::now());
                let step = IntroStep::Invite {
                    installation: from.to_hex(),
                    identity,
                };
                self.send_internal(self.address_of(target), Content::Introduction { step }, ctx);
            }
            IntroStep::Invite { installation, identity } => {
                let Ok(installation) = installation.parse::<InstallationId>() else {
                    return;
                };
                let sealed = self
                    .book()
                    .and_then(|book| book.invite_for(&identity, installation, now_ms));
                match sealed {
                    Ok(sealed) => {
                        let step = IntroStep::Transitive {
                            to: installation.to_hex(),
                            sealed,
                        };
                        self.send_internal(peer.clone(), Content::Introduction { step }, ctx);
                    }
                    Err(e) => tracing::info!(%from, %installation, error = %e, "no invite for an introduction"),
                }
            }
            IntroStep::Transitive { to, sealed } => {
                let Ok(to) = to.parse::<InstallationId>() else { return };
                if self.exchanges.mediating.remove(&(to, from)).is_none() {
                    tracing::info!(%from, %to, "an introduction this node was not asked to mediate: dropped");
                    return;
                }
                let step = IntroStep::Forward {
                    from: from.to_hex(),
                    sealed,
                };
                self.send_internal(self.address_of(to), Content::Introduction { step }, ctx);
            }
            IntroStep::Forward { from: inviter, sealed } => {
                let Ok(inviter) = inviter.parse::<InstallationId>() else {
                    return;
                };
                let accepted = self
                    .book()
                    .and_then(|book| book.on_introduction(inviter, from, &sealed, now_ms));
                match accepted {
                    Ok(_) => tracing::info!(%inviter, via = %from, "an introduction accepted: the key exchange runs"),
                    Err(e) => tracing::info!(%inviter, via = %from, error = %e, "an introduction refused"),
                }
            }
            IntroStep::Suggestion { target } => {
                let Ok(target) = target.parse::<InstallationId>() else {
                    return;
                };
                self.ask_to_meet(target, from, ctx);
            }
        }
    }

    /// Asks the mediator `via` to introduce this node to `target`, unless
    /// it is known already or asked for.
    pub(super) fn ask_to_meet(&mut self, target: InstallationId, via: InstallationId, ctx: &mut Context<Self>) {
        if target == self.setup.local.installation_id() || self.pinned_account(&target.to_hex()).is_some() {
            return;
        }
        let asked = self.book().and_then(|book| {
            if book.ask_introduction(target, via, now().unix_ms)? {
                book.public_identity("").map(Some)
            } else {
                Ok(None)
            }
        });
        match asked {
            Ok(Some(identity)) => {
                let step = IntroStep::MediateIdentity {
                    target: target.to_hex(),
                    identity,
                };
                self.send_internal(self.address_of(via), Content::Introduction { step }, ctx);
            }
            Ok(None) => {}
            Err(e) => tracing::info!(%target, %via, error = %e, "cannot ask for an introduction"),
        }
    }

    /// This node joined `group` (added by `by`): it asks `by` to introduce
    /// it to every member it has no session with.
    pub(super) fn meet_members(&mut self, group: &str, by: InstallationId, ctx: &mut Context<Self>) {
        if !self.setup.config.introduce_group_members {
            return;
        }
        let Some((actor, _)) = self.groups.actors.get(group) else {
            return;
        };
        ctx.spawn(
            actor
                .send(super::groups::DescribeGroup)
                .into_actor(self)
                .map(move |summary, act, ctx| {
                    let Ok(Ok(summary)) = summary else { return };
                    let own = act.devices.book.as_ref().map(|b| b.own_devices()).unwrap_or_default();
                    for member in summary.members.iter().filter_map(|m| m.parse::<InstallationId>().ok()) {
                        if member != by && !own.contains(&member) {
                            act.ask_to_meet(member, by, ctx);
                        }
                    }
                    act.drain_exchanges(ctx);
                }),
        );
    }
}

impl<T: Transport> Handler<Introduce> for Node<T> {
    type Result = MessageResult<Introduce>;

    fn handle(&mut self, msg: Introduce, ctx: &mut Self::Context) -> Self::Result {
        let known = |i: InstallationId| self.pinned_account(&i.to_hex()).is_some();
        let result = if msg.to == msg.target {
            Err(SessionError::Misuse("introducing a peer to itself"))
        } else if !known(msg.to) {
            Err(SessionError::UnknownPeer(msg.to.to_hex()))
        } else if !known(msg.target) {
            Err(SessionError::UnknownPeer(msg.target.to_hex()))
        } else {
            let step = IntroStep::Suggestion {
                target: msg.target.to_hex(),
            };
            self.send_internal(self.address_of(msg.to), Content::Introduction { step }, ctx);
            Ok(())
        };
        MessageResult(Reply {
            request_id: msg.request_id,
            result,
        })
    }
}
