//! One test's web-shop side: a temp dir with the outbox, archive, quarantine, journal
//! and a config delivering to the sshd fixture (fast timers for tests, or the shipped
//! defaults for benches), and the `plutus-sync` commands run against that config. The
//! service itself is [`crate::service`]'s.

use crate::files::files_under;
use crate::service::{bin, Service};
use crate::sshd::Sshd;
use plutus_state::{Journal, JournalOptions, Record};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// The folders and config of one test's web-shop side. Dropping it deletes them.
pub struct Spool {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Spool {
    /// A config delivering to `sshd`, with fast timers for tests. `extra` is appended
    /// to the `[destination]` table (e.g. a known_hosts override).
    pub fn for_sshd(sshd: &Sshd, extra: &str) -> Spool {
        let timeout = if extra.contains("timeout") {
            ""
        } else {
            "timeout = \"5s\"\n"
        };
        Spool::with_destination(&format!(
            "url = \"{}\"\nidentity = \"{}\"\n{timeout}{}\n",
            sshd.url(),
            sshd.client_key().display(),
            if extra.contains("known_hosts") {
                extra.to_string()
            } else {
                format!(
                    "known_hosts = \"{}\"\n{extra}",
                    sshd.known_hosts().display()
                )
            }
        ))
    }

    /// A config delivering to `sshd` through a TCP relay listening on `relay_port`.
    pub fn for_relay(sshd: &Sshd, relay_port: u16, extra: &str) -> Spool {
        Spool::with_destination(&format!(
            "url = \"sftp://{}@127.0.0.1:{relay_port}{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\n{}{extra}\n",
            sshd.user(),
            sshd.inbox().display(),
            sshd.client_key().display(),
            sshd.known_hosts_for_port(relay_port).display(),
            if extra.contains("timeout") { "" } else { "timeout = \"5s\"\n" },
        ))
    }

    /// A config with fast timers for tests (settle 300 ms, sweep every second, three
    /// attempts) and `destination` as its `[destination]` table.
    pub fn with_destination(destination: &str) -> Spool {
        Spool::create(&format!(
            r#"[source]
outbox = "outbox"
archive = "archive"
quarantine = "quarantine"
settle = "300ms"
quarantine_after = "1s"
sweep_interval = "1s"

[journal]
path = "journal"

[control]
socket = "control.sock"

[retry]
initial = "100ms"
max = "1s"
max_attempts = 3

[destination]
{destination}"#
        ))
    }

    /// A config delivering to `remote` (created) on `sshd` with `connections` workers
    /// and the shipped defaults for everything else (settle 2 s, sweep every 5 min,
    /// ...): the service as installed, for benches.
    pub fn as_installed(sshd: &Sshd, remote: &Path, connections: usize) -> Spool {
        Spool::as_installed_via(sshd, remote, connections, sshd.port(), "")
    }

    /// [`Spool::as_installed`] through `port` (a relay in front of `sshd`, or sshd's
    /// own), with `extra` lines in `[destination]`.
    pub fn as_installed_via(
        sshd: &Sshd,
        remote: &Path,
        connections: usize,
        port: u16,
        extra: &str,
    ) -> Spool {
        fs::create_dir_all(remote).unwrap();
        let known_hosts = if port == sshd.port() {
            sshd.known_hosts().to_path_buf()
        } else {
            sshd.known_hosts_for_port(port)
        };
        Spool::create(&format!(
            "[source]\noutbox = \"outbox\"\narchive = \"archive\"\nquarantine = \"quarantine\"\n\n\
             [journal]\npath = \"journal\"\n\n\
             [control]\nsocket = \"control.sock\"\n\n\
             [destination]\nurl = \"sftp://{}@127.0.0.1:{port}{}\"\nidentity = \"{}\"\n\
             known_hosts = \"{}\"\nconnections = {connections}\n{extra}\n",
            sshd.user(),
            remote.display(),
            sshd.client_key().display(),
            known_hosts.display()
        ))
    }

    /// A fresh temp dir with the spool's folders and `config` as its config.toml.
    fn create(config_text: &str) -> Spool {
        let dir = tempfile::Builder::new()
            .prefix("plutus-spool-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("config.toml");
        fs::write(&config, config_text).unwrap();
        for d in ["outbox", "archive", "quarantine"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Spool { dir, config }
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }
    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }
    pub fn quarantine(&self) -> PathBuf {
        self.dir.path().join("quarantine")
    }
    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("journal")
    }

    /// Write an order file the way the web shop does: write, then close.
    pub fn drop_order(&self, name: &str, body: &[u8]) {
        fs::write(self.outbox().join(name), body).unwrap();
    }

    /// All files under the archive, by name (the dated folders flattened).
    pub fn archived(&self) -> Vec<(String, Vec<u8>)> {
        files_under(&self.archive())
    }

    /// Open the journal (the service must not be running: sled locks it).
    /// The journal, opened in the test's process. sled lets go of its lock a moment
    /// after the previous handle in this process was dropped: wait for it.
    pub fn journal(&self) -> Journal {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Journal::open(&self.journal_path(), &JournalOptions::default()) {
                Err(plutus_state::JournalError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => return r.unwrap(),
            }
        }
    }

    /// The journal's entries through the running service's control socket.
    pub fn entries_while_running(&self, _svc: &Service) -> Vec<Record> {
        let (st, out, err) = self.cmd(&["journal", "list", "--json", "--limit", "1000000"]);
        assert!(st.success(), "{err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn entries(&self) -> Vec<Record> {
        self.journal().iter().map(|r| r.unwrap()).collect()
    }

    pub fn start(&self) -> Service {
        Service::start(&self.config, self.dir.path())
    }

    /// Replace `from` with `to` in the config; `from` must be there, so a changed
    /// default cannot make the edit silently do nothing.
    pub fn set_config(&self, from: &str, to: &str) {
        let text = fs::read_to_string(&self.config).unwrap();
        assert!(
            text.contains(from),
            "{from:?} not in the config:
{text}"
        );
        fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// Add lines (a section) at the end of the config.
    pub fn append_config(&self, text: &str) {
        let mut cfg = fs::read_to_string(&self.config).unwrap();
        cfg.push('\n');
        cfg.push_str(text);
        fs::write(&self.config, cfg).unwrap();
    }

    /// `plutus-sync ARGS… -c CONFIG`: (exit status, stdout, stderr).
    pub fn cmd(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .env("PLUTUS_SYNC_LOG", "info,plutus_sync=debug")
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `cmd` that must exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (st, out, err) = self.cmd(args);
        assert!(
            st.success(),
            "plutus-sync {args:?} exited {st}\nstdout:\n{out}\nstderr:\n{err}"
        );
        out
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// `plutus-sync sync`: (exit status, stdout, stderr).
    pub fn sync(&self) -> (ExitStatus, String, String) {
        self.cmd(&["sync"])
    }
}
