//! What the CLI prints: results on stdout, notes and errors on stderr (logs
//! go to stderr too, through `tracing`). A closed stdout (`strata id |
//! head -1`) is not an error.

use std::io::Write as _;

use serde::Serialize;

use crate::error::{AppError, Result};

/// Prints one line of result text.
pub(crate) fn line(text: impl std::fmt::Display) -> Result<()> {
    write_stdout(format!("{text}\n").as_bytes())
}

/// Prints `value` as one line of JSON.
pub(crate) fn json(value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string(value).map_err(|e| AppError::internal(e.to_string()))?;
    text.push('\n');
    write_stdout(text.as_bytes())
}

/// Prints aligned `label  value` lines.
pub(crate) fn fields(rows: &[(&str, &str)]) -> Result<()> {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (label, value) in rows {
        text.push_str(&format!("  {label:<width$}  {value}\n"));
    }
    write_stdout(text.as_bytes())
}

/// A note for the person at the terminal (stderr): what to do next.
pub(crate) fn note(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Reports a failure on stderr, as text or as JSON.
pub(crate) fn error(error: &AppError, as_json: bool) {
    let mut stderr = std::io::stderr().lock();
    if as_json {
        let value = serde_json::json!({
            "error": {
                "kind": error.kind,
                "exitCode": error.kind.exit_code(),
                "message": error.message,
                "hint": error.hint,
            }
        });
        let _ = writeln!(stderr, "{value}");
    } else {
        let _ = writeln!(stderr, "error: {}", error.message);
        if let Some(hint) = &error.hint {
            let _ = writeln!(stderr, "  hint: {hint}");
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(AppError::internal(format!("cannot write to stdout: {e}"))),
    }
}
