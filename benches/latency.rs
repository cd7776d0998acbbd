//! Latency of plutus-sync alone: close of an order file in the outbox → its final name
//! exists in the SFTP inbox, for `plutus-sync run` against a real OpenSSH sshd on
//! 127.0.0.1 (the `plutus-testkit` fixture), with the tests' fast timers and debug
//! log. The measurement is the one of benches/e2e/ (`common/trickle.rs`); this bench
//! adds the delivery invariants of the tests and the poller's own figures.
//!
//! `cargo bench --bench latency` runs the full scenarios and writes
//! `target/bench-results/latency.json` (plus each scenario's service log beside it).
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke run of 10
//! files, so CI exercises the code in a few seconds; that writes `latency-smoke.*`.
//!
//! Method (`common/trickle.rs`): the main thread writes each order with
//! `std::fs::write` (which returns after close) on a fixed schedule and takes
//! `Instant::now()` right after, the first file a warm-up that is not counted. One poller
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
#[path = "common/trickle.rs"]
mod trickle;

use machine::Machine;
use plutus_testkit::checks::{assert_delivered_exactly_once, tail, wait_archived};
use plutus_testkit::orders;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use poller::POLL_SLEEP;
use results::{target_dir, Summary};
use serde_json::json;
use std::fs;
use std::path::Path;
use std::time::Duration;
use trickle::{trickle, Trickle};

/// Worker connections, spelled out so the figures say what they measured.
const CONNECTIONS: usize = 2;

struct Scenario {
    slug: &'static str,
    name: &'static str,
    files: usize,
    per_second: f64,
}

struct Outcome {
    trickle: Trickle,
    sizes: (usize, usize),
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
        let Outcome {
            trickle: out,
            sizes,
        } = run(sc, &dir);
        let lat = Summary::of(&out.lat);
        let win = Summary::of(&out.windows);
        let poll = Summary::of(&out.poll_intervals_ms);
        let worst = (0..out.lat.len())
            .max_by(|&a, &b| out.lat[a].total_cmp(&out.lat[b]))
            .unwrap();
        let pct = |p: Option<f64>| p.map_or("n/a".to_string(), |p| format!("{p:.1}%"));
        println!();
        println!(
            "{}: {} files, {}-{} bytes, written in {:.2}s (max write lag {:.2} ms)",
            sc.name,
            out.lat.len(),
            sizes.0,
            sizes.1,
            out.write_span_s,
            out.max_write_lag_ms
        );
        println!(
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  \
             (min {:.2}, mean {:.2}; warm-up file {:.2}, not counted)",
            lat.p50, lat.p90, lat.p99, lat.max, lat.min, lat.mean, out.warmup_ms
        );
        println!(
            "  resolution ms: a sample is at most this much late: p50 {:.3}  p99 {:.3}  \
             max {:.3}  (max sample: {:.3}); poll pass every {:.3} (p50), max gap {:.3}",
            win.p50, win.p99, win.max, out.windows[worst], poll.p50, poll.max
        );
        println!(
            "  other load during the run: CPU pressure {}, I/O full pressure {}",
            pct(out.cpu_pressure_pct),
            pct(out.io_pressure_pct)
        );
        results.push(json!({
            "name": sc.name,
            "files": out.lat.len(),
            "per_second": sc.per_second,
            "connections": CONNECTIONS,
            "size_bytes": { "min": sizes.0, "max": sizes.1 },
            "write_span_s": out.write_span_s,
            "max_write_lag_ms": out.max_write_lag_ms,
            "warmup_ms": out.warmup_ms,
            "latency_ms": lat.to_json(),
            "resolution_ms": win.to_json(),
            "poll_interval_ms": poll.to_json(),
            "cpu_pressure_some_pct": out.cpu_pressure_pct,
            "io_pressure_full_pct": out.io_pressure_pct,
            "samples_ms": out.lat,
            "sample_windows_ms": out.windows,
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

/// One scenario on a fresh sshd, spool and service: the shared trickle, then the
/// delivery checks. The service's debug log is kept as
/// `<results>/latency-<slug>.service.log`, to see where the time went.
fn run(sc: &Scenario, results: &Path) -> Outcome {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, &format!("connections = {CONNECTIONS}"));
    let mut svc = spool.start();
    svc.wait_ready();
    let inbox = sshd.inbox().to_path_buf();

    // Bodies made up front, so generating them is not part of the pacing. Sizes
    // 1-10 KB, seeded so every run writes the same files; the first is the warm-up.
    let orders = orders::seeded(sc.files + 1, 0x91u64 + sc.files as u64);
    let trickle = trickle(&spool.outbox(), &inbox, &orders, sc.per_second)
        .unwrap_or_else(|e| panic!("{}: {e}; log tail:\n{}", sc.name, tail(&svc.log_text(), 60)));

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

    let sizes = orders[1..].iter().map(|(_, b)| b.len());
    Outcome {
        trickle,
        sizes: (sizes.clone().min().unwrap(), sizes.max().unwrap()),
    }
}
