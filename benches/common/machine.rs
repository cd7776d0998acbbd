//! What machine a bench ran on, and how busy it was meanwhile (benches/latency.rs and
//! benches/e2e.rs).
//!
//! Each bench includes this file as its own module (`#[path]`) and reports only part
//! of it (e2e.rs the client's `ssh -V`, latency.rs the server's `sshd -V`, ...), so
//! what one of them leaves unread would otherwise trip `dead_code`.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::fs;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_mib: u64,
    pub loadavg: String,
    /// `ssh -V`: the OpenSSH client's version line (with its OpenSSL).
    pub ssh: String,
    /// `sshd -V` up to the first comma: the OpenSSH server's version.
    pub sshd: String,
    pub os: String,
    /// The commit measured, "+ local changes" when src/ or state/ differ from it.
    pub source: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let ssh = Command::new("ssh")
            .arg("-V")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "ssh version unknown".into());
        // `sshd -V` prints its version on stderr (and exits non-zero on old versions).
        let sshd = ["/usr/sbin/sshd", "sshd"]
            .iter()
            .find_map(|bin| Command::new(bin).arg("-V").output().ok())
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stderr);
                text.split(',').next().unwrap_or("").trim().to_string()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "sshd version unknown".into());
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|s| s.trim_matches('"').to_string())
            .unwrap_or_default();
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(env!("CARGO_MANIFEST_DIR"))
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let source = match git(&["rev-parse", "--short", "HEAD"]) {
            Some(c) => {
                let dirty = git(&["status", "--porcelain", "--", "src", "state", "Cargo.lock"])
                    .is_some_and(|s| !s.is_empty());
                format!("commit {c}{}", if dirty { " + local changes" } else { "" })
            }
            None => "unknown commit".into(),
        };
        Machine {
            source,
            nproc: thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu,
            mem_mib: status_line_kib(&read("/proc/meminfo"), "MemTotal:").unwrap_or(0) / 1024,
            loadavg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            ssh,
            sshd,
            os,
        }
    }

    /// One line for e2e.rs's header; `ssh -V` stands for OpenSSH there, since the
    /// peers run the client.
    pub fn line(&self) -> String {
        format!(
            "{} x {}, {} MiB RAM, {}, kernel {}, {}, loadavg at start {}",
            self.nproc, self.cpu, self.mem_mib, self.os, self.kernel, self.ssh, self.loadavg
        )
    }

    /// e2e.json's "machine" (its "openssh" is `ssh -V`).
    pub fn to_json(&self) -> Value {
        json!({
            "nproc": self.nproc,
            "cpu": self.cpu,
            "mem_mib": self.mem_mib,
            "os": self.os,
            "kernel": self.kernel,
            "openssh": self.ssh,
            "loadavg_at_start": self.loadavg,
            "source": self.source,
        })
    }
}

/// The number after `key` on its line of a /proc/meminfo- or /proc/PID/status-style
/// text (in KiB for the memory lines).
pub fn status_line_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Linux pressure stall information (`/proc/pressure/<resource>`): how much of a
/// stretch of wall time some task was waiting for a CPU (`"cpu", "some"`), or all
/// tasks were stalled on I/O (`"io", "full"`). For the CPU that is mostly the scenario
/// itself on 2 cores; a high figure next to a slow run says the machine was busy with
/// something else too.
pub struct Psi {
    resource: &'static str,
    kind: &'static str,
    start: Instant,
    total_us: Option<u64>,
}

impl Psi {
    pub fn start(resource: &'static str, kind: &'static str) -> Psi {
        Psi {
            resource,
            kind,
            start: Instant::now(),
            total_us: psi_total_us(resource, kind),
        }
    }

    /// The stalled share of the wall time since `start`, in percent.
    pub fn share(&self) -> Option<f64> {
        let d = self.stalled_us()?;
        Some(d as f64 / self.start.elapsed().as_micros() as f64 * 100.0)
    }

    /// The stalled share of `wall`, in percent: for a run timed from a start of its
    /// own (latency.rs's schedule begins 50 ms after `start`).
    pub fn share_of(&self, wall: Duration) -> Option<f64> {
        let d = self.stalled_us()?;
        Some(d as f64 / wall.as_micros() as f64 * 100.0)
    }

    fn stalled_us(&self) -> Option<u64> {
        Some(psi_total_us(self.resource, self.kind)?.saturating_sub(self.total_us?))
    }
}

/// The `total=` (microseconds stalled) of one line of `/proc/pressure/<resource>`.
fn psi_total_us(resource: &str, kind: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/pressure/{resource}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(kind))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}
