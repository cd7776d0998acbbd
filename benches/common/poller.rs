//! The inbox poller of the latency measurement (`trickle.rs`, for benches/latency.rs
//! and the latency part of benches/e2e/): one thread stats the expected final path of every
//! outstanding file, sleeping `POLL_SLEEP` between passes, and takes `Instant::now()`
//! when a stat first succeeds.

use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Sleep between two polling passes over the outstanding inbox paths.
pub const POLL_SLEEP: Duration = Duration::from_micros(200);

/// When the poller first found a file, and when the last stat that missed it began.
#[derive(Clone, Copy)]
pub struct Sighting {
    last_miss: Option<Instant>,
    seen: Instant,
}

impl Sighting {
    /// Close -> seen (an upper bound on the latency), and how much earlier than seen
    /// the file may have appeared (the resolution of that sample).
    pub fn timing(self, closed: Instant) -> (Duration, Duration) {
        let not_before = self.last_miss.map_or(closed, |m| m.max(closed));
        (
            self.seen.saturating_duration_since(closed),
            self.seen.saturating_duration_since(not_before),
        )
    }
}

/// What the poller thread returns: the sighting of each file, by index, and the
/// intervals between the starts of consecutive passes.
pub type Polled = (Vec<Option<Sighting>>, Vec<Duration>);

/// Starts the poller thread. Each file is announced as `(index, final path)` before it
/// is written, so the poller is already looking for it; after the sender is dropped the
/// poller stops once everything was seen, or `timeout` after the drop.
pub fn spawn(timeout: Duration) -> (mpsc::Sender<(usize, PathBuf)>, JoinHandle<Polled>) {
    let (tx, rx) = mpsc::channel();
    (tx, thread::spawn(move || poll_inbox(rx, timeout)))
}

fn poll_inbox(rx: mpsc::Receiver<(usize, PathBuf)>, timeout: Duration) -> Polled {
    let mut sightings: Vec<Option<Sighting>> = Vec::new();
    // (index, final path, start of the last stat that did not find it)
    let mut outstanding: Vec<(usize, PathBuf, Option<Instant>)> = Vec::new();
    let mut intervals = Vec::new();
    let mut producer_done: Option<Instant> = None;
    let mut last_pass: Option<Instant> = None;
    loop {
        let pass = Instant::now();
        if let Some(prev) = last_pass {
            intervals.push(pass - prev);
        }
        last_pass = Some(pass);
        loop {
            match rx.try_recv() {
                Ok((i, p)) => {
                    if sightings.len() <= i {
                        sightings.resize(i + 1, None);
                    }
                    outstanding.push((i, p, None));
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    producer_done.get_or_insert_with(Instant::now);
                    break;
                }
            }
        }
        outstanding.retain_mut(|(i, p, last_miss)| {
            let before = Instant::now();
            if fs::symlink_metadata(p).is_ok() {
                sightings[*i] = Some(Sighting {
                    last_miss: *last_miss,
                    seen: Instant::now(),
                });
                false
            } else {
                *last_miss = Some(before);
                true
            }
        });
        if let Some(done) = producer_done {
            if outstanding.is_empty() || done.elapsed() > timeout {
                return (sightings, intervals);
            }
        }
        thread::sleep(POLL_SLEEP);
    }
}
