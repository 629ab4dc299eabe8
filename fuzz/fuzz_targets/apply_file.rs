//! `tether-receiver apply FILE`: YAML or JSON, parsed and then converged into a site
//! database inside a transaction that is rolled back after every input.
//!
//! Input: first byte odd = JSON, even = YAML; the rest is the file.
#![no_main]

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use tether::receiver::store::{Connection, Location};
use tether::receiver::{admin, apply};

const SECRET_ENV: &str = "TETHER_FUZZ_TOKEN_SECRET";

fn db() -> &'static Mutex<Connection> {
    static DB: OnceLock<Mutex<Connection>> = OnceLock::new();
    DB.get_or_init(|| {
        std::env::set_var(SECRET_ENV, "fuzz-secret");
        // ":memory:" is SQLite's private in-memory database.
        let c = Connection::open(&Location::Sqlite(":memory:".into())).expect("in-memory database");
        admin::init_db(&c, "fuzz", 86400).expect("schema");
        Mutex::new(c)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(mut file) = apply::parse_str(text, mode & 1 == 1) else {
        return;
    };
    // Secrets come from files and the environment: read none here, and never hash a
    // password with argon2 per input (tens of ms each).
    for u in &mut file.users {
        u.password_file = None;
        u.password_env = None;
    }
    for t in &mut file.tokens {
        if t.secret_file.take().is_some() || t.secret_env.is_some() {
            t.secret_env = Some(SECRET_ENV.to_string());
        }
    }
    let Ok(c) = db().lock() else {
        return;
    };
    if c.begin_write().is_err() {
        return;
    }
    let _ = apply::converge(&c, &file, Path::new("/nonexistent"));
    let _ = c.execute_batch("ROLLBACK");
});
