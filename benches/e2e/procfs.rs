//! CPU and memory of processes, from /proc.

use crate::machine::status_line_kib;
use plutus_testkit::sshd::Sshd;
use std::collections::HashMap;
use std::fs;

/// The fields after "(comm)" of /proc/PID/stat: index 0 is field 3 (state).
pub fn proc_stat(pid: i32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of `pid` (and, with `children`, of its reaped children), seconds.
pub fn proc_cpu(pid: i32, children: bool) -> Option<f64> {
    // After the state field: ppid=0 ... utime=10, stime=11, cutime=12, cstime=13.
    let f = proc_stat(pid)?;
    let ticks = f[10] + f[11] + if children { f[12] + f[13] } else { 0 };
    Some(ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// `key` of /proc/PID/status, in KiB for the Vm* lines.
pub fn status_kib(pid: i32, key: &str) -> Option<u64> {
    status_line_kib(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// CPU used by sshd and every process below it (the per-connection children and
/// their sftp servers), counting each tick once: a live process's own time plus
/// what it has reaped.
pub struct ServerCpu {
    pub pid: Option<i32>,
    pub before: f64,
}

impl ServerCpu {
    pub fn new(sshd: &Sshd) -> ServerCpu {
        let pid = fs::read_to_string(sshd.dir().join("sshd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        ServerCpu {
            pid,
            before: pid.map_or(0.0, tree_cpu),
        }
    }
    pub fn delta(&self) -> Option<f64> {
        self.pid.map(|p| tree_cpu(p) - self.before)
    }
}

pub fn tree_cpu(root: i32) -> f64 {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(f) = proc_stat(pid) {
            children.entry(f[0] as i32).or_default().push(pid);
        }
    }
    let mut total = 0.0;
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        total += proc_cpu(p, true).unwrap_or(0.0);
        todo.extend(children.get(&p).into_iter().flatten());
    }
    total
}
