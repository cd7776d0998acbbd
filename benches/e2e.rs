//! End-to-end benchmark of plutus-sync next to the tools an operator would otherwise
//! use (issue 6), all against one real OpenSSH sshd on 127.0.0.1 that the bench starts
//! (the `plutus-testkit` fixture), in one run, with order files the bench generates
//! (1-10 KB, seeded, `plutus_testkit::orders::order`).
//!
//! Scenarios (`cargo bench --bench e2e`; a filter argument runs only some of them:
//! `cargo bench --bench e2e -- burst peers latency scale`):
//! - **burst**: 10,000 files already in the outbox (mtimes an hour old, so the start-up
//!   sweep takes them at once) when `plutus-sync run` starts; wall time from spawn until
//!   the outbox is empty, i.e. every file verified in the inbox and moved to the archive
//!   (the archive move comes only after `verified`); files/s; client CPU (utime+stime
//!   from /proc/PID/stat, sampled right after the drain); peak RSS (VmHWM); server CPU
//!   (sshd and all its children). For `[destination] connections` = 2, 4 and 8.
//!   Afterwards: every file byte-identical in the inbox and the archive, no temp name
//!   left, the journal holding every entry as archived.
//! - **peers** over the same sshd, each on a fresh copy of the same 10,000 files: `scp`
//!   once per file (a sample, then extrapolated: it is slow), `scp` of the whole batch,
//!   `sftp -b` with `put f f.part` + `rename f.part f` per file, and
//!   `rsync -e ssh --remove-source-files`. Client CPU and peak RSS from wait4's rusage
//!   of the command (its ssh child included).
//! - **latency**: 10 files/s for 30 s, close in the outbox -> final name in the inbox
//!   (the method of benches/latency.rs: one poller thread stats every outstanding
//!   path), for plutus-sync (and 100 files/s for 10 s), lsyncd's default config
//!   (`delay` 15 s) and lsyncd with `delay = 0`.
//! - **scale**: start-up time (spawn -> "ready:" log line) and RSS with 0, 100,000 and
//!   1,000,000 archived entries in the journal (built through `plutus_state::Journal`,
//!   within a 5-minute budget), then the 10 files/s trickle with the largest journal.
//!
//! Prints a table and writes `target/bench-results/e2e.json`, the latency CDF plot
//! `latency.png` and each plutus-sync run's log beside them. Without `--bench` (as
//! `cargo test --all-targets` runs it) it is a smoke run of a few seconds: a 300-file
//! burst and a 10-file trickle, no peers, no scale; it writes `e2e-smoke.*`.
//!
//! The bench never fails on a figure; it fails only when a delivery is wrong or a run
//! does not finish. Environment: `PLUTUS_E2E_FILES` (burst size), `PLUTUS_E2E_SCALE`
//! (journal sizes, e.g. `100000,1000000`). See benches/README.md for the figures.

#[path = "common/machine.rs"]
mod machine;
#[path = "common/poller.rs"]
mod poller;
#[path = "common/results.rs"]
mod results;

use machine::{status_line_kib, Machine, Psi};
use plotters::prelude::*;
use plutus_state::{Event, Journal, JournalOptions, NewEntry, State};
use plutus_testkit::service::{bin, order};
use plutus_testkit::sshd::Sshd;
use poller::POLL_SLEEP;
use results::{ms, target_dir, Summary};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// A trickle file not in the inbox this long after the last close fails the bench.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);
/// A burst not drained in this long fails the bench.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);
/// `scp` once per file stops after this many files or this long, whichever first.
const SCP_EACH_SAMPLE: usize = 300;
const SCP_EACH_MAX: Duration = Duration::from_secs(120);
/// Time allowed for building the scale journals.
const BUILD_BUDGET: Duration = Duration::from_secs(300);
/// Connections of the latency and scale runs: the default of `[destination] connections`.
const DEFAULT_CONNECTIONS: usize = 2;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    // Smoke: a small burst and trickle only. Full: every part, or the ones named.
    let part = |p: &str| {
        if full {
            filters.is_empty() || filters.contains(&p)
        } else {
            p == "burst" || p == "latency"
        }
    };
    let files = env_list("PLUTUS_E2E_FILES")
        .first()
        .copied()
        .unwrap_or(if full { 10_000 } else { 300 });
    let scale_sizes = {
        let v = env_list("PLUTUS_E2E_SCALE");
        if v.is_empty() {
            vec![100_000, 1_000_000]
        } else {
            v
        }
    };

    let release = !cfg!(debug_assertions);
    let machine = Machine::probe();
    println!(
        "plutus-sync end-to-end bench ({})",
        if full {
            "full"
        } else {
            "smoke; `cargo bench --bench e2e` for the real run"
        }
    );
    println!("machine: {}", machine.line());
    println!("source: {}", machine.source);
    println!(
        "build: {} (bench and plutus-sync binary share the profile); log level info",
        if release {
            "release"
        } else {
            "DEBUG, figures not representative"
        }
    );

    let dir = target_dir().join("bench-results");
    fs::create_dir_all(&dir).unwrap();
    // A run of only some parts, or of other sizes, must not overwrite the full results.
    let partial = !filters.is_empty()
        || std::env::var_os("PLUTUS_E2E_FILES").is_some()
        || std::env::var_os("PLUTUS_E2E_SCALE").is_some();
    let sfx = match (full, partial) {
        (false, _) => "-smoke",
        (true, true) => "-partial",
        (true, false) => "",
    };
    let sshd = Sshd::start();
    let mut report = Report::default();

    let orders = make_orders(files, 0x6_0000 + files as u64);
    let bytes: usize = orders.iter().map(|(_, b)| b.len()).sum();
    println!(
        "orders: {files} files, {:.1} MB, {}-{} bytes each",
        bytes as f64 / 1e6,
        orders.iter().map(|(_, b)| b.len()).min().unwrap_or(0),
        orders.iter().map(|(_, b)| b.len()).max().unwrap_or(0)
    );

    if part("burst") {
        let conns: &[usize] = if full { &[2, 4, 8] } else { &[2] };
        for &c in conns {
            let b = burst_plutus(&sshd, &orders, c, &dir, sfx);
            report.burst.push(b);
        }
    }
    if full && part("peers") {
        for peer in [Peer::ScpEach, Peer::ScpBatch, Peer::SftpBatch, Peer::Rsync] {
            match burst_peer(&sshd, &orders, peer) {
                Ok(b) => report.burst.push(b),
                Err(skip) => {
                    println!("  {}: SKIPPED: {skip}", peer.name());
                    report
                        .notes
                        .push(format!("{}: skipped: {skip}", peer.name()));
                }
            }
        }
    }
    if part("latency") {
        let runs: &[(usize, f64)] = if full {
            &[(300, 10.0), (1000, 100.0)]
        } else {
            &[(10, 20.0)]
        };
        for &(n, rate) in runs {
            report
                .latency
                .push(latency_plutus(&sshd, n, rate, &dir, sfx));
        }
    }
    if full && part("latency") {
        for delay in [None, Some(0)] {
            match latency_lsyncd(&sshd, 300, 10.0, delay) {
                Ok(l) => report.latency.push(l),
                Err(skip) => {
                    let name = lsyncd_name(delay);
                    println!("  {name}: SKIPPED: {skip}");
                    report.notes.push(format!("{name}: skipped: {skip}"));
                }
            }
        }
    }
    if full && part("scale") {
        scale(&sshd, &scale_sizes, &dir, sfx, &mut report);
    }

    println!();
    report.print_tables();
    let plot = dir.join(format!("latency{sfx}.png"));
    match plot_latency(&plot, &report.latency) {
        Ok(()) => println!("\nwrote {}", plot.display()),
        Err(e) => {
            println!("\nlatency plot not written: {e}");
            report.notes.push(format!("plot not written: {e}"));
        }
    }
    let path = dir.join(format!("e2e{sfx}.json"));
    let doc = report.to_json(&machine, full, release, &filters);
    fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    println!("wrote {}", path.display());
}

// ---------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Report {
    burst: Vec<Burst>,
    latency: Vec<Latency>,
    scale: Vec<ScaleRow>,
    notes: Vec<String>,
}

struct Burst {
    name: String,
    plutus: bool,
    /// What the tool guarantees about the inbox.
    protocol: &'static str,
    /// Files moved in the measured run (a sample for `scp` per file).
    files: usize,
    /// Files the figure stands for (10,000; more than `files` when extrapolated).
    of: usize,
    wall_s: f64,
    client_cpu_s: f64,
    client_rss_kib: Option<u64>,
    server_cpu_s: Option<f64>,
    /// Share of the run's wall time with some task waiting for a CPU (Linux PSI).
    cpu_pressure_pct: Option<f64>,
    detail: Value,
}

impl Burst {
    fn rate(&self) -> f64 {
        self.files as f64 / self.wall_s
    }
    fn cpu_ms_per_file(&self) -> f64 {
        self.client_cpu_s * 1000.0 / self.files as f64
    }
    fn server_ms_per_file(&self) -> Option<f64> {
        self.server_cpu_s.map(|s| s * 1000.0 / self.files as f64)
    }
}

struct Latency {
    name: String,
    plutus: bool,
    per_second: f64,
    lat: Vec<f64>,
    windows: Vec<f64>,
    warmup_ms: f64,
    write_span_s: f64,
    max_write_lag_ms: f64,
    client_cpu_s: Option<f64>,
    cpu_pressure_pct: Option<f64>,
    note: String,
}

struct ScaleRow {
    entries: usize,
    build_s: f64,
    disk_mib: f64,
    /// In this process, after the service stopped (page cache as warm as the
    /// service had it): `Journal::open` and `Journal::len` (a full scan in sled).
    open_ms: f64,
    len_ms: f64,
    /// Spawn -> "ready:" line seen in the log.
    startup_ms: f64,
    /// Spawn -> the "starting" line (logged once the journal is open and counted),
    /// wall clock against the log's timestamp.
    spawn_to_starting_ms: Option<f64>,
    /// From the log's own timestamps: "starting" -> "ready:".
    starting_to_ready_ms: Option<f64>,
    rss_ready_kib: Option<u64>,
    rss_settled_kib: Option<u64>,
    hwm_kib: Option<u64>,
}

impl Report {
    fn best_plutus(&self) -> Option<&Burst> {
        self.burst
            .iter()
            .filter(|b| b.plutus)
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
    }

    fn find_burst(&self, prefix: &str) -> Option<&Burst> {
        self.burst.iter().find(|b| b.name.starts_with(prefix))
    }

    fn print_tables(&self) {
        if !self.burst.is_empty() {
            let best = self.best_plutus().map(|b| (b.rate(), b.name.clone()));
            println!(
                "BURST: files already in the outbox -> all in the inbox (plutus-sync: verified and archived)"
            );
            if let Some((_, n)) = &best {
                println!("  ratio = best plutus-sync run ({n}) files/s / this row's files/s");
            }
            println!(
                "  {:<38} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6}",
                "scenario",
                "files",
                "wall s",
                "files/s",
                "cli CPU",
                "ms/file",
                "RSS MiB",
                "srv ms/f",
                "ratio",
                "psi %"
            );
            for b in &self.burst {
                let wall = if b.of > b.files {
                    format!("~{:.0}", b.wall_s * b.of as f64 / b.files as f64)
                } else {
                    format!("{:.2}", b.wall_s)
                };
                let ratio = match &best {
                    Some((r, _)) if !b.plutus => format!("{:.2}x", r / b.rate()),
                    _ => "-".into(),
                };
                println!(
                    "  {:<38} {:>6} {:>8} {:>8.1} {:>8.2} {:>8.3} {:>8} {:>8} {:>7} {:>6}",
                    b.name,
                    if b.of > b.files {
                        format!("{}*", b.files)
                    } else {
                        b.files.to_string()
                    },
                    wall,
                    b.rate(),
                    b.client_cpu_s,
                    b.cpu_ms_per_file(),
                    b.client_rss_kib
                        .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                    b.server_ms_per_file()
                        .map_or("-".into(), |m| format!("{m:.3}")),
                    ratio,
                    pct(b.cpu_pressure_pct)
                );
            }
            if self.burst.iter().any(|b| b.of > b.files) {
                println!(
                    "  * a sample; wall s extrapolated to {} files",
                    self.burst[0].of
                );
            }
            println!(
                "  cli CPU = client user+sys s; srv ms/f = sshd-side CPU ms per file; \
                 psi % = share of the time some task waited for a CPU"
            );
            println!();
        }
        if !self.latency.is_empty() {
            println!("LATENCY: close in the outbox -> final name in the inbox, ms (nearest rank)");
            let base = self
                .latency
                .iter()
                .find(|l| l.plutus && l.per_second == 10.0)
                .map(|l| Summary::of(&l.lat).p50);
            println!(
                "  {:<52} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6}",
                "scenario",
                "files",
                "p50",
                "p90",
                "p99",
                "max",
                "mean",
                "p50 ratio",
                "cli CPU",
                "psi %"
            );
            for l in &self.latency {
                let s = Summary::of(&l.lat);
                let ratio = match base {
                    Some(b) if !l.plutus => format!("{:.0}x", s.p50 / b),
                    _ => "-".into(),
                };
                println!(
                    "  {:<52} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>7} {:>6}",
                    l.name,
                    s.count,
                    s.p50,
                    s.p90,
                    s.p99,
                    s.max,
                    s.mean,
                    ratio,
                    l.client_cpu_s.map_or("-".into(), |c| format!("{c:.2}")),
                    pct(l.cpu_pressure_pct)
                );
            }
            println!("  p50 ratio = this row's p50 / plutus-sync's p50 at 10 files/s");
            println!();
        }
        if !self.scale.is_empty() {
            println!("SCALE: start-up (spawn -> \"ready:\") and memory with archived entries in the journal");
            println!(
                "  {:>9} {:>10} {:>12} {:>9} {:>9} {:>14} {:>12} {:>12} {:>9} {:>9}",
                "entries",
                "start ms",
                "->starting",
                "open ms",
                "len ms",
                "RSS ready MiB",
                "RSS +3s MiB",
                "peak MiB",
                "disk MiB",
                "build s"
            );
            let mib =
                |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
            for r in &self.scale {
                println!(
                    "  {:>9} {:>10.1} {:>12} {:>9.1} {:>9.1} {:>14} {:>12} {:>12} {:>9.0} {:>9.1}",
                    r.entries,
                    r.startup_ms,
                    r.spawn_to_starting_ms
                        .map_or("-".into(), |m| format!("{m:.1}")),
                    r.open_ms,
                    r.len_ms,
                    mib(r.rss_ready_kib),
                    mib(r.rss_settled_kib),
                    mib(r.hwm_kib),
                    r.disk_mib,
                    r.build_s
                );
            }
            println!(
                "  ->starting = spawn -> the \"starting\" log line (journal opened and counted); \
                 open/len ms = Journal::open and Journal::len timed in this process afterwards"
            );
            println!();
        }
        let targets = self.targets();
        if !targets.is_empty() {
            println!("TARGETS (issue 6)");
            for t in &targets {
                println!(
                    "  [{}] {}: {}",
                    match (t.report_only, t.met) {
                        (true, _) => "report",
                        (false, true) => "met",
                        (false, false) => "MISSED",
                    },
                    t.what,
                    t.measured
                );
            }
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }

    fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        if let Some(l) = self
            .latency
            .iter()
            .find(|l| l.plutus && l.per_second == 10.0 && !l.name.contains("entries"))
        {
            let s = Summary::of(&l.lat);
            out.push(Target {
                what: "latency at 10 files/s: p50 <= 10 ms, p99 <= 30 ms".into(),
                measured: format!("p50 {:.2} ms, p99 {:.2} ms", s.p50, s.p99),
                met: s.p50 <= 10.0 && s.p99 <= 30.0,
                report_only: false,
            });
        }
        let best = self.best_plutus();
        if let (Some(p), Some(s)) = (best, self.find_burst("sftp -b")) {
            out.push(Target {
                what: "burst >= 2x OpenSSH sftp -b put+rename".into(),
                measured: format!(
                    "{:.0} vs {:.0} files/s = {:.2}x ({})",
                    p.rate(),
                    s.rate(),
                    p.rate() / s.rate(),
                    p.name
                ),
                met: p.rate() >= 2.0 * s.rate(),
                report_only: false,
            });
            out.push(Target {
                what: "client CPU per file <= sftp -b's".into(),
                measured: format!(
                    "{:.3} vs {:.3} ms/file ({})",
                    p.cpu_ms_per_file(),
                    s.cpu_ms_per_file(),
                    p.name
                ),
                met: p.cpu_ms_per_file() <= s.cpu_ms_per_file(),
                report_only: false,
            });
        }
        if let (Some(p), Some(r)) = (best, self.find_burst("rsync")) {
            out.push(Target {
                what: "burst as close to rsync batch as the protocol allows (report)".into(),
                measured: format!(
                    "{:.0} vs {:.0} files/s = {:.2}x of rsync",
                    p.rate(),
                    r.rate(),
                    p.rate() / r.rate()
                ),
                met: true,
                report_only: true,
            });
        }
        let rss: Vec<(String, u64)> = self
            .burst
            .iter()
            .filter(|b| b.plutus)
            .filter_map(|b| Some((b.name.clone(), b.client_rss_kib?)))
            .collect();
        if !rss.is_empty() {
            let worst = rss.iter().map(|(_, k)| *k).max().unwrap();
            out.push(Target {
                what: "RSS <= 64 MiB during the burst".into(),
                measured: rss
                    .iter()
                    .map(|(n, k)| format!("{n}: {:.1} MiB", *k as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(", "),
                met: worst <= 64 * 1024,
                report_only: false,
            });
        }
        if let Some(r) = self.scale.iter().find(|r| r.entries >= 100_000) {
            out.push(Target {
                what: "start-up <= 1 s with 100,000 journal entries".into(),
                measured: format!("{:.0} ms with {} entries", r.startup_ms, r.entries),
                met: r.startup_ms <= 1000.0,
                report_only: false,
            });
        }
        out
    }

    fn to_json(&self, m: &Machine, full: bool, release: bool, filters: &[&str]) -> Value {
        let best = self.best_plutus().map(|b| b.rate());
        let burst: Vec<Value> = self
            .burst
            .iter()
            .map(|b| {
                json!({
                    "name": b.name,
                    "tool": if b.plutus { "plutus-sync" } else { "peer" },
                    "protocol": b.protocol,
                    "files": b.files,
                    "stands_for_files": b.of,
                    "extrapolated": b.of > b.files,
                    "wall_s": b.wall_s,
                    "wall_s_for_all": b.wall_s * b.of as f64 / b.files as f64,
                    "files_per_s": b.rate(),
                    "client_cpu_s": b.client_cpu_s,
                    "client_cpu_ms_per_file": b.cpu_ms_per_file(),
                    "client_peak_rss_kib": b.client_rss_kib,
                    "server_cpu_s": b.server_cpu_s,
                    "server_cpu_ms_per_file": b.server_ms_per_file(),
                    "cpu_pressure_some_pct": b.cpu_pressure_pct,
                    "best_plutus_sync_over_this": best.map(|r| r / b.rate()),
                    "detail": b.detail,
                })
            })
            .collect();
        let latency: Vec<Value> = self
            .latency
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "tool": if l.plutus { "plutus-sync" } else { "peer" },
                    "per_second": l.per_second,
                    "latency_ms": Summary::of(&l.lat).to_json(),
                    "resolution_ms": Summary::of(&l.windows).to_json(),
                    "warmup_ms": l.warmup_ms,
                    "write_span_s": l.write_span_s,
                    "max_write_lag_ms": l.max_write_lag_ms,
                    "client_cpu_s": l.client_cpu_s,
                    "note": l.note,
                    "cpu_pressure_some_pct": l.cpu_pressure_pct,
                    "samples_ms": l.lat,
                })
            })
            .collect();
        let scale: Vec<Value> = self
            .scale
            .iter()
            .map(|r| {
                json!({
                    "journal_entries": r.entries,
                    "build_s": r.build_s,
                    "journal_disk_mib": r.disk_mib,
                    "journal_open_ms_in_process": r.open_ms,
                    "journal_len_ms_in_process": r.len_ms,
                    "startup_ms": r.startup_ms,
                    "spawn_to_starting_line_ms": r.spawn_to_starting_ms,
                    "log_starting_to_ready_ms": r.starting_to_ready_ms,
                    "rss_at_ready_kib": r.rss_ready_kib,
                    "rss_3s_after_ready_kib": r.rss_settled_kib,
                    "peak_rss_kib": r.hwm_kib,
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .iter()
            .map(|t| {
                json!({
                    "target": t.what,
                    "measured": t.measured,
                    "met": (!t.report_only).then_some(t.met),
                })
            })
            .collect();
        json!({
            "bench": "e2e",
            "mode": if full { "full" } else { "smoke" },
            "filters": filters,
            "profile": if release { "release" } else { "debug" },
            "machine": m.to_json(),
            "percentiles": "nearest rank",
            "burst": burst,
            "latency": latency,
            "scale": scale,
            "targets": targets,
            "notes": self.notes,
        })
    }
}

struct Target {
    what: String,
    measured: String,
    met: bool,
    /// A figure to report, with no pass mark.
    report_only: bool,
}

// ---------------------------------------------------------------------------------
// plutus-sync

/// One spool (outbox, archive, quarantine, journal, config) delivering to `remote` on
/// the fixture's sshd. Everything else is the shipped default (settle 2 s, sweep every
/// 5 min, ...), so the figures are the service as installed.
struct Spool {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Spool {
    fn new(sshd: &Sshd, remote: &Path, connections: usize) -> Spool {
        fs::create_dir_all(remote).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("plutus-e2e-")
            .tempdir()
            .unwrap();
        for d in ["outbox", "archive", "quarantine"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let config = dir.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[source]\noutbox = \"outbox\"\narchive = \"archive\"\nquarantine = \"quarantine\"\n\n\
                 [journal]\npath = \"journal\"\n\n\
                 [destination]\nurl = \"sftp://{}@127.0.0.1:{}{}\"\nidentity = \"{}\"\n\
                 known_hosts = \"{}\"\nconnections = {connections}\n",
                sshd.user(),
                sshd.port(),
                remote.display(),
                sshd.client_key().display(),
                sshd.known_hosts().display()
            ),
        )
        .unwrap();
        Spool { dir, config }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

/// A child process reaped with wait4, so its rusage (children included) is known.
struct Proc {
    pid: i32,
    spawned: Instant,
    /// The same moment on the wall clock, to compare with the log's timestamps.
    spawned_wall: SystemTime,
    reaped: Option<(i32, libc::rusage)>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> std::io::Result<Proc> {
        let spawned = Instant::now();
        let spawned_wall = SystemTime::now();
        let child = cmd.spawn()?;
        // The std handle is dropped (that neither waits nor kills); wait4 reaps it.
        Ok(Proc {
            pid: child.id() as i32,
            spawned,
            spawned_wall,
            reaped: None,
        })
    }

    /// Reaps it if it has exited; returns its exit status then.
    fn try_reap(&mut self) -> Option<i32> {
        if let Some((st, _)) = self.reaped {
            return Some(st);
        }
        let mut st = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(self.pid, &mut st, libc::WNOHANG, &mut ru) };
        if r == self.pid {
            self.reaped = Some((st, ru));
            return Some(st);
        }
        None
    }

    fn wait(&mut self) -> (i32, libc::rusage) {
        if let Some(r) = self.reaped {
            return r;
        }
        let mut st = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            let r = unsafe { libc::wait4(self.pid, &mut st, 0, &mut ru) };
            if r == self.pid {
                break;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                panic!("wait4({}): {}", self.pid, std::io::Error::last_os_error());
            }
        }
        self.reaped = Some((st, ru));
        (st, ru)
    }

    /// `sig`, then wait up to `grace` before SIGKILL.
    fn stop(&mut self, sig: i32, grace: Duration) -> (i32, libc::rusage) {
        if self.try_reap().is_none() {
            unsafe { libc::kill(self.pid, sig) };
            let deadline = Instant::now() + grace;
            while self.try_reap().is_none() {
                if Instant::now() > deadline {
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.wait();
        }
    }
}

struct Plutus {
    proc: Proc,
    log: PathBuf,
}

impl Plutus {
    /// `plutus-sync run` at log level info (the shipped default), stderr to `log`.
    fn start(config: &Path, log: &Path) -> Plutus {
        let f = fs::File::create(log).unwrap();
        let proc = Proc::spawn(
            Command::new(bin())
                .args(["run", "-c"])
                .arg(config)
                .env("PLUTUS_SYNC_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(f),
        )
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin().display()));
        Plutus {
            proc,
            log: log.to_path_buf(),
        }
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}; plutus-sync log tail:\n{}",
            tail(&self.log_text(), 40)
        )
    }

    /// Polls the log every `every` until it holds `needle`; when it was first seen.
    fn wait_log(&mut self, needle: &str, timeout: Duration, every: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return Instant::now();
            }
            if let Some(st) = self.proc.try_reap() {
                self.fail(&format!(
                    "plutus-sync exited ({st:#x}) before logging {needle:?}"
                ));
            }
            if Instant::now() > deadline {
                self.fail(&format!("no {needle:?} in the log within {timeout:?}"));
            }
            thread::sleep(every);
        }
    }

    fn cpu_s(&self) -> f64 {
        proc_cpu(self.proc.pid, false).unwrap_or(f64::NAN)
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) -> libc::rusage {
        let (st, ru) = self.proc.stop(libc::SIGTERM, Duration::from_secs(60));
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            self.fail(&format!(
                "plutus-sync did not exit 0 after SIGTERM (wait status {st:#x})"
            ));
        }
        ru
    }
}

fn burst_plutus(
    sshd: &Sshd,
    orders: &[(String, Vec<u8>)],
    conns: usize,
    results: &Path,
    sfx: &str,
) -> Burst {
    let name = format!("plutus-sync, connections={conns}");
    println!("\n{name}: burst of {} files", orders.len());
    let remote = sshd.inbox().join(format!("burst-plutus-c{conns}"));
    let sp = Spool::new(sshd, &remote, conns);
    fill(&sp.path("outbox"), orders, true);
    let server = ServerCpu::new(sshd);
    let psi = Psi::start("cpu", "some");

    let mut p = Plutus::start(&sp.config, &sp.path("service.log"));
    let t0 = p.proc.spawned;
    let outbox = sp.path("outbox");
    let mut ready = None;
    let mut first_gone = None;
    loop {
        if ready.is_none() && p.log_text().contains("ready:") {
            ready = Some(t0.elapsed());
        }
        let left = count_dir(&outbox);
        if left < orders.len() && first_gone.is_none() {
            first_gone = Some(t0.elapsed());
        }
        if left == 0 {
            break;
        }
        if let Some(st) = p.proc.try_reap() {
            p.fail(&format!(
                "plutus-sync exited ({st:#x}) during the burst; {left} files left"
            ));
        }
        if t0.elapsed() > DRAIN_TIMEOUT {
            p.fail(&format!(
                "burst not drained in {DRAIN_TIMEOUT:?}: {left} files left"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let wall = t0.elapsed();
    let cpu = p.cpu_s();
    let (rss, hwm) = (
        status_kib(p.proc.pid, "VmRSS:"),
        status_kib(p.proc.pid, "VmHWM:"),
    );
    let threads = status_kib(p.proc.pid, "Threads:");
    let server_cpu = server.delta();
    let pressure = psi.share();
    let ru = p.stop();
    let log = p.log_text();
    fs::copy(
        &p.log,
        results.join(format!("e2e{sfx}-burst-c{conns}.service.log")),
    )
    .unwrap();

    // Correctness, outside the timing.
    if let Err(e) = verify_dir(&remote, orders) {
        p.fail(&format!("inbox after the burst: {e}"));
    }
    if let Err(e) = verify_archive(&sp.path("archive"), orders) {
        p.fail(&format!("archive after the burst: {e}"));
    }
    let archived = journal_count(&sp.path("journal"), State::Archived);
    if archived != orders.len() as u64 {
        p.fail(&format!(
            "journal holds {archived} archived entries, not {}",
            orders.len()
        ));
    }
    let stats = LogStats::parse(&log);
    let rate = orders.len() as f64 / wall.as_secs_f64();
    println!(
        "  drained in {:.2} s ({rate:.0} files/s; ready after {:.0} ms, first file archived after {:.0} ms)",
        wall.as_secs_f64(),
        ms(ready.unwrap_or_default()),
        ms(first_gone.unwrap_or_default())
    );
    println!(
        "  client CPU {cpu:.2} s at the drain ({:.2} s to exit), RSS {} MiB, peak {} MiB, {} threads; server CPU {}",
        secs(ru.ru_utime) + secs(ru.ru_stime),
        kib_mib(rss),
        kib_mib(hwm),
        threads.map_or("?".into(), |t| t.to_string()),
        server_cpu.map_or("n/a".into(), |s| format!("{s:.2} s"))
    );
    println!("  log: {}", stats.line());
    Burst {
        name,
        plutus: true,
        protocol: "temp name, read-back CRC32, no-overwrite rename, journal, archive",
        files: orders.len(),
        of: orders.len(),
        wall_s: wall.as_secs_f64(),
        client_cpu_s: cpu,
        client_rss_kib: hwm,
        server_cpu_s: server_cpu,
        cpu_pressure_pct: pressure,
        detail: json!({
            "connections": conns,
            "ready_ms": ready.map(ms),
            "first_archived_ms": first_gone.map(ms),
            "client_cpu_s_to_exit": secs(ru.ru_utime) + secs(ru.ru_stime),
            "client_user_s_to_exit": secs(ru.ru_utime),
            "client_sys_s_to_exit": secs(ru.ru_stime),
            "rss_at_drain_kib": rss,
            "threads": threads,
            "log": stats.to_json(),
        }),
    }
}

fn latency_plutus(sshd: &Sshd, n: usize, rate: f64, results: &Path, sfx: &str) -> Latency {
    let slug = format!("{}per-s", rate as u64);
    let remote = sshd.inbox().join(format!("latency-plutus-{slug}"));
    let sp = Spool::new(sshd, &remote, DEFAULT_CONNECTIONS);
    let name = format!("plutus-sync {rate}/s x {}s", n as f64 / rate);
    let log = results.join(format!("e2e{sfx}-latency-{slug}.service.log"));
    trickle_plutus(&sp, &remote, n, rate, name, &log, 0)
}

/// The trickle against a running plutus-sync on `sp` (whose journal may already hold
/// `prefilled` entries), then the delivery checks.
fn trickle_plutus(
    sp: &Spool,
    remote: &Path,
    n: usize,
    rate: f64,
    name: String,
    log: &Path,
    prefilled: u64,
) -> Latency {
    println!("\n{name}");
    let orders = make_orders(n + 1, 0x91 + n as u64);
    let mut p = Plutus::start(&sp.config, log);
    p.wait_log("ready:", Duration::from_secs(60), Duration::from_millis(5));
    let cpu0 = p.cpu_s();
    let out = match trickle(&sp.path("outbox"), remote, &orders, rate) {
        Ok(o) => o,
        Err(e) => p.fail(&e),
    };
    let cpu = p.cpu_s() - cpu0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_files_under(&sp.path("archive")) < orders.len() {
        if Instant::now() > deadline {
            p.fail("trickle files not all archived within 60 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    p.stop();
    if let Err(e) = verify_dir(remote, &orders) {
        p.fail(&format!("inbox after the trickle: {e}"));
    }
    let archived = journal_count(&sp.path("journal"), State::Archived);
    if archived != prefilled + orders.len() as u64 {
        p.fail(&format!(
            "journal holds {archived} archived entries, not {}",
            prefilled + orders.len() as u64
        ));
    }
    out.report(
        name,
        true,
        rate,
        cpu,
        "read back, CRC32-checked and journaled before the rename",
    )
}

// ---------------------------------------------------------------------------------
// Peers

#[derive(Clone, Copy)]
enum Peer {
    ScpEach,
    ScpBatch,
    SftpBatch,
    Rsync,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::ScpEach => "scp once per file",
            Peer::ScpBatch => "scp batch (one scp, all files)",
            Peer::SftpBatch => "sftp -b, put + rename per file",
            Peer::Rsync => "rsync -e ssh --remove-source-files",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Peer::ScpEach => "scp-each",
            Peer::ScpBatch => "scp-batch",
            Peer::SftpBatch => "sftp-b",
            Peer::Rsync => "rsync",
        }
    }
    fn binary(self) -> (&'static str, &'static str) {
        match self {
            Peer::ScpEach | Peer::ScpBatch => ("scp", "openssh-client"),
            Peer::SftpBatch => ("sftp", "openssh-client"),
            Peer::Rsync => ("rsync", "rsync"),
        }
    }
    fn protocol(self) -> &'static str {
        match self {
            Peer::ScpEach | Peer::ScpBatch => {
                "final name directly (half-written file visible), no check"
            }
            Peer::SftpBatch => "temp name + rename (overwrites), no check",
            Peer::Rsync => "rsync's dot temp name + rename, whole-file checksum",
        }
    }
}

fn ssh_options(sshd: &Sshd) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-i",
        &sshd.client_key().display().to_string(),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        &format!("UserKnownHostsFile={}", sshd.known_hosts().display()),
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn remote_spec(sshd: &Sshd, dir: &Path) -> String {
    format!("{}@127.0.0.1:{}/", sshd.user(), dir.display())
}

fn burst_peer(sshd: &Sshd, orders: &[(String, Vec<u8>)], peer: Peer) -> Result<Burst, String> {
    let (bin, package) = peer.binary();
    let Some(bin_path) = which(bin) else {
        return Err(format!(
            "`{bin}` not found (Debian package {package} not installed)"
        ));
    };
    if matches!(peer, Peer::Rsync) && which("ssh").is_none() {
        return Err("`ssh` not found (Debian package openssh-client not installed)".into());
    }
    println!("\n{}: burst of {} files", peer.name(), orders.len());
    let work = tempfile::Builder::new()
        .prefix("plutus-e2e-peer-")
        .tempdir()
        .unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let sample = match peer {
        Peer::ScpEach => &orders[..orders.len().min(SCP_EACH_SAMPLE)],
        _ => orders,
    };
    fill(&src, sample, true);
    let remote = sshd.inbox().join(format!("burst-{}", peer.slug()));
    fs::create_dir_all(&remote).unwrap();
    let errlog = work.path().join("stderr.log");
    let rss_file = work.path().join("rss");
    let port = sshd.port().to_string();
    let opts = ssh_options(sshd);
    let target = remote_spec(sshd, &remote);
    let err = || {
        fs::File::options()
            .create(true)
            .append(true)
            .open(&errlog)
            .unwrap()
    };
    let base = |c: &mut Command| {
        c.current_dir(&src)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err());
    };

    let server = ServerCpu::new(sshd);
    let psi = Psi::start("cpu", "some");
    let started = Instant::now();
    let mut usage = Usage::default();
    let mut sent = 0usize;
    match peer {
        Peer::ScpEach => {
            for (name, _) in sample {
                let mut c = measured(&bin_path, &rss_file);
                c.arg("-q")
                    .args(&opts)
                    .args(["-P", &port])
                    .arg(name)
                    .arg(&target);
                base(&mut c);
                usage.add(run(&mut c, &errlog, &rss_file)?);
                sent += 1;
                if started.elapsed() > SCP_EACH_MAX {
                    break;
                }
            }
        }
        Peer::ScpBatch => {
            let mut c = measured(&bin_path, &rss_file);
            c.arg("-q").args(&opts).args(["-P", &port]);
            c.args(sample.iter().map(|(n, _)| n)).arg(&target);
            base(&mut c);
            usage.add(run(&mut c, &errlog, &rss_file)?);
            sent = sample.len();
        }
        Peer::SftpBatch => {
            let batch = work.path().join("batch");
            let mut text = format!("cd {}\n", remote.display());
            for (n, _) in sample {
                text.push_str(&format!("put {n} {n}.part\nrename {n}.part {n}\n"));
            }
            fs::write(&batch, text).unwrap();
            let mut c = measured(&bin_path, &rss_file);
            c.arg("-q")
                .args(&opts)
                .args(["-P", &port, "-b"])
                .arg(&batch);
            c.arg(format!("{}@127.0.0.1", sshd.user()));
            base(&mut c);
            usage.add(run(&mut c, &errlog, &rss_file)?);
            sent = sample.len();
        }
        Peer::Rsync => {
            let mut c = measured(&bin_path, &rss_file);
            let rsh = format!("ssh {} -p {port}", opts.join(" "));
            c.args(["-a", "--remove-source-files", "-e", &rsh, "./"])
                .arg(&target);
            base(&mut c);
            usage.add(run(&mut c, &errlog, &rss_file)?);
            sent = sample.len();
            if count_dir(&src) != 0 {
                return Err(format!(
                    "rsync left {} files in the source",
                    count_dir(&src)
                ));
            }
        }
    }
    let wall = started.elapsed();
    let server_cpu = server.delta();
    let pressure = psi.share();
    let moved = &sample[..sent];
    verify_dir(&remote, moved)
        .map_err(|e| format!("{}: remote dir after the run: {e}", peer.name()))?;
    let b = Burst {
        name: peer.name().to_string(),
        plutus: false,
        protocol: peer.protocol(),
        files: sent,
        of: orders.len(),
        wall_s: wall.as_secs_f64(),
        client_cpu_s: usage.cpu(),
        client_rss_kib: usage.maxrss_kib,
        server_cpu_s: server_cpu,
        cpu_pressure_pct: pressure,
        detail: json!({
            "command": bin_path.display().to_string(),
            "runs": usage.runs,
            "client_user_s": usage.user,
            "client_sys_s": usage.sys,
        }),
    };
    println!(
        "  {} files in {:.2} s ({:.1} files/s{}); client CPU {:.2} s, peak RSS {} MiB; server CPU {}",
        sent,
        b.wall_s,
        b.rate(),
        if sent < orders.len() {
            format!(", all {} would take ~{:.0} s", orders.len(), b.wall_s * orders.len() as f64 / sent as f64)
        } else {
            String::new()
        },
        b.client_cpu_s,
        kib_mib(b.client_rss_kib),
        server_cpu.map_or("n/a".into(), |s| format!("{s:.2} s"))
    );
    Ok(b)
}

#[derive(Default)]
struct Usage {
    runs: usize,
    user: f64,
    sys: f64,
    maxrss_kib: Option<u64>,
}

impl Usage {
    fn add(&mut self, (ru, rss): (libc::rusage, Option<u64>)) {
        self.runs += 1;
        self.user += secs(ru.ru_utime);
        self.sys += secs(ru.ru_stime);
        self.maxrss_kib = self.maxrss_kib.max(rss);
    }
    fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// `bin`, under `/usr/bin/time -f %M` when that is installed, for the peak RSS of the
/// command and its children. (wait4's own `ru_maxrss` is no use here: Linux folds the
/// pre-exec high-water mark of a child into it, and a child forked from this bench
/// starts with the bench's RSS; /usr/bin/time is small.)
fn measured(bin: &Path, rss_file: &Path) -> Command {
    match which("time").filter(|t| t.starts_with("/usr/bin")) {
        Some(time) => {
            let mut c = Command::new(time);
            c.args(["-f", "%M", "-o"]).arg(rss_file).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Runs a command to the end: its rusage (waited-for children included) and peak RSS
/// (KiB, when run through `measured`), or its stderr when it failed.
fn run(
    c: &mut Command,
    errlog: &Path,
    rss_file: &Path,
) -> Result<(libc::rusage, Option<u64>), String> {
    let _ = fs::remove_file(rss_file);
    let mut p = Proc::spawn(c).map_err(|e| format!("spawn {c:?}: {e}"))?;
    let (st, ru) = p.wait();
    if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
        let rss = fs::read_to_string(rss_file)
            .ok()
            .and_then(|t| t.lines().last()?.trim().parse().ok());
        Ok((ru, rss))
    } else {
        Err(format!(
            "{:?} failed (wait status {st:#x}): {}",
            c.get_program(),
            tail(&fs::read_to_string(errlog).unwrap_or_default(), 10)
        ))
    }
}

// ---------------------------------------------------------------------------------
// lsyncd

fn lsyncd_name(delay: Option<u32>) -> String {
    match delay {
        None => "lsyncd default config (delay 15 s) 10/s x 30s".into(),
        Some(d) => format!("lsyncd delay = {d} 10/s x 30s"),
    }
}

/// lsyncd's `default.rsync` (rsync over ssh to the same sshd) watching a source dir,
/// at its default `delay` or the given one.
fn latency_lsyncd(sshd: &Sshd, n: usize, rate: f64, delay: Option<u32>) -> Result<Latency, String> {
    let Some(lsyncd) = which("lsyncd") else {
        return Err("`lsyncd` not found (Debian package lsyncd not installed)".into());
    };
    if which("rsync").is_none() {
        return Err("`rsync` not found (Debian package rsync not installed)".into());
    }
    let name = lsyncd_name(delay);
    println!("\n{name}");
    let work = tempfile::Builder::new()
        .prefix("plutus-e2e-lsyncd-")
        .tempdir()
        .unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let slug = delay.map_or("default".to_string(), |d| format!("delay{d}"));
    let remote = sshd.inbox().join(format!("latency-lsyncd-{slug}"));
    fs::create_dir_all(&remote).unwrap();
    let log = work.path().join("lsyncd.log");
    let conf = work.path().join("lsyncd.conf.lua");
    let rsh = format!(
        "/usr/bin/ssh {} -p {}",
        ssh_options(sshd).join(" "),
        sshd.port()
    );
    fs::write(
        &conf,
        format!(
            "settings {{\n  logfile = \"{}\",\n  statusFile = \"{}\",\n  nodaemon = true,\n}}\n\
             sync {{\n  default.rsync,\n  source = \"{}/\",\n  target = \"{}\",\n{}  rsync = {{ rsh = \"{rsh}\" }},\n}}\n",
            log.display(),
            work.path().join("lsyncd.status").display(),
            src.display(),
            remote_spec(sshd, &remote),
            delay.map_or(String::new(), |d| format!("  delay = {d},\n")),
        ),
    )
    .unwrap();
    let out = fs::File::create(work.path().join("lsyncd.stdout")).unwrap();
    let mut p = Proc::spawn(
        Command::new(&lsyncd)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    )
    .map_err(|e| format!("spawn lsyncd: {e}"))?;
    let lsyncd_text = || {
        fs::read_to_string(&log).unwrap_or_default()
            + &fs::read_to_string(work.path().join("lsyncd.stdout")).unwrap_or_default()
    };
    // Ready once its start-up rsync of the (empty) source is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lsyncd_text().contains("finished.") {
        if p.try_reap().is_some() || Instant::now() > deadline {
            return Err(format!(
                "lsyncd did not start: {}",
                tail(&lsyncd_text(), 20)
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
    let orders = make_orders(n + 1, 0x91 + n as u64);
    let result = trickle(&src, &remote, &orders, rate);
    let (_, ru) = p.stop(libc::SIGTERM, Duration::from_secs(10));
    let out = result.map_err(|e| format!("{e}; lsyncd log: {}", tail(&lsyncd_text(), 20)))?;
    verify_dir(&remote, &orders).map_err(|e| format!("remote dir after lsyncd: {e}"))?;
    Ok(out.report(
        name,
        false,
        rate,
        secs(ru.ru_utime) + secs(ru.ru_stime),
        "rsync writes a dot temp name, then renames; no journal, no archive",
    ))
}

// ---------------------------------------------------------------------------------
// Latency measurement (the method of benches/latency.rs)

struct Trickle {
    cpu_pressure_pct: Option<f64>,
    lat: Vec<f64>,
    windows: Vec<f64>,
    warmup_ms: f64,
    write_span_s: f64,
    max_write_lag_ms: f64,
}

impl Trickle {
    /// The report's row for this run of `name`, whose client used `client_cpu_s`;
    /// printed as it is recorded.
    fn report(
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
fn trickle(
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

fn print_latency(l: &Latency) {
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

// ---------------------------------------------------------------------------------
// Scale

fn scale(sshd: &Sshd, sizes: &[usize], results: &Path, sfx: &str, report: &mut Report) {
    println!("\nscale: start-up and memory with a large journal");
    let remote = sshd.inbox().join("scale");
    let sp = Spool::new(sshd, &remote, DEFAULT_CONNECTIONS);
    let journal = sp.path("journal");
    let mut built = 0usize;
    let mut build_time = Duration::ZERO;
    let budget_end = Instant::now() + BUILD_BUDGET;
    let mut targets = vec![0];
    targets.extend_from_slice(sizes);
    for &want in &targets {
        if want > built {
            let t = Instant::now();
            built = build_journal(&journal, built, want, budget_end);
            build_time += t.elapsed();
            if built < want {
                let note = format!(
                    "scale: the journal reached {built} of {want} entries in the {}-s build budget \
                     ({:.0} entries/s); figures are for {built}",
                    BUILD_BUDGET.as_secs(),
                    built as f64 / build_time.as_secs_f64()
                );
                println!("  {note}");
                report.notes.push(note);
            }
        }
        let row = startup(&sp, built, build_time, results, sfx);
        report.scale.push(row);
        if built < want {
            break;
        }
    }
    if built > 0 {
        let name = format!("plutus-sync 10/s x 30s, {built} entries in journal");
        let log = results.join(format!("e2e{sfx}-scale-trickle.service.log"));
        let l = trickle_plutus(&sp, &remote, 300, 10.0, name, &log, built as u64);
        report.latency.push(l);
    }
}

/// Adds archived entries `from..to` (stops at `deadline`); returns how many there are.
/// Two threads, one per core: sled takes concurrent transactions.
fn build_journal(path: &Path, from: usize, to: usize, deadline: Instant) -> usize {
    let t = Instant::now();
    // A bigger page cache than the service's while building: only speed.
    let j = Journal::open(
        path,
        &JournalOptions {
            cache_capacity: 256 << 20,
        },
    )
    .unwrap();
    let next = std::sync::atomic::AtomicUsize::new(from);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let chunk = 1000;
    thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| loop {
                if Instant::now() > deadline {
                    return;
                }
                let a = next.fetch_add(chunk, std::sync::atomic::Ordering::SeqCst);
                if a >= to {
                    return;
                }
                for i in a..(a + chunk).min(to) {
                    add_archived(&j, i);
                }
                let n = done
                    .fetch_add((a + chunk).min(to) - a, std::sync::atomic::Ordering::SeqCst)
                    + (a + chunk).min(to)
                    - a;
                if n.is_multiple_of(100_000) {
                    println!(
                        "  journal: {} entries ({:.0} entries/s)",
                        from + n,
                        n as f64 / t.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    j.flush().unwrap();
    // Chunks are taken whole, so what was done is a prefix plus nothing past it.
    from + done.into_inner()
}

fn add_archived(j: &Journal, i: usize) {
    let name = format!("order-2025-{i:07}.json");
    let rec = j
        .insert(NewEntry {
            name: name.clone(),
            size: 5_000 + (i % 5_000) as u64,
            crc32: (i as u32).wrapping_mul(2_654_435_761),
            batch: "20261101-0900".into(),
            source_path: format!("/var/spool/plutus-sync/outbox/{name}"),
            found_by: "watch".into(),
        })
        .unwrap();
    j.apply(
        rec.id,
        Event::Verified {
            remote_path: format!("/srv/erp/inbox/{name}"),
            archive_path: format!("/var/spool/plutus-sync/archive/2026/11/01/{name}"),
            note: None,
        },
    )
    .unwrap();
    j.apply(rec.id, Event::Archived).unwrap();
}

fn startup(sp: &Spool, entries: usize, build: Duration, results: &Path, sfx: &str) -> ScaleRow {
    let log = results.join(format!("e2e{sfx}-scale-{entries}.service.log"));
    let mut p = Plutus::start(&sp.config, &log);
    let t0 = p.proc.spawned;
    let ready = p.wait_log("ready:", Duration::from_secs(600), Duration::from_millis(1));
    let startup_ms = ms(ready - t0);
    let rss_ready = status_kib(p.proc.pid, "VmRSS:");
    thread::sleep(Duration::from_secs(3));
    let rss_settled = status_kib(p.proc.pid, "VmRSS:");
    let hwm = status_kib(p.proc.pid, "VmHWM:");
    p.stop();
    let t = Instant::now();
    let j = Journal::open(&sp.path("journal"), &JournalOptions::default()).unwrap();
    let open_ms = ms(t.elapsed());
    let t = Instant::now();
    let n = j.len();
    let len_ms = ms(t.elapsed());
    drop(j);
    assert_eq!(n, entries, "journal entries");
    let text = p.log_text();
    let at = |needle: &str| text.lines().find(|l| l.contains(needle)).and_then(log_time);
    let starting_to_ready_ms = match (at(" starting "), at("ready:")) {
        (Some(a), Some(b)) => Some((b - a) * 1000.0),
        _ => None,
    };
    // The "starting" line is logged once the journal is open and counted.
    let spawned = p
        .proc
        .spawned_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() % 86_400.0)
        .ok();
    let spawn_to_starting_ms = match (spawned, at(" starting ")) {
        (Some(a), Some(b)) => Some((b - a) * 1000.0),
        _ => None,
    };
    let disk_mib = du(&sp.path("journal")) as f64 / (1 << 20) as f64;
    println!(
        "  {entries} entries: ready {startup_ms:.1} ms after spawn (spawn -> \"starting\" line, \
         i.e. journal opened and counted, {}; starting -> ready {}); \
         RSS {} MiB at ready, {} MiB 3 s later, peak {} MiB; journal {disk_mib:.0} MiB on disk; \
         in-process Journal::open {open_ms:.1} ms, Journal::len {len_ms:.1} ms",
        spawn_to_starting_ms.map_or("?".into(), |m| format!("{m:.1} ms")),
        starting_to_ready_ms.map_or("?".into(), |m| format!("{m:.1} ms")),
        kib_mib(rss_ready),
        kib_mib(rss_settled),
        kib_mib(hwm)
    );
    ScaleRow {
        entries,
        build_s: build.as_secs_f64(),
        disk_mib,
        open_ms,
        len_ms,
        startup_ms,
        spawn_to_starting_ms,
        starting_to_ready_ms,
        rss_ready_kib: rss_ready,
        rss_settled_kib: rss_settled,
        hwm_kib: hwm,
    }
}

// ---------------------------------------------------------------------------------
// The service log

/// Where the time went in a burst, from the service's own log lines.
#[derive(Default)]
struct LogStats {
    lines: usize,
    bytes: usize,
    warnings: usize,
    first_warning: Option<String>,
    /// Seconds after the "starting" line: (first, last, count) of each kind of line.
    detected: Span,
    uploaded: Span,
    verified: Span,
    archived: Span,
    upload_ms: Vec<f64>,
    attempt_ms: Vec<f64>,
    /// Per file, between its own log lines (ms): "uploaded" -> "verified" (read-back,
    /// rename, `verified` journaled and flushed) and "verified" -> "archived" (archive
    /// move with its directory fsync, `archived` journaled).
    uploaded_to_verified_ms: Vec<f64>,
    verified_to_archived_ms: Vec<f64>,
}

#[derive(Default, Clone, Copy)]
struct Span {
    first: f64,
    last: f64,
    count: usize,
}

impl Span {
    fn add(&mut self, t: f64) {
        if self.count == 0 {
            self.first = t;
        }
        self.last = t;
        self.count += 1;
    }
    fn to_json(self) -> Value {
        json!({"first_s": self.first, "last_s": self.last, "count": self.count})
    }
}

impl LogStats {
    fn parse(text: &str) -> LogStats {
        let mut s = LogStats {
            bytes: text.len(),
            ..LogStats::default()
        };
        let mut t0 = None;
        let mut last: HashMap<String, f64> = HashMap::new();
        let name = |line: &str| {
            let rest = &line[line.find("file{file=")? + "file{file=".len()..];
            Some(rest[..rest.find(' ')?].to_string())
        };
        for line in text.lines() {
            s.lines += 1;
            let Some(t) = log_time(line) else { continue };
            let t0 = *t0.get_or_insert(t);
            let rel = t - t0;
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                s.warnings += 1;
                s.first_warning.get_or_insert_with(|| line.to_string());
            }
            if line.contains(" detected ") {
                s.detected.add(rel);
            } else if line.contains(": uploaded to ") {
                s.uploaded.add(rel);
                s.upload_ms.extend(field(line, "elapsed_ms="));
                last.extend(name(line).map(|n| (n, t)));
            } else if line.contains(": verified as ") {
                s.verified.add(rel);
                s.attempt_ms.extend(field(line, "elapsed_ms="));
                if let Some(n) = name(line) {
                    if let Some(u) = last.insert(n, t) {
                        s.uploaded_to_verified_ms.push((t - u) * 1000.0);
                    }
                }
            } else if line.contains(": archived to ") {
                s.archived.add(rel);
                if let Some(v) = name(line).and_then(|n| last.remove(&n)) {
                    s.verified_to_archived_ms.push((t - v) * 1000.0);
                }
            }
        }
        s
    }

    fn line(&self) -> String {
        let up = Summary::of(&self.upload_ms);
        let at = Summary::of(&self.attempt_ms);
        format!(
            "{} lines ({:.1} MB), {} warnings; detected {} in {:.2}-{:.2} s, verified {:.2}-{:.2} s, \
             archived {:.2}-{:.2} s (from the \"starting\" line); upload step p50 {:.0} ms, \
             attempt (upload + read-back + rename) p50 {:.0} ms p99 {:.0} ms; between a file's \
             lines: uploaded -> verified p50 {:.2} ms, verified -> archived p50 {:.2} ms{}",
            self.lines,
            self.bytes as f64 / 1e6,
            self.warnings,
            self.detected.count,
            self.detected.first,
            self.detected.last,
            self.verified.first,
            self.verified.last,
            self.archived.first,
            self.archived.last,
            up.p50,
            at.p50,
            at.p99,
            Summary::of(&self.uploaded_to_verified_ms).p50,
            Summary::of(&self.verified_to_archived_ms).p50,
            self.first_warning
                .as_ref()
                .map_or(String::new(), |w| format!("; first warning: {w}"))
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "lines": self.lines,
            "bytes": self.bytes,
            "warnings": self.warnings,
            "first_warning": self.first_warning,
            "detected": self.detected.to_json(),
            "uploaded": self.uploaded.to_json(),
            "verified": self.verified.to_json(),
            "archived": self.archived.to_json(),
            "upload_step_ms": Summary::of(&self.upload_ms).to_json(),
            "attempt_ms": Summary::of(&self.attempt_ms).to_json(),
            "uploaded_to_verified_ms": Summary::of(&self.uploaded_to_verified_ms).to_json(),
            "verified_to_archived_ms": Summary::of(&self.verified_to_archived_ms).to_json(),
        })
    }
}

/// Seconds since midnight UTC of a log line starting "2026-11-23T12:34:35.849004Z".
fn log_time(line: &str) -> Option<f64> {
    let ts = line.get(11..26)?;
    let h: f64 = ts.get(0..2)?.parse().ok()?;
    let m: f64 = ts.get(3..5)?.parse().ok()?;
    let s: f64 = ts.get(6..)?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn field(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// ---------------------------------------------------------------------------------
// The plot

/// DejaVu Sans (Debian's fonts-dejavu-core), read at run time: plotters' `ab_glyph`
/// feature draws text from a font it is handed, without fontconfig.
fn register_font() -> Result<(), String> {
    let candidates = [
        std::env::var("PLUTUS_BENCH_FONT").unwrap_or_default(),
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into(),
        "/usr/share/fonts/TTF/DejaVuSans.ttf".into(),
        "/usr/share/fonts/dejavu/DejaVuSans.ttf".into(),
    ];
    for c in candidates.iter().filter(|c| !c.is_empty()) {
        if let Ok(bytes) = fs::read(c) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{c}: not a usable font"));
        }
    }
    Err("no DejaVuSans.ttf found (install fonts-dejavu-core or set PLUTUS_BENCH_FONT)".into())
}

/// CDF of each latency series on a log time axis.
fn plot_latency(path: &Path, series: &[Latency]) -> Result<(), String> {
    let mut series: Vec<&Latency> = series.iter().filter(|l| !l.lat.is_empty()).collect();
    series.sort_by_key(|l| !l.plutus);
    if series.is_empty() {
        return Err("no latency series".into());
    }
    register_font()?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let lo = series
        .iter()
        .flat_map(|l| l.lat.iter())
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(0.05);
    let hi = series
        .iter()
        .flat_map(|l| l.lat.iter())
        .copied()
        .fold(0.0, f64::max);
    let (lo, hi) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil()),
    );

    // The legend goes in a strip below the chart, where it cannot hide a curve.
    let (w, h) = (1200u32, 660 + 30 * series.len() as u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (top, strip) = root.split_vertically(h - 30 * series.len() as u32 - 10);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "close in outbox -> final name in SFTP inbox (CDF, loopback sshd, 2 cores)",
            ("sans-serif", 26),
        )
        .margin(20)
        .margin_right(45)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("latency, ms (log scale)")
        .y_desc("fraction of files delivered")
        .x_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        })
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .label_style(("sans-serif", 18))
        .axis_desc_style(("sans-serif", 20))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, l) in series.iter().enumerate() {
        let mut v = l.lat.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mut pts = Vec::with_capacity(v.len() * 2);
        for (k, x) in v.iter().enumerate() {
            let x = x.max(lo);
            pts.push((x, k as f64 / n));
            pts.push((x, (k + 1) as f64 / n));
        }
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(3)))
            .map_err(|x| e(&x))?;
        let s = Summary::of(&l.lat);
        let y = 30 * i as i32 + 15;
        strip
            .draw(&PathElement::new(
                vec![(90, y), (140, y)],
                color.stroke_width(4),
            ))
            .map_err(|x| e(&x))?;
        strip
            .draw(&Text::new(
                format!(
                    "{}: p50 {}, p90 {}, p99 {}, max {}",
                    l.name,
                    fmt_ms(s.p50),
                    fmt_ms(s.p90),
                    fmt_ms(s.p99),
                    fmt_ms(s.max)
                ),
                (152, y - 10),
                ("sans-serif", 19),
            ))
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Line colours: plutus-sync's series come first, in the warm colours.
const PALETTE: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

// ---------------------------------------------------------------------------------
// Files, processes, numbers

fn make_orders(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            (
                format!("order-2026-{i:06}.json"),
                order(i, 1000 + rng.usize(0..9000)),
            )
        })
        .collect()
}

/// Writes every order into `dir`; `old` dates them an hour back, as files that waited
/// in the outbox while the service was down (past any `settle`).
fn fill(dir: &Path, orders: &[(String, Vec<u8>)], old: bool) {
    let then = SystemTime::now() - Duration::from_secs(3600);
    for (name, body) in orders {
        let mut f = fs::File::create(dir.join(name)).unwrap();
        f.write_all(body).unwrap();
        if old {
            f.set_modified(then).unwrap();
        }
    }
}

/// Every order byte-identical in `dir`, and nothing else there (no temp names).
fn verify_dir(dir: &Path, orders: &[(String, Vec<u8>)]) -> Result<(), String> {
    let want: HashMap<&str, &[u8]> = orders.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    let mut seen = 0;
    for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(body) = want.get(name.as_str()) else {
            return Err(format!("unexpected {name} in {}", dir.display()));
        };
        if fs::read(e.path()).map_err(|e| e.to_string())? != *body {
            return Err(format!("{name}: content differs from the order written"));
        }
        seen += 1;
    }
    if seen != orders.len() {
        return Err(format!(
            "{seen} of {} files in {}",
            orders.len(),
            dir.display()
        ));
    }
    Ok(())
}

/// The archive (dated folders) holds each order once, byte-identical.
fn verify_archive(dir: &Path, orders: &[(String, Vec<u8>)]) -> Result<(), String> {
    let got = plutus_testkit::service::files_under(dir);
    if got.len() != orders.len() {
        return Err(format!("{} of {} files archived", got.len(), orders.len()));
    }
    let mut want = orders.to_vec();
    want.sort();
    if got != want {
        return Err("archived files differ from the orders written".into());
    }
    Ok(())
}

fn journal_count(path: &Path, state: State) -> u64 {
    let j = Journal::open(path, &JournalOptions::default()).unwrap();
    j.counts()
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

fn count_dir(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |rd| rd.count())
}

fn count_files_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                n += m.blocks() * 512;
            }
        }
    }
    n
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// The fields after "(comm)" of /proc/PID/stat: index 0 is field 3 (state).
fn proc_stat(pid: i32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of `pid` (and, with `children`, of its reaped children), seconds.
fn proc_cpu(pid: i32, children: bool) -> Option<f64> {
    // After the state field: ppid=0 ... utime=10, stime=11, cutime=12, cstime=13.
    let f = proc_stat(pid)?;
    let ticks = f[10] + f[11] + if children { f[12] + f[13] } else { 0 };
    Some(ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// `key` of /proc/PID/status, in KiB for the Vm* lines.
fn status_kib(pid: i32, key: &str) -> Option<u64> {
    status_line_kib(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// CPU used by sshd and every process below it (the per-connection children and
/// their sftp servers), counting each tick once: a live process's own time plus
/// what it has reaped.
struct ServerCpu {
    pid: Option<i32>,
    before: f64,
}

impl ServerCpu {
    fn new(sshd: &Sshd) -> ServerCpu {
        let pid = fs::read_to_string(sshd.dir().join("sshd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        ServerCpu {
            pid,
            before: pid.map_or(0.0, tree_cpu),
        }
    }
    fn delta(&self) -> Option<f64> {
        self.pid.map(|p| tree_cpu(p) - self.before)
    }
}

fn tree_cpu(root: i32) -> f64 {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(f) = proc_stat(pid) {
            children.entry(f[0] as i32).or_default().push(pid);
        }
    }
    let mut total = 0.0;
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        total += proc_cpu(p, true).unwrap_or(0.0);
        todo.extend(children.get(&p).into_iter().flatten());
    }
    total
}

fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn pct(p: Option<f64>) -> String {
    p.map_or("-".into(), |p| format!("{p:.0}"))
}

fn kib_mib(k: Option<u64>) -> String {
    k.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn env_list(key: &str) -> Vec<usize> {
    std::env::var(key)
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect()
}
