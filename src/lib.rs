//! plutus-sync: moves order files from the web shop's outbox to the ERP's inbox over
//! SFTP, verified and journaled. The journal and state machine live in `plutus-state`.
//!
//! Where things happen, in three groups.
//!
//! **A file's life** (the stages, in order):
//! - `watch`: inotify events → candidate paths; which files may be open for writing.
//! - `sweep`: periodic outbox scan → candidate paths (the source of truth).
//! - `intake`: name rules, settle, one read for CRC32 + JSON → journal entry
//!   (`pending`, `invalid` while its writer may be at it, `quarantined`).
//! - `pipeline`: per-file steps pending → sent → verified → archived, and recovery.
//! - `transfer`: the Transport trait and the delivery protocol; `sftp` (ssh2 for
//!   SSH, `sftp_proto` for SFTP) and `local` (file://). Knows nothing of the journal.
//! - `archive`: the dated local archive (moves that never replace a file).
//! - `retry`: backoff schedule and the destination gate.
//! - `untrusted`: the one safe way to open an outbox file (no link followed, no
//!   device or FIFO opened), below every stage that reads one.
//!
//! **The service** (`run` and `sync`):
//! - `service`: wires the stages around one journal: `policy` (what `run` and `sync`
//!   differ in), `queue`, `source` (watch, sweep and intake loops), `workers`
//!   (connection threads, archiver, inbox clean-up), `housekeeping` (watchdog,
//!   pruning), `handler` (control answers only the service knows).
//! - `shutdown`: SIGTERM/SIGINT → one cancellation token; systemd notifications.
//! - `metrics`: Prometheus counters, histograms and gauges, and their endpoint
//!   (loopback unless allowed, a bounded number of scrapes at once).
//!
//! **The operator side**:
//! - `operator`: what operators ask (`queries`: list, show, stats, export;
//!   `replay`), the typed `protocol` of the control socket, the `socket` itself and
//!   `access` (who may ask what, from the peer's credentials); `ask` goes to the
//!   running service, or to the journal on disk when it is down.
//! - `cli`: clap definitions; parses only. `commands`: the subcommands (arguments →
//!   call → print).
//! - `config`: TOML → validated `Settings`.

// Syscalls std lacks go through rustix's safe wrappers: no `unsafe` here.
#![forbid(unsafe_code)]

pub mod archive;
pub mod cli;
pub mod commands;
pub mod config;
pub mod intake;
pub mod metrics;
pub mod operator;
pub mod pipeline;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod sweep;
pub mod transfer;
pub mod untrusted;
pub mod watch;
