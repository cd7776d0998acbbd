//! Where work comes from: the watch (kept alive across the outbox being re-created),
//! the sweep, and the intake loop that turns candidates into journal entries.

use super::Shared;
use crate::intake::{self, Found, Outcome};
use crate::sweep;
use crate::watch::{self, Candidate};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Keeps the watch alive across the outbox being deleted and created again (a restore
/// from backup, an operator's `rm -r`): the old watch dies with the folder.
pub(super) async fn watch_task(
    shared: Arc<Shared>,
    first: watch::Watch,
    tx: mpsc::Sender<Candidate>,
    sweep_now: Arc<Notify>,
    lost: Arc<Notify>,
) {
    let outbox = shared.ctx.settings.source.outbox.clone();
    let mut current = Some(first);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = lost.notified() => {}
        }
        drop(current.take());
        loop {
            if outbox.is_dir() {
                match watch::start(
                    &outbox,
                    tx.clone(),
                    sweep_now.clone(),
                    lost.clone(),
                    shared.writers.clone(),
                ) {
                    Ok(w) => {
                        current = Some(w);
                        // Marks of the old watch would never see their closes.
                        shared.writers.forget_all();
                        info!("watching the outbox again: {}", outbox.display());
                        sweep_now.notify_one();
                        break;
                    }
                    Err(e) => warn!("{e}; trying again"),
                }
            }
            tokio::select! {
                _ = shared.cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

pub(super) async fn sweep_task(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Candidate>,
    sweep_now: Arc<Notify>,
) {
    let s = shared.ctx.settings.clone();
    loop {
        let (j, st) = (shared.ctx.journal.clone(), s.clone());
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || sweep::scan(&j, &st)).await {
            Ok(Ok(paths)) => {
                debug!(
                    found = paths.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "sweep"
                );
                for path in paths {
                    tokio::select! {
                        _ = shared.cancel.cancelled() => return,
                        r = tx.send(Candidate { path, found: Found::Sweep }) => if r.is_err() { return },
                    }
                }
            }
            Ok(Err(e)) => warn!(
                "{}: cannot sweep the outbox: {e}",
                s.source.outbox.display()
            ),
            Err(e) => warn!("sweep task failed: {e}"),
        }
        if !shared.mode.repeats() {
            return;
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(s.source.sweep_interval) => {}
            _ = sweep_now.notified() => {}
        }
    }
}

pub(super) async fn intake_task(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Candidate>,
    retry_tx: Option<mpsc::Sender<Candidate>>,
) {
    let waiting: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
    // Once mode: files not yet settled are looked at again after the channel drains.
    let mut deferred: Vec<(Instant, PathBuf, u32)> = Vec::new();
    loop {
        let c = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            c = rx.recv() => c,
        };
        let c = match c {
            Some(c) => c,
            None => {
                let Some(pos) = (0..deferred.len()).min_by_key(|&i| deferred[i].0) else {
                    return;
                };
                let (at, path, tries) = deferred.swap_remove(pos);
                tokio::time::sleep_until(at).await;
                if tries >= 3 {
                    warn!(file = %crate::intake::shown(&path.display().to_string()), "still being written after {tries} waits; left for the next run");
                    continue;
                }
                take(
                    &shared,
                    Candidate {
                        path,
                        found: Found::Sweep,
                    },
                    tries,
                    &mut deferred,
                    &waiting,
                    retry_tx.as_ref(),
                )
                .await;
                continue;
            }
        };
        // A file already waiting for a second look is not looked at twice; one that is
        // gone is (an `invalid` entry's file removed by its writer: dropped now).
        if c.found == Found::Sweep
            && waiting.lock().unwrap().contains(&c.path)
            && std::fs::symlink_metadata(&c.path).is_ok()
        {
            continue;
        }
        take(&shared, c, 0, &mut deferred, &waiting, retry_tx.as_ref()).await;
    }
}

async fn take(
    shared: &Arc<Shared>,
    c: Candidate,
    tries: u32,
    deferred: &mut Vec<(Instant, PathBuf, u32)>,
    waiting: &Arc<Mutex<HashSet<PathBuf>>>,
    retry_tx: Option<&mpsc::Sender<Candidate>>,
) {
    let ctx = shared.ctx.clone();
    let path = c.path.clone();
    let writers = shared.writers.clone();
    let out = tokio::task::spawn_blocking(move || {
        let writing = || c.path.file_name().is_some_and(|n| writers.is_writing(n));
        intake::take(&ctx.journal, &ctx.settings, &c.path, c.found, writing)
    })
    .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            warn!("intake task failed: {e}");
            return;
        }
    };
    // Look at `path` again after `d`: the service waits; `sync` takes up to three
    // short waits for a file still settling, then leaves it for the next run.
    let look_again = |d: Duration, deferred: &mut Vec<(Instant, PathBuf, u32)>| match retry_tx {
        Some(tx) => {
            if waiting.lock().unwrap().insert(path.clone()) {
                let (tx, waiting, cancel, path) = (
                    tx.clone(),
                    waiting.clone(),
                    shared.cancel.clone(),
                    path.clone(),
                );
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(d) => {
                            waiting.lock().unwrap().remove(&path);
                            let _ = tx.send(Candidate { path, found: Found::Sweep }).await;
                        }
                    }
                });
            }
        }
        None => deferred.push((Instant::now() + d, path.clone(), tries + 1)),
    };
    match out {
        Ok(Outcome::Pending(rec)) => {
            let was = if rec.history.len() > 1 {
                " (was invalid; its writer finished it)"
            } else {
                ""
            };
            info!(file = %crate::intake::shown(&rec.name), batch = %rec.batch, state = %rec.state(), size = rec.size, crc32 = %rec.crc_hex(), found_by = %rec.found_by, "detected{was}");
            shared.touched(rec.id);
            shared.queue.push(rec.id);
        }
        Ok(Outcome::Duplicate { record, of }) => {
            warn!(file = %crate::intake::shown(&record.name), batch = %record.batch, state = %record.state(), "duplicate of #{of}, which was delivered with the same size and CRC32: archiving without sending");
            shared.touched(record.id);
            shared.queue.push(record.id);
        }
        Ok(Outcome::Quarantined(rec)) => {
            shared.ctx.metrics.quarantined.inc();
            warn!(
                file = %crate::intake::shown(&rec.name), batch = %rec.batch, state = %rec.state(),
                "{}: quarantined to {}",
                rec.last_error.as_deref().unwrap_or("invalid"),
                crate::intake::shown(rec.quarantine_path.as_deref().unwrap_or("?"))
            );
            shared.touched(rec.id);
        }
        Ok(Outcome::Invalid { record, recheck_in }) => {
            // Logged once, here; the looks after this one are silent until it moves on.
            warn!(
                file = %crate::intake::shown(&record.name), batch = %record.batch, state = %record.state(),
                "{}: not a valid order; left in the outbox, never sent. Looked at again on every change: delivered if it becomes valid, quarantined once unchanged for {}",
                record.last_error.as_deref().unwrap_or("invalid"),
                humantime::format_duration(shared.ctx.settings.source.quarantine_after)
            );
            shared.touched(record.id);
            if shared.mode.looks_again_later() {
                look_again(recheck_in, deferred);
            }
        }
        Ok(Outcome::StillInvalid { id, recheck_in }) => {
            shared.touched(id);
            if shared.mode.looks_again_later() {
                look_again(recheck_in, deferred);
            }
        }
        Ok(Outcome::Withdrawn {
            record,
            why,
            dropped: true,
        }) => {
            info!(file = %crate::intake::shown(&record.name), "{why}: it left the outbox before it became a valid order; entry #{} dropped", record.id);
        }
        Ok(Outcome::Withdrawn { record, .. }) => {
            shared.touched(record.id);
            warn!(file = %crate::intake::shown(&record.name), state = %record.state(), "{}", record.last_error.as_deref().unwrap_or("withdrawn"));
        }
        Ok(Outcome::Wait(d)) => look_again(d, deferred),
        Ok(Outcome::Skip(why)) => {
            debug!(file = %crate::intake::shown(&path.display().to_string()), "skipped: {why}")
        }
        Err(intake::IntakeError::Journal(e)) => shared.fatal(e),
        Err(e) => warn!("{e}; the next sweep will try again"),
    }
}
