//! `strata inbox` from the store: the messages received and kept, and the
//! identity changes waiting for a decision. Works with or without a daemon
//! (the store is the source of truth; the daemon adds the live stream).

use serde_json::{Value, json};
use strata_session::Content;
use strata_store::{Backend, Store};

use crate::error::{AppError, Result};

/// Received texts (oldest first) and pending identity changes. File chunks
/// are left out: a file shows as its `file-received` event, and its bytes
/// are in the downloads directory.
///
/// A `sent-copy` (a text this account sent from another of its devices) is
/// listed only when it came from an installation pinned to `account`, this
/// account's identity key: the node refuses others, but the store keeps
/// what the session received.
pub(crate) fn stored<B: Backend>(store: &Store<B>, account: &[u8]) -> Result<Value> {
    let unreadable = |e: &dyn std::fmt::Display| AppError::internal(format!("cannot read the inbox: {e}"));
    let (contacts, rows) = store
        .read(|r| {
            let contacts = r.contacts()?;
            let mut rows = Vec::new();
            for c in &contacts {
                rows.extend(r.inbox(&c.installation_id)?);
            }
            Ok((contacts, rows))
        })
        .map_err(|e| unreadable(&e))?;
    let mut messages: Vec<(u64, Value)> = rows
        .into_iter()
        .filter_map(|m| match Content::from_bytes(&m.body) {
            Ok(Content::Text { text }) => Some((
                m.received_ms,
                json!({"peer": m.peer, "messageId": m.message_id, "receivedMs": m.received_ms, "text": text}),
            )),
            Ok(Content::SentCopy { to, text })
                if contacts
                    .iter()
                    .any(|c| c.installation_id == m.peer && c.identity_key == account) =>
            {
                let to = crate::identity::PeerId::from_key_bytes(&to).map(|p| p.to_string()).ok();
                Some((
                    m.received_ms,
                    json!({"peer": m.peer, "messageId": m.message_id, "receivedMs": m.received_ms, "sentTo": to, "text": text}),
                ))
            }
            // Files are written out as they arrive; group PDUs are the
            // groups', device lists and introductions the node's.
            Ok(
                Content::FileChunk { .. }
                | Content::GroupPdu { .. }
                | Content::Devices { .. }
                | Content::SentCopy { .. }
                | Content::Introduction { .. },
            ) => None,
            Err(e) => {
                tracing::warn!(peer = %m.peer, message_id = %m.message_id, error = %e, "an inbox entry is unreadable");
                None
            }
        })
        .collect();
    messages.sort_by_key(|(at, _)| *at);
    let pending: Vec<Value> = contacts
        .iter()
        .filter(|c| c.offered_key.is_some())
        .map(|c| json!({"kind": "identity-changed", "installation": c.installation_id}))
        .collect();
    Ok(json!({
        "messages": messages.into_iter().map(|(_, m)| m).collect::<Vec<_>>(),
        "pending": pending,
    }))
}
