//! The local archive: `archive/YYYY/MM/DD/<name>` (UTC), on the outbox's file system,
//! reached by rename and made durable by a directory fsync. A file is moved here only
//! given proof that its remote copy is verified: a journal entry in state `verified`.

use plutus_state::{Record, State};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ArchiveError {
    #[error("{name}: refusing to archive: journal state is {state}, not verified")]
    NotVerified { name: String, state: State },
    #[error("{name}: journal entry has no archive path")]
    NoPlan { name: String },
    #[error("{from} -> {to}: cannot archive: {source}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("{path}: not the file that was sent any more")]
    Replaced { path: PathBuf },
    #[error("{name}: the local file is gone from the outbox and not at {to}")]
    Lost { name: String, to: PathBuf },
}

/// Which file a path held, and in what state: to tell, before archiving, that the
/// file under the name is still the one whose bytes were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl LocalId {
    pub fn of(m: &fs::Metadata) -> LocalId {
        use std::os::unix::fs::MetadataExt;
        LocalId {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        }
    }
}

/// Where `name` goes if archived at `now`: a path not yet taken.
pub(crate) fn plan(root: &Path, name: &str, now: SystemTime) -> PathBuf {
    let ts = humantime::format_rfc3339_seconds(now).to_string();
    unique(
        &root
            .join(&ts[0..4])
            .join(&ts[5..7])
            .join(&ts[8..10])
            .join(name),
    )
}

/// `path`, or `path.1`, `path.2`, … : the first that does not exist. The archive and
/// quarantine never overwrite either.
pub fn unique(path: &Path) -> PathBuf {
    if fs::symlink_metadata(path).is_err() {
        return path.to_path_buf();
    }
    (1u32..)
        .map(|i| {
            let mut p = path.to_path_buf().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .expect("some suffix is free")
}

/// The name a file in the archive or quarantine was taken under: `unique` adds
/// `.1`, `.2`, … when the name was taken, so `name.json.1` is a second `name.json`
/// (if `is_order` says the stem is an order's name; otherwise the name is as it is).
pub(crate) fn original_name(fname: &str, is_order: impl Fn(&str) -> bool) -> &str {
    match fname.rsplit_once('.') {
        Some((stem, n))
            if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && is_order(stem) =>
        {
            stem
        }
        _ => fname,
    }
}

/// Size and CRC32 of a local file, in one streamed read.
fn content_of(path: &Path) -> io::Result<(u64, u32)> {
    use std::io::Read;
    // Never through a link or into a FIFO: the outbox is untrusted.
    let mut f = match crate::untrusted::open_regular(path)? {
        crate::untrusted::Opened::File(f, _) => f,
        crate::untrusted::Opened::Gone => return Err(io::ErrorKind::NotFound.into()),
        crate::untrusted::Opened::Refused(why) => {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why))
        }
    };
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut size = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok((size, h.finalize())),
            Ok(n) => {
                h.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Folders that archive moves touched and that need an fsync before the moves are
/// durable, gathered so a batch of moves pays for one fsync per folder.
#[derive(Debug, Default)]
pub(crate) struct Dirs {
    touched: std::collections::BTreeSet<PathBuf>,
    /// Created (or found) in this batch: `create_dir_all` once per day folder.
    made: std::collections::BTreeSet<PathBuf>,
}

impl Dirs {
    /// fsync every touched folder and the outbox; on failure, which folder and why.
    pub fn sync(self, outbox: &Path) -> Result<(), (PathBuf, io::Error)> {
        if self.touched.is_empty() {
            return Ok(());
        }
        for dir in self.touched.iter().map(PathBuf::as_path).chain([outbox]) {
            sync_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
        }
        Ok(())
    }
}

/// Move the verified local file `outbox/<name>` to the archive path the journal
/// recorded, or the next free name after it (never over a file): returns where it went.
/// Idempotent: a file already moved (crash before the journal said so) is found there
/// and counts as archived. The file under the name must still hold the bytes that were
/// delivered (and, with `sent`, be the very file they were read from), or nothing
/// moves. Not durable until `dirs` is synced.
pub(crate) fn move_to_archive(
    rec: &Record,
    outbox: &Path,
    sent: Option<LocalId>,
    dirs: &mut Dirs,
) -> Result<PathBuf, ArchiveError> {
    if rec.state() != State::Verified {
        return Err(ArchiveError::NotVerified {
            name: rec.name.clone(),
            state: rec.state(),
        });
    }
    let path = outbox.join(&rec.name);
    // A file replaced under the name (a new inode, another size or mtime) is caught by
    // its identity; one rewritten in place with the same size in the same mtime tick
    // only by its content. So the content is always compared: a re-read of a small
    // file the upload read moments ago, from the page cache.
    if let Some(sent) = sent {
        if let Ok(now) = fs::symlink_metadata(&path) {
            if LocalId::of(&now) != sent {
                return Err(ArchiveError::Replaced { path });
            }
        }
    }
    match content_of(&path) {
        Ok(got) if got != (rec.size, rec.crc32) => return Err(ArchiveError::Replaced { path }),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ArchiveError::Move {
                from: path.clone(),
                to: PathBuf::from(rec.archive_path.clone().unwrap_or_default()),
                source,
            })
        }
    }
    let to = PathBuf::from(
        rec.archive_path
            .as_deref()
            .ok_or_else(|| ArchiveError::NoPlan {
                name: rec.name.clone(),
            })?,
    );
    let from = outbox.join(&rec.name);
    let mv = |source| ArchiveError::Move {
        from: from.clone(),
        to: to.clone(),
        source,
    };
    let dir = to.parent().expect("archive paths have a parent");
    if !dirs.made.contains(dir) {
        // Folders created here are entries in their parents: those need an fsync too,
        // or a power cut can lose the day folder with the files in it.
        let mut missing = Vec::new();
        let mut d = dir;
        while fs::symlink_metadata(d).is_err() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        fs::create_dir_all(dir).map_err(mv)?;
        for m in missing {
            if let Some(parent) = m.parent() {
                dirs.touched.insert(parent.to_path_buf());
            }
        }
        dirs.made.insert(dir.to_path_buf());
    }
    // Never over an existing file: the planned name was free when `verified` was
    // written, but another entry of the same name may have taken it since.
    let mut target = to.clone();
    loop {
        match rename_noreplace(&from, &target) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => target = unique(&to),
            // The folder went away under us (not the file): try again later.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(&from).is_ok() =>
            {
                return Err(mv(e))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Moved by an earlier try whose folder sync or journal write may not
                // have happened: the planned name, or a free one after it, holds it.
                if let Some(found) = moved_earlier(&to, rec) {
                    dirs.touched.insert(dir.to_path_buf());
                    return Ok(found);
                }
                return Err(ArchiveError::Lost {
                    name: rec.name.clone(),
                    to,
                });
            }
            Err(e) => return Err(mv(e)),
        }
    }
    dirs.touched.insert(dir.to_path_buf());
    Ok(target)
}

/// Does `path` hold the entry's bytes?
fn same_content(path: &Path, rec: &Record) -> bool {
    content_of(path).is_ok_and(|got| got == (rec.size, rec.crc32))
}

/// Where an earlier move of this entry put the file: the planned path or one of the
/// `.N` names after it that holds the entry's bytes.
fn moved_earlier(planned: &Path, rec: &Record) -> Option<PathBuf> {
    std::iter::once(planned.to_path_buf())
        .chain((1u32..).map(|i| {
            let mut p = planned.to_path_buf().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        }))
        .take_while(|p| fs::symlink_metadata(p).is_ok())
        .find(|p| same_content(p, rec))
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`:
/// `renameat2(RENAME_NOREPLACE)`, or link + unlink on a file system without it.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plutus_state::{Event, Journal, JournalOptions, NewEntry};

    fn verified(dir: &Path, name: &str) -> Record {
        let j = Journal::open(&dir.join("journal"), &JournalOptions::default()).unwrap();
        let r = j
            .insert(NewEntry {
                name: name.into(),
                size: 2,
                crc32: 0,
                batch: "b".into(),
                source_path: "s".into(),
                found_by: "watch".into(),
            })
            .unwrap();
        j.apply(
            r.id,
            Event::Verified {
                remote_path: "r".into(),
                archive_path: dir
                    .join("archive/2026/11/23")
                    .join(name)
                    .display()
                    .to_string(),
                note: None,
            },
        )
        .unwrap()
    }

    /// Move one file and fsync both folders: [`move_to_archive`] for a batch of one.
    fn archive(
        rec: &Record,
        outbox: &Path,
        sent: Option<LocalId>,
    ) -> Result<PathBuf, ArchiveError> {
        let mut dirs = Dirs::default();
        let to = move_to_archive(rec, outbox, sent, &mut dirs)?;
        dirs.sync(outbox)
            .map_err(|(dir, source)| ArchiveError::Move {
                from: dir,
                to: to.clone(),
                source,
            })?;
        Ok(to)
    }

    #[test]
    fn the_original_name_of_a_uniqued_copy_drops_only_its_number() {
        let is_json = |n: &str| n.ends_with(".json");
        assert_eq!(original_name("order-1.json", is_json), "order-1.json");
        assert_eq!(original_name("order-1.json.1", is_json), "order-1.json");
        assert_eq!(original_name("order-1.json.12", is_json), "order-1.json");
        // Not a number, or not an order's name before it: the name as it is.
        assert_eq!(
            original_name("order-1.json.part", is_json),
            "order-1.json.part"
        );
        assert_eq!(original_name("notes.2", is_json), "notes.2");
    }

    #[test]
    fn a_file_replaced_after_it_was_sent_is_not_archived() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        fs::create_dir(&outbox).unwrap();
        fs::write(outbox.join("o.json"), b"{}").unwrap();
        let sent = LocalId::of(&fs::metadata(outbox.join("o.json")).unwrap());
        // Replaced the way careful writers do it: a new file renamed over the name.
        fs::write(dir.path().join("new"), b"[1]").unwrap();
        fs::rename(dir.path().join("new"), outbox.join("o.json")).unwrap();
        let rec = verified(dir.path(), "o.json");
        let err = archive(&rec, &outbox, Some(sent)).unwrap_err();
        assert!(matches!(err, ArchiveError::Replaced { .. }), "{err}");
        assert_eq!(
            fs::read(outbox.join("o.json")).unwrap(),
            b"[1]",
            "the new content stays"
        );
        // The same file, untouched, moves (when the journal has its content).
        let sent = LocalId::of(&fs::metadata(outbox.join("o.json")).unwrap());
        let mut rec = rec;
        (rec.size, rec.crc32) = (3, crc32fast::hash(b"[1]"));
        let to = archive(&rec, &outbox, Some(sent)).unwrap();
        assert_eq!(fs::read(to).unwrap(), b"[1]");
    }

    #[test]
    fn without_a_view_from_the_upload_the_content_must_match_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        fs::create_dir(&outbox).unwrap();
        // The journal says 2 bytes with CRC32 0; the file holds something else.
        fs::write(outbox.join("o.json"), b"{}").unwrap();
        let rec = verified(dir.path(), "o.json");
        let err = archive(&rec, &outbox, None).unwrap_err();
        assert!(matches!(err, ArchiveError::Replaced { .. }), "{err}");
        assert!(outbox.join("o.json").exists());
    }

    #[test]
    fn a_same_size_rewrite_in_place_within_one_mtime_tick_is_not_archived() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        fs::create_dir(&outbox).unwrap();
        let path = outbox.join("o.json");
        fs::write(&path, b"{}").unwrap();
        let before = fs::metadata(&path).unwrap();
        let sent = LocalId::of(&before);
        // Rewritten in place, same size, and the same mtime (the same tick of a coarse
        // clock): the identity cannot tell, the content can.
        fs::write(&path, b"[]").unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(before.modified().unwrap())
            .unwrap();
        assert_eq!(LocalId::of(&fs::metadata(&path).unwrap()), sent);
        let mut rec = verified(dir.path(), "o.json");
        rec.crc32 = crc32fast::hash(b"{}");
        let err = archive(&rec, &outbox, Some(sent)).unwrap_err();
        assert!(matches!(err, ArchiveError::Replaced { .. }), "{err}");
        assert_eq!(
            fs::read(&path).unwrap(),
            b"[]",
            "the update stays in the outbox"
        );
    }

    #[test]
    fn a_taken_archive_name_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        fs::create_dir(&outbox).unwrap();
        fs::write(outbox.join("o.json"), b"{}").unwrap();
        let mut rec = verified(dir.path(), "o.json");
        rec.crc32 = crc32fast::hash(b"{}");
        // Another entry of the same name was archived under the planned path after
        // this one's plan was made.
        let planned = PathBuf::from(rec.archive_path.clone().unwrap());
        fs::create_dir_all(planned.parent().unwrap()).unwrap();
        fs::write(&planned, b"earlier").unwrap();
        let to = archive(&rec, &outbox, None).unwrap();
        assert_ne!(to, planned);
        assert_eq!(fs::read(&planned).unwrap(), b"earlier");
        assert_eq!(fs::read(&to).unwrap(), b"{}");
        // A retry after the move (its journal write lost) finds it where it went.
        let again = archive(&rec, &outbox, None).unwrap();
        assert_eq!(again, to);
    }

    #[test]
    fn archive_paths_are_dated_and_never_reuse_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        let p = plan(dir.path(), "o.json", t);
        assert!(p.ends_with("2026/11/18/o.json"), "{}", p.display());
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, b"x").unwrap();
        assert!(plan(dir.path(), "o.json", t).ends_with("2026/11/18/o.json.1"));
    }
}
