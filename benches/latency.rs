//! First latency measurement: close of an order file in the outbox → its final name
//! exists in the SFTP inbox, for `plutus-sync run` against a real OpenSSH sshd on
//! 127.0.0.1 (the `plutus-testkit` fixture).
//!
//! `cargo bench --bench latency` runs the full scenarios and writes
//! `target/bench-results/latency.json` (plus each scenario's service log beside it).
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke run of 10
//! files, so CI exercises the code in a few seconds; that writes `latency-smoke.*`.
//!
//! Method: the main thread writes each order with `std::fs::write` (which returns
//! after close) on a fixed schedule and takes `Instant::now()` right after. One poller
//! thread stats the expected final path of every outstanding file, sleeping
//! `POLL_SLEEP` between passes, and takes `Instant::now()` when a stat first succeeds.
//! The service renames the temp file onto the final name only after the read-back
//! check, so "exists" means "complete". Each sample is therefore an upper bound; the
//! start of the last stat that missed the file bounds it from below, and the width of
//! that window is reported as the resolution. At the end every file must be in the
//! inbox and the archive byte-identical and journaled exactly once.

#[path = "common/machine.rs"]
mod machine;
#[path = "common/poller.rs"]
mod poller;
#[path = "common/results.rs"]
mod results;

use machine::Machine;
use plutus_testkit::checks::{assert_delivered_exactly_once, tail, wait_archived};
use plutus_testkit::orders::order;
use plutus_testkit::procfs::Psi;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use poller::POLL_SLEEP;
use results::{ms, target_dir, Summary};
use serde_json::json;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// A file not in the inbox this long after the last close fails the bench.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Worker connections, spelled out so the figures say what they measured.
const CONNECTIONS: usize = 2;

struct Scenario {
    slug: &'static str,
    name: &'static str,
    files: usize,
    per_second: f64,
}

struct Outcome {
    /// Close → final name seen (an upper bound), per measured file, in write order.
    latencies: Vec<Duration>,
    /// How much earlier than measured each file may have appeared.
    windows: Vec<Duration>,
    warmup: Duration,
    /// Intervals between the starts of consecutive polling passes.
    poll_intervals: Vec<Duration>,
    /// Time from the first to the last close (the achieved write rate).
    write_span: Duration,
    /// Worst lateness of a write against its schedule.
    max_write_lag: Duration,
    sizes: (usize, usize),
    /// Share of the run's wall time with some task waiting for a CPU, and with all
    /// tasks stalled on I/O (Linux PSI), in percent: other load on the machine.
    cpu_pressure: Option<f64>,
    io_pressure: Option<f64>,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scenarios: &[Scenario] = if full {
        &[
            Scenario {
                slug: "trickle",
                name: "trickle 10/s x 30s",
                files: 300,
                per_second: 10.0,
            },
            Scenario {
                slug: "steady",
                name: "steady 100/s x 10s",
                files: 1000,
                per_second: 100.0,
            },
        ]
    } else {
        &[Scenario {
            slug: "smoke",
            name: "smoke 20/s x 0.5s",
            files: 10,
            per_second: 20.0,
        }]
    };

    let release = !cfg!(debug_assertions);
    let machine = Machine::probe();
    println!(
        "plutus-sync latency bench ({}): close in outbox -> final name in SFTP inbox",
        if full {
            "full"
        } else {
            "smoke; `cargo bench --bench latency` for the real run"
        }
    );
    println!(
        "machine: nproc={} kernel={} cpu={:?} loadavg={:?}",
        machine.nproc, machine.kernel, machine.cpu, machine.loadavg
    );
    println!(
        "build: {} (bench and plutus-sync binary share the profile); {}; connections={CONNECTIONS}",
        if release {
            "release"
        } else {
            "DEBUG, figures not representative"
        },
        machine.sshd
    );
    println!(
        "polling: one thread stats every outstanding inbox path, {} us sleep between passes; \
         percentiles by nearest rank",
        POLL_SLEEP.as_micros()
    );

    let dir = target_dir().join("bench-results");
    fs::create_dir_all(&dir).unwrap();
    let mut results = Vec::new();
    for sc in scenarios {
        let out = run(sc, &dir);
        let lat = Summary::of(&ms_each(&out.latencies));
        let win = Summary::of(&ms_each(&out.windows));
        let poll = Summary::of(&ms_each(&out.poll_intervals));
        let worst = (0..out.latencies.len())
            .max_by_key(|&i| out.latencies[i])
            .unwrap();
        let pct = |p: Option<f64>| p.map_or("n/a".to_string(), |p| format!("{p:.1}%"));
        println!();
        println!(
            "{}: {} files, {}-{} bytes, written in {:.2}s (max write lag {:.2} ms)",
            sc.name,
            out.latencies.len(),
            out.sizes.0,
            out.sizes.1,
            out.write_span.as_secs_f64(),
            ms(out.max_write_lag)
        );
        println!(
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  \
             (min {:.2}, mean {:.2}; warm-up file {:.2}, not counted)",
            lat.p50,
            lat.p90,
            lat.p99,
            lat.max,
            lat.min,
            lat.mean,
            ms(out.warmup)
        );
        println!(
            "  resolution ms: a sample is at most this much late: p50 {:.3}  p99 {:.3}  \
             max {:.3}  (max sample: {:.3}); poll pass every {:.3} (p50), max gap {:.3}",
            win.p50,
            win.p99,
            win.max,
            ms(out.windows[worst]),
            poll.p50,
            poll.max
        );
        println!(
            "  other load during the run: CPU pressure {}, I/O full pressure {}",
            pct(out.cpu_pressure),
            pct(out.io_pressure)
        );
        results.push(json!({
            "name": sc.name,
            "files": out.latencies.len(),
            "per_second": sc.per_second,
            "connections": CONNECTIONS,
            "size_bytes": { "min": out.sizes.0, "max": out.sizes.1 },
            "write_span_s": out.write_span.as_secs_f64(),
            "max_write_lag_ms": ms(out.max_write_lag),
            "warmup_ms": ms(out.warmup),
            "latency_ms": lat.to_json(),
            "resolution_ms": win.to_json(),
            "poll_interval_ms": poll.to_json(),
            "cpu_pressure_some_pct": out.cpu_pressure,
            "io_pressure_full_pct": out.io_pressure,
            "samples_ms": ms_each(&out.latencies),
            "sample_windows_ms": ms_each(&out.windows),
        }));
    }

    let report = json!({
        "bench": "latency",
        "measures": "close of an order file in the outbox -> its final name exists in the SFTP inbox",
        "mode": if full { "full" } else { "smoke" },
        "profile": if release { "release" } else { "debug" },
        "percentiles": "nearest rank",
        "poll_sleep_us": POLL_SLEEP.as_micros() as u64,
        "machine": {
            "nproc": machine.nproc,
            "kernel": machine.kernel,
            "cpu": machine.cpu,
            "loadavg_at_start": machine.loadavg,
            "openssh": machine.sshd,
            "mem_mib": machine.mem_mib,
            "os": machine.os,
            "source": machine.source,
        },
        "scenarios": results,
    });
    let path = dir.join(if full {
        "latency.json"
    } else {
        "latency-smoke.json"
    });
    fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n").unwrap();
    println!("\nwrote {}", path.display());
}

/// One scenario on a fresh sshd, spool and service. The service's debug log is kept
/// as `<results>/latency-<slug>.service.log`, to see where the time went.
fn run(sc: &Scenario, results: &Path) -> Outcome {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, &format!("connections = {CONNECTIONS}"));
    let mut svc = spool.start();
    svc.wait_ready();
    let inbox = sshd.inbox().to_path_buf();

    // Bodies made up front, so generating them is not part of the pacing. Sizes
    // 1-10 KB, seeded so every run writes the same files.
    let mut rng = fastrand::Rng::with_seed(0x91u64 + sc.files as u64);
    let orders: Vec<(String, Vec<u8>)> = (0..=sc.files)
        .map(|n| {
            (
                format!("order-2026-{n:06}.json"),
                order(n, 1000 + rng.usize(0..9000)),
            )
        })
        .collect();

    // Warm-up: the workers connect in the background after "ready"; one file
    // delivered end to end means the pipeline is live. Not counted.
    let (warm_name, warm_body) = &orders[0];
    let warm_path = inbox.join(warm_name);
    fs::write(spool.outbox().join(warm_name), warm_body).unwrap();
    let closed = Instant::now();
    while !warm_path.exists() {
        if closed.elapsed() > Duration::from_secs(30) {
            panic!(
                "warm-up file not delivered within 30s; log tail:\n{}",
                tail(&svc.log_text(), 60)
            );
        }
        thread::sleep(POLL_SLEEP);
    }
    let warmup = closed.elapsed();

    let measured = &orders[1..];
    let (tx, poller) = poller::spawn(ARRIVAL_TIMEOUT);

    let period = Duration::from_secs_f64(1.0 / sc.per_second);
    let outbox = spool.outbox();
    let mut closes = Vec::with_capacity(measured.len());
    let mut max_write_lag = Duration::ZERO;
    let psi = (Psi::start("cpu", "some"), Psi::start("io", "full"));
    let start = Instant::now() + Duration::from_millis(50);
    for (i, (name, body)) in measured.iter().enumerate() {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        max_write_lag = max_write_lag.max(Instant::now().saturating_duration_since(due));
        // Announced before the write, so the poller is already looking for it.
        tx.send((i, inbox.join(name))).unwrap();
        fs::write(outbox.join(name), body).unwrap();
        closes.push(Instant::now());
    }
    drop(tx);
    let write_span = closes[closes.len() - 1] - closes[0];
    let (sightings, poll_intervals) = poller.join().expect("poller panicked");
    let wall = start.elapsed();
    let cpu_pressure = psi.0.share_of(wall);
    let io_pressure = psi.1.share_of(wall);

    let missing: Vec<&str> = sightings
        .iter()
        .zip(measured)
        .filter(|(s, _)| s.is_none())
        .map(|(_, (n, _))| n.as_str())
        .collect();
    if !missing.is_empty() {
        panic!(
            "{}: {} of {} files not in the inbox {ARRIVAL_TIMEOUT:?} after the last write \
             (first: {:?}); log tail:\n{}",
            sc.name,
            missing.len(),
            measured.len(),
            &missing[..missing.len().min(5)],
            tail(&svc.log_text(), 60)
        );
    }
    let (latencies, windows): (Vec<Duration>, Vec<Duration>) = sightings
        .iter()
        .zip(&closes)
        .map(|(s, &closed)| s.expect("checked above").timing(closed))
        .unzip();

    // Correctness: everything archived, clean exit, then the full delivery invariants
    // (byte-identical in inbox and archive, journaled once, no temp files).
    wait_archived(&spool, &svc, orders.len(), Duration::from_secs(60));
    let status = svc.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "plutus-sync exit status; log tail:\n{}",
        tail(&svc.log_text(), 60)
    );
    fs::copy(
        &svc.log,
        results.join(format!("latency-{}.service.log", sc.slug)),
    )
    .unwrap();
    assert_delivered_exactly_once(&spool, &inbox, &orders);

    let sizes = measured.iter().map(|(_, b)| b.len());
    Outcome {
        latencies,
        windows,
        warmup,
        poll_intervals,
        write_span,
        max_write_lag,
        sizes: (sizes.clone().min().unwrap(), sizes.max().unwrap()),
        cpu_pressure,
        io_pressure,
    }
}

/// Each duration in milliseconds, for the summaries and the JSON samples.
fn ms_each(durations: &[Duration]) -> Vec<f64> {
    durations.iter().map(|d| ms(*d)).collect()
}
