//! plutus-sync as the bench runs it: a spool with the shipped defaults, and the
//! service as a child at log level info.

use crate::process::Proc;
use crate::procfs::proc_cpu;
use crate::util::tail;
use plutus_testkit::service::bin;
use plutus_testkit::sshd::Sshd;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// One spool (outbox, archive, quarantine, journal, config) delivering to `remote` on
/// the fixture's sshd. Everything else is the shipped default (settle 2 s, sweep every
/// 5 min, ...), so the figures are the service as installed.
pub struct Spool {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Spool {
    pub fn new(sshd: &Sshd, remote: &Path, connections: usize) -> Spool {
        fs::create_dir_all(remote).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("plutus-e2e-")
            .tempdir()
            .unwrap();
        for d in ["outbox", "archive", "quarantine"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let config = dir.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[source]\noutbox = \"outbox\"\narchive = \"archive\"\nquarantine = \"quarantine\"\n\n\
                 [journal]\npath = \"journal\"\n\n\
                 [destination]\nurl = \"sftp://{}@127.0.0.1:{}{}\"\nidentity = \"{}\"\n\
                 known_hosts = \"{}\"\nconnections = {connections}\n",
                sshd.user(),
                sshd.port(),
                remote.display(),
                sshd.client_key().display(),
                sshd.known_hosts().display()
            ),
        )
        .unwrap();
        Spool { dir, config }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

pub struct Plutus {
    pub proc: Proc,
    pub log: PathBuf,
}

impl Plutus {
    /// `plutus-sync run` at log level info (the shipped default), stderr to `log`.
    pub fn start(config: &Path, log: &Path) -> Plutus {
        let f = fs::File::create(log).unwrap();
        let proc = Proc::spawn(
            Command::new(bin())
                .args(["run", "-c"])
                .arg(config)
                .env("PLUTUS_SYNC_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(f),
        )
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin().display()));
        Plutus {
            proc,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}; plutus-sync log tail:\n{}",
            tail(&self.log_text(), 40)
        )
    }

    /// Polls the log every `every` until it holds `needle`; when it was first seen.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration, every: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return Instant::now();
            }
            if let Some(st) = self.proc.try_reap() {
                self.fail(&format!(
                    "plutus-sync exited ({st:#x}) before logging {needle:?}"
                ));
            }
            if Instant::now() > deadline {
                self.fail(&format!("no {needle:?} in the log within {timeout:?}"));
            }
            thread::sleep(every);
        }
    }

    pub fn cpu_s(&self) -> f64 {
        proc_cpu(self.proc.pid, false).unwrap_or(f64::NAN)
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> libc::rusage {
        let (st, ru) = self.proc.stop(libc::SIGTERM, Duration::from_secs(60));
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            self.fail(&format!(
                "plutus-sync did not exit 0 after SIGTERM (wait status {st:#x})"
            ));
        }
        ru
    }
}
