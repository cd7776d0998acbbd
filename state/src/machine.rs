//! The state machine of one order file: a pure function from (state, event) to the
//! next state. No I/O here; the journal applies it atomically.
//!
//! ```text
//!             Uploaded           Verified            Archived
//!   pending ───────────▶ sent ────────────▶ verified ────────▶ archived
//!     │  ▲ ╲                │ ╲                ▲                 │
//!     │  │  ╲ Verified (already delivered / duplicate)           │ Resend (operator, --force)
//!     │  │   ╰─────────────────────────────────╯                 │
//!     │  ╰──── Retry ───────┤◀───────────── Replay ── failed ◀───┤ Failed (from pending or sent)
//!     ╰── Quarantined ──▶ quarantined                            ▼
//!                                                              pending
//! ```

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
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Sent,
        State::Verified,
        State::Archived,
        State::Failed,
        State::Quarantined,
    ];

    /// Live entries are the ones the service still has to act on.
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
                    "unknown state {s:?} (expected one of pending, sent, verified, archived, failed, quarantined)"
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
    /// The local copy is in the archive.
    Archived,
    /// Delivered and verified, but the local file was replaced by new content before
    /// it could be archived: nothing of this delivery is left to move, and the new
    /// content is a new file of its own.
    LocalReplaced { note: String },
    /// An attempt failed; try again at `next_attempt_at` (ms since epoch).
    Retry { error: String, next_attempt_at: u64 },
    /// Give up until an operator replays it.
    Failed { error: String },
    /// Not a valid order file.
    Quarantined { reason: String, path: String },
    /// Operator's replay of a failed entry.
    Replay,
    /// Operator's forced re-send of an archived entry, from `from_path` (the archive).
    Resend { from_path: String },
    /// The local file changed after intake: new size and CRC32, upload again.
    Rehash { size: u64, crc32: u32 },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Uploaded { .. } => "uploaded",
            Event::Verified { .. } => "verified",
            Event::Archived => "archived",
            Event::LocalReplaced { .. } => "local_replaced",
            Event::Retry { .. } => "retry",
            Event::Failed { .. } => "failed",
            Event::Quarantined { .. } => "quarantined",
            Event::Replay => "replay",
            Event::Resend { .. } => "resend",
            Event::Rehash { .. } => "rehash",
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
        (Verified, Event::Archived | Event::LocalReplaced { .. }) => Archived,
        (Pending | Sent, Event::Retry { .. }) => Pending,
        (Pending | Sent, Event::Failed { .. }) => Failed,
        (Pending | Sent, Event::Quarantined { .. }) => Quarantined,
        (Failed, Event::Replay) => Pending,
        (Archived, Event::Resend { .. }) => Pending,
        (Pending | Sent, Event::Rehash { .. }) => Pending,
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
            Event::Replay,
            Event::Resend {
                from_path: "a".into(),
            },
            Event::Rehash { size: 1, crc32: 2 },
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
            (Verified, "local_replaced", Archived),
            (Pending, "retry", Pending),
            (Sent, "retry", Pending),
            (Pending, "failed", Failed),
            (Sent, "failed", Failed),
            (Pending, "quarantined", Quarantined),
            (Sent, "quarantined", Quarantined),
            (Failed, "replay", Pending),
            (Archived, "resend", Pending),
            (Pending, "rehash", Pending),
            (Sent, "rehash", Pending),
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
        assert_eq!(checked, 6 * 10);
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
    fn state_names_round_trip() {
        for st in State::ALL {
            assert_eq!(st.as_str().parse::<State>().unwrap(), st);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!("bogus".parse::<State>().is_err());
    }
}
