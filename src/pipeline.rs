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
//!    the temp name and let [`protocol::recover_sent`] decide — never upload again while
//!    the temp may have been renamed;
//! 4. journal `verified` with the archive path;
//! 5. in [`archive_batch`], for every file verified meanwhile: one **flush** of the
//!    journal before any local file is touched, the moves to the archive, one fsync
//!    per folder they touched, then `archived` for each.
//!
//! Step 5 runs apart from the workers so that a flush and the folder fsyncs are paid
//! once per batch rather than once per file, and no upload waits for them.

use crate::archive;
use crate::config::Settings;
use crate::intake;
use crate::retry;
use crate::transfer::{self, Connection, Job, Scope, Seen, ServerTraits, TransferError};
use plutus_state::protocol::{self, Recovery};
use plutus_state::{now_ms, Event, Journal, JournalError, Record, State};
use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tracing::{error, info, warn};

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
        }
    }
}

/// The temp names of uploads in progress. A name is claimed before its file is created
/// and released after its `sent` record is written, so a clean-up that lists the inbox
/// and then asks here and then the journal never misses one.
#[derive(Default)]
pub struct Inflight(Mutex<HashSet<String>>);

impl Inflight {
    fn claim(&self, name: &str) -> Claim<'_> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        Claim {
            set: self,
            name: name.to_string(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}

struct Claim<'a> {
    set: &'a Inflight,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
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

/// A worker's connection, made on first use and thrown away after any error (libssh2
/// sessions are not reliable after one), with what the server's probe found.
#[derive(Default)]
pub struct Slot {
    conn: Option<Box<dyn Connection>>,
    traits: Option<ServerTraits>,
}

impl Slot {
    /// The connection, made and probed if there is none. A server whose rename would
    /// replace an existing name is refused here, for every file, unless the config
    /// accepts check-then-rename.
    fn get(&mut self, ctx: &Ctx) -> Result<&mut Box<dyn Connection>, TransferError> {
        if self.conn.is_none() {
            let mut c = ctx.transport.connect()?;
            let traits = c.server()?;
            *ctx.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(traits);
            if !traits.rename_refuses_overwrite && !ctx.settings.destination.check_then_rename {
                return Err(TransferError::UnsafeRename {
                    dest: ctx.transport.describe(),
                });
            }
            self.traits = Some(traits);
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Connect now rather than on the first file, so the first file does not pay for
    /// the SSH handshake and the server probe.
    pub fn connect(&mut self, ctx: &Ctx) -> Result<(), TransferError> {
        self.get(ctx).map(|_| ())
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    pub(crate) fn drop_conn(&mut self) {
        self.conn = None;
        self.traits = None;
    }

    /// Does this server replace on rename (accepted by the config)? Then every rename
    /// is preceded by a look at the final name.
    fn rename_replaces(&self) -> bool {
        self.traits.is_some_and(|t| !t.rename_refuses_overwrite)
    }

    /// Make sure a connection that sat idle is still alive; a dead one is dropped so
    /// the next use reconnects instead of failing a file.
    pub(crate) fn refresh(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            if c.ping().is_err() {
                self.drop_conn();
            }
        }
    }

    /// Remove temp files nobody needs from the inbox: temp names of files the outbox's
    /// name rules would take, that no upload in progress claims and no `sent` entry
    /// names (its temp is the proof of where that delivery stands). Safe to run while
    /// other workers upload.
    pub fn clean_temps(&mut self, ctx: &Ctx) -> Result<Vec<String>, TransferError> {
        let s = &ctx.settings;
        let ours = |name: &str| intake::name_rule(std::ffi::OsStr::new(name), s).is_ok();
        // Asked after the listing, in this order (see `Inflight`).
        let keep = |temp: &str| {
            if ctx.inflight.contains(temp) {
                return true;
            }
            let Some(name) = transfer::final_of_temp(temp, &s.destination.temp_suffix) else {
                return false;
            };
            match ctx.journal.history_of(name) {
                Ok(recs) => recs.iter().any(|r| {
                    r.state() == State::Sent
                        && r.remote_path
                            .as_deref()
                            .is_some_and(|p| p.rsplit('/').next() == Some(temp))
                }),
                // Cannot tell: keep it; the next clean-up asks again.
                Err(_) => true,
            }
        };
        let r = self.get(ctx)?.clean_temps(&ours, &keep);
        if r.is_err() {
            self.drop_conn();
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

/// A `pending` entry: upload to a new temp name, read back, journal `sent` durably,
/// then rename.
fn upload_step(ctx: &Ctx, slot: &mut Slot, rec: Record) -> Result<Step, JournalError> {
    let s = &ctx.settings;
    let src_path = s.source.outbox.join(&rec.name);
    let src_str = src_path.display().to_string();
    let file = match intake::open_regular(&src_path) {
        Ok(intake::Opened::File(f, _)) => f,
        // Regular at intake, something else now: never followed, never sent.
        Ok(intake::Opened::Refused(why)) => {
            return fail_now(
                ctx,
                &rec,
                format!(
                    "{src_str}: is now {why}, not the regular file taken at intake; nothing sent"
                ),
            )
        }
        Ok(intake::Opened::Gone) => {
            return fail_now(
                ctx,
                &rec,
                format!(
                    "{src_str}: the local file disappeared from the outbox before it was verified"
                ),
            )
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
    // Never more than one byte past the size taken at intake: a file that grew (or a
    // device) is a changed source, not an endless upload.
    let mut file = file.take(rec.size + 1);
    let started = Instant::now();
    let conn = match slot.get(ctx) {
        Ok(c) => c,
        Err(e) => return Ok(Step::DestinationDown(e)),
    };
    let temp = transfer::temp_name(&rec.name, rec.id, &s.destination.temp_suffix);
    let claim = ctx.inflight.claim(&temp);
    let up = match conn.upload(&job_of(&rec), &temp, &mut file, &src_str) {
        Ok(up) => up,
        Err(e) => return handle_error(ctx, slot, &rec, e, Some(ms(started))),
    };
    ctx.metrics.bytes_sent.inc_by(rec.size);
    // The rule everything rests on: `sent` is durable before the rename leaves.
    let rec = ctx.journal.apply(
        rec.id,
        Event::Uploaded {
            remote_path: up.temp_path.clone(),
        },
    )?;
    ctx.journal.flush()?;
    drop(claim);
    info!(state = %rec.state(), attempt = rec.attempts + 1, elapsed_ms = ms(started), "uploaded to {} and read back", up.temp_path);
    let note = (!up.fsynced).then(|| "server has no fsync; verified by read-back".to_string());
    rename_step(ctx, slot, rec, started, note, sent_as)
}

/// A durably `sent` entry whose temp is known good: rename it into place.
fn rename_step(
    ctx: &Ctx,
    slot: &mut Slot,
    rec: Record,
    started: Instant,
    note: Option<String>,
    sent_as: Option<archive::LocalId>,
) -> Result<Step, JournalError> {
    // Free when `sent` was flushed just before (the usual path); after a panic or a
    // failed flush it refuses, so no rename ever follows a `sent` that is not durable.
    ctx.journal.flush()?;
    let temp = rec.remote_path.clone().unwrap_or_default();
    let replaces = slot.rename_replaces();
    let conn = match slot.get(ctx) {
        Ok(c) => c,
        Err(e) => return Ok(Step::DestinationDown(e)),
    };
    if replaces {
        // Accepted by the config: a server whose rename replaces. Look first; a file
        // that appears between this look and the rename is overwritten (documented).
        match conn.look_final(&job_of(&rec)) {
            Ok(Seen::Absent) => {}
            // Decided from the inbox, but never straight back here (the final name
            // can come and go as the ERP imports): a `Rename` waits for the backoff.
            Ok(_) => {
                let e = TransferError::Remote(transfer::RemoteError {
                    op: "rename",
                    path: conn.final_path(&rec.name),
                    fault: transfer::Fault::Failure,
                    message: "the final name is taken (looked before the rename)".into(),
                });
                return resolve_sent(ctx, slot, rec, started, sent_as, Some(e));
            }
            Err(e) => return handle_error(ctx, slot, &rec, e, Some(ms(started))),
        }
    }
    match conn.rename(&job_of(&rec), &temp) {
        Ok(()) => {
            ctx.metrics
                .transfer_seconds
                .observe(started.elapsed().as_secs_f64());
            let final_path = conn.final_path(&rec.name);
            verified(ctx, rec, final_path, note, started, sent_as)
        }
        // The reply is lost, not necessarily the rename: the entry stays `sent`, and
        // the next attempt looks before it does anything.
        Err(e) if e.scope() == Scope::Destination => {
            slot.drop_conn();
            Ok(Step::DestinationDown(e))
        }
        // Refused (a name taken, a file held open on Windows) or another error: look.
        Err(e) => resolve_sent(ctx, slot, rec, started, sent_as, Some(e)),
    }
}

/// A `sent` entry: what do the final and the temp name hold? `recover_sent` decides.
/// `rename_failed`: a rename was just tried and failed with this error, so a
/// `Rename` decision waits for the backoff instead of trying again at once.
fn resolve_sent(
    ctx: &Ctx,
    slot: &mut Slot,
    rec: Record,
    started: Instant,
    sent_as: Option<archive::LocalId>,
    rename_failed: Option<TransferError>,
) -> Result<Step, JournalError> {
    let temp = rec.remote_path.clone().unwrap_or_default();
    let conn = match slot.get(ctx) {
        Ok(c) => c,
        Err(e) => return Ok(Step::DestinationDown(e)),
    };
    let (final_seen, temp_seen) = match conn.look(&job_of(&rec), &temp) {
        Ok(seen) => seen,
        Err(e) => return handle_error(ctx, slot, &rec, e, Some(ms(started))),
    };
    let final_path = conn.final_path(&rec.name);
    match protocol::recover_sent(final_seen, temp_seen) {
        // Our temp, if it is still there, is left to the clean-up, which removes it
        // once no `sent` entry names it: removed here, before the journal moved on, a
        // lost reply or a crash would leave a `sent` entry whose temp is gone — the
        // sign of a rename the ERP took — though the final file may be someone else's
        // or not yet imported (found by the model check).
        Recovery::AlreadyDelivered => verified(
            ctx,
            rec,
            final_path,
            Some("found complete under its final name; not sent again".into()),
            started,
            // The inbox copy matches the journal, not necessarily the file now in the
            // outbox: let the archive check its content.
            None,
        ),
        Recovery::Conflict => {
            let e = TransferError::Conflict {
                path: final_path,
                want_size: rec.size,
                want_crc32: rec.crc32,
                // Our temp is gone too: the rename may have happened and the ERP taken
                // the order before someone else's file took the name. A replay would
                // then import it twice: the operator must ask the ERP first.
                temp_gone: temp_seen == Seen::Absent,
            };
            file_error(ctx, slot, &rec, e, Some(ms(started)))
        }
        Recovery::Rename => match rename_failed {
            None => rename_step(ctx, slot, rec, started, None, sent_as),
            Some(e) => file_error(ctx, slot, &rec, e, Some(ms(started))),
        },
        Recovery::TakenByErp => {
            warn!(state = %rec.state(), "{temp}: neither the temp file nor {final_path} is in the inbox: the rename happened and the ERP took the file before the reply arrived; not sent again");
            verified(
                ctx,
                rec,
                final_path,
                Some("taken by the ERP before the reply".into()),
                started,
                sent_as,
            )
        }
        Recovery::Reupload => {
            // `pending` is durable before the temp goes: the other order would leave a
            // `sent` entry with neither temp nor final after a crash or a lost reply,
            // which recovery reads as "taken by the ERP" (found by the model check).
            let reason = format!(
                "{temp}: the temp file no longer holds what was read back (never renamed); uploading again"
            );
            let rec = ctx.journal.apply(
                rec.id,
                Event::Reupload {
                    reason: reason.clone(),
                },
            )?;
            ctx.journal.flush()?;
            warn!(state = %rec.state(), "{reason}");
            // Best effort: a temp left here is no `sent` entry's, so the clean-up takes it.
            if let Err(e) = conn.remove(&temp) {
                return handle_error(ctx, slot, &rec, e, Some(ms(started)));
            }
            Ok(Step::RetryAt(now_ms()))
        }
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
    let archive_path = archive::plan(&ctx.settings.source.archive, &rec.name, SystemTime::now());
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
    // A `sent` entry's temp may have been renamed: it is never set aside (a replay
    // would upload it again) except on a conflict, where the final name is someone
    // else's and our rename cannot have happened. It keeps retrying with backoff.
    let give_up = matches!(e, TransferError::Conflict { .. })
        || (rec.state() == State::Pending && rec.attempts + 1 >= s.retry.max_attempts);
    if give_up {
        ctx.metrics.failed.inc();
        let rec = ctx.journal.apply_timed(
            rec.id,
            Event::Failed {
                error: error.clone(),
            },
            elapsed_ms,
        )?;
        error!(state = %rec.state(), attempt = rec.attempts, "{error}; gave up, replay with `plutus-sync replay {}`", intake::shown(&rec.name));
        return Ok(Step::Done);
    }
    ctx.metrics.retries.inc();
    let delay = retry::delay(rec.attempts, s.retry.initial, s.retry.max);
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
    let path = ctx.settings.source.outbox.join(&rec.name);
    let opened = match intake::open_regular(&path) {
        Ok(intake::Opened::File(f, m)) => Ok((f, m)),
        Ok(intake::Opened::Gone) => return Ok(Step::RetryAt(now_ms())),
        Ok(intake::Opened::Refused(why)) => {
            return fail_now(
                ctx,
                rec,
                format!(
                    "{}: changed after intake and is now {why}; nothing sent",
                    path.display()
                ),
            )
        }
        Err(e) => Err(e),
    };
    let max = ctx.settings.source.max_size;
    let scan = match opened.and_then(|(f, m)| {
        // Larger than max_size now: judged without reading it (the verdict below).
        let scan = if m.len() > max {
            intake::Scan {
                size: m.len(),
                crc32: 0,
                json: Err(format!(
                    "{} bytes, larger than [source] max_size ({max} bytes); never sent",
                    m.len()
                )),
            }
        } else {
            intake::scan(f.take(m.len() + 1))?
        };
        Ok(scan)
    }) {
        Ok(s) => s,
        Err(e) => {
            let at = now_ms() + ctx.settings.retry.initial.as_millis() as u64;
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
    let too_large = scan.size > max;
    match scan.json {
        // Too large cannot be fixed by waiting: set aside at once.
        Err(reason) if too_large => {
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
                    warn!(state = %r.state(), "changed after intake: {}; quarantined to {}", r.last_error.as_deref().unwrap_or("invalid"), intake::shown(r.quarantine_path.as_deref().unwrap_or("?")));
                    Ok(Step::Done)
                }
                Err(intake::IntakeError::Journal(e)) => Err(e),
                Err(e) => {
                    error!("{e}; will try again");
                    Ok(retry_later(ctx))
                }
            };
        }
        // Being rewritten, and not valid now: its writer may be halfway. Back to
        // intake, which waits for the writer as it does for a new file (never sent,
        // quarantined only once unchanged for `quarantine_after`).
        Err(reason) => {
            let r = ctx.journal.apply(rec.id, Event::Invalid { reason })?;
            warn!(state = %r.state(), "changed after intake and not a valid order now: {}; left in the outbox, never sent, until its writer finishes it (or quarantined once unchanged for {})", r.last_error.as_deref().unwrap_or("invalid"), humantime::format_duration(ctx.settings.source.quarantine_after));
            // Back to intake now: the writer's close may have come while the entry
            // was still `pending`, and been skipped for it.
            return Ok(Step::Rescan);
        }
        Ok(()) => {}
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
