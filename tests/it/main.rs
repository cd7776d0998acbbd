//! The single integration-test binary: one module per concern, each a file beside
//! this one. Shared fixtures live in `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod fixture_erp_relay;
mod fixture_sftp_wrapper;
mod fixture_tests;

mod cli;
mod delivery;
mod observability;
mod operator;
mod packaging;
mod recovery;
mod servers;
mod torture;
mod writers;
