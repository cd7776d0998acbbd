//! The sled journal. The entry (one key in `entries`) is the truth; `by_name` and
//! `by_state` are indexes written just after it.
//!
//! Why not one sled transaction per transition: in sled 0.34 every multi-key atomic
//! write (a transaction or a batch) rolls the log buffer twice, i.e. two `pwrite` +
//! `sync_file_range` through sled's I/O threads, which made the journal the largest
//! cost of a delivery (~10 synced buffer writes per file). A single-key insert only
//! appends to the buffer. So a change is a short sequence of single-key writes under
//! the entry's lock stripe: an in-flight mark (`meta/inflight/<id>`), the entry, its
//! index keys, the mark's removal. sled recovers a prefix of its log, so after any
//! stop the marks that remain name every entry whose index keys may be half-written,
//! and `open` repairs exactly those from the entry.
//!
//! Durability is the caller's decision: `apply` writes, `flush` makes it survive a
//! crash of the process and, as far as sled can (see sled#1452), of the machine. The
//! pipeline flushes before every side effect that depends on the write (the archive
//! move after `verified`). The file system stays the ground truth: a lost journal is
//! rebuilt from the outbox, archive and quarantine.
//!
//! Writes and `open` are here; reads in `query`, the repairs `open` makes after an
//! unclean stop in `repair`.

use crate::keys;
use crate::machine::{Event, IllegalTransition, State};
use crate::record::{NewEntry, Record};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

mod compact;
mod query;
mod repair;
mod windows;

pub use compact::{Compaction, SwapFailed};
use repair::{repair_inflight, repair_live_index};
use windows::{Ring, Tally};
pub use windows::{Windows, DAY, HOUR};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "{path}: journal is in use by another process (is `plutus-sync run` already running?)"
    )]
    Locked { path: PathBuf },
    #[error("{path}: cannot open journal: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("{path}: journal schema version {found} is not the one this build reads ({expected})")]
    Schema {
        path: PathBuf,
        found: String,
        expected: u32,
    },
    #[error("journal entry #{0} does not exist")]
    NotFound(u64),
    #[error("journal entry #{id} ({name}): {source}")]
    Illegal {
        id: u64,
        name: String,
        source: IllegalTransition,
    },
    #[error("journal entry {key}: cannot decode: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("journal storage error: {0}")]
    Storage(#[from] sled::Error),
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;

const STRIPES: usize = 64;

#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// sled's page cache. The default (1 GiB) would make the service's RSS grow with
    /// the journal; 16 MiB is plenty for the live set.
    pub cache_capacity: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            cache_capacity: 16 * 1024 * 1024,
        }
    }
}

/// The open sled database and its trees. Behind one lock in [`Journal`] so that an
/// online compaction (`compact.rs`) can put a fresh copy in its place while the journal
/// stays open; everything else takes a clone of the `Arc` and never holds the lock.
pub(super) struct Store {
    db: sled::Db,
    /// sled's log file, for the `fdatasync` after sled's own flush: sled flushes with
    /// `sync_file_range`, which neither empties the drive's cache nor writes the file
    /// size, so without this a power cut can lose writes that `flush` returned for.
    log_file: Option<std::fs::File>,
    entries: sled::Tree,
    by_name: sled::Tree,
    by_state: sled::Tree,
    meta: sled::Tree,
    by_time: sled::Tree,
    /// The folder, held open when sled was opened through it (a compaction's copy).
    dir: Option<std::fs::File>,
}

impl Store {
    /// The journal's trees in `db`, and its log file (`db` in the folder `path`, where
    /// sled 0.34 writes every tree).
    fn of(db: sled::Db, path: &Path) -> sled::Result<Store> {
        Ok(Store {
            meta: db.open_tree(keys::TREE_META)?,
            entries: db.open_tree(keys::TREE_ENTRIES)?,
            by_name: db.open_tree(keys::TREE_BY_NAME)?,
            by_state: db.open_tree(keys::TREE_BY_STATE)?,
            by_time: db.open_tree(keys::TREE_BY_TIME)?,
            log_file: std::fs::File::open(path.join("db")).ok(),
            db,
            dir: None,
        })
    }
}

pub struct Journal {
    path: PathBuf,
    store: RwLock<Arc<Store>>,
    /// sled's page cache size, for the copy a compaction makes.
    cache_capacity: u64,
    /// While an online compaction copies the journal: the ids of the entries written
    /// since it began, which it copies again with every writer stopped.
    dirty: Mutex<Option<HashSet<u64>>>,
    /// Writes committed so far, and how many of them a flush has covered: the
    /// bookkeeping of the group commit in `flush`.
    writes: AtomicU64,
    flushed: AtomicU64,
    flush_lock: Mutex<()>,
    /// Set by a flush that failed: what it should have made durable may not be, and a
    /// later flush that succeeds proves nothing about it. Every later flush fails, so
    /// nothing that depends on durability (a rename, an archive move) happens again
    /// in this process, and no clean-close mark is written.
    poisoned: std::sync::atomic::AtomicBool,
    /// Serializes the read-modify-write of one entry and its index keys.
    stripes: [Mutex<()>; STRIPES],
    next_id: Mutex<u64>,
    /// How many half-written changes `open` found and repaired.
    recovered: usize,
    /// Entries per state (by `State::code`), counted from the state index once at
    /// open, after its repair, then kept with every write: `counts` (a metrics
    /// scrape, `journal stats`) costs nothing however large the journal grows.
    state_counts: [AtomicU64; 8],
    /// Deliveries and failures per minute over the last day, and the newest delivery's
    /// time (0: none): see `windows`.
    rings: Mutex<[Ring; 2]>,
    last_delivery: AtomicU64,
}

impl Journal {
    pub fn open(path: &Path, opts: &JournalOptions) -> Result<Journal> {
        let open_err = |source: sled::Error| {
            if source.to_string().contains("could not acquire lock") {
                JournalError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                JournalError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_capacity)
            .open()
            .map_err(open_err)?;
        let meta = db.open_tree(keys::TREE_META).map_err(open_err)?;
        let entries = db.open_tree(keys::TREE_ENTRIES).map_err(open_err)?;
        let by_name = db.open_tree(keys::TREE_BY_NAME).map_err(open_err)?;
        let by_state = db.open_tree(keys::TREE_BY_STATE).map_err(open_err)?;
        // Added without a schema bump: a journal from before it simply has no window
        // history yet (its first day's figures start at zero).
        let by_time = db.open_tree(keys::TREE_BY_TIME).map_err(open_err)?;

        let expected = keys::SCHEMA_VERSION.to_string();
        match meta.get(keys::META_SCHEMA)? {
            Some(v) if v.as_ref() == expected.as_bytes() => {}
            Some(v) => {
                return Err(JournalError::Schema {
                    path: path.to_path_buf(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: keys::SCHEMA_VERSION,
                })
            }
            None if entries.is_empty() => {
                meta.insert(keys::META_SCHEMA, expected.as_bytes())?;
                db.flush()?;
            }
            None => {
                return Err(JournalError::Schema {
                    path: path.to_path_buf(),
                    found: "none".into(),
                    expected: keys::SCHEMA_VERSION,
                })
            }
        }
        // The id counter: the stored one, or past the newest entry if that is further
        // (a crash can lose the counter's last write but not an entry written after it).
        let stored = meta
            .get(keys::META_NEXT_ID)?
            .and_then(|v| keys::parse_id(&v));
        let past_last = match entries.last()? {
            Some((k, _)) => keys::parse_id(&k).map_or(1, |id| id + 1),
            None => 1,
        };
        let next = stored.unwrap_or(1).max(past_last);
        let now = crate::now_ms();
        // The clean-close mark is taken before any repair writes: sled recovers a prefix
        // of its log, so a kill after a repair reached the log cannot leave the mark
        // behind. Its value is the tallies the close saved: a build that writes an
        // empty mark has none, and the counts are made from the indexes.
        let mark = meta.remove(keys::META_CLEAN_CLOSE)?;
        // sled can skip a torn blob at recovery, so an index key can be older than its
        // entry: after an unclean stop, every live entry is checked against the state
        // index, so none hides from recovery (the sweep skips its file as in progress).
        let unclean = mark.is_none() && !entries.is_empty();
        let mut recovered = repair_inflight(&meta, &entries, &by_name, &by_state, &by_time, now)?;
        // The saved tallies hold only if nothing was repaired (a writer thread that
        // panicked mid-change leaves a mark even in a clean close).
        let saved = mark
            .filter(|_| recovered == 0)
            .and_then(|raw| windows::load(&raw));
        if unclean {
            recovered += repair_live_index(&entries, &by_name, &by_state, &by_time, now)?;
        }
        if stored != Some(next) {
            meta.insert(keys::META_NEXT_ID, &keys::id(next))?;
        }
        // The clean-close mark's removal must be durable before anything else happens,
        // or a kill now would leave the next open believing this run closed cleanly.
        db.flush()?;
        // Counted from the indexes (one key scan each) unless a clean close saved them.
        let (counts, rings, last_delivery) = match saved {
            Some(saved) => saved,
            None => {
                let mut counts = [0u64; 8];
                for st in State::ALL {
                    counts[st.code() as usize] = by_state.scan_prefix([st.code()]).count() as u64;
                }
                let (rings, last) = windows::rebuild(&by_time, now)?;
                (counts, rings, last)
            }
        };
        let state_counts: [AtomicU64; 8] = counts.map(AtomicU64::new);
        // sled 0.34 writes every tree to one log file, `db`; values here are far below
        // its blob size, so nothing else it writes needs syncing per flush.
        let store = Store {
            db,
            log_file: std::fs::File::open(path.join("db")).ok(),
            entries,
            by_name,
            by_state,
            meta,
            by_time,
            dir: None,
        };
        Ok(Journal {
            path: path.to_path_buf(),
            store: RwLock::new(Arc::new(store)),
            cache_capacity: opts.cache_capacity,
            dirty: Mutex::new(None),
            writes: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_lock: Mutex::new(()),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            stripes: std::array::from_fn(|_| Mutex::new(())),
            next_id: Mutex::new(next),
            recovered,
            state_counts,
            rings: Mutex::new(rings),
            last_delivery: AtomicU64::new(last_delivery),
        })
    }

    /// The database as it is now. Writers call this after taking their entry's stripe,
    /// so a compaction (which holds every stripe while it swaps) never comes between
    /// the writes of one change.
    fn st(&self) -> Arc<Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Note, when the guard drops (after the writes, still under the entry's stripe:
    /// declare it after the stripe's guard), that entry `id` was written, for a
    /// compaction copying meanwhile. After, not before: a write that began before the
    /// compaction started noting could otherwise land after the copy read the entry.
    fn touched(&self, id: u64) -> Touched<'_> {
        Touched(self, id)
    }

    /// How many entries a stopped process left mid-change, whose index keys `open`
    /// repaired from the entry.
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    fn begin(&self, id: u64, name: &str) -> Result<()> {
        self.st().meta.insert(keys::inflight(id), name.as_bytes())?;
        Ok(())
    }

    fn end(&self, id: u64) -> Result<()> {
        self.st().meta.remove(keys::inflight(id))?;
        Ok(())
    }

    /// Every stripe, in order: no change to any entry can start or be half-done while
    /// these are held.
    fn lock_all(&self) -> Vec<std::sync::MutexGuard<'_, ()>> {
        self.stripes
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    fn stripe(&self, id: u64) -> std::sync::MutexGuard<'_, ()> {
        self.stripes[(id % STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new entry that is created already past `pending`: the entry and its first
    /// event are one write, so a crash cannot leave a `pending` entry behind for a
    /// file that must never be sent (quarantined) or sent again (a duplicate).
    pub fn insert_as(&self, new: NewEntry, event: Event) -> Result<Record> {
        self.insert_inner(new, Some(event))
    }

    /// A new `pending` entry.
    pub fn insert(&self, new: NewEntry) -> Result<Record> {
        self.insert_inner(new, None)
    }

    fn insert_inner(&self, new: NewEntry, event: Option<Event>) -> Result<Record> {
        let at = crate::now_ms();
        // Ids come from our own counter: sled's `generate_id` jumps by a million at
        // every reopening, and operators type ids.
        let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *next;
        let mut rec = Record::new(id, new, at);
        if let Some(event) = event {
            rec.apply(event, at, None)
                .map_err(|source| JournalError::Illegal {
                    id,
                    name: rec.name.clone(),
                    source,
                })?;
        }
        let _entry = self.stripe(id);
        let _touched = self.touched(id);
        self.st()
            .meta
            .insert(keys::META_NEXT_ID, &keys::id(id + 1))?;
        *next = id + 1;
        drop(next);
        self.begin(id, &rec.name)?;
        self.st().entries.insert(keys::id(id), encode(&rec))?;
        self.st()
            .by_name
            .insert(keys::by_name(&rec.name, id), &[])?;
        self.st()
            .by_state
            .insert(keys::by_state(rec.state(), id), &[])?;
        self.end(id)?;
        self.counted(rec.state(), 1);
        self.wrote();
        Ok(rec)
    }

    /// Keep the per-state count of `st` in step with its index (after the write).
    fn counted(&self, st: State, delta: i64) {
        let c = &self.state_counts[st.code() as usize];
        if delta >= 0 {
            c.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            c.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Apply one event to entry `id`, through the transition table, under the entry's lock.
    pub fn apply(&self, id: u64, event: Event) -> Result<Record> {
        self.apply_timed(id, event, None)
    }

    /// `apply`, recording how long the attempt that ended here took.
    pub fn apply_timed(&self, id: u64, event: Event, elapsed_ms: Option<u64>) -> Result<Record> {
        self.apply_at(id, event, elapsed_ms, None)
    }

    /// `apply_timed`, for a step taken at destination `site` (see `Record::destination`).
    pub fn apply_at(
        &self,
        id: u64,
        event: Event,
        elapsed_ms: Option<u64>,
        site: Option<crate::record::Site>,
    ) -> Result<Record> {
        let at = crate::now_ms();
        let _entry = self.stripe(id);
        let _touched = self.touched(id);
        let mut rec = self.get(id)?.ok_or(JournalError::NotFound(id))?;
        let from = rec.state();
        rec.apply_at(event, at, elapsed_ms, site)
            .map_err(|source| JournalError::Illegal {
                id,
                name: rec.name.clone(),
                source,
            })?;
        if from == rec.state() {
            // No index key changes: the entry write alone is atomic.
            self.st().entries.insert(keys::id(id), encode(&rec))?;
        } else {
            self.begin(id, &rec.name)?;
            self.st().entries.insert(keys::id(id), encode(&rec))?;
            self.st()
                .by_state
                .insert(keys::by_state(rec.state(), id), &[])?;
            self.st().by_state.remove(keys::by_state(from, id))?;
            let tally = Tally::of(Some(from), rec.state());
            if let Some(tally) = tally {
                self.st()
                    .by_time
                    .insert(keys::by_time(tally as u8, at, id), &[])?;
            }
            self.end(id)?;
            self.counted(rec.state(), 1);
            self.counted(from, -1);
            if let Some(tally) = tally {
                self.tallied(tally, at);
            }
        }
        self.wrote();
        Ok(rec)
    }

    /// Make every write the caller has made so far durable, against a kill of the
    /// process and a power cut alike (sled's flush, then an `fdatasync` of its log file).
    /// Callers that arrive together share one flush (group commit): a flush that started
    /// after my write covers it, so I need not start another.
    pub fn flush(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(JournalError::Storage(sled::Error::Io(
                std::io::Error::other(
                    "an earlier flush of the journal failed; restart the service",
                ),
            )));
        }
        let mine = self.writes.load(Ordering::SeqCst);
        if self.flushed.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        let _one_at_a_time = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.flushed.load(Ordering::SeqCst) >= mine {
            return Ok(());
        }
        // Everything counted here was applied before the flush starts, so it is in it.
        let target = self.writes.load(Ordering::SeqCst);
        let poison = |e: JournalError| {
            self.poisoned.store(true, Ordering::SeqCst);
            e
        };
        let st = self.st();
        st.db.flush().map_err(|e| poison(e.into()))?;
        if let Some(f) = &st.log_file {
            f.sync_data()
                .map_err(|e| poison(JournalError::Storage(sled::Error::Io(e))))?;
        }
        self.flushed.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    /// Called after each committed write.
    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Forget entry `id` and its index keys.
    pub fn remove(&self, id: u64) -> Result<()> {
        self.remove_if(id, |_| true).map(|_| ())
    }

    /// Forget entry `id` if `wanted` holds for its current record, read under
    /// the entry's lock; returns whether it went.
    /// Forget an entry that never was anything but `invalid`
    /// ([`Record::only_ever_invalid`]): its file left the outbox before it became
    /// valid, or is to be journaled afresh. False (and nothing changed) otherwise.
    pub fn drop_invalid(&self, id: u64) -> Result<bool> {
        let gone = self.remove_if(id, Record::only_ever_invalid)?;
        if gone {
            self.flush()?;
        }
        Ok(gone)
    }

    fn remove_if(&self, id: u64, wanted: impl FnOnce(&Record) -> bool) -> Result<bool> {
        let _entry = self.stripe(id);
        let Some(rec) = self.get(id)?.filter(|r| wanted(r)) else {
            return Ok(false);
        };
        let _touched = self.touched(id);
        // Index keys first: while the entry is still there, a reader that finds an
        // index key finds the entry too.
        self.begin(id, &rec.name)?;
        self.st().by_name.remove(keys::by_name(&rec.name, id))?;
        self.st().by_state.remove(keys::by_state(rec.state(), id))?;
        self.st().entries.remove(keys::id(id))?;
        self.end(id)?;
        self.counted(rec.state(), -1);
        self.wrote();
        Ok(true)
    }

    /// Remove `archived` entries that were archived before `cutoff` (ms since epoch),
    /// oldest first, at most `max` of them; returns how many went. Failed and
    /// quarantined entries are never pruned: they wait for an operator.
    pub fn prune_archived(&self, cutoff: u64, max: usize) -> Result<usize> {
        let mut removed = 0;
        for kv in self.st().by_state.scan_prefix([State::Archived.code()]) {
            if removed >= max {
                break;
            }
            let (k, _) = kv?;
            let Some(id) = keys::parse_id(&k) else {
                continue;
            };
            let Some(rec) = self.get(id)? else { continue };
            let old = |r: &Record| r.entered(State::Archived).unwrap_or(r.updated_at) < cutoff;
            // Ids grow with time, so the first young entry ends the scan.
            if !old(&rec) {
                break;
            }
            // Decided again under the entry's lock: a `replay --force` may have just
            // reopened it.
            if self.remove_if(id, |r| r.state() == State::Archived && old(r))? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn len(&self) -> usize {
        self.st().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.st().entries.is_empty()
    }
}

pub(super) struct Touched<'a>(&'a Journal, u64);

impl Drop for Touched<'_> {
    fn drop(&mut self) {
        let mut dirty = self.0.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = dirty.as_mut() {
            set.insert(self.1);
        }
    }
}

impl Drop for Journal {
    /// A clean close: the mark that tells the next `open` no check of the index is
    /// needed. A killed process never gets here, which is the point.
    fn drop(&mut self) {
        // Not after a failed flush or during a panic: the next open then checks.
        if self.poisoned.load(Ordering::SeqCst) || std::thread::panicking() {
            return;
        }
        // The mark carries the tallies: one key, so it cannot survive without them.
        let st = self.st();
        if st
            .meta
            .insert(keys::META_CLEAN_CLOSE, self.saved_tallies())
            .is_ok()
        {
            // And against a power cut, as `flush` does.
            if st.db.flush().is_ok() {
                if let Some(f) = &st.log_file {
                    let _ = f.sync_data();
                }
            }
        }
    }
}

fn encode(rec: &Record) -> Vec<u8> {
    serde_json::to_vec(rec).expect("a Record always serializes")
}

fn decode(key: &[u8], raw: &[u8]) -> Result<Record> {
    serde_json::from_slice(raw).map_err(|source| JournalError::Corrupt {
        key: keys::parse_id(key)
            .map(|id| format!("#{id}"))
            .unwrap_or_else(|| format!("{key:?}")),
        source,
    })
}

#[cfg(test)]
mod tests;
