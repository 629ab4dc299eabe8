//! Rendering: exactly one JSON document or text on stdout; everything else goes to stderr.
use std::io::Write;

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
    let mut line = format!("error [{}]: {}", info.code.as_str(), info.message);
    if let Some(status) = info.http_status {
        line.push_str(&format!(" (HTTP {status})"));
    }
    for fp in &info.server_fingerprints {
        line.push_str(&format!("\n  server certificate: {fp}"));
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

/// Sets up logging to stderr; `TETHER_LOG` / `-v` choose the level.
pub fn init_logging(verbosity: u8) {
    let default = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
