//! Scale: start-up and memory with 0, 100,000 and 1,000,000 archived entries in the
//! journal, then the trickle with the largest.

use crate::latency::trickle_plutus;
use crate::logstats::log_time;
use crate::report::{Report, ScaleRow};
use crate::results::ms;
use crate::util::{fail, kib_mib, stop_clean};
use crate::DEFAULT_CONNECTIONS;
use plutus_state::{Event, Journal, JournalOptions, NewEntry};
use plutus_testkit::files::disk_usage;
use plutus_testkit::procfs::status_number;
use plutus_testkit::service::Service;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Time allowed for building the scale journals.
const BUILD_BUDGET: Duration = Duration::from_secs(300);

pub fn scale(sshd: &Sshd, sizes: &[usize], results: &Path, sfx: &str, report: &mut Report) {
    println!("\nscale: start-up and memory with a large journal");
    let remote = sshd.inbox().join("scale");
    let sp = Spool::as_installed(sshd, &remote, DEFAULT_CONNECTIONS);
    let journal = sp.journal_path();
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
pub fn build_journal(path: &Path, from: usize, to: usize, deadline: Instant) -> usize {
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

pub fn add_archived(j: &Journal, i: usize) {
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

pub fn startup(sp: &Spool, entries: usize, build: Duration, results: &Path, sfx: &str) -> ScaleRow {
    let log = results.join(format!("e2e{sfx}-scale-{entries}.service.log"));
    let mut p = Service::start_as_installed(&sp.config, &log);
    let (t0, spawned_wall) = p.spawned();
    let ready = wait_ready_line(&mut p, Duration::from_secs(600));
    let startup_ms = ms(ready - t0);
    let pid = p.pid();
    let rss_ready = status_number(pid, "VmRSS:");
    // The measurement's window, not a wait for anything.
    thread::sleep(Duration::from_secs(3));
    let rss_settled = status_number(pid, "VmRSS:");
    let hwm = status_number(pid, "VmHWM:");
    stop_clean(&mut p);
    let t = Instant::now();
    let j = Journal::open(&sp.journal_path(), &JournalOptions::default()).unwrap();
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
    let spawned = spawned_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() % 86_400.0)
        .ok();
    let spawn_to_starting_ms = match (spawned, at(" starting ")) {
        (Some(a), Some(b)) => Some((b - a) * 1000.0),
        _ => None,
    };
    let disk_mib = disk_usage(&sp.journal_path()) as f64 / (1 << 20) as f64;
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

/// When the `ready:` line appeared in the log, polled every millisecond: start-up is
/// measured to that line, as in the figures so far (READY=1 follows it at once).
fn wait_ready_line(p: &mut Service, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if p.log_text().contains("ready:") {
            return Instant::now();
        }
        if let Some(st) = p.exited() {
            fail(
                p,
                &format!("plutus-sync exited ({st}) before logging \"ready:\""),
            );
        }
        if Instant::now() > deadline {
            fail(p, &format!("no \"ready:\" in the log within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(1));
    }
}
