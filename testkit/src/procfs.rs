//! Readers of /proc (Linux): a process's CPU time, memory and descendants, and how
//! busy the machine was (pressure stall information). They only read: signals are
//! for the fixtures that own the processes.

use std::collections::HashMap;
use std::fs;
use std::time::Instant;

/// The fields of /proc/PID/stat after "(comm) state", as numbers: index 0 is field 4
/// (ppid), 10 and 11 are utime and stime, 12 and 13 cutime and cstime (clock ticks).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parens: the fields start after the last ")".
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

pub fn parent_pid(pid: u32) -> Option<u32> {
    u32::try_from(*stat_fields(pid)?.first()?).ok()
}

/// CPU seconds (user + system) `pid` has used so far, its children not included.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let f = stat_fields(pid)?;
    Some((f[10] + f[11]) as f64 / ticks_per_second())
}

/// CPU seconds used by `root` and every process below it, each tick counted once: a
/// live process's own time plus what it has reaped (a child that has exited and was
/// waited for is gone from /proc, its time now its parent's cutime and cstime).
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let ticks: u64 = std::iter::once(root)
        .chain(descendants(root))
        .filter_map(stat_fields)
        .map(|f| f[10] + f[11] + f[12] + f[13])
        .sum();
    ticks as f64 / ticks_per_second()
}

/// The number after `key` in /proc/PID/status ("VmHWM:", "VmRSS:" in KiB, "Threads:").
pub fn status_number(pid: u32, key: &str) -> Option<u64> {
    number_after(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// The number after `key` in /proc/meminfo ("MemTotal:", in KiB).
pub fn meminfo_kib(key: &str) -> Option<u64> {
    number_after(&fs::read_to_string("/proc/meminfo").ok()?, key)
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// All transitive children of `root`, from one pass over /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_pid(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            todo.push(c);
        }
    }
    out
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
