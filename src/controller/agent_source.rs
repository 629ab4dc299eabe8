//! Where agent output comes from: the Checkmk agent socket (spec §4), a command, or a file.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::AgentConfig;

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Socket(PathBuf),
    Command(Vec<String>),
    File(PathBuf),
}

impl Source {
    pub fn from_config(c: &AgentConfig) -> Source {
        if let Some(f) = &c.file {
            Source::File(f.clone())
        } else if !c.command.is_empty() {
            Source::Command(c.command.clone())
        } else {
            Source::Socket(c.socket.clone())
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Socket(_) => "socket",
            Source::Command(_) => "command",
            Source::File(_) => "file",
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Source::Socket(p) | Source::File(p) => p.display().to_string(),
            Source::Command(argv) => argv.join(" "),
        }
    }
    /// Cheap presence check for `status` (does not run the agent).
    pub fn check_present(&self) -> Result<(), String> {
        match self {
            Source::Socket(p) | Source::File(p) => {
                if p.exists() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} does not exist (is the Checkmk agent package installed?)",
                        p.display()
                    ))
                }
            }
            Source::Command(argv) => {
                let prog = PathBuf::from(&argv[0]);
                let found = if prog.components().count() > 1 {
                    prog.is_file()
                } else {
                    std::env::var_os("PATH")
                        .map(|p| std::env::split_paths(&p).any(|d| d.join(&prog).is_file()))
                        .unwrap_or(false)
                };
                if found {
                    Ok(())
                } else {
                    Err(format!("command {:?} not found", argv[0]))
                }
            }
        }
    }
}

/// Reads agent output. `peer` is the pulling site's address; `None` for push and dump.
pub async fn read_output(
    source: &Source,
    peer: Option<std::net::IpAddr>,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let work = async {
        match source {
            Source::File(p) => tokio::fs::read(p)
                .await
                .map_err(|e| format!("agent output file {}: {e}", p.display())),
            Source::Socket(p) => {
                let mut s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| format!("agent socket {}: {e}", p.display()))?;
                let line = peer
                    .map(|ip| format!("{ip}\n"))
                    .unwrap_or_else(|| "\n".into());
                s.write_all(line.as_bytes())
                    .await
                    .map_err(|e| format!("agent socket {}: {e}", p.display()))?;
                let mut out = Vec::new();
                (&mut s)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .await
                    .map_err(|e| format!("agent socket {}: {e}", p.display()))?;
                Ok(out)
            }
            Source::Command(argv) => {
                let mut cmd = tokio::process::Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .kill_on_drop(true);
                if let Some(ip) = peer {
                    cmd.env("REMOTE_HOST", ip.to_string());
                }
                let mut child = cmd
                    .spawn()
                    .map_err(|e| format!("agent command {:?}: {e}", argv[0]))?;
                let mut out = Vec::new();
                if let Some(stdout) = child.stdout.take() {
                    stdout
                        .take(limit as u64 + 1)
                        .read_to_end(&mut out)
                        .await
                        .map_err(|e| format!("agent command {:?}: {e}", argv[0]))?;
                }
                let status = child
                    .wait()
                    .await
                    .map_err(|e| format!("agent command {:?}: {e}", argv[0]))?;
                if !status.success() {
                    return Err(format!("agent command {:?} failed with {status}", argv[0]));
                }
                Ok(out)
            }
        }
    };
    let out = tokio::time::timeout(timeout, work).await.map_err(|_| {
        format!(
            "agent source {} timed out after {}s",
            source.describe(),
            timeout.as_secs()
        )
    })??;
    if out.len() > limit {
        return Err(format!("agent output exceeds {limit} bytes"));
    }
    if out.is_empty() {
        return Err(format!(
            "agent source {} returned no output",
            source.describe()
        ));
    }
    Ok(out)
}

/// Blocking wrapper for CLI commands.
pub fn read_output_blocking(
    source: &Source,
    timeout: Duration,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(read_output(source, None, timeout, limit))
}
