//! End-to-end benchmark of plutus-sync next to the tools an operator would otherwise
//! use (issue 6), all against one real OpenSSH sshd on 127.0.0.1 that the bench starts
//! (the `plutus-testkit` fixture), in one run, with order files the bench generates
//! (1-10 KB, seeded, `plutus_testkit::orders::order`).
//!
//! Scenarios (`cargo bench --bench e2e`; a filter argument runs only some of them:
//! `cargo bench --bench e2e -- burst peers latency wan big scale`):
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
//!   (`common/trickle.rs`, shared with benches/latency.rs: one poller thread stats
//!   every outstanding path), for plutus-sync (and 100 files/s for 10 s), lsyncd's default config
//!   (`delay` 15 s) and lsyncd with `delay = 0`.
//! - **wan**: the same sshd behind the testkit's delaying TCP relay at RTT 0 (the relay
//!   alone), 20 and 50 ms: a 1,000-file burst with plutus-sync as installed
//!   (connections 2, window 64), with `window = 1` and with 8 connections, next to
//!   `rsync`, `scp` batch and `sftp -b` (the last two on a 200-file sample above 0 ms);
//!   then 60 lone files at 2 files/s at 20 ms RTT (close -> final name).
//! - **big**: 64 orders of 8 MiB with one connection and `window = 64` (a whole window
//!   of large files in flight): files/s, MB/s and peak RSS (target <= 64 MiB).
//! - **scale**: start-up time (spawn -> "ready:" log line) and RSS with 0, 100,000 and
//!   1,000,000 archived entries in the journal (built through `plutus_state::Journal`,
//!   within a 5-minute budget), then the 10 files/s trickle with the largest journal.
//!
//! Prints a table and writes `target/bench-results/e2e.json`, the latency CDF plot
//! `latency.png` and each plutus-sync run's log beside them. Without `--bench` (as
//! `cargo test --all-targets` runs it) it is a smoke run of a few seconds: a 300-file
//! burst, a 10-file trickle and a 60-file burst at 20 ms RTT, no peers, no scale; it
//! writes `e2e-smoke.*`.
//!
//! The bench never fails on a figure; it fails only when a delivery is wrong or a run
//! does not finish. Environment: `PLUTUS_E2E_FILES` (burst size), `PLUTUS_E2E_SCALE`
//! (journal sizes, e.g. `100000,1000000`). See benches/README.md for the figures.

//!
//! Modules, in the order a run uses them: `burst`, `peers`, `latency` (plutus-sync's
//! trickles) and `lsyncd` over `trickle` (the measurement itself, shared with
//! benches/latency.rs in `common/`), `scale`; then
//! `report` and `tables` (the figures, the targets, the JSON), `plot` (the CDF),
//! `logstats` (the service log of a burst); `util` underneath. The sshd, the spool,
//! the service and the /proc readers are the testkit's (`plutus_testkit`).

#[path = "../common/machine.rs"]
mod machine;
#[path = "../common/poller.rs"]
mod poller;
#[path = "../common/results.rs"]
mod results;
#[path = "../common/trickle.rs"]
mod trickle;

mod burst;
mod latency;
mod logstats;
mod lsyncd;
mod peers;
mod plot;
mod report;
mod scale;
mod tables;
mod util;
mod wan;

use burst::burst_plutus;
use latency::latency_plutus;
use lsyncd::{latency_lsyncd, lsyncd_name};
use machine::Machine;
use peers::{burst_peer, Peer};
use plot::plot_latency;
use plutus_testkit::orders;
use plutus_testkit::sshd::Sshd;
use report::Report;
use results::target_dir;
use scale::scale;
use std::fs;
use wan::{wan, Link, WanSizes};

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
            p == "burst" || p == "latency" || p == "wan"
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
        || std::env::var_os("PLUTUS_E2E_WAN_FILES").is_some()
        || std::env::var_os("PLUTUS_E2E_SCALE").is_some();
    let sfx = match (full, partial) {
        (false, _) => "-smoke",
        (true, true) => "-partial",
        (true, false) => "",
    };
    let sshd = Sshd::start();
    let mut report = Report::default();

    let orders = orders::seeded(files, 0x6_0000 + files as u64);
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
            let b = burst_plutus(&sshd, &Link::direct(&sshd), &orders, c, None, &dir, sfx);
            report.burst.push(b);
        }
    }
    if full && part("peers") {
        for peer in [Peer::ScpEach, Peer::ScpBatch, Peer::SftpBatch, Peer::Rsync] {
            match burst_peer(&sshd, &Link::direct(&sshd), &orders, peer, None) {
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
    if full && part("big") {
        // Issue 12's memory bound: a whole window of 8 MiB orders on one connection.
        let big: Vec<(String, Vec<u8>)> = (0..64)
            .map(|i| (format!("order-big-{i:02}.json"), orders::order(i, 8 << 20)))
            .collect();
        let mut b = burst_plutus(&sshd, &Link::direct(&sshd), &big, 1, Some(64), &dir, sfx);
        b.name = format!("{}, 64 files of 8 MiB", b.name);
        report.big.push(b);
    }
    if part("wan") {
        let sizes = if full {
            WanSizes {
                rtts: vec![0, 20, 50],
                files: env_list("PLUTUS_E2E_WAN_FILES")
                    .first()
                    .copied()
                    .unwrap_or(1000),
                slow_sample: 200,
                trickle: 60,
                full: true,
            }
        } else {
            WanSizes {
                rtts: vec![20],
                files: 60,
                slow_sample: 0,
                trickle: 4,
                full: false,
            }
        };
        wan(&sshd, &orders, &sizes, &dir, sfx, &mut report);
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

fn env_list(key: &str) -> Vec<usize> {
    std::env::var(key)
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect()
}
