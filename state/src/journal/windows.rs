//! Deliveries and failures over the last hour and day, in constant time.
//!
//! Each delivery (`sent → verified`) and each transition into `failed` leaves a key in the
//! `by_time` tree, `tally time id`, written with the entry under its in-flight mark, so
//! `open` repairs it like any index key. In memory, the same events are counted per
//! minute in a ring of a day's minutes, rebuilt at open from the last day's keys (no
//! entry decoded) and kept with every write: `journal stats` and a metrics scrape add
//! up at most 1,441 counters instead of walking entries.
//!
//! Windows are whole minutes: "the last hour" is every event since the start of the
//! minute an hour ago, so it covers 60 to 61 minutes. [`Journal::windows_by_scan`]
//! counts the same way from the entries' histories, for tests.

use super::{decode, Journal, Result};
use crate::keys;
use crate::machine::State;
use crate::record::Record;
use std::sync::atomic::Ordering;

pub(super) const MINUTE: u64 = 60_000;
pub const HOUR: u64 = 60 * MINUTE;
pub const DAY: u64 = 24 * HOUR;
/// How long `by_time` keys are kept: the longest window plus a margin for a clock
/// that steps back, so a restart still finds the whole day.
pub(super) const KEPT: u64 = 2 * DAY;
/// Minutes in the ring: a day and the current minute.
const SLOTS: usize = (DAY / MINUTE) as usize + 1;

/// What a transition counts as in the windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tally {
    Delivered = 0,
    Failed = 1,
}

impl Tally {
    /// A delivery is `sent → verified`: an upload confirmed in the inbox. A `verified`
    /// an entry is born with (a copy of an archived order) or a rebuild writes is no
    /// delivery made now. Any transition into `failed` is a failure.
    pub(super) fn of(from: Option<State>, to: State) -> Option<Tally> {
        match (from, to) {
            (Some(State::Sent), State::Verified) => Some(Tally::Delivered),
            (_, State::Failed) => Some(Tally::Failed),
            _ => None,
        }
    }
}

/// The counts [`Journal::windows`] gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Windows {
    pub delivered_last_hour: u64,
    pub delivered_last_day: u64,
    pub failed_last_hour: u64,
    pub failed_last_day: u64,
}

/// Events per minute for one tally: slot `m % SLOTS` holds minute `m`'s count.
pub(super) struct Ring {
    minute: Vec<u64>,
    count: Vec<u64>,
}

impl Ring {
    pub(super) fn new() -> Ring {
        Ring {
            minute: vec![u64::MAX; SLOTS],
            count: vec![0; SLOTS],
        }
    }

    pub(super) fn add(&mut self, at: u64) {
        let m = at / MINUTE;
        let slot = (m % SLOTS as u64) as usize;
        if self.minute[slot] != m {
            // A slot holds the newest minute that maps to it; an event older than
            // that is outside every window.
            if self.minute[slot] != u64::MAX && self.minute[slot] > m {
                return;
            }
            self.minute[slot] = m;
            self.count[slot] = 0;
        }
        self.count[slot] += 1;
    }

    fn since(&self, from_minute: u64) -> u64 {
        self.minute
            .iter()
            .zip(&self.count)
            .filter(|(m, _)| **m != u64::MAX && **m >= from_minute)
            .map(|(_, c)| c)
            .sum()
    }
}

/// The first minute a window of `span` ms ending now covers.
fn first_minute(now: u64, span: u64) -> u64 {
    (now / MINUTE).saturating_sub(span / MINUTE)
}

/// The per-state counts, the rings and the last delivery, as bytes for
/// the clean-close mark's value ([`keys::META_CLEAN_CLOSE`]): 8 counts, then per tally the number of slots in use
/// and each slot's minute and count, then the last delivery (all u64, big-endian).
pub(super) fn save(counts: &[u64; 8], rings: &[Ring; 2], last_delivery: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |v: u64| out.extend_from_slice(&v.to_be_bytes());
    counts.iter().for_each(|&c| put(c));
    for ring in rings {
        let used: Vec<(u64, u64)> = ring
            .minute
            .iter()
            .zip(&ring.count)
            .filter(|(m, _)| **m != u64::MAX)
            .map(|(m, c)| (*m, *c))
            .collect();
        put(used.len() as u64);
        for (m, c) in used {
            put(m);
            put(c);
        }
    }
    put(last_delivery);
    out
}

/// The inverse of [`save`]; `None` for anything that is not exactly what it writes
/// (then `open` counts from the indexes).
pub(super) fn load(raw: &[u8]) -> Option<([u64; 8], [Ring; 2], u64)> {
    let mut words = raw
        .chunks_exact(8)
        .map(|w| u64::from_be_bytes(w.try_into().unwrap()));
    if !raw.len().is_multiple_of(8) {
        return None;
    }
    let mut counts = [0u64; 8];
    for c in &mut counts {
        *c = words.next()?;
    }
    let mut rings = [Ring::new(), Ring::new()];
    for ring in &mut rings {
        let used = words.next()?;
        if used > SLOTS as u64 {
            return None;
        }
        for _ in 0..used {
            let (m, c) = (words.next()?, words.next()?);
            let slot = (m % SLOTS as u64) as usize;
            ring.minute[slot] = m;
            ring.count[slot] = c;
        }
    }
    let last = words.next()?;
    words.next().is_none().then_some((counts, rings, last))
}

pub(super) fn in_window(at: u64, now: u64, span: u64) -> bool {
    at / MINUTE >= first_minute(now, span)
}

/// The rings, rebuilt from the `by_time` keys of the last day; and the newest
/// delivery's time, from the last `Delivered` key (kept by pruning).
pub(super) fn rebuild(by_time: &sled::Tree, now: u64) -> Result<([Ring; 2], u64)> {
    let mut rings = [Ring::new(), Ring::new()];
    let from = first_minute(now, DAY) * MINUTE;
    for tally in [Tally::Delivered, Tally::Failed] {
        let start = keys::by_time(tally as u8, from, 0);
        let end = keys::by_time(tally as u8, u64::MAX, u64::MAX);
        for kv in by_time.range(start..=end) {
            let (k, _) = kv?;
            if let Some(at) = keys::by_time_at(&k) {
                rings[tally as usize].add(at);
            }
        }
    }
    let last = match by_time.scan_prefix([Tally::Delivered as u8]).next_back() {
        Some(kv) => keys::by_time_at(&kv?.0).unwrap_or(0),
        None => 0,
    };
    Ok((rings, last))
}

/// Write the `by_time` keys of `rec`'s transitions since `horizon` (idempotent):
/// what `open` does for an entry a stopped process may have left half-written.
pub(super) fn restore(by_time: &sled::Tree, rec: &Record, horizon: u64) -> Result<usize> {
    let mut written = 0;
    for t in rec.history.iter().filter(|t| t.at >= horizon) {
        if let Some(tally) = Tally::of(t.from, t.to) {
            let key = keys::by_time(tally as u8, t.at, rec.id);
            if by_time.insert(key, &[])?.is_none() {
                written += 1;
            }
        }
    }
    Ok(written)
}

impl Journal {
    /// Deliveries and failures in the last hour and day (whole minutes), as of `now`.
    /// Constant time: reads the per-minute counters.
    pub fn windows(&self, now: u64) -> Windows {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let [delivered, failed] = &*rings;
        Windows {
            delivered_last_hour: delivered.since(first_minute(now, HOUR)),
            delivered_last_day: delivered.since(first_minute(now, DAY)),
            failed_last_hour: failed.since(first_minute(now, HOUR)),
            failed_last_day: failed.since(first_minute(now, DAY)),
        }
    }

    /// When the newest delivery (`sent → verified`) happened, if any is
    /// known (ms since epoch).
    pub fn last_delivery_at(&self) -> Option<u64> {
        match self.last_delivery.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// [`Journal::windows`] the slow way, from every entry's history: for tests, and
    /// to check the counters against the truth.
    pub fn windows_by_scan(&self, now: u64) -> Result<Windows> {
        let mut w = Windows::default();
        for kv in self.st().entries.iter() {
            let (k, raw) = kv?;
            let rec = decode(&k, &raw)?;
            for t in &rec.history {
                let (hour, day) = (in_window(t.at, now, HOUR), in_window(t.at, now, DAY));
                match Tally::of(t.from, t.to) {
                    Some(Tally::Delivered) => {
                        w.delivered_last_hour += hour as u64;
                        w.delivered_last_day += day as u64;
                    }
                    Some(Tally::Failed) => {
                        w.failed_last_hour += hour as u64;
                        w.failed_last_day += day as u64;
                    }
                    None => {}
                }
            }
        }
        Ok(w)
    }

    /// What [`save`] keeps, read now (at a clean close: no writer is left).
    pub(super) fn saved_tallies(&self) -> Vec<u8> {
        let counts = std::array::from_fn(|i| self.state_counts[i].load(Ordering::Relaxed));
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        save(&counts, &rings, self.last_delivery.load(Ordering::Relaxed))
    }

    /// Count a transition just written (its `by_time` key is already in).
    pub(super) fn tallied(&self, tally: Tally, at: u64) {
        self.rings.lock().unwrap_or_else(|p| p.into_inner())[tally as usize].add(at);
        if tally == Tally::Delivered {
            self.last_delivery.fetch_max(at, Ordering::Relaxed);
        }
    }

    /// Drop `by_time` keys older than two days (the windows never look back that
    /// far), except each tally's newest: it is the last delivery's time. Returns how
    /// many went.
    pub fn prune_windows(&self, now: u64) -> Result<usize> {
        let cutoff = now.saturating_sub(KEPT);
        let mut removed = 0;
        for tally in [Tally::Delivered, Tally::Failed] {
            let newest = match self.st().by_time.scan_prefix([tally as u8]).next_back() {
                Some(kv) => Some(kv?.0),
                None => None,
            };
            let start = keys::by_time(tally as u8, 0, 0);
            let end = keys::by_time(tally as u8, cutoff, 0);
            for kv in self.st().by_time.range(start..end) {
                let (k, _) = kv?;
                if Some(&k) != newest.as_ref() {
                    self.st().by_time.remove(k)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_tallies_load_back_exactly_and_anything_else_is_refused() {
        let mut rings = [Ring::new(), Ring::new()];
        let now = 1_795_000_000_000;
        for at in [now, now - MINUTE, now - HOUR, now - DAY] {
            rings[0].add(at);
        }
        rings[1].add(now);
        let counts = [1, 2, 3, 4, 5, 6, 7, 0];
        let raw = save(&counts, &rings, now);
        let (c, r, last) = load(&raw).expect("what save writes loads");
        assert_eq!((c, last), (counts, now));
        for (a, b) in r.iter().zip(&rings) {
            assert_eq!((&a.minute, &a.count), (&b.minute, &b.count));
        }
        assert_eq!(r[0].since(first_minute(now, HOUR)), 3);
        assert_eq!(r[0].since(first_minute(now, DAY)), 4);
        for bad in [
            &raw[..raw.len() - 8],
            &raw[..raw.len() - 1],
            &[raw.clone(), vec![0; 8]].concat()[..],
            &[],
        ] {
            assert!(load(bad).is_none(), "{} bytes", bad.len());
        }
    }

    #[test]
    fn an_event_older_than_its_slot_s_minute_is_outside_every_window() {
        let mut ring = Ring::new();
        let now = 1_795_000_000_000;
        ring.add(now);
        // The same slot, one ring's length of minutes earlier.
        ring.add(now - SLOTS as u64 * MINUTE);
        assert_eq!(ring.since(first_minute(now, DAY)), 1);
    }
}
