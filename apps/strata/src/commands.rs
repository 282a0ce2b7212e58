//! The commands that run and return: `init`, `id`, `verify`, `config`, and
//! the session commands (`connect`, `send`, `inbox`, `peers`).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::cli::{ConfigCommand, IdArgs, InboxArgs, InitArgs, PeerArgs, SendArgs, VerifyArgs};
use crate::config::{Config, DEFAULT_FILE, FileRule};
use crate::control::client::ControlClient;
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::{Local, PeerRef, group_digits};
use crate::json::{at, set};
use crate::ops::{self, IdInfo, Marked, VerifyParams, VerifyReport};
use crate::paths::{DataDir, write_atomic};
use crate::sessions::{SendBody, SessionCall};
use crate::storage::{self, Unlock};
use crate::{output, qr};
use strata_cascade::InstallationIdentity;

/// What every command knows.
pub(crate) struct Ctx {
    /// The data directory.
    pub(crate) dir: DataDir,
    /// The config file.
    pub(crate) config_file: PathBuf,
    /// Whether the config file must exist (it must when the user named it).
    pub(crate) config_rule: FileRule,
    /// `--json`.
    pub(crate) json: bool,
}

impl Ctx {
    /// Loads the configuration in effect.
    pub(crate) fn config(&self) -> Result<Config> {
        Config::load(&self.config_file, self.config_rule, &env_vars())
    }

    /// Loads the configuration, with defaults when the file does not exist
    /// even if it was named (for `init`, which writes it).
    pub(crate) fn config_or_defaults(&self) -> Result<Config> {
        Config::load(&self.config_file, FileRule::MayBeAbsent, &env_vars())
    }
}

fn env_vars() -> HashMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Opens the store in a blocking task: a passphrase costs an Argon2id run.
async fn open_store(ctx: &Ctx) -> Result<(storage::NodeStore, Local)> {
    let dir = ctx.dir.clone();
    tokio::task::spawn_blocking(move || {
        let unlock = Unlock::from_env()?;
        let store = storage::open(&dir, &unlock)?;
        let local = Local::load(&store, &dir.store_file())?;
        Ok((store, local))
    })
    .await
    .map_err(|e| AppError::internal(format!("store task failed: {e}")))?
}

/// What `init` reports.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitReport {
    data_dir: String,
    #[serde(flatten)]
    id: IdInfo,
    /// How the store is sealed.
    store_key: String,
    config_file: String,
    config_written: bool,
}

/// `strata init`.
pub(crate) async fn init(ctx: &Ctx, args: InitArgs) -> Result<()> {
    ctx.dir.create()?;
    if let Some(daemon) = ControlClient::discover(&ctx.dir).await? {
        return Err(AppError::new(
            ErrorKind::Busy,
            format!(
                "a strata daemon (pid {}) is running on {}",
                daemon.pid(),
                ctx.dir.root().display()
            ),
        )
        .hint("stop it before running `strata init`"));
    }
    let config = ctx.config_or_defaults()?;
    let dir = ctx.dir.clone();
    let force = args.force;
    // Read and opened before anything is written: a wrong passphrase
    // changes nothing.
    let restored = match &args.restore {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                AppError::new(ErrorKind::NotFound, format!("cannot read {}: {e}", file.display()))
                    .hint("give the file `strata account export` wrote")
            })?;
            let passphrase = crate::account::passphrase()?;
            Some(
                tokio::task::spawn_blocking(move || crate::account::restore(&text, &passphrase))
                    .await
                    .map_err(|e| AppError::internal(format!("restore task failed: {e}")))??,
            )
        }
        None => None,
    };
    let (local, unlock_text) = tokio::task::spawn_blocking(move || -> Result<(Local, String)> {
        let store_path = dir.store_file();
        if store_path.exists() {
            if !force {
                return Err(AppError::new(
                    ErrorKind::AlreadyInitialized,
                    format!("{} already has an identity", dir.root().display()),
                )
                .hint(
                    "`strata id` shows it; `strata init --force` replaces it, deleting its sessions, \
                     contacts and messages (peers will see a new safety number)",
                ));
            }
            // Opening takes redb's lock: a process still using the store
            // makes this fail instead of losing the file under it.
            drop(strata_store::RedbBackend::open(&store_path).map_err(|e| AppError::store(e, &store_path))?);
            remove_if_present(&store_path)?;
            remove_if_present(&dir.key_file())?;
        }
        let unlock = Unlock::from_env()?;
        let local = match &restored {
            Some(account) => Local::from_installation(
                InstallationIdentity::generate(account.clone(), &mut rand::rng())
                    .map_err(|e| AppError::caused("cannot generate the installation keys", &e))?,
            ),
            None => Local::generate()?,
        };
        let store = storage::create(&dir, &unlock)?;
        local.save(&store, &store_path)?;
        Ok((local, unlock.describe(&dir)))
    })
    .await
    .map_err(|e| AppError::internal(format!("init task failed: {e}")))??;

    let config_file = &ctx.config_file;
    let config_written = !config_file.exists();
    if config_written {
        write_atomic(config_file, DEFAULT_FILE.as_bytes(), 0o600)?;
    }
    let id = ops::id_info(&local, &config, &[])?;
    let report = InitReport {
        data_dir: ctx.dir.root().display().to_string(),
        id,
        store_key: unlock_text,
        config_file: config_file.display().to_string(),
        config_written,
    };
    if ctx.json {
        return output::json(&report);
    }
    output::line(format!("Created a new identity in {}", report.data_dir))?;
    let half = format!("{}  (your half)", group_digits(&report.id.safety_number_half));
    let config_line = format!(
        "{} ({})",
        report.config_file,
        if config_written { "written" } else { "kept" }
    );
    output::fields(&[
        ("peer id", &report.id.peer_id),
        ("installation id", &report.id.installation_id),
        ("safety number", &half),
        ("store sealed by", &report.store_key),
        ("config", &config_line),
    ])?;
    output::note("Share your contact URI (`strata id`); compare safety numbers with `strata verify <peer>`.");
    Ok(())
}

fn remove_if_present(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::paths::io_error("remove", path, &e)),
    }
}

/// `strata id`.
pub(crate) async fn id(ctx: &Ctx, args: IdArgs) -> Result<()> {
    let info: IdInfo = match ControlClient::discover(&ctx.dir).await? {
        Some(daemon) => daemon.call("id", serde_json::json!({})).await?,
        None => {
            let config = ctx.config()?;
            let (_store, local) = open_store(ctx).await?;
            ops::id_info(&local, &config, &[])?
        }
    };
    if ctx.json {
        return output::json(&info);
    }
    let half = format!("{}  (your half)", group_digits(&info.safety_number_half));
    output::fields(&[
        ("peer id", &info.peer_id),
        ("installation id", &info.installation_id),
        ("identity key", &info.identity_key),
        ("safety number", &half),
        ("contact", &info.contact_uri),
    ])?;
    if args.qr {
        output::line(qr::render(info.contact_uri.as_bytes())?)?;
    }
    Ok(())
}

/// `strata verify`.
pub(crate) async fn verify(ctx: &Ctx, args: VerifyArgs) -> Result<()> {
    let params = VerifyParams {
        peer: args.peer.clone(),
        mark_verified: args.mark_verified.clone(),
    };
    let report: VerifyReport = match ControlClient::discover(&ctx.dir).await? {
        Some(daemon) => {
            let params = serde_json::to_value(&params).map_err(|e| AppError::internal(e.to_string()))?;
            daemon.call("verify", params).await?
        }
        None => {
            let (store, local) = open_store(ctx).await?;
            let store_path = ctx.dir.store_file();
            tokio::task::spawn_blocking(move || ops::verify(&store, &store_path, &local, &params, ops::now_ms()))
                .await
                .map_err(|e| AppError::internal(format!("verify task failed: {e}")))??
        }
    };
    if ctx.json {
        return output::json(&report);
    }
    print_verify(&report, &args)
}

fn print_verify(report: &VerifyReport, args: &VerifyArgs) -> Result<()> {
    output::line(format!("Safety number with {}:", report.peer_id))?;
    let grouped = group_digits(&report.safety_number);
    let groups: Vec<&str> = grouped.split(' ').collect();
    for row in groups.chunks(4) {
        output::line(format!("    {}", row.join(" ")))?;
    }
    if let Some(installation) = &report.installation_id {
        output::line(format!("installation {installation}"))?;
    }
    match &report.contact {
        None => output::line("not a contact yet")?,
        Some(contact) => {
            if contact.pinned_peer_id != report.peer_id {
                output::line(format!(
                    "WARNING: this installation is pinned to another account, {}",
                    contact.pinned_peer_id
                ))?;
            }
            output::line(if contact.verified {
                "contact: verified"
            } else {
                "contact: not verified (trusted on first use)"
            })?;
            if let Some(offered) = &contact.offered_safety_number {
                output::line(
                    "IDENTITY CHANGED: this installation presented a new identity key; nothing is sent to it \
                     until you verify the new safety number:",
                )?;
                output::line(format!("    {}", group_digits(offered)))?;
            }
            for change in &contact.identity_changes {
                output::line(format!(
                    "identity changed at {} ms: {} -> {}",
                    change.accepted_ms, change.old_peer_id, change.new_peer_id
                ))?;
            }
        }
    }
    match report.marked {
        Some(Marked::Verified) => output::line("Marked verified.")?,
        Some(Marked::PinnedVerified) => output::line("Added as a contact and marked verified.")?,
        Some(Marked::ChangeAcceptedVerified) => {
            output::line("Accepted the new identity key and marked it verified.")?;
        }
        None => {
            let verified = report.contact.as_ref().is_some_and(|c| c.verified);
            if !verified {
                output::note(format!(
                    "Compare these digits with the ones the peer sees, over a channel you trust (in person, \
                     a call). To record a match, type the digits the peer reads to you:\n  \
                     strata verify '{}' --mark-verified '<60 digits>'",
                    args.peer
                ));
            }
        }
    }
    if args.qr {
        use base64::Engine as _;
        let scannable = base64::engine::general_purpose::STANDARD
            .decode(&report.scannable)
            .map_err(|e| AppError::internal(format!("the scannable form is not base64: {e}")))?;
        output::line(qr::render(&scannable)?)?;
    }
    Ok(())
}

/// `strata config`.
pub(crate) fn config(ctx: &Ctx, command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Path => {
            if ctx.json {
                output::json(&serde_json::json!({
                    "configFile": ctx.config_file.display().to_string(),
                    "exists": ctx.config_file.exists(),
                }))
            } else {
                output::line(ctx.config_file.display())
            }
        }
        ConfigCommand::Show => {
            let config = ctx.config()?;
            if ctx.json {
                output::json(&config)
            } else {
                output::line(config.to_toml()?.trim_end())
            }
        }
    }
}

/// `strata connect`: asks the daemon for a session and prints the
/// handshake's steps as they happen, until `encryptionReady`.
pub(crate) async fn connect(ctx: &Ctx, args: PeerArgs) -> Result<()> {
    let peer = PeerRef::parse(&args.peer)?;
    let daemon = require_daemon(ctx, "connect").await?;
    let mut live = daemon.events(None).await?;
    let call = SessionCall::Connect { peer: peer.to_string() };
    let rpc = session_rpc(&daemon, &call);
    tokio::pin!(rpc);
    let result = loop {
        tokio::select! {
            result = &mut rpc => break result?,
            Some(event) = live.recv(), if !ctx.json => {
                if HANDSHAKE_EVENTS.contains(&event.kind.as_str()) {
                    output::note(format!("{:<18} {}", event.kind, at(&event.data, "peer").as_str().unwrap_or("")));
                }
            }
        }
    };
    if ctx.json {
        return output::json(&result);
    }
    let resumed = if at(&result, "resumed") == true {
        " (resumed, no new handshake)"
    } else {
        ""
    };
    output::line(format!(
        "encryption ready with {}{resumed}",
        at(&result, "peer").as_str().unwrap_or_default()
    ))
}

/// How long `send` waits without any news before it stops waiting.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The events `connect` shows as progress.
const HANDSHAKE_EVENTS: &[&str] = &[
    "connected",
    "handshake-started",
    "handshake-stalled",
    "handshake-failed",
    "session-reset",
    "identity-changed",
    "encryption-ready",
    "disconnected",
];

/// The absolute path of a regular file the user asked to send.
fn file_to_send(file: &std::path::Path) -> Result<PathBuf> {
    let path = std::fs::canonicalize(file).map_err(|e| {
        AppError::new(ErrorKind::NotFound, format!("cannot send {}: {e}", file.display())).hint("check the path")
    })?;
    if !path.is_file() {
        return Err(
            AppError::new(ErrorKind::Usage, format!("{} is not a file", path.display()))
                .hint("send one regular file at a time"),
        );
    }
    Ok(path)
}

/// `strata send`.
pub(crate) async fn send(ctx: &Ctx, args: SendArgs) -> Result<()> {
    let peer = PeerRef::parse(&args.peer)?;
    let body = match (args.text, args.file) {
        (Some(text), None) => SendBody::Text(text),
        (None, Some(file)) => SendBody::File(file_to_send(&file)?),
        _ => {
            return Err(AppError::new(ErrorKind::Usage, "give a text or --file PATH, not both")
                .hint("see `strata send --help`"));
        }
    };
    let is_file = matches!(body, SendBody::File(_));
    let daemon = require_daemon(ctx, "send").await?;
    let mut live = daemon.events(None).await?;
    let call = SessionCall::Send {
        peer: peer.to_string(),
        body,
        wait_ack: false,
    };
    let result = session_rpc(&daemon, &call).await?;
    let id = at(&result, "messageId").as_str().unwrap_or_default().to_owned();
    let mut acknowledged = false;
    if args.wait_ack || is_file {
        let size = at(at(&result, "file"), "size").as_u64().unwrap_or(0);
        let bar = (is_file && !ctx.json).then(|| progress_bar(size));
        let (done, field) = if is_file {
            ("file-sent", "fileId")
        } else {
            ("delivered", "messageId")
        };
        loop {
            let event = match tokio::time::timeout(IDLE_WAIT, live.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => break, // the daemon stopped
                Err(_) if !args.wait_ack => {
                    output::note("no progress for a while; the node goes on sending in the background");
                    break;
                }
                Err(_) => break,
            };
            if event.kind == "file-progress"
                && at(&event.data, "fileId") == id.as_str()
                && let Some(bar) = &bar
            {
                let (acked, total) = (at(&event.data, "acked").as_u64(), at(&event.data, "total").as_u64());
                if let (Some(acked), Some(total)) = (acked, total.filter(|t| *t > 0)) {
                    bar.set_position(size.saturating_mul(acked) / total);
                }
            }
            if event.kind == done && at(&event.data, field) == id.as_str() {
                acknowledged = true;
                break;
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if args.wait_ack && !acknowledged {
            return Err(AppError::new(
                ErrorKind::Network,
                format!("{id} is queued, but the peer did not acknowledge it"),
            )
            .hint("it stays in the outbox and is retransmitted; watch `strata inbox --follow` for `delivered`"));
        }
    }
    let mut result = result;
    set(&mut result, "acknowledged", serde_json::json!(acknowledged));
    if ctx.json {
        output::json(&result)
    } else {
        output::line(&id)
    }
}

fn progress_bar(size: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(size), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// `strata inbox`: the kept messages; with `--follow`, then new messages
/// and events as they come.
pub(crate) async fn inbox(ctx: &Ctx, args: InboxArgs) -> Result<()> {
    let daemon = ControlClient::discover(&ctx.dir).await?;
    let stored = match &daemon {
        Some(daemon) => session_rpc(daemon, &SessionCall::Inbox { follow: args.follow }).await?,
        None if args.follow => {
            return Err(no_daemon("inbox --follow"));
        }
        None => {
            let (store, local) = open_store(ctx).await?;
            crate::inbox::stored(&store, &local.peer_id().identity_key().serialize())?
        }
    };
    let empty = Vec::new();
    let messages = at(&stored, "messages").as_array().unwrap_or(&empty);
    let pending = at(&stored, "pending").as_array().unwrap_or(&empty);
    for item in messages.iter().chain(pending) {
        print_inbox_item(ctx, "message", item)?;
    }
    let Some(daemon) = daemon.filter(|_| args.follow) else {
        return Ok(());
    };
    let since = at(&stored, "lastEventId").as_u64().unwrap_or(0);
    let mut live = daemon.events(Some(since)).await?;
    while let Some(event) = live.recv().await {
        if INBOX_EVENTS.contains(&event.kind.as_str()) {
            print_inbox_item(ctx, &event.kind, &event.data)?;
        }
    }
    Ok(())
}

/// What `inbox --follow` shows: what a user needs to know of, not every
/// protocol step.
const INBOX_EVENTS: &[&str] = &[
    "message",
    "message-sent-copy",
    "file-sent-copy",
    "devices-changed",
    "file-received",
    "delivered",
    "identity-changed",
    "installation-changed",
    "encryption-ready",
    "session-reset",
    "handshake-failed",
    "low-key-packages",
    "group-message",
    "group-joined",
    "group-epoch",
    "group-removed",
];

fn print_inbox_item(ctx: &Ctx, kind: &str, data: &serde_json::Value) -> Result<()> {
    let kind = at(data, "kind").as_str().unwrap_or(kind);
    if ctx.json {
        let mut item = data.clone();
        set(&mut item, "kind", serde_json::json!(kind));
        return output::json(&item);
    }
    let peer = at(data, "peer")
        .as_str()
        .or(at(data, "installation").as_str())
        .unwrap_or("");
    match kind {
        // A text this account sent from another of its devices.
        "message" | "message-sent-copy" if at(data, "sentTo").is_string() || at(data, "to").is_string() => {
            output::line(format!(
                "you (on {peer}) to {}: {}",
                at(data, "sentTo")
                    .as_str()
                    .or(at(data, "to").as_str())
                    .unwrap_or_default(),
                at(data, "text").as_str().unwrap_or_default()
            ))
        }
        "message" => output::line(format!("{peer}: {}", at(data, "text").as_str().unwrap_or_default())),
        "devices-changed" => output::line(format!(
            "{}: devices now {}",
            at(data, "peerId").as_str().unwrap_or_default(),
            at(data, "installations")
                .as_array()
                .map(|a| a.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        )),
        "file-received" => output::line(format!(
            "{peer}: file {}",
            at(data, "path").as_str().unwrap_or_default()
        )),
        "file-sent-copy" => output::line(format!(
            "you (on {peer}) to {}: file {}",
            at(data, "to").as_str().unwrap_or_default(),
            at(data, "path").as_str().unwrap_or_default()
        )),
        "identity-changed" => output::line(format!(
            "{peer}: identity key changed; nothing is sent until you check it with `strata verify {peer}`"
        )),
        "group-message" => output::line(format!(
            "[{}] {}: {}",
            at(data, "group").as_str().unwrap_or_default(),
            at(data, "sender").as_str().unwrap_or_default(),
            at(data, "text").as_str().unwrap_or_default()
        )),
        "group-joined" | "group-epoch" | "group-removed" => {
            let group = at(data, "group").as_str().unwrap_or_default();
            let what = match kind {
                "group-joined" => format!("joined at epoch {}", at(data, "epoch")),
                "group-removed" => "you were removed".to_owned(),
                _ => {
                    let count = |k: &str| at(data, k).as_array().map_or(0, Vec::len);
                    format!(
                        "epoch {}: {} added, {} removed",
                        at(data, "epoch"),
                        count("added"),
                        count("removed")
                    )
                }
            };
            output::line(format!("[{group}] {what}"))
        }
        other => output::line(format!("{peer}: {other}")),
    }
}

/// `strata group …`: one request to the running node.
pub(crate) async fn group(ctx: &Ctx, action: crate::sessions::GroupAction) -> Result<()> {
    use crate::sessions::GroupAction;
    let listing = action == GroupAction::List;
    let members = matches!(action, GroupAction::Members { .. });
    // The daemon reads the file: it gets an absolute path.
    let action = match action {
        GroupAction::Send {
            group,
            text,
            file: Some(file),
        } => GroupAction::Send {
            group,
            text,
            file: Some(file_to_send(&file)?),
        },
        other => other,
    };
    let daemon = require_daemon(ctx, "group").await?;
    let result = session_rpc(&daemon, &SessionCall::Group { action }).await?;
    if ctx.json {
        return output::json(&result);
    }
    if members {
        let empty = Vec::new();
        let admins = at(&result, "admins").as_array().unwrap_or(&empty).clone();
        output::line(format!(
            "{} ({}), epoch {}",
            at(&result, "group").as_str().unwrap_or_default(),
            at(&result, "name").as_str().unwrap_or("no name"),
            at(&result, "epoch")
        ))?;
        for m in at(&result, "members").as_array().unwrap_or(&empty) {
            let admin = if admins.contains(m) { "  admin" } else { "" };
            output::line(format!("{}{admin}", m.as_str().unwrap_or_default()))?;
        }
        return Ok(());
    }
    if let Some(file_id) = at(&result, "fileId").as_str() {
        return output::line(file_id);
    }
    if !listing {
        return output::line(at(&result, "group").as_str().unwrap_or_default());
    }
    let empty = Vec::new();
    let groups = at(&result, "groups").as_array().unwrap_or(&empty);
    if groups.is_empty() {
        return output::line("no group chats yet: `strata group create` starts one");
    }
    for g in groups {
        output::line(format!(
            "{}  {}",
            at(g, "group").as_str().unwrap_or_default(),
            at(g, "name").as_str().unwrap_or("(no name)")
        ))?;
    }
    Ok(())
}

/// `strata devices …`: one request to the running node.
pub(crate) async fn devices(ctx: &Ctx, action: crate::sessions::DeviceAction) -> Result<()> {
    use crate::sessions::DeviceAction;
    if let DeviceAction::Join { uri } = &action {
        let config = ctx.config_or_defaults()?;
        let joined = crate::pairing::join_device(&ctx.dir, &ctx.config_file, &config, uri).await?;
        if ctx.json {
            return output::json(&joined);
        }
        output::line(format!("This device is now one of {}'s.", joined.peer_id))?;
        output::fields(&[
            ("installation id", &joined.installation_id),
            ("paired with", &joined.paired_with),
            ("contacts", &joined.contacts.to_string()),
        ])?;
        output::note("Start it with `strata run`: it opens sessions with your other devices and contacts.");
        return Ok(());
    }
    let listing = action == DeviceAction::List;
    let qr = matches!(action, DeviceAction::Pair { qr: true });
    let daemon = require_daemon(ctx, "devices").await?;
    let result = session_rpc(&daemon, &SessionCall::Devices { action }).await?;
    if ctx.json {
        return output::json(&result);
    }
    if let Some(uri) = at(&result, "uri").as_str() {
        if qr {
            output::line(crate::qr::render(uri.as_bytes())?)?;
        }
        output::line(uri)?;
        output::note("On the new device: strata devices join '<this URI>'. It pairs one device, within 10 minutes.");
        return Ok(());
    }
    if !listing {
        return output::line(format!(
            "removed {}; device list version {}",
            at(&result, "removed").as_str().unwrap_or_default(),
            at(&result, "version")
        ));
    }
    if at(&result, "paired") == &serde_json::Value::Bool(false) {
        output::line("this device was removed from the account's device list")?;
    }
    let empty = Vec::new();
    for d in at(&result, "devices").as_array().unwrap_or(&empty) {
        let this = if at(d, "this").as_bool() == Some(true) {
            "  (this device)"
        } else {
            ""
        };
        let seen = at(d, "lastActiveMs")
            .as_u64()
            .map(|ms| format!("  last heard {}s ago", crate::ops::now_ms().saturating_sub(ms) / 1000))
            .unwrap_or_default();
        output::line(format!(
            "{}{this}{seen}",
            at(d, "installation").as_str().unwrap_or_default()
        ))?;
    }
    Ok(())
}

/// `strata account export --out FILE`: the account key, sealed.
pub(crate) async fn account(ctx: &Ctx, command: crate::cli::AccountCommand) -> Result<()> {
    let crate::cli::AccountCommand::Export { out } = command;
    if out.exists() {
        return Err(AppError::new(ErrorKind::Usage, format!("{} exists", out.display()))
            .hint("name a new file: a backup is never overwritten"));
    }
    let passphrase = crate::account::passphrase()?;
    let (_store, local) = open_store(ctx).await?;
    let text = tokio::task::spawn_blocking(move || crate::account::export(&local, &passphrase))
        .await
        .map_err(|e| AppError::internal(format!("export task failed: {e}")))??;
    write_atomic(&out, text.as_bytes(), 0o600)?;
    if ctx.json {
        return output::json(&serde_json::json!({"backup": out}));
    }
    output::line(format!("account key sealed in {}", out.display()))?;
    output::note("Keep the file and the passphrase apart: together they are the account.");
    Ok(())
}

/// `strata peers`.
pub(crate) async fn peers(ctx: &Ctx) -> Result<()> {
    let result = match ControlClient::discover(&ctx.dir).await? {
        Some(daemon) => session_rpc(&daemon, &SessionCall::Peers).await?,
        None => {
            let (store, _local) = open_store(ctx).await?;
            stored_peers(&store)?
        }
    };
    if ctx.json {
        return output::json(&result);
    }
    let empty = Vec::new();
    let peers = at(&result, "peers").as_array().unwrap_or(&empty);
    if peers.is_empty() {
        return output::line("no peers yet: `strata connect <peer>` opens a session");
    }
    for p in peers {
        output::line(format!(
            "{}  {:<11} {:<9} {:<13} {}",
            at(p, "installation").as_str().unwrap_or_default(),
            at(p, "state").as_str().unwrap_or_default(),
            if at(p, "connected") == true {
                "linked"
            } else {
                "offline"
            },
            at(p, "transport").as_str().unwrap_or_default(),
            if at(p, "verified") == true {
                "verified"
            } else if at(p, "verifiedByInvite") == true {
                "verified-by-invite"
            } else {
                "unverified"
            },
        ))?;
    }
    Ok(())
}

/// `peers` without a daemon: the contacts of the store, none running.
fn stored_peers(store: &storage::NodeStore) -> Result<serde_json::Value> {
    let contacts = store
        .read(|r| r.contacts())
        .map_err(|e| AppError::caused("cannot read the contacts", &e))?;
    let peers: Vec<serde_json::Value> = contacts
        .iter()
        .map(|c| {
            serde_json::json!({
                "peer": c.installation_id,
                "peerId": crate::identity::PeerId::from_key_bytes(&c.identity_key).ok().map(|p| p.to_string()),
                "installation": c.installation_id,
                "state": if c.offered_key.is_some() { "blocked" } else { "stopped" },
                "connected": false,
                "transport": "none",
                "verified": c.verified,
                "verifiedByInvite": c.invited,
                "identityChangePending": c.offered_key.is_some(),
            })
        })
        .collect();
    Ok(serde_json::json!({ "peers": peers }))
}

/// `strata keys`: through the daemon when one runs, from the store
/// otherwise.
pub(crate) async fn keys(ctx: &Ctx) -> Result<()> {
    let info: ops::KeysInfo = match ControlClient::discover(&ctx.dir).await? {
        Some(daemon) => daemon.call("keys", serde_json::Value::Null).await?,
        None => {
            let (store, _local) = open_store(ctx).await?;
            let path = ctx.dir.store_file();
            tokio::task::spawn_blocking(move || ops::keys(&store, &path, ops::now_ms() / 1000))
                .await
                .map_err(|e| AppError::internal(format!("store task failed: {e}")))??
        }
    };
    if ctx.json {
        return output::json(&info);
    }
    output::line(format!("one-time KeyPackages: {}", info.available))?;
    let last_resort = match (info.last_resort, info.last_resort_age_s) {
        (false, _) => "none".to_owned(),
        (true, age) => format!(
            "{}, {}",
            age.map_or_else(|| "age unknown".to_owned(), |a| format!("{} old", span(a))),
            if info.last_resort_served {
                "served"
            } else {
                "not served"
            }
        ),
    };
    output::line(format!("last resort: {last_resort}"))?;
    let next_expiry = info.next_expiry_s.map_or_else(
        || "none".to_owned(),
        |at| format!("in {}", span(at.saturating_sub(info.now_s))),
    );
    output::line(format!("next expiry: {next_expiry}"))?;
    output::line(format!("claims in the last hour: {}", info.claims_last_hour))?;
    output::line(format!("claimed by peers, awaiting use: {}", info.held))
}

/// A duration for people: its largest whole unit.
fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}min", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

pub(crate) async fn require_daemon(ctx: &Ctx, command: &str) -> Result<ControlClient> {
    ControlClient::discover(&ctx.dir)
        .await?
        .ok_or_else(|| no_daemon(command))
}

fn no_daemon(command: &str) -> AppError {
    AppError::new(ErrorKind::NoDaemon, format!("`strata {command}` needs a running node"))
        .hint("start one with `strata run` (same --data-dir) in another terminal")
}

/// One session call over the control API.
pub(crate) async fn session_rpc(daemon: &ControlClient, call: &SessionCall) -> Result<serde_json::Value> {
    let params = serde_json::to_value(call)
        .map_err(|e| AppError::internal(e.to_string()))?
        .get("params")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    daemon.call::<serde_json::Value>(call.method(), params).await
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn spans_show_their_largest_whole_unit() {
        let shown: Vec<String> = [0, 59, 60, 3_599, 3_600, 86_399, 86_400, 28 * 86_400]
            .into_iter()
            .map(span)
            .collect();
        assert_eq!(shown, ["0s", "59s", "1min", "59min", "1h", "23h", "1d", "28d"]);
    }
}
