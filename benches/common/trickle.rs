//! The latency measurement of both benches (benches/latency.rs, and the `latency`
//! part of benches/e2e/): close of an order file in the outbox → its final name in the
//! inbox. One warm-up file, written and awaited, is not counted; then the rest are
//! written on a fixed schedule with `std::fs::write` (which returns after close),
//! `Instant::now()` taken right after, and the poller thread (`poller.rs`) times each
//! one's arrival. Each sample is an upper bound; how much earlier the file may have
//! appeared is its resolution.
//!
//! It writes and times, nothing else: what runs between outbox and inbox (plutus-sync
//! with one config or another, lsyncd), and what is checked afterwards, is the caller's.

use crate::poller::{self, POLL_SLEEP};
use crate::results::ms;
use plutus_testkit::procfs::Psi;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// A file not in the inbox this long after its close fails the run.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The first scheduled write is this far after the schedule is drawn up, so that it
/// is not already late.
const SCHEDULE_LEAD: Duration = Duration::from_millis(50);

/// One trickle's figures, in milliseconds where not said otherwise.
pub struct Trickle {
    /// Close → final name seen (an upper bound), per measured file, in write order.
    pub lat: Vec<f64>,
    /// How much earlier than measured each file may have appeared.
    pub windows: Vec<f64>,
    pub warmup_ms: f64,
    /// From the first to the last close: the achieved write rate.
    pub write_span_s: f64,
    /// The worst lateness of a write against its schedule.
    pub max_write_lag_ms: f64,
    /// Share of the run's wall time with some task waiting for a CPU (Linux PSI).
    pub cpu_pressure_pct: Option<f64>,
    // The next two are reported by benches/latency.rs only.
    /// Share of the run's wall time with all tasks stalled on I/O (Linux PSI).
    #[allow(dead_code)]
    pub io_pressure_pct: Option<f64>,
    /// Intervals between the starts of consecutive polling passes.
    #[allow(dead_code)]
    pub poll_intervals_ms: Vec<f64>,
}

/// Writes `orders[0]` into `outbox` and waits for it in `inbox` (warm-up, not
/// counted), then the rest at `per_second`, timing each close → final name existing
/// in `inbox`. An error says which files did not arrive.
pub fn trickle(
    outbox: &Path,
    inbox: &Path,
    orders: &[(String, Vec<u8>)],
    per_second: f64,
) -> Result<Trickle, String> {
    let (warm_name, warm_body) = &orders[0];
    let warm_path = inbox.join(warm_name);
    fs::write(outbox.join(warm_name), warm_body).unwrap();
    let closed = Instant::now();
    while !warm_path.exists() {
        if closed.elapsed() > ARRIVAL_TIMEOUT {
            return Err(format!(
                "warm-up file not delivered within {ARRIVAL_TIMEOUT:?}"
            ));
        }
        thread::sleep(POLL_SLEEP);
    }
    let warmup = closed.elapsed();

    let measured = &orders[1..];
    let psi = (Psi::start("cpu", "some"), Psi::start("io", "full"));
    let (tx, poller) = poller::spawn(ARRIVAL_TIMEOUT);
    let period = Duration::from_secs_f64(1.0 / per_second);
    let mut closes = Vec::with_capacity(measured.len());
    let mut max_lag = Duration::ZERO;
    let start = Instant::now() + SCHEDULE_LEAD;
    for (i, (name, body)) in measured.iter().enumerate() {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            // The schedule: the next write is due then.
            thread::sleep(due - now);
        }
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        // Announced before the write, so the poller is already looking for it.
        tx.send((i, inbox.join(name))).unwrap();
        fs::write(outbox.join(name), body).unwrap();
        closes.push(Instant::now());
    }
    drop(tx);
    let (sightings, poll_intervals) = poller.join().expect("poller panicked");
    let missing: Vec<&str> = sightings
        .iter()
        .zip(measured)
        .filter(|(s, _)| s.is_none())
        .map(|(_, (n, _))| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} of {} files not in the inbox {ARRIVAL_TIMEOUT:?} after the last write \
             (first: {:?})",
            missing.len(),
            measured.len(),
            &missing[..missing.len().min(5)],
        ));
    }
    let (lat, windows) = sightings
        .iter()
        .zip(&closes)
        .map(|(s, &closed)| {
            let (latency, window) = s.expect("checked above").timing(closed);
            (ms(latency), ms(window))
        })
        .unzip();
    Ok(Trickle {
        lat,
        windows,
        warmup_ms: ms(warmup),
        write_span_s: (closes[closes.len() - 1] - closes[0]).as_secs_f64(),
        max_write_lag_ms: ms(max_lag),
        cpu_pressure_pct: psi.0.share(),
        io_pressure_pct: psi.1.share(),
        poll_intervals_ms: poll_intervals.into_iter().map(ms).collect(),
    })
}
