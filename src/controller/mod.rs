//! The agent side: registry, registration flows, trust, and the daemon (pull server, push,
//! renewal). Depends on `wire`, never on `receiver`.
pub mod agent_source;
pub mod bundle;
pub mod client;
pub mod config;
pub mod daemon;
pub mod enroll;
pub mod keys;
pub mod lifecycle;
pub mod probe;
pub mod proxy;
pub mod pull_server;
pub mod push;
pub mod refusals;
pub mod register;
pub mod remote;
pub mod renew;
pub mod state;
pub mod trust;
