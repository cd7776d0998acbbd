//! The worker threads (one connection each) and the archiver that batches their
//! verified files; the inbox clean-up and the destination gate's reports.

use super::{failover, Dest, Shared};
use crate::pipeline::{self, Slot, Step};
use crate::retry::Down;
use crate::transfer::TransferError;
use plutus_state::{now_ms, Site};
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
    // One connection per destination: [primary, backup].
    let mut slots = [Conn::default(), Conn::default()];
    // In the service, worker 0 cleans the inbox at once, so a crash's temp files do not
    // wait for the next order, and every worker connects before the first file arrives.
    // If the destination is down, the first delivery does both.
    if shared.mode.connects_early() {
        if let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) {
            let primary = shared.dest(Site::Primary);
            let r = if n == 0 {
                clean_once(&primary, &mut slots[0].slot)
            } else {
                slots[0].slot.connect(&ctx)
            };
            if let Err(e) = r {
                destination_down(&shared, &primary, epoch, e);
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
                let dest = shared.dest(shared.current_site());
                // With a backup, never wait here on a closed gate: the other
                // destination may have work meanwhile.
                let epoch = match shared.backup {
                    None => rt.block_on(dest.gate.wait_open(&shared.cancel)),
                    Some(_) => dest.gate.open_now(),
                };
                if let Some(epoch) = epoch {
                    // A connection that sat idle may have died quietly (a NAT, the
                    // server's idle limit): a fresh one, not a false outage.
                    let slot = &mut slots[index(dest.site)].slot;
                    slot.refresh();
                    if let Err(e) = clean_once(&dest, slot) {
                        destination_down(&shared, &dest, epoch, e);
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
        let Some(backup) = &shared.backup else {
            let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) else {
                break;
            };
            let dest = shared.dest(Site::Primary);
            deliver(&shared, &dest, &mut slots[0], &ids, epoch, &archive, n);
            continue;
        };
        // With a backup: an entry whose upload started somewhere is finished there
        // and nowhere else; the rest go where new deliveries go (failover.rs).
        let groups = match failover::split(&ctx.journal, &ids) {
            Ok(g) => g,
            Err(e) => {
                for &id in &ids {
                    shared.queue.done(id);
                }
                shared.fatal(e);
                continue;
            }
        };
        let mut cancelled = false;
        for (bound, ids) in groups {
            let (site, epoch) = match bound {
                Some(site) => {
                    let dest = shared.dest(site);
                    match dest.gate.open_now() {
                        Some(epoch) => (site, epoch),
                        None if shared.mode.waits_for_retries() => {
                            // Its destination is paused: back when it reopens, no
                            // attempt burned, and this worker free for the other.
                            let at = dest.gate.paused_until().map_or(0, |t| {
                                now_ms()
                                    + t.saturating_duration_since(Instant::now()).as_millis() as u64
                            });
                            for &id in &ids {
                                shared.queue.requeue_at(id, at, &shared.cancel);
                            }
                            continue;
                        }
                        None => match rt.block_on(dest.gate.wait_open(&shared.cancel)) {
                            Some(epoch) => (site, epoch),
                            None => {
                                cancelled = true;
                                break;
                            }
                        },
                    }
                }
                None => match rt.block_on(backup.router.wait(
                    &shared.gate,
                    &backup.gate,
                    &shared.cancel,
                )) {
                    Some(to) => to,
                    None => {
                        cancelled = true;
                        break;
                    }
                },
            };
            let dest = shared.dest(site);
            deliver(
                &shared,
                &dest,
                &mut slots[index(site)],
                &ids,
                epoch,
                &archive,
                n,
            );
        }
        if cancelled {
            break;
        }
    }
}

/// A worker's connection to one destination and when it was last used.
struct Conn {
    slot: Slot,
    last_used: Instant,
}

impl Default for Conn {
    fn default() -> Conn {
        Conn {
            slot: Slot::default(),
            last_used: Instant::now(),
        }
    }
}

fn index(site: Site) -> usize {
    match site {
        Site::Primary => 0,
        Site::Backup => 1,
    }
}

/// One batch of entries to one destination whose gate was open at `epoch`.
fn deliver(
    shared: &Shared,
    dest: &Dest<'_>,
    conn: &mut Conn,
    ids: &[u64],
    epoch: u64,
    archive: &mpsc::UnboundedSender<ToArchive>,
    n: usize,
) {
    let slot = &mut conn.slot;
    // A connection that sat idle is pinged (and replaced if dead) before anything
    // uses it, the clean-up included.
    if conn.last_used.elapsed() > Duration::from_secs(15) {
        slot.refresh();
    }

    if let Err(e) = clean_once(dest, slot) {
        let wait = destination_down(shared, dest, epoch, e);
        // Back to the front in their order.
        for &id in ids.iter().rev() {
            if wait {
                shared.queue.requeue(id);
            } else {
                shared.queue.done(id);
            }
        }
        return;
    }

    let steps = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pipeline::process_batch(dest.ctx, slot, ids)
    }));
    conn.last_used = Instant::now();
    let steps = match steps {
        Ok(Ok(steps)) => steps,
        Ok(Err(e)) => {
            for &id in ids {
                shared.queue.done(id);
            }
            shared.fatal(e);
            return;
        }
        Err(_) => {
            error!(worker = n, ids = ids.len(), "worker step panicked");
            *slot = Slot::default();
            // Not dropped: the entries are still live in the journal, and only the
            // queue brings them back before the next restart.
            for &id in ids {
                settle(shared, id, pipeline::retry_later(&shared.ctx));
            }
            return;
        }
    };
    // One step per entry; an entry without one would stay queued for ever (and a
    // pass never end): it comes back later instead.
    debug_assert_eq!(steps.len(), ids.len(), "one step per entry");
    for &id in ids {
        if !steps.iter().any(|(s, _)| *s == id) {
            error!(
                worker = n,
                id, "no step for an entry of the batch; trying it again later"
            );
            settle(shared, id, pipeline::retry_later(&shared.ctx));
        }
    }
    let mut wait_again = Vec::new();
    // One report per batch: the first error is the destination's; the others
    // say the same thing again.
    let mut down: Option<bool> = None;
    for (id, step) in steps {
        match step {
            Step::DestinationDown(e) => {
                let wait = *down.get_or_insert_with(|| destination_down(shared, dest, epoch, e));
                if wait {
                    wait_again.push(id);
                } else {
                    shared.queue.done(id);
                }
            }
            step => {
                if slot.is_connected() && matches!(step, Step::Done | Step::Verified(_)) {
                    destination_up(dest);
                }
                if let Step::Verified(sent_as) = step {
                    // Still queued until the archiver is done with it, so nothing
                    // else picks the entry up meanwhile.
                    if archive.send((id, sent_as)).is_err() {
                        shared.queue.done(id);
                    }
                } else {
                    settle(shared, id, step);
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
pub(super) fn clean_once(dest: &Dest<'_>, slot: &mut Slot) -> Result<(), TransferError> {
    // The first clean-up is waited for by every worker; a later one by nobody (another
    // worker doing it is as good).
    let mut last = match dest.cleaned.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) if dest.cleaned_once.load(Ordering::Acquire) => {
            return Ok(());
        }
        Err(std::sync::TryLockError::WouldBlock) => {
            dest.cleaned.lock().unwrap_or_else(|p| p.into_inner())
        }
    };
    if last.is_some_and(|at| at.elapsed() < dest.ctx.settings.source.sweep_interval) {
        return Ok(());
    }
    let removed = slot.clean_temps(dest.ctx)?;
    *last = Some(Instant::now());
    dest.cleaned_once.store(true, Ordering::Release);
    if !removed.is_empty() {
        info!(
            count = removed.len(),
            "removed temp files no delivery needs from the inbox: {}",
            removed.join(", ")
        );
    }
    Ok(())
}

pub(super) fn destination_up(dest: &Dest<'_>) {
    if let Some(failures) = dest.gate.report_up() {
        info!(
            failed_probes = failures,
            "destination {} is reachable again{}",
            dest.ctx.transport.describe(),
            which(dest)
        );
    }
}

/// " (primary)" or " (backup)" in a log line, with a backup configured.
fn which(dest: &Dest<'_>) -> String {
    dest.ctx
        .site
        .map(|_| format!(" ({})", dest.site))
        .unwrap_or_default()
}

/// Returns whether the entry should wait in the queue (the service pauses) or not
/// (a pass ends here).
pub(super) fn destination_down(
    shared: &Shared,
    dest: &Dest<'_>,
    epoch: u64,
    e: TransferError,
) -> bool {
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
    match dest.gate.report_down(epoch, &msg) {
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
                    queued,
                    "destination down{}: {msg}; next try in {retry_in}",
                    which(dest)
                );
            }
        }
        Down::AlreadyPaused => debug!("destination down (already paused): {msg}"),
    }
    true
}
