//! Database helpers shared by the commands: open, read, one write transaction.
use std::path::Path;

use rusqlite::Connection;

use super::output::ChangeOut;
use crate::cli::error::{CliError, CliResult};
use crate::receiver::store;

pub fn open_db(dir: &Path) -> CliResult<Connection> {
    let p = store::db_path(dir);
    if !p.exists() {
        return Err(
            CliError::local_state(format!("no database at {}", p.display()))
                .hint("run tether-receiver init --dir DIR --site SITE first"),
        );
    }
    let c = store::open(&p)
        .map_err(|e| CliError::local_state(format!("cannot open {}: {e}", p.display())))?;
    store::migrate(&c)?;
    Ok(c)
}

/// Runs `f` in one write transaction: all or nothing.
pub fn tx<R>(dir: &Path, f: impl FnOnce(&Connection) -> CliResult<R>) -> CliResult<R> {
    let mut c = open_db(dir)?;
    store::with_tx(&mut c, f)
}

pub fn read<R>(dir: &Path, f: impl FnOnce(&Connection) -> CliResult<R>) -> CliResult<R> {
    let c = open_db(dir)?;
    f(&c)
}

pub(super) fn change(changed: bool, kind: &str, name: &str, action: &str) -> ChangeOut {
    ChangeOut {
        ok: true,
        changed,
        kind: kind.into(),
        name: name.into(),
        action: action.into(),
        revoked: Vec::new(),
    }
}
