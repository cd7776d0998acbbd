//! The single integration-test binary: one module per concern, each a file beside
//! this one. The fixtures they share (sshd, spool, service, ERP, relay) are the
//! `plutus-testkit` crate in `testkit/`, which the benches use too.

// The hostile-outbox and fault tests make FIFOs and device nodes (mkfifo, mknod), hold
// flock and stop processes (SIGSTOP) through libc: the workspace denies `unsafe`,
// these tests may.
#![allow(unsafe_code)]

mod fixture_erp_relay;
mod fixture_sftp_wrapper;
mod fixture_tests;

mod cli;
mod cron;
mod delivery;
mod failover;
mod observability;
mod operator;
mod operator_kit;
mod packaging;
mod privilege;
mod recovery;
mod servers;
mod ssh_policy;
mod torture;
mod windows_target;
mod writers;
