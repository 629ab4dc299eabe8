//! How the controller trusts a receiver: shared with the site's remote admin client, so it
//! lives in `wire`.
pub use crate::wire::trust::*;
