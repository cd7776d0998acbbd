//! The state machine of one order file: a pure function from (state, event) to the
//! next state. No I/O here; the journal applies it atomically.
//!
//! ```text
//!             Uploaded           Verified            Archived / ArchivedAs / LocalReplaced
//!   pending ───────────▶ sent ────────────▶ verified ────────▶ archived
//!   │ ▲ ▲  ╲             │ ▲ │  ╲              ▲                 │
//!   │ │ │   ╲ Verified (duplicate at intake)   │                 │ Resend (operator, --force)
//!   │ │ │    ╰─────────────────────────────────╯                 ▼
//!   │ │ ╰── Reupload ────╯ ╰─╯ Retry (stays sent)              pending
//!   │ ╰──── Replay ── failed ◀── Failed (pending; sent only on a conflict)
//!   ╰── Quarantined ──▶ quarantined          Retry, Rehash: pending → pending
//!   ▲ │                     ▲
//!   │ ╰── Invalid ─▶ invalid ┤ Quarantined (unchanged for quarantine_after, not open)
//!   ╰──── Rehash ────╯  ╰── Failed (its file left the outbox; kept for its past)
//!
//!   failed ── Forgotten (operator: its local copy is gone) ──▶ forgotten
//! ```
//!
//! `invalid` is a file whose content is not a valid order yet: it stays in the outbox
//! (never sent) until its writer finishes it (`Rehash` → `pending`) or it has been left
//! unchanged for `quarantine_after`. An entry can be born `invalid` at intake.
//!
//! `sent` means "the temp copy is complete and verified" and is made durable before the
//! rename is sent. The rename may then have happened, so a `sent` entry never goes back
//! to `pending` except by `Reupload`, which recovery chooses only when its temp file is
//! still there (so it was not renamed): a retry keeps it `sent`, and a changed local
//! file (`Rehash`) or quarantine no longer applies to it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a file is in its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Journaled, local copy in the outbox, not yet (completely) uploaded.
    Pending,
    /// Uploaded under the temporary name; not yet read back and renamed.
    Sent,
    /// Under its final name in the inbox and proven identical. The local copy may now move.
    Verified,
    /// Local copy moved to the archive. Done.
    Archived,
    /// Gave up after too many attempts or on a conflict; waits for an operator's replay.
    Failed,
    /// Not a valid order file; moved to quarantine, never sent.
    Quarantined,
    /// Not a valid order file *yet*: still in the outbox, never sent, looked at again
    /// on every change and sweep. Its writer may not be done (a pause, a second open
    /// to append), so it becomes `pending` if it turns valid and `quarantined` only
    /// once unchanged for `quarantine_after`.
    Invalid,
    /// A failed entry an operator closed (`journal forget`): its local copy is gone,
    /// so it can never be sent, and it no longer counts as failed. Kept for its past,
    /// with who closed it and why.
    Forgotten,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Pending,
        State::Sent,
        State::Verified,
        State::Archived,
        State::Failed,
        State::Quarantined,
        State::Invalid,
        State::Forgotten,
    ];

    /// Live entries are the ones the workers still have to act on. (`invalid` is
    /// intake's: it waits for its writer, not for a worker.)
    pub fn is_live(self) -> bool {
        matches!(self, State::Pending | State::Sent | State::Verified)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sent => "sent",
            State::Verified => "verified",
            State::Archived => "archived",
            State::Failed => "failed",
            State::Quarantined => "quarantined",
            State::Invalid => "invalid",
            State::Forgotten => "forgotten",
        }
    }

    /// One byte per state for the index keys; stable on disk.
    pub fn code(self) -> u8 {
        match self {
            State::Pending => 1,
            State::Sent => 2,
            State::Verified => 3,
            State::Archived => 4,
            State::Failed => 5,
            State::Quarantined => 6,
            State::Invalid => 7,
            // 0 was free. The per-state counts, and the clean-close mark that saves
            // them, are arrays of 8 indexed by code: the eighth state fits them as
            // they are, and a journal written before it reads the same.
            State::Forgotten => 0,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?} (expected one of pending, sent, verified, archived, failed, quarantined, invalid, forgotten)"
                )
            })
    }
}

/// What happened to a file. The data an event carries is what the journal records
/// with the transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The whole file was written to the temporary remote name.
    Uploaded { remote_path: String },
    /// The file is under its final name remotely and proven identical (read back, or
    /// found already there with the same size and CRC32, or a duplicate of an archived
    /// delivery). `archive_path` is where the local copy goes next: recorded before the
    /// move so recovery can find it.
    Verified {
        remote_path: String,
        archive_path: String,
        note: Option<String>,
    },
    /// The local copy is in the archive, at the path `verified` planned.
    Archived,
    /// The local copy is in the archive at `path`, not the planned path (taken meanwhile:
    /// the archive never replaces a file).
    ArchivedAs { path: String },
    /// Delivered and verified, but the local file was replaced by new content before
    /// it could be archived: nothing of this delivery is left to move, and the new
    /// content is a new file of its own.
    LocalReplaced { note: String },
    /// An attempt failed; try again at `next_attempt_at` (ms since epoch).
    Retry { error: String, next_attempt_at: u64 },
    /// Give up until an operator replays it.
    Failed { error: String },
    /// Not a valid order file: moved to quarantine at `path`.
    Quarantined { reason: String, path: String },
    /// Not a valid order file yet: left in the outbox for its writer to finish.
    Invalid { reason: String },
    /// Operator's replay of a failed entry, by `by` (absent in entries written before
    /// the control socket knew who asks).
    Replay {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Caller>,
    },
    /// Operator's forced re-send of an archived entry, from `from_path` (the archive),
    /// by `by`.
    Resend {
        from_path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Caller>,
    },
    /// The local file changed after intake: new size and CRC32, upload again.
    Rehash { size: u64, crc32: u32 },
    /// Recovery found the `sent` entry's temp file still there (so never renamed) but not
    /// what was verified: it was removed, and the file is uploaded again.
    Reupload { reason: String },
    /// An operator closed a failed entry whose local copy is gone (`journal forget`):
    /// `by` is who (user name and uid), `reason` why.
    Forgotten { reason: String, by: String },
}

/// Who asked for an operator's event: the control socket's peer (SO_PEERCRED), or the
/// CLI's own user when it answered from the journal itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Caller {
    pub uid: u32,
    /// The account's name, when the user database knows the uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(u) => write!(f, "{u} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Uploaded { .. } => "uploaded",
            Event::Verified { .. } => "verified",
            Event::Archived => "archived",
            Event::ArchivedAs { .. } => "archived_as",
            Event::LocalReplaced { .. } => "local_replaced",
            Event::Retry { .. } => "retry",
            Event::Failed { .. } => "failed",
            Event::Quarantined { .. } => "quarantined",
            Event::Invalid { .. } => "invalid",
            Event::Replay { .. } => "replay",
            Event::Resend { .. } => "resend",
            Event::Rehash { .. } => "rehash",
            Event::Reupload { .. } => "reupload",
            Event::Forgotten { .. } => "forgotten",
        }
    }
}

/// An event that the current state does not allow. Carries both so the message can
/// say exactly what was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event} is not allowed in state {from}")]
pub struct IllegalTransition {
    pub from: State,
    pub event: &'static str,
}

/// The transition table. Every (state, event) pair not listed is illegal.
pub fn next(from: State, event: &Event) -> Result<State, IllegalTransition> {
    use State::*;
    let to = match (from, event) {
        (Pending, Event::Uploaded { .. }) => Sent,
        (Pending | Sent, Event::Verified { .. }) => Verified,
        (Verified, Event::Archived | Event::ArchivedAs { .. } | Event::LocalReplaced { .. }) => {
            Archived
        }
        (Pending, Event::Retry { .. }) => Pending,
        // The rename may have happened: only recovery's `Reupload` may go back.
        (Sent, Event::Retry { .. }) => Sent,
        (Sent, Event::Reupload { .. }) => Pending,
        // From `sent` only on a conflict (the pipeline's rule, not the table's).
        // From `invalid`: its file left the outbox before it became valid, and the
        // entry has a past worth keeping (one with none is dropped instead).
        (Pending | Sent | Invalid, Event::Failed { .. }) => Failed,
        (Pending | Invalid, Event::Quarantined { .. }) => Quarantined,
        // Changed after intake and not valid now: back to intake until the writer is done.
        (Pending, Event::Invalid { .. }) => Invalid,
        (Invalid, Event::Rehash { .. }) => Pending,
        (Failed, Event::Replay { .. }) => Pending,
        (Archived, Event::Resend { .. }) => Pending,
        (Pending, Event::Rehash { .. }) => Pending,
        (Failed, Event::Forgotten { .. }) => Forgotten,
        _ => {
            return Err(IllegalTransition {
                from,
                event: event.name(),
            })
        }
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_events() -> Vec<Event> {
        vec![
            Event::Uploaded {
                remote_path: "r".into(),
            },
            Event::Verified {
                remote_path: "r".into(),
                archive_path: "a".into(),
                note: None,
            },
            Event::Archived,
            Event::ArchivedAs { path: "p".into() },
            Event::LocalReplaced { note: "n".into() },
            Event::Retry {
                error: "e".into(),
                next_attempt_at: 1,
            },
            Event::Failed { error: "e".into() },
            Event::Quarantined {
                reason: "r".into(),
                path: "q".into(),
            },
            Event::Invalid { reason: "r".into() },
            Event::Replay { by: None },
            Event::Resend {
                from_path: "a".into(),
                by: None,
            },
            Event::Rehash { size: 1, crc32: 2 },
            Event::Reupload { reason: "r".into() },
            Event::Forgotten {
                reason: "r".into(),
                by: "b".into(),
            },
        ]
    }

    /// The whole table, written out by hand: a change to `next` that is not also made
    /// here fails this test.
    #[test]
    fn every_legal_and_illegal_transition_is_as_specified() {
        use State::*;
        let legal: &[(State, &str, State)] = &[
            (Pending, "uploaded", Sent),
            (Pending, "verified", Verified),
            (Sent, "verified", Verified),
            (Verified, "archived", Archived),
            (Verified, "archived_as", Archived),
            (Verified, "local_replaced", Archived),
            (Pending, "retry", Pending),
            (Sent, "retry", Sent),
            (Sent, "reupload", Pending),
            (Pending, "failed", Failed),
            (Sent, "failed", Failed),
            (Pending, "quarantined", Quarantined),
            (Failed, "replay", Pending),
            (Archived, "resend", Pending),
            (Pending, "rehash", Pending),
            (Pending, "invalid", Invalid),
            (Invalid, "rehash", Pending),
            (Invalid, "failed", Failed),
            (Invalid, "quarantined", Quarantined),
            (Failed, "forgotten", Forgotten),
        ];
        let mut checked = 0;
        for from in State::ALL {
            for ev in all_events() {
                let expected = legal
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == ev.name())
                    .map(|(_, _, to)| *to);
                match (next(from, &ev), expected) {
                    (Ok(got), Some(want)) => assert_eq!(got, want, "{from} --{}-->", ev.name()),
                    (Err(err), None) => {
                        assert_eq!(err.from, from);
                        assert_eq!(err.event, ev.name());
                    }
                    (got, want) => panic!(
                        "{from} --{}--> gave {got:?}, table says {want:?}",
                        ev.name()
                    ),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 8 * 14);
    }

    /// The one written copy of the table, in docs/ARCHITECTURE.md §4, row for row
    /// what `next` does: a change to either that is not made to the other fails here.
    #[test]
    fn the_architecture_documents_exactly_the_transitions_next_allows() {
        use std::collections::BTreeSet;
        let doc = include_str!("../../docs/ARCHITECTURE.md");
        let mut rows = doc
            .lines()
            .skip_while(|l| !l.starts_with("| from | event | to |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .peekable();
        assert!(
            rows.peek().is_some(),
            "no transition table in ARCHITECTURE.md"
        );
        let mut documented = BTreeSet::new();
        for row in rows {
            let cols: Vec<&str> = row.split('|').map(str::trim).collect();
            let event = cols[2].trim_matches('`').to_string();
            let to: State = cols[3].parse().unwrap_or_else(|e| panic!("{row}: {e}"));
            for from in cols[1].split(',') {
                let from: State = from.trim().parse().unwrap_or_else(|e| panic!("{row}: {e}"));
                documented.insert((from, event.clone(), to));
            }
        }
        let mut allowed = BTreeSet::new();
        for from in State::ALL {
            for ev in all_events() {
                if let Ok(to) = next(from, &ev) {
                    allowed.insert((from, ev.name().to_string(), to));
                }
            }
        }
        let missing: Vec<_> = allowed.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&allowed).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "docs/ARCHITECTURE.md's table and machine::next disagree\n  not documented: {missing:?}\n  documented but illegal: {extra:?}"
        );
    }

    #[test]
    fn a_verified_file_can_never_go_back_to_pending_or_failed() {
        for ev in all_events() {
            if let Ok(to) = next(State::Verified, &ev) {
                assert_eq!(to, State::Archived, "verified --{}--> {to}", ev.name());
            }
        }
    }

    #[test]
    fn a_sent_entry_goes_back_to_pending_only_by_reupload() {
        for ev in all_events() {
            if next(State::Sent, &ev) == Ok(State::Pending) {
                assert_eq!(ev.name(), "reupload");
            }
        }
    }

    #[test]
    fn state_names_round_trip() {
        for st in State::ALL {
            assert_eq!(st.as_str().parse::<State>().unwrap(), st);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!("bogus".parse::<State>().is_err());
    }
}
