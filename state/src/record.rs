//! The journal entry of one order file: what it is (name, size, CRC32), where it is
//! (state), and everything that happened to it (history).

use crate::machine::{self, Event, IllegalTransition, State};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which of the configured ERP destinations a step happened at (only recorded when
/// a backup is configured; absent means the primary, the only one there was).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    Primary,
    Backup,
}

impl Site {
    pub fn as_str(self) -> &'static str {
        match self {
            Site::Primary => "primary",
            Site::Backup => "backup",
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Site {
    type Err = String;
    fn from_str(s: &str) -> Result<Site, String> {
        match s {
            "primary" => Ok(Site::Primary),
            "backup" => Ok(Site::Backup),
            other => Err(format!(
                "unknown destination {other:?} (expected primary or backup)"
            )),
        }
    }
}

/// What intake knows about a new file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    pub name: String,
    pub size: u64,
    pub crc32: u32,
    pub batch: String,
    /// Where the file was taken from (the outbox path at intake).
    pub source_path: String,
    /// How it was found: "watch", "sweep", "recovery".
    pub found_by: String,
}

/// One change of state, kept forever in the entry's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: u64,
    pub from: Option<State>,
    pub to: State,
    #[serde(flatten)]
    pub event: Option<Event>,
    /// How long the attempt that ended in this transition took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// Where the attempt that made this transition happened (with a backup only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Site>,
}

/// A journal entry. Its state is private: the only way to change it is `apply`, which
/// goes through the transition table, so an illegal transition cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub crc32: u32,
    state: State,
    pub batch: String,
    pub source_path: String,
    pub found_by: String,
    /// Failed attempts so far (reset by a replay).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the next attempt is due (ms since epoch); `None` means now.
    pub next_attempt_at: Option<u64>,
    pub remote_path: Option<String>,
    pub archive_path: Option<String>,
    pub quarantine_path: Option<String>,
    pub detected_at: u64,
    pub updated_at: u64,
    pub history: Vec<Transition>,
    /// The destination this entry is bound to: where its temp file is (`sent`), where
    /// the verified copy went (`verified`, `archived`), or where an operator's replay
    /// pinned it (`pending`). `None`: not bound (or no backup configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Site>,
}

impl Record {
    pub(crate) fn new(id: u64, new: NewEntry, at: u64) -> Record {
        Record {
            id,
            name: new.name,
            size: new.size,
            crc32: new.crc32,
            state: State::Pending,
            batch: new.batch,
            source_path: new.source_path,
            found_by: new.found_by,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            remote_path: None,
            archive_path: None,
            quarantine_path: None,
            detected_at: at,
            updated_at: at,
            history: vec![Transition {
                at,
                from: None,
                to: State::Pending,
                event: None,
                elapsed_ms: None,
                destination: None,
            }],
            destination: None,
        }
    }

    /// True if this entry never was anything but `invalid` (born so, or pending and
    /// never tried before it went invalid): nothing was ever sent or recorded for it
    /// beyond its file's arrival, so forgetting it loses nothing.
    pub fn only_ever_invalid(&self) -> bool {
        self.state == State::Invalid
            && self
                .history
                .iter()
                .all(|t| t.event.is_none() || matches!(t.event, Some(Event::Invalid { .. })))
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Delivery attempts made since the entry was found (or last replayed or re-sent),
    /// as operators see them: `journal list`'s ATT, `show`, `export`, and the
    /// `attempt=N` of the log lines, which number the attempt they are about. That is
    /// the failed ones (`attempts`, the counter the backoff runs on) plus the one
    /// that got through or is under way: it uploaded, or the pipeline verified a copy
    /// already there (a transition that ends an attempt carries its `elapsed_ms`).
    /// A duplicate verified at intake, or an entry a rebuild made, was never tried.
    pub fn attempts_made(&self) -> u32 {
        let reset = self
            .history
            .iter()
            .rposition(|t| matches!(t.event, Some(Event::Replay { .. } | Event::Resend { .. })))
            .map_or(0, |i| i + 1);
        let since = &self.history[reset..];
        let last_failure = since
            .iter()
            .rposition(|t| matches!(t.event, Some(Event::Retry { .. } | Event::Failed { .. })))
            .map_or(0, |i| i + 1);
        let got_through = since[last_failure..].iter().any(|t| match t.event {
            Some(Event::Uploaded { .. }) => true,
            Some(Event::Verified { .. }) => t.elapsed_ms.is_some(),
            _ => false,
        });
        self.attempts + u32::from(got_through)
    }

    /// The time of the last transition into `state`, if it ever got there.
    pub fn entered(&self, state: State) -> Option<u64> {
        self.history
            .iter()
            .rev()
            .find(|t| t.to == state)
            .map(|t| t.at)
    }

    /// The CRC32 as operators see it elsewhere (8 hex digits).
    pub fn crc_hex(&self) -> String {
        format!("{:08x}", self.crc32)
    }

    /// Apply `event` at time `at`: the state moves by the table, the data the event
    /// carries lands in the entry, and the history grows by one line.
    pub(crate) fn apply(
        &mut self,
        event: Event,
        at: u64,
        elapsed_ms: Option<u64>,
    ) -> Result<(), IllegalTransition> {
        self.apply_at(event, at, elapsed_ms, None)
    }

    /// `apply`, for a step taken at destination `site`: the transition records it, and
    /// an upload, a verified copy or a pinned replay binds the entry to it. A new
    /// upload elsewhere, an unpinned replay or a re-send unbinds it.
    pub(crate) fn apply_at(
        &mut self,
        event: Event,
        at: u64,
        elapsed_ms: Option<u64>,
        site: Option<Site>,
    ) -> Result<(), IllegalTransition> {
        let to = machine::next(self.state, &event)?;
        match &event {
            // Always, `None` included (a run without a backup: the primary): a binding
            // left from a pinned replay must not outlive an upload made elsewhere, or
            // recovery would look for the temp at the wrong destination.
            Event::Uploaded { .. } | Event::Verified { .. } => self.destination = site,
            Event::Replay { .. } | Event::Resend { .. } => self.destination = site,
            // The temp is gone (or going): nothing binds the entry any more.
            Event::Reupload { .. } => self.destination = None,
            _ => {}
        }
        match &event {
            Event::Uploaded { remote_path } => self.remote_path = Some(remote_path.clone()),
            Event::Verified {
                remote_path,
                archive_path,
                ..
            } => {
                self.remote_path = Some(remote_path.clone());
                self.archive_path = Some(archive_path.clone());
                self.last_error = None;
                self.next_attempt_at = None;
            }
            Event::Archived => {}
            Event::ArchivedAs { path } => self.archive_path = Some(path.clone()),
            Event::LocalReplaced { note } => {
                self.archive_path = None;
                self.last_error = Some(note.clone());
            }
            Event::Retry {
                error,
                next_attempt_at,
            } => {
                self.attempts += 1;
                self.last_error = Some(error.clone());
                self.next_attempt_at = Some(*next_attempt_at);
            }
            Event::Failed { error } => {
                self.attempts += 1;
                self.last_error = Some(error.clone());
                self.next_attempt_at = None;
            }
            Event::Quarantined { reason, path } => {
                self.last_error = Some(reason.clone());
                self.quarantine_path = Some(path.clone());
            }
            Event::Invalid { reason } => self.last_error = Some(reason.clone()),
            Event::Replay { .. } => {
                self.attempts = 0;
                self.next_attempt_at = None;
            }
            Event::Resend { from_path, .. } => {
                self.attempts = 0;
                self.next_attempt_at = None;
                self.source_path = from_path.clone();
                self.archive_path = None;
            }
            Event::Rehash { size, crc32 } => {
                self.size = *size;
                self.crc32 = *crc32;
                if self.state == State::Invalid {
                    self.last_error = None;
                }
            }
            Event::Reupload { reason } => {
                self.remote_path = None;
                self.last_error = Some(reason.clone());
                self.next_attempt_at = None;
            }
            // `last_error` stays: why it failed is still worth reading.
            Event::Forgotten { .. } => self.next_attempt_at = None,
        }
        self.history.push(Transition {
            at,
            from: Some(self.state),
            to,
            event: Some(event),
            elapsed_ms,
            destination: site,
        });
        self.state = to;
        self.updated_at = at;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Record {
        Record::new(
            7,
            NewEntry {
                name: "order-1.json".into(),
                size: 10,
                crc32: 0xdead_beef,
                batch: "b1".into(),
                source_path: "/o/order-1.json".into(),
                found_by: "watch".into(),
            },
            1000,
        )
    }

    #[test]
    fn an_illegal_event_leaves_the_record_untouched() {
        let mut r = entry();
        let before = r.clone();
        assert!(r.apply(Event::Archived, 2000, None).is_err());
        assert_eq!(r, before);
    }

    #[test]
    fn retries_count_attempts_and_replay_resets_them() {
        let mut r = entry();
        r.apply(
            Event::Retry {
                error: "x".into(),
                next_attempt_at: 5,
            },
            1,
            None,
        )
        .unwrap();
        r.apply(Event::Failed { error: "y".into() }, 2, None)
            .unwrap();
        assert_eq!((r.state(), r.attempts), (State::Failed, 2));
        assert_eq!(r.last_error.as_deref(), Some("y"));
        r.apply(Event::Replay { by: None }, 3, None).unwrap();
        assert_eq!((r.state(), r.attempts), (State::Pending, 0));
        assert_eq!(r.history.len(), 4);
        assert_eq!(r.entered(State::Failed), Some(2));
    }

    fn uploaded() -> Event {
        Event::Uploaded {
            remote_path: "/in/order-1.json.part".into(),
        }
    }
    fn verified() -> Event {
        Event::Verified {
            remote_path: "/in/order-1.json".into(),
            archive_path: "/a/order-1.json".into(),
            note: None,
        }
    }
    fn retry() -> Event {
        Event::Retry {
            error: "e".into(),
            next_attempt_at: 9,
        }
    }

    #[test]
    fn attempts_made_count_the_one_that_got_through_as_the_logs_do() {
        // Delivered on the first attempt: the log said attempt=1.
        let mut r = entry();
        assert_eq!(r.attempts_made(), 0, "found, not tried yet");
        r.apply(uploaded(), 2, None).unwrap();
        assert_eq!(r.attempts_made(), 1, "under way");
        r.apply(verified(), 3, Some(5)).unwrap();
        r.apply(Event::Archived, 4, None).unwrap();
        assert_eq!((r.attempts, r.attempts_made()), (0, 1));

        // One failure, then through on the second (attempt=1 warned, attempt=2 verified).
        let mut r = entry();
        r.apply(retry(), 2, Some(1)).unwrap();
        assert_eq!(r.attempts_made(), 1);
        r.apply(uploaded(), 3, None).unwrap();
        r.apply(verified(), 4, Some(5)).unwrap();
        assert_eq!((r.attempts, r.attempts_made()), (1, 2));

        // Uploaded, then the rename failed: one attempt made, the next not yet.
        let mut r = entry();
        r.apply(uploaded(), 2, None).unwrap();
        r.apply(retry(), 3, Some(1)).unwrap();
        assert_eq!(r.attempts_made(), 1);
        r.apply(verified(), 4, Some(2)).unwrap();
        assert_eq!(r.attempts_made(), 2);

        // Gave up after three: three made. A replay starts the count again.
        let mut r = entry();
        r.apply(retry(), 2, Some(1)).unwrap();
        r.apply(retry(), 3, Some(1)).unwrap();
        r.apply(Event::Failed { error: "x".into() }, 4, Some(1))
            .unwrap();
        assert_eq!(r.attempts_made(), 3);
        r.apply(Event::Replay { by: None }, 5, None).unwrap();
        assert_eq!(r.attempts_made(), 0);
        r.apply(uploaded(), 6, None).unwrap();
        assert_eq!(r.attempts_made(), 1);

        // Verified without an attempt (a duplicate at intake, a rebuild): none made.
        let mut r = entry();
        r.apply(verified(), 2, None).unwrap();
        assert_eq!(r.attempts_made(), 0);
        // A forced re-send starts again: the old delivery is not this one's attempt.
        r.apply(Event::Archived, 3, None).unwrap();
        r.apply(
            Event::Resend {
                from_path: "/a/order-1.json".into(),
                by: None,
            },
            4,
            None,
        )
        .unwrap();
        assert_eq!(r.attempts_made(), 0);
    }

    #[test]
    fn only_an_entry_that_never_was_anything_but_invalid_may_be_forgotten() {
        let mut r = entry();
        let invalid = || Event::Invalid { reason: "r".into() };
        r.apply(invalid(), 2, None).unwrap();
        assert!(r.only_ever_invalid(), "{r:?}");
        // Tried once before it went invalid: it has a past.
        let mut tried = entry();
        tried
            .apply(
                Event::Retry {
                    error: "e".into(),
                    next_attempt_at: 3,
                },
                2,
                None,
            )
            .unwrap();
        tried.apply(invalid(), 3, None).unwrap();
        assert!(!tried.only_ever_invalid());
        // Not invalid now: not forgettable either.
        r.apply(Event::Rehash { size: 1, crc32: 1 }, 4, None)
            .unwrap();
        assert!(!r.only_ever_invalid());
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let mut r = entry();
        r.apply(
            Event::Uploaded {
                remote_path: "/in/order-1.json.part".into(),
            },
            2,
            None,
        )
        .unwrap();
        let text = serde_json::to_string(&r).unwrap();
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_replay_records_who_asked_and_one_written_before_that_still_reads() {
        let mut r = entry();
        r.apply(Event::Failed { error: "y".into() }, 2, None)
            .unwrap();
        let ops = crate::Caller {
            uid: 1001,
            user: Some("alice".into()),
        };
        r.apply(
            Event::Replay {
                by: Some(ops.clone()),
            },
            3,
            None,
        )
        .unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#""event":"replay","by":{"uid":1001,"user":"alice"}"#),
            "{text}"
        );
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        // What the previous version wrote: no `by`.
        let old = text.replace(r#","by":{"uid":1001,"user":"alice"}"#, "");
        let back: Record = serde_json::from_str(&old).unwrap();
        assert_eq!(
            back.history.last().unwrap().event,
            Some(Event::Replay { by: None })
        );
        assert_eq!(ops.to_string(), "alice (uid 1001)");
    }

    #[test]
    fn a_step_at_a_destination_binds_the_entry_and_old_records_decode_unbound() {
        let mut r = entry();
        let old = serde_json::to_string(&r).unwrap();
        assert!(
            !old.contains("destination"),
            "nothing written without a backup"
        );
        let back: Record = serde_json::from_str(&old).unwrap();
        assert_eq!(back.destination, None);
        r.apply_at(retry(), 1, None, Some(Site::Primary)).unwrap();
        assert_eq!(r.destination, None, "a failed try binds nothing");
        r.apply_at(uploaded(), 2, None, Some(Site::Backup)).unwrap();
        assert_eq!(r.destination, Some(Site::Backup));
        r.apply_at(verified(), 3, Some(1), Some(Site::Backup))
            .unwrap();
        assert_eq!(r.destination, Some(Site::Backup));
        assert_eq!(r.history.last().unwrap().destination, Some(Site::Backup));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }

    /// Review finding: a replay pinned to the backup, then an upload by a run without
    /// a backup (site `None`: the primary). The entry is bound to where its temp is,
    /// the primary; a stale `Backup` would send its recovery to the wrong inbox.
    #[test]
    fn an_upload_made_without_a_backup_unbinds_a_pin_to_the_backup() {
        let mut r = entry();
        r.apply(Event::Failed { error: "x".into() }, 1, None)
            .unwrap();
        r.apply_at(Event::Replay { by: None }, 2, None, Some(Site::Backup))
            .unwrap();
        assert_eq!(r.destination, Some(Site::Backup));
        r.apply_at(uploaded(), 3, None, None).unwrap();
        assert_eq!((r.state(), r.destination), (State::Sent, None));
    }
}
