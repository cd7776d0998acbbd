//! Reads of the journal: one entry, a name's history, the entries in a state, the
//! newest first. Every read decodes the entry itself; the indexes only find it.

use super::{decode, Journal, Result};
use crate::keys;
use crate::machine::State;
use crate::record::Record;
use std::sync::atomic::Ordering;

impl Journal {
    pub fn get(&self, id: u64) -> Result<Option<Record>> {
        let key = keys::id(id);
        self.st()
            .entries
            .get(key)?
            .map(|raw| decode(&key, &raw))
            .transpose()
    }

    /// Every entry ever made for `name`, oldest first.
    pub fn history_of(&self, name: &str) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for kv in self.st().by_name.scan_prefix(keys::name_prefix(name)) {
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
            .st()
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
        let scan = self.st().by_state.scan_prefix([state.code()]);
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
        self.st().entries.iter().rev().map(|kv| {
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
            .map(|st| {
                Ok((
                    st,
                    self.st().by_state.scan_prefix([st.code()]).count() as u64,
                ))
            })
            .collect()
    }

    /// Every entry, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Result<Record>> + '_ {
        self.st().entries.iter().map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
    }
}
