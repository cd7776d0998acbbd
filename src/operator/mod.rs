//! The operator side: what `journal`, `replay` and `rebuild` ask, and how the answer
//! is found. The running service holds sled's lock, so a question goes to it over
//! the control socket; when it is not running, the CLI opens the journal and runs the
//! same code. Either way the answer is the same.
//!
//! - `protocol`: the typed requests and answers both ends share.
//! - `socket`: the control socket: framing, limits per uid.
//! - `access`: who may ask what (root, operators, the service's user, others).
//! - `queries`: list, show, stats, export.
//! - `replay`: failed (and named quarantined, or forced archived) files back to work.
//! - `rebuild`: a lost journal rebuilt from the archive, quarantine, outbox and inbox.
//! - `forget`: a failed entry whose local copy is gone, closed with who and why.

pub mod access;
pub mod compact;
pub mod forget;
pub mod protocol;
pub mod queries;
pub mod rebuild;
pub mod replay;
pub mod socket;

pub use protocol::{Answer, Request};

use crate::config::Settings;
use anyhow::Context;
use plutus_state::{Journal, JournalOptions};
use socket::ControlError;

/// Answer a request from the journal alone: what the CLI does when the service is
/// down, and what the service does before adding what only it knows. `by` is who
/// asked, journaled with a replay.
pub fn answer(
    j: &Journal,
    s: &Settings,
    req: &Request,
    by: &plutus_state::Caller,
) -> Result<Answer, String> {
    let a = match req {
        Request::Ping => Ok(Answer::Pong {
            pid: std::process::id(),
        }),
        Request::List { filter } => queries::list(j, filter).map(Answer::List),
        Request::Show { key } => queries::show(j, key).map(Answer::Show),
        Request::Stats => queries::stats(j).map(Answer::Stats),
        Request::Export { since_ms } => queries::export(j, *since_ms).map(Answer::Export),
        Request::Replay {
            selector,
            dry_run,
            force,
            to,
        } => replay::replay(
            j,
            s,
            selector,
            &replay::How {
                dry_run: *dry_run,
                force: *force,
                to: *to,
            },
            by,
        )
        .map(Answer::Replay),
        Request::Forget {
            key,
            reason,
            dry_run,
        } => forget::forget(j, s, key, reason, &by.to_string(), *dry_run).map(Answer::Forget),
    };
    a.map_err(|e| e.to_string())
}

/// Ask the running service; when it is not running, answer from the journal on disk
/// with the same code, so the output is the same either way.
pub(crate) fn ask(s: &Settings, req: &Request) -> anyhow::Result<Answer> {
    match socket::request(&s.control.socket, req) {
        Ok(a) => Ok(a),
        Err(ControlError::NotRunning { .. }) => {
            let j = open_stopped(s)?;
            answer(&j, s, req, &access::me()).map_err(anyhow::Error::msg)
        }
        Err(e) => Err(e.into()),
    }
}

/// An answer of the kind that was asked for; any other is a protocol error (a CLI
/// and a service of different versions).
pub fn expect<T>(
    a: Answer,
    want: &str,
    pick: impl FnOnce(Answer) -> Option<T>,
) -> anyhow::Result<T> {
    let got = format!("{a:?}");
    pick(a).with_context(|| {
        format!(
            "the service answered {} to a {want} request (a CLI and a service of different versions?)",
            got.split(['(', ' ', '{']).next().unwrap_or("?")
        )
    })
}

/// Open the journal of a service that is not running.
pub(crate) fn open_stopped(s: &Settings) -> anyhow::Result<Journal> {
    // An operator (plutus-sync-admin) asks the running service; the journal's folder
    // is the service's alone (0750), so without the service they cannot read it.
    if let Err(e) = s.journal.path.try_exists() {
        anyhow::bail!(
            "{}: cannot read the journal ({e}), and the service is not running (nobody answers on {})\n  hint: start the service, or run the command as the service's user: sudo -u plutus-sync plutus-sync …",
            s.journal.path.display(),
            s.control.socket.display()
        );
    }
    if !s.journal.path.exists() {
        anyhow::bail!(
            "{}: no journal here: the service has not run with this config ({})",
            s.journal.path.display(),
            s.origin
        );
    }
    Journal::open(&s.journal.path, &JournalOptions::default()).map_err(|e| match e {
        plutus_state::JournalError::Locked { path } => anyhow::anyhow!(
            "{}: the journal is locked, but nobody answers on the control socket {}\n  hint: is a `plutus-sync sync` running, or a service with another [control] socket?",
            path.display(),
            s.control.socket.display()
        ),
        e => e.into(),
    })
}
