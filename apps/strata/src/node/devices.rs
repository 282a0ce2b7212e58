//! Multi-device on the daemon: a text to an account fans out to its
//! devices and, as sent copies, to this account's other devices
//! (`strata_session::devices`); `strata devices list|remove`.

use serde_json::{Value, json};
use strata_cascade::InstallationId;
use strata_session::actors::{AccountMessage, ChangeDevices, FannedOut, ListDevices, OfferPairing, SendToAccount};

use super::{NodeSessions, session_error, stopped};
use crate::error::{AppError, ErrorKind, Result};
use crate::sessions::DeviceAction;

impl NodeSessions {
    pub(super) async fn devices(&self, action: DeviceAction) -> Result<Value> {
        match action {
            DeviceAction::List => {
                let list = self
                    .node
                    .send(ListDevices)
                    .await
                    .map_err(|_| stopped())?
                    .map_err(session_error)?;
                let devices: Vec<Value> = list
                    .devices
                    .iter()
                    .map(|d| {
                        json!({
                            "installation": d.installation.to_hex(),
                            "this": d.this,
                            "lastActiveMs": d.last_active_ms,
                        })
                    })
                    .collect();
                Ok(json!({"version": list.version, "paired": list.paired, "devices": devices}))
            }
            DeviceAction::Pair { .. } => {
                let reply = self
                    .node
                    .send(OfferPairing {
                        request_id: self.request_id(),
                    })
                    .await
                    .map_err(|_| stopped())?;
                let offer = reply.result.map_err(session_error)?;
                let uri = crate::identity::PairingUri {
                    device: self.local,
                    secret: offer.secret,
                    expires_ms: offer.expires_ms,
                    broker: self.reach.0.clone(),
                    addrs: self.reach.1.clone(),
                };
                Ok(json!({"uri": uri.to_string(), "expiresMs": offer.expires_ms}))
            }
            DeviceAction::Join { .. } => Err(AppError::new(
                ErrorKind::Usage,
                "a device joins from its own fresh data directory, without a daemon",
            )
            .hint("run `strata devices join <uri>` on the new device")),
            DeviceAction::Remove { installation } => {
                let id: InstallationId = installation.parse().map_err(|e| {
                    AppError::new(
                        ErrorKind::Usage,
                        format!("{installation:?} is not an installation id: {e}"),
                    )
                    .hint("`strata devices list` shows them")
                })?;
                if id == self.local {
                    return Err(AppError::new(ErrorKind::Usage, "this is the device you are on")
                        .hint("remove it from another of your devices"));
                }
                let listed = self
                    .node
                    .send(ListDevices)
                    .await
                    .map_err(|_| stopped())?
                    .map_err(session_error)?;
                if !listed.devices.iter().any(|d| d.installation == id) {
                    return Err(AppError::new(
                        ErrorKind::NotFound,
                        format!("{installation} is not one of this account's devices"),
                    )
                    .hint("`strata devices list` shows them"));
                }
                let reply = self
                    .node
                    .send(ChangeDevices {
                        request_id: self.request_id(),
                        add: Vec::new(),
                        remove: vec![id],
                    })
                    .await
                    .map_err(|_| stopped())?;
                let version = reply.result.map_err(session_error)?;
                Ok(json!({"removed": installation, "version": version}))
            }
        }
    }

    /// Sends `text` to every device of `account` (serialized identity key)
    /// and a copy to this account's other devices; the copies, and the id
    /// of the one to `prefer` (the installation a contact URI names) or
    /// else of the first.
    pub(super) async fn fan_out(
        &self,
        account: Vec<u8>,
        message: AccountMessage,
        prefer: Option<InstallationId>,
    ) -> Result<(Vec<FannedOut>, String)> {
        let reply = self
            .node
            .send(SendToAccount {
                request_id: self.request_id(),
                account,
                message,
            })
            .await
            .map_err(|_| stopped())?;
        let copies = reply.result.map_err(session_error)?;
        let theirs = || copies.iter().filter(|c| !c.own_device);
        let chosen = theirs()
            .find(|c| Some(c.installation) == prefer && c.outcome.is_ok())
            .or_else(|| theirs().find(|c| c.outcome.is_ok()));
        let Some(Ok(id)) = chosen.map(|c| c.outcome.clone()) else {
            let why = theirs()
                .filter_map(|c| c.outcome.as_ref().err())
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            return Err(AppError::new(
                ErrorKind::Network,
                format!("no device of the account took the message: {why}"),
            )
            .hint("`strata connect <contact URI>` opens a session with one of them"));
        };
        Ok((copies, id))
    }
}

/// The copies of a fan-out, for the API.
pub(super) fn copies_json(copies: &[FannedOut]) -> Value {
    copies
        .iter()
        .map(|c| {
            let mut v = json!({
                "installation": c.installation.to_hex(),
                "ownDevice": c.own_device,
            });
            match &c.outcome {
                Ok(id) => crate::json::set(&mut v, "messageId", json!(id)),
                Err(e) => crate::json::set(&mut v, "error", json!(e)),
            }
            v
        })
        .collect()
}
