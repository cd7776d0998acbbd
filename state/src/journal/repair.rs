//! What `open` repairs after an unclean stop: index keys an interrupted change left
//! half-written (named by their in-flight marks), and — when the clean-close mark is
//! missing — every live entry's index keys.

use super::windows::{restore, KEPT};
use super::{decode, Result};
use crate::keys;
use crate::machine::State;

/// Check every entry's state and name keys in the indexes, and drop index keys of live states that
/// no entry in that state backs; returns how many keys were wrong. One pass over the
/// entries (measured: see `live_index_repair_at_scale`).
pub(super) fn repair_live_index(
    entries: &sled::Tree,
    by_name: &sled::Tree,
    by_state: &sled::Tree,
    by_time: &sled::Tree,
    now: u64,
) -> Result<usize> {
    let mut repaired = 0;
    for kv in entries.iter() {
        let (k, raw) = kv?;
        let rec = decode(&k, &raw)?;
        if rec.updated_at >= now.saturating_sub(KEPT) {
            repaired += restore(by_time, &rec, now.saturating_sub(KEPT))?;
        }
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
pub(super) fn repair_inflight(
    meta: &sled::Tree,
    entries: &sled::Tree,
    by_name: &sled::Tree,
    by_state: &sled::Tree,
    by_time: &sled::Tree,
    now: u64,
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
                // The window keys of its last transition; an entry removed while
                // marked leaves its old keys, which only count what really happened.
                restore(by_time, r, now.saturating_sub(KEPT))?;
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
