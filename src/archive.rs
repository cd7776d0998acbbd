//! The local archive: `archive/YYYY/MM/DD/<name>` (UTC), on the outbox's file system,
//! reached by rename and made durable by a directory fsync. A file is moved here only
//! given proof that its remote copy is verified: a journal entry in state `verified`.

use plutus_state::{Record, State};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
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
pub fn plan(root: &Path, name: &str, now: SystemTime) -> PathBuf {
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

/// Size and CRC32 of a local file, in one streamed read.
fn content_of(path: &Path) -> io::Result<(u64, u32)> {
    use std::io::Read;
    let mut f = fs::File::open(path)?;
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

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Folders that archive moves touched and that need an fsync before the moves are
/// durable, gathered so a batch of moves pays for one fsync per folder.
#[derive(Debug, Default)]
pub struct Dirs {
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

/// Move one file and fsync both folders: [`move_to_archive`] for a batch of one.
pub fn archive(
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

/// Move the verified local file `outbox/<name>` to the archive path the journal
/// recorded. Idempotent: a file already moved (crash before the journal said so) is
/// found there and counts as archived. With `sent`, the file under the name must
/// still be the one the delivered bytes were read from, or nothing moves. Not durable
/// until `dirs` is synced.
pub fn move_to_archive(
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
    match sent {
        Some(sent) => {
            if let Ok(now) = fs::symlink_metadata(&path) {
                if LocalId::of(&now) != sent {
                    return Err(ArchiveError::Replaced { path });
                }
            }
        }
        // No view of the file from this run's upload (a restart, a duplicate, a retry
        // of the move): only its content can prove it is what was delivered.
        None => match content_of(&path) {
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
        },
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
        fs::create_dir_all(dir).map_err(mv)?;
        dirs.made.insert(dir.to_path_buf());
    }
    match fs::rename(&from, &to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if to.exists() {
                // Moved by an earlier try whose folder sync may not have happened.
                dirs.touched.insert(dir.to_path_buf());
                return Ok(to);
            }
            return Err(ArchiveError::Lost {
                name: rec.name.clone(),
                to,
            });
        }
        Err(e) => return Err(mv(e)),
    }
    dirs.touched.insert(dir.to_path_buf());
    Ok(to)
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
        // The same file, untouched, moves.
        let sent = LocalId::of(&fs::metadata(outbox.join("o.json")).unwrap());
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
