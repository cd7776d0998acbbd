//! The real `plutus-sync` binary as a child process, with a config written into a temp
//! dir, its stderr kept in a log file for failure messages, and a Drop that kills it.

use crate::sshd::Sshd;
use crate::wait_until;
use plutus_state::{Journal, JournalOptions, Record, State};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `plutus-sync` binary under test.
///
/// Cargo tells integration tests and benches where it built it, as
/// `CARGO_BIN_EXE_plutus-sync`: at compile time (`env!`), which only the test crate
/// itself sees, not a library such as this one, and in the environment of the
/// `cargo test` or `cargo bench` run, which is read here. A test executable run by
/// hand finds the binary where cargo puts it: `target/PROFILE/plutus-sync`, beside
/// the `deps/` folder that holds the test executable. (tests/it checks that this is
/// the binary cargo named at compile time.)
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CARGO_BIN_EXE_plutus-sync") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let beside = exe
            .parent()
            .and_then(Path::parent)
            .map(|profile| profile.join("plutus-sync"));
        match beside {
            Some(p) if p.is_file() => p,
            _ => panic!(
                "plutus-sync not found beside {}: run the tests through cargo \
                 (`cargo test`), which builds it, or set CARGO_BIN_EXE_plutus-sync",
                exe.display()
            ),
        }
    })
}

/// The folders of one test's web-shop side.
pub struct Spool {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Spool {
    /// A config delivering to `sshd`, with fast timers for tests. `extra` is appended
    /// to the [destination] table (e.g. a known_hosts override).
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

    pub fn with_destination(destination: &str) -> Spool {
        let dir = tempfile::Builder::new()
            .prefix("plutus-spool-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("config.toml");
        fs::write(
            &config,
            format!(
                r#"[source]
outbox = "outbox"
archive = "archive"
quarantine = "quarantine"
settle = "300ms"
quarantine_after = "1s"
sweep_interval = "1s"

[journal]
path = "journal"

[retry]
initial = "100ms"
max = "1s"
max_attempts = 3

[destination]
{destination}"#
            ),
        )
        .unwrap();
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

pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if let Ok(body) = fs::read(e.path()) {
                out.push((e.file_name().to_string_lossy().into_owned(), body));
            }
        }
    }
    out.sort();
    out
}

/// Names of the regular files directly in `dir`.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub use crate::orders::order;

pub struct Service {
    child: Option<Child>,
    pub log: PathBuf,
    /// The service's `NOTIFY_SOCKET`, as systemd would hold it: readiness is the
    /// `READY=1` it sends, not a log line.
    notify: std::os::unix::net::UnixDatagram,
    /// Set once ready: from then on a thread reads (and drops) every notification,
    /// as systemd does, so the service never blocks on a full socket queue.
    drain_stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// READY=1 came: a second `wait_ready` returns at once, as a log line would.
    ready: bool,
    _notify_dir: tempfile::TempDir,
}

impl Service {
    pub fn start(config: &Path, dir: &Path) -> Service {
        Service::start_with(Command::new(bin()), config, dir)
    }

    /// `plutus-sync run` inside network namespace `ns` (`ip netns exec` execs it, so
    /// the child is plutus-sync itself and signals reach it).
    pub fn start_in_netns(ns: &str, config: &Path, dir: &Path) -> Service {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(bin());
        Service::start_with(cmd, config, dir)
    }

    fn start_with(mut cmd: Command, config: &Path, dir: &Path) -> Service {
        // Each start appends to the same log, so a failure shows every run.
        let log = dir.join("service.log");
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // Short path: a socket address holds at most 107 bytes.
        let notify_dir = tempfile::Builder::new()
            .prefix("plutus-notify-")
            .tempdir_in("/tmp")
            .unwrap();
        let notify_path = notify_dir.path().join("n");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let child = cmd
            .args(["run", "-c"])
            .arg(config)
            .env("PLUTUS_SYNC_LOG", "info,plutus_sync=debug")
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Service {
            child: Some(child),
            log,
            notify,
            drain_stop: Default::default(),
            ready: false,
            _notify_dir: notify_dir,
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for this run's `READY=1` on its notify socket, as systemd does (the
    /// watch is registered and every task started by then).
    pub fn wait_ready(&mut self) {
        if self.ready {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            // A read timeout of 50 ms paces the loop.
            if let Ok(n) = self.notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    let (sock, stop) = (self.notify.try_clone().unwrap(), self.drain_stop.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let _ = sock.recv(&mut buf); // 50 ms read timeout
                        }
                    });
                    self.ready = true;
                    return;
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "plutus-sync exited with {st} before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!("plutus-sync not ready after 20s; log:\n{}", self.log_text());
            }
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "plutus-sync did not stop within 30s of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no chance to clean up, like a power cut for the process.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.drain_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Wait until `n` files are archived, printing the service log on timeout.
pub fn wait_archived(spool: &Spool, svc: &Service, n: usize, timeout: Duration) {
    let ok = crate::poll_until(timeout, || spool.archived().len() >= n);
    if !ok {
        panic!(
            "timed out after {timeout:?}: {} of {n} files archived; outbox holds {}; log tail:\n{}",
            spool.archived().len(),
            names_in(&spool.outbox()).len(),
            tail(&svc.log_text(), 60)
        );
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The invariants every delivery test ends with: each order is in the inbox exactly
/// once and byte-identical, archived exactly once, journaled as archived exactly once,
/// and no temp file is left in the inbox.
pub fn assert_delivered_exactly_once(spool: &Spool, inbox: &Path, orders: &[(String, Vec<u8>)]) {
    let inbox_files = files_under(inbox);
    let temps: Vec<_> = inbox_files
        .iter()
        .filter(|(n, _)| n.ends_with(".part"))
        .map(|(n, _)| n)
        .collect();
    assert!(temps.is_empty(), "temp files left in the inbox: {temps:?}");
    let mut want: Vec<(String, Vec<u8>)> = orders.to_vec();
    want.sort();
    assert_eq!(inbox_files.len(), want.len(), "inbox file count");
    for ((gn, gb), (wn, wb)) in inbox_files.iter().zip(&want) {
        assert_eq!(gn, wn);
        assert!(gb == wb, "{gn}: inbox bytes differ from the order written");
    }
    let journal = assert_archived_once(spool, &want);
    for (name, _) in &want {
        let latest = journal.latest(name).unwrap();
        assert!(
            latest.is_some_and(|r| &r.name == name),
            "name index for {name}"
        );
    }
}

/// The local half of every exactly-once check: each order archived once,
/// byte-identical, the outbox empty, one `archived` journal entry per order with its
/// size and CRC32, and the state index agreeing with the entries (after kills too: the
/// repair at open). Returns the journal for further checks.
pub fn assert_archived_once(spool: &Spool, want: &[(String, Vec<u8>)]) -> Journal {
    assert_eq!(
        spool.archived(),
        want,
        "archive must hold each order once, byte-identical"
    );
    assert!(
        names_in(&spool.outbox()).is_empty(),
        "outbox not empty: {:?}",
        names_in(&spool.outbox())
    );
    let entries = spool.entries();
    for (name, body) in want {
        let mine: Vec<&Record> = entries.iter().filter(|r| &r.name == name).collect();
        assert_eq!(mine.len(), 1, "{name}: journal entries {mine:#?}");
        assert_eq!(mine[0].state(), State::Archived, "{name}");
        assert_eq!(mine[0].crc32, crc32fast::hash(body), "{name}: crc32");
        assert_eq!(mine[0].size, body.len() as u64, "{name}: size");
    }
    let journal = spool.journal();
    for (state, n) in journal.counts().unwrap() {
        let by_entries = entries.iter().filter(|r| r.state() == state).count() as u64;
        assert_eq!(n, by_entries, "state index for {state}");
    }
    journal
}

/// Waits (while the service still runs, so its periodic clean-up can act) until no
/// temp file is left in the inbox.
pub fn wait_no_temps(inbox: &Path) {
    wait_until(
        Duration::from_secs(30),
        "no temp file left in the inbox",
        || !names_in(inbox).iter().any(|n| n.ends_with(".part")),
    );
}

/// The invariants of every exactly-once test against an importing ERP: each order was
/// imported exactly once, byte-identical, and nothing else was; archived exactly once
/// and journaled as archived; no temp file left in the inbox (waited for: a temp that
/// a killed run's session wrote late is removed by the next periodic clean-up).
pub fn assert_imported_exactly_once(
    spool: &Spool,
    erp: &crate::erp::Erp,
    inbox: &Path,
    orders: &[(String, Vec<u8>)],
) {
    erp.wait_imported(orders.len(), Duration::from_secs(60));
    let imports = erp.imports();
    let dups = erp.duplicates();
    assert!(dups.is_empty(), "imported more than once: {dups:?}");
    let mut want: Vec<(String, Vec<u8>)> = orders.to_vec();
    want.sort();
    let mut got: Vec<(String, Vec<u8>)> = imports
        .iter()
        .map(|i| (i.name.clone(), i.bytes.clone()))
        .collect();
    got.sort();
    assert_eq!(got.len(), want.len(), "imports");
    for ((gn, gb), (wn, wb)) in got.iter().zip(&want) {
        assert_eq!(gn, wn);
        assert!(
            gb == wb,
            "{gn}: imported bytes differ from the order written"
        );
    }
    let temps_gone = crate::poll_until(Duration::from_secs(30), || {
        !names_in(inbox).iter().any(|n| n.ends_with(".part"))
    });
    assert!(
        temps_gone,
        "temp files left in the inbox: {:?}",
        names_in(inbox)
    );
    assert_archived_once(spool, &want);
}

pub fn wait_for_log(svc: &Service, what: &str, timeout: Duration) {
    wait_until(timeout, &format!("log line {what:?}"), || {
        svc.log_text().contains(what)
    });
}
