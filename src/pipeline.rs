//! The per-file steps `pending → sent → verified → archived`: the one place that uses
//! both the journal and a transport. Every function here blocks (ssh2, sled flushes,
//! file reads): `process` runs on a worker's own thread, `archive_batch` on the
//! blocking pool for the archiver task.
//!
//! Order of effects, which is the whole of the no-loss guarantee:
//! 1. upload to the temp name; journal `sent` (not flushed: losing it only means the
//!    upload is checked or redone after a crash);
//! 2. read back, rename into place; journal `verified` with the archive path;
//! 3. in [`archive_batch`], for every file verified meanwhile: one **flush** of the
//!    journal before any local file is touched, the moves to the archive, one fsync
//!    per folder they touched, then `archived` for each.
//!
//! Step 3 runs apart from the workers so that a flush and the folder fsyncs are paid
//! once per batch rather than once per file, and no upload waits for them.

use crate::archive;
use crate::config::Settings;
use crate::intake;
use crate::retry;
use crate::transfer::{Connection, Delivered, Found, Job, Scope, TransferError, Transport};
use plutus_state::{now_ms, Event, Journal, JournalError, Record, State};
use std::fs;
use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::{error, info, warn};

/// What the pipeline needs, shared by all workers.
pub struct Ctx {
    pub settings: Arc<Settings>,
    pub journal: Arc<Journal>,
    pub transport: Arc<dyn Transport>,
    pub metrics: Arc<crate::metrics::Metrics>,
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

/// A worker's connection, made on first use and thrown away after any error (libssh2
/// sessions are not reliable after one).
#[derive(Default)]
pub struct Slot {
    conn: Option<Box<dyn Connection>>,
}

impl Slot {
    fn get(&mut self, t: &dyn Transport) -> Result<&mut Box<dyn Connection>, TransferError> {
        if self.conn.is_none() {
            self.conn = Some(t.connect()?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Connect now rather than on the first file, so the first file does not pay for
    /// the SSH handshake.
    pub fn connect(&mut self, t: &dyn Transport) -> Result<(), TransferError> {
        self.get(t).map(|_| ())
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    pub fn drop_conn(&mut self) {
        self.conn = None;
    }

    /// Make sure a connection that sat idle is still alive; a dead one is dropped so
    /// the next use reconnects instead of failing a file.
    pub fn refresh(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            if c.ping().is_err() {
                self.conn = None;
            }
        }
    }

    /// Remove temp files a crash left in the inbox: temp names of files the outbox's
    /// name rules would take. Run once per start, before any upload.
    pub fn clean_temps(
        &mut self,
        t: &dyn Transport,
        s: &Settings,
    ) -> Result<Vec<String>, TransferError> {
        let ours = |name: &str| intake::name_rule(std::ffi::OsStr::new(name), s).is_ok();
        let r = self.get(t)?.clean_temps(&ours);
        if r.is_err() {
            self.conn = None;
        }
        r
    }
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
        State::Pending | State::Sent => deliver_step(ctx, slot, rec),
        _ => Ok(Step::Done),
    }
}

fn deliver_step(ctx: &Ctx, slot: &mut Slot, rec: Record) -> Result<Step, JournalError> {
    let s = &ctx.settings;
    let src_path = s.outbox.join(&rec.name);
    let src_str = src_path.display().to_string();
    let mut file = match fs::File::open(&src_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let error = format!(
                "{src_str}: the local file disappeared from the outbox before it was verified"
            );
            ctx.metrics.failed.inc();
            let rec = ctx.journal.apply(
                rec.id,
                Event::Failed {
                    error: error.clone(),
                },
            )?;
            warn!(state = %rec.state(), attempt = rec.attempts, "{error}");
            return Ok(Step::Done);
        }
        Err(source) => {
            return file_error(
                ctx,
                slot,
                &rec,
                TransferError::LocalRead {
                    path: src_str,
                    source,
                },
                None,
            )
        }
    };
    // What the bytes we send come from; checked again before the archive move.
    let sent_as = file.metadata().ok().map(|m| archive::LocalId::of(&m));
    let job = Job {
        name: &rec.name,
        size: rec.size,
        crc32: rec.crc32,
    };
    let started = Instant::now();
    let conn = match slot.get(ctx.transport.as_ref()) {
        Ok(c) => c,
        Err(e) => return Ok(Step::DestinationDown(e)),
    };

    // After a crash in `sent`, the rename may already have happened.
    if rec.state() == State::Sent {
        match conn.check(&job) {
            Ok(Found::Same) => {
                let remote = rec.remote_path.clone().unwrap_or_default();
                let remote = remote
                    .strip_suffix(&s.temp_suffix)
                    .unwrap_or(&remote)
                    .to_string();
                return verified(
                    ctx,
                    rec,
                    remote,
                    Some("found complete in the inbox after a restart".into()),
                    started,
                    // The inbox copy matches the journal, not necessarily the file now
                    // in the outbox: let the archive check its content.
                    None,
                );
            }
            Ok(Found::Different { .. }) | Ok(Found::Absent) => {}
            Err(e) => return handle_error(ctx, slot, &rec, e, Some(ms(started))),
        }
    }

    let mut journal_err = None;
    // The record as `sent` made it, so it need not be read again.
    let mut after_upload = None;
    let (id, was_pending) = (rec.id, rec.state() == State::Pending);
    let result = conn.deliver(&job, &mut file, &src_str, &mut |temp| {
        if was_pending {
            match ctx.journal.apply(id, Event::Uploaded { remote_path: temp.to_string() }) {
                Ok(r) => {
                    info!(state = %r.state(), attempt = r.attempts + 1, elapsed_ms = ms(started), "uploaded to {temp}");
                    after_upload = Some(r);
                }
                Err(e) => journal_err = Some(e),
            }
        }
    });
    if let Some(e) = journal_err {
        return Err(e);
    }
    let rec = after_upload.unwrap_or(rec);
    match result {
        Ok(Delivered::Sent {
            remote_path,
            fsynced,
        }) => {
            ctx.metrics.bytes_sent.inc_by(rec.size);
            ctx.metrics
                .transfer_seconds
                .observe(started.elapsed().as_secs_f64());
            let note = (!fsynced).then(|| "server has no fsync; verified by read-back".to_string());
            verified(ctx, rec, remote_path, note, started, sent_as)
        }
        Ok(Delivered::AlreadyThere { remote_path }) => verified(
            ctx,
            rec,
            remote_path,
            Some("already in the inbox with the same size and CRC32; not overwritten".into()),
            started,
            sent_as,
        ),
        Err(e) => handle_error(ctx, slot, &rec, e, Some(ms(started))),
    }
}

fn verified(
    ctx: &Ctx,
    rec: Record,
    remote_path: String,
    note: Option<String>,
    started: Instant,
    sent_as: Option<archive::LocalId>,
) -> Result<Step, JournalError> {
    let archive_path = archive::plan(&ctx.settings.archive, &rec.name, SystemTime::now());
    let rec = ctx.journal.apply_timed(
        rec.id,
        Event::Verified {
            remote_path: remote_path.clone(),
            archive_path: archive_path.display().to_string(),
            note: note.clone(),
        },
        Some(ms(started)),
    )?;
    let since_detect = now_ms().saturating_sub(rec.detected_at);
    ctx.metrics.delivered.inc();
    ctx.metrics
        .latency_seconds
        .observe(since_detect as f64 / 1000.0);
    ctx.metrics
        .last_delivery_timestamp_seconds
        .set(now_ms() as f64 / 1000.0);
    info!(
        state = %rec.state(),
        attempt = rec.attempts + 1,
        elapsed_ms = ms(started),
        since_detected_ms = since_detect,
        size = rec.size,
        crc32 = %rec.crc_hex(),
        "verified as {remote_path}{}",
        note.map(|n| format!(" ({n})")).unwrap_or_default()
    );
    Ok(Step::Verified(sent_as))
}

/// Archive files whose delivery is verified: what [`Step::Verified`] hands over, in
/// batches. Returns how each entry's step ended.
pub fn archive_batch(
    ctx: &Ctx,
    batch: &[(u64, Option<archive::LocalId>)],
) -> Result<Vec<(u64, Step)>, JournalError> {
    // The rule: the journal says "verified" durably before any local file moves.
    ctx.journal.flush()?;
    let outbox = &ctx.settings.outbox;
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
        let rec = ctx.journal.apply(rec.id, Event::Archived)?;
        info!(state = %rec.state(), "archived to {}", path.display());
        steps.push((rec.id, Step::Done));
    }
    Ok(steps)
}

/// Every log line about one file carries its name, batch and id.
fn file_span(rec: &Record) -> tracing::Span {
    tracing::info_span!("file", file = %rec.name, batch = %rec.batch, id = rec.id)
}

/// A retry after `retry.max`: for failures that are neither the file's nor the
/// destination's (the local disk, a panic), which a backoff schedule does not fit.
pub fn retry_later(ctx: &Ctx) -> Step {
    Step::RetryAt(now_ms() + ctx.settings.retry_max.as_millis() as u64)
}

fn handle_error(
    ctx: &Ctx,
    slot: &mut Slot,
    rec: &Record,
    e: TransferError,
    elapsed_ms: Option<u64>,
) -> Result<Step, JournalError> {
    match e.scope() {
        Scope::Destination => {
            slot.drop_conn();
            Ok(Step::DestinationDown(e))
        }
        Scope::File => file_error(ctx, slot, rec, e, elapsed_ms),
    }
}

fn file_error(
    ctx: &Ctx,
    slot: &mut Slot,
    rec: &Record,
    e: TransferError,
    elapsed_ms: Option<u64>,
) -> Result<Step, JournalError> {
    let s = &ctx.settings;
    // Is it this file, or every file? ssh2's Read/Write hide the SFTP status, and a
    // bare "failure" can be a read-only or full inbox as well as a bad name. A remote
    // error is put to the test: if a probe file cannot be written either, the whole
    // destination waits (no attempt burned); otherwise the file takes the blame.
    if let Some(c) = slot.conn.as_mut() {
        let healthy = match &e {
            TransferError::Remote(_) => c.probe(),
            _ => c.ping(),
        };
        if healthy.is_err() {
            slot.drop_conn();
            return Ok(Step::DestinationDown(e));
        }
    }
    slot.drop_conn();

    if let TransferError::SourceChanged { .. } = e {
        return rehash(ctx, rec);
    }
    let error = e.to_string();
    let give_up = matches!(e, TransferError::Conflict { .. }) || rec.attempts + 1 >= s.max_attempts;
    if give_up {
        ctx.metrics.failed.inc();
        let rec = ctx.journal.apply_timed(
            rec.id,
            Event::Failed {
                error: error.clone(),
            },
            elapsed_ms,
        )?;
        error!(state = %rec.state(), attempt = rec.attempts, "{error}; gave up, replay with `plutus-sync replay {}`", rec.name);
        return Ok(Step::Done);
    }
    ctx.metrics.retries.inc();
    let delay = retry::delay(rec.attempts, s.retry_initial, s.retry_max);
    let at = now_ms() + delay.as_millis() as u64;
    let rec = ctx.journal.apply_timed(
        rec.id,
        Event::Retry {
            error: error.clone(),
            next_attempt_at: at,
        },
        elapsed_ms,
    )?;
    warn!(state = %rec.state(), attempt = rec.attempts, "{error}; retry in {}", humantime::format_duration(std::time::Duration::from_millis(delay.as_millis() as u64)));
    Ok(Step::RetryAt(at))
}

/// The local file changed after intake (rewritten under the same name): take its new
/// size and CRC32 and check it again before sending anything.
fn rehash(ctx: &Ctx, rec: &Record) -> Result<Step, JournalError> {
    let path = ctx.settings.outbox.join(&rec.name);
    let scan = match fs::File::open(&path).and_then(intake::scan) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Step::RetryAt(now_ms())),
        Err(e) => {
            let at = now_ms() + ctx.settings.retry_initial.as_millis() as u64;
            let r = ctx.journal.apply(
                rec.id,
                Event::Retry {
                    error: format!("{}: {e}", path.display()),
                    next_attempt_at: at,
                },
            )?;
            warn!(state = %r.state(), "cannot re-read changed file: {e}");
            return Ok(Step::RetryAt(at));
        }
    };
    if let Err(reason) = scan.json {
        return match intake::quarantine_entry(
            &ctx.journal,
            &ctx.settings,
            rec.id,
            &path,
            &rec.name,
            reason,
        ) {
            Ok(r) => {
                ctx.metrics.quarantined.inc();
                warn!(state = %r.state(), "changed after intake and is no longer valid JSON: quarantined to {}", r.quarantine_path.as_deref().unwrap_or("?"));
                Ok(Step::Done)
            }
            Err(intake::IntakeError::Journal(e)) => Err(e),
            Err(e) => {
                error!("{e}; will try again");
                Ok(retry_later(ctx))
            }
        };
    }
    let r = ctx.journal.apply(
        rec.id,
        Event::Rehash {
            size: scan.size,
            crc32: scan.crc32,
        },
    )?;
    info!(state = %r.state(), size = r.size, crc32 = %r.crc_hex(), "local file changed after intake; sending the new content");
    Ok(Step::RetryAt(now_ms()))
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
