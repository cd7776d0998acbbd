//! Steps 1–4 for a worker's batch of entries on its one connection: every `pending`
//! file uploaded and read back together ([`Connection::upload_many`]), their `sent`
//! records made durable with **one** flush, then every rename sent together. The
//! order of effects of the parent module holds for each file: no rename leaves before
//! the flush that makes its `sent` durable, and any doubt goes to `resolve_sent`.
//!
//! [`Connection::upload_many`]: crate::transfer::Connection::upload_many

use crate::archive;
use crate::transfer::{self, Put, Scope, TransferError, Uploaded};
use plutus_state::{Event, JournalError, Record, State};
use std::fs::File;
use std::io::Take;
use std::time::Instant;
use tracing::info;

use super::deliver::{open_source, rename_step, resolve_sent, verified, Source};
use super::failure::{blame, healthy};
use super::{file_span, job_of, ms, process, Ctx, Slot, Step};

/// Advance every entry of `ids` as far as it goes now; one step per entry, in no
/// particular order. `pending` entries share their round trips; the others go one by
/// one as [`process`] takes them. A journal error ends the batch (and the service).
pub fn process_batch(
    ctx: &Ctx,
    slot: &mut Slot,
    ids: &[u64],
) -> Result<Vec<(u64, Step)>, JournalError> {
    let mut steps = Vec::with_capacity(ids.len());
    let mut pending = Vec::new();
    for &id in ids {
        match ctx.journal.get(id)? {
            Some(rec) if rec.state() == State::Pending => pending.push(rec),
            Some(rec) => {
                // A destination that went down for one entry is down for the rest:
                // they keep their state without a connection attempt each.
                let step = match down_cause(&steps) {
                    Some(cause) => Step::DestinationDown(waits(&rec.name, &cause)),
                    None => process(ctx, slot, id)?,
                };
                steps.push((id, step));
            }
            None => steps.push((id, Step::Done)),
        }
    }
    if !pending.is_empty() {
        match down_cause(&steps) {
            Some(cause) => steps.extend(
                pending
                    .iter()
                    .map(|r| (r.id, Step::DestinationDown(waits(&r.name, &cause)))),
            ),
            None => upload_batch(ctx, slot, pending, &mut steps)?,
        }
    }
    Ok(steps)
}

/// The error that stopped the destination earlier in the batch, as text.
fn down_cause(steps: &[(u64, Step)]) -> Option<String> {
    steps.iter().find_map(|(_, s)| match s {
        Step::DestinationDown(e) => Some(e.to_string()),
        _ => None,
    })
}

/// What an entry waits with when another file of its batch found the destination
/// down: its own step was not taken (or, for a `sent` one, not finished).
fn waits(name: &str, cause: &str) -> TransferError {
    transfer::not_tried("create", crate::intake::shown(name).as_ref(), &cause)
}

/// Every entry of `recs` waits for the destination: the first with `e` itself (the
/// worker reports the first error it sees), the rest with a stand-in.
fn all_down(recs: Vec<Record>, e: TransferError) -> Vec<(u64, Step)> {
    let cause = e.to_string();
    let mut e = Some(e);
    recs.into_iter()
        .map(|r| {
            let err = e.take().unwrap_or_else(|| waits(&r.name, &cause));
            (r.id, Step::DestinationDown(err))
        })
        .collect()
}

/// A `pending` entry whose local file is open and ready to send.
struct Ready {
    rec: Record,
    file: Take<File>,
    src: String,
    /// What the bytes we send come from; checked again before the archive move.
    sent_as: Option<archive::LocalId>,
    temp: String,
}

/// Step 1 for every entry, `sent` durable for each that passed, then step 2.
fn upload_batch(
    ctx: &Ctx,
    slot: &mut Slot,
    recs: Vec<Record>,
    steps: &mut Vec<(u64, Step)>,
) -> Result<(), JournalError> {
    let s = &ctx.settings;
    // Errors that need the slot (a probe, a drop) wait until the connection has done
    // the batch's work.
    let mut errors: Vec<(Record, TransferError, Option<u64>)> = Vec::new();
    let mut ready = Vec::with_capacity(recs.len());
    for rec in recs {
        let span = file_span(&rec);
        let _g = span.enter();
        match open_source(ctx, &rec)? {
            Source::Ready {
                file,
                path,
                sent_as,
            } => {
                let temp = transfer::temp_name(&rec.name, rec.id, &s.destination.temp_suffix);
                ready.push(Ready {
                    rec,
                    file,
                    src: path,
                    sent_as,
                    temp,
                });
            }
            Source::Failed(step) => steps.push((rec.id, step)),
            Source::Error(e) => errors.push((rec, e, None)),
        }
    }

    let started = Instant::now();
    let mut sent: Vec<(Record, Uploaded, Option<archive::LocalId>)> = Vec::new();
    if !ready.is_empty() {
        let conn = match slot.get(ctx) {
            Ok(c) => c,
            Err(e) => {
                let recs = ready.into_iter().map(|r| r.rec).collect();
                steps.extend(all_down(recs, e));
                finish_errors(ctx, slot, errors, steps)?;
                return Ok(());
            }
        };
        // Claimed before the files are created, released once `sent` names them.
        let claims: Vec<_> = ready.iter().map(|r| ctx.inflight.claim(&r.temp)).collect();
        let results = {
            let mut puts: Vec<Put<'_>> = ready
                .iter_mut()
                .map(|r| Put {
                    job: job_of(&r.rec),
                    temp_name: r.temp.clone(),
                    src: &mut r.file,
                    src_path: &r.src,
                })
                .collect();
            conn.upload_many(&mut puts)
        };
        for (r, result) in ready.into_iter().zip(results) {
            match result {
                Ok(up) => {
                    ctx.metrics.bytes_sent.inc_by(r.rec.size);
                    let rec = ctx.journal.apply_at(
                        r.rec.id,
                        Event::Uploaded {
                            remote_path: up.temp_path.clone(),
                        },
                        None,
                        ctx.site,
                    )?;
                    sent.push((rec, up, r.sent_as));
                }
                Err(e) => errors.push((r.rec, e, Some(ms(started)))),
            }
        }
        // The rule everything rests on: `sent` is durable before any rename leaves.
        // One flush for the whole batch (and for other workers' batches meanwhile).
        if !sent.is_empty() {
            ctx.journal.flush()?;
        }
        drop(claims);
        for (rec, up, _) in &sent {
            let span = file_span(rec);
            let _g = span.enter();
            info!(state = %rec.state(), attempt = rec.attempts + 1, elapsed_ms = ms(started), "uploaded to {} and read back", up.temp_path);
        }
    }

    let lost = errors
        .iter()
        .find(|(_, e, _)| e.scope() == Scope::Destination)
        .map(|(_, e, _)| e.to_string());
    match lost {
        Some(cause) => {
            // The errors first, so the worker reports the real one.
            finish_errors(ctx, slot, errors, steps)?;
            // Durably `sent`: the next attempt looks at the temp before anything else.
            for (rec, _, _) in sent {
                steps.push((rec.id, Step::DestinationDown(waits(&rec.name, &cause))));
            }
            Ok(())
        }
        None => {
            rename_batch(ctx, slot, sent, started, steps)?;
            finish_errors(ctx, slot, errors, steps)
        }
    }
}

/// Step 2 for every durably `sent` entry, the renames all in flight at once.
fn rename_batch(
    ctx: &Ctx,
    slot: &mut Slot,
    sent: Vec<(Record, Uploaded, Option<archive::LocalId>)>,
    started: Instant,
    steps: &mut Vec<(u64, Step)>,
) -> Result<(), JournalError> {
    let note = |up: &Uploaded| {
        (!up.fsynced).then(|| "server has no fsync; verified by read-back".to_string())
    };
    if sent.is_empty() {
        return Ok(());
    }
    if slot.rename_replaces() {
        // Each rename after its own look at the final name (see `rename_step`).
        let items = sent.into_iter().map(|(r, up, a)| (r, (note(&up), a)));
        return one_by_one(steps, items, |rec, (note, sent_as)| {
            rename_step(ctx, slot, rec, started, note, sent_as)
        });
    }
    let conn = match slot.get(ctx) {
        Ok(c) => c,
        Err(e) => {
            let recs = sent.into_iter().map(|(r, _, _)| r).collect();
            steps.extend(all_down(recs, e));
            return Ok(());
        }
    };
    let results = {
        let moves: Vec<_> = sent
            .iter()
            .map(|(rec, up, _)| (job_of(rec), up.temp_path.as_str()))
            .collect();
        conn.rename_many(&moves)
    };
    let finals: Vec<String> = sent
        .iter()
        .map(|(r, _, _)| conn.final_path(&r.name))
        .collect();
    let mut doubts = Vec::new();
    let mut lost = false;
    for (((rec, up, sent_as), result), final_path) in sent.into_iter().zip(results).zip(finals) {
        let span = file_span(&rec);
        let _g = span.enter();
        match result {
            Ok(()) => {
                ctx.metrics
                    .transfer_seconds
                    .observe(started.elapsed().as_secs_f64());
                let id = rec.id;
                let step = verified(ctx, rec, final_path, note(&up), started, sent_as)?;
                steps.push((id, step));
            }
            // The reply is lost, not necessarily the rename: the entry stays `sent`,
            // and the next attempt looks before it does anything.
            Err(e) if e.scope() == Scope::Destination => {
                lost = true;
                steps.push((rec.id, Step::DestinationDown(e)));
            }
            // Refused (a name taken, a file held open on Windows): look, after the
            // batch's answers are all in.
            Err(e) => doubts.push((rec, sent_as, e)),
        }
    }
    if lost {
        slot.drop_conn();
    }
    let items = doubts.into_iter().map(|(r, a, e)| (r, (a, e)));
    one_by_one(steps, items, |rec, (sent_as, e)| {
        resolve_sent(ctx, slot, rec, started, sent_as, Some(e))
    })
}

/// `step` for each entry in turn; once the destination is down (a step of this batch
/// said so), the rest wait with it, still in their state: one timeout for the batch,
/// not one per file.
fn one_by_one<T>(
    steps: &mut Vec<(u64, Step)>,
    items: impl Iterator<Item = (Record, T)>,
    mut step: impl FnMut(Record, T) -> Result<Step, JournalError>,
) -> Result<(), JournalError> {
    for (rec, item) in items {
        let id = rec.id;
        if let Some(cause) = down_cause(steps) {
            steps.push((id, Step::DestinationDown(waits(&rec.name, &cause))));
            continue;
        }
        let span = file_span(&rec);
        let _g = span.enter();
        steps.push((id, step(rec, item)?));
    }
    Ok(())
}

/// What each file's error does to its entry, once the batch is through. Whether the
/// destination is to blame is asked once per batch and kind of error (a probe file
/// for a remote error, a ping for any other), not once per file; once it is down,
/// the rest wait with it and burn no attempt, as they would one file at a time.
fn finish_errors(
    ctx: &Ctx,
    slot: &mut Slot,
    errors: Vec<(Record, TransferError, Option<u64>)>,
    steps: &mut Vec<(u64, Step)>,
) -> Result<(), JournalError> {
    let (mut probed, mut pinged) = (None, None);
    for (rec, e, elapsed) in errors {
        let span = file_span(&rec);
        let _g = span.enter();
        let step = if e.scope() == Scope::Destination {
            slot.drop_conn();
            Step::DestinationDown(e)
        } else if let Some(cause) = down_cause(steps).filter(|_| is_remote(&e)) {
            Step::DestinationDown(waits(&rec.name, &cause))
        } else {
            let verdict = if is_remote(&e) {
                &mut probed
            } else {
                &mut pinged
            };
            let up = match (*verdict, slot.existing()) {
                (Some(v), _) => v,
                (None, Some(c)) => *verdict.insert(healthy(c.as_mut(), &e)),
                // No connection to ask: as one file at a time without one.
                (None, None) => true,
            };
            if up {
                blame(ctx, &rec, e, elapsed)?
            } else {
                slot.drop_conn();
                Step::DestinationDown(e)
            }
        };
        steps.push((rec.id, step));
    }
    Ok(())
}

fn is_remote(e: &TransferError) -> bool {
    matches!(e, TransferError::Remote(_))
}
