//! `plutus-sync sync`: one pass, for cron; what `packaging/cron/sync_plutus.sh` runs.

use crate::config::Settings;
use crate::operator::socket::{self, ControlError};
use crate::operator::{Answer, Request};
use crate::service::{self, Mode};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// `sync` refused because the service runs on the same config. Its own exit code (3),
/// so a cron wrapper can tell "misconfigured: both cron and the service" from an error.
#[derive(Debug, thiserror::Error)]
#[error("the service is running (pid {pid}, control socket {socket}) on the journal {journal}; `sync` is for hosts without the service\n  hint: the service delivers everything itself: remove the cron line, or stop and disable the service (systemctl disable --now plutus-sync) to use cron instead")]
pub struct ServiceRunning {
    pub pid: u32,
    pub socket: PathBuf,
    pub journal: PathBuf,
}

/// Returns whether everything found was archived.
pub async fn run(settings: Settings) -> anyhow::Result<bool> {
    // The journal's lock would refuse this pass anyway, but only as "in use by another
    // process". Asking the control socket first names the service: it answers only
    // while `run` serves this config (a `sync` never binds it). Any other holder of the
    // journal (another `sync`, a service with another socket) still meets the lock.
    if let Ok(Answer::Pong { pid }) = ping(&settings) {
        return Err(ServiceRunning {
            pid,
            socket: settings.control.socket.clone(),
            journal: settings.journal.path.clone(),
        }
        .into());
    }
    let cancel = CancellationToken::new();
    crate::shutdown::on_signal(cancel.clone())?;
    let s = service::run(settings, Mode::Once, cancel).await?;
    let mut line = format!(
        "sync: {} found, {} archived, {} quarantined, {} invalid (left in the outbox), {} failed, {} not finished",
        s.found, s.archived, s.quarantined, s.invalid, s.failed, s.unfinished
    );
    if let Some(e) = &s.destination_error {
        line.push_str(&format!(
            "; destination: {}",
            e.lines().next().unwrap_or("")
        ));
    }
    println!("{line}");
    Ok(s.all_archived())
}

/// A blocking connect and one short line each way: a local socket, no runtime needed.
fn ping(s: &Settings) -> Result<Answer, ControlError> {
    socket::request(&s.control.socket, &Request::Ping)
}
