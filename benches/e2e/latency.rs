//! plutus-sync's latency runs: a trickle into a running service, then the delivery
//! checks.

use crate::plutus::{Plutus, Spool};
use crate::report::Latency;
use crate::trickle::trickle;
use crate::util::{count_files_under, journal_count, make_orders, verify_dir};
use crate::DEFAULT_CONNECTIONS;
use plutus_state::State;
use plutus_testkit::sshd::Sshd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

pub fn latency_plutus(sshd: &Sshd, n: usize, rate: f64, results: &Path, sfx: &str) -> Latency {
    let slug = format!("{}per-s", rate as u64);
    let remote = sshd.inbox().join(format!("latency-plutus-{slug}"));
    let sp = Spool::new(sshd, &remote, DEFAULT_CONNECTIONS);
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
