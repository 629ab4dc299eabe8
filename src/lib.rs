//! tether: agent enrollment and transport for Checkmk-style monitoring.
pub mod cli;
pub mod controller;
pub mod error;
pub mod receiver;
pub mod wire;
