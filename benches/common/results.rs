//! Figures and where they go (benches/latency.rs and benches/e2e/): nearest-rank
//! percentiles in milliseconds, and the target directory that holds `bench-results/`.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentiles, in milliseconds.
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples_ms: &[f64]) -> Summary {
        let mut v = samples_ms.to_vec();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            v.push(f64::NAN);
        }
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Summary {
            count: samples_ms.len(),
            min: v[0],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: v[v.len() - 1],
        }
    }

    pub fn to_json(&self) -> Value {
        let n = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
        json!({
            "count": self.count,
            "min": n(self.min),
            "mean": n(self.mean),
            "p50": n(self.p50),
            "p90": n(self.p90),
            "p99": n(self.p99),
            "max": n(self.max),
        })
    }
}

/// `$CARGO_TARGET_DIR` if set, else `target/` beside the root Cargo.toml.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
