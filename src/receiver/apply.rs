//! `apply FILE`: converge the database to a YAML or JSON description.
use std::path::Path;

use crate::cli::error::{CliError, CliResult};
use crate::cli::receiver::output::ApplyOut;

pub fn run(_dir: &Path, _file: &Path, _dry_run: bool) -> CliResult<ApplyOut> {
    Err(CliError::internal("apply is not implemented yet"))
}
