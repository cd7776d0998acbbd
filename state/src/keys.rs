//! Key encoding of the journal's sled trees and the on-disk schema version.
//!
//! Keys are big-endian so that sled's byte order is numeric order: entries iterate
//! oldest first, and the name index groups every entry of one name together.

/// Bumped whenever the layout of a tree or of `Record` changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

pub const TREE_ENTRIES: &str = "entries";
pub const TREE_BY_NAME: &str = "by_name";
pub const TREE_BY_STATE: &str = "by_state";
pub const TREE_META: &str = "meta";
/// `tally at id` for each transition into `verified` or `failed`: the windows of
/// `journal stats` (see `journal/windows.rs`). Only the last two days are kept.
pub const TREE_BY_TIME: &str = "by_time";
pub const META_SCHEMA: &[u8] = b"schema_version";
pub const META_NEXT_ID: &[u8] = b"next_id";
/// `inflight/<id>` → the entry's name: written before an entry and its index keys
/// change, removed after. Found at open, it names an entry whose index keys a stopped
/// process may have left half-written.
pub const META_INFLIGHT: &[u8] = b"inflight/";

/// Present only while no process has the journal open, after a clean close. Its
/// absence at open means the last process stopped without closing (killed, crashed,
/// power cut): `open` then checks every entry against the state index. Its value is
/// the per-state counts and the windows' counters at the close, so the next `open`
/// need not count them (an empty value, as older builds wrote: counted).
pub const META_CLEAN_CLOSE: &[u8] = b"clean_close";

pub fn inflight(id: u64) -> Vec<u8> {
    let mut k = META_INFLIGHT.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn id(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn parse_id(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// `name NUL id`: file names cannot contain NUL, so the prefix `name NUL` selects
/// exactly one name.
pub fn by_name(name: &str, id: u64) -> Vec<u8> {
    let mut k = name_prefix(name);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn name_prefix(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

/// `state-code id`: one contiguous range per state.
pub fn by_state(state: crate::State, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = state.code();
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// `tally at id`, all big-endian: one range per tally, in time order.
pub fn by_time(tally: u8, at: u64, id: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tally;
    k[1..9].copy_from_slice(&at.to_be_bytes());
    k[9..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The time in a [`by_time`] key.
pub fn by_time_at(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_names_do_not_bleed_into_each_other() {
        assert!(id(2) < id(256));
        assert!(by_name("a", u64::MAX) < by_name("a.json", 0));
        assert!(!by_name("a.json", 1).starts_with(&name_prefix("a")));
        assert_eq!(parse_id(&by_name("x", 42)), Some(42));
        assert_eq!(parse_id(&by_state(crate::State::Sent, 9)), Some(9));
        assert!(by_time(0, 999, 7) < by_time(0, 1000, 1));
        assert!(by_time(0, u64::MAX, 1) < by_time(1, 0, 0));
        assert_eq!(by_time_at(&by_time(1, 1234, 5)), Some(1234));
        assert_eq!(parse_id(&by_time(1, 1234, 5)), Some(5));
    }
}
