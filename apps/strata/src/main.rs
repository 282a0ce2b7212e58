//! `strata`: the Strata node's command-line entry point.
//!
//! Results go to stdout, logs and notes to stderr; `--json` makes results
//! (and errors) JSON. A failure exits with the code of its
//! [`error::ErrorKind`] (the table is in the README).
#![forbid(unsafe_code)]

mod account;
mod broker;
mod bundles;
mod cli;
mod commands;
mod config;
mod control;
mod daemon;
mod demo;
mod error;
mod identity;
mod inbox;
mod invite;
mod json;
mod node;
mod ops;
mod output;
mod pairing;
mod paths;
mod qr;
mod sessions;
mod storage;

use std::process::ExitCode;

/// mimalloc, not the system allocator: a node with a thousand sessions
/// spent a quarter of its time in glibc's malloc, and its heap grew half
/// again as large (`cargo bench -p strata-session --bench sessions`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{CommandFactory as _, FromArgMatches as _};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::commands::Ctx;
use crate::config::FileRule;
use crate::error::{AppError, ErrorKind};
use crate::paths::DataDir;

fn main() -> ExitCode {
    let command = Cli::command().after_long_help(error::exit_code_help());
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let json = cli.global.json;
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            output::error(
                &AppError::internal(format!("cannot start the async runtime: {e}")),
                json,
            );
            return ExitCode::from(ErrorKind::Internal.exit_code());
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The demo (and anything else written with anyhow) may carry
            // an AppError; otherwise it is unexpected.
            let app = match error.downcast::<AppError>() {
                Ok(app) => app,
                Err(other) => AppError::new(ErrorKind::Internal, format!("{other:#}")),
            };
            output::error(&app, json);
            ExitCode::from(app.kind.exit_code())
        }
    }
}

/// Logs to stderr: `RUST_LOG` if set, else by `-v`; the long-running
/// commands (`run`, `broker`) log at info by default so they say where they
/// listen.
fn init_logging(cli: &Cli) {
    let daemon = matches!(cli.command, Command::Run | Command::Broker(_));
    let default = match (cli.global.verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    // webrtc-rs reports a routine channel close at WARN, and libsignal logs
    // every session step at INFO; below debug, keep those crates to what
    // needs attention so the user sees ours.
    let quiet_webrtc = ",webrtc=error,webrtc_ice=error,webrtc_sctp=error,webrtc_dtls=error,webrtc_mdns=error,\
                        libsignal_protocol_syft=warn,openmls=warn";
    let default = if cli.global.verbose < 2 {
        format!("{default}{quiet_webrtc}")
    } else {
        default.to_owned()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    if let Command::Demo = cli.command {
        return demo::run().await;
    }
    let dir = DataDir::resolve(cli.global.data_dir)?;
    let ctx = Ctx {
        config_file: cli.global.config.clone().unwrap_or_else(|| dir.config_file()),
        config_rule: match cli.global.config {
            Some(_) => FileRule::MustExist,
            None => FileRule::MayBeAbsent,
        },
        dir,
        json: cli.global.json,
    };
    match cli.command {
        Command::Init(args) => commands::init(&ctx, args).await?,
        Command::Run => daemon::run(&ctx).await?,
        Command::Id(args) => commands::id(&ctx, args).await?,
        Command::Connect(args) => commands::connect(&ctx, args).await?,
        Command::Send(args) => commands::send(&ctx, args).await?,
        Command::Inbox(args) => commands::inbox(&ctx, args).await?,
        Command::Peers => commands::peers(&ctx).await?,
        Command::Keys => commands::keys(&ctx).await?,
        Command::Verify(args) => commands::verify(&ctx, args).await?,
        Command::Invite(args) => invite::invite(&ctx, args).await?,
        Command::Accept(args) => invite::accept(&ctx, args).await?,
        Command::Reset(args) => invite::reset(&ctx, args).await?,
        Command::Introduce(args) => invite::introduce(&ctx, args).await?,
        Command::Group { command } => commands::group(&ctx, command).await?,
        Command::Devices { command } => commands::devices(&ctx, command).await?,
        Command::Account { command } => commands::account(&ctx, command).await?,
        Command::Config { command } => commands::config(&ctx, command)?,
        Command::Broker(args) => broker::run(&ctx, args).await?,
        Command::Demo => return demo::run().await,
    }
    Ok(())
}
