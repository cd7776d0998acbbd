//! plutus-sync: moves order files from the web shop's outbox to the ERP's inbox over
//! SFTP, verified and journaled. The journal and state machine live in `plutus-state`.
//!
//! - `cli`: clap definitions; parses only.
//! - `config`: TOML → validated `Settings`.
//! - `shutdown`: SIGTERM/SIGINT → one cancellation token.
//! - `watch`: inotify events → candidate paths.
//! - `sweep`: periodic outbox scan → candidate paths.
//! - `intake`: name rules, settle, one read for CRC32 + JSON → journal entry.
//! - `pipeline`: per-file steps pending → sent → verified → archived.
//! - `transfer`: the Transport trait and protocol; `sftp` (ssh2) and `local` (file://).
//! - `archive`: the dated local archive.
//! - `retry`: backoff schedule and the destination gate.
//! - `service`: wires the tasks for `run` and `sync`.
//! - `commands`: the subcommands.

pub mod archive;
pub mod cli;
pub mod commands;
pub mod config;
pub mod intake;
pub mod pipeline;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod sweep;
pub mod transfer;
pub mod watch;
