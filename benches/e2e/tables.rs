//! The tables printed at the end of a run.

use crate::report::Report;
use crate::results::Summary;

impl Report {
    pub fn print_tables(&self) {
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
                    format!("{:.3}", b.server_ms_per_file()),
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
        for b in &self.big {
            let mb: f64 = b.detail["bytes"].as_f64().unwrap_or(f64::NAN) / 1e6;
            println!(
                "BIG: {}: {:.2} s, {:.1} files/s, {:.0} MB/s, peak RSS {} MiB, client CPU {:.2} s",
                b.name,
                b.wall_s,
                b.rate(),
                mb / b.wall_s,
                b.client_rss_kib
                    .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                b.client_cpu_s
            );
            println!();
        }
        if !self.wan.is_empty() {
            println!(
                "WAN: the same burst through a TCP relay adding RTT/2 each way (RTT 0 = the relay alone)"
            );
            println!("  ratio = plutus-sync as installed (connections=2, window 64) at that RTT / this row");
            println!(
                "  {:<62} {:>6} {:>8} {:>9} {:>8} {:>8} {:>7}",
                "scenario", "files", "wall s", "files/s", "ms/file", "RSS MiB", "ratio"
            );
            for b in &self.wan {
                let ratio = match self.wan_default(b.rtt_ms()) {
                    Some(p) if !std::ptr::eq(p, b) => format!("{:.2}x", p.rate() / b.rate()),
                    _ => "-".into(),
                };
                println!(
                    "  {:<62} {:>6} {:>8.2} {:>9.1} {:>8.3} {:>8} {:>7}",
                    b.name,
                    if b.of > b.files {
                        format!("{}*", b.files)
                    } else {
                        b.files.to_string()
                    },
                    b.wall_s,
                    b.rate(),
                    b.cpu_ms_per_file(),
                    b.client_rss_kib
                        .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                    ratio
                );
            }
            println!("  * a sample of the burst (files/s from the sample)");
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
            println!("TARGETS (issues 6 and 12)");
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
}

pub fn pct(p: Option<f64>) -> String {
    p.map_or("-".into(), |p| format!("{p:.0}"))
}
