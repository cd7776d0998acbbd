//! A copy of the journal into a fresh directory, live keys only. sled 0.34 does not
//! reuse the space pruning frees (measured by `benches/journal_scale.rs`: a journal
//! that keeps 10,000 entries while 10,000 come and go per round grows by the same
//! 25 MB every round), so the one way to give it back is to copy what is live into a
//! new database and let it take the old one's place. The swap is the operator side's
//! (`src/operator/compact.rs`): this module knows nothing of the file system beyond
//! sled.

use super::{Journal, Result};
use crate::keys;
use std::path::Path;

impl Journal {
    /// Copy every key of every tree into a new sled database at `dest` (which must not
    /// exist yet), with a clean-close mark carrying this journal's tallies, so the copy
    /// opens as fast as after a clean close; then flush it. Returns how many entries
    /// were copied. The caller keeps this journal open until the copy has taken its
    /// place, so no one can write to the old one meanwhile (sled's lock), and makes the
    /// copy's files durable itself (sled's flush does not fsync).
    pub fn copy_to(&self, dest: &Path) -> Result<usize> {
        let _all = self.lock_all();
        let db = sled::Config::new()
            .path(dest)
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(|source| super::JournalError::Open {
                path: dest.to_path_buf(),
                source,
            })?;
        // Every tree there is, so a tree added later is not left out; sled's default
        // tree is unused (and always exists).
        for name in self.db.tree_names() {
            if name == b"__sled__default" {
                continue;
            }
            let (from, to) = (self.db.open_tree(&name)?, db.open_tree(&name)?);
            for kv in from.iter() {
                let (k, v) = kv?;
                to.insert(k, v)?;
            }
        }
        let meta = db.open_tree(keys::TREE_META)?;
        meta.insert(keys::META_CLEAN_CLOSE, self.saved_tallies())?;
        db.flush()?;
        Ok(self.entries.len())
    }
}
