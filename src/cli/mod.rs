//! Both command-line interfaces: argument parsing, JSON/text rendering, error codes → exit codes.
pub mod agent;
pub mod docs;
pub mod error;
pub mod output;
pub mod receiver;
pub mod schemas;
