//! What operators ask of the journal: list, show, stats, export. The same functions
//! run inside the service (behind the control socket) and in the CLI when the service
//! is down, so the answer is the same either way. Blocking: sled reads.

use super::protocol::{ListFilter, Receipt, Stats};
use globset::Glob;
use plutus_state::{now_ms, Journal, JournalError, Record, State};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("--name {0:?}: {1}")]
    Glob(String, String),
    #[error("no journal entry for {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
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

pub fn stats(j: &Journal) -> Result<Stats, QueryError> {
    let now = now_ms();
    let counts = j.counts()?.into_iter().collect();
    let mut oldest_pending_at = None;
    for st in [State::Pending, State::Sent] {
        // The first key of the state's index: never the whole list.
        if let Some(r) = j.oldest_in_state(st)? {
            oldest_pending_at =
                Some(oldest_pending_at.map_or(r.detected_at, |o: u64| o.min(r.detected_at)));
        }
    }
    // Per-minute counters the journal keeps with every transition: no entry is read.
    let w = j.windows(now);
    Ok(Stats {
        counts,
        oldest_pending_at,
        last_delivery_at: j.last_delivery_at(),
        delivered_last_hour: w.delivered_last_hour,
        delivered_last_day: w.delivered_last_day,
        failed_last_hour: w.failed_last_hour,
        failed_last_day: w.failed_last_day,
        destination: None,
        backup: None,
        failed_over_since: None,
    })
}

pub(crate) fn rfc3339(ms: u64) -> String {
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
            attempts: rec.attempts_made(),
            destination: rec.destination,
        });
    }
    out.reverse();
    Ok(out)
}
