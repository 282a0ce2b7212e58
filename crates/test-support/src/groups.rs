//! Group chats on a [`TestNode`]: requests that fail the test on an error
//! reply, and waits for group events that also look at the events an
//! earlier wait went past (group messages from several senders arrive in
//! any order).

use strata_session::Content;
use strata_session::actors::{
    AddToGroup, CreateGroup, GroupInfo, GroupRequest, GroupSummary, NodeEvent, NodeEventKind,
};
use strata_session::group::{GroupCommand, GroupEvent};
use strata_transport::{PeerAddr, Transport};

use crate::TestNode;

/// The group event in `e`, if it is one of `group`.
pub fn group_event<'a>(e: &'a NodeEvent, group: &str) -> Option<&'a GroupEvent> {
    match &e.kind {
        NodeEventKind::Group { group: g, event } if g == group => Some(event),
        _ => None,
    }
}

/// Whether `e` is the text `text` received in `group`.
pub fn is_group_text(e: &NodeEvent, group: &str, text: &str) -> bool {
    matches!(
        group_event(e, group),
        Some(GroupEvent::Received { content: Content::Text { text: t }, .. }) if t == text
    )
}

impl<T: Transport + Unpin + 'static> TestNode<T> {
    /// Creates a group chat; returns its id.
    pub async fn create_group(&mut self, name: &str) -> String {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(CreateGroup {
                request_id,
                name: Some(name.into()),
            })
            .await
            .unwrap();
        reply.result.unwrap()
    }

    /// Adds the peer at `peer` (a session with it established) to `group`.
    pub async fn add_to_group(&mut self, group: &str, peer: impl Into<PeerAddr>) {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(AddToGroup {
                request_id,
                group: group.into(),
                peer: peer.into(),
            })
            .await
            .unwrap();
        reply.result.unwrap();
    }

    /// Gives `command` to `group`.
    pub async fn group_command(&mut self, group: &str, command: GroupCommand) {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(GroupRequest {
                request_id,
                group: group.into(),
                command,
            })
            .await
            .unwrap();
        reply.result.unwrap();
    }

    /// Sends the text `text` to `group`.
    pub async fn group_send(&mut self, group: &str, text: &str) {
        self.group_command(group, GroupCommand::Send(Content::Text { text: text.into() }))
            .await;
    }

    /// What `group` is now.
    pub async fn group_info(&mut self, group: &str) -> GroupSummary {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(GroupInfo {
                request_id,
                group: group.into(),
            })
            .await
            .unwrap();
        reply.result.unwrap()
    }

    /// Waits for an event of `group` matching `pred`, seen already or to
    /// come.
    pub async fn wait_group(
        &mut self,
        group: &str,
        what: &str,
        mut pred: impl FnMut(&GroupEvent) -> bool,
    ) -> GroupEvent {
        let mut test = |e: &NodeEvent| group_event(e, group).is_some_and(&mut pred);
        if let Some(e) = self.seen.iter().find(|e| test(e)) {
            return group_event(e, group).cloned().unwrap();
        }
        let e = self.wait_for(what, test).await;
        group_event(&e, group).cloned().unwrap()
    }

    /// Waits until the text `text` was received in `group`.
    pub async fn wait_group_text(&mut self, group: &str, text: &str) {
        self.wait_group(
            group,
            text,
            |e| matches!(e, GroupEvent::Received { content: Content::Text { text: t }, .. } if t == text),
        )
        .await;
    }

    /// Every event published so far, waits' and not: drains the queue
    /// into `seen`.
    pub fn all_events(&mut self) -> &[NodeEvent] {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
        &self.seen
    }
}
