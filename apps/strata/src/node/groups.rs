//! `strata group …` on the daemon: each action is one typed request to the
//! session node (create, add — which claims the peer's KeyPackage over
//! their session —, remove, leave, send, list).

use serde_json::{Value, json};
use strata_session::Content;
use strata_session::actors::{AddToGroup, CreateGroup, GroupInfo, GroupRequest, ListGroups, SendGroupFile};
use strata_session::group::GroupCommand;

use strata_session::SessionError;

use super::{NodeSessions, session_error, stopped};
use crate::error::{AppError, ErrorKind, Result};
use crate::sessions::GroupAction;

impl NodeSessions {
    pub(super) async fn group(&self, action: GroupAction) -> Result<Value> {
        match action {
            GroupAction::Create { name } => {
                let reply = self
                    .node
                    .send(CreateGroup {
                        request_id: self.request_id(),
                        name,
                    })
                    .await
                    .map_err(|_| stopped())?;
                let group = reply.result.map_err(group_error)?;
                Ok(json!({"group": group}))
            }
            GroupAction::Add { group, peer } => {
                let addr = self.resolve(&peer).await?;
                let reply = self
                    .node
                    .send(AddToGroup {
                        request_id: self.request_id(),
                        group: group.clone(),
                        peer: addr,
                    })
                    .await
                    .map_err(|_| stopped())?;
                reply.result.map_err(group_error)?;
                Ok(json!({"group": group, "added": peer}))
            }
            GroupAction::Remove { group, member } => {
                let member = member
                    .parse()
                    .map_err(|_| AppError::new(ErrorKind::Usage, format!("{member:?} is not an installation id")))?;
                self.group_command(&group, GroupCommand::Remove(vec![member])).await
            }
            GroupAction::Leave { group } => self.group_command(&group, GroupCommand::Leave).await,
            GroupAction::Send {
                group,
                text: Some(text),
                file: None,
            } => {
                self.group_command(&group, GroupCommand::Send(Content::Text { text }))
                    .await
            }
            GroupAction::Send {
                group,
                text: None,
                file: Some(path),
            } => {
                let reply = self
                    .node
                    .send(SendGroupFile {
                        request_id: self.request_id(),
                        group: group.clone(),
                        path,
                    })
                    .await
                    .map_err(|_| stopped())?;
                let file_id = reply.result.map_err(group_error)?;
                Ok(json!({"group": group, "fileId": file_id}))
            }
            GroupAction::Send { .. } => Err(AppError::new(ErrorKind::Usage, "give a text or a file, not both")),
            GroupAction::Members { group } => {
                let reply = self
                    .node
                    .send(GroupInfo {
                        request_id: self.request_id(),
                        group,
                    })
                    .await
                    .map_err(|_| stopped())?;
                let info = reply.result.map_err(group_error)?;
                Ok(json!({
                    "group": info.group,
                    "name": info.name,
                    "epoch": info.epoch,
                    "members": info.members,
                    "admins": info.admins,
                }))
            }
            GroupAction::List => {
                let groups = self.node.send(ListGroups).await.map_err(|_| stopped())?;
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(group, name)| json!({"group": group, "name": name}))
                    .collect();
                Ok(json!({"groups": groups}))
            }
        }
    }

    async fn group_command(&self, group: &str, command: GroupCommand) -> Result<Value> {
        let reply = self
            .node
            .send(GroupRequest {
                request_id: self.request_id(),
                group: group.to_owned(),
                command,
            })
            .await
            .map_err(|_| stopped())?;
        reply.result.map_err(group_error)?;
        Ok(json!({"group": group}))
    }
}

/// A group request's error: an unknown group is named as one.
fn group_error(e: SessionError) -> AppError {
    match e {
        SessionError::UnknownPeer(what) if what.starts_with("group ") => {
            AppError::new(ErrorKind::NotFound, format!("unknown {what}")).hint("`strata group list` shows your groups")
        }
        other => session_error(other),
    }
}
