//! What `run` (the service) and `sync` (one pass, for cron) differ in, named once:
//! everything else in `service/` is the same code for both.

use std::time::Duration;

/// How a run behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Watch and deliver until cancelled.
    Service,
    /// One sweep, one attempt per file, then stop (`sync`, for cron).
    Once,
}

impl Mode {
    /// Watch the outbox with inotify (and watch it again when it is re-created);
    /// otherwise one sweep finds the work.
    pub(crate) fn watches(self) -> bool {
        self == Mode::Service
    }

    /// Sweep every `sweep_interval` until cancelled; otherwise the pass ends when
    /// the first sweep's work is done (the queue closes after intake).
    pub(crate) fn repeats(self) -> bool {
        self == Mode::Service
    }

    /// Serve the control socket and metrics, prune the journal, and talk to systemd
    /// (ready, watchdog, stopping).
    pub fn serves(self) -> bool {
        self == Mode::Service
    }

    /// A retry due later waits in the queue for its time; otherwise it is left for
    /// the next run, so a cron `sync` does not burn an attempt per run on a file
    /// that is backing off.
    pub(crate) fn waits_for_retries(self) -> bool {
        self == Mode::Service
    }

    /// A file still settling, or not valid yet, is looked at again by a timer;
    /// otherwise a pass gives a settling file a few short waits and leaves an
    /// invalid one for the next run.
    pub(crate) fn looks_again_later(self) -> bool {
        self == Mode::Service
    }

    /// Connect every worker and clean the inbox at start, before the first order
    /// arrives, and clean it again when idle; otherwise the first delivery does.
    pub(crate) fn connects_early(self) -> bool {
        self == Mode::Service
    }

    /// A destination outage pauses the queue until the gate's probe succeeds;
    /// otherwise it ends the pass, with the error in the summary.
    pub(crate) fn pauses_when_down(self) -> bool {
        self == Mode::Service
    }

    /// Keep the ids this run touched, for the pass's summary. A service that runs
    /// for months has no summary and must not grow the list without end.
    pub(crate) fn summarises(self) -> bool {
        self == Mode::Once
    }

    /// How long the archiver waits, after a verified file, for more to archive with
    /// it (one journal flush and one fsync per folder for the whole batch). Nothing
    /// waits on the archive move: the file is already in the inbox. In the service a
    /// trickle's files come one by one, so a short window archived them one by one,
    /// each paying a flush (and the wakeups of sled's I/O threads) and two folder
    /// fsyncs: a quarter of a second batches a 50 files/s trickle by about 12 (issue
    /// 17, benches/trickle_cpu.rs). A pass keeps the short window: its end waits for
    /// the last batch.
    pub(crate) fn archive_window(self) -> Duration {
        match self {
            Mode::Service => Duration::from_millis(250),
            Mode::Once => Duration::from_millis(5),
        }
    }

    /// The end of the "ready" log line.
    pub(super) fn ready_line(self) -> &'static str {
        match self {
            Mode::Service => "watching",
            Mode::Once => "one pass over",
        }
    }
}
