//! From a candidate path to a journal entry: name rules, regular file, settled, one
//! streamed read for size + CRC32 + JSON check, then `pending` (or `invalid` while its
//! writer may still be at it, `quarantined`, or a duplicate of an earlier delivery).
//! Owns the quarantine folder.
//!
//! The name rules are in `names`, the guarded open and the one bounded read in `read`;
//! here, the decision an entry is born from ([`take`]).

use crate::config::Settings;
use crate::untrusted::{open_regular, Opened};
use plutus_state::{Event, Journal, JournalError, NewEntry, Record, State};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

mod names;
mod read;

pub use names::shown;
pub(crate) use names::{name_rule, portable_name};
pub use read::scan;
pub use read::Scan;

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// How a candidate was found. A close or move event means the writer is done; a file
/// found by the sweep must first be unchanged for `settle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Watch,
    Sweep,
}

impl Found {
    pub fn as_str(self) -> &'static str {
        match self {
            Found::Watch => "watch",
            Found::Sweep => "sweep",
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    /// A new pending entry, ready to deliver.
    Pending(Record),
    /// Same name, size and CRC32 as an archived delivery: journaled as verified
    /// without sending, ready to archive.
    Duplicate {
        record: Record,
        of: u64,
    },
    Quarantined(Record),
    /// Not a valid order (yet): journaled `invalid`, left in the outbox, never sent.
    /// Look again after `recheck_in` (or on the writer's next close).
    Invalid {
        record: Record,
        recheck_in: Duration,
    },
    /// An `invalid` entry's file is still not valid and may still be written to:
    /// look again after this long.
    StillInvalid {
        id: u64,
        recheck_in: Duration,
    },
    /// An `invalid` entry's file went away (or is no longer taken) before it became
    /// valid: the entry is dropped if it never was anything else, else `failed`.
    Withdrawn {
        record: Record,
        why: &'static str,
        dropped: bool,
    },
    /// Not settled yet: look again after this long.
    Wait(Duration),
    /// Nothing to do, and why (for debug logs).
    Skip(&'static str),
}

/// Look at one candidate and journal it. `writing()`: whether the watch saw the file
/// written and not yet closed, so its writer may still be at it (asked again right
/// before a quarantine).
pub fn take(
    journal: &Journal,
    s: &Settings,
    path: &Path,
    found: Found,
    writing: impl Fn() -> bool,
) -> Result<Outcome, IntakeError> {
    let Some(fname) = path.file_name() else {
        return Ok(Outcome::Skip("no file name"));
    };
    let name = match name_rule(fname, s) {
        Ok(n) => n,
        Err(why) => {
            // A name the rules no longer take (the pattern changed) that was waiting
            // as `invalid`: it is no longer ours to judge.
            let waiting = match fname.to_str() {
                Some(n) => journal.latest(n)?.filter(|r| r.state() == State::Invalid),
                None => None,
            };
            return withdrawn(journal, waiting.as_ref(), why);
        }
    };
    let io_err = |source| IntakeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let latest = journal.latest(name)?;
    if latest.as_ref().is_some_and(|r| r.state().is_live()) {
        return Ok(Outcome::Skip("already in the journal"));
    }
    // An earlier look found this file not valid yet: it is judged again, and its entry
    // moves on (never a second entry for the same file).
    let waiting = latest.as_ref().filter(|r| r.state() == State::Invalid);
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return withdrawn(journal, waiting, "gone")
        }
        Err(e) => return Err(io_err(e)),
    };
    if !meta.file_type().is_file() {
        // A symlink or folder is left where it is: following a link could send a file
        // from anywhere on the machine.
        return withdrawn(journal, waiting, "not a regular file");
    }
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if found == Found::Sweep && age < s.source.settle {
        return Ok(Outcome::Wait(s.source.settle - age));
    }

    let (file, opened) = match open_regular(path).map_err(io_err)? {
        Opened::File(f, m) => (f, m),
        // Swapped for a link, a FIFO or a device since the look above: not taken.
        Opened::Refused(why) => return withdrawn(journal, waiting, why),
        Opened::Gone => return withdrawn(journal, waiting, "gone"),
    };
    let new = |size, crc32| NewEntry {
        name: name.to_string(),
        size,
        crc32,
        batch: batch_id(SystemTime::now()),
        source_path: path.display().to_string(),
        found_by: found.as_str().to_string(),
    };
    if opened.len() > s.source.max_size {
        let reason = format!(
            "{} bytes, larger than [source] max_size ({} bytes); never sent",
            opened.len(),
            s.source.max_size
        );
        drop(file);
        return set_aside(journal, s, path, new(opened.len(), 0), waiting, reason);
    }
    // Bounded by what the handle said: a file that grows while it is read is still
    // being written (and a device, had one slipped through, is never read to its end).
    let scan = scan((&file).take(opened.len() + 1)).map_err(io_err)?;
    if scan.size > opened.len() {
        return Ok(Outcome::Wait(s.source.settle));
    }
    // A failed file waits for an operator's replay; new content under its name (the
    // web shop wrote the order again) is a new file.
    if let Some(f) = latest.as_ref().filter(|r| r.state() == State::Failed) {
        if (f.size, f.crc32) == (scan.size, scan.crc32) {
            return Ok(Outcome::Skip("failed; waits for an operator's replay"));
        }
    }
    let new = new(scan.size, scan.crc32);

    // A name a Windows inbox would misread is set aside at once, whatever the content:
    // it cannot become valid by waiting.
    if s.source.portable_names {
        if let Err(reason) = portable_name(name) {
            return set_aside(journal, s, path, new, waiting, reason);
        }
    }

    if let Err(reason) = scan.json {
        // Its writer may not be done: a pause, a second open to append, a file renamed
        // in half-written. It stays where it is, never sent, and is set aside only once
        // nobody has written to it for `quarantine_after`.
        let quiet = quiet_for(&opened);
        if !writing() && quiet >= s.source.quarantine_after && unchanged_since(path, &file, &opened)
        {
            let reason = format!(
                "{reason} (unchanged for {})",
                humantime::format_duration(s.source.quarantine_after)
            );
            return set_aside(journal, s, path, new, waiting, reason);
        }
        let recheck_in = s
            .source
            .quarantine_after
            .saturating_sub(quiet)
            .max(Duration::from_millis(100));
        if let Some(w) = waiting {
            return Ok(Outcome::StillInvalid {
                id: w.id,
                recheck_in,
            });
        }
        // A close event can come before the writer is done (a `touch` first, then the
        // content): fresh content gets `settle` before it is even called invalid.
        if age < s.source.settle {
            return Ok(Outcome::Wait(s.source.settle - age));
        }
        let record = journal.insert_as(new, Event::Invalid { reason })?;
        return Ok(Outcome::Invalid { record, recheck_in });
    }

    // Its writer finished it: the same entry goes on with the content now there.
    let rehash = |w: &Record| {
        journal.apply(
            w.id,
            Event::Rehash {
                size: new.size,
                crc32: new.crc32,
            },
        )
    };
    if let Some(prev) = journal.find_archived(name, scan.size, scan.crc32)? {
        match waiting {
            // An `invalid` entry with a past (tried, replayed…) goes on as `pending`,
            // as a rewritten pending file does.
            Some(w) if !w.only_ever_invalid() => return Ok(Outcome::Pending(rehash(w)?)),
            // One that never was anything else makes way, so the duplicate is born
            // `verified` with its own size and CRC32, in one write. A crash between
            // the two leaves no entry and the file in the outbox: judged anew.
            Some(w) => {
                journal.drop_invalid(w.id)?;
            }
            None => {}
        }
        let archive_path = crate::archive::plan(&s.source.archive, name, SystemTime::now());
        // Born verified, in one write: never a `pending` entry that could be sent.
        let verified = Event::Verified {
            remote_path: prev.remote_path.clone().unwrap_or_default(),
            archive_path: archive_path.display().to_string(),
            note: Some(format!(
                "duplicate of #{} (delivered before); not sent again",
                prev.id
            )),
        };
        let rec = journal.insert_as(new, verified)?;
        journal.flush()?;
        return Ok(Outcome::Duplicate {
            record: rec,
            of: prev.id,
        });
    }

    Ok(Outcome::Pending(match waiting {
        Some(w) => rehash(w)?,
        None => journal.insert(new)?,
    }))
}

/// Whether the file under `path` is still the one read through `file`, unchanged
/// since `before` (the handle's metadata before the read): a quarantine must move
/// the file that was judged, not one a writer appended to or renamed over it since.
fn unchanged_since(path: &Path, file: &fs::File, before: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(now), Ok(named)) = (file.metadata(), fs::symlink_metadata(path)) else {
        return false;
    };
    let same = |a: &fs::Metadata, b: &fs::Metadata| {
        (
            a.dev(),
            a.ino(),
            a.len(),
            a.mtime(),
            a.mtime_nsec(),
            a.ctime(),
            a.ctime_nsec(),
        ) == (
            b.dev(),
            b.ino(),
            b.len(),
            b.mtime(),
            b.mtime_nsec(),
            b.ctime(),
            b.ctime_nsec(),
        )
    };
    same(before, &now) && same(before, &named)
}

/// How long nobody has changed the file: since the later of its last write (mtime)
/// and its last change of any kind, a rename in or a truncation included (ctime).
fn quiet_for(m: &fs::Metadata) -> Duration {
    use std::os::unix::fs::MetadataExt;
    let secs = |s: i64, ns: i64| {
        SystemTime::UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32)
    };
    let last = secs(m.mtime(), m.mtime_nsec()).max(secs(m.ctime(), m.ctime_nsec()));
    SystemTime::now().duration_since(last).unwrap_or_default()
}

/// The file of an `invalid` entry is no longer there to judge (removed, replaced by
/// something that is not a regular file, or no longer taken by the name rules): the
/// entry is dropped if it never was anything else, or kept as `failed`. Any other
/// candidate is simply skipped.
fn withdrawn(
    journal: &Journal,
    waiting: Option<&Record>,
    why: &'static str,
) -> Result<Outcome, IntakeError> {
    let Some(w) = waiting else {
        return Ok(Outcome::Skip(why));
    };
    if journal.drop_invalid(w.id)? {
        return Ok(Outcome::Withdrawn {
            record: w.clone(),
            why,
            dropped: true,
        });
    }
    // An entry with a past is kept, as `failed`, so its history stays.
    let record = journal.apply(
        w.id,
        Event::Failed {
            error: format!(
                "{why}: the file left the outbox (or stopped being taken) before it was a valid order again; nothing sent since"
            ),
        },
    )?;
    Ok(Outcome::Withdrawn {
        record,
        why,
        dropped: false,
    })
}

/// Quarantine at intake: a new file is born quarantined; an `invalid` entry moves on.
fn set_aside(
    journal: &Journal,
    s: &Settings,
    path: &Path,
    new: NewEntry,
    waiting: Option<&Record>,
    reason: String,
) -> Result<Outcome, IntakeError> {
    match waiting {
        Some(w) => {
            quarantine_entry(journal, s, w.id, path, &w.name, reason).map(Outcome::Quarantined)
        }
        None => born_quarantined(journal, s, path, new, reason),
    }
}

/// Quarantine a file at intake: it moves first, and its entry is born quarantined,
/// so no moment exists in which a crash leaves a `pending` entry recovery would send.
fn born_quarantined(
    journal: &Journal,
    s: &Settings,
    path: &Path,
    new: NewEntry,
    reason: String,
) -> Result<Outcome, IntakeError> {
    let dest = quarantine(s, path, &new.name, &reason).map_err(|source| IntakeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rec = journal.insert_as(
        new,
        Event::Quarantined {
            reason,
            path: dest.display().to_string(),
        },
    )?;
    Ok(Outcome::Quarantined(rec))
}

/// Quarantine the file of pending entry `id`: move it, then journal why and where.
pub(crate) fn quarantine_entry(
    journal: &Journal,
    s: &Settings,
    id: u64,
    path: &Path,
    name: &str,
    reason: String,
) -> Result<Record, IntakeError> {
    let dest = quarantine(s, path, name, &reason).map_err(|source| IntakeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(journal.apply(
        id,
        Event::Quarantined {
            reason,
            path: dest.display().to_string(),
        },
    )?)
}

/// Move an invalid file to quarantine (never over another file), with a `.reason`
/// note beside it so an operator sees why without the journal.
fn quarantine(s: &Settings, path: &Path, name: &str, reason: &str) -> io::Result<PathBuf> {
    fs::create_dir_all(&s.source.quarantine)?;
    let dest = crate::archive::unique(&s.source.quarantine.join(name));
    fs::rename(path, &dest)?;
    let mut note = dest.clone().into_os_string();
    note.push(".reason");
    fs::write(&note, format!("{reason}\n"))?;
    crate::archive::sync_dir(&s.source.quarantine)?;
    Ok(dest)
}

/// Batches are the minute a file was detected, in UTC: short, sortable, and the same
/// string in the logs and in `replay --batch`.
pub(crate) fn batch_id(t: SystemTime) -> String {
    let ts = humantime::format_rfc3339_seconds(t).to_string(); // 2026-11-23T11:47:50Z
    format!(
        "{}{}{}-{}{}",
        &ts[0..4],
        &ts[5..7],
        &ts[8..10],
        &ts[11..13],
        &ts[14..16]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_sort_by_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let b = batch_id(t);
        assert_eq!(b.len(), 13);
        assert!(b < batch_id(t + Duration::from_secs(60)));
    }
}
