//! The outbox scan: at start-up, every `sweep_interval`, and on demand (overflow,
//! watcher error). Whatever the watcher missed, the sweep finds.

use crate::config::Settings;
use crate::intake;
use plutus_state::{Journal, State};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::PathBuf;

/// Files in the outbox that may be taken and that the journal does not hold in a live
/// state. (A failed one is passed on too: intake tells new content from the same; an
/// `invalid` one is judged again.) Also the names of `invalid` entries whose file is
/// no longer there, so intake can drop them. Blocking: call from `spawn_blocking`.
pub fn scan(journal: &Journal, s: &Settings) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut listed = HashSet::new();
    for ent in fs::read_dir(&s.source.outbox)? {
        let ent = ent?;
        let name = ent.file_name();
        let Ok(name) = intake::name_rule(&name, s) else {
            continue;
        };
        listed.insert(name.to_string());
        match journal.latest(name) {
            Ok(Some(rec)) if rec.state().is_live() => continue,
            _ => out.push(ent.path()),
        }
    }
    let invalid = journal.in_state(State::Invalid).map_err(io::Error::other)?;
    for rec in invalid {
        if !listed.contains(&rec.name) {
            out.push(s.source.outbox.join(&rec.name));
        }
    }
    out.sort();
    Ok(out)
}
