//! From a candidate path to a journal entry: name rules, regular file, settled, one
//! streamed read for size + CRC32 + JSON check, then `pending` (or `invalid` while its
//! writer may still be at it, `quarantined`, or a duplicate of an earlier delivery).
//! Owns the quarantine folder.

use crate::config::Settings;
use plutus_state::{Event, Journal, JournalError, NewEntry, Record, State};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

/// Names we never take: not matching the pattern, hidden, or temp names of editors and
/// uploaders. Returns the name as UTF-8 if it may be taken.
pub(crate) fn name_rule<'a>(name: &'a OsStr, s: &Settings) -> Result<&'a str, &'static str> {
    let Some(name) = name.to_str() else {
        return Err("name is not UTF-8");
    };
    if name.starts_with('.') {
        return Err("hidden name");
    }
    if name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with('~')
        || name.ends_with(&s.destination.temp_suffix)
    {
        return Err("temporary name");
    }
    if !s.source.matcher.is_match(name) {
        return Err("name does not match the pattern");
    }
    Ok(name)
}

/// The portable name rule (`[source] names = "portable"`, the default): names a
/// Windows inbox takes as they are. Win32-OpenSSH reads `\\` as a path separator (a
/// name could climb out of the inbox) and `:` as an NTFS stream; `CON`, `NUL`, `COM1`…
/// are devices; a trailing dot or space is dropped; control characters forge log
/// lines. So: a letter or digit, then letters, digits, `.`, `_`, `-`, at most 151 in
/// all, no device name as the part before the first dot, no trailing dot.
pub(crate) fn portable_name(name: &str) -> Result<(), String> {
    let bad = |why: String| {
        Err(format!(
            "name {} {why}; never sent (names = \"portable\")",
            shown(name)
        ))
    };
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return bad("does not start with a letter or digit".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!(
            "holds {c:?}, which a Windows inbox does not take as it is"
        ));
    }
    if name.len() > 151 {
        return bad(format!("is {} characters long (at most 151)", name.len()));
    }
    if name.ends_with('.') {
        return bad("ends with a dot, which Windows drops".into());
    }
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && matches!(stem.as_bytes()[3], b'1'..=b'9'));
    if device {
        return bad(format!("is the Windows device {stem}"));
    }
    Ok(())
}

/// A name as it may be printed in a log line or on an operator's terminal: as it is
/// when it is plain printable text, else quoted with escapes (`"a\nb"`), so no name can
/// forge a line or send terminal escapes.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if name
        .chars()
        .all(|c| !c.is_control() && c != '"' && c != '\\')
    {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(format!("{name:?}"))
    }
}

/// Size, CRC32 and JSON verdict from one streamed read of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub size: u64,
    pub crc32: u32,
    /// `Err(reason)` when the content is not well-formed JSON.
    pub json: Result<(), String>,
}

struct Tee<R> {
    inner: R,
    hasher: crc32fast::Hasher,
    size: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// What opening an outbox file found.
#[derive(Debug)]
pub(crate) enum Opened {
    /// A regular file, opened; its metadata from the handle (`fstat`), not the name.
    File(fs::File, fs::Metadata),
    /// Something that is not taken, with the reason for the log line.
    Refused(&'static str),
    /// No file under the name.
    Gone,
}

/// Open an outbox file the one safe way: the outbox is untrusted input. Never through
/// a symbolic link (`O_NOFOLLOW`: a link to a secret or to `/dev/zero` is refused, not
/// read), never blocking (`O_NONBLOCK`: a FIFO with no writer would hang a worker),
/// and only a regular file with one name, judged on the handle (`fstat`), so a name
/// swapped between a check and the open cannot slip through. Every read of the handle
/// must still be bounded by the size expected.
pub(crate) fn open_regular(path: &Path) -> io::Result<Opened> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Look before opening: opening a device can do something by itself (a tape
    // rewinds, a modem line hangs up), whatever is read after. The `fstat` below
    // still decides, since the name can change between the two.
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) => return Ok(Opened::Refused(kind_of(&m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Gone),
        Err(e) => return Err(e),
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Opened::Refused("a symbolic link (never followed)"))
        }
        // A socket file cannot be opened at all.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(Opened::Refused("a socket")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Gone),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    Ok(if meta.file_type().is_file() && meta.nlink() > 1 {
        // Another name for a file elsewhere (the web shop's account could link any
        // file it can reach on this file system): not an order it wrote here.
        Opened::Refused("a hard link (the file has other names)")
    } else if meta.file_type().is_file() {
        Opened::File(file, meta)
    } else {
        Opened::Refused(kind_of(&meta))
    })
}

/// What a file that is not a regular file is, for the log line.
fn kind_of(m: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    if ft.is_symlink() {
        "a symbolic link (never followed)"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "a device"
    }
}

/// Files up to this size are read into memory and checked with the slice parser,
/// which is several times faster than the reader's byte-at-a-time path; orders are a
/// few KB. Larger files are streamed.
const SMALL: usize = 256 * 1024;

/// Read `r` once for its size, CRC32 and JSON check.
pub fn scan(mut r: impl Read) -> io::Result<Scan> {
    let mut head = Vec::with_capacity(16 * 1024);
    (&mut r).take(SMALL as u64 + 1).read_to_end(&mut head)?;
    if head.len() <= SMALL {
        return Ok(Scan {
            size: head.len() as u64,
            crc32: crc32fast::hash(&head),
            json: verdict(serde_json::from_slice(&head))?,
        });
    }
    scan_stream(io::Cursor::new(head).chain(r))
}

/// The JSON parser pulls the bytes, the CRC32 sees them on the way. The parser
/// discards what it reads (`IgnoredAny`), so memory stays flat whatever the size.
fn scan_stream(r: impl Read) -> io::Result<Scan> {
    let mut rd = BufReader::with_capacity(
        64 * 1024,
        Tee {
            inner: r,
            hasher: crc32fast::Hasher::new(),
            size: 0,
        },
    );
    let json = verdict(serde_json::from_reader(&mut rd))?;
    // Whatever the parser left unread still belongs to the file's CRC32.
    io::copy(&mut rd, &mut io::sink())?;
    let tee = rd.into_inner();
    Ok(Scan {
        size: tee.size,
        crc32: tee.hasher.finalize(),
        json,
    })
}

/// The parser's answer as the operator will read it; a read error stays an error.
fn verdict(parsed: serde_json::Result<serde::de::IgnoredAny>) -> io::Result<Result<(), String>> {
    match parsed {
        Ok(_) => Ok(Ok(())),
        Err(e) if e.is_io() => Err(io::Error::other(e)),
        Err(e) if e.is_eof() && e.line() == 1 && e.column() == 0 => {
            Ok(Err("empty file".to_string()))
        }
        Err(e) => Ok(Err(format!("not well-formed JSON: {e}"))),
    }
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
    fn names_a_windows_inbox_would_misread_are_not_portable() {
        for bad in [
            "x\\..\\..\\evil.json",
            "a:b.json",
            "CON.json",
            "con.json",
            "lpt9.backup.json",
            "order.json.",
            "order .json",
            "order\nINFO forged.json",
            "-order.json",
            "ordér.json",
        ] {
            assert!(portable_name(bad).is_err(), "{bad:?} passed");
        }
        for good in [
            "order-2026-000001.json",
            "CONSOLE.json",
            "com10.json",
            "a_b.c-d.json",
        ] {
            assert_eq!(portable_name(good), Ok(()), "{good}");
        }
        let why = portable_name("order\nINFO forged.json").unwrap_err();
        assert!(!why.contains('\n'), "{why}");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown("order-1.json"), "order-1.json");
    }

    #[test]
    fn one_read_gives_size_crc_and_json_verdict() {
        let data = br#"{"order": "2026-000001", "lines": [1, 2, 3]}  "#;
        let s = scan(&data[..]).unwrap();
        assert_eq!(s.size, data.len() as u64);
        assert_eq!(s.crc32, crc32fast::hash(data));
        assert_eq!(s.json, Ok(()));
    }

    #[test]
    fn invalid_and_empty_files_are_named_as_such() {
        let s = scan(&b"{\"order\": "[..]).unwrap();
        assert!(s.json.unwrap_err().starts_with("not well-formed JSON"));
        assert_eq!(scan(&b""[..]).unwrap().json, Err("empty file".into()));
        let trailing = b"{} x";
        let s = scan(&trailing[..]).unwrap();
        assert!(s.json.is_err());
        assert_eq!(
            s.crc32,
            crc32fast::hash(trailing),
            "the CRC covers bytes after the error too"
        );
    }

    #[test]
    fn files_either_side_of_the_in_memory_limit_get_the_same_answers() {
        for len in [SMALL - 1, SMALL, SMALL + 1, 3 * SMALL] {
            let mut good = vec![b' '; len];
            good[0] = b'[';
            good[len - 1] = b']';
            let mut bad = good.clone();
            bad[len - 2] = b','; // `[   ,]`: the error is in the file's last bytes
            for (data, ok) in [(&good, true), (&bad, false)] {
                let fast = scan(&data[..]).unwrap();
                let slow = scan_stream(&data[..]).unwrap();
                assert_eq!(fast.size, len as u64);
                assert_eq!(fast.crc32, crc32fast::hash(data));
                assert_eq!((fast.size, fast.crc32), (slow.size, slow.crc32));
                assert_eq!(fast.json.is_ok(), ok, "{len}: {:?}", fast.json);
                assert_eq!(fast.json, slow.json, "{len}");
            }
        }
    }

    #[test]
    fn a_large_file_is_streamed_not_loaded() {
        // 64 MiB of JSON from a generator: if scan buffered it whole, this would still
        // pass, so the bound is the reader's: it never hands out more than asked.
        struct Gen(u64);
        impl Read for Gen {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Ok(0);
                }
                assert!(buf.len() <= 64 * 1024, "read of {} bytes", buf.len());
                let n = buf.len().min(self.0 as usize);
                buf[..n].fill(b' ');
                if self.0 as usize == n {
                    buf[n - 2] = b'{';
                    buf[n - 1] = b'}';
                }
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let s = scan(Gen(64 << 20)).unwrap();
        assert_eq!(s.size, 64 << 20);
        assert_eq!(s.json, Ok(()));
    }

    #[test]
    fn name_rules_take_only_matching_visible_final_names() {
        let s = crate::config::demo(Path::new("/tmp/x"));
        for ok in ["order-2026-000001.json", "-x.json", "a b \"q\" ü.json"] {
            assert_eq!(name_rule(OsStr::new(ok), &s), Ok(ok));
        }
        for bad in [
            ".order.json",
            "order.json.part",
            "order.json.tmp",
            "order.json~",
            "order.xml",
            "order.tmp",
        ] {
            assert!(name_rule(OsStr::new(bad), &s).is_err(), "{bad}");
        }
    }

    #[test]
    fn batch_ids_sort_by_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let b = batch_id(t);
        assert_eq!(b.len(), 13);
        assert!(b < batch_id(t + Duration::from_secs(60)));
    }
}
