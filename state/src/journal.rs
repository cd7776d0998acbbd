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

use crate::keys;
use crate::machine::{Event, IllegalTransition, State};
use crate::record::{NewEntry, Record};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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

pub struct Journal {
    path: PathBuf,
    db: sled::Db,
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
    /// sled's log file, for the `fdatasync` after sled's own flush: sled flushes with
    /// `sync_file_range`, which neither empties the drive's cache nor writes the file
    /// size, so without this a power cut can lose writes that `flush` returned for.
    log_file: Option<std::fs::File>,
    /// Serializes the read-modify-write of one entry and its index keys.
    stripes: [Mutex<()>; STRIPES],
    next_id: Mutex<u64>,
    /// How many half-written changes `open` found and repaired.
    recovered: usize,
    /// Entries per state (by `State::code`), counted from the state index once at
    /// open, after its repair, then kept with every write: `counts` (a metrics
    /// scrape, `journal stats`) costs nothing however large the journal grows.
    state_counts: [AtomicU64; 8],
    entries: sled::Tree,
    by_name: sled::Tree,
    by_state: sled::Tree,
    meta: sled::Tree,
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
        let mut recovered = repair_inflight(&meta, &entries, &by_name, &by_state)?;
        // sled can skip a torn blob at recovery, so an index key can be older than its
        // entry: after an unclean stop, every live entry is checked against the state
        // index, so none hides from recovery (the sweep skips its file as in progress).
        let unclean = meta.remove(keys::META_CLEAN_CLOSE)?.is_none() && !entries.is_empty();
        if unclean {
            recovered += repair_live_index(&entries, &by_name, &by_state)?;
        }
        if stored != Some(next) {
            meta.insert(keys::META_NEXT_ID, &keys::id(next))?;
        }
        // The clean-close mark's removal must be durable before anything else happens,
        // or a kill now would leave the next open believing this run closed cleanly.
        db.flush()?;
        // sled 0.34 writes every tree to one log file, `db`; values here are far below
        // its blob size, so nothing else it writes needs syncing per flush.
        let log_file = std::fs::File::open(path.join("db")).ok();
        let state_counts: [AtomicU64; 8] = std::array::from_fn(|_| AtomicU64::new(0));
        for st in State::ALL {
            let n = by_state.scan_prefix([st.code()]).count() as u64;
            state_counts[st.code() as usize].store(n, Ordering::Relaxed);
        }
        Ok(Journal {
            path: path.to_path_buf(),
            db,
            log_file,
            writes: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_lock: Mutex::new(()),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            stripes: std::array::from_fn(|_| Mutex::new(())),
            next_id: Mutex::new(next),
            recovered,
            state_counts,
            entries,
            by_name,
            by_state,
            meta,
        })
    }

    /// How many entries a stopped process left mid-change, whose index keys `open`
    /// repaired from the entry.
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    fn begin(&self, id: u64, name: &str) -> Result<()> {
        self.meta.insert(keys::inflight(id), name.as_bytes())?;
        Ok(())
    }

    fn end(&self, id: u64) -> Result<()> {
        self.meta.remove(keys::inflight(id))?;
        Ok(())
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
        self.meta.insert(keys::META_NEXT_ID, &keys::id(id + 1))?;
        *next = id + 1;
        drop(next);
        self.begin(id, &rec.name)?;
        self.entries.insert(keys::id(id), encode(&rec))?;
        self.by_name.insert(keys::by_name(&rec.name, id), &[])?;
        self.by_state.insert(keys::by_state(rec.state(), id), &[])?;
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
        let at = crate::now_ms();
        let _entry = self.stripe(id);
        let mut rec = self.get(id)?.ok_or(JournalError::NotFound(id))?;
        let from = rec.state();
        rec.apply(event, at, elapsed_ms)
            .map_err(|source| JournalError::Illegal {
                id,
                name: rec.name.clone(),
                source,
            })?;
        if from == rec.state() {
            // No index key changes: the entry write alone is atomic.
            self.entries.insert(keys::id(id), encode(&rec))?;
        } else {
            self.begin(id, &rec.name)?;
            self.entries.insert(keys::id(id), encode(&rec))?;
            self.by_state.insert(keys::by_state(rec.state(), id), &[])?;
            self.by_state.remove(keys::by_state(from, id))?;
            self.end(id)?;
            self.counted(rec.state(), 1);
            self.counted(from, -1);
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
        self.db.flush().map_err(|e| poison(e.into()))?;
        if let Some(f) = &self.log_file {
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

    pub fn get(&self, id: u64) -> Result<Option<Record>> {
        let key = keys::id(id);
        self.entries
            .get(key)?
            .map(|raw| decode(&key, &raw))
            .transpose()
    }

    /// Every entry ever made for `name`, oldest first.
    pub fn history_of(&self, name: &str) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for kv in self.by_name.scan_prefix(keys::name_prefix(name)) {
            let (k, _) = kv?;
            if let Some(id) = keys::parse_id(&k) {
                if let Some(rec) = self.get(id)? {
                    out.push(rec);
                }
            }
        }
        Ok(out)
    }

    /// The newest entry for `name`.
    pub fn latest(&self, name: &str) -> Result<Option<Record>> {
        match self
            .by_name
            .scan_prefix(keys::name_prefix(name))
            .next_back()
        {
            Some(kv) => {
                let (k, _) = kv?;
                match keys::parse_id(&k) {
                    Some(id) => self.get(id),
                    None => Ok(None),
                }
            }
            None => Ok(None),
        }
    }

    /// An `archived` entry with this exact name, size and CRC32: the proof that this
    /// content was delivered before.
    pub fn find_archived(&self, name: &str, size: u64, crc32: u32) -> Result<Option<Record>> {
        Ok(self
            .history_of(name)?
            .into_iter()
            .rev()
            .find(|r| r.state() == State::Archived && r.size == size && r.crc32 == crc32))
    }

    /// All entries in `state`, oldest first, through the state index.
    pub fn in_state(&self, state: State) -> Result<Vec<Record>> {
        self.in_state_lazy(state, false).collect()
    }

    /// The oldest entry in `state` (by id, which grows with detection time).
    pub fn oldest_in_state(&self, state: State) -> Result<Option<Record>> {
        self.in_state_lazy(state, false).next().transpose()
    }

    /// Entries in `state`, newest first, read lazily: for queries that stop early.
    pub fn newest_in_state(&self, state: State) -> impl Iterator<Item = Result<Record>> + '_ {
        self.in_state_lazy(state, true)
    }

    fn in_state_lazy(
        &self,
        state: State,
        newest_first: bool,
    ) -> impl Iterator<Item = Result<Record>> + '_ {
        let scan = self.by_state.scan_prefix([state.code()]);
        let keys: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if newest_first
        {
            Box::new(scan.rev())
        } else {
            Box::new(scan)
        };
        // A transition in progress has the entry under both states for a moment:
        // only entries really in `state` count.
        keys.filter_map(move |kv| match kv {
            Err(e) => Some(Err(e.into())),
            Ok((k, _)) => keys::parse_id(&k)
                .and_then(|id| self.get(id).transpose())
                .filter(|r| !matches!(r, Ok(r) if r.state() != state)),
        })
    }

    /// Every entry, newest first, read lazily.
    pub fn newest(&self) -> impl Iterator<Item = Result<Record>> + '_ {
        self.entries.iter().rev().map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
    }

    /// Entries the service still has to act on: pending, sent, verified.
    pub fn live(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for st in State::ALL.into_iter().filter(|s| s.is_live()) {
            out.extend(self.in_state(st)?);
        }
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    /// Number of entries per state, kept with every write (no scan): for metrics and
    /// stats. An entry in the middle of a transition may be counted under its old
    /// state for a moment.
    pub fn counts(&self) -> Result<Vec<(State, u64)>> {
        Ok(State::ALL
            .into_iter()
            .map(|st| {
                let n = self.state_counts[st.code() as usize].load(Ordering::Relaxed);
                (st, n)
            })
            .collect())
    }

    /// `counts` the slow way, by scanning the state index: what the kept counts must
    /// always equal (tests).
    pub fn counts_by_scan(&self) -> Result<Vec<(State, u64)>> {
        State::ALL
            .into_iter()
            .map(|st| Ok((st, self.by_state.scan_prefix([st.code()]).count() as u64)))
            .collect()
    }

    /// Every entry, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Result<Record>> + '_ {
        self.entries.iter().map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
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
        // Index keys first: while the entry is still there, a reader that finds an
        // index key finds the entry too.
        self.begin(id, &rec.name)?;
        self.by_name.remove(keys::by_name(&rec.name, id))?;
        self.by_state.remove(keys::by_state(rec.state(), id))?;
        self.entries.remove(keys::id(id))?;
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
        for kv in self.by_state.scan_prefix([State::Archived.code()]) {
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
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        if self.meta.insert(keys::META_CLEAN_CLOSE, &[]).is_ok() {
            let _ = self.db.flush();
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

/// Check every entry's state and name keys in the indexes, and drop index keys of live states that
/// no entry in that state backs; returns how many keys were wrong. One pass over the
/// entries (measured: see `live_index_repair_at_scale`).
fn repair_live_index(
    entries: &sled::Tree,
    by_name: &sled::Tree,
    by_state: &sled::Tree,
) -> Result<usize> {
    let mut repaired = 0;
    for kv in entries.iter() {
        let (k, raw) = kv?;
        let rec = decode(&k, &raw)?;
        let key = keys::by_state(rec.state(), rec.id);
        if !by_state.contains_key(key)? {
            by_state.insert(key, &[])?;
            repaired += 1;
        }
        // The clean-up and intake find an entry by its name: a lost name key would
        // hide a `sent` entry's temp from the one and a live name from the other.
        let key = keys::by_name(&rec.name, rec.id);
        if !by_name.contains_key(&key)? {
            by_name.insert(key, &[])?;
            repaired += 1;
        }
    }
    for st in State::ALL.into_iter().filter(|s| s.is_live()) {
        for kv in by_state.scan_prefix([st.code()]) {
            let (k, _) = kv?;
            let Some(id) = keys::parse_id(&k[1..]) else {
                continue;
            };
            let backed = match entries.get(keys::id(id))? {
                Some(raw) => decode(&keys::id(id), &raw)?.state() == st,
                None => false,
            };
            if !backed {
                by_state.remove(k)?;
                repaired += 1;
            }
        }
    }
    Ok(repaired)
}

/// Make the index keys of every entry a stopped process left mid-change agree with
/// the entry (or with its absence); returns how many there were.
fn repair_inflight(
    meta: &sled::Tree,
    entries: &sled::Tree,
    by_name: &sled::Tree,
    by_state: &sled::Tree,
) -> Result<usize> {
    let mut repaired = 0;
    for kv in meta.scan_prefix(keys::META_INFLIGHT) {
        let (k, name) = kv?;
        let Some(id) = keys::parse_id(&k) else {
            continue;
        };
        let name = String::from_utf8_lossy(&name);
        let rec = match entries.get(keys::id(id))? {
            Some(raw) => Some(decode(&keys::id(id), &raw)?),
            None => None,
        };
        for st in State::ALL {
            if rec.as_ref().map(|r| r.state()) != Some(st) {
                by_state.remove(keys::by_state(st, id))?;
            }
        }
        match &rec {
            Some(r) => {
                by_state.insert(keys::by_state(r.state(), id), &[])?;
                by_name.insert(keys::by_name(&r.name, id), &[])?;
            }
            None => {
                by_name.remove(keys::by_name(&name, id))?;
            }
        }
        meta.remove(k)?;
        repaired += 1;
    }
    Ok(repaired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn new(name: &str, crc32: u32) -> NewEntry {
        NewEntry {
            name: name.into(),
            size: 3,
            crc32,
            batch: "b".into(),
            source_path: format!("/o/{name}"),
            found_by: "sweep".into(),
        }
    }

    /// sled's flusher thread lets go of the lock a moment after a drop: a test that
    /// reopens at once waits for it.
    fn open(dir: &Path) -> Journal {
        for _ in 0..1000 {
            match Journal::open(dir, &JournalOptions::default()) {
                Err(JournalError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                r => return r.unwrap(),
            }
        }
        panic!("{}: still locked after 5 s", dir.display())
    }

    fn sled_open(dir: &Path) -> sled::Db {
        for _ in 0..1000 {
            match sled::open(dir) {
                Ok(db) => return db,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        panic!("{}: sled still locked after 5 s", dir.display())
    }

    #[test]
    fn a_live_entry_whose_state_key_was_lost_is_found_after_an_unclean_stop_only() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let j = open(dir.path());
            let id = j.insert(new("a.json", 1)).unwrap().id;
            j.insert(new("b.json", 2)).unwrap();
            j.flush().unwrap();
            id
        };
        // What sled can leave after a torn write: the entry without its index key.
        let tamper = |clean: bool| {
            let db = sled_open(dir.path());
            db.open_tree(keys::TREE_BY_STATE)
                .unwrap()
                .remove(keys::by_state(State::Pending, id))
                .unwrap();
            db.open_tree(keys::TREE_BY_NAME)
                .unwrap()
                .remove(keys::by_name("a.json", id))
                .unwrap();
            let meta = db.open_tree(keys::TREE_META).unwrap();
            if clean {
                meta.insert(keys::META_CLEAN_CLOSE, &[]).unwrap();
            } else {
                meta.remove(keys::META_CLEAN_CLOSE).unwrap();
            }
            db.flush().unwrap();
        };
        // After a clean close the index is trusted as it is (no scan at open)…
        tamper(true);
        let ids = |j: &Journal| j.live().unwrap().iter().map(|r| r.id).collect::<Vec<_>>();
        {
            let j = open(dir.path());
            assert_eq!(j.recovered(), 0);
            assert_eq!(ids(&j).len(), 1);
        }
        // …after an unclean stop every entry is checked, and the order is live again.
        tamper(false);
        let j = open(dir.path());
        assert_eq!(j.recovered(), 2);
        assert!(ids(&j).contains(&id), "{:?}", ids(&j));
        assert_eq!(ids(&j).len(), 2);
        assert_eq!(j.latest("a.json").unwrap().map(|r| r.id), Some(id));
    }

    #[test]
    fn a_journal_from_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree(keys::TREE_META)
                .unwrap()
                .insert(keys::META_SCHEMA, b"0")
                .unwrap();
            db.flush().unwrap();
        }
        // sled lets go of its lock a moment after the drop above: wait for that,
        // not for the answer under test (this test failed once on a loaded machine).
        let mut tries = 0;
        let r = loop {
            match Journal::open(dir.path(), &JournalOptions::default()) {
                Err(JournalError::Locked { .. }) if tries < 1000 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                r => break r,
            }
        };
        match r {
            Err(JournalError::Schema { found, .. }) => assert_eq!(found, "0"),
            Err(other) => panic!("expected a schema error, got {other}"),
            Ok(_) => panic!("expected a schema error, got a journal"),
        }
    }

    #[test]
    fn index_keys_a_stopped_process_left_half_written_are_repaired_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b);
        {
            let j = open(dir.path());
            assert_eq!(j.recovered(), 0);
            a = j.insert(new("a.json", 1)).unwrap();
            b = j.insert(new("b.json", 2)).unwrap();
            // What a kill in the middle of three changes leaves: `a` moved on to
            // `sent` but its state key did not; `b`'s name key is not written yet;
            // entry 99 was being removed and only its entry is gone.
            j.begin(a.id, "a.json").unwrap();
            j.entries
                .insert(
                    keys::id(a.id),
                    encode(&{
                        let mut r = a.clone();
                        r.apply(
                            Event::Uploaded {
                                remote_path: "t".into(),
                            },
                            1,
                            None,
                        )
                        .unwrap();
                        r
                    }),
                )
                .unwrap();
            j.begin(b.id, "b.json").unwrap();
            j.by_name.remove(keys::by_name("b.json", b.id)).unwrap();
            j.begin(99, "gone.json").unwrap();
            j.by_state
                .insert(keys::by_state(State::Failed, 99), &[])
                .unwrap();
            j.by_name
                .insert(keys::by_name("gone.json", 99), &[])
                .unwrap();
        }
        let j = open(dir.path());
        assert_eq!(j.recovered(), 3);
        let ids = |st| -> Vec<u64> { j.in_state(st).unwrap().iter().map(|r| r.id).collect() };
        assert_eq!(ids(State::Sent), vec![a.id]);
        assert_eq!(ids(State::Pending), vec![b.id]);
        let counts = j.counts().unwrap();
        assert!(
            counts
                .iter()
                .all(|&(st, n)| n == u64::from(matches!(st, State::Sent | State::Pending))),
            "{counts:?}"
        );
        assert_eq!(j.latest("b.json").unwrap().unwrap().id, b.id);
        assert!(j.history_of("gone.json").unwrap().is_empty());
        assert!(j
            .by_name
            .scan_prefix(keys::name_prefix("gone.json"))
            .next()
            .is_none());
        // New ids continue past the old ones.
        assert_eq!(j.insert(new("c.json", 3)).unwrap().id, b.id + 1);
        drop(j);
        assert_eq!(open(dir.path()).recovered(), 0, "nothing left to repair");
    }

    #[test]
    fn an_illegal_transition_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        let r = j.insert(new("a.json", 1)).unwrap();
        let err = j.apply(r.id, Event::Archived).unwrap_err();
        assert!(matches!(err, JournalError::Illegal { .. }), "{err}");
        assert_eq!(j.get(r.id).unwrap().unwrap(), r);
        assert_eq!(j.in_state(State::Pending).unwrap().len(), 1);
    }

    #[test]
    fn find_archived_matches_name_size_and_crc_only() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        let r = j.insert(new("a.json", 9)).unwrap();
        for ev in [
            Event::Uploaded {
                remote_path: "t".into(),
            },
            Event::Verified {
                remote_path: "f".into(),
                archive_path: "a".into(),
                note: None,
            },
            Event::Archived,
        ] {
            j.apply(r.id, ev).unwrap();
        }
        assert!(j.find_archived("a.json", 3, 9).unwrap().is_some());
        assert!(j.find_archived("a.json", 3, 8).unwrap().is_none());
        assert!(j.find_archived("a.jso", 3, 9).unwrap().is_none());
    }

    #[test]
    fn pruning_removes_old_archived_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        let mut ids = Vec::new();
        for n in 0..4 {
            let r = j.insert(new(&format!("o{n}.json"), n)).unwrap();
            ids.push(r.id);
        }
        for &id in &ids[..3] {
            for ev in [
                Event::Verified {
                    remote_path: "f".into(),
                    archive_path: "a".into(),
                    note: None,
                },
                Event::Archived,
            ] {
                j.apply(id, ev).unwrap();
            }
        }
        j.apply(ids[3], Event::Failed { error: "x".into() })
            .unwrap();
        assert_eq!(
            j.prune_archived(0, 10).unwrap(),
            0,
            "nothing is older than the epoch"
        );
        assert_eq!(j.prune_archived(u64::MAX, 2).unwrap(), 2, "at most max");
        assert_eq!(j.prune_archived(u64::MAX, 10).unwrap(), 1);
        let left: Vec<u64> = j.iter().map(|r| r.unwrap().id).collect();
        assert_eq!(left, vec![ids[3]], "the failed entry stays");
        assert!(j.history_of("o0.json").unwrap().is_empty());
        assert!(j.in_state(State::Archived).unwrap().is_empty());
    }

    #[test]
    fn a_flush_with_nothing_new_to_write_is_free_and_concurrent_flushes_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let j = std::sync::Arc::new(open(dir.path()));
        j.flush().unwrap();
        let before = j.flushed.load(Ordering::SeqCst);
        j.flush().unwrap();
        assert_eq!(j.flushed.load(Ordering::SeqCst), before);
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        j.insert(new(&format!("t{n}-{i}.json"), i)).unwrap();
                        j.flush().unwrap();
                        // Everything this thread wrote is covered by a finished flush.
                        assert!(j.flushed.load(Ordering::SeqCst) >= 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(
            j.flushed.load(Ordering::SeqCst),
            j.writes.load(Ordering::SeqCst)
        );
        assert_eq!(j.len(), 400);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8),
        Apply(usize, Event),
        Reopen,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Uploaded {
                remote_path: "t".into()
            }),
            Just(Event::Verified {
                remote_path: "f".into(),
                archive_path: "a".into(),
                note: None
            }),
            Just(Event::Archived),
            Just(Event::LocalReplaced { note: "n".into() }),
            (0u64..100).prop_map(|n| Event::Retry {
                error: "e".into(),
                next_attempt_at: n
            }),
            Just(Event::Failed { error: "x".into() }),
            Just(Event::Quarantined {
                reason: "bad".into(),
                path: "q".into()
            }),
            Just(Event::Replay),
            Just(Event::Resend {
                from_path: "a".into()
            }),
            (0u64..5, any::<u32>()).prop_map(|(size, crc32)| Event::Rehash { size, crc32 }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4).prop_map(Op::Insert),
            8 => (any::<usize>(), event()).prop_map(|(i, e)| Op::Apply(i, e)),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The journal behaves like a BTreeMap of records run through the same
        /// transition table, and its two indexes always agree with the entries,
        /// across reopenings.
        #[test]
        fn journal_agrees_with_a_btreemap_model(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let mut j = open(dir.path());
            let mut model: BTreeMap<u64, Record> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(n) => {
                        let r = j.insert(new(&format!("order-{n}.json"), n as u32)).unwrap();
                        prop_assert!(!model.contains_key(&r.id));
                        model.insert(r.id, r);
                    }
                    Op::Apply(i, ev) => {
                        if model.is_empty() { continue; }
                        let id = *model.keys().nth(i % model.len()).unwrap();
                        let mut want = model[&id].clone();
                        let model_ok = want.apply(ev.clone(), 0, None).is_ok();
                        match j.apply(id, ev) {
                            Ok(got) => {
                                prop_assert!(model_ok);
                                prop_assert_eq!(got.state(), want.state());
                                model.insert(id, got);
                            }
                            Err(JournalError::Illegal { .. }) => prop_assert!(!model_ok),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    Op::Reopen => {
                        j.flush().unwrap();
                        drop(j);
                        j = open(dir.path());
                    }
                }
                let stored: BTreeMap<u64, Record> =
                    j.iter().map(|r| r.map(|r| (r.id, r))).collect::<Result<_>>().unwrap();
                prop_assert_eq!(&stored, &model);
                for st in State::ALL {
                    let want: Vec<u64> = model.values().filter(|r| r.state() == st).map(|r| r.id).collect();
                    let got: Vec<u64> = j.in_state(st).unwrap().iter().map(|r| r.id).collect();
                    prop_assert_eq!(got, want);
                }
                // The kept counts, through every insert, transition, prune and reopen.
                prop_assert_eq!(j.counts().unwrap(), j.counts_by_scan().unwrap());
                for r in model.values() {
                    prop_assert!(j.history_of(&r.name).unwrap().iter().any(|h| h.id == r.id));
                }
            }
        }
    }
}
