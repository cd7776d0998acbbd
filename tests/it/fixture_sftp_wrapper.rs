//! Proves `testkit/sftp_wrapper.py` (the misbehaving-SFTP-server
//! fixture behind [`Sshd::start_with_sftp_wrapper`]) with the stock OpenSSH
//! `sftp` client only, so a broken wrapper cannot hide behind plutus-sync.
//!
//! OpenSSH's `sftp` sends `posix-rename@openssh.com` for `rename` whenever
//! the server offers it (which replaces the target on any server): the tests
//! use `rename -l`, which sends the plain v3 `SSH_FXP_RENAME` that the
//! wrapper rewrites. `put -f` sends `fsync@openssh.com` after the data.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use plutus_testkit::poll_until;
use plutus_testkit::sshd::Sshd;

/// Bounds one `sftp -b` run, so a wedged wrapper fails the test instead of
/// hanging it.
const SFTP_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What OpenSSH's `sftp` prints when an fsync@openssh.com request fails.
const FSYNC_FAILED: &str = "remote fsync: Failure";

struct Run {
    batch: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self, sshd: &Sshd) -> String {
        format!(
            "sftp {}\n--- batch ---\n{}--- stdout ---\n{}\n--- stderr ---\n{}\n--- sshd log ---\n{}",
            self.status,
            self.batch,
            self.stdout,
            self.stderr,
            sshd.log()
        )
    }
}

/// Runs `batch` with `sftp -b -` against the fixture; the batch stops at the
/// first failing command (and the exit status says so).
fn sftp_batch(sshd: &Sshd, batch: &str) -> Run {
    let mut child = sshd
        .sftp_batch(sshd.known_hosts(), sshd.port())
        .spawn()
        .expect("run sftp (install openssh-client)");
    let mut stdin = child.stdin.take().expect("sftp stdin");
    stdin.write_all(batch.as_bytes()).expect("write sftp batch");
    drop(stdin);

    // Drained on threads so a chatty sftp cannot block on a full pipe
    // while we wait for it to exit.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("sftp stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("sftp stderr")));

    let mut status = None;
    let exited = poll_until(SFTP_TIMEOUT, || {
        status = child.try_wait().expect("wait for sftp");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    let run = Run {
        batch: batch.to_string(),
        status: status.unwrap_or_else(|| child.wait().expect("reap sftp")),
        stdout: stdout.join().expect("sftp stdout reader"),
        stderr: stderr.join().expect("sftp stderr reader"),
    };
    assert!(
        exited,
        "sftp did not finish within {SFTP_TIMEOUT:?}\n{}",
        run.describe(sshd)
    );
    run
}

/// Writes a local file beside the fixture: binary, with CR/LF and NULs, so
/// a wrapper that is not byte-exact shows.
fn local_file(sshd: &Sshd, name: &str, fill: u8) -> (PathBuf, Vec<u8>) {
    let payload: Vec<u8> = format!("<order id=\"{name}\"/>\r\n")
        .into_bytes()
        .into_iter()
        .chain((0u8..=255).cycle().take(70_000).map(|b| b ^ fill))
        .collect();
    let path = sshd.dir().join(format!("{name}.local"));
    fs::write(&path, &payload).expect("write local file");
    (path, payload)
}

fn remote(sshd: &Sshd, name: &str) -> String {
    format!("\"{}/{name}\"", sshd.inbox().display())
}

fn put(flags: &str, local: &Path, sshd: &Sshd, name: &str) -> String {
    format!(
        "put {flags} \"{}\" {}\n",
        local.display(),
        remote(sshd, name)
    )
}

fn legacy_rename(sshd: &Sshd, from: &str, to: &str) -> String {
    format!("rename -l {} {}\n", remote(sshd, from), remote(sshd, to))
}

fn inbox_bytes(sshd: &Sshd, name: &str) -> Option<Vec<u8>> {
    fs::read(sshd.inbox().join(name)).ok()
}

/// Wrapper processes of this fixture still alive (found by their `--log`
/// path, which lies in the fixture's own temp dir).
fn live_wrappers(sshd: &Sshd) -> Vec<String> {
    let dir = sshd.dir().display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains("sftp_wrapper.py") && cmd.contains(&dir))
        .collect()
}

#[test]
fn passthrough_wrapper_delivers_and_refuses_rename_onto_an_existing_file() {
    let sshd = Sshd::start_with_sftp_wrapper("passthrough");
    let (first, first_bytes) = local_file(&sshd, "first", 0x00);
    let (second, _) = local_file(&sshd, "second", 0x5a);

    // put -f: fsync@openssh.com passes through and succeeds.
    let batch = put("-f", &first, &sshd, "order.xml.part")
        + &legacy_rename(&sshd, "order.xml.part", "order.xml");
    let run = sftp_batch(&sshd, &batch);
    assert!(run.status.success(), "{}", run.describe(&sshd));
    assert!(
        !run.stderr.contains(FSYNC_FAILED),
        "{}",
        run.describe(&sshd)
    );
    assert_eq!(inbox_bytes(&sshd, "order.xml").as_ref(), Some(&first_bytes));
    assert_eq!(inbox_bytes(&sshd, "order.xml.part"), None);

    let batch = put("", &second, &sshd, "second.xml.part")
        + &legacy_rename(&sshd, "second.xml.part", "order.xml");
    let run = sftp_batch(&sshd, &batch);
    assert!(!run.status.success(), "{}", run.describe(&sshd));
    assert!(
        run.stderr.contains("remote rename") && run.stderr.contains("Failure"),
        "{}",
        run.describe(&sshd)
    );
    assert_eq!(inbox_bytes(&sshd, "order.xml").as_ref(), Some(&first_bytes));
    assert!(inbox_bytes(&sshd, "second.xml.part").is_some());

    // The wrapper really was in the path, and rewrote nothing.
    let log = sshd.log();
    assert!(
        log.contains("sftp_wrapper[") && log.contains("started: modes=passthrough"),
        "{log}"
    );
    assert!(
        !log.contains("rename-overwrites:") && !log.contains("fsync-fails:"),
        "{log}"
    );
}

#[test]
fn rename_overwrites_wrapper_lets_a_rename_replace_an_existing_file() {
    let sshd = Sshd::start_with_sftp_wrapper("rename-overwrites");
    let (old, old_bytes) = local_file(&sshd, "old", 0x00);
    let (new, new_bytes) = local_file(&sshd, "new", 0xa5);
    assert_ne!(old_bytes, new_bytes);

    let batch = put("", &old, &sshd, "order.xml")
        + &put("", &new, &sshd, "order.xml.part")
        + &legacy_rename(&sshd, "order.xml.part", "order.xml");
    let run = sftp_batch(&sshd, &batch);
    assert!(run.status.success(), "{}", run.describe(&sshd));
    assert!(
        inbox_bytes(&sshd, "order.xml") == Some(new_bytes),
        "order.xml was not replaced\n{}",
        run.describe(&sshd)
    );
    assert_eq!(inbox_bytes(&sshd, "order.xml.part"), None);

    let log = sshd.log();
    let rewrites: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rename-overwrites: id="))
        .collect();
    assert_eq!(rewrites.len(), 1, "{log}");
    assert!(
        rewrites[0].contains("order.xml.part")
            && rewrites[0].contains("forwarded as posix-rename@openssh.com"),
        "{log}"
    );
}

#[test]
fn fsync_fails_wrapper_fails_put_with_fsync_but_not_plain_put() {
    let sshd = Sshd::start_with_sftp_wrapper("fsync-fails");
    let (local, bytes) = local_file(&sshd, "order", 0x00);

    let plain = sftp_batch(&sshd, &put("", &local, &sshd, "plain.xml"));
    assert!(plain.status.success(), "{}", plain.describe(&sshd));
    assert!(!plain.stderr.contains("fsync"), "{}", plain.describe(&sshd));
    assert_eq!(inbox_bytes(&sshd, "plain.xml").as_ref(), Some(&bytes));
    assert!(!sshd.log().contains("fsync-fails:"), "{}", sshd.log());

    // OpenSSH's sftp reports the failed fsync on stderr (as the bare status
    // text: the server's message is not shown) but does not fail the
    // command for it, so the exit status is not asserted.
    let synced = sftp_batch(&sshd, &put("-f", &local, &sshd, "synced.xml"));
    assert!(
        synced.stderr.contains(FSYNC_FAILED),
        "{}",
        synced.describe(&sshd)
    );
    // Only the fsync was answered by the wrapper: the data went through.
    assert_eq!(inbox_bytes(&sshd, "synced.xml").as_ref(), Some(&bytes));
    let log = sshd.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("fsync-fails: id=")
                && l.contains("answered with SSH_FX_FAILURE"))
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn combined_modes_both_replace_on_rename_and_fail_fsync() {
    let sshd = Sshd::start_with_sftp_wrapper("rename-overwrites,fsync-fails");
    let (old, _) = local_file(&sshd, "old", 0x00);
    let (new, new_bytes) = local_file(&sshd, "new", 0x3c);

    let batch = put("", &old, &sshd, "order.xml")
        + &put("-f", &new, &sshd, "order.xml.part")
        + &legacy_rename(&sshd, "order.xml.part", "order.xml");
    let run = sftp_batch(&sshd, &batch);
    assert!(run.stderr.contains(FSYNC_FAILED), "{}", run.describe(&sshd));
    assert!(run.status.success(), "{}", run.describe(&sshd));
    assert!(
        inbox_bytes(&sshd, "order.xml") == Some(new_bytes),
        "order.xml was not replaced\n{}",
        run.describe(&sshd)
    );
    let log = sshd.log();
    assert!(
        log.contains("rename-overwrites: id=") && log.contains("fsync-fails: id="),
        "{log}"
    );
}

#[test]
fn wrapper_exits_when_the_client_disconnects() {
    let sshd = Sshd::start_with_sftp_wrapper("passthrough");
    let (local, _) = local_file(&sshd, "order", 0x00);
    let run = sftp_batch(&sshd, &put("", &local, &sshd, "order.xml"));
    assert!(run.status.success(), "{}", run.describe(&sshd));

    let mut alive = Vec::new();
    let gone = poll_until(EXIT_TIMEOUT, || {
        alive = live_wrappers(&sshd);
        alive.is_empty()
    });
    assert!(
        gone,
        "wrapper still running {EXIT_TIMEOUT:?} after the client left: {alive:?}\n{}",
        sshd.log()
    );
    assert!(
        sshd.log().contains("server exited with status 0"),
        "{}",
        sshd.log()
    );
}
