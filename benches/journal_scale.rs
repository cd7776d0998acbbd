//! The journal at scale (issue 17): fill a journal through the real journal API with
//! `PLUTUS_SCALE_ENTRIES` delivered orders (default 100,000; each one `insert`,
//! `uploaded`, `verified`, `archived`, as the pipeline writes them), then time what an
//! operator and a scraper do against it: open after a clean close (in a fresh process,
//! with its peak RSS), `journal stats`, a metrics refresh + render, `journal list
//! --since 1h --limit 20` and `show NAME`. Then a churn phase (see `churn`) reports
//! the journal's size on disk as entries come and go.
//!
//!     cargo bench --bench journal_scale
//!     (`cargo test --all-targets` runs it as a smoke run: 2,000 entries, 3 churn rounds)
//!     PLUTUS_SCALE_ENTRIES=1000000 cargo bench --bench journal_scale
//!
//! Every entry is written now, so all of them fall inside the day's window: the
//! worst case for the windows of `journal stats`.

use plutus_state::{Event, Journal, JournalOptions, NewEntry};
use plutus_sync::metrics::Metrics;
use plutus_sync::operator::protocol::ListFilter;
use plutus_sync::operator::queries;
use plutus_testkit::files::disk_usage;
use plutus_testkit::procfs;
use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The child process: open a filled journal, measure, report.
    if let [flag, dir] = &args[..] {
        match flag.as_str() {
            "--open" => return measure_open(Path::new(dir)),
            "--sled-open" => return measure_sled_open(Path::new(dir)),
            _ => {}
        }
    }
    // `cargo bench` passes --bench; without it (`cargo test --all-targets`, a debug
    // build) this is a smoke run of a few seconds with the same checks.
    let full = args.iter().any(|a| a == "--bench");
    let n = env_or("PLUTUS_SCALE_ENTRIES", if full { 100_000 } else { 2_000 });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let started = Instant::now();
    fill(&path, n);
    let fill = started.elapsed();
    let bytes = disk_usage(&path);
    println!(
        "journal_scale: {n} entries filled in {:.1} s ({:.0} entries/s); on disk {:.1} MB = {:.0} bytes/entry",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );
    measure_opens(&path);
    // The same journal compacted (what the running service does once it has doubled).
    let j = Journal::open(&path, &JournalOptions::default()).unwrap();
    let c = plutus_sync::operator::compact::in_place(&j).unwrap();
    drop(j);
    println!(
        "journal_scale: compacted in {:.1} s (writes paused {} ms): {:.1} MB = {:.0} bytes/entry",
        c.took_ms as f64 / 1e3,
        c.paused_ms,
        disk_usage(&path) as f64 / 1e6,
        disk_usage(&path) as f64 / n as f64
    );
    measure_opens(&path);
    drop(dir);
    churn(full);
    steady(full);
}

/// The steady state of an installation: `PLUTUS_SCALE_PER_DAY` orders a "day" (default
/// 2,000), `PLUTUS_SCALE_RETENTION` days kept (default 30), `PLUTUS_SCALE_DAYS` days
/// (default 45), with what the running service does between them: pruning by the
/// retention, the windows' time keys kept for two days, compaction when due (the
/// default 64 MiB of growth). A day lasts as long as its orders take to write; the
/// bench passes each prune the time the day stands for.
fn steady(full: bool) {
    let per_day = env_or("PLUTUS_SCALE_PER_DAY", if full { 2_000 } else { 100 });
    let retention = env_or("PLUTUS_SCALE_RETENTION", if full { 30 } else { 2 }) as usize;
    let days = env_or("PLUTUS_SCALE_DAYS", if full { 45 } else { 4 }) as usize;
    let growth = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let j = Journal::open(&path, &JournalOptions::default()).unwrap();
    let mut reference = disk_usage(&path);
    let (mut began, mut sizes, mut compactions) = (Vec::new(), Vec::new(), Vec::new());
    let mut peak = 0;
    for day in 0..days {
        began.push(plutus_state::now_ms());
        deliver(&j, day as u64 * per_day, per_day);
        if day + 1 >= retention {
            j.prune_archived(began[day + 1 - retention], usize::MAX)
                .unwrap();
        }
        if day >= 1 {
            // Keys before the previous day's start go, as two days' pruning would.
            j.prune_windows(began[day - 1] + 2 * plutus_state::journal::DAY)
                .unwrap();
        }
        j.flush().unwrap();
        let size = disk_usage(&path);
        peak = peak.max(size);
        if plutus_sync::operator::compact::due(size, reference, growth) {
            let c = plutus_sync::operator::compact::in_place(&j).unwrap();
            reference = disk_usage(&path);
            compactions.push(format!(
                "day {}: {:.1} -> {:.1} MB, writes paused {} ms ({} ms in all)",
                day + 1,
                size as f64 / 1e6,
                reference as f64 / 1e6,
                c.paused_ms,
                c.took_ms
            ));
        }
        if (day + 1) % 5 == 0 || day + 1 == days {
            sizes.push(format!(
                "day {}: {:.1}",
                day + 1,
                disk_usage(&path) as f64 / 1e6
            ));
        }
    }
    let live = j.len() as u64;
    println!(
        "journal_scale: steady state, {per_day} orders a day, {retention} days kept, {days} days: {live} entries; MB on disk {}; peak {:.1} MB = {:.0} bytes per entry kept; compactions: {}",
        sizes.join(", "),
        peak as f64 / 1e6,
        peak as f64 / live as f64,
        if compactions.is_empty() { "none".to_string() } else { compactions.join("; ") }
    );
}

/// Each measurement in a fresh process, so its peak RSS is its own: first sled's bare
/// open (its log recovery), then the journal's.
fn measure_opens(path: &Path) {
    let exe = std::env::current_exe().unwrap();
    for mode in ["--sled-open", "--open"] {
        let out = std::process::Command::new(&exe)
            .arg(mode)
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Churn: rounds of `PLUTUS_SCALE_CHURN` orders (default 10,000) delivered and
/// archived, each round followed by pruning every entry archived before it began (a
/// retention of one round), in a fresh journal, `PLUTUS_SCALE_ROUNDS` rounds (default
/// 10). Twice: pruning alone (does sled reuse the space pruning frees? the size after
/// each round says), then with the running service's compaction when it is due
/// (`operator::compact::due`, with `PLUTUS_SCALE_GROWTH` bytes, default 16 MiB).
fn churn(full: bool) {
    let per_round = env_or("PLUTUS_SCALE_CHURN", if full { 10_000 } else { 500 });
    let rounds = env_or("PLUTUS_SCALE_ROUNDS", if full { 10 } else { 3 });
    let growth = env_or("PLUTUS_SCALE_GROWTH", 16 << 20);
    for compacting in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let j = Journal::open(&path, &JournalOptions::default()).unwrap();
        let mut reference = disk_usage(&path);
        let (mut sizes, mut pauses) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let began = plutus_state::now_ms();
            deliver(&j, round * per_round, per_round);
            let pruned = j.prune_archived(began, usize::MAX).unwrap();
            j.flush().unwrap();
            assert_eq!(j.len() as u64, per_round, "round {round}: pruned {pruned}");
            let size = disk_usage(&path);
            if compacting && plutus_sync::operator::compact::due(size, reference, growth) {
                let c = plutus_sync::operator::compact::in_place(&j).unwrap();
                reference = disk_usage(&path);
                pauses.push(format!("{} ms ({} ms in all)", c.paused_ms, c.took_ms));
                sizes.push(format!(
                    "{:.1}->{:.1}",
                    size as f64 / 1e6,
                    reference as f64 / 1e6
                ));
            } else {
                sizes.push(format!("{:.1}", size as f64 / 1e6));
            }
        }
        println!(
            "journal_scale: churn {}, {per_round} entries kept, {per_round} delivered and pruned per round: MB on disk after each of {rounds} rounds: {}{}",
            if compacting { "with compaction when due" } else { "pruning alone" },
            sizes.join(", "),
            if compacting { format!("; writes paused {}", pauses.join(", ")) } else { String::new() }
        );
        if !compacting {
            // What `journal compact` gives back.
            let before = disk_usage(&path);
            let c = plutus_sync::operator::compact::in_place(&j).unwrap();
            println!(
                "journal_scale: compacted: {} entries, {:.1} MB -> {:.1} MB in {} ms",
                c.entries,
                before as f64 / 1e6,
                disk_usage(&path) as f64 / 1e6,
                c.took_ms
            );
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fill(path: &Path, n: u64) {
    let j = Journal::open(path, &JournalOptions::default()).unwrap();
    deliver(&j, 0, n);
    j.flush().unwrap();
}

/// Orders `first..first + n`, each taken in, uploaded, verified and archived.
fn deliver(j: &Journal, first: u64, n: u64) {
    for i in first..first + n {
        let name = format!("order-2026-{i:07}.json");
        let rec = j
            .insert(NewEntry {
                name: name.clone(),
                size: 4_000,
                crc32: i as u32,
                batch: "20261202T1700".into(),
                source_path: format!("/var/spool/plutus-sync/outbox/{name}"),
                found_by: "inotify".into(),
            })
            .unwrap();
        let temp = format!("/C:/ERP/inbox/{name}.{}-0badc0de.part", rec.id);
        j.apply(rec.id, Event::Uploaded { remote_path: temp })
            .unwrap();
        j.apply(
            rec.id,
            Event::Verified {
                remote_path: format!("/C:/ERP/inbox/{name}"),
                archive_path: format!("/var/spool/plutus-sync/archive/2026/12/02/{name}"),
                note: None,
            },
        )
        .unwrap();
        j.apply(rec.id, Event::Archived).unwrap();
    }
}

/// Median of `runs` timings of `f`, in ms.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[runs / 2].as_secs_f64() * 1e3
}

/// sled's own recovery, apart from what the journal adds at open: a bare open of the
/// directory with the journal's cache size.
fn measure_sled_open(path: &Path) {
    let s = Instant::now();
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(JournalOptions::default().cache_capacity)
        .open()
        .unwrap();
    let ms = s.elapsed().as_secs_f64() * 1e3;
    println!(
        "journal_scale: a bare sled open of it: {ms:.1} ms, peak RSS {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
    drop(db);
}

fn measure_open(path: &Path) {
    // The sled lock of the previous process goes a moment after it exits: retried
    // until free, timing the attempt that succeeds.
    let (j, open_ms) = loop {
        let s = Instant::now();
        match Journal::open(path, &JournalOptions::default()) {
            Ok(j) => break (j, s.elapsed().as_secs_f64() * 1e3),
            Err(plutus_state::JournalError::Locked { .. }) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    };
    let rss = peak_rss_kib();
    let stats = queries::stats(&j).unwrap();
    assert_eq!(
        stats.delivered_last_day,
        j.len() as u64,
        "every entry was delivered now"
    );
    let stats_ms = time(11, || {
        queries::stats(&j).unwrap();
    });
    let m = Metrics::new();
    let scrape_ms = time(11, || {
        m.refresh(&j, 0, true);
        std::hint::black_box(m.render());
    });
    let recent = ListFilter {
        since_ms: Some(3_600_000),
        limit: Some(20),
        ..ListFilter::default()
    };
    let list_ms = time(11, || {
        assert!(!queries::list(&j, &recent).unwrap().is_empty());
    });
    let name = format!("order-2026-{:07}.json", j.len() / 2);
    // What sled stores per entry before its own overhead (the entry's value; the
    // index keys add the name, 9 and 17 bytes).
    let value = serde_json::to_vec(&queries::show(&j, &name).unwrap()[0])
        .unwrap()
        .len();
    let show_ms = time(11, || {
        assert_eq!(queries::show(&j, &name).unwrap().len(), 1);
    });
    println!(
        "journal_scale: {} entries: open (clean close) {open_ms:.1} ms, peak RSS after open {:.1} MiB; \
         journal stats {stats_ms:.2} ms; metrics refresh+render {scrape_ms:.2} ms; \
         list --since 1h --limit 20 {list_ms:.2} ms; show NAME {show_ms:.2} ms; an entry's value {value} bytes",
        j.len(),
        rss as f64 / 1024.0
    );
}

/// This process's peak RSS, in KiB.
fn peak_rss_kib() -> u64 {
    procfs::status_number(std::process::id(), "VmHWM:").unwrap_or(0)
}
