//! The daemon's `tether.toml`, parsed and validated, then turned into what the daemon
//! builds from it: the pull server's shared state, its drain deadline, the agent source and
//! the waits of the push loop.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tether::controller::agent_source::Source;
use tether::controller::config::Config;
use tether::controller::daemon::{self, HealthRecorder};
use tether::controller::pull_server::{self, Shared};
use tether::controller::state::Registry;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = Config::parse_str(text) else {
        return;
    };
    assert!(cfg.allowed_nets().is_ok());
    let s = Source::from_config(&cfg.agent);
    let _ = (s.kind(), s.describe());
    for failures in [0, 1, 2, 16, 17, u32::MAX] {
        let _ = daemon::push_wait(&cfg.push, failures);
    }
    let phase = Duration::from_secs(cfg.pull.phase_timeout_secs);
    // The home is only written when health changes, which nothing here does.
    let health = Arc::new(HealthRecorder::new("/nonexistent".into()));
    let shared = Shared::new(pull_server::build_state(&Registry::default()), cfg, health)
        .expect("a valid configuration builds the pull server");
    assert!(rt().block_on(shared.drain(phase)));
});
