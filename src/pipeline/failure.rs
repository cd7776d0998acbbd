//! What a failed step does to its entry: a retry later, `failed` at once, or — when
//! the local file changed under us — a new look at it by intake.

use crate::intake;
use crate::retry;
use crate::transfer::{Scope, TransferError};
use plutus_state::{now_ms, Event, JournalError, Record, State};
use std::io::Read;
use tracing::{error, info, warn};

use super::{fail_now, retry_later, Ctx, Slot, Step};

pub(super) fn handle_error(
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

pub(super) fn file_error(
    ctx: &Ctx,
    slot: &mut Slot,
    rec: &Record,
    e: TransferError,
    elapsed_ms: Option<u64>,
) -> Result<Step, JournalError> {
    match slot.existing().map(|c| healthy(c.as_mut(), &e)) {
        Some(false) => {
            slot.drop_conn();
            Ok(Step::DestinationDown(e))
        }
        _ => blame(ctx, rec, e, elapsed_ms),
    }
}

/// Is it this file, or every file? A bare "failure" can be a read-only or full inbox
/// as well as a bad name: a remote error is put to the test of writing a probe file,
/// any other error to a ping. `false`: the destination is down (no attempt burned).
/// A connection that passes stays: a refused request leaves our SFTP session sound.
pub(super) fn healthy(c: &mut dyn crate::transfer::Connection, e: &TransferError) -> bool {
    match e {
        TransferError::Remote(_) => c.probe().is_ok(),
        _ => c.ping().is_ok(),
    }
}

/// The file takes the blame: a retry later, `failed` once its attempts are used up
/// (or on a conflict), or a new look at a local file that changed.
pub(super) fn blame(
    ctx: &Ctx,
    rec: &Record,
    e: TransferError,
    elapsed_ms: Option<u64>,
) -> Result<Step, JournalError> {
    let s = &ctx.settings;
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
        let rec = ctx.journal.apply_at(
            rec.id,
            Event::Failed {
                error: error.clone(),
            },
            elapsed_ms,
            ctx.site,
        )?;
        error!(state = %rec.state(), attempt = rec.attempts, "{error}; gave up, replay with `plutus-sync replay {}`", intake::shown(&rec.name));
        return Ok(Step::Done);
    }
    ctx.metrics.retries.inc();
    let delay = retry::delay(rec.attempts, s.retry.initial, s.retry.max);
    let at = now_ms() + delay.as_millis() as u64;
    let rec = ctx.journal.apply_at(
        rec.id,
        Event::Retry {
            error: error.clone(),
            next_attempt_at: at,
        },
        elapsed_ms,
        ctx.site,
    )?;
    warn!(state = %rec.state(), attempt = rec.attempts, "{error}; retry in {}", humantime::format_duration(std::time::Duration::from_millis(delay.as_millis() as u64)));
    Ok(Step::RetryAt(at))
}

/// The local file changed after intake (rewritten under the same name): take its new
/// size and CRC32 and check it again before sending anything.
pub(super) fn rehash(ctx: &Ctx, rec: &Record) -> Result<Step, JournalError> {
    let path = ctx.settings.source.outbox.join(&rec.name);
    let opened = match crate::untrusted::open_regular(&path) {
        Ok(crate::untrusted::Opened::File(f, m)) => Ok((f, m)),
        Ok(crate::untrusted::Opened::Gone) => return Ok(Step::RetryAt(now_ms())),
        Ok(crate::untrusted::Opened::Refused(why)) => {
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
