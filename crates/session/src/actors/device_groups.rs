//! This account's devices in its group chats: a device paired here joins
//! the groups this installation is in.
//!
//! Only a group's sequencer (its first admin) adds members. Of the groups
//! this installation sequences, it adds the new device itself; of the
//! others, it asks the sequencer to (a `group-proposal` to add, naming the
//! device). The sequencer's node adds, without asking its user, a device
//! that the asking member's account lists in its signed device list: the
//! account's key vouches for it, as it does for the member. A request for
//! any other installation is the user's to decide
//! ([`GroupEvent::AddRequested`]). A request that comes before the list
//! naming the device waits for it (at most [`PENDING_ADDS`], for
//! [`PENDING_ADD_TTL`]).

use strata_cascade::{IdentityKey, InstallationId};

use super::*;
use crate::group::{GroupCommand, GroupEvent};

/// Requests to add a device that wait for its account's list.
pub(super) const PENDING_ADDS: usize = 64;
/// How long such a request waits.
pub(super) const PENDING_ADD_TTL: Duration = Duration::from_secs(600);
/// How long the sequencer waits for a session with a device it adds.
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// A request to add `member`, a device of `account`, to `group`.
pub(super) struct PendingAdd {
    group: String,
    account: IdentityKey,
    member: InstallationId,
    at: std::time::Instant,
}

impl<T: Transport> Node<T> {
    /// A device paired here (`installation`, at `peer`), its session now
    /// ready, joins our groups: those this installation sequences add it
    /// (a KeyPackage claimed over the session, then the commit); of the
    /// others, their sequencer is asked to.
    pub(super) fn add_to_our_groups(&mut self, peer: PeerAddr, installation: InstallationId, ctx: &mut Context<Self>) {
        let local = self.setup.local.installation_id().to_hex();
        let groups: Vec<(String, Addr<super::GroupActor>)> = self
            .groups
            .actors
            .iter()
            .map(|(id, (addr, _))| (id.clone(), addr.clone()))
            .collect();
        let node = ctx.address();
        let add = async move {
            for (group, actor) in groups {
                let Ok(Ok(summary)) = actor.send(super::DescribeGroup).await else {
                    continue;
                };
                let result = if summary.admins.first() == Some(&local) {
                    let add = super::AddToGroup {
                        request_id: 0,
                        group: group.clone(),
                        peer: peer.clone(),
                    };
                    match node.send(add).await {
                        Ok(reply) => reply.result,
                        Err(_) => return,
                    }
                } else {
                    let ask = GroupCommand::AskToAdd {
                        member: installation,
                        address: peer.to_string(),
                    };
                    match actor.send(super::GroupStep(super::GroupStepInput::Command(ask))).await {
                        Ok(result) => result,
                        Err(_) => continue,
                    }
                };
                match result {
                    Ok(()) => tracing::info!(%group, %peer, "our new device added to the group, or asked for"),
                    Err(e) => tracing::warn!(%group, %peer, error = %e, "our new device not added to the group"),
                }
            }
        };
        ctx.spawn(add.into_actor(self));
    }

    /// The sequencer's side of [`GroupEvent::AddRequested`]: `by` asks for
    /// `member`. True when the node takes it (a device of `by`'s account,
    /// now or once its list names it); false leaves it to the user.
    pub(super) fn add_requested(&mut self, group: &str, event: &GroupEvent, ctx: &mut Context<Self>) -> bool {
        let GroupEvent::AddRequested { by, member, .. } = event else {
            return false;
        };
        let (Some(account), Ok(member)) = (self.pinned_account(&by.to_hex()), member.parse::<InstallationId>()) else {
            return false;
        };
        if self.lists(&account, member) {
            self.add_device(group.to_owned(), account, member, ctx);
            return true;
        }
        // Its list may be on its way, behind the request.
        let pending = &mut self.devices.pending_adds;
        pending.retain(|p| p.at.elapsed() < PENDING_ADD_TTL);
        if pending.len() >= PENDING_ADDS {
            pending.pop_front();
        }
        pending.push_back(PendingAdd {
            group: group.to_owned(),
            account,
            member,
            at: std::time::Instant::now(),
        });
        false
    }

    /// `account`'s list changed: the requests it now allows are carried out.
    pub(super) fn retry_pending_adds(&mut self, account: &IdentityKey, ctx: &mut Context<Self>) {
        let pending = std::mem::take(&mut self.devices.pending_adds);
        for p in pending {
            if p.at.elapsed() >= PENDING_ADD_TTL {
                continue;
            }
            if p.account == *account && self.lists(account, p.member) {
                self.add_device(p.group, p.account, p.member, ctx);
            } else {
                self.devices.pending_adds.push_back(p);
            }
        }
    }

    /// Whether `account`'s list, as held, names `member`.
    fn lists(&self, account: &IdentityKey, member: InstallationId) -> bool {
        self.devices
            .book
            .as_ref()
            .and_then(|b| b.list_of(account))
            .is_some_and(|l| l.installations().contains(&member))
    }

    /// Adds `member`, a device of `account`, to `group`: a session with it
    /// (expecting that account's key), a KeyPackage claimed, the commit.
    fn add_device(&mut self, group: String, account: IdentityKey, member: InstallationId, ctx: &mut Context<Self>) {
        let peer = self.address_of(member);
        let node = ctx.address();
        let add = async move {
            open_session(&node, &peer, &account, OPEN_WAIT).await?;
            let add = super::AddToGroup {
                request_id: 0,
                group: group.clone(),
                peer: peer.clone(),
            };
            node.send(add)
                .await
                .map_err(|_| SessionError::Unavailable("node"))?
                .result?;
            tracing::info!(%group, %peer, "a member's new device added to the group");
            Ok::<(), SessionError>(())
        };
        ctx.spawn(add.into_actor(self).map(move |result, _, _| {
            if let Err(e) = result {
                tracing::warn!(member = %member.to_hex(), error = %e, "a member's device not added to the group");
            }
        }));
    }
}

/// Opens a session with `peer` (expecting `account`'s key) and waits, at
/// most `wait`, until it is ready.
pub(super) async fn open_session<T: Transport>(
    node: &Addr<Node<T>>,
    peer: &PeerAddr,
    account: &IdentityKey,
    wait: Duration,
) -> Result<(), SessionError> {
    let connect = Connect {
        request_id: 0,
        peer: peer.clone(),
        expect_identity: Some(account.serialize().to_vec()),
    };
    node.send(connect)
        .await
        .map_err(|_| SessionError::Unavailable("node"))?
        .result?;
    let ready = node.send(AwaitReady {
        request_id: 0,
        peer: peer.clone(),
    });
    tokio::time::timeout(wait, ready)
        .await
        .map_err(|_| SessionError::Unavailable("no session with the device in time"))?
        .map_err(|_| SessionError::Unavailable("node"))?
        .result?;
    Ok(())
}
