//! Orders, files and folders, numbers.

use plutus_state::{Journal, JournalOptions, State};
use plutus_testkit::service::order;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub fn make_orders(n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            (
                format!("order-2026-{i:06}.json"),
                order(i, 1000 + rng.usize(0..9000)),
            )
        })
        .collect()
}

/// Writes every order into `dir`; `old` dates them an hour back, as files that waited
/// in the outbox while the service was down (past any `settle`).
pub fn fill(dir: &Path, orders: &[(String, Vec<u8>)], old: bool) {
    let then = SystemTime::now() - Duration::from_secs(3600);
    for (name, body) in orders {
        let mut f = fs::File::create(dir.join(name)).unwrap();
        f.write_all(body).unwrap();
        if old {
            f.set_modified(then).unwrap();
        }
    }
}

/// Every order byte-identical in `dir`, and nothing else there (no temp names).
pub fn verify_dir(dir: &Path, orders: &[(String, Vec<u8>)]) -> Result<(), String> {
    let want: HashMap<&str, &[u8]> = orders.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    let mut seen = 0;
    for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(body) = want.get(name.as_str()) else {
            return Err(format!("unexpected {name} in {}", dir.display()));
        };
        if fs::read(e.path()).map_err(|e| e.to_string())? != *body {
            return Err(format!("{name}: content differs from the order written"));
        }
        seen += 1;
    }
    if seen != orders.len() {
        return Err(format!(
            "{seen} of {} files in {}",
            orders.len(),
            dir.display()
        ));
    }
    Ok(())
}

/// The archive (dated folders) holds each order once, byte-identical.
pub fn verify_archive(dir: &Path, orders: &[(String, Vec<u8>)]) -> Result<(), String> {
    let got = plutus_testkit::service::files_under(dir);
    if got.len() != orders.len() {
        return Err(format!("{} of {} files archived", got.len(), orders.len()));
    }
    let mut want = orders.to_vec();
    want.sort();
    if got != want {
        return Err("archived files differ from the orders written".into());
    }
    Ok(())
}

pub fn journal_count(path: &Path, state: State) -> u64 {
    let j = Journal::open(path, &JournalOptions::default()).unwrap();
    j.counts()
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

pub fn count_dir(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |rd| rd.count())
}

pub fn count_files_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}

pub fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                n += m.blocks() * 512;
            }
        }
    }
    n
}

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

pub fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

pub fn kib_mib(k: Option<u64>) -> String {
    k.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
