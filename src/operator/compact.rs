//! `journal compact`: give back the space pruning freed. sled 0.34 does not reuse it
//! (see `plutus_state`'s `journal/compact.rs`), so the journal is copied, live keys
//! only, next to itself and the two directories are exchanged in one atomic
//! `renameat2(RENAME_EXCHANGE)`: at every instant the journal's path names a whole
//! journal, the old or the new. The service must be stopped (sled's lock says so).
//! sled's lock is an flock on the `db` file, so it moves with the old folder at the
//! exchange: from then on a starting service opens the new, whole journal, and the
//! old one (open here until the end) is only closed and removed.

use crate::config::Settings;
use anyhow::Context;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a compaction did.
#[derive(Debug)]
pub struct Compacted {
    pub entries: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

pub fn compact(s: &Settings) -> anyhow::Result<Compacted> {
    let path = &s.journal.path;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        anyhow::bail!("{}: names no journal folder", path.display());
    };
    // Beside the journal, whatever the path's spelling (a trailing slash would put
    // it inside).
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".compacting");
    let tmp = parent.join(tmp_name);
    let meta = fs::metadata(path).with_context(|| {
        format!(
            "{}: no journal here: the service has not run with this config ({})",
            path.display(),
            s.origin
        )
    })?;
    // The copy's files belong to whoever makes them: made by root, they would lock
    // the service's own account out of its journal.
    let me = rustix::process::geteuid().as_raw();
    if me != meta.uid() {
        anyhow::bail!(
            "{}: owned by uid {}, and this is uid {me}; run compact as the journal's owner (sudo -u plutus-sync plutus-sync journal compact), so the copy stays the service's",
            path.display(),
            meta.uid()
        );
    }
    // Opened (and repaired) first: only one process at a time gets this far.
    let j = match plutus_state::Journal::open(path, &plutus_state::JournalOptions::default()) {
        Err(plutus_state::JournalError::Locked { path }) => anyhow::bail!(
            "{}: the journal is in use; stop the service first (systemctl stop plutus-sync), then compact",
            path.display()
        ),
        r => r?,
    };
    // What an earlier compaction stopped midway left: a partial copy before the
    // exchange, or the old journal after it. Never the journal itself.
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("{}: cannot remove", tmp.display()))?;
    }
    let bytes_before = du(path);
    let entries = j
        .copy_to(&tmp)
        .with_context(|| format!("{}: cannot copy the journal", tmp.display()))?;
    sync_tree(&tmp).with_context(|| format!("{}: cannot sync the copy", tmp.display()))?;
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        path,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .with_context(|| {
        format!(
            "{} and {}: cannot exchange the journal and its copy (renameat2 RENAME_EXCHANGE; some file systems, NFS among them, lack it); the journal is untouched",
            path.display(),
            tmp.display()
        )
    })?;
    crate::archive::sync_dir(parent)?;
    // The old journal, now under the temporary name: closed, then removed.
    drop(j);
    fs::remove_dir_all(&tmp).with_context(|| format!("{}: cannot remove", tmp.display()))?;
    Ok(Compacted {
        entries,
        bytes_before,
        bytes_after: du(path),
    })
}

/// fsync every file and folder under `dir`: sled's flush does not (FACTS.md).
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sync_tree(&e.path())?;
        } else {
            fs::File::open(e.path())?.sync_all()?;
        }
    }
    crate::archive::sync_dir(dir)
}

fn du(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
