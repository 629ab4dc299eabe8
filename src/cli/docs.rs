//! Shell completions and man pages, generated from the clap definitions of both CLIs
//! (the hidden `completions` and `man` subcommands; `packaging/build.sh` ships their output).
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

/// The shells the packages carry completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Writes the completion script of `cmd` for `shell` to `out`. Generated into memory first:
/// clap_complete panics on a failed write, and a closed pipe is an error to report instead.
pub fn write_completions(
    mut cmd: clap::Command,
    shell: Shell,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell.generator(), &mut cmd, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Writes `NAME.1` and one `NAME-SUBCOMMAND.1` per visible subcommand (recursively, as git
/// names its pages) into `dir`; returns the files written, sorted.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)?;
    let mut written: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    written.sort();
    Ok(written)
}
