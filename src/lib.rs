//! plutus-sync: moves order files from the web shop's outbox to the ERP's inbox over
//! SFTP, verified and journaled. The journal and state machine live in `plutus-state`.
//!
//! - `cli`: clap definitions; parses only.
//! - `config`: TOML → validated `Settings`.
//! - `shutdown`: SIGTERM/SIGINT → one cancellation token.
//! - `control`: the control socket (JSON lines) the CLI uses while the service runs.
//! - `watch`: inotify events → candidate paths.
//! - `sweep`: periodic outbox scan → candidate paths.
//! - `intake`: name rules, settle, one read for CRC32 + JSON → journal entry.
//! - `journal`: operator queries and replay, shared by the CLI and the control socket.
//! - `pipeline`: per-file steps pending → sent → verified → archived.
//! - `metrics`: Prometheus counters, histograms and gauges, and their endpoint.
//! - `transfer`: the Transport trait and protocol; `sftp` (ssh2) and `local` (file://).
//! - `archive`: the dated local archive.
//! - `retry`: backoff schedule and the destination gate.
//! - `service`: wires the tasks for `run` and `sync`.
//! - `commands`: the subcommands.

pub mod archive;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod intake;
pub mod journal;
pub mod metrics;
pub mod pipeline;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod sweep;
pub mod transfer;
pub mod watch;
