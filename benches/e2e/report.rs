//! The run's figures as recorded (bursts, latency series, scale rows), the issue-6
//! targets checked against them, and e2e.json.

use crate::machine::Machine;
use crate::results::Summary;
use serde_json::{json, Value};

#[derive(Default)]
pub struct Report {
    pub burst: Vec<Burst>,
    /// Bursts through the delaying relay (`wan`), `detail.rtt_ms` saying which RTT.
    pub wan: Vec<Burst>,
    /// The `big` part: 8 MiB orders, a window of them in flight.
    pub big: Vec<Burst>,
    pub latency: Vec<Latency>,
    pub scale: Vec<ScaleRow>,
    pub notes: Vec<String>,
}

pub struct Burst {
    pub name: String,
    pub plutus: bool,
    /// What the tool guarantees about the inbox.
    pub protocol: &'static str,
    /// Files moved in the measured run (a sample for `scp` per file).
    pub files: usize,
    /// Files the figure stands for (10,000; more than `files` when extrapolated).
    pub of: usize,
    pub wall_s: f64,
    pub client_cpu_s: f64,
    pub client_rss_kib: Option<u64>,
    pub server_cpu_s: f64,
    /// Share of the run's wall time with some task waiting for a CPU (Linux PSI).
    pub cpu_pressure_pct: Option<f64>,
    pub detail: Value,
}

impl Burst {
    /// The relay's round trip this burst ran through, if any.
    pub fn rtt_ms(&self) -> Option<u64> {
        self.detail.get("rtt_ms").and_then(Value::as_u64)
    }
    pub fn rate(&self) -> f64 {
        self.files as f64 / self.wall_s
    }
    pub fn cpu_ms_per_file(&self) -> f64 {
        self.client_cpu_s * 1000.0 / self.files as f64
    }
    pub fn server_ms_per_file(&self) -> f64 {
        self.server_cpu_s * 1000.0 / self.files as f64
    }
}

pub struct Latency {
    pub name: String,
    pub plutus: bool,
    pub per_second: f64,
    pub lat: Vec<f64>,
    pub windows: Vec<f64>,
    pub warmup_ms: f64,
    pub write_span_s: f64,
    pub max_write_lag_ms: f64,
    pub client_cpu_s: Option<f64>,
    pub cpu_pressure_pct: Option<f64>,
    pub note: String,
    /// Through the delaying relay with this round trip (`wan`).
    pub rtt_ms: Option<u64>,
}

pub struct ScaleRow {
    pub entries: usize,
    pub build_s: f64,
    pub disk_mib: f64,
    /// In this process, after the service stopped (page cache as warm as the
    /// service had it): `Journal::open` and `Journal::len` (a full scan in sled).
    pub open_ms: f64,
    pub len_ms: f64,
    /// Spawn -> "ready:" line seen in the log.
    pub startup_ms: f64,
    /// Spawn -> the "starting" line (logged once the journal is open and counted),
    /// wall clock against the log's timestamp.
    pub spawn_to_starting_ms: Option<f64>,
    /// From the log's own timestamps: "starting" -> "ready:".
    pub starting_to_ready_ms: Option<f64>,
    pub rss_ready_kib: Option<u64>,
    pub rss_settled_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
}

impl Report {
    pub fn best_plutus(&self) -> Option<&Burst> {
        self.burst
            .iter()
            .filter(|b| b.plutus)
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
    }

    /// The WAN run of plutus-sync as installed (connections 2, default window) at `rtt`.
    pub fn wan_default(&self, rtt: Option<u64>) -> Option<&Burst> {
        self.wan.iter().find(|b| {
            b.plutus && b.rtt_ms() == rtt && b.name.starts_with("plutus-sync, connections=2,")
        })
    }

    pub fn find_burst(&self, prefix: &str) -> Option<&Burst> {
        self.burst.iter().find(|b| b.name.starts_with(prefix))
    }

    pub fn targets(&self) -> Vec<Target> {
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
            .chain(&self.big)
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
        if let Some(l) = self.latency.iter().find(|l| l.plutus && l.rtt_ms.is_some()) {
            let rtt = l.rtt_ms.unwrap_or(0) as f64;
            let s = Summary::of(&l.lat);
            let bound = 3.0 * rtt + 5.0;
            out.push(Target {
                what: format!("lone file at {rtt} ms RTT: close -> final name <= 3 round trips + 5 ms ({bound} ms), p50"),
                measured: format!("p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms", s.p50, s.p90, s.max),
                met: s.p50 <= bound,
                report_only: false,
            });
        }
        for rtt in [20, 50] {
            let Some(p) = self.wan_default(Some(rtt)) else {
                continue;
            };
            for peer in ["rsync", "scp batch", "sftp -b"] {
                if let Some(b) = self
                    .wan
                    .iter()
                    .find(|b| b.rtt_ms() == Some(rtt) && b.name.starts_with(peer))
                {
                    out.push(Target {
                        what: format!(
                            "burst at {rtt} ms RTT, plutus-sync as installed vs {peer} (report)"
                        ),
                        measured: format!(
                            "{:.0} vs {:.1} files/s = {:.2}x",
                            p.rate(),
                            b.rate(),
                            p.rate() / b.rate()
                        ),
                        met: true,
                        report_only: true,
                    });
                }
            }
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

    pub fn to_json(&self, m: &Machine, full: bool, release: bool, filters: &[&str]) -> Value {
        let best = self.best_plutus().map(|b| b.rate());
        let burst: Vec<Value> = self.burst.iter().map(|b| burst_json(b, best)).collect();
        let wan: Vec<Value> = self
            .wan
            .iter()
            .map(|b| {
                let mut v = burst_json(b, None);
                v["as_installed_at_this_rtt_over_this"] =
                    json!(self.wan_default(b.rtt_ms()).map(|p| p.rate() / b.rate()));
                v
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
                    "rtt_ms": l.rtt_ms,
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
            "wan": wan,
            "big": self.big.iter().map(|b| burst_json(b, None)).collect::<Vec<_>>(),
            "latency": latency,
            "scale": scale,
            "targets": targets,
            "notes": self.notes,
        })
    }
}

fn burst_json(b: &Burst, best: Option<f64>) -> Value {
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
}

pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: bool,
    /// A figure to report, with no pass mark.
    pub report_only: bool,
}
