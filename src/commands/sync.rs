//! `plutus-sync sync`: one pass, for cron; the drop-in replacement of `sync_plutus.sh`.

use crate::config::Settings;
use crate::service::{self, Mode};
use tokio_util::sync::CancellationToken;

/// Returns whether everything found was archived.
pub async fn run(settings: Settings) -> anyhow::Result<bool> {
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
