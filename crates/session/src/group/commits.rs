//! Commits: an admin's (add, remove, hand-over, update) and their
//! distribution; other members' processing of them, in epoch order, with
//! catch-up from the commit log; members' proposals to an admin.

use strata_cascade::group::{GroupCommit as MlsCommit, GroupEpochSecret};
use strata_cascade::{CascadeError, InstallationId};
use strata_proto::{
    Blob, BoundedVec, FixedBytes, GroupCatchUp, GroupCatchUpRequest, GroupCommit, GroupProposal, GroupWelcome, Pdu,
    ProposalKind, Text,
};

use super::{COMMIT_LOG, GroupEvent, GroupMachine, GroupOutput, Invitee, MAX_FUTURE_COMMITS};
use crate::error::SessionError;

/// Most commits in one `group-catch-up` (the PDU's cap).
const CATCH_UP_BATCH: usize = strata_proto::limits::MAX_CATCH_UP;

fn blob<const N: usize>(bytes: Vec<u8>, what: &'static str) -> Result<Blob<N>, SessionError> {
    Blob::new(bytes).map_err(|_| SessionError::Internal(format!("{what} over its cap")))
}

impl GroupMachine {
    /// Admin: adds `invitees` in one commit; each gets the Welcome.
    pub(super) fn add(&mut self, invitees: &[Invitee]) -> Result<(), SessionError> {
        if !self.is_sequencer()? {
            return Err(SessionError::Misuse("only the first admin adds members"));
        }
        let packages: Vec<_> = invitees.iter().map(|i| (i.peer, i.key_package.clone())).collect();
        let commit = self.group.add(&packages)?;
        let joiners: Vec<(InstallationId, Vec<u8>)> = invitees
            .iter()
            .map(|i| (i.peer.installation_id, i.key_ref.clone()))
            .collect();
        self.committed(commit, &joiners, &[], &[])
    }

    /// The sequencer: `member` asked for commits since `epoch`, past the
    /// log (or another member asked for it, at `epoch`). Its owner is
    /// asked to add it again, once while that is pending; a request of an
    /// epoch before its last re-add was made before that re-add and is
    /// left.
    fn add_again_asked(&mut self, member: InstallationId, epoch: u64) {
        let waiting = match self.add_again.get(&member) {
            Some(super::AddAgain::Done(since)) => epoch < *since,
            Some(super::AddAgain::Asked(at)) => match (at, self.now) {
                (Some(at), Some(now)) => now.saturating_duration_since(*at) < super::ADD_AGAIN_RETRY,
                _ => true,
            },
            None => false,
        };
        if !waiting {
            self.add_again.insert(member, super::AddAgain::Asked(self.now));
            self.emit(GroupEvent::AddAgain { member });
        }
    }

    /// The sequencer adds a member behind again, from a fresh KeyPackage:
    /// its old leaf replaced in one commit; the Welcome goes to it, the
    /// commit to the others.
    pub(super) fn add_again(&mut self, invitee: &Invitee) -> Result<(), SessionError> {
        if !self.is_sequencer()? {
            return Err(SessionError::Misuse("only the first admin adds members"));
        }
        let member = invitee.peer.installation_id;
        if !self.members()?.contains(&member) {
            return Err(SessionError::Misuse("not a member: add it instead"));
        }
        let commit = self.group.readd(member, &(invitee.peer, invitee.key_package.clone()))?;
        self.add_again.insert(member, super::AddAgain::Done(commit.epoch));
        self.committed(commit, &[(member, invitee.key_ref.clone())], &[], &[])
    }

    /// The sequencer removes `members`; anyone else asks it to.
    pub(super) fn remove(&mut self, members: &[InstallationId]) -> Result<(), SessionError> {
        if !self.is_sequencer()? {
            for member in members {
                self.propose(ProposalKind::Remove, Some(member.to_hex()), None, None)?;
            }
            return Ok(());
        }
        let commit = self.group.remove(members)?;
        self.committed(commit, &[], members, &[])
    }

    /// Asks the admins to remove this member. An admin first hands its
    /// role over ([`super::GroupCommand::SetAdmins`] without itself): the
    /// admin list only names members.
    pub(super) fn leave(&mut self) -> Result<(), SessionError> {
        if self.group.is_admin(self.local)? {
            return Err(SessionError::Misuse("an admin hands its role over before leaving"));
        }
        self.propose(ProposalKind::Leave, None, None, None)
    }

    /// The sequencer commits a fresh leaf key for itself; anyone else
    /// proposes its update (an MLS Update proposal) for the sequencer to
    /// commit.
    pub(super) fn update(&mut self) -> Result<(), SessionError> {
        if self.is_sequencer()? {
            let commit = self.group.self_update()?;
            return self.committed(commit, &[], &[], &[]);
        }
        let proposal = self.group.propose_update()?;
        self.propose(ProposalKind::Update, None, None, Some(proposal))
    }

    /// Whether this member is the sequencer: the first admin of the list,
    /// the one that commits (one committer per epoch: no fork).
    pub(super) fn is_sequencer(&self) -> Result<bool, SessionError> {
        Ok(self.group.admins()?.first() == Some(&self.local))
    }

    /// A member that does not sequence asks the sequencer to add
    /// `member`, reachable at `address` (its owner's device: the
    /// sequencer's owner decides).
    pub(super) fn ask_to_add(&mut self, member: InstallationId, address: String) -> Result<(), SessionError> {
        if self.is_sequencer()? {
            return Err(SessionError::Misuse("the sequencer adds members itself"));
        }
        if self.members()?.contains(&member) {
            return Err(SessionError::Misuse("already a member"));
        }
        self.propose(ProposalKind::Add, Some(member.to_hex()), Some(address), None)
    }

    fn propose(
        &mut self,
        kind: ProposalKind,
        member: Option<String>,
        address: Option<String>,
        proposal: Option<Vec<u8>>,
    ) -> Result<(), SessionError> {
        let sequencer = *self
            .group
            .admins()?
            .first()
            .ok_or_else(|| SessionError::Internal("a group without admins".into()))?;
        let pdu = GroupProposal {
            group_id: blob(self.group_id().to_vec(), "group id")?,
            epoch: self.epoch(),
            kind,
            member: member.and_then(|m| Text::new(m).ok()),
            address: address
                .map(Text::new)
                .transpose()
                .map_err(|_| SessionError::Misuse("an address over the field cap"))?,
            proposal: proposal.map(|p| blob(p, "proposal")).transpose()?,
        };
        self.out.push_back(GroupOutput::Pairwise {
            to: sequencer,
            pdu: pdu.into(),
        });
        Ok(())
    }

    /// After our own commit: the next epoch's secret and key, the log, the
    /// commit to every other member (without the secret to those removed)
    /// and the Welcome to each joiner.
    pub(super) fn committed(
        &mut self,
        commit: MlsCommit,
        joiners: &[(InstallationId, Vec<u8>)],
        removed: &[InstallationId],
        proposals: &[(InstallationId, Vec<u8>)],
    ) -> Result<(), SessionError> {
        let from_epoch = commit.epoch - 1;
        let secret = GroupEpochSecret::generate(&mut self.rng);
        let key = self.group.message_key(&secret)?;
        self.push_key(key);
        let secret_bytes = FixedBytes(
            <[u8; 32]>::try_from(secret.to_bytes().as_bytes())
                .map_err(|_| SessionError::Internal("group secret length".into()))?,
        );
        let pdu = GroupCommit {
            group_id: blob(self.group_id().to_vec(), "group id")?,
            epoch: from_epoch,
            commit: blob(commit.commit, "commit")?,
            proposals: BoundedVec::new(
                proposals
                    .iter()
                    .map(|(_, p)| blob(p.clone(), "proposal"))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .map_err(|_| SessionError::Internal("too many proposals".into()))?,
            epoch_secret: Some(secret_bytes),
        };
        self.log_commit(pdu.clone());
        let joined: Vec<InstallationId> = joiners.iter().map(|(id, _)| *id).collect();
        let proposers: Vec<InstallationId> = proposals.iter().map(|(id, _)| *id).collect();
        for member in self.others()? {
            if joined.contains(&member) {
                continue;
            }
            // A proposer holds its own proposal already (and cannot open it).
            let pdu = if proposers.contains(&member) {
                GroupCommit {
                    proposals: BoundedVec::default(),
                    ..pdu.clone()
                }
            } else {
                pdu.clone()
            };
            self.out.push_back(GroupOutput::Pairwise {
                to: member,
                pdu: pdu.into(),
            });
        }
        for gone in removed.iter().filter(|r| **r != self.local) {
            let without_secret = GroupCommit {
                epoch_secret: None,
                ..pdu.clone()
            };
            self.out.push_back(GroupOutput::Pairwise {
                to: *gone,
                pdu: without_secret.into(),
            });
        }
        if let Some(welcome) = commit.welcome {
            for (joiner, key_ref) in joiners {
                let pdu = GroupWelcome {
                    group_id: blob(self.group_id().to_vec(), "group id")?,
                    epoch: commit.epoch,
                    welcome: blob(welcome.clone(), "Welcome")?,
                    key_package_ref: blob(key_ref.clone(), "KeyPackage reference")?,
                    epoch_secret: secret_bytes,
                    name: self.name.as_ref().and_then(|n| Text::new(n.clone()).ok()),
                };
                self.out.push_back(GroupOutput::Pairwise {
                    to: *joiner,
                    pdu: pdu.into(),
                });
            }
        }
        self.emit(GroupEvent::Epoch {
            epoch: commit.epoch,
            committer: self.local,
            added: joined,
            removed: removed.to_vec(),
        });
        if removed.contains(&self.local) {
            self.removed = true;
            self.emit(GroupEvent::Removed);
        }
        Ok(())
    }

    /// Asks `whom` for the commits since this member's epoch.
    pub(super) fn ask_catch_up(&mut self, whom: InstallationId) -> Result<(), SessionError> {
        self.asked_at = Some(self.epoch());
        let request = GroupCatchUpRequest {
            group_id: blob(self.group_id().to_vec(), "group id")?,
            epoch: self.epoch(),
        };
        self.out.push_back(GroupOutput::Pairwise {
            to: whom,
            pdu: request.into(),
        });
        Ok(())
    }

    fn log_commit(&mut self, pdu: GroupCommit) {
        self.log.push_back(pdu);
        while self.log.len() > COMMIT_LOG {
            self.log.pop_front();
        }
    }

    /// A commit from `from` (directly or in a catch-up): applied when it is
    /// for this epoch, kept when it is early (and the rest asked for),
    /// dropped when it is old.
    pub(super) fn on_commit(&mut self, from: InstallationId, pdu: GroupCommit) -> Result<(), SessionError> {
        let epoch = self.epoch();
        if pdu.epoch < epoch {
            return Ok(());
        }
        if pdu.epoch > epoch {
            if self.future.len() < MAX_FUTURE_COMMITS || self.future.contains_key(&pdu.epoch) {
                self.future.insert(pdu.epoch, pdu);
            }
            // Once per epoch: every early commit asking again would make
            // answers of early commits ask again, without end.
            if self.asked_at == Some(epoch) {
                return Ok(());
            }
            return self.ask_catch_up(from);
        }
        self.apply(pdu)?;
        // Commits that waited for this one.
        while let Some(next) = self.future.remove(&self.epoch()) {
            if self.removed {
                break;
            }
            self.apply(next)?;
        }
        self.future.retain(|e, _| *e > self.group.epoch());
        self.release_early()
    }

    /// Processes a commit of the current epoch; a refused one changes
    /// nothing and is reported.
    fn apply(&mut self, pdu: GroupCommit) -> Result<(), SessionError> {
        let proposals: Vec<Vec<u8>> = pdu.proposals.iter().map(|p| p.as_bytes().to_vec()).collect();
        let outcome = match self.group.process_commit_with(&proposals, pdu.commit.as_bytes()) {
            Ok(o) => o,
            Err(e) if is_peer_fault(&e) => {
                self.refuse(None, &format!("commit refused: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if outcome.removed_us {
            self.removed = true;
            self.emit(GroupEvent::Epoch {
                epoch: outcome.epoch,
                committer: outcome.committer,
                added: outcome.added,
                removed: outcome.removed,
            });
            self.emit(GroupEvent::Removed);
            return Ok(());
        }
        match &pdu.epoch_secret {
            Some(secret) => {
                let secret = GroupEpochSecret::from_bytes(&secret.0)?;
                let key = self.group.message_key(&secret)?;
                self.push_key(key);
            }
            // A member that stays needs the secret: without it, this epoch's
            // messages will not open (reported; the commit still applies, so
            // the group does not fork).
            None => self.refuse(None, "a commit without the next epoch's group secret"),
        }
        self.log_commit(pdu);
        self.emit(GroupEvent::Epoch {
            epoch: outcome.epoch,
            committer: outcome.committer,
            added: outcome.added,
            removed: outcome.removed,
        });
        Ok(())
    }

    /// A member behind asks for the commits since `epoch`: what the log
    /// holds, 16 at most, oldest first.
    pub(super) fn on_catch_up_request(&mut self, from: InstallationId, epoch: u64) -> Result<(), SessionError> {
        if !self.members()?.contains(&from) {
            self.refuse(Some(from), "catch-up request from a non-member");
            return Ok(());
        }
        // Commits only from the asker's epoch on, without a gap: past the
        // log's reach the asker cannot be caught up (the sequencer adds it
        // again), and later commits alone would only wait at its end.
        let reaches = self.log.front().is_some_and(|c| c.epoch <= epoch) || epoch >= self.epoch();
        if !reaches {
            if self.is_sequencer()? {
                self.add_again_asked(from, epoch);
            } else {
                // It asked an admin of its epoch that no longer sequences
                // commits: this member asks the sequencer on its behalf.
                self.refuse(
                    Some(from),
                    "a member behind beyond the commit log: the sequencer is asked to add it again",
                );
                self.propose(ProposalKind::Add, Some(from.to_hex()), None, None)?;
            }
        }
        let commits: Vec<GroupCommit> = self
            .log
            .iter()
            .filter(|c| reaches && c.epoch >= epoch)
            .take(CATCH_UP_BATCH)
            .cloned()
            .collect();
        let complete = commits.last().is_some_and(|c| c.epoch + 1 == self.epoch())
            || (commits.is_empty() && epoch == self.epoch());
        let answer = GroupCatchUp {
            group_id: blob(self.group_id().to_vec(), "group id")?,
            commits: BoundedVec::new(commits).map_err(|_| SessionError::Internal("catch-up over its cap".into()))?,
            complete,
        };
        self.out.push_back(GroupOutput::Pairwise {
            to: from,
            pdu: Pdu::GroupCatchUp(answer),
        });
        Ok(())
    }

    /// A member's proposal: an admin commits a removal or a leave, and
    /// raises an add for its owner to claim the joiner's KeyPackage.
    pub(super) fn on_proposal(&mut self, from: InstallationId, p: &GroupProposal) -> Result<(), SessionError> {
        if !self.is_sequencer()? {
            self.refuse(Some(from), "proposal to a member that does not sequence commits");
            return Ok(());
        }
        let members = self.members()?;
        if !members.contains(&from) {
            self.refuse(Some(from), "proposal from a non-member");
            return Ok(());
        }
        let target = p
            .member
            .as_ref()
            .and_then(|m| m.as_str().parse::<InstallationId>().ok());
        match (p.kind, target) {
            (ProposalKind::Leave, _) if self.group.is_admin(from)? => {
                self.refuse(Some(from), "an admin hands its role over before leaving");
                Ok(())
            }
            (ProposalKind::Leave, _) => {
                let commit = self.group.remove(&[from])?;
                self.committed(commit, &[], &[from], &[])
            }
            (ProposalKind::Remove, Some(member)) if members.contains(&member) => {
                if self.group.is_admin(member)? {
                    self.refuse(Some(from), "only an admin removes an admin");
                    return Ok(());
                }
                let commit = self.group.remove(&[member])?;
                self.committed(commit, &[], &[member], &[])
            }
            // A member asks for another, behind beyond its commit log, to
            // be added again.
            (ProposalKind::Add, Some(member)) if members.contains(&member) => {
                self.add_again_asked(member, p.epoch);
                Ok(())
            }
            (ProposalKind::Add, _) => {
                let Some(member) = p.member.as_ref().map(|m| m.as_str().to_owned()) else {
                    self.refuse(Some(from), "add without a member");
                    return Ok(());
                };
                let address = p.address.as_ref().map(|a| a.as_str().to_owned());
                self.emit(GroupEvent::AddRequested {
                    by: from,
                    member,
                    address,
                });
                Ok(())
            }
            (ProposalKind::Update, _) => {
                let Some(proposal) = p.proposal.as_ref().map(|b| b.as_bytes().to_vec()) else {
                    self.refuse(Some(from), "update without its proposal");
                    return Ok(());
                };
                match self.group.commit_update(&proposal) {
                    Ok(commit) => self.committed(commit, &[], &[], &[(from, proposal)]),
                    Err(e) if is_peer_fault(&e) => {
                        self.refuse(Some(from), &format!("update refused: {e}"));
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            (ProposalKind::Remove, _) => {
                self.refuse(Some(from), "remove of a non-member");
                Ok(())
            }
        }
    }
}

/// Whether a cascade error came from the input (refused) rather than from
/// local state (an error of the step).
fn is_peer_fault(e: &CascadeError) -> bool {
    matches!(e.class(), strata_cascade::ErrorClass::BadPeerInput)
}
