//! tether-receiver: the site side. Speaks the Checkmk agent-receiver API (spec §1, §2, §5),
//! keeps hosts, users and registrations in SQLite, and pulls agents like Checkmk's fetcher.
//! Depends only on `wire`, never on the agent side.
pub mod admin;
pub mod admin_client;
pub mod admission;
pub mod api;
pub mod apply;
pub mod approvals;
pub mod auth;
pub mod ca;
pub mod console;
pub mod fetch;
pub mod handoff;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod migrate;
pub mod perms;
pub mod registrations;
pub mod retention;
pub mod schedule;
pub mod server;
pub mod store;
pub mod visibility;
