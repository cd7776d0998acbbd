//! Where a burst's time went, from the service's own log lines.

use crate::results::Summary;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Where the time went in a burst, from the service's own log lines.
#[derive(Default)]
pub struct LogStats {
    pub lines: usize,
    pub bytes: usize,
    pub warnings: usize,
    pub first_warning: Option<String>,
    /// Seconds after the "starting" line: (first, last, count) of each kind of line.
    pub detected: Span,
    pub uploaded: Span,
    pub verified: Span,
    pub archived: Span,
    pub upload_ms: Vec<f64>,
    pub attempt_ms: Vec<f64>,
    /// Per file, between its own log lines (ms): "uploaded" -> "verified" (read-back,
    /// rename, `verified` journaled and flushed) and "verified" -> "archived" (archive
    /// move with its directory fsync, `archived` journaled).
    pub uploaded_to_verified_ms: Vec<f64>,
    pub verified_to_archived_ms: Vec<f64>,
}

#[derive(Default, Clone, Copy)]
pub struct Span {
    pub first: f64,
    pub last: f64,
    pub count: usize,
}

impl Span {
    pub fn add(&mut self, t: f64) {
        if self.count == 0 {
            self.first = t;
        }
        self.last = t;
        self.count += 1;
    }
    pub fn to_json(self) -> Value {
        json!({"first_s": self.first, "last_s": self.last, "count": self.count})
    }
}

impl LogStats {
    pub fn parse(text: &str) -> LogStats {
        let mut s = LogStats {
            bytes: text.len(),
            ..LogStats::default()
        };
        let mut t0 = None;
        let mut last: HashMap<String, f64> = HashMap::new();
        let name = |line: &str| {
            let rest = &line[line.find("file{file=")? + "file{file=".len()..];
            Some(rest[..rest.find(' ')?].to_string())
        };
        for line in text.lines() {
            s.lines += 1;
            let Some(t) = log_time(line) else { continue };
            let t0 = *t0.get_or_insert(t);
            let rel = t - t0;
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                s.warnings += 1;
                s.first_warning.get_or_insert_with(|| line.to_string());
            }
            if line.contains(" detected ") {
                s.detected.add(rel);
            } else if line.contains(": uploaded to ") {
                s.uploaded.add(rel);
                s.upload_ms.extend(field(line, "elapsed_ms="));
                last.extend(name(line).map(|n| (n, t)));
            } else if line.contains(": verified as ") {
                s.verified.add(rel);
                s.attempt_ms.extend(field(line, "elapsed_ms="));
                if let Some(n) = name(line) {
                    if let Some(u) = last.insert(n, t) {
                        s.uploaded_to_verified_ms.push((t - u) * 1000.0);
                    }
                }
            } else if line.contains(": archived to ") {
                s.archived.add(rel);
                if let Some(v) = name(line).and_then(|n| last.remove(&n)) {
                    s.verified_to_archived_ms.push((t - v) * 1000.0);
                }
            }
        }
        s
    }

    pub fn line(&self) -> String {
        let up = Summary::of(&self.upload_ms);
        let at = Summary::of(&self.attempt_ms);
        format!(
            "{} lines ({:.1} MB), {} warnings; detected {} in {:.2}-{:.2} s, verified {:.2}-{:.2} s, \
             archived {:.2}-{:.2} s (from the \"starting\" line); upload step p50 {:.0} ms, \
             attempt (upload + read-back + rename) p50 {:.0} ms p99 {:.0} ms; between a file's \
             lines: uploaded -> verified p50 {:.2} ms, verified -> archived p50 {:.2} ms{}",
            self.lines,
            self.bytes as f64 / 1e6,
            self.warnings,
            self.detected.count,
            self.detected.first,
            self.detected.last,
            self.verified.first,
            self.verified.last,
            self.archived.first,
            self.archived.last,
            up.p50,
            at.p50,
            at.p99,
            Summary::of(&self.uploaded_to_verified_ms).p50,
            Summary::of(&self.verified_to_archived_ms).p50,
            self.first_warning
                .as_ref()
                .map_or(String::new(), |w| format!("; first warning: {w}"))
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "lines": self.lines,
            "bytes": self.bytes,
            "warnings": self.warnings,
            "first_warning": self.first_warning,
            "detected": self.detected.to_json(),
            "uploaded": self.uploaded.to_json(),
            "verified": self.verified.to_json(),
            "archived": self.archived.to_json(),
            "upload_step_ms": Summary::of(&self.upload_ms).to_json(),
            "attempt_ms": Summary::of(&self.attempt_ms).to_json(),
            "uploaded_to_verified_ms": Summary::of(&self.uploaded_to_verified_ms).to_json(),
            "verified_to_archived_ms": Summary::of(&self.verified_to_archived_ms).to_json(),
        })
    }
}

/// Seconds since midnight UTC of a log line starting "2026-11-23T12:34:35.849004Z".
pub fn log_time(line: &str) -> Option<f64> {
    let ts = line.get(11..26)?;
    let h: f64 = ts.get(0..2)?.parse().ok()?;
    let m: f64 = ts.get(3..5)?.parse().ok()?;
    let s: f64 = ts.get(6..)?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

pub fn field(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
