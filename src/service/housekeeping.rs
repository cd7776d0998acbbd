//! What keeps a long-running service healthy: the systemd watchdog and journal pruning.

use super::Shared;
use plutus_state::{now_ms, JournalError};
use std::sync::Arc;
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

/// Keep the journal bounded: archived entries older than `retention` go every
/// `housekeeping_interval` (default five minutes: a few at a time, so the size stays
/// flat rather than saw-toothing), the windows' time keys older than two days, and
/// the space sled does not reuse is given back by a compaction when it is due.
pub(super) async fn prune_task(shared: Arc<Shared>) {
    let journal = shared.ctx.settings.journal.clone();
    let mut reference = {
        let path = journal.path.clone();
        tokio::task::spawn_blocking(move || crate::operator::compact::du(&path))
            .await
            .unwrap_or(0)
    };
    loop {
        let (j, retention) = (shared.ctx.journal.clone(), journal.retention);
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
        let j = shared.ctx.journal.clone();
        let growth = journal.compact_after_growth;
        let r = tokio::task::spawn_blocking(move || {
            let size = crate::operator::compact::du(j.path());
            if !crate::operator::compact::due(size, reference, growth) {
                return Ok(None);
            }
            crate::operator::compact::in_place(&j).map(Some)
        })
        .await;
        match r {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(c))) => {
                reference = c.bytes_after;
                info!(
                    entries = c.entries,
                    before_mb = format_args!("{:.1}", c.bytes_before as f64 / 1e6),
                    after_mb = format_args!("{:.1}", c.bytes_after as f64 / 1e6),
                    writes_paused_ms = c.paused_ms,
                    took_ms = c.took_ms,
                    "compacted the journal"
                );
            }
            // Tried again at the next round: the journal itself is untouched.
            Ok(Err(e)) => warn!("{e:#}"),
            Err(e) => warn!("compaction task failed: {e}"),
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(journal.housekeeping_interval) => {}
        }
    }
}
