//! The burst: files already in the outbox when plutus-sync starts, drained with 2, 4
//! or 8 connections, then checked.

use crate::logstats::LogStats;
use crate::report::Burst;
use crate::results::ms;
use crate::util::{fail, fill, journal_count, kib_mib, stop_clean, verify_archive, verify_dir};
use crate::wan::Link;
use plutus_state::State;
use plutus_testkit::files::count_in;
use plutus_testkit::process::secs;
use plutus_testkit::procfs::{cpu_seconds, status_number, Psi};
use plutus_testkit::service::Service;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use serde_json::json;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::Duration;

/// A burst not drained in this long fails the bench.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);

/// A burst of `orders` through `link` with `conns` connections; `window`: the
/// `[destination] window` (the default when `None`).
pub fn burst_plutus(
    sshd: &Sshd,
    link: &Link,
    orders: &[(String, Vec<u8>)],
    conns: usize,
    window: Option<usize>,
    results: &Path,
    sfx: &str,
) -> Burst {
    let w = window.map_or(String::new(), |w| format!(", window={w}"));
    let name = format!("plutus-sync, connections={conns}{w}{}", link.label());
    println!("\n{name}: burst of {} files", orders.len());
    let slug = format!(
        "c{conns}{}{}",
        window.map_or(String::new(), |w| format!("-w{w}")),
        link.slug()
    );
    let remote = sshd.inbox().join(format!("burst-plutus-{slug}"));
    let extra = window.map_or(String::new(), |w| format!("window = {w}"));
    let sp = Spool::as_installed_via(sshd, &remote, conns, link.port, &extra);
    let outbox = sp.outbox();
    fill(&outbox, orders, true);
    let server = ServerCpu::new(sshd);
    let psi = Psi::start("cpu", "some");

    let mut p = Service::start_as_installed(&sp.config, &sp.dir.path().join("service.log"));
    let (t0, _) = p.spawned();
    let pid = p.pid();
    let mut ready = None;
    let mut first_gone = None;
    loop {
        if ready.is_none() && p.log_text().contains("ready:") {
            ready = Some(t0.elapsed());
        }
        let left = count_in(&outbox);
        if left < orders.len() && first_gone.is_none() {
            first_gone = Some(t0.elapsed());
        }
        if left == 0 {
            break;
        }
        if let Some(st) = p.exited() {
            fail(
                &p,
                &format!("plutus-sync exited ({st}) during the burst; {left} files left"),
            );
        }
        if t0.elapsed() > DRAIN_TIMEOUT {
            fail(
                &p,
                &format!("burst not drained in {DRAIN_TIMEOUT:?}: {left} files left"),
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let wall = t0.elapsed();
    let cpu = cpu_seconds(pid).unwrap_or(f64::NAN);
    let (rss, hwm) = (status_number(pid, "VmRSS:"), status_number(pid, "VmHWM:"));
    let threads = status_number(pid, "Threads:");
    let server_cpu = server.delta();
    let pressure = psi.share();
    let ru = stop_clean(&mut p);
    let log = p.log_text();
    fs::copy(
        &p.log,
        results.join(format!("e2e{sfx}-burst-{slug}.service.log")),
    )
    .unwrap();

    // Correctness, outside the timing.
    if let Err(e) = verify_dir(&remote, orders) {
        fail(&p, &format!("inbox after the burst: {e}"));
    }
    if let Err(e) = verify_archive(&sp.archive(), orders) {
        fail(&p, &format!("archive after the burst: {e}"));
    }
    let archived = journal_count(&sp, State::Archived);
    if archived != orders.len() as u64 {
        fail(
            &p,
            &format!(
                "journal holds {archived} archived entries, not {}",
                orders.len()
            ),
        );
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
        "  client CPU {cpu:.2} s at the drain ({:.2} s to exit), RSS {} MiB, peak {} MiB, {} threads; server CPU {server_cpu:.2} s",
        secs(ru.ru_utime) + secs(ru.ru_stime),
        kib_mib(rss),
        kib_mib(hwm),
        threads.map_or("?".into(), |t| t.to_string()),
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
            "window": window,
            "bytes": orders.iter().map(|(_, b)| b.len() as u64).sum::<u64>(),
            "rtt_ms": link.rtt_ms,
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

/// CPU used by sshd and every process below it (the per-connection children and
/// their sftp servers) since `new`: the server's side of a run.
pub struct ServerCpu<'a> {
    sshd: &'a Sshd,
    before: f64,
}

impl ServerCpu<'_> {
    pub fn new(sshd: &Sshd) -> ServerCpu<'_> {
        ServerCpu {
            sshd,
            before: sshd.cpu_seconds(),
        }
    }

    pub fn delta(&self) -> f64 {
        self.sshd.cpu_seconds() - self.before
    }
}
