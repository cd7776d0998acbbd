//! The real `plutus-sync` binary as a child process: `plutus-sync run` with a config,
//! its stderr kept in a log file for failure messages, ready when it sends `READY=1` on
//! a notify socket this wrapper owns (as systemd would), and killed on drop. It runs
//! the binary and reads its log and notifications; the spool it works on is
//! [`crate::spool`]'s.

use crate::process::Proc;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long `wait_ready` waits for READY=1.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM. A clean stop finishes the files in flight and
/// flushes the journal; a bench's journal of a million entries takes its time.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The read timeout on the notify socket: it paces `wait_ready`'s checks that the
/// service is still alive, and lets the drain thread see that it should stop.
const NOTIFY_READ_TIMEOUT: Duration = Duration::from_millis(50);
/// The log level of a test run: debug for plutus-sync's own lines, for failure messages.
const TEST_LOG: &str = "info,plutus_sync=debug";
/// The shipped default, for benches that measure the service as installed.
const INSTALLED_LOG: &str = "info";
/// What the systemd unit sets (`Environment=MALLOC_ARENA_MAX=2`); a packaging test
/// checks the two agree.
pub const UNIT_MALLOC_ARENA_MAX: &str = "2";

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

pub struct Service {
    proc: Option<Proc>,
    pub log: PathBuf,
    /// The service's `NOTIFY_SOCKET`, as systemd would hold it: readiness is the
    /// `READY=1` it sends, not a log line.
    notify: UnixDatagram,
    /// Set once ready: from then on a thread reads (and drops) every notification,
    /// as systemd does, so the service never blocks on a full socket queue.
    drain_stop: Arc<AtomicBool>,
    /// READY=1 came: a second `wait_ready` returns at once, as a log line would.
    ready: bool,
    _notify_dir: tempfile::TempDir,
}

impl Service {
    /// `plutus-sync run -c CONFIG` at debug level, appending to `DIR/service.log`
    /// (each start appends to the same log, so a failure shows every run).
    pub fn start(config: &Path, dir: &Path) -> Service {
        Service::spawn(
            Command::new(bin()),
            config,
            &dir.join("service.log"),
            TEST_LOG,
        )
    }

    /// `plutus-sync run -c CONFIG` as `user`, with the groups the user database gives
    /// it, as systemd's `User=` does (setpriv execs it, so signals reach it). The
    /// config and the folders it names must be reachable by that user.
    pub fn start_as(user: &str, config: &Path, dir: &Path) -> Service {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .args(["--init-groups", "--"])
            .arg(bin());
        Service::spawn_with(cmd, config, &dir.join("service.log"), TEST_LOG, true)
    }

    /// `plutus-sync run` inside network namespace `ns` (`ip netns exec` execs it, so
    /// the child is plutus-sync itself and signals reach it).
    pub fn start_in_netns(ns: &str, config: &Path, dir: &Path) -> Service {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(bin());
        Service::spawn(cmd, config, &dir.join("service.log"), TEST_LOG)
    }

    /// `plutus-sync run -c CONFIG` as installed, for benches: log level info (the
    /// shipped default), the unit's environment (`MALLOC_ARENA_MAX`, see
    /// packaging/systemd/plutus-sync.service), the log written afresh to `log`.
    pub fn start_as_installed(config: &Path, log: &Path) -> Service {
        // Removed, not truncated by the open below: that appends, for the tests' sake.
        match fs::remove_file(log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                panic!("remove {}: {e}", log.display())
            }
            _ => {}
        }
        let mut cmd = Command::new(bin());
        cmd.env("MALLOC_ARENA_MAX", UNIT_MALLOC_ARENA_MAX);
        Service::spawn(cmd, config, log, INSTALLED_LOG)
    }

    fn spawn(cmd: Command, config: &Path, log: &Path, level: &str) -> Service {
        Service::spawn_with(cmd, config, log, level, false)
    }

    /// `spawn`; with `any_user`, the notify socket takes a service of another uid.
    fn spawn_with(
        mut cmd: Command,
        config: &Path,
        log: &Path,
        level: &str,
        any_user: bool,
    ) -> Service {
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        // Short path: a socket address holds at most 107 bytes.
        let notify_dir = tempfile::Builder::new()
            .prefix("plutus-notify-")
            .tempdir_in("/tmp")
            .unwrap();
        let notify_path = notify_dir.path().join("n");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        if any_user {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(notify_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
            fs::set_permissions(&notify_path, fs::Permissions::from_mode(0o666)).unwrap();
        }
        notify.set_read_timeout(Some(NOTIFY_READ_TIMEOUT)).unwrap();
        let proc = Proc::spawn(
            cmd.args(["run", "-c"])
                .arg(config)
                .env("PLUTUS_SYNC_LOG", level)
                .env("NOTIFY_SOCKET", &notify_path)
                .env_remove("WATCHDOG_USEC")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(f),
        )
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Service {
            proc: Some(proc),
            log: log.to_path_buf(),
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
        self.wait_ready_within(READY_TIMEOUT);
    }

    /// [`Service::wait_ready`] with a deadline of the caller's: a start-up that opens a
    /// large journal takes longer.
    pub fn wait_ready_within(&mut self, timeout: Duration) {
        if self.ready {
            return;
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            // The socket's read timeout paces the loop.
            if let Ok(n) = self.notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    let (sock, stop) = (self.notify.try_clone().unwrap(), self.drain_stop.clone());
                    thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while !stop.load(Ordering::Relaxed) {
                            let _ = sock.recv(&mut buf); // returns at the read timeout
                        }
                    });
                    self.ready = true;
                    return;
                }
            }
            if let Some(st) = self.exited() {
                panic!(
                    "plutus-sync exited with {st} before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "plutus-sync not ready after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with_usage().0
    }

    /// SIGTERM and wait; returns the exit status and the resource usage of the run.
    pub fn stop_with_usage(&mut self) -> (ExitStatus, libc::rusage) {
        let mut proc = self.proc.take().expect("running");
        proc.signal(libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while proc.try_reap().is_none() {
            if Instant::now() > deadline {
                proc.kill();
                panic!(
                    "plutus-sync did not stop within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        proc.wait()
    }

    /// SIGKILL: no chance to clean up, like a power cut for the process.
    pub fn kill(&mut self) {
        self.proc.take().expect("running").kill();
    }

    pub fn pid(&self) -> u32 {
        self.proc().pid()
    }

    /// When it was spawned (`Instant` and wall clock).
    pub fn spawned(&self) -> (Instant, std::time::SystemTime) {
        (self.proc().spawned(), self.proc().spawned_wall())
    }

    /// Its exit status if it has exited (then reaped), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.as_mut().expect("started, not stopped").try_reap()
    }

    /// Whether it runs: false once it exited, or was stopped or killed.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_some() && self.exited().is_none()
    }

    fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("running")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Proc's own drop kills and reaps it.
        self.proc.take();
        self.drain_stop.store(true, Ordering::Relaxed);
    }
}
