//! `journal forget`: close a failed entry whose local copy is gone. Such an entry can
//! never be sent (replay refuses it: nothing to send), yet it would count as failed,
//! and keep the failed alert firing, forever. Closing it is an operator's decision,
//! journaled with who made it and why.

use super::protocol::Forgot;
use super::queries::QueryError;
use crate::config::Settings;
use plutus_state::{Event, Journal, Record, State};

/// Longest `--reason` kept: a sentence or two, not a file pasted by mistake.
pub const MAX_REASON: usize = 1000;

/// Close the failed entry `key` (a name: its newest entry; or `#ID`), unless it is not
/// failed or its file is still in the outbox: then `refused` says what to do instead.
pub fn forget(
    j: &Journal,
    s: &Settings,
    key: &str,
    reason: &str,
    by: &str,
    dry_run: bool,
) -> Result<Forgot, QueryError> {
    let rec = find(j, key)?;
    let mut out = Forgot {
        id: rec.id,
        name: rec.name.clone(),
        dry_run,
        refused: None,
    };
    let reason = reason.trim();
    if let Some(why) = refusal(j, s, &rec, reason)? {
        out.refused = Some(why);
        return Ok(out);
    }
    if !dry_run {
        j.apply(
            rec.id,
            Event::Forgotten {
                reason: reason.to_string(),
                by: by.to_string(),
            },
        )?;
        j.flush()?;
    }
    Ok(out)
}

/// `#ID` is that entry; a name is its newest entry (the one a new file would follow).
fn find(j: &Journal, key: &str) -> Result<Record, QueryError> {
    let by_id = match key.strip_prefix('#').map(str::parse::<u64>) {
        Some(Ok(id)) => j.get(id)?,
        _ => None,
    };
    match by_id {
        Some(r) => Ok(r),
        None => j
            .latest(key)?
            .ok_or_else(|| QueryError::NotFound(key.to_string())),
    }
}

/// Why `rec` may not be forgotten, with what to do instead; `None` if it may.
fn refusal(
    j: &Journal,
    s: &Settings,
    rec: &Record,
    reason: &str,
) -> Result<Option<String>, QueryError> {
    let name = crate::intake::shown(&rec.name);
    if reason.is_empty() {
        return Ok(Some("a reason is needed (--reason TEXT)".into()));
    }
    if reason.len() > MAX_REASON {
        return Ok(Some(format!(
            "the reason is longer than {MAX_REASON} bytes"
        )));
    }
    let why = match rec.state() {
        State::Failed => None,
        State::Forgotten => Some("already forgotten".to_string()),
        State::Archived => Some("archived (delivered): nothing to forget".to_string()),
        State::Quarantined => Some(format!(
            "quarantined, not failed: it does not count as failed; its file is in {}",
            s.source.quarantine.display()
        )),
        st => Some(format!(
            "is {st}: the service is still on it; only a failed entry can be forgotten"
        )),
    };
    if why.is_some() {
        return Ok(why);
    }
    // An older entry of a name the web shop wrote again: its file is the newer
    // entry's, and this one is history either way.
    let current = j.latest(&rec.name)?.is_none_or(|l| l.id == rec.id);
    let local = s.source.outbox.join(&rec.name);
    if current && local.symlink_metadata().is_ok() {
        return Ok(Some(format!(
            "its local copy is still in {}: send it with `plutus-sync replay {name}`, or, if it must never be sent, move it out of the outbox first",
            s.source.outbox.display()
        )));
    }
    Ok(None)
}
