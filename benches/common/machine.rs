//! What machine a bench ran on (benches/latency.rs and benches/e2e/). How busy it was
//! meanwhile is `plutus_testkit::procfs::Psi`.
//!
//! Each bench includes this file as its own module (`#[path]`) and reports only part
//! of it (e2e the client's `ssh -V`, latency.rs the server's `sshd -V`, ...), so
//! what one of them leaves unread would otherwise trip `dead_code`.
#![allow(dead_code)]

use plutus_testkit::procfs::meminfo_kib;
use serde_json::{json, Value};
use std::fs;
use std::process::Command;
use std::thread;

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
            mem_mib: meminfo_kib("MemTotal:").unwrap_or(0) / 1024,
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

    /// One line for e2e's header; `ssh -V` stands for OpenSSH there, since the
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
