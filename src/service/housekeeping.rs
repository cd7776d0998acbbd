//! What keeps a long-running service healthy: the systemd watchdog and journal pruning.

use super::Shared;
use plutus_state::{now_ms, JournalError};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The service's main loop: wait for the signal, and while waiting prove to systemd's
/// watchdog that the runtime and the journal still answer. A wedged service stops
/// saying so, and systemd restarts it.
pub(super) async fn supervise(shared: &Arc<Shared>) {
    let Some(period) = crate::shutdown::watchdog_period() else {
        shared.cancel.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(period / 2) => {}
        }
        let j = shared.ctx.journal.clone();
        let alive = tokio::time::timeout(
            period / 2,
            tokio::task::spawn_blocking(move || j.counts().is_ok()),
        )
        .await;
        if matches!(alive, Ok(Ok(true))) {
            crate::shutdown::notify_watchdog();
        } else {
            warn!(
                "journal did not answer within {:?}; not petting the watchdog",
                period / 2
            );
        }
    }
}

/// How often pruning runs. Each run is cheap when nothing is due (it stops at the
/// first archived entry still within the retention).
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// Keep the journal bounded: archived entries older than `retention` go every five
/// minutes (a few at a time, so the size stays flat rather than saw-toothing), and
/// the windows' time keys older than two days.
pub(super) async fn prune_task(shared: Arc<Shared>) {
    loop {
        let (j, retention) = (
            shared.ctx.journal.clone(),
            shared.ctx.settings.journal.retention,
        );
        let r = tokio::task::spawn_blocking(move || {
            let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
            // The windows' time keys are only needed for two days, whatever the
            // retention of entries.
            j.prune_windows(now_ms())?;
            let mut total = 0;
            loop {
                let n = j.prune_archived(cutoff, 10_000)?;
                total += n;
                if n < 10_000 {
                    return Ok::<_, JournalError>(total);
                }
            }
        })
        .await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(
                entries = n,
                "pruned archived journal entries older than the retention"
            ),
            Ok(Err(e)) => warn!("cannot prune the journal: {e}"),
            Err(e) => warn!("prune task failed: {e}"),
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}
