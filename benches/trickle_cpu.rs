//! What a trickle costs (issue 17, "cheap trickle"): the service's CPU per delivered
//! file when orders arrive one by one at 10 and 50 files/s, next to the latency each
//! one sees. A burst spreads the fixed costs of a wakeup over many files; a trickle
//! pays them per file, so this is where wakeups, timers, flushes and logging show.
//!
//! Set-up: the real `plutus-sync run` as installed (`Service::start_as_installed`: log
//! level info, the unit's environment, the shipped defaults except paths and
//! `connections = 2`) against the testkit's OpenSSH sshd on 127.0.0.1, with an
//! importing consumer in the inbox (`plutus_testkit::erp::Erp`: takes each order the
//! moment its final name appears and deletes it, as the ERP does), so the inbox stays
//! small as it does in production.
//!
//! Per rate: one warm-up file (written and awaited, not counted); then the service's
//! utime + stime (`/proc/PID/stat`), sshd's (sshd and everything below it, each tick
//! counted once) and the service's context switches (summed over its threads,
//! `/proc/PID/task/*/status`) are read; the files are written on a fixed schedule with
//! `std::fs::write` (returns after close), `Instant::now()` taken after each; once every
//! file is imported and archived the counters are read again. CPU per file = delta ÷
//! files. Latency per file = close → the consumer has read it under its final name (an
//! upper bound of close → final name: it includes the consumer's inotify wakeup and
//! read). Finally the delivery invariants: imported exactly once, byte-identical,
//! archived and journaled once, no temp left.
//!
//! `cargo bench --bench trickle_cpu` runs 300 files at 10/s and 1,000 at 50/s and
//! writes `target/bench-results/trickle-cpu.json` (and each run's service log beside
//! it). Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke run of
//! 20 files at 50/s that writes `trickle-cpu-smoke.json`. `PLUTUS_TRICKLE_FILES=N`
//! scales every rate's count to N, `PLUTUS_TRICKLE_RATES=50` runs only the rates named
//! (either makes a partial run, `trickle-cpu-partial.json`). The
//! bench never fails on a figure, only on a wrong delivery or a run that does not
//! finish.

#[path = "common/machine.rs"]
mod machine;
#[path = "common/results.rs"]
mod results;

use machine::Machine;
use plutus_testkit::checks::{assert_imported_exactly_once, tail};
use plutus_testkit::erp::Erp;
use plutus_testkit::files::count_files_under;
use plutus_testkit::orders;
use plutus_testkit::poll_until;
use plutus_testkit::procfs::{cpu_seconds, Psi};
use plutus_testkit::service::Service;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use results::{ms, target_dir, Summary};
use serde_json::json;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Worker connections, the shipped default, spelled out so the figures say it.
const CONNECTIONS: usize = 2;
/// A file not imported and archived this long after the last write fails the run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The first scheduled write is this far after the schedule is drawn up.
const SCHEDULE_LEAD: Duration = Duration::from_millis(50);

struct Rate {
    files: usize,
    per_second: f64,
}

/// One rate's figures.
struct Run {
    lat: Vec<f64>,
    cpu_s: f64,
    sshd_cpu_s: f64,
    ctxt: u64,
    wall_s: f64,
    max_write_lag_ms: f64,
    cpu_pressure_pct: Option<f64>,
    threads: u64,
    /// Service CPU seconds by thread name (live threads only), largest first.
    by_thread: Vec<(String, f64)>,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale: Option<usize> = std::env::var("PLUTUS_TRICKLE_FILES")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut rates = if full {
        vec![
            Rate {
                files: 300,
                per_second: 10.0,
            },
            Rate {
                files: 1000,
                per_second: 50.0,
            },
        ]
    } else {
        vec![Rate {
            files: 20,
            per_second: 50.0,
        }]
    };
    if let Some(n) = scale {
        rates.iter_mut().for_each(|r| r.files = n);
    }
    let only: Option<Vec<f64>> = std::env::var("PLUTUS_TRICKLE_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect());
    if let Some(only) = &only {
        rates.retain(|r| only.contains(&r.per_second));
    }
    let release = !cfg!(debug_assertions);
    let machine = Machine::probe();
    println!(
        "plutus-sync trickle CPU bench ({}): service CPU per delivered file",
        if full { "full" } else { "smoke" }
    );
    println!(
        "machine: nproc={} cpu={:?} kernel={} loadavg={:?}; {}; {}",
        machine.nproc, machine.cpu, machine.kernel, machine.loadavg, machine.sshd, machine.source
    );
    println!(
        "build: {}; connections={CONNECTIONS}, service as installed, importing consumer",
        if release {
            "release"
        } else {
            "DEBUG, figures not representative"
        }
    );

    let dir = target_dir().join("bench-results");
    fs::create_dir_all(&dir).unwrap();
    let tag = match (full, scale.or(only.as_ref().map(|_| 0))) {
        (_, Some(_)) => "partial",
        (true, None) => "full",
        (false, None) => "smoke",
    };
    let sshd = Sshd::start();
    let mut out = Vec::new();
    for r in &rates {
        let slug = format!("{}per-s", r.per_second as u64);
        let log = dir.join(format!("trickle-cpu-{tag}-{slug}.service.log"));
        let run = run(&sshd, r, &log);
        let lat = Summary::of(&run.lat);
        let n = run.lat.len() as f64;
        let per_file = |s: f64| s * 1000.0 / n;
        println!(
            "\n{} files at {}/s in {:.1} s (max write lag {:.1} ms, CPU pressure {}):",
            run.lat.len(),
            r.per_second,
            run.wall_s,
            run.max_write_lag_ms,
            run.cpu_pressure_pct
                .map_or("n/a".into(), |p| format!("{p:.1}%"))
        );
        println!(
            "  service CPU {:.2} s = {:.2} ms/file; sshd CPU {:.2} s = {:.2} ms/file; \
             service context switches {:.1}/file; {} threads",
            run.cpu_s,
            per_file(run.cpu_s),
            run.sshd_cpu_s,
            per_file(run.sshd_cpu_s),
            run.ctxt as f64 / n,
            run.threads
        );
        println!(
            "  service CPU ms/file by thread: {}",
            run.by_thread
                .iter()
                .map(|(t, s)| format!("{t} {:.2}", per_file(*s)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  latency close -> imported ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            lat.p50, lat.p90, lat.p99, lat.max
        );
        out.push(json!({
            "per_second": r.per_second,
            "files": run.lat.len(),
            "wall_s": run.wall_s,
            "max_write_lag_ms": run.max_write_lag_ms,
            "cpu_pressure_some_pct": run.cpu_pressure_pct,
            "service_cpu_s": run.cpu_s,
            "service_cpu_ms_per_file": per_file(run.cpu_s),
            "sshd_cpu_s": run.sshd_cpu_s,
            "sshd_cpu_ms_per_file": per_file(run.sshd_cpu_s),
            "service_context_switches_per_file": run.ctxt as f64 / n,
            "service_threads": run.threads,
            "service_cpu_ms_per_file_by_thread": run
                .by_thread
                .iter()
                .map(|(t, s)| (t.clone(), json!(per_file(*s))))
                .collect::<serde_json::Map<_, _>>(),
            "latency_close_to_imported_ms": lat.to_json(),
        }));
    }
    let report = json!({
        "bench": "trickle_cpu",
        "measures": "service utime+stime per delivered file at a steady trickle, and close -> imported latency",
        "mode": tag,
        "profile": if release { "release" } else { "debug" },
        "connections": CONNECTIONS,
        "percentiles": "nearest rank",
        "machine": machine.to_json(),
        "rates": out,
    });
    let path = dir.join(format!(
        "trickle-cpu{}.json",
        if tag == "full" {
            String::new()
        } else {
            format!("-{tag}")
        }
    ));
    fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n").unwrap();
    println!("\nwrote {}", path.display());
}

/// Context switches (voluntary + involuntary) of every thread of `pid` so far: each
/// one a wakeup of a thread that had gone to sleep, or a preemption.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// CPU seconds (utime + stime) of `pid`'s live threads, summed by thread name with
/// any trailing digits dropped (`sled-io-3` counts as `sled-io`): where the time goes.
/// A thread that ended meanwhile is missing; the process total above has it.
fn cpu_by_thread(pid: u32) -> HashMap<String, f64> {
    let mut by = HashMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return by;
    };
    // Clock ticks per second, as the testkit's procfs reads it (no unsafe here).
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    for t in tasks.filter_map(Result::ok) {
        let Ok(stat) = fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close]
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        let f: Vec<u64> = stat[close + 2..]
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        *by.entry(name).or_insert(0.0) += (f[11] + f[12]) as f64 / hz;
    }
    by
}

fn thread_count(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count() as u64)
}

/// One rate on a fresh spool, inbox, consumer and service (the sshd is shared).
fn run(sshd: &Sshd, r: &Rate, log: &Path) -> Run {
    let inbox = sshd
        .inbox()
        .join(format!("trickle-cpu-{}", r.per_second as u64));
    let spool = Spool::as_installed(sshd, &inbox, CONNECTIONS);
    let mut erp = Erp::start(&inbox, ".json");
    let mut svc = Service::start_as_installed(&spool.config, log);
    svc.wait_ready_within(Duration::from_secs(60));
    let fail = |svc: &Service, what: &str| -> ! {
        panic!("{what}; service log tail:\n{}", tail(&svc.log_text(), 60))
    };
    let orders = orders::seeded(r.files + 1, 0x17 + r.files as u64);

    // Warm-up: the connections are open and the first file's one-off costs paid.
    let (warm_name, warm_body) = &orders[0];
    fs::write(spool.outbox().join(warm_name), warm_body).unwrap();
    erp.wait_imported(1, DRAIN_TIMEOUT);
    if !poll_until(DRAIN_TIMEOUT, || count_files_under(&spool.archive()) >= 1) {
        fail(&svc, "warm-up file not archived");
    }

    let pid = svc.pid();
    let measured = &orders[1..];
    let cpu0 = cpu_seconds(pid).unwrap_or(f64::NAN);
    let sshd0 = sshd.cpu_seconds();
    let ctxt0 = context_switches(pid);
    let threads0 = cpu_by_thread(pid);
    let psi = Psi::start("cpu", "some");
    let period = Duration::from_secs_f64(1.0 / r.per_second);
    let mut closes = HashMap::with_capacity(measured.len());
    let mut max_lag = Duration::ZERO;
    let start = Instant::now() + SCHEDULE_LEAD;
    for (i, (name, body)) in measured.iter().enumerate() {
        let due = start + period * i as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        fs::write(spool.outbox().join(name), body).unwrap();
        closes.insert(name.clone(), Instant::now());
    }
    // Drained: every file imported and archived (the archive move is the last step).
    let drained = poll_until(DRAIN_TIMEOUT, || {
        erp.imports().len() >= orders.len() && count_files_under(&spool.archive()) >= orders.len()
    });
    if !drained {
        fail(&svc, "trickle not imported and archived within 60 s");
    }
    let cpu_s = cpu_seconds(pid).unwrap_or(f64::NAN) - cpu0;
    let sshd_cpu_s = sshd.cpu_seconds() - sshd0;
    let ctxt = context_switches(pid) - ctxt0;
    let mut by_thread: Vec<(String, f64)> = cpu_by_thread(pid)
        .into_iter()
        .map(|(name, s)| {
            let before = threads0.get(&name).copied().unwrap_or(0.0);
            (name, s - before)
        })
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    let wall_s = start.elapsed().as_secs_f64();
    let cpu_pressure_pct = psi.share();
    let threads = thread_count(pid);

    let lat = erp
        .imports()
        .iter()
        .filter_map(|i| Some(ms(i.at.saturating_duration_since(*closes.get(&i.name)?))))
        .collect::<Vec<_>>();
    let status = svc.stop();
    if status.code() != Some(0) {
        fail(&svc, &format!("plutus-sync exit status {status:?}"));
    }
    assert_imported_exactly_once(&spool, &erp, &inbox, &orders);
    erp.stop();
    Run {
        lat,
        cpu_s,
        sshd_cpu_s,
        ctxt,
        wall_s,
        max_write_lag_ms: ms(max_lag),
        cpu_pressure_pct,
        threads,
        by_thread,
    }
}
