//! Files the bench writes and checks, the service's end, numbers.

use plutus_state::State;
use plutus_testkit::checks::tail;
use plutus_testkit::files::files_under;
use plutus_testkit::service::Service;
use plutus_testkit::spool::Spool;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
    let got = files_under(dir);
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

/// Entries in `state` in the spool's journal (the service must have stopped).
pub fn journal_count(sp: &Spool, state: State) -> u64 {
    sp.journal()
        .counts()
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == state)
        .map_or(0, |(_, n)| n)
}

/// `bin` on the PATH (or in /usr/sbin, /usr/bin), if it is installed.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

pub fn kib_mib(k: Option<u64>) -> String {
    k.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// Fails the bench: `what`, and the tail of the service's log.
pub fn fail(svc: &Service, what: &str) -> ! {
    panic!(
        "{what}; plutus-sync log tail:\n{}",
        tail(&svc.log_text(), 40)
    )
}

/// SIGTERM, and a clean exit or the bench fails; the run's resource usage.
pub fn stop_clean(svc: &mut Service) -> libc::rusage {
    let (st, ru) = svc.stop_with_usage();
    if !st.success() {
        fail(
            svc,
            &format!("plutus-sync did not exit 0 after SIGTERM ({st})"),
        );
    }
    ru
}
