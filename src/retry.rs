//! When to try again: the backoff schedule (full jitter, as a pure function of the
//! attempt number so it can be stored in the journal) and the destination gate that
//! pauses every worker while the destination is down.
//!
//! We do not use the `backoff` crate: it is unmaintained (RUSTSEC-2025-0012), keeps its
//! state in `Instant`s that cannot be persisted, and gives up after 15 minutes by
//! default. A per-file retry must survive a restart, so its schedule is
//! `attempts` + `next_attempt_at` in the journal and this function.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Delay before try number `attempt + 1`: uniform in [initial, min(max, initial·2^attempt)].
/// The floor of `initial` keeps a retry from ever being immediate.
pub fn delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let cap = initial
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let span = cap.saturating_sub(initial);
    initial + span.mul_f64(fastrand::f64())
}

/// Whether the destination is usable, shared by all workers.
///
/// A destination-wide error closes the gate for one backoff step; every worker waits
/// on it instead of burning its files' attempts. Errors reported by workers that
/// started before the gate last closed belong to the same outage step and are
/// ignored, so an outage is logged once per step, not once per file or worker.
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Notify,
    initial: Duration,
    max: Duration,
}

#[derive(Clone, Debug)]
struct GateState {
    /// Consecutive failed probes.
    failures: u32,
    /// When the current outage began (the first failed probe), or the last one ended
    /// (or the gate was made): what failover decides on.
    since: Instant,
    paused_until: Option<Instant>,
    /// Bumped each time the gate closes.
    epoch: u64,
    last_error: Option<String>,
}

/// What `report_down` decided, for the caller's log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Down {
    /// A new outage step: the gate is closed for `retry_in`.
    Paused { failures: u32, retry_in: Duration },
    /// Someone already reported this step.
    AlreadyPaused,
}

impl Gate {
    pub fn new(initial: Duration, max: Duration) -> Gate {
        Gate {
            state: Mutex::new(GateState {
                failures: 0,
                since: Instant::now(),
                paused_until: None,
                epoch: 0,
                last_error: None,
            }),
            changed: Notify::new(),
            initial,
            max,
        }
    }

    /// Wait until the gate is open; returns the epoch to report back with, or `None`
    /// when cancelled.
    pub(crate) async fn wait_open(&self, cancel: &CancellationToken) -> Option<u64> {
        loop {
            let (until, epoch) = {
                let st = self.state.lock().unwrap();
                (st.paused_until, st.epoch)
            };
            match until {
                Some(t) if t > Instant::now() => {
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep_until(t) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                _ => return Some(epoch),
            }
        }
    }

    pub(crate) fn report_down(&self, epoch: u64, error: &str) -> Down {
        let mut st = self.state.lock().unwrap();
        if epoch != st.epoch {
            return Down::AlreadyPaused;
        }
        let retry_in = delay(st.failures, self.initial, self.max);
        if st.failures == 0 {
            st.since = Instant::now();
        }
        st.failures += 1;
        st.epoch += 1;
        st.paused_until = Some(Instant::now() + retry_in);
        st.last_error = Some(error.to_string());
        Down::Paused {
            failures: st.failures,
            retry_in,
        }
    }

    /// A delivery worked: returns how many failed probes the outage lasted, if any.
    pub(crate) fn report_up(&self) -> Option<u32> {
        let mut st = self.state.lock().unwrap();
        if st.failures == 0 {
            return None;
        }
        let n = st.failures;
        st.failures = 0;
        st.since = Instant::now();
        st.paused_until = None;
        st.last_error = None;
        drop(st);
        self.changed.notify_waiters();
        Some(n)
    }

    /// (consecutive failed probes, time left until the next probe, last error).
    pub fn status(&self) -> (u32, Option<Duration>, Option<String>) {
        let st = self.state.lock().unwrap();
        let left = st
            .paused_until
            .and_then(|t| t.checked_duration_since(Instant::now()));
        (st.failures, left, st.last_error.clone())
    }

    pub(crate) fn is_down(&self) -> bool {
        self.state.lock().unwrap().failures > 0
    }

    /// (down?, since when: the outage's first failed probe, or when it last came up).
    pub(crate) fn health(&self) -> (bool, Instant) {
        let st = self.state.lock().unwrap();
        (st.failures > 0, st.since)
    }

    /// The epoch to report back with if the gate is open now; `None` while paused.
    /// Never waits: for a worker that has something else to do meanwhile.
    pub(crate) fn open_now(&self) -> Option<u64> {
        let st = self.state.lock().unwrap();
        match st.paused_until {
            Some(t) if t > Instant::now() => None,
            _ => Some(st.epoch),
        }
    }

    /// When the gate reopens, if it is paused.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        let st = self.state.lock().unwrap();
        st.paused_until.filter(|t| *t > Instant::now())
    }

    /// Fires when the gate reopens after an outage.
    pub(crate) fn reopened(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_stays_between_the_floor_and_the_capped_exponential() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(300));
        for attempt in 0..64 {
            let cap = Duration::from_secs(1u64 << attempt.min(20)).min(m);
            for _ in 0..50 {
                let d = delay(attempt, i, m);
                assert!(
                    d >= i && d <= cap,
                    "attempt {attempt}: {d:?} not in [{i:?}, {cap:?}]"
                );
            }
        }
        assert_eq!(delay(0, i, m), i, "the first retry waits exactly the floor");
    }

    #[test]
    fn delay_is_jittered_not_fixed() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(300));
        let seen: std::collections::HashSet<u128> =
            (0..20).map(|_| delay(6, i, m).as_millis()).collect();
        assert!(seen.len() > 5, "{seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_pauses_once_per_step_and_reopens_after_the_delay() {
        let gate = Gate::new(Duration::from_secs(1), Duration::from_secs(60));
        let cancel = CancellationToken::new();
        let e0 = gate.wait_open(&cancel).await.unwrap();
        // Two workers fail in the same step: one pause, one log line.
        assert_eq!(
            gate.report_down(e0, "refused"),
            Down::Paused {
                failures: 1,
                retry_in: Duration::from_secs(1)
            }
        );
        assert_eq!(gate.report_down(e0, "refused"), Down::AlreadyPaused);
        let start = Instant::now();
        let e1 = gate.wait_open(&cancel).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        match gate.report_down(e1, "refused") {
            Down::Paused {
                failures: 2,
                retry_in,
            } => {
                assert!(retry_in >= Duration::from_secs(1) && retry_in <= Duration::from_secs(2))
            }
            other => panic!("{other:?}"),
        }
        assert!(gate.is_down());
        assert_eq!(gate.report_up(), Some(2));
        assert!(!gate.is_down());
        // Reopened at once for every waiter.
        let start = Instant::now();
        gate.wait_open(&cancel).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_gate_yields_to_cancellation() {
        let gate = Gate::new(Duration::from_secs(10), Duration::from_secs(60));
        let cancel = CancellationToken::new();
        let e = gate.wait_open(&cancel).await.unwrap();
        gate.report_down(e, "x");
        cancel.cancel();
        assert_eq!(gate.wait_open(&cancel).await, None);
    }
}
