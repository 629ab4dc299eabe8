//! Helpers shared by the database commands.
use super::output::ChangeOut;
pub use crate::receiver::store::{open_db, read, tx};

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
