//! Compaction: give back the space pruning freed. sled 0.34 does not reuse it (see
//! `plutus_state`'s `journal/compact.rs`), so the journal is copied, live keys only,
//! next to itself and the two directories are exchanged in one atomic
//! `renameat2(RENAME_EXCHANGE)`: at every instant the journal's path names a whole
//! journal, the old or the new. sled's lock is an flock on the `db` file, so it moves
//! with the old folder at the exchange: from then on a starting process opens (or is
//! refused by the lock of) the new, whole journal, and the old one is only closed and
//! removed. The running service does this itself when the journal has grown
//! (`service/housekeeping.rs`); `journal compact` does it with the service stopped.

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
    /// How long writes waited (see `plutus_state::Compaction`).
    pub paused_ms: u64,
    pub took_ms: u64,
}

pub fn compact(s: &Settings) -> anyhow::Result<Compacted> {
    let path = &s.journal.path;
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
    let c = in_place(&j)?;
    // The old journal was closed when the copy took its place; this one closes
    // cleanly (its mark in the new journal).
    drop(j);
    Ok(c)
}

/// Compact the open journal `j` where it is (the service does this while it runs; see
/// `plutus_state`'s `journal/compact.rs`): its copy is made beside it, made durable, and
/// exchanged with it in one `renameat2(RENAME_EXCHANGE)`; the old one is removed.
pub fn in_place(j: &plutus_state::Journal) -> anyhow::Result<Compacted> {
    let path = j.path();
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        anyhow::bail!("{}: names no journal folder", path.display());
    };
    // Beside the journal, whatever the path's spelling (a trailing slash would put
    // it inside).
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".compacting");
    let tmp = parent.join(tmp_name);
    // What an earlier compaction stopped midway left: a partial copy before the
    // exchange, or the old journal after it. Never the journal itself.
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("{}: cannot remove", tmp.display()))?;
    }
    let bytes_before = du(path);
    let exchanged = std::cell::Cell::new(false);
    let swap = |copy: &Path| -> Result<(), plutus_state::SwapFailed> {
        let failed = |exchanged| move |error| plutus_state::SwapFailed { exchanged, error };
        sync_tree(copy).map_err(failed(false))?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            copy,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| failed(false)(e.into()))?;
        exchanged.set(true);
        crate::archive::sync_dir(parent).map_err(failed(true))
    };
    let done = j.compact_into(&tmp, swap);
    let done = match done {
        // The old journal is in `tmp` and the journal refuses every flush now: the
        // exchange may not be durable, and a restart sorts out which is where.
        Err(e) if exchanged.get() => {
            return Err(anyhow::Error::new(e).context(format!(
                "{}: compacted, but the exchange with {} is not known to be durable; the journal refuses further writes until the service restarts",
                path.display(),
                tmp.display()
            )))
        }
        done => done,
    };
    // The copy (after a failure) or the old journal (after the exchange): not needed.
    let removed = fs::remove_dir_all(&tmp);
    let c = done.with_context(|| {
        format!(
            "{}: cannot compact the journal (its copy at {}; the exchange needs renameat2 RENAME_EXCHANGE, which some file systems, NFS among them, lack); the journal is untouched",
            path.display(),
            tmp.display()
        )
    })?;
    removed.with_context(|| format!("{}: cannot remove the old journal", tmp.display()))?;
    Ok(Compacted {
        entries: c.entries,
        bytes_before,
        bytes_after: du(path),
        paused_ms: c.paused_ms,
        took_ms: c.took_ms,
    })
}

/// When the journal is compacted: once it is twice the size it had after the last
/// compaction (or at the start) and has grown by at least `growth` bytes. sled 0.34
/// never reuses what pruning frees, so without this the journal grows by every
/// order's writes for ever; with it, its size saws between the live keys' size and
/// twice that (or that plus `growth`, for a small journal).
pub fn due(now: u64, reference: u64, growth: u64) -> bool {
    now >= reference.saturating_mul(2) && now - reference >= growth
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

pub(crate) fn du(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_compaction_is_due_once_the_journal_doubled_and_grew_by_the_least_growth() {
        const MIB: u64 = 1 << 20;
        assert!(!due(100 * MIB, 60 * MIB, 64 * MIB), "not doubled");
        assert!(!due(10 * MIB, 4 * MIB, 64 * MIB), "doubled, grew 6 MiB");
        assert!(due(128 * MIB, 64 * MIB, 64 * MIB));
        assert!(due(70 * MIB, 4 * MIB, 64 * MIB));
        assert!(!due(3 * MIB, 4 * MIB, 1), "smaller than after the last");
    }
}
