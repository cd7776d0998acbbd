//! plutus-sync's latency runs: a trickle (the measurement, `common/trickle.rs`) into a
//! running service, then the delivery checks; and a trickle's row in the report.

use crate::report::Latency;
use crate::results::Summary;
use crate::trickle::{trickle, Trickle};
use crate::util::{fail, journal_count, stop_clean, verify_dir};
use crate::DEFAULT_CONNECTIONS;
use plutus_state::State;
use plutus_testkit::files::count_files_under;
use plutus_testkit::orders;
use plutus_testkit::poll_until;
use plutus_testkit::procfs::cpu_seconds;
use plutus_testkit::service::Service;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use std::path::Path;
use std::time::Duration;

pub fn latency_plutus(sshd: &Sshd, n: usize, rate: f64, results: &Path, sfx: &str) -> Latency {
    let slug = format!("{}per-s", rate as u64);
    let remote = sshd.inbox().join(format!("latency-plutus-{slug}"));
    let sp = Spool::as_installed(sshd, &remote, DEFAULT_CONNECTIONS);
    let name = format!("plutus-sync {rate}/s x {}s", n as f64 / rate);
    let log = results.join(format!("e2e{sfx}-latency-{slug}.service.log"));
    trickle_plutus(&sp, &remote, n, rate, name, &log, 0)
}

/// The trickle against a running plutus-sync on `sp` (whose journal may already hold
/// `prefilled` entries), then the delivery checks.
pub fn trickle_plutus(
    sp: &Spool,
    remote: &Path,
    n: usize,
    rate: f64,
    name: String,
    log: &Path,
    prefilled: u64,
) -> Latency {
    println!("\n{name}");
    let orders = orders::seeded(n + 1, 0x91 + n as u64);
    let mut p = Service::start_as_installed(&sp.config, log);
    p.wait_ready_within(Duration::from_secs(60));
    let cpu_s = |p: &Service| cpu_seconds(p.pid()).unwrap_or(f64::NAN);
    let cpu0 = cpu_s(&p);
    let out = match trickle(&sp.outbox(), remote, &orders, rate) {
        Ok(o) => o,
        Err(e) => fail(&p, &e),
    };
    let cpu = cpu_s(&p) - cpu0;
    let archived = poll_until(Duration::from_secs(60), || {
        count_files_under(&sp.archive()) >= orders.len()
    });
    if !archived {
        fail(&p, "trickle files not all archived within 60 s");
    }
    stop_clean(&mut p);
    if let Err(e) = verify_dir(remote, &orders) {
        fail(&p, &format!("inbox after the trickle: {e}"));
    }
    let archived = journal_count(sp, State::Archived);
    if archived != prefilled + orders.len() as u64 {
        fail(
            &p,
            &format!(
                "journal holds {archived} archived entries, not {}",
                prefilled + orders.len() as u64
            ),
        );
    }
    out.report(
        name,
        true,
        rate,
        cpu,
        "read back, CRC32-checked and journaled before the rename",
    )
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
            rtt_ms: None,
        };
        print_latency(&l);
        l
    }
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
