//! Invites: `strata invite` and `strata accept` (BisonRelay's out-of-band
//! key exchange, `strata_session::kx`).
//!
//! # Invite URI
//!
//! ```text
//! strata-invite:<base64url RMO>[?addr=<multiaddr>]...
//! ```
//!
//! The path is the invite as BisonRelay writes one out of band: its `RMO`
//! (zlib of the JSON header and the signed `oobpublicidentityinvite`),
//! unpadded base64url. `addr` is a libp2p address the inviter listens on
//! (repeatable): the invitee dials it to join the gossip network the
//! exchange runs over. Addresses are hints, not signed; everything that
//! matters — the account key, the KEM key, the installation, the
//! rendezvous points, the expiry — is inside the signed invite.
//!
//! Whoever holds an invite until it expires can start a conversation with
//! the inviter as themselves (once: the first answer uses it); it reveals
//! the inviter's account key and installation.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use strata_proto::kx::{Invite, MAX_RMO_BYTES, Rmo};

use crate::cli::{AcceptArgs, InviteArgs, PeerArgs};
use crate::commands::{Ctx, require_daemon, session_rpc};
use crate::error::{AppError, ErrorKind, Result};
use crate::json::at;
use crate::sessions::SessionCall;
use crate::{output, qr};

/// The invite URI scheme.
pub(crate) const INVITE_SCHEME: &str = "strata-invite";

/// Most bytes of an invite file `accept` reads.
const MAX_INVITE_FILE: u64 = 64 * 1024;

/// A parsed invite URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InviteUri {
    /// The invite, as signed.
    pub(crate) invite: Invite,
    /// libp2p addresses the inviter listens on.
    pub(crate) addrs: Vec<libp2p::Multiaddr>,
}

impl InviteUri {
    /// Parses `strata-invite:…`.
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix(INVITE_SCHEME)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(|| format!("an invite starts with `{INVITE_SCHEME}:`"))?;
        let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
        if body.len() > MAX_RMO_BYTES.div_ceil(3) * 4 {
            return Err("the invite is too long".to_owned());
        }
        let rmo = URL_SAFE_NO_PAD
            .decode(body.as_bytes())
            .map_err(|_| "the invite is not base64url".to_owned())?;
        let invite = match Rmo::decompose(&rmo).map_err(|e| format!("not an invite: {e}"))? {
            (_, Rmo::Invite(invite)) => *invite,
            _ => return Err("not an invite: another KX message".to_owned()),
        };
        let mut addrs = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == "addr" {
                addrs.push(
                    value
                        .parse()
                        .map_err(|e| format!("bad libp2p address {value:?}: {e}"))?,
                );
            }
        }
        Ok(Self { invite, addrs })
    }
}

impl fmt::Display for InviteUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rmo = Rmo::Invite(Box::new(self.invite.clone())).compose(0);
        write!(f, "{INVITE_SCHEME}:{}", URL_SAFE_NO_PAD.encode(rmo))?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for addr in &self.addrs {
            query.append_pair("addr", &addr.to_string());
        }
        let query = query.finish();
        if !query.is_empty() {
            write!(f, "?{query}")?;
        }
        Ok(())
    }
}

/// Parses an invite's lifetime: a number and a unit, `s`, `m`, `h` or `d`
/// (`7d`, `12h`).
pub(crate) fn parse_ttl(text: &str) -> std::result::Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a lifetime like 7d or 12h"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    let max = strata_session::kx::MAX_INVITE_TTL;
    match n.checked_mul(unit).map(Duration::from_secs) {
        Some(d) if d > Duration::ZERO && d <= max => Ok(d),
        _ => Err(format!("an invite lives from 1s to {} days", max.as_secs() / 86_400)),
    }
}

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

/// An invite that does not parse.
pub(crate) fn bad_invite(why: String) -> AppError {
    AppError::new(ErrorKind::Usage, format!("bad invite: {why}"))
        .hint("copy the whole invite, `strata-invite:` and all, or ask its maker to send it again")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InviteUri {
        let mut rng = rand::rng();
        let account = strata_cascade::AccountIdentity::generate(&mut rng);
        let kem = strata_cascade::kx::KxKeyPair::generate(&mut rng);
        let me = strata_cascade::kx::KxSelf {
            account: &account,
            kem: &kem,
            name: "alice",
            installation: strata_cascade::InstallationId::from_bytes([7; 16]),
        };
        InviteUri {
            invite: strata_cascade::kx::make_invite(me, 1_900_000_000, &mut rng).unwrap(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        }
    }

    #[test]
    fn an_invite_uri_goes_round_and_fits_a_qr_code() {
        let uri = sample();
        let text = uri.to_string();
        assert!(text.starts_with("strata-invite:"));
        assert_eq!(InviteUri::parse(&text).unwrap(), uri);
        assert_eq!(InviteUri::parse(&format!("  {text}\n")).unwrap(), uri);
        qr::render(text.as_bytes()).unwrap();
        let bare = InviteUri {
            addrs: Vec::new(),
            ..uri
        };
        assert!(!bare.to_string().contains('?'));
        assert_eq!(InviteUri::parse(&bare.to_string()).unwrap(), bare);
    }

    #[test]
    fn bad_invite_uris_say_why() {
        let good = sample().to_string();
        let body = good
            .strip_prefix("strata-invite:")
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        for (bad, why) in [
            ("strata:abc".to_owned(), "starts with"),
            ("strata-invite:!!".to_owned(), "base64url"),
            ("strata-invite:AAAA".to_owned(), "not an invite"),
            (format!("strata-invite:{}", "A".repeat(30_000)), "too long"),
            (format!("strata-invite:{body}?addr=nope"), "bad libp2p address"),
        ] {
            let err = InviteUri::parse(&bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn lifetimes_take_a_unit_and_stay_in_bounds() {
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("3"), Ok(Duration::from_secs(3 * 86_400)));
        for bad in ["", "d", "0d", "31d", "5w", "-1d", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
