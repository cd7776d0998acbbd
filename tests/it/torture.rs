//! Trying hard to lose, split or duplicate an order. Every scenario ends with the
//! same invariants (`assert_delivered_exactly_once`). `PLUTUS_TORTURE=long` runs the
//! long versions (hundreds of kills, thousands of files).

use plutus_state::{Event, State};
use plutus_testkit::checks::*;
use plutus_testkit::erp::Erp;
use plutus_testkit::files::{count_files_under, files_under, names_in};
use plutus_testkit::orders::order;
use plutus_testkit::procfs;
use plutus_testkit::relay::Relay;
use plutus_testkit::service::*;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::{poll_until, wait_until};
use std::fs;
use std::time::{Duration, Instant};

fn long() -> bool {
    std::env::var("PLUTUS_TORTURE").is_ok_and(|v| v == "long")
}

fn orders(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("order-2026-{i:06}.json"),
                order(i, 1000 + (i * 53) % 9000),
            )
        })
        .collect()
}

/// CPU seconds (user + system) the service has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    procfs::cpu_seconds(pid).expect("the service's /proc/PID/stat")
}

fn peak_rss_kib(pid: u32) -> u64 {
    procfs::status_number(pid, "VmHWM:").expect("the service's VmHWM")
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_sends_nothing_twice() {
    let (files, min_kills) = if long() { (5000, 200) } else { (2000, 20) };
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "connections = 2");
    // The ERP imports and deletes each file the moment it has its final name: a
    // duplicate is a second import, not a second copy left in the inbox.
    let erp = Erp::start(sshd.inbox(), ".json");
    // More orders keep arriving while the kills go on, as on a busy day, so a fast
    // build cannot drain the burst before the kills are done.
    let pool = orders(files * 6);
    let mut dropped = files;
    let mut svc = spool.start();
    svc.wait_ready();
    for (n, b) in &pool[..dropped] {
        spool.drop_order(n, b);
    }
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9);
    let (mut kills, mut in_startup, mut after_ready) = (0, 0, 0);
    let started = Instant::now();
    while kills < min_kills
        && started.elapsed() < Duration::from_secs(if long() { 1800 } else { 240 })
    {
        let done = spool.archived().len();
        dropped = top_up(&spool, &pool, dropped, done);
        if done >= dropped {
            break;
        }
        match rng.u8(0..8) {
            // During start-up recovery: before the service says it is ready.
            0 => {
                std::thread::sleep(Duration::from_millis(rng.u64(0..15)));
                in_startup += 1;
            }
            // Right after ready: the start-up sweep and the first uploads.
            1 => {
                svc.wait_ready();
                after_ready += 1;
            }
            // Mid-stream: after some progress, at a random instant.
            _ => {
                svc.wait_ready();
                let target = (done + rng.usize(5..40)).min(dropped);
                poll_until(Duration::from_secs(10), || spool.archived().len() >= target);
                std::thread::sleep(Duration::from_millis(rng.u64(0..20)));
            }
        }
        svc.kill();
        kills += 1;
        svc = spool.start();
    }
    svc.wait_ready();
    eprintln!(
        "{kills} kills ({in_startup} during start-up, {after_ready} right after ready) over {dropped} files in {:?}",
        started.elapsed()
    );
    assert!(
        kills >= min_kills,
        "only {kills} kills before {dropped} files were done"
    );
    // One more kill mid-burst: the counts and windows `journal stats` keeps (here
    // opened by the CLI after the unclean stop, so repaired at open) equal a full
    // scan of the entries.
    let done = spool.archived().len();
    let more = (dropped + 300).min(pool.len());
    for (n, b) in &pool[dropped..more] {
        spool.drop_order(n, b);
    }
    dropped = more;
    poll_until(Duration::from_secs(30), || {
        spool.archived().len() >= done + 50
    });
    svc.kill();
    counts_and_windows_equal_a_full_scan(&spool);
    // And after a clean stop mid-burst: then the counts are the service's own, kept
    // with every write and saved at its close, not counted again at open.
    svc = spool.start();
    svc.wait_ready();
    let more = (dropped + 300).min(pool.len());
    for (n, b) in &pool[dropped..more] {
        spool.drop_order(n, b);
    }
    dropped = more;
    let done = spool.archived().len();
    poll_until(Duration::from_secs(30), || {
        spool.archived().len() >= done + 50
    });
    assert_eq!(svc.stop().code(), Some(0));
    counts_and_windows_equal_a_full_scan(&spool);
    svc = spool.start();
    imported_once_in_the_end(&spool, svc, &sshd, &erp, &pool[..dropped], "kill");
}

/// `journal stats`' per-state counts and its hour and day windows (kept counters)
/// against the same figures counted from every entry of `journal list --json`. The
/// service is stopped: the CLI opens the journal itself.
fn counts_and_windows_equal_a_full_scan(spool: &Spool) {
    let stats: serde_json::Value =
        serde_json::from_str(&spool.ok(&["journal", "stats", "--json"])).unwrap();
    let list = spool.ok(&["journal", "list", "--json", "--limit", "1000000000"]);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let (mut delivered, mut failed) = (0, 0);
    for line in list.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        *counts
            .entry(rec["state"].as_str().unwrap().to_string())
            .or_default() += 1;
        // Every transition of this test is minutes old: inside both windows.
        for t in rec["history"].as_array().unwrap() {
            match (t["from"].as_str(), t["to"].as_str().unwrap()) {
                (Some("sent"), "verified") => delivered += 1,
                (_, "failed") => failed += 1,
                _ => {}
            }
        }
    }
    for (state, n) in stats["counts"].as_object().unwrap() {
        assert_eq!(
            n.as_u64().unwrap(),
            counts.get(state).copied().unwrap_or(0),
            "{state}: stats {stats} vs a scan {counts:?}"
        );
    }
    assert!(delivered > 0);
    for (key, want) in [
        ("delivered_last_hour", delivered),
        ("delivered_last_day", delivered),
        ("failed_last_hour", failed),
        ("failed_last_day", failed),
    ] {
        assert_eq!(stats[key].as_u64().unwrap(), want, "{key}: {stats}");
    }
    eprintln!("with the service stopped: {counts:?}, {delivered} deliveries, {failed} failures, as a scan counts them");
}

/// More orders arrive while the faults go on, as on a busy day, so a fast build cannot
/// drain the burst before they are done: 500 more whenever fewer than 200 wait.
/// Returns how many of `pool` are in the outbox now.
fn top_up(spool: &Spool, pool: &[(String, Vec<u8>)], dropped: usize, done: usize) -> usize {
    if done + 200 < dropped || dropped >= pool.len() {
        return dropped;
    }
    let more = (dropped + 500).min(pool.len());
    for (n, b) in &pool[dropped..more] {
        spool.drop_order(n, b);
    }
    more
}

/// The end of a fault-injection run: every order archived, no temp left (while the
/// service runs, so its clean-up can act), a clean stop, each order imported once.
fn imported_once_in_the_end(
    spool: &Spool,
    mut svc: Service,
    sshd: &Sshd,
    erp: &Erp,
    orders: &[(String, Vec<u8>)],
    fault: &str,
) {
    wait_archived(spool, &svc, orders.len(), Duration::from_secs(300));
    wait_no_temps(sshd.inbox());
    assert_eq!(svc.stop().code(), Some(0));
    // The window this design closes: a fault after the rename, before `verified`.
    let late = recovered_after_rename(spool);
    eprintln!(
        "{} imports of {} orders; {late} deliveries resolved from the inbox after a {fault}",
        erp.imports().len(),
        orders.len()
    );
    assert_imported_exactly_once(spool, erp, sshd.inbox(), orders);
}

/// How many entries were verified by recovery rather than by their own rename: found
/// under the final name, or taken by the ERP before the reply.
fn recovered_after_rename(spool: &Spool) -> usize {
    spool
        .entries()
        .iter()
        .filter(|r| {
            r.history.iter().any(|t| {
                matches!(&t.event, Some(Event::Verified { note: Some(n), .. })
                    if n.contains("taken by the ERP") || n.contains("found complete"))
            })
        })
        .count()
}

#[test]
fn connections_cut_at_random_moments_lose_nothing_and_import_nothing_twice() {
    let (files, min_cuts) = if long() { (5000, 300) } else { (1500, 40) };
    let sshd = Sshd::start();
    // A relay between the service and sshd that the test resets: both ends see the
    // connection die, with requests and replies in flight, a rename among them.
    let relay = Relay::start(format!("127.0.0.1:{}", sshd.port()).parse().unwrap());
    let spool = Spool::for_relay(&sshd, relay.port(), "connections = 2");
    let erp = Erp::start(sshd.inbox(), ".json");
    let pool = orders(files * 4);
    let mut dropped = files;
    for (n, b) in &pool[..dropped] {
        spool.drop_order(n, b);
    }
    let mut svc = spool.start();
    svc.wait_ready();
    let mut rng = fastrand::Rng::with_seed(0x5eed_c075);
    let (mut cuts, mut cut_conns) = (0, 0);
    let started = Instant::now();
    while cuts < min_cuts
        && started.elapsed() < Duration::from_secs(if long() { 1800 } else { 240 })
    {
        let done = spool.archived().len();
        dropped = top_up(&spool, &pool, dropped, done);
        if done >= dropped {
            break;
        }
        // Let the service reconnect and deliver a little, then cut at a random
        // instant: most cuts fall among uploads, some between a rename and its reply.
        let target = (done + rng.usize(1..15)).min(dropped);
        poll_until(Duration::from_secs(10), || spool.archived().len() >= target);
        std::thread::sleep(Duration::from_micros(rng.u64(0..20_000)));
        cut_conns += relay.cut_all();
        cuts += 1;
    }
    eprintln!(
        "{cuts} cuts ({cut_conns} connections reset) over {dropped} files in {:?}",
        started.elapsed()
    );
    assert!(
        cuts >= min_cuts,
        "only {cuts} cuts before {dropped} files were done"
    );
    imported_once_in_the_end(&spool, svc, &sshd, &erp, &pool[..dropped], "cut");
}

#[test]
fn while_the_destination_is_down_the_service_idles_and_logs_once_per_backoff_step() {
    let mut sshd = Sshd::start();
    // An importing ERP: "exactly once" means imported once.
    let erp = Erp::start(sshd.inbox(), ".json");
    let spool = Spool::for_sshd(&sshd, "timeout = \"2s\"");
    let mut svc = spool.start();
    svc.wait_ready();
    let pid = svc.pid();
    let orders = orders(60);
    sshd.stop();
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    wait_for_log(&svc, "destination down", Duration::from_secs(10));
    // One WARN line per backoff step (the workers that hit the same step log at debug).
    let outage_lines = |svc: &Service| {
        svc.log_text()
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("destination down"))
            .count()
    };
    let (cpu0, t0, lines0) = (cpu_seconds(pid), Instant::now(), outage_lines(&svc));
    std::thread::sleep(Duration::from_secs(6));
    let cpu = cpu_seconds(pid) - cpu0;
    let lines = outage_lines(&svc) - lines0;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("outage of {secs:.1} s with 60 files waiting: {cpu:.3} CPU s, {lines} log lines");
    // Backoff 100 ms doubling to a 1 s cap, with full jitter (each pause drawn between
    // 100 ms and the cap): 6 to 20 steps in 6 s, usually 12, and never 60 files' worth.
    assert!(cpu < 0.3, "{cpu} CPU seconds while idle");
    assert!(
        (2..=30).contains(&lines),
        "{lines} outage lines in {secs:.1} s"
    );
    // Exactly one line per step: each names the next failure count, none repeated.
    let counts: Vec<u32> = svc
        .log_text()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("destination down"))
        .map(|l| {
            let (_, rest) = l.split_once("failures=").unwrap_or_else(|| panic!("{l}"));
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        counts.windows(2).all(|w| w[1] == w[0] + 1),
        "outage lines do not follow one per step: {counts:?}"
    );
    assert!(spool.archived().is_empty());
    let restarted = Instant::now();
    sshd.restart();
    wait_archived(&spool, &svc, orders.len(), Duration::from_secs(30));
    eprintln!(
        "all 60 delivered {:?} after sshd came back",
        restarted.elapsed()
    );
    assert!(restarted.elapsed() < Duration::from_secs(10));
    wait_no_temps(sshd.inbox());
    svc.stop();
    assert_imported_exactly_once(&spool, &erp, sshd.inbox(), &orders);
}

#[test]
fn a_stalled_connection_times_out_and_delivery_recovers() {
    let sshd = Sshd::start();
    // An importing ERP: "exactly once" means imported once.
    let erp = Erp::start(sshd.inbox(), ".json");
    let spool = Spool::for_sshd(&sshd, "timeout = \"2s\"");
    let mut svc = spool.start();
    svc.wait_ready();
    let orders = orders(40);
    for (n, b) in &orders[..10] {
        spool.drop_order(n, b);
    }
    wait_archived(&spool, &svc, 10, Duration::from_secs(20));
    // The server stops answering without closing anything.
    sshd.pause();
    let paused = Instant::now();
    for (n, b) in &orders[10..] {
        spool.drop_order(n, b);
    }
    wait_for_log(&svc, "destination down", Duration::from_secs(15));
    // One timeout (2 s) to notice, not several: a dead connection is reset, not
    // politely closed with another timeout.
    eprintln!("stall noticed after {:?}", paused.elapsed());
    assert!(
        paused.elapsed() < Duration::from_millis(3500),
        "stall noticed after {:?}",
        paused.elapsed()
    );
    // The operator's view still answers while the workers are stuck in timeouts.
    let t = Instant::now();
    let stats = spool.ok(&["journal", "stats", "--json"]);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "stats took {:?}",
        t.elapsed()
    );
    assert!(stats.contains("\"up\":false"), "{stats}");
    sshd.resume();
    wait_archived(&spool, &svc, orders.len(), Duration::from_secs(60));
    // And a stop during a stall is not held up by it for long.
    sshd.pause();
    spool.drop_order("order-during-stall.json", &order(99, 1000));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert_eq!(svc.stop().code(), Some(0));
    eprintln!("stop during a stall took {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(10));
    sshd.resume();
    let mut all = orders.clone();
    let (st, _, _) = spool.sync();
    assert!(st.success());
    all.push(("order-during-stall.json".into(), order(99, 1000)));
    assert_imported_exactly_once(&spool, &erp, sshd.inbox(), &all);
}

#[test]
fn a_file_replaced_under_the_same_name_before_sending_is_sent_with_its_new_content() {
    let mut sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    sshd.stop();
    let old = order(1, 2000);
    spool.drop_order("order-1.json", &old);
    wait_for_log(&svc, "detected", Duration::from_secs(10));
    // Replaced atomically, as a careful writer does: write elsewhere, rename in.
    let new = order(2, 3000);
    let tmp = spool.dir.path().join("order-1.json.new");
    fs::write(&tmp, &new).unwrap();
    fs::rename(&tmp, spool.outbox().join("order-1.json")).unwrap();
    sshd.restart();
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    svc.stop();
    assert_delivered_exactly_once(&spool, sshd.inbox(), &[("order-1.json".into(), new)]);
    let rec = &spool.entries()[0];
    assert!(
        rec.history
            .iter()
            .any(|t| matches!(t.event, Some(Event::Rehash { .. }))),
        "{rec:#?}"
    );
}

#[test]
fn the_outbox_deleted_and_recreated_is_watched_again() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    // No sweep to fall back on within the test: only the watch can be this fast.
    spool.set_config("sweep_interval = \"1s\"", "sweep_interval = \"1h\"");
    let mut svc = spool.start();
    svc.wait_ready();
    fs::remove_dir(spool.outbox()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    fs::create_dir(spool.outbox()).unwrap();
    wait_for_log(&svc, "watching the outbox again", Duration::from_secs(10));
    let body = order(5, 1500);
    spool.drop_order("order-5.json", &body);
    wait_archived(&spool, &svc, 1, Duration::from_secs(5));
    svc.stop();
    assert_delivered_exactly_once(&spool, sshd.inbox(), &[("order-5.json".into(), body)]);
    assert_eq!(spool.entries()[0].found_by, "watch");
}

#[test]
fn a_very_large_file_is_streamed_with_flat_memory() {
    let mib: usize = if long() { 600 } else { 200 };
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "timeout = \"30s\"");
    spool.set_config(
        "settle = \"300ms\"",
        "settle = \"300ms\"\nmax_size = \"1GiB\"",
    );
    let mut svc = spool.start();
    svc.wait_ready();
    let pid = svc.pid();
    let base = peak_rss_kib(pid);
    // Written to a side file and renamed in, so the service sees it whole.
    let side = spool.dir.path().join("big.tmp");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(fs::File::create(&side).unwrap());
        f.write_all(b"{\"order_id\": \"2026-big\", \"lines\": [")
            .unwrap();
        let line = b"{\"sku\": \"LF-000001-001\", \"description\": \"Pendant light, brushed brass, E27\", \"qty\": 1},";
        let mut written = 0;
        while written < mib << 20 {
            f.write_all(line).unwrap();
            written += line.len();
        }
        f.write_all(b"{}]}").unwrap();
    }
    let size = fs::metadata(&side).unwrap().len();
    let crc = crc32fast::hash(&fs::read(&side).unwrap());
    fs::rename(&side, spool.outbox().join("order-big.json")).unwrap();
    let t = Instant::now();
    wait_archived(&spool, &svc, 1, Duration::from_secs(600));
    let peak = peak_rss_kib(pid);
    eprintln!(
        "{mib} MiB delivered in {:?}; peak RSS {} KiB (at start {} KiB)",
        t.elapsed(),
        peak,
        base
    );
    svc.stop();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB for a {mib} MiB file");
    let got = fs::read(sshd.inbox().join("order-big.json")).unwrap();
    assert_eq!((got.len() as u64, crc32fast::hash(&got)), (size, crc));
    assert_eq!(spool.entries()[0].state(), State::Archived);
}

#[test]
fn a_window_of_large_files_in_flight_keeps_memory_flat() {
    // Issue 12: a whole window of large orders in flight on one connection, 64 MiB
    // in all (the long run: 8 MiB each, 512 MiB), more than the memory bound: only
    // the windows (a few MiB) may be held. The bench measures 8 MiB files in release.
    const FILES: usize = 64;
    let size: usize = if long() { 8 << 20 } else { 1 << 20 };
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "connections = 1\nwindow = 64\ntimeout = \"30s\"");
    let mut sums = Vec::new();
    for i in 0..FILES {
        let body = order(i, size);
        sums.push((
            format!("order-big-{i:02}.json"),
            body.len() as u64,
            crc32fast::hash(&body),
        ));
        spool.drop_order(&sums[i].0, &body);
    }
    let mut svc = spool.start();
    svc.wait_ready();
    let pid = svc.pid();
    let archived = poll_until(Duration::from_secs(300), || {
        count_files_under(&spool.archive()) >= FILES
    });
    let peak = peak_rss_kib(pid);
    let log = svc.log_text();
    svc.stop();
    assert!(archived, "not all archived: {}", tail(&log, 30));
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB with {FILES} files of {size} bytes in flight"
    );
    for (name, size, crc) in &sums {
        let got = fs::read(sshd.inbox().join(name)).unwrap();
        assert_eq!(
            (got.len() as u64, crc32fast::hash(&got)),
            (*size, *crc),
            "{name}"
        );
    }
    assert!(spool.entries().iter().all(|r| r.state() == State::Archived));
}

#[test]
#[ignore = "needs root: lowers fs.inotify.max_queued_events; tests/ci.sh runs it"]
fn a_burst_that_overflows_the_inotify_queue_is_swept_up() {
    plutus_testkit::require_root("lowers fs.inotify.max_queued_events");
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    spool.set_config("sweep_interval = \"1s\"", "sweep_interval = \"1h\"");
    let knob = "/proc/sys/fs/inotify/max_queued_events";
    // The knob is machine-wide: another test run on the same machine (two suites side
    // by side) must not read our lowered value as the one to restore, nor restore its
    // own while our service starts. One holder at a time.
    let lock =
        fs::File::create(std::env::temp_dir().join("plutus-sync-inotify-knob.lock")).unwrap();
    // SAFETY: a valid open file descriptor; flock has no other preconditions.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    let saved = fs::read_to_string(knob).unwrap();
    // The limit is taken when an inotify instance is created: lower it for our start only.
    fs::write(knob, "32").unwrap();
    let mut svc = spool.start();
    svc.wait_ready();
    fs::write(knob, saved.trim()).unwrap();
    drop(lock);
    let orders = orders(1500);
    // Stopped while the burst lands, so the kernel's queue of 32 events overflows for
    // certain: on an idle machine the watcher could otherwise keep up (it did once,
    // and the test proved nothing).
    let pid = svc.pid() as i32;
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    wait_archived(&spool, &svc, orders.len(), Duration::from_secs(120));
    svc.stop();
    assert!(
        svc.log_text().contains("inotify queue overflowed"),
        "no overflow happened: the test proves nothing"
    );
    assert_delivered_exactly_once(&spool, sshd.inbox(), &orders);
}

#[test]
fn a_journal_that_cannot_be_opened_stops_the_service_before_it_touches_a_file() {
    let sshd = Sshd::start();
    // Not a folder: sled cannot open it.
    let spool = Spool::for_sshd(&sshd, "");
    fs::write(spool.journal_path(), b"not a journal").unwrap();
    spool.drop_order("order-1.json", &order(1, 1000));
    run_is_refused(&spool, &sshd, &cannot_open_journal(&spool));

    // A journal written by another schema version is refused the same way.
    fs::remove_file(spool.journal_path()).unwrap();
    {
        let db = sled::open(spool.journal_path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", "0")
            .unwrap();
        db.flush().unwrap();
    }
    run_is_refused(
        &spool,
        &sshd,
        "journal schema version 0 is not the one this build reads (1)",
    );
}

/// `plutus-sync run` with `order-1.json` in the outbox exits 2 saying `why`, before
/// it touches a file: the order still in the outbox, nothing in the inbox. Its stderr.
fn run_is_refused(spool: &Spool, sshd: &Sshd, why: &str) -> String {
    let (st, _, err) = spool.cmd(&["run"]);
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains(why), "{why:?} not in:\n{err}");
    assert_eq!(names_in(&spool.outbox()), vec!["order-1.json".to_string()]);
    assert!(names_in(sshd.inbox()).is_empty());
    err
}

fn cannot_open_journal(spool: &Spool) -> String {
    format!("{}: cannot open journal", spool.journal_path().display())
}

#[test]
fn an_unusable_archive_folder_is_refused_at_start() {
    let spool = Spool::with_destination("url = \"file:///tmp\"\n");
    fs::remove_dir(spool.archive()).unwrap();
    fs::write(
        spool.archive(),
        b"a file where the archive folder should be",
    )
    .unwrap();
    let (st, _, err) = spool.cmd(&["run"]);
    assert_eq!(st.code(), Some(2));
    assert!(
        err.contains(&format!(
            "{}: cannot create the archive",
            spool.archive().display()
        )),
        "{err}"
    );
}

/// A mount over `path` for the length of a test (root only; CI runs as root).
struct Mount(std::path::PathBuf);

impl Mount {
    fn run(args: &[&str]) {
        let out = std::process::Command::new("mount")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn tmpfs(path: &std::path::Path, size: &str) -> Mount {
        Mount::require_root();
        Mount::run(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            path.to_str().unwrap(),
        ]);
        Mount(path.to_path_buf())
    }

    fn read_only(path: &std::path::Path) -> Mount {
        Mount::require_root();
        let p = path.to_str().unwrap();
        Mount::run(&["--bind", p, p]);
        Mount::run(&["-o", "remount,bind,ro", p]);
        Mount(path.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        Mount::run(&["-o", &format!("remount,{opts}"), self.0.to_str().unwrap()]);
    }

    fn require_root() {
        plutus_testkit::require_root("mounts file systems");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
#[ignore = "needs root: mounts a small tmpfs; tests/ci.sh runs it"]
fn a_full_inbox_pauses_delivery_and_it_resumes_when_space_returns() {
    let sshd = Sshd::start();
    let inbox = Mount::tmpfs(sshd.inbox(), "256k");
    let spool = Spool::for_sshd(&sshd, "timeout = \"5s\"");
    let mut svc = spool.start();
    svc.wait_ready();
    let orders: Vec<(String, Vec<u8>)> = (0..6)
        .map(|n| (format!("order-{n}.json"), order(n, 100_000)))
        .collect();
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    wait_for_log(&svc, "destination down", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let stuck = spool.entries_while_running(&svc);
    assert!(
        stuck.iter().all(|r| r.state() != State::Failed),
        "a full disk failed a file: {stuck:#?}"
    );
    // Nothing half-written under a final name, ever.
    for n in names_in(sshd.inbox())
        .iter()
        .filter(|n| !n.ends_with(".part"))
    {
        let want = &orders.iter().find(|(o, _)| o == n).unwrap().1;
        assert_eq!(&fs::read(sshd.inbox().join(n)).unwrap(), want, "{n}");
    }
    inbox.remount("size=10m");
    all_delivered_with_no_attempt_burned(&spool, svc, sshd.inbox(), &orders);
}

/// The end of a destination fault that pauses delivery: once it is mended, every
/// order arrives, and the pause cost no file an attempt.
fn all_delivered_with_no_attempt_burned(
    spool: &Spool,
    mut svc: Service,
    inbox: &std::path::Path,
    orders: &[(String, Vec<u8>)],
) {
    wait_archived(spool, &svc, orders.len(), Duration::from_secs(30));
    // A temp the fault left half-written (on a full disk its REMOVE may fail too) is
    // the periodic clean-up's: waited for, not assumed gone at the last delivery.
    wait_no_temps(inbox);
    svc.stop();
    assert_delivered_exactly_once(spool, inbox, orders);
    assert!(
        spool.entries().iter().all(|r| r.attempts == 0),
        "no attempt was burned"
    );
}

#[test]
#[ignore = "needs root: a read-only bind mount; tests/ci.sh runs it"]
fn a_read_only_inbox_pauses_delivery_without_failing_files() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "timeout = \"5s\"");
    let mut svc = spool.start();
    svc.wait_ready();
    // One delivery first, so the connections are made and the server probed while
    // the inbox is writable: the refusals then come to a batch's uploads, each a
    // file-scope "create" error on its own, and none of them may pay an attempt
    // (found in review: only the first file of a batch was probed).
    let orders = orders(21);
    spool.drop_order(&orders[0].0, &orders[0].1);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    let ro = Mount::read_only(sshd.inbox());
    for (n, b) in &orders[1..] {
        spool.drop_order(n, b);
    }
    wait_for_log(&svc, "destination down", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(spool.archived().len(), 1);
    drop(ro);
    all_delivered_with_no_attempt_burned(&spool, svc, sshd.inbox(), &orders);
}

#[test]
#[ignore = "needs root: a read-only bind mount; tests/ci.sh runs it"]
fn a_batch_the_inbox_refuses_waits_for_the_destination_and_burns_no_attempt() {
    // The pipeline driven as a library, so the 20 files are one batch for certain:
    // the connection is made and the server probed while the inbox is writable,
    // then every create of the batch is refused (a file-scope error each). Found in
    // review: only the first file was put to the probe, and the others each paid an
    // attempt for the inbox's trouble.
    use plutus_sync::pipeline::{process_batch, Slot, Step};
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "timeout = \"5s\"");
    let ctx = crate::recovery::ctx(&spool);
    let orders = orders(20);
    let ids: Vec<u64> = orders
        .iter()
        .map(|(n, b)| crate::recovery::pending(&ctx, &spool, n, b))
        .collect();
    let mut slot = Slot::default();
    slot.connect(&ctx).unwrap();
    let ro = Mount::read_only(sshd.inbox());
    let steps = process_batch(&ctx, &mut slot, &ids).unwrap();
    assert_eq!(steps.len(), ids.len(), "one step per entry");
    for (id, step) in &steps {
        assert!(matches!(step, Step::DestinationDown(_)), "#{id}: {step:?}");
    }
    for &id in &ids {
        let r = ctx.journal.get(id).unwrap().unwrap();
        assert_eq!((r.state(), r.attempts), (State::Pending, 0), "{r:?}");
    }
    drop(ro);
    // Writable again: the same batch on a fresh connection delivers every file.
    let steps = process_batch(&ctx, &mut Slot::default(), &ids).unwrap();
    for (id, step) in &steps {
        assert!(matches!(step, Step::Verified(_)), "#{id}: {step:?}");
    }
    let got = names_in(sshd.inbox()).len();
    assert_eq!(
        got,
        ids.len(),
        "every file under its final name, no temp left"
    );
}

#[test]
#[ignore = "needs root: mounts a small tmpfs; tests/ci.sh runs it"]
fn a_full_journal_disk_stops_the_service_and_never_costs_an_order() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    fs::create_dir_all(spool.journal_path()).unwrap();
    let disk = Mount::tmpfs(
        spool
            .journal_path()
            .parent()
            .unwrap()
            .join("journal")
            .as_path(),
        "1m",
    );
    let orders = orders(3000);
    let mut svc = spool.start();
    svc.wait_ready();
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    let stopped = poll_until(Duration::from_secs(120), || !svc.is_running());
    let log = svc.log_text();
    assert!(
        stopped,
        "the service kept running on a full journal disk: {}",
        tail(&log, 20)
    );
    eprintln!(
        "stopped on a full journal disk after {} archived:\n{}",
        spool.archived().len(),
        tail(&log, 4)
    );
    assert!(
        log.contains(&format!(
            "error: {}: journal write failed",
            spool.journal_path().display()
        )) && log.contains("No space left"),
        "{}",
        tail(&log, 20)
    );
    // Whatever left the outbox is in the archive and verified in the inbox.
    for (n, b) in &orders {
        if !spool.outbox().join(n).exists() {
            assert_eq!(
                &fs::read(sshd.inbox().join(n)).unwrap(),
                b,
                "{n} left the outbox unverified"
            );
        }
    }
    disk.remount("size=64m");
    let mut svc = spool.start();
    svc.wait_ready();
    wait_archived(&spool, &svc, orders.len(), Duration::from_secs(120));
    svc.stop();
    assert_delivered_exactly_once(&spool, sshd.inbox(), &orders);
}

#[test]
#[ignore = "needs root: a read-only bind mount; tests/ci.sh runs it"]
fn a_journal_folder_that_is_not_writable_is_refused_at_start() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    fs::create_dir_all(spool.journal_path()).unwrap();
    // Root ignores permission bits; a read-only mount stops root too.
    let _ro = Mount::read_only(&spool.journal_path());
    spool.drop_order("order-1.json", &order(1, 1000));
    let err = run_is_refused(&spool, &sshd, &cannot_open_journal(&spool));
    assert!(err.contains("Read-only file system"), "{err}");
}

/// `packaging/lab/lab.sh` for one test: the web shop and the ERP in two network
/// namespaces joined by a veth pair; taken down on drop.
struct Lab {
    dir: std::path::PathBuf,
}

impl Lab {
    fn up(dir: std::path::PathBuf) -> Lab {
        plutus_testkit::require_root("builds network namespaces");
        let lab = Lab { dir };
        lab.run("up");
        lab
    }

    fn run(&self, what: &str) {
        let out = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/lab/lab.sh"))
            .arg(what)
            .env("LAB_DIR", &self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab.sh {what}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.run("down");
    }
}

#[test]
#[ignore = "needs root: network namespaces and nftables; tests/ci.sh runs it"]
fn a_blackholed_link_times_out_without_a_hang_and_delivery_resumes_when_it_heals() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::up(tmp.path().join("lab"));
    let (outbox, archive, inbox) = (
        lab.dir.join("web/outbox"),
        lab.dir.join("web/archive"),
        lab.dir.join("erp/inbox"),
    );
    let config = lab.dir.join("config.toml");
    let mut svc = Service::start_in_netns("plutus-web", &config, tmp.path());
    svc.wait_ready();
    let orders = orders(30);
    let archived =
        |n: usize| poll_until(Duration::from_secs(60), || files_under(&archive).len() >= n);
    for (n, b) in &orders[..10] {
        fs::write(outbox.join(n), b).unwrap();
    }
    assert!(archived(10), "{}", svc.log_text());

    // Every packet on the link is dropped: no RST, no ICMP, the peer just goes silent.
    lab.run("blackhole");
    let cut = Instant::now();
    for (n, b) in &orders[10..] {
        fs::write(outbox.join(n), b).unwrap();
    }
    wait_for_log(&svc, "destination down", Duration::from_secs(30));
    // The lab's `timeout` is 5 s: one timeout to notice, not a hang.
    eprintln!("blackhole noticed after {:?}", cut.elapsed());
    assert!(
        cut.elapsed() < Duration::from_secs(12),
        "{:?}",
        cut.elapsed()
    );
    assert_eq!(files_under(&inbox).len(), 10, "nothing crosses a dead link");
    // The service still answers its operator meanwhile.
    let stats = std::process::Command::new(bin())
        .args(["journal", "stats", "--json", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(stats.status.success());
    assert!(String::from_utf8_lossy(&stats.stdout).contains("\"up\":false"));

    lab.run("heal");
    let healed = Instant::now();
    assert!(archived(orders.len()), "{}", svc.log_text());
    eprintln!("all delivered {:?} after the link healed", healed.elapsed());
    assert_eq!(svc.stop().code(), Some(0));
    let mut want = orders.clone();
    want.sort();
    assert_eq!(
        files_under(&inbox),
        want,
        "inbox: each order once, byte-identical"
    );
    assert_eq!(files_under(&archive), want);
    assert!(names_in(&outbox).is_empty());
}

/// Issue 17: with a one-second retention and housekeeping every second, waves of
/// orders come and go; the running service compacts the journal whenever it has
/// doubled (each wave writes about 1.8 MB to sled's log), while delivering goes on, so
/// its size peaks no higher in the last waves than in the first ones. (At this small
/// scale sled reuses some freed space itself; `benches/journal_scale.rs` shows the
/// scale where it does not: 10,000 kept, 10,000 a round.)
#[test]
fn under_churn_the_running_service_compacts_its_journal_so_its_size_stays_flat() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    spool.set_config(
        "[journal]\npath = \"journal\"",
        "[journal]\npath = \"journal\"\nretention = \"1s\"\nhousekeeping_interval = \"1s\"\ncompact_after_growth = \"256KiB\"",
    );
    let mut svc = spool.start();
    svc.wait_ready();
    let (waves, per_wave) = (8, 250);
    // The largest size seen while each wave came and went (sampled at every poll).
    let mut peaks = vec![0u64; waves];
    for (w, peak) in peaks.iter_mut().enumerate() {
        for i in w * per_wave..(w + 1) * per_wave {
            spool.drop_order(&format!("order-2026-{i:06}.json"), &order(i, 1500));
        }
        let mut sample = || {
            let size = plutus_testkit::files::disk_usage(&spool.journal_path());
            *peak = (*peak).max(size);
        };
        wait_until(Duration::from_secs(60), "the wave archived", || {
            sample();
            count_files_under(&spool.archive()) == (w + 1) * per_wave
        });
        // Pruned (retention 1 s, every second): the journal holds nothing of the wave.
        wait_until(Duration::from_secs(30), "the wave pruned", || {
            sample();
            spool.entries_while_running(&svc).is_empty()
        });
    }
    let log = svc.log_text();
    let compactions = log.matches("compacted the journal").count();
    eprintln!("journal's peak bytes in each wave: {peaks:?}; {compactions} compactions");
    assert!(
        compactions >= waves / 2,
        "the journal was compacted {compactions} times: {peaks:?}"
    );
    // The window keys of the last two days are live data: they grow by about 80 KB a
    // wave here. Pruning alone would add over 4 MB in four waves.
    let first = *peaks[..waves / 2].iter().max().unwrap();
    let last = *peaks[waves / 2..].iter().max().unwrap();
    assert!(
        last <= first + (2 << 20),
        "the journal grew: peaks {peaks:?} ({first} bytes in the first half, {last} in the second)"
    );
    assert_eq!(svc.stop().code(), Some(0));
    // Nothing lost, nothing twice; the compacted journal opens clean.
    assert_eq!(spool.archived().len(), waves * per_wave);
    assert_eq!(
        fs::read_dir(sshd.inbox()).unwrap().count(),
        waves * per_wave
    );
    let j = spool.journal();
    assert_eq!(j.recovered(), 0);
    assert_eq!(j.counts_by_scan().unwrap(), j.counts().unwrap());
}
