//! `strata invite`, `accept`, `reset` and `introduce`: BisonRelay's
//! out-of-band key exchange (`strata_session::kx`) from the command line.
//! The invite URI is [`crate::identity::InviteUri`].

use crate::cli::{AcceptArgs, IntroduceArgs, InviteArgs, PeerArgs};
use crate::commands::{Ctx, require_daemon, session_rpc};
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::{INVITE_SCHEME, InviteUri, bad_invite};
use crate::json::at;
use crate::sessions::SessionCall;
use crate::{output, qr};

/// Most bytes of an invite file `accept` reads.
const MAX_INVITE_FILE: u64 = 64 * 1024;

/// The invite `accept` was given: a URI, or a file holding one.
fn read_invite(text: &str) -> Result<InviteUri> {
    let from_file;
    let uri = if text.trim_start().starts_with(INVITE_SCHEME) {
        text
    } else {
        let path = std::path::Path::new(text);
        let meta = std::fs::metadata(path).map_err(|_| {
            AppError::new(ErrorKind::Usage, "not an invite URI, nor a file holding one")
                .hint(format!("an invite starts with `{INVITE_SCHEME}:`"))
        })?;
        if meta.len() > MAX_INVITE_FILE {
            return Err(AppError::new(
                ErrorKind::Usage,
                format!("{} is too large to hold an invite", path.display()),
            ));
        }
        from_file = std::fs::read_to_string(path)
            .map_err(|e| AppError::new(ErrorKind::NotFound, format!("cannot read {}: {e}", path.display())))?;
        &from_file
    };
    InviteUri::parse(uri).map_err(bad_invite)
}

/// `strata invite`.
pub(crate) async fn invite(ctx: &Ctx, args: InviteArgs) -> Result<()> {
    let daemon = require_daemon(ctx, "invite").await?;
    let call = SessionCall::Invite {
        expires_s: args.expires.as_secs(),
        name: args.name.unwrap_or_default(),
    };
    let result = session_rpc(&daemon, &call).await?;
    if ctx.json {
        return output::json(&result);
    }
    let uri = at(&result, "uri").as_str().unwrap_or_default();
    if args.qr {
        output::line(qr::render(uri.as_bytes())?)?;
    }
    output::line(uri)?;
    output::note(
        "Give it to one person over a channel you trust: `strata accept '<invite>'` on their node starts \
         the conversation, identities pinned. It works once, until it expires.",
    );
    Ok(())
}

/// `strata accept`.
pub(crate) async fn accept(ctx: &Ctx, args: AcceptArgs) -> Result<()> {
    // Checked here first, so a bad invite is a usage error before any
    // daemon is asked.
    let uri = read_invite(&args.invite)?;
    let daemon = require_daemon(ctx, "accept").await?;
    let call = SessionCall::Accept {
        invite: uri.to_string(),
        name: args.name.unwrap_or_default(),
    };
    let result = session_rpc(&daemon, &call).await?;
    if ctx.json {
        return output::json(&result);
    }
    output::line(format!(
        "encryption ready with {} ({}), verified by invite",
        at(&result, "peerId").as_str().unwrap_or_default(),
        at(&result, "installation").as_str().unwrap_or_default(),
    ))
}

/// `strata reset`.
pub(crate) async fn reset(ctx: &Ctx, args: PeerArgs) -> Result<()> {
    let daemon = require_daemon(ctx, "reset").await?;
    let result = session_rpc(&daemon, &SessionCall::Reset { peer: args.peer }).await?;
    if ctx.json {
        return output::json(&result);
    }
    output::line(format!(
        "key exchange run again with {}; encryption ready",
        at(&result, "peer").as_str().unwrap_or_default()
    ))
}

/// `strata introduce`.
pub(crate) async fn introduce(ctx: &Ctx, args: IntroduceArgs) -> Result<()> {
    let daemon = require_daemon(ctx, "introduce").await?;
    let call = SessionCall::Introduce {
        to: args.to,
        target: args.target,
    };
    let result = session_rpc(&daemon, &call).await?;
    if ctx.json {
        return output::json(&result);
    }
    output::line(format!(
        "asked {} to meet {}: they run the key exchange through you, then talk directly",
        at(&result, "to").as_str().unwrap_or_default(),
        at(&result, "target").as_str().unwrap_or_default()
    ))
}
