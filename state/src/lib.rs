//! The journal of plutus-sync and the state machine of an order file.
//!
//! This crate owns the sled database and the rules of how a file's state may change.
//! It knows nothing of SSH, inotify or the file system outside its own directory: the
//! binary wires it to those.
//!
//! - `machine`: the pure transition table, no I/O.
//! - `record`: the journal entry of one file and its history.
//! - `journal`: sled storage, one atomic operation per transition.
//! - `protocol`: the recovery decisions of the delivery protocol (pure; the model
//!   check calls them too).
//! - `keys`: key encoding and the on-disk schema version.

#![forbid(unsafe_code)]

pub mod journal;
pub mod keys;
pub mod machine;
pub mod protocol;
pub mod record;

pub use journal::{Compaction, Journal, JournalError, JournalOptions, SwapFailed, Windows};
pub use machine::{Caller, Event, IllegalTransition, State};
pub use record::{NewEntry, Record, Site, Transition};

/// Milliseconds since the Unix epoch: the one clock the journal stores, so an
/// operator can compare entries across restarts and machines.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
