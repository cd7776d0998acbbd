//! `replay`: failed entries back to `pending`; archived ones (with `force`) and named
//! quarantined ones back into the outbox.

use super::protocol::{Replayed, Selector};
use super::queries::QueryError;
use crate::config::Settings;
use plutus_state::{now_ms, Caller, Event, Journal, JournalError, Record, Site, State};
use std::path::Path;
use tracing::info;

/// Put failed entries back to `pending` with fresh attempts; with `force`, archived
/// ones too, moving the archived copy back into the outbox to be sent again. A
/// quarantined file named explicitly goes back to the outbox to be judged again.
/// Each change is journaled (failed, archived) and logged (all three) with `by`.
/// How to replay: `dry_run`, `force` (archived ones too), `to` (bind them to that
/// destination, `replay --to`).
pub struct How {
    pub dry_run: bool,
    pub force: bool,
    pub to: Option<Site>,
}

pub fn replay(
    j: &Journal,
    s: &Settings,
    sel: &Selector,
    how: &How,
    by: &Caller,
) -> Result<Replayed, QueryError> {
    let How { dry_run, force, to } = *how;
    if to == Some(Site::Backup) && s.destination.backup.is_none() {
        return Err(QueryError::Refused(
            "--to backup: the config has no [destination.backup]".into(),
        ));
    }
    let mut unknown = Vec::new();
    // A failed entry whose name has a newer entry (the web shop wrote the order again,
    // and that was delivered) is history, not work.
    let current = |r: &Record| -> Result<bool, JournalError> {
        Ok(j.latest(&r.name)?.is_none_or(|l| l.id == r.id))
    };
    let candidates: Vec<Record> = match sel {
        Selector::Batch(b) => {
            let mut v = Vec::new();
            for st in [State::Failed, State::Archived] {
                for r in j.in_state(st)? {
                    if &r.batch == b && (st == State::Failed || force) && current(&r)? {
                        v.push(r);
                    }
                }
            }
            v
        }
        Selector::Failed(since) => {
            let cutoff = since.map(|d| now_ms().saturating_sub(d)).unwrap_or(0);
            let mut v = Vec::new();
            for r in j.in_state(State::Failed)? {
                if r.entered(State::Failed).unwrap_or(r.updated_at) >= cutoff && current(&r)? {
                    v.push(r);
                }
            }
            v
        }
        Selector::Names(names) => {
            let mut v = Vec::new();
            for n in names {
                match j.latest(n)? {
                    Some(r) => v.push(r),
                    None => unknown.push((n.clone(), "no journal entry for this name".to_string())),
                }
            }
            v
        }
    };
    let mut out = Replayed {
        dry_run,
        refused: unknown,
        ..Replayed::default()
    };
    for rec in candidates {
        let local = s.source.outbox.join(&rec.name);
        match rec.state() {
            State::Failed => {
                if !local.is_file() {
                    out.refused.push((
                        rec.name.clone(),
                        format!(
                            "the local copy is gone from {}; nothing to send",
                            s.source.outbox.display()
                        ),
                    ));
                    continue;
                }
                if !dry_run {
                    j.apply_at(
                        rec.id,
                        Event::Replay {
                            by: Some(by.clone()),
                        },
                        None,
                        to,
                    )?;
                    let to = to.map(|t| format!(" to the {t}")).unwrap_or_default();
                    info!(file = %crate::intake::shown(&rec.name), id = rec.id, uid = by.uid, "replay of a failed file{to} by {by}");
                }
                out.replayed.push((rec.id, rec.name.clone()));
            }
            State::Archived if force => {
                let Some(from) = rec.archive_path.clone().filter(|p| Path::new(p).is_file()) else {
                    out.refused
                        .push((rec.name.clone(), "its archived copy is gone".into()));
                    continue;
                };
                if local.exists() {
                    out.refused.push((
                        rec.name.clone(),
                        format!("{} already holds a file of that name", local.display()),
                    ));
                    continue;
                }
                if !dry_run {
                    // Journal first: were we to stop between the two steps, the entry is
                    // pending and the file still in the archive, where nothing is lost.
                    j.apply_at(
                        rec.id,
                        Event::Resend {
                            from_path: from.clone(),
                            by: Some(by.clone()),
                        },
                        None,
                        to,
                    )?;
                    info!(file = %crate::intake::shown(&rec.name), id = rec.id, uid = by.uid, "forced re-send from the archive by {by}");
                    // Durable first: were the move to happen and the `resend` write be
                    // lost, the file would look like a duplicate and never be sent.
                    j.flush()?;
                    // Never over a file the web shop just wrote under the name, and in
                    // one step: a link + unlink would show intake a file with two names,
                    // which the outbox's rules refuse.
                    let moved =
                        crate::archive::rename_noreplace(std::path::Path::new(&from), &local);
                    if let Err(e) = moved {
                        j.apply(
                            rec.id,
                            Event::Failed {
                                error: format!(
                                    "{from} -> {}: cannot move back for re-sending: {e}",
                                    local.display()
                                ),
                            },
                        )?;
                        out.refused.push((
                            rec.name.clone(),
                            format!("cannot move {from} back to the outbox: {e}"),
                        ));
                        continue;
                    }
                }
                out.replayed.push((rec.id, rec.name.clone()));
            }
            State::Archived => out.refused.push((
                rec.name.clone(),
                "already archived (delivered); add --force to send it again from the archive"
                    .into(),
            )),
            // Named by the operator: the quarantined file goes back to the outbox,
            // where intake judges it afresh (a writer that paused too long may have
            // finished it in the quarantine). The entry stays `quarantined` as history;
            // the file gets a new one.
            State::Quarantined if matches!(sel, Selector::Names(_)) => {
                let Some(from) = rec
                    .quarantine_path
                    .clone()
                    .filter(|p| Path::new(p).is_file())
                else {
                    out.refused
                        .push((rec.name.clone(), "its quarantined copy is gone".into()));
                    continue;
                };
                if !dry_run {
                    // Never over a file the web shop wrote meanwhile under the name.
                    if let Err(e) = crate::archive::rename_noreplace(Path::new(&from), &local) {
                        out.refused.push((
                            rec.name.clone(),
                            format!(
                                "cannot move {from} back to {}: {e}",
                                local.display()
                            ),
                        ));
                        continue;
                    }
                    let mut note = std::ffi::OsString::from(&from);
                    note.push(".reason");
                    let _ = std::fs::remove_file(note);
                    // Not journaled: the entry stays `quarantined` as history, and the
                    // file gets a new entry when intake takes it.
                    info!(file = %crate::intake::shown(&rec.name), id = rec.id, uid = by.uid, "quarantined file put back in the outbox by {by}");
                }
                out.replayed.push((rec.id, rec.name.clone()));
            }
            State::Quarantined => out.refused.push((
                rec.name.clone(),
                format!(
                    "quarantined ({}); name it to put it back in the outbox (plutus-sync replay {})",
                    rec.last_error.as_deref().unwrap_or("invalid"),
                    crate::intake::shown(&rec.name)
                ),
            )),
            st => out.refused.push((
                rec.name.clone(),
                format!("is {st}: the service is already on it"),
            )),
        }
    }
    if dry_run {
        info!(
            uid = by.uid,
            "replay dry run by {by}: {} would go, {} refused",
            out.replayed.len(),
            out.refused.len()
        );
    }
    Ok(out)
}
