//! Compaction: a copy of the journal's live keys into a fresh database that takes the
//! old one's place, while the journal stays open. sled 0.34 does not reuse the space
//! pruning frees (measured by `benches/journal_scale.rs`: a journal that keeps 10,000
//! entries while 10,000 come and go per round grows by the same 25 MB every round),
//! so the one way to give it back is to copy what is live and let the copy take over.
//!
//! The copy runs beside the writers: entries are copied (and their index keys made
//! from them, so the copy's indexes are true to the entries it holds) while the
//! service goes on; the ids written meanwhile are noted (`Journal::touch`). Then, with
//! every writer stopped (all stripes and the flush lock held), those entries are copied
//! again, the small trees (meta, the windows' time keys) whole, the copy is flushed,
//! and the caller's `swap` puts its folder in the journal's place (the file system is
//! the operator side's: `src/operator/compact.rs`). Only then does the journal switch
//! to the copy, so no write can land in the old database after it was copied.
//!
//! sled 0.34 writes to its folder by path only at open (its config and snapshot
//! files); once open, it writes through the file descriptors it holds, so both
//! databases keep working across the exchange of their folders.

use super::windows::{restore, KEPT};
use super::{decode, Journal, JournalError, Result, Store};
use crate::keys;
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Why `swap` failed, and whether the folders were exchanged before it did (then the
/// copy is the journal, and the journal refuses every later flush: the exchange may not
/// be durable).
#[derive(Debug)]
pub struct SwapFailed {
    pub exchanged: bool,
    pub error: std::io::Error,
}

/// What a compaction did.
#[derive(Clone, Debug, Default)]
pub struct Compaction {
    /// Entries in the copy.
    pub entries: usize,
    /// Entries written while the copy ran, copied again (some more than once).
    pub copied_again: usize,
    /// Of those, the ones copied again with the writers stopped.
    pub copied_in_pause: usize,
    /// How long the writers were stopped (the second pass, the flush and the swap).
    pub paused_ms: u64,
    /// The whole compaction.
    pub took_ms: u64,
}

/// The trees copied while the writers run: the entries, the indexes made from them,
/// the windows' time keys (those of entries written meanwhile made again from their
/// histories), and the meta tree (its id counter copied again in the pause). A tree
/// this build does not know is copied whole in the pause; sled's default tree is
/// unused (and always exists).
fn copied_whole_before(tree: &[u8]) -> bool {
    [
        keys::TREE_ENTRIES,
        keys::TREE_BY_NAME,
        keys::TREE_BY_STATE,
        keys::TREE_BY_TIME,
        keys::TREE_META,
        "__sled__default",
    ]
    .iter()
    .any(|t| t.as_bytes() == tree)
}

impl Journal {
    /// Copy the journal into a new sled database at `dest` (which must not exist), then
    /// call `swap(dest)` with every writer stopped and the copy flushed: it must make
    /// the copy's files durable and put its folder in the journal's place (after which
    /// the old database is in `dest`); then the journal uses the copy. If anything
    /// fails before the exchange, the journal is untouched and goes on with the old
    /// database, and the caller removes `dest`; if `swap` fails after it, the journal
    /// uses the copy but is poisoned (see [`SwapFailed`]), and `dest` is left alone.
    pub fn compact_into(
        &self,
        dest: &Path,
        swap: impl FnOnce(&Path) -> std::result::Result<(), SwapFailed>,
    ) -> Result<Compaction> {
        let began = Instant::now();
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(JournalError::Storage(sled::Error::Io(
                std::io::Error::other("an earlier flush of the journal failed; not compacting"),
            )));
        }
        let open_err = |source| JournalError::Open {
            path: dest.to_path_buf(),
            source,
        };
        // sled builds its blob files' paths from its configured path at every write
        // (values above a quarter of a segment, ~128 KiB: an entry with a long
        // history), so the copy is opened through its folder's descriptor: the path
        // follows the folder across the exchange, to the journal's name.
        let io_err = |source: std::io::Error| JournalError::Open {
            path: dest.to_path_buf(),
            source: sled::Error::Io(source),
        };
        std::fs::create_dir(dest).map_err(io_err)?;
        let dir = std::fs::File::open(dest).map_err(io_err)?;
        let via = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string());
        let db = sled::Config::new()
            .path(&via)
            .cache_capacity(self.cache_capacity)
            .open()
            .map_err(open_err)?;
        let mut new = Store::of(db, &via).map_err(open_err)?;
        new.dir = Some(dir);
        *self.dirty.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashSet::new());
        // The bulk is made durable before the pause, so the pause's flush and the
        // caller's fsync have only the last round to write.
        let copied = self
            .copy_entries(&new)
            .and_then(|()| self.catch_up(&new))
            .and_then(|n| {
                new.db.flush()?;
                sync_files(dest).map_err(|e| JournalError::Storage(sled::Error::Io(e)))?;
                Ok(n)
            });
        let caught_up = match copied {
            Ok(n) => n,
            Err(e) => {
                *self.dirty.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Err(e);
            }
        };
        let all = self.lock_all();
        let flush = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        let paused = Instant::now();
        let dirty = self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let old = self.st();
        for &id in &dirty {
            recopy(&old, &new, id)?;
        }
        // The id counter (point reads: the old meta tree's marks leave many emptied
        // nodes behind, slow to walk), and any tree this build does not know.
        for key in [keys::META_NEXT_ID, keys::META_SCHEMA] {
            if let Some(v) = old.meta.get(key)? {
                new.meta.insert(key, v)?;
            }
        }
        for name in old.db.tree_names() {
            if !copied_whole_before(&name) {
                let (from, to) = (old.db.open_tree(&name)?, new.db.open_tree(&name)?);
                for kv in from.iter() {
                    let (k, v) = kv?;
                    to.insert(k, v)?;
                }
            }
        }
        new.db.flush()?;
        // The old database is written no more: nothing of it is left in memory to
        // land, through its configured path, in the folder the copy is about to take.
        old.db.flush()?;
        let swapped = swap(dest);
        if let Err(SwapFailed {
            exchanged: false,
            error,
        }) = swapped
        {
            return Err(JournalError::Storage(sled::Error::Io(error)));
        }
        // The copy is at the journal's path now: writes go there from here on.
        // Everything written so far is in it, and `swap` made it durable, unless it
        // says it could not (then nothing may depend on durability any more).
        let previous = std::mem::replace(
            &mut *self.store.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(new),
        );
        if let Err(SwapFailed { error, .. }) = swapped {
            self.poisoned.store(true, Ordering::SeqCst);
            return Err(JournalError::Storage(sled::Error::Io(std::io::Error::other(
                format!("the compacted journal took the old one's place, but that is not known to be durable ({error}); restart the service"),
            ))));
        }
        self.flushed
            .fetch_max(self.writes.load(Ordering::SeqCst), Ordering::SeqCst);
        let paused_ms = paused.elapsed().as_millis() as u64;
        drop(flush);
        drop(all);
        // Closing the old database (sled flushes and joins its threads) and counting
        // the copy (sled's `len` walks the tree) wait for no writer.
        drop((old, previous));
        Ok(Compaction {
            entries: self.st().entries.len(),
            copied_again: caught_up + dirty.len(),
            copied_in_pause: dirty.len(),
            paused_ms,
            took_ms: began.elapsed().as_millis() as u64,
        })
    }

    /// Copy again, writers still running, what they wrote during the copy, a few
    /// rounds while that shrinks: what is left for the pause is then only what was
    /// written during the last round.
    fn catch_up(&self, new: &Store) -> Result<usize> {
        let mut copied = 0;
        for _ in 0..3 {
            let ids = {
                let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
                match dirty.as_mut() {
                    Some(set) if set.len() > 64 => std::mem::take(set),
                    _ => break,
                }
            };
            let old = self.st();
            copied += ids.len();
            for id in ids {
                recopy(&old, new, id)?;
            }
        }
        Ok(copied)
    }

    /// Copy every entry, with the index keys it implies, and the windows' time keys
    /// into `new` (writers running).
    fn copy_entries(&self, new: &Store) -> Result<()> {
        let old = self.st();
        for kv in old.by_time.iter() {
            let (k, v) = kv?;
            new.by_time.insert(k, v)?;
        }
        for kv in old.meta.iter() {
            let (k, v) = kv?;
            // An in-flight mark names a change a panicked writer left; its entry is
            // noted as written, and its copy's index keys are made from it.
            if !k.starts_with(keys::META_INFLIGHT) {
                new.meta.insert(k, v)?;
            }
        }
        for kv in old.entries.iter() {
            let (k, raw) = kv?;
            let rec = decode(&k, &raw)?;
            new.entries.insert(&k, raw)?;
            new.by_name.insert(keys::by_name(&rec.name, rec.id), &[])?;
            new.by_state
                .insert(keys::by_state(rec.state(), rec.id), &[])?;
        }
        Ok(())
    }
}

/// Make entry `id` in `new` what it is in `old` now: the copy made while writers ran
/// may hold an older version (or one since removed), and its index keys.
fn recopy(old: &Store, new: &Store, id: u64) -> Result<()> {
    let key = keys::id(id);
    if let Some(raw) = new.entries.remove(key)? {
        let rec = decode(&key, &raw)?;
        new.by_name.remove(keys::by_name(&rec.name, id))?;
        new.by_state.remove(keys::by_state(rec.state(), id))?;
    }
    if let Some(raw) = old.entries.get(key)? {
        let rec = decode(&key, &raw)?;
        new.entries.insert(key, raw)?;
        new.by_name.insert(keys::by_name(&rec.name, id), &[])?;
        new.by_state.insert(keys::by_state(rec.state(), id), &[])?;
        // The time keys of transitions made during the copy (idempotent).
        restore(&new.by_time, &rec, crate::now_ms().saturating_sub(KEPT))?;
    }
    Ok(())
}

/// fsync every file directly in `dir` (sled's flush does not; FACTS.md).
fn sync_files(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::File::open(e.path())?.sync_all()?;
        }
    }
    Ok(())
}
