//! The latency measurement: a warm-up file, then files written at a fixed rate, each
//! timed from its close to its final name in the inbox by the poller thread.

use crate::poller::{self, POLL_SLEEP};
use crate::report::Latency;
use crate::results::{ms, Summary};
use plutus_testkit::procfs::Psi;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// A trickle file not in the inbox this long after the last close fails the bench.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Trickle {
    pub cpu_pressure_pct: Option<f64>,
    pub lat: Vec<f64>,
    pub windows: Vec<f64>,
    pub warmup_ms: f64,
    pub write_span_s: f64,
    pub max_write_lag_ms: f64,
}

impl Trickle {
    /// The report's row for this run of `name`, whose client used `client_cpu_s`;
    /// printed as it is recorded.
    pub fn report(
        self,
        name: String,
        plutus: bool,
        per_second: f64,
        client_cpu_s: f64,
        note: &str,
    ) -> Latency {
        let l = Latency {
            name,
            plutus,
            per_second,
            lat: self.lat,
            windows: self.windows,
            warmup_ms: self.warmup_ms,
            write_span_s: self.write_span_s,
            max_write_lag_ms: self.max_write_lag_ms,
            client_cpu_s: Some(client_cpu_s),
            cpu_pressure_pct: self.cpu_pressure_pct,
            note: note.into(),
        };
        print_latency(&l);
        l
    }
}

/// Writes `orders[0]` and waits for it (warm-up, not counted), then the rest at
/// `per_second` into `outbox`, timing each close -> final name existing in `inbox`.
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
    let psi = Psi::start("cpu", "some");
    let (tx, poller) = poller::spawn(ARRIVAL_TIMEOUT);
    let period = Duration::from_secs_f64(1.0 / per_second);
    let mut closes = Vec::with_capacity(measured.len());
    let mut max_lag = Duration::ZERO;
    let start = Instant::now() + Duration::from_millis(50);
    for (i, (name, body)) in measured.iter().enumerate() {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        tx.send((i, inbox.join(name))).unwrap();
        fs::write(outbox.join(name), body).unwrap();
        closes.push(Instant::now());
    }
    drop(tx);
    let (sightings, _) = poller.join().expect("poller panicked");
    let missing = sightings.iter().filter(|s| s.is_none()).count();
    if missing > 0 {
        return Err(format!(
            "{missing} of {} files not in the inbox {ARRIVAL_TIMEOUT:?} after the last write",
            measured.len()
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
        cpu_pressure_pct: psi.share(),
        lat,
        windows,
        warmup_ms: ms(warmup),
        write_span_s: (closes[closes.len() - 1] - closes[0]).as_secs_f64(),
        max_write_lag_ms: ms(max_lag),
    })
}

pub fn print_latency(l: &Latency) {
    let s = Summary::of(&l.lat);
    let w = Summary::of(&l.windows);
    println!(
        "  {} files in {:.2} s (max write lag {:.2} ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms \
         (warm-up {:.0} ms, not counted; resolution p99 {:.3} ms){}",
        s.count,
        l.write_span_s,
        l.max_write_lag_ms,
        s.p50,
        s.p90,
        s.p99,
        s.max,
        l.warmup_ms,
        w.p99,
        l.client_cpu_s
            .map_or(String::new(), |c| format!("; client CPU {c:.2} s"))
    );
}
