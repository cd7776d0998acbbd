//! `packaging/cron/sync_plutus.sh`, the cron wrapper around `plutus-sync sync`: its
//! lock, its log lines, the exit codes it passes through, and its refusal while the
//! service runs on the same config. Run as a real process, against the real binary
//! (or, to hold a pass open for as long as a test needs, a stand-in that blocks on a
//! FIFO until the test writes to it).

use plutus_testkit::orders::order;
use plutus_testkit::service::bin;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::wait_until;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/cron/sync_plutus.sh");
const WAIT: Duration = Duration::from_secs(20);

/// The wrapper with `--log` and `--lock` in `dir`, running `binary`.
fn wrapper(dir: &Path, binary: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(SCRIPT);
    c.args(args)
        .arg("--log")
        .arg(dir.join("cron.log"))
        .arg("--lock")
        .arg(dir.join("cron.lock"))
        .env("PLUTUS_SYNC_BIN", binary)
        .stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn log_of(dir: &Path) -> String {
    fs::read_to_string(dir.join("cron.log")).unwrap_or_default()
}

/// Every line of the wrapper's log starts `YYYY-MM-DDTHH:MM:SSZ sync_plutus[PID] LEVEL:`.
fn assert_timestamped(log: &str) {
    assert!(!log.is_empty(), "the wrapper logged nothing");
    for line in log.lines() {
        let (ts, rest) = line.split_once(' ').unwrap_or((line, ""));
        assert!(
            humantime::parse_rfc3339(ts).is_ok() && ts.len() == 20,
            "no UTC timestamp at the start of {line:?}"
        );
        assert!(
            rest.starts_with("sync_plutus[") && rest.contains("] "),
            "no tag in {line:?}"
        );
    }
}

/// Whether someone holds an exclusive flock on `path` (tried without blocking).
fn lock_is_held(path: &Path) -> bool {
    let f = fs::File::open(path).unwrap();
    // SAFETY: a valid open file descriptor; flock has no other preconditions.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    // Closing `f` releases the lock if it was taken.
    r != 0
}

#[test]
fn the_cron_wrapper_delivers_logs_timestamped_lines_and_passes_exit_codes_through() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let dir = spool.dir.path();
    let cfg = spool.config.to_str().unwrap();
    spool.drop_order("order-2026-000001.json", &order(1, 500));

    let out = run(&mut wrapper(dir, bin(), &["-c", cfg]));
    let log = log_of(dir);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(spool.archived().len(), 1, "{log}");
    assert_timestamped(&log);
    assert!(log.contains("info: pass started:"), "{log}");
    // The summary and plutus-sync's own log lines, each under the wrapper's stamp.
    assert!(
        log.contains("info: sync: 1 found, 1 archived, 0 quarantined"),
        "{log}"
    );
    assert!(log.contains("verified as"), "{log}");
    assert!(
        log.contains("info: pass ended: exit 0, everything found was archived"),
        "{log}"
    );

    // 1: something was left. A file that is not JSON waits in the outbox as invalid.
    spool.drop_order("broken.json", b"not json");
    let out = run(&mut wrapper(dir, bin(), &["-c", cfg]));
    let log = log_of(dir);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("warning: pass ended: exit 1"), "{log}");

    // 2: an error (here a config that does not exist), with plutus-sync's message.
    let missing = dir.join("nope.toml");
    let out = run(&mut wrapper(dir, bin(), &["-c", missing.to_str().unwrap()]));
    let log = log_of(dir);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("nope.toml: cannot read config"), "{log}");
    assert!(log.contains("err: pass ended: exit 2"), "{log}");
    assert_timestamped(&log);

    // The wrapper's own errors are 2 as well, on stderr, and run nothing.
    let out = run(&mut wrapper(dir, bin(), &["--wait", "soon"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--wait needs a number of seconds"),
        "{out:?}"
    );
}

/// A stand-in for plutus-sync that records each start and end in `runs` and, in
/// between, blocks reading the FIFO `go` until the test writes a line to it; it then
/// exits with the code it read.
struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    fn new() -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let c = std::ffi::CString::new(go.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let script = format!(
            "#!/bin/sh\necho \"start $$\" >> {runs}\nread -r code < {go}\necho \"end $$\" >> {runs}\necho \"sync: stand-in exits $code\"\nexit \"$code\"\n",
            runs = dir.path().join("runs").display(),
            go = go.display()
        );
        let bin = dir.path().join("plutus-sync");
        fs::write(&bin, script).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        StandIn { dir }
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("plutus-sync")
    }
    fn runs(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("runs"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
    /// Let the pass blocked on the FIFO end with `code` (blocks until one reads).
    fn release(&self, code: u8) {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.path().join("go"))
            .unwrap();
        writeln!(f, "{code}").unwrap();
    }
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let mut code = None;
    wait_until(WAIT, "the wrapper to exit", || {
        match child.try_wait().unwrap() {
            Some(st) => {
                code = Some(st.code());
                true
            }
            None => false,
        }
    });
    code.unwrap()
}

#[test]
fn two_overlapping_cron_passes_never_run_at_once_the_second_skips_or_waits_for_the_lock() {
    let stand_in = StandIn::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let lock = dir.join("cron.lock");

    // Pass A starts and blocks inside "plutus-sync", holding the lock.
    let mut a = wrapper(dir, &stand_in.bin(), &[]).spawn().unwrap();
    wait_until(WAIT, "pass A to start plutus-sync", || {
        stand_in.runs().len() == 1
    });
    assert!(lock_is_held(&lock), "pass A runs without holding the lock");

    // Pass B finds the lock held: it skips at once, cleanly, and runs nothing.
    let out = run(&mut wrapper(dir, &stand_in.bin(), &[]));
    assert_eq!(out.status.code(), Some(0), "{}", log_of(dir));
    assert!(
        log_of(dir).contains(&format!(
            "notice: another pass holds {}; skipped",
            lock.display()
        )),
        "{}",
        log_of(dir)
    );
    assert_eq!(stand_in.runs().len(), 1, "pass B ran plutus-sync");

    // A ends; its exit code (here 1) is the wrapper's.
    stand_in.release(1);
    assert_eq!(wait_exit(&mut a), Some(1), "{}", log_of(dir));
    assert!(!lock_is_held(&lock), "the lock outlived its pass");

    // With --wait, pass C waits for A's lock instead, and runs once A is done.
    let mut a = wrapper(dir, &stand_in.bin(), &[]).spawn().unwrap();
    wait_until(WAIT, "pass A to start again", || stand_in.runs().len() == 3);
    let mut c = wrapper(dir, &stand_in.bin(), &["--wait", "60"])
        .spawn()
        .unwrap();
    wait_until(WAIT, "pass C to wait for the lock", || {
        log_of(dir).contains("waiting up to 60s")
    });
    assert!(c.try_wait().unwrap().is_none(), "C gave up waiting");
    assert_eq!(stand_in.runs().len(), 3, "C ran while A held the lock");
    stand_in.release(0);
    assert_eq!(wait_exit(&mut a), Some(0));
    wait_until(WAIT, "pass C to start plutus-sync", || {
        stand_in.runs().len() == 5
    });
    stand_in.release(4);
    assert_eq!(wait_exit(&mut c), Some(4), "{}", log_of(dir));

    // Never two at once: every start is followed by its own end.
    let runs = stand_in.runs();
    for pair in runs.chunks(2) {
        let pid = pair[0].strip_prefix("start ").expect("a start");
        assert_eq!(pair[1], format!("end {pid}"), "overlapping runs: {runs:?}");
    }
    let log = log_of(dir);
    assert_timestamped(&log);
    assert!(log.contains("info: sync: stand-in exits 4"), "{log}");
    assert!(log.contains("err: pass ended: exit 4"), "{log}");
}

#[test]
fn the_cron_wrapper_refuses_while_the_service_runs_on_the_same_config_and_touches_nothing() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let dir = spool.dir.path();
    let mut svc = spool.start();
    svc.wait_ready();

    let out = run(&mut wrapper(
        dir,
        bin(),
        &["-c", spool.config.to_str().unwrap()],
    ));
    let log = log_of(dir);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(
        log.contains(&format!("the service is running (pid {},", svc.pid())),
        "{log}"
    );
    assert!(
        log.contains("err: pass refused: exit 3, the service runs on this config"),
        "{log}"
    );
    assert!(!log.contains("sync: "), "a pass ran: {log}");
    assert_timestamped(&log);
    assert!(svc.is_running(), "the service is unaffected");
    svc.stop();

    // Once the service is stopped, the same line runs a pass.
    let out = run(&mut wrapper(
        dir,
        bin(),
        &["-c", spool.config.to_str().unwrap()],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", log_of(dir));
}
