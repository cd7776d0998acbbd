//! The single integration-test binary. Test modules live under `tests/it/`
//! and shared helpers under `tests/support/`; neither directory has a
//! `main.rs`, so cargo does not build them as binaries of their own.

mod support;

#[path = "it/fixture_erp_relay.rs"]
mod fixture_erp_relay;
#[path = "it/fixture_sftp_wrapper.rs"]
mod fixture_sftp_wrapper;
#[path = "it/fixture_tests.rs"]
mod fixture_tests;

#[path = "it/cli.rs"]
mod cli;
#[path = "it/delivery.rs"]
mod delivery;
#[path = "it/observability.rs"]
mod observability;
#[path = "it/operator.rs"]
mod operator;
#[path = "it/packaging.rs"]
mod packaging;
#[path = "it/recovery.rs"]
mod recovery;
#[path = "it/servers.rs"]
mod servers;
#[path = "it/torture.rs"]
mod torture;
#[path = "it/writers.rs"]
mod writers;
