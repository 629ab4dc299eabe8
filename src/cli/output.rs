//! Rendering: exactly one JSON document or text on stdout; everything else goes to stderr.
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::error::{Error, Result};

/// A command result that can also be shown to a person.
pub trait Render: Serialize {
    fn text(&self) -> String;
}

/// Prints the result (or error) and returns the process exit code.
pub fn finish<T: Render>(json: bool, result: Result<T>) -> i32 {
    match result {
        Ok(value) => {
            if json {
                print_json(&value);
            } else {
                let text = value.text();
                if !text.is_empty() {
                    print_stdout(&text);
                }
            }
            0
        }
        Err(err) => {
            report_error(json, &err);
            err.code().exit_code()
        }
    }
}

pub fn report_error(json: bool, err: &Error) {
    if json {
        print_json(&err.document());
    }
    // Also on stderr in JSON mode: logs capture it, stdout stays one document.
    let info = &err.0;
    if JSON_LOGS.load(Ordering::Relaxed) {
        // The same shape as the JSON log lines, so a log shipper sees one format.
        let line = serde_json::json!({
            "timestamp": crate::wire::certs::rfc3339(crate::wire::certs::now_unix()),
            "level": "ERROR",
            "message": info.message,
            "error": info,
        });
        eprintln!("{line}");
        return;
    }
    let mut line = format!("error [{}]: {}", info.code.as_str(), info.message);
    if let Some(status) = info.http_status {
        line.push_str(&format!(" (HTTP {status})"));
    }
    for c in &info.presented_certificates {
        line.push_str(&format!(
            "\n  {:<19} {}",
            format!("{}:", c.role.label()),
            c.fingerprint
        ));
    }
    if let Some(hint) = &info.hint {
        line.push_str(&format!("\n  hint: {hint}"));
    }
    eprintln!("{line}");
}

pub fn print_json<T: Serialize>(value: &T) {
    let s = serde_json::to_string_pretty(value).unwrap_or_else(|e| {
        format!("{{\"ok\":false,\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}")
    });
    print_stdout(&s);
}

fn print_stdout(s: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

/// How log lines on stderr look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: colour only on a terminal, no timestamps when stderr is the systemd
    /// journal (it stamps every line itself).
    Text,
    /// One JSON object per line (timestamp, level, message, fields), for log shippers.
    Json,
}

static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Sets up logging to stderr; `TETHER_LOG` / `-v` choose the level.
pub fn init_logging(verbosity: u8, format: LogFormat) {
    let default = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    JSON_LOGS.store(format == LogFormat::Json, Ordering::Relaxed);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text if stderr_is_journal() => {
            builder.with_ansi(false).without_time().try_init()
        }
        LogFormat::Text => builder.with_ansi(colour_allowed()).try_init(),
    };
}

/// Colour codes only for a person at a terminal, and never with NO_COLOR set.
fn colour_allowed() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// systemd sets JOURNAL_STREAM to the device and inode of the stream it connected to
/// stderr; when they still match, our lines end up in the journal.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
