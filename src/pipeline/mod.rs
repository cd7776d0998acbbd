//! The per-file steps `pending → sent → verified → archived`: the one place that uses
//! both the journal and a transport. Every function here blocks (ssh2, sled flushes,
//! file reads): `process` runs on a worker's own thread, `archive_batch` on the
//! blocking pool for the archiver task.
//!
//! Order of effects, which is the whole of the exactly-once guarantee:
//! 1. upload to a temp name of this attempt's own, read it back and compare;
//! 2. journal `sent` with that temp path and **flush** it (group commit across workers)
//!    before the rename request leaves: an entry whose temp may have been renamed is
//!    always durably `sent`, and a `pending` entry was never renamed, so re-uploading it
//!    is always safe;
//! 3. rename into place; on any doubt (refused, lost reply, crash) look at the final and
//!    the temp name and let [`recover_sent`](plutus_state::protocol::recover_sent) decide — never upload again while
//!    the temp may have been renamed;
//! 4. journal `verified` with the archive path;
//! 5. in [`archive_batch`], for every file verified meanwhile: one **flush** of the
//!    journal before any local file is touched, the moves to the archive, one fsync
//!    per folder they touched, then `archived` for each.
//!
//! Step 5 runs apart from the workers so that a flush and the folder fsyncs are paid
//! once per batch rather than once per file, and no upload waits for them.
//!
//! Where each part lives: steps 1–4 in `deliver`, and for a worker's batch of files on
//! one connection (their requests in flight together, one flush for their `sent`
//! records) in `batch`; a worker's connection and the temp names claimed on it in
//! `slot`, what an error does to an entry in `failure`; step 5 and the dispatch by
//! state ([`process`]) here.

use crate::archive;
use crate::config::Settings;
use crate::intake;
use crate::transfer::{self, Job, ServerTraits, TransferError};
use plutus_state::{now_ms, Event, Journal, JournalError, Record, Site, State};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{error, info, warn};

mod batch;
mod deliver;
mod failure;
mod slot;

pub use batch::process_batch;
use deliver::{resolve_sent, upload_step};
pub use slot::{Inflight, Slot};

/// What the pipeline needs, shared by all workers.
pub struct Ctx {
    pub settings: Arc<Settings>,
    pub journal: Arc<Journal>,
    pub transport: Arc<dyn transfer::Transport>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Temp names being uploaded right now, not yet named by a `sent` entry: the
    /// clean-up must not remove them.
    pub inflight: Inflight,
    /// What the last probe of the server found, for `journal stats`.
    pub server: Mutex<Option<ServerTraits>>,
    /// Which destination this is, recorded with every step, when a backup is
    /// configured; `None` (nothing recorded, as before backups) otherwise.
    pub site: Option<Site>,
}

impl Ctx {
    pub fn new(
        settings: Arc<Settings>,
        journal: Arc<Journal>,
        transport: Arc<dyn transfer::Transport>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Ctx {
        Ctx {
            settings,
            journal,
            transport,
            metrics,
            inflight: Inflight::default(),
            server: Mutex::new(None),
            site: None,
        }
    }

    /// The same, for destination `site` of a config with a backup.
    pub fn at(mut self, site: Site) -> Ctx {
        self.site = Some(site);
        self
    }
}

/// How one step on one entry ended.
#[derive(Debug)]
pub enum Step {
    /// Nothing more to do now: archived, failed, quarantined, or not live.
    Done,
    /// A file-specific failure: try again at this time (ms since epoch).
    RetryAt(u64),
    /// The destination is down; the entry keeps its state and its attempts.
    DestinationDown(TransferError),
    /// Done, and the outbox holds new content under the same name: look again now.
    Rescan,
    /// Verified and journaled (not yet flushed): for [`archive_batch`]. Carries the
    /// identity of the local file the delivered bytes came from, when this run read them.
    Verified(Option<archive::LocalId>),
}

/// Advance entry `id` as far as it goes now.
pub fn process(ctx: &Ctx, slot: &mut Slot, id: u64) -> Result<Step, JournalError> {
    let Some(rec) = ctx.journal.get(id)? else {
        return Ok(Step::Done);
    };
    let span = file_span(&rec);
    let _g = span.enter();
    match rec.state() {
        State::Verified => Ok(Step::Verified(None)),
        State::Pending => upload_step(ctx, slot, rec),
        // After a crash, a lost reply or a failed rename: the temp file tells.
        State::Sent => resolve_sent(ctx, slot, rec, Instant::now(), None, None),
        _ => Ok(Step::Done),
    }
}

fn job_of(rec: &Record) -> Job<'_> {
    Job {
        name: &rec.name,
        size: rec.size,
        crc32: rec.crc32,
    }
}

/// Archive files whose delivery is verified: what [`Step::Verified`] hands over, in
/// batches. Returns how each entry's step ended.
pub fn archive_batch(
    ctx: &Ctx,
    batch: &[(u64, Option<archive::LocalId>)],
) -> Result<Vec<(u64, Step)>, JournalError> {
    // The rule: the journal says "verified" durably before any local file moves.
    ctx.journal.flush()?;
    let outbox = &ctx.settings.source.outbox;
    let mut dirs = archive::Dirs::default();
    let mut moved = Vec::with_capacity(batch.len());
    let mut steps = Vec::with_capacity(batch.len());
    for &(id, sent_as) in batch {
        let Some(rec) = ctx.journal.get(id)? else {
            steps.push((id, Step::Done));
            continue;
        };
        if rec.state() != State::Verified {
            steps.push((id, Step::Done));
            continue;
        }
        let span = file_span(&rec);
        let _g = span.enter();
        match archive::move_to_archive(&rec, outbox, sent_as, &mut dirs) {
            Ok(path) => moved.push((rec, path)),
            Err(archive::ArchiveError::Replaced { path }) => {
                // Moving it would archive content that was never sent, and lose it.
                let note = format!(
                    "{}: replaced by new content after its delivery was verified; the delivered copy is gone, the new content is taken as a new file",
                    path.display()
                );
                let rec = ctx
                    .journal
                    .apply(rec.id, Event::LocalReplaced { note: note.clone() })?;
                warn!(state = %rec.state(), "{note}");
                steps.push((id, Step::Rescan));
            }
            Err(archive::ArchiveError::Lost { name, to }) => {
                // Delivered, but the local copy is gone: nothing to archive, nothing to
                // resend. Leave it `verified` for an operator to look at.
                error!(state = %rec.state(), "{name}: delivered and verified, but the local file vanished before it could be archived to {}; left as verified", to.display());
                steps.push((id, Step::Done));
            }
            Err(e) => {
                error!(state = %rec.state(), "{e}; will try again");
                steps.push((id, retry_later(ctx)));
            }
        }
    }
    // The moves are only durable once their folders are synced: once per folder.
    if let Err((dir, e)) = dirs.sync(outbox) {
        for (rec, _) in moved {
            let span = file_span(&rec);
            let _g = span.enter();
            error!(state = %rec.state(), "{}: cannot sync the folder after archiving: {e}; will try again", dir.display());
            steps.push((rec.id, retry_later(ctx)));
        }
        return Ok(steps);
    }
    for (rec, path) in moved {
        let span = file_span(&rec);
        let _g = span.enter();
        // Another file took the planned name meanwhile: say where it really went.
        let event = if rec.archive_path.as_deref() == Some(&*path.to_string_lossy()) {
            Event::Archived
        } else {
            Event::ArchivedAs {
                path: path.display().to_string(),
            }
        };
        let rec = ctx.journal.apply(rec.id, event)?;
        info!(state = %rec.state(), "archived to {}", path.display());
        steps.push((rec.id, Step::Done));
    }
    Ok(steps)
}

/// Set a `pending` entry aside at once, for a reason no retry can mend.
fn fail_now(ctx: &Ctx, rec: &Record, error: String) -> Result<Step, JournalError> {
    ctx.metrics.failed.inc();
    let rec = ctx.journal.apply(
        rec.id,
        Event::Failed {
            error: error.clone(),
        },
    )?;
    warn!(state = %rec.state(), attempt = rec.attempts, "{error}");
    Ok(Step::Done)
}

/// Every log line about one file carries its name, batch and id.
fn file_span(rec: &Record) -> tracing::Span {
    tracing::info_span!("file", file = %intake::shown(&rec.name), batch = %rec.batch, id = rec.id)
}

/// A retry after `retry.max`: for failures that are neither the file's nor the
/// destination's (the local disk, a panic), which a backoff schedule does not fit.
pub(crate) fn retry_later(ctx: &Ctx) -> Step {
    Step::RetryAt(now_ms() + ctx.settings.retry.max.as_millis() as u64)
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
