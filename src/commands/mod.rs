//! The subcommands: wiring only.

pub mod check;
pub mod journal;
pub mod rebuild;
pub mod replay;
pub mod run;
pub mod sync;

use crate::cli::ConfigArgs;
use crate::config::{self, Settings};
use crate::control::{self, ControlError, Request};
use anyhow::Context;
use plutus_state::{Journal, JournalOptions};

/// Settings from `-c`, `$PLUTUS_SYNC_CONFIG`, the system path, or the embedded demo.
pub fn settings(args: &ConfigArgs) -> anyhow::Result<Settings> {
    if let Some(dir) = &args.demo {
        std::fs::create_dir_all(dir.join("inbox"))
            .with_context(|| format!("{}: cannot create the demo folder", dir.display()))?;
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("{}: cannot resolve the demo folder", dir.display()))?;
        return Ok(config::demo(&dir));
    }
    let path = config::locate(args.config.as_deref());
    Ok(config::load(&path)?)
}

/// Ask the running service; when it is not running, answer from the journal on disk
/// with the same code, so the output is the same either way.
pub fn ask(s: &Settings, req: &Request) -> anyhow::Result<serde_json::Value> {
    match control::request(&s.socket, req) {
        Ok(v) => Ok(v),
        Err(ControlError::NotRunning { .. }) => {
            let j = open_stopped(s)?;
            crate::journal::answer(&j, s, req).map_err(anyhow::Error::msg)
        }
        Err(e) => Err(e.into()),
    }
}

/// Open the journal of a service that is not running.
pub fn open_stopped(s: &Settings) -> anyhow::Result<Journal> {
    if !s.journal.exists() {
        anyhow::bail!(
            "{}: no journal here: the service has not run with this config ({})",
            s.journal.display(),
            s.origin
        );
    }
    Journal::open(&s.journal, &JournalOptions::default()).map_err(|e| match e {
        plutus_state::JournalError::Locked { path } => anyhow::anyhow!(
            "{}: the journal is locked, but nobody answers on the control socket {}\n  hint: is a `plutus-sync sync` running, or a service with another [control] socket?",
            path.display(),
            s.socket.display()
        ),
        e => e.into(),
    })
}
