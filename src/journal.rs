//! What operators ask of the journal: list, show, stats, export, replay. The same
//! functions run inside the service (behind the control socket) and in the CLI when
//! the service is down, so the answer is the same either way. Blocking: sled reads.

use crate::config::Settings;
use globset::Glob;
use plutus_state::{now_ms, Event, Journal, JournalError, Record, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("--name {0:?}: {1}")]
    Glob(String, String),
    #[error("no journal entry for {0:?}")]
    NotFound(String),
}

/// `journal list` filters; all optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<State>,
    pub batch: Option<String>,
    /// Only entries detected within this many milliseconds.
    pub since_ms: Option<u64>,
    /// A glob on the file name.
    pub name: Option<String>,
    pub limit: Option<usize>,
}

/// Entries matching `f`, newest first.
pub fn list(j: &Journal, f: &ListFilter) -> Result<Vec<Record>, QueryError> {
    let glob = match &f.name {
        Some(g) => Some(
            Glob::new(g)
                .map_err(|e| QueryError::Glob(g.clone(), e.to_string()))?
                .compile_matcher(),
        ),
        None => None,
    };
    let cutoff = f.since_ms.map(|d| now_ms().saturating_sub(d));
    let limit = f.limit.unwrap_or(usize::MAX);
    let iter: Box<dyn Iterator<Item = Result<Record, JournalError>>> = match f.state {
        Some(st) => Box::new(j.newest_in_state(st)),
        None => Box::new(j.newest()),
    };
    let mut out = Vec::new();
    for rec in iter {
        let rec = rec?;
        if let Some(c) = cutoff {
            // Ids grow with detection time: past the window, everything older is too.
            if rec.detected_at < c {
                break;
            }
        }
        if f.batch.as_ref().is_some_and(|b| &rec.batch != b) {
            continue;
        }
        if glob.as_ref().is_some_and(|g| !g.is_match(&rec.name)) {
            continue;
        }
        out.push(rec);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// One entry by id (`12` or `#12`), or every entry ever made for a file name.
pub fn show(j: &Journal, key: &str) -> Result<Vec<Record>, QueryError> {
    if let Ok(id) = key.trim_start_matches('#').parse::<u64>() {
        if let Some(rec) = j.get(id)? {
            return Ok(vec![rec]);
        }
    }
    let recs = j.history_of(key)?;
    if recs.is_empty() {
        return Err(QueryError::NotFound(key.to_string()));
    }
    Ok(recs)
}

/// How the destination is doing, as the running service sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Destination {
    pub url: String,
    pub up: bool,
    /// Consecutive failed probes.
    pub failures: u32,
    /// When the next probe is due (ms since epoch), while backing off.
    pub next_probe_at: Option<u64>,
    pub last_error: Option<String>,
    /// What the last probe of the server found: does its rename refuse to overwrite,
    /// does fsync work. `None` until a connection was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_refuses_overwrite: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsync: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub counts: BTreeMap<State, u64>,
    /// Detection time of the oldest entry not yet verified (ms since epoch).
    pub oldest_pending_at: Option<u64>,
    pub last_delivery_at: Option<u64>,
    pub delivered_last_hour: u64,
    pub delivered_last_day: u64,
    pub failed_last_hour: u64,
    pub failed_last_day: u64,
    /// `None` when the service is not running.
    pub destination: Option<Destination>,
}

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

pub fn stats(j: &Journal) -> Result<Stats, QueryError> {
    let now = now_ms();
    let counts = j.counts()?.into_iter().collect();
    let mut oldest_pending_at = None;
    for st in [State::Pending, State::Sent] {
        if let Some(r) = j.in_state(st)?.first() {
            oldest_pending_at =
                Some(oldest_pending_at.map_or(r.detected_at, |o: u64| o.min(r.detected_at)));
        }
    }
    let (mut last_delivery_at, mut dh, mut dd) = (None, 0, 0);
    for rec in j.newest_in_state(State::Archived) {
        let rec = rec?;
        let at = rec.entered(State::Verified).unwrap_or(rec.updated_at);
        last_delivery_at = Some(last_delivery_at.map_or(at, |l: u64| l.max(at)));
        if at + DAY < now {
            break;
        }
        dd += 1;
        if at + HOUR >= now {
            dh += 1;
        }
    }
    // Failures are transitions into `failed`, whether or not the file was replayed
    // since: those of files still failed, and those in the history of entries detected
    // within the last two days (older ones that failed, were replayed and delivered
    // within the day are not seen; they are rare and the journal has no time index).
    let (mut fh, mut fd) = (0, 0);
    let mut count = |rec: &Record| {
        for t in rec.history.iter().filter(|t| t.to == State::Failed) {
            if t.at + DAY >= now {
                fd += 1;
            }
            if t.at + HOUR >= now {
                fh += 1;
            }
        }
    };
    let mut seen = std::collections::HashSet::new();
    for rec in j.in_state(State::Failed)? {
        seen.insert(rec.id);
        count(&rec);
    }
    for rec in j.newest() {
        let rec = rec?;
        if rec.detected_at + 2 * DAY < now {
            break;
        }
        if !seen.contains(&rec.id) {
            count(&rec);
        }
    }
    Ok(Stats {
        counts,
        oldest_pending_at,
        last_delivery_at,
        delivered_last_hour: dh,
        delivered_last_day: dd,
        failed_last_hour: fh,
        failed_last_day: fd,
        destination: None,
    })
}

/// A delivery receipt, for reconciling with what the ERP imported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Receipt {
    pub name: String,
    pub crc32: String,
    pub size: u64,
    pub batch: String,
    pub detected: String,
    pub sent: Option<String>,
    pub verified: Option<String>,
    pub archived: Option<String>,
    pub remote_path: Option<String>,
    pub archive_path: Option<String>,
}

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Receipts of files archived within `since_ms` (all, if `None`), oldest first.
pub fn export(j: &Journal, since_ms: Option<u64>) -> Result<Vec<Receipt>, QueryError> {
    let cutoff = since_ms.map(|d| now_ms().saturating_sub(d)).unwrap_or(0);
    let mut out = Vec::new();
    for rec in j.newest_in_state(State::Archived) {
        let rec = rec?;
        let at = rec.entered(State::Archived).unwrap_or(rec.updated_at);
        if at < cutoff {
            break;
        }
        out.push(Receipt {
            name: rec.name.clone(),
            crc32: rec.crc_hex(),
            size: rec.size,
            batch: rec.batch.clone(),
            detected: rfc3339(rec.detected_at),
            sent: rec.entered(State::Sent).map(rfc3339),
            verified: rec.entered(State::Verified).map(rfc3339),
            archived: Some(rfc3339(at)),
            remote_path: rec.remote_path.clone(),
            archive_path: rec.archive_path.clone(),
        });
    }
    out.reverse();
    Ok(out)
}

/// Which entries `replay` acts on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Batch(String),
    /// Every failed entry, or those that failed within this many milliseconds.
    Failed(Option<u64>),
    Names(Vec<String>),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Replayed {
    /// (id, name) put back to pending.
    pub replayed: Vec<(u64, String)>,
    /// (name, reason) left as they were.
    pub refused: Vec<(String, String)>,
    pub dry_run: bool,
}

/// Put failed entries back to `pending` with fresh attempts; with `force`, archived
/// ones too, moving the archived copy back into the outbox to be sent again. A
/// quarantined file named explicitly goes back to the outbox to be judged again.
pub fn replay(
    j: &Journal,
    s: &Settings,
    sel: &Selector,
    dry_run: bool,
    force: bool,
) -> Result<Replayed, QueryError> {
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
        let local = s.outbox.join(&rec.name);
        match rec.state() {
            State::Failed => {
                if !local.is_file() {
                    out.refused.push((
                        rec.name.clone(),
                        format!(
                            "the local copy is gone from {}; nothing to send",
                            s.outbox.display()
                        ),
                    ));
                    continue;
                }
                if !dry_run {
                    j.apply(rec.id, Event::Replay)?;
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
                    j.apply(
                        rec.id,
                        Event::Resend {
                            from_path: from.clone(),
                        },
                    )?;
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
    Ok(out)
}

/// Answer a control request from the journal alone: what the CLI does when the
/// service is down, and what the service does before adding what only it knows.
pub fn answer(
    j: &Journal,
    s: &Settings,
    req: &crate::control::Request,
) -> Result<serde_json::Value, String> {
    use crate::control::Request;
    let v = match req {
        Request::Ping => Ok(Ok(serde_json::json!({ "pid": std::process::id() }))),
        Request::List { filter } => list(j, filter).map(serde_json::to_value),
        Request::Show { key } => show(j, key).map(serde_json::to_value),
        Request::Stats => stats(j).map(serde_json::to_value),
        Request::Export { since_ms } => export(j, *since_ms).map(serde_json::to_value),
        Request::Replay {
            selector,
            dry_run,
            force,
        } => replay(j, s, selector, *dry_run, *force).map(serde_json::to_value),
    };
    match v {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("cannot encode the answer: {e}")),
        Err(e) => Err(e.to_string()),
    }
}
