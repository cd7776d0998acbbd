//! Steps 1–4 of the order of effects (see the parent module): upload to a temp and
//! read it back, `sent` made durable, rename, and the look at both names that decides
//! a `sent` entry after any doubt.

use crate::archive;
use crate::transfer::{self, Scope, Seen, TransferError};
use plutus_state::protocol::{self, Recovery};
use plutus_state::{now_ms, Event, JournalError, Record};
use std::fs::File;
use std::io::{Read, Take};
use std::time::{Instant, SystemTime};
use tracing::{info, warn};

use super::failure::{file_error, handle_error};
use super::{fail_now, job_of, ms, Ctx, Slot, Step};

/// A `pending` entry's local file, opened for sending.
pub(super) enum Source {
    Ready {
        /// Never more than one byte past the size taken at intake: a file that grew
        /// (or a device) is a changed source, not an endless upload.
        file: Take<File>,
        /// Where it was opened, for messages.
        path: String,
        /// What the bytes we send come from; checked again before the archive move.
        sent_as: Option<archive::LocalId>,
    },
    /// Not a file to send any more: the entry is failed (journaled), this its step.
    Failed(Step),
    /// It could not be opened: the file's error, for `file_error`.
    Error(TransferError),
}

/// Opens `rec`'s file in the outbox the one safe way (no link followed, no FIFO).
pub(super) fn open_source(ctx: &Ctx, rec: &Record) -> Result<Source, JournalError> {
    let src_path = ctx.settings.source.outbox.join(&rec.name);
    let src = src_path.display().to_string();
    match crate::untrusted::open_regular(&src_path) {
        Ok(crate::untrusted::Opened::File(file, _)) => Ok(Source::Ready {
            sent_as: file.metadata().ok().map(|m| archive::LocalId::of(&m)),
            file: file.take(rec.size + 1),
            path: src,
        }),
        // Regular at intake, something else now: never followed, never sent.
        Ok(crate::untrusted::Opened::Refused(why)) => fail_now(
            ctx,
            rec,
            format!("{src}: is now {why}, not the regular file taken at intake; nothing sent"),
        )
        .map(Source::Failed),
        Ok(crate::untrusted::Opened::Gone) => fail_now(
            ctx,
            rec,
            format!("{src}: the local file disappeared from the outbox before it was verified"),
        )
        .map(Source::Failed),
        Err(source) => Ok(Source::Error(TransferError::LocalRead {
            path: src,
            source,
        })),
    }
}

/// A `pending` entry: upload to a new temp name, read back, journal `sent` durably,
/// then rename.
pub(super) fn upload_step(ctx: &Ctx, slot: &mut Slot, rec: Record) -> Result<Step, JournalError> {
    let s = &ctx.settings;
    let (mut file, src_str, sent_as) = match open_source(ctx, &rec)? {
        Source::Ready {
            file,
            path,
            sent_as,
        } => (file, path, sent_as),
        Source::Failed(step) => return Ok(step),
        Source::Error(e) => return file_error(ctx, slot, &rec, e, None),
    };
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
    let rec = ctx.journal.apply_at(
        rec.id,
        Event::Uploaded {
            remote_path: up.temp_path.clone(),
        },
        None,
        ctx.site,
    )?;
    ctx.journal.flush()?;
    drop(claim);
    info!(state = %rec.state(), attempt = rec.attempts + 1, elapsed_ms = ms(started), "uploaded to {} and read back", up.temp_path);
    let note = (!up.fsynced).then(|| "server has no fsync; verified by read-back".to_string());
    rename_step(ctx, slot, rec, started, note, sent_as)
}

/// A durably `sent` entry whose temp is known good: rename it into place.
pub(super) fn rename_step(
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
pub(super) fn resolve_sent(
    ctx: &Ctx,
    slot: &mut Slot,
    rec: Record,
    started: Instant,
    sent_as: Option<archive::LocalId>,
    rename_failed: Option<TransferError>,
) -> Result<Step, JournalError> {
    // Only where its upload started (its temp is there): the workers route a `sent`
    // entry by its binding; this is the last guard against looking elsewhere, where
    // a missing temp would read as "taken by the ERP".
    let bound = rec.destination.unwrap_or(plutus_state::Site::Primary);
    if ctx.site.is_some_and(|here| here != bound) {
        tracing::error!(
            id = rec.id,
            name = %crate::intake::shown(&rec.name),
            ?bound,
            here = ?ctx.site,
            "a sent entry reached the other destination; not resolved here"
        );
        return Ok(super::retry_later(ctx));
    }
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

pub(super) fn verified(
    ctx: &Ctx,
    rec: Record,
    remote_path: String,
    note: Option<String>,
    started: Instant,
    sent_as: Option<archive::LocalId>,
) -> Result<Step, JournalError> {
    let archive_path = archive::plan(&ctx.settings.source.archive, &rec.name, SystemTime::now());
    let rec = ctx.journal.apply_at(
        rec.id,
        Event::Verified {
            remote_path: remote_path.clone(),
            archive_path: archive_path.display().to_string(),
            note: note.clone(),
        },
        Some(ms(started)),
        ctx.site,
    )?;
    let since_detect = now_ms().saturating_sub(rec.detected_at);
    ctx.metrics.delivered.inc();
    if let Some(site) = ctx.site {
        ctx.metrics.delivered_to(site).inc();
    }
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
