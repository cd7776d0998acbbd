//! The worker threads (one connection each) and the archiver that batches their
//! verified files; the inbox clean-up and the destination gate's reports.

use super::Shared;
use crate::pipeline::{self, Slot, Step};
use crate::retry::Down;
use crate::transfer::TransferError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// One worker per connection, on a thread of its own for the whole run: a file's
/// steps all block (ssh2, sled, file reads), and handing each one to tokio's blocking
/// pool and back cost more CPU than the steps themselves in the burst benchmark. The
/// waits (queue, destination gate) go through the runtime's handle.
pub(super) fn worker(
    n: usize,
    shared: Arc<Shared>,
    archive: mpsc::UnboundedSender<ToArchive>,
    rt: tokio::runtime::Handle,
) {
    let ctx = shared.ctx.clone();
    let window = ctx.settings.destination.window.max(1);
    let workers = ctx.settings.destination.connections.max(1);
    let mut slot = Slot::default();
    let mut last_used = Instant::now();
    // In the service, worker 0 cleans the inbox at once, so a crash's temp files do not
    // wait for the next order, and every worker connects before the first file arrives.
    // If the destination is down, the first delivery does both.
    if shared.mode.connects_early() {
        if let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) {
            let r = if n == 0 {
                clean_once(&shared, &mut slot)
            } else {
                slot.connect(&ctx)
            };
            if let Err(e) = r {
                destination_down(&shared, epoch, e);
            }
        }
    }
    // Worker 0 of the service also cleans the inbox when it sits idle, so a leftover
    // a server would not let go of is removed once it can be, not at the next order.
    let idle_clean = shared.mode.connects_early() && n == 0;
    loop {
        let popped = rt.block_on(async {
            if idle_clean {
                tokio::time::timeout(
                    shared.ctx.settings.source.sweep_interval,
                    shared.queue.pop(&shared.cancel),
                )
                .await
            } else {
                Ok(shared.queue.pop(&shared.cancel).await)
            }
        });
        let first = match popped {
            Ok(Some(id)) => id,
            Ok(None) => break,
            Err(_idle) => {
                if let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) {
                    // A connection that sat idle may have died quietly (a NAT, the
                    // server's idle limit): a fresh one, not a false outage.
                    slot.refresh();
                    if let Err(e) = clean_once(&shared, &mut slot) {
                        destination_down(&shared, epoch, e);
                    }
                }
                continue;
            }
        };
        // The rest of the batch: whatever else is ready now, never a wait for more (a
        // lone order goes at once), up to the window and this worker's share of
        // what is ready, so the other connections get theirs.
        let mut ids = vec![first];
        ids.extend(shared.queue.pop_ready(window - 1, workers));
        let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) else {
            break;
        };
        // A connection that sat idle is pinged (and replaced if dead) before anything
        // uses it, the clean-up included.
        if last_used.elapsed() > Duration::from_secs(15) {
            slot.refresh();
        }

        if let Err(e) = clean_once(&shared, &mut slot) {
            let wait = destination_down(&shared, epoch, e);
            // Back to the front in their order.
            for &id in ids.iter().rev() {
                if wait {
                    shared.queue.requeue(id);
                } else {
                    shared.queue.done(id);
                }
            }
            continue;
        }

        let steps = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pipeline::process_batch(&ctx, &mut slot, &ids)
        }));
        last_used = Instant::now();
        let steps = match steps {
            Ok(Ok(steps)) => steps,
            Ok(Err(e)) => {
                for &id in &ids {
                    shared.queue.done(id);
                }
                shared.fatal(e);
                continue;
            }
            Err(_) => {
                error!(worker = n, ids = ids.len(), "worker step panicked");
                slot = Slot::default();
                // Not dropped: the entries are still live in the journal, and only the
                // queue brings them back before the next restart.
                for &id in &ids {
                    settle(&shared, id, pipeline::retry_later(&shared.ctx));
                }
                continue;
            }
        };
        // One step per entry; an entry without one would stay queued for ever (and a
        // pass never end): it comes back later instead.
        debug_assert_eq!(steps.len(), ids.len(), "one step per entry");
        for &id in &ids {
            if !steps.iter().any(|(s, _)| *s == id) {
                error!(
                    worker = n,
                    id, "no step for an entry of the batch; trying it again later"
                );
                settle(&shared, id, pipeline::retry_later(&shared.ctx));
            }
        }
        let mut wait_again = Vec::new();
        // One report per batch: the first error is the destination's; the others
        // say the same thing again.
        let mut down: Option<bool> = None;
        for (id, step) in steps {
            match step {
                Step::DestinationDown(e) => {
                    let wait = *down.get_or_insert_with(|| destination_down(&shared, epoch, e));
                    if wait {
                        wait_again.push(id);
                    } else {
                        shared.queue.done(id);
                    }
                }
                step => {
                    if slot.is_connected() && matches!(step, Step::Done | Step::Verified(_)) {
                        destination_up(&shared);
                    }
                    if let Step::Verified(sent_as) = step {
                        // Still queued until the archiver is done with it, so nothing
                        // else picks the entry up meanwhile.
                        if archive.send((id, sent_as)).is_err() {
                            shared.queue.done(id);
                        }
                    } else {
                        settle(&shared, id, step);
                    }
                }
            }
        }
        // Back to the front in the order they were taken: they keep their turn.
        wait_again.sort_by_key(|id| ids.iter().position(|i| i == id));
        for id in wait_again.into_iter().rev() {
            shared.queue.requeue(id);
        }
    }
}

/// After a step that needs nothing more from a worker: done, or back in the queue later.
fn settle(shared: &Shared, id: u64, step: Step) {
    match step {
        Step::Rescan => {
            shared.queue.done(id);
            shared.sweep_now.notify_one();
        }
        Step::RetryAt(at) if shared.mode.waits_for_retries() => {
            shared.queue.requeue_at(id, at, &shared.cancel);
        }
        _ => shared.queue.done(id),
    }
}

pub(super) type ToArchive = (u64, Option<crate::archive::LocalId>);

/// Archives what the workers verified, in batches: everything that arrived while the
/// last batch was being archived shares one journal flush and one fsync per folder.
/// Ends when every worker has ended (their senders dropped) and the channel is empty.
pub(super) async fn archiver(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<ToArchive>) {
    const MAX_BATCH: usize = 512;
    // How long the first file of a batch waits for others: the flush and the folder
    // fsyncs cost the same for one file or a hundred (see `Mode::archive_window`).
    let window = shared.mode.archive_window();
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() < MAX_BATCH {
            let _ = tokio::time::timeout(window, async {
                while batch.len() < MAX_BATCH {
                    let room = MAX_BATCH - batch.len();
                    if rx.recv_many(&mut batch, room).await == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        let ctx = shared.ctx.clone();
        let work = std::mem::take(&mut batch);
        let ids: Vec<u64> = work.iter().map(|&(id, _)| id).collect();
        let joined =
            tokio::task::spawn_blocking(move || pipeline::archive_batch(&ctx, &work)).await;
        match joined {
            Ok(Ok(steps)) => {
                for (id, step) in steps {
                    settle(&shared, id, step);
                }
            }
            Ok(Err(e)) => {
                for id in ids {
                    shared.queue.done(id);
                }
                shared.fatal(e);
            }
            Err(e) => {
                error!("archive step panicked: {e}");
                for id in ids {
                    settle(&shared, id, pipeline::retry_later(&shared.ctx));
                }
            }
        }
    }
}

/// Remove temp files nobody needs from the inbox (a crash's, a dropped connection's):
/// at start, before any upload, and again every sweep interval, since a temp that a
/// dropped session still held open (Win32-OpenSSH) may only be removable later.
pub(super) fn clean_once(shared: &Shared, slot: &mut Slot) -> Result<(), TransferError> {
    // The first clean-up is waited for by every worker; a later one by nobody (another
    // worker doing it is as good).
    let mut last = match shared.cleaned.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) if shared.cleaned_once.load(Ordering::Acquire) => {
            return Ok(());
        }
        Err(std::sync::TryLockError::WouldBlock) => {
            shared.cleaned.lock().unwrap_or_else(|p| p.into_inner())
        }
    };
    if last.is_some_and(|at| at.elapsed() < shared.ctx.settings.source.sweep_interval) {
        return Ok(());
    }
    let removed = slot.clean_temps(&shared.ctx)?;
    *last = Some(Instant::now());
    shared.cleaned_once.store(true, Ordering::Release);
    if !removed.is_empty() {
        info!(
            count = removed.len(),
            "removed temp files no delivery needs from the inbox: {}",
            removed.join(", ")
        );
    }
    Ok(())
}

fn destination_up(shared: &Shared) {
    if let Some(failures) = shared.gate.report_up() {
        info!(
            failed_probes = failures,
            "destination {} is reachable again",
            shared.ctx.transport.describe()
        );
    }
}

/// Returns whether the entry should wait in the queue (the service pauses) or not
/// (a pass ends here).
fn destination_down(shared: &Shared, epoch: u64, e: TransferError) -> bool {
    let msg = e.to_string();
    if !shared.mode.pauses_when_down() {
        let mut d = shared.destination_error.lock().unwrap();
        if d.is_none() {
            error!("{msg}");
            *d = Some(msg);
        }
        shared.cancel.cancel();
        return false;
    }
    match shared.gate.report_down(epoch, &msg) {
        Down::Paused { failures, retry_in } => {
            let retry_in =
                humantime::format_duration(Duration::from_secs(retry_in.as_secs().max(1)));
            let queued = shared.queue.depth();
            if matches!(
                e,
                TransferError::HostKey { .. }
                    | TransferError::Auth { .. }
                    | TransferError::Algorithms { .. }
            ) {
                error!(
                    failures,
                    queued, "{msg}\n  destination paused; next try in {retry_in}"
                );
            } else {
                warn!(
                    failures,
                    queued, "destination down: {msg}; next try in {retry_in}"
                );
            }
        }
        Down::AlreadyPaused => debug!("destination down (already paused): {msg}"),
    }
    true
}
