//! End-to-end delivery against a real sshd: the binary, the journal and the bytes.

use plutus_state::State;
use plutus_testkit::checks::*;
use plutus_testkit::erp::Erp;
use plutus_testkit::files::names_in;
use plutus_testkit::orders::order;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::{poll_until, wait_until};
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn a_file_is_delivered_over_sftp_verified_and_archived_byte_identical() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();

    let body = order(1, 4000);
    let closed = Instant::now();
    spool.drop_order("order-2026-000001.json", &body);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    let elapsed = closed.elapsed();
    assert_eq!(svc.stop().code(), Some(0), "SIGTERM exits 0");

    assert_delivered_exactly_once(
        &spool,
        sshd.inbox(),
        &[("order-2026-000001.json".into(), body.clone())],
    );
    let rec = &spool.entries()[0];
    // Every step is in the history, in order.
    let steps: Vec<State> = rec.history.iter().map(|t| t.to).collect();
    assert_eq!(
        steps,
        vec![
            State::Pending,
            State::Sent,
            State::Verified,
            State::Archived
        ]
    );
    assert!(
        rec.archive_path.as_deref().unwrap().contains("/archive/20"),
        "{:?}",
        rec.archive_path
    );
    assert!(rec
        .remote_path
        .as_deref()
        .unwrap()
        .ends_with("/inbox/order-2026-000001.json"));
    eprintln!("close -> archived (including the test's 20 ms polling): {elapsed:?}");
}

#[test]
fn a_burst_of_1000_files_is_delivered_exactly_once() {
    let sshd = Sshd::start();
    // An importing ERP: "exactly once" means imported once.
    let erp = Erp::start(sshd.inbox(), ".json");
    let spool = Spool::for_sshd(&sshd, "connections = 4");
    let mut svc = spool.start();
    svc.wait_ready();
    let orders: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|n| {
            (
                format!("order-2026-{n:06}.json"),
                order(n, 1000 + (n * 37) % 9000),
            )
        })
        .collect();
    let started = Instant::now();
    for (name, body) in &orders {
        spool.drop_order(name, body);
    }
    wait_archived(&spool, &svc, 1000, Duration::from_secs(180));
    eprintln!("1000 files delivered in {:?}", started.elapsed());
    wait_no_temps(sshd.inbox());
    assert_eq!(svc.stop().code(), Some(0));
    assert_imported_exactly_once(&spool, &erp, sshd.inbox(), &orders);
}

#[test]
fn a_file_still_being_written_is_not_sent_half() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();

    // The writer keeps the file open and appends for longer than `settle` (300 ms) and
    // across several sweeps (every 1 s), without closing it: no close event, and the
    // mtime never settles.
    let name = "order-2026-000042.json";
    let body = order(42, 8000);
    let path = spool.outbox().join(name);
    let mut f = fs::File::create(&path).unwrap();
    let chunks: Vec<&[u8]> = body.chunks(body.len() / 20 + 1).collect();
    for c in &chunks {
        f.write_all(c).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            !sshd.inbox().join(name).exists(),
            "a half-written file reached the inbox under its final name"
        );
        // Nothing of this order, not even a temp; the service's own probe files of
        // the server (`plutus-sync-check-*`, written after READY) are no part of it.
        let uploaded: Vec<String> = fs::read_dir(sshd.inbox())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(name))
            .collect();
        assert!(
            uploaded.is_empty(),
            "nothing may be uploaded yet: {uploaded:?}"
        );
    }
    drop(f); // close: IN_CLOSE_WRITE
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    svc.stop();
    assert_eq!(fs::read(sshd.inbox().join(name)).unwrap(), body);
    assert_delivered_exactly_once(&spool, sshd.inbox(), &[(name.into(), body)]);
}

#[test]
fn a_file_found_by_the_sweep_waits_until_it_has_settled() {
    let sshd = Sshd::start();
    // A long settle makes the wait observable.
    let spool = Spool::for_sshd(&sshd, "");
    spool.set_config("settle = \"300ms\"", "settle = \"2s\"");
    spool.set_config("quarantine_after = \"1s\"", "quarantine_after = \"10s\"");
    // Written before the service starts: no event, only the start-up sweep sees it.
    let body = order(7, 2000);
    spool.drop_order("order-2026-000007.json", &body);
    let written = Instant::now();
    let mut svc = spool.start();
    svc.wait_ready();
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    assert!(
        written.elapsed() >= Duration::from_secs(2),
        "taken after {:?}, before settle",
        written.elapsed()
    );
    svc.stop();
    assert_delivered_exactly_once(
        &spool,
        sshd.inbox(),
        &[("order-2026-000007.json".into(), body)],
    );
    assert_eq!(spool.entries()[0].found_by, "sweep");
}

#[test]
fn invalid_json_and_empty_files_are_quarantined_and_never_sent() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    spool.drop_order("order-bad.json", b"{\"order_id\": \"2026-1\", ");
    spool.drop_order("order-empty.json", b"");
    let good = order(3, 1500);
    spool.drop_order("order-good.json", &good);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    wait_until(Duration::from_secs(10), "two quarantined files", || {
        names_in(&spool.quarantine())
            .iter()
            .filter(|n| n.ends_with(".json"))
            .count()
            == 2
    });
    svc.stop();

    assert_eq!(names_in(sshd.inbox()), vec!["order-good.json".to_string()]);
    assert_eq!(
        fs::read(spool.quarantine().join("order-bad.json")).unwrap(),
        b"{\"order_id\": \"2026-1\", "
    );
    assert_eq!(
        fs::read(spool.quarantine().join("order-empty.json")).unwrap(),
        b""
    );
    let reason = fs::read_to_string(spool.quarantine().join("order-bad.json.reason")).unwrap();
    assert!(reason.contains("not well-formed JSON"), "{reason}");
    let reason = fs::read_to_string(spool.quarantine().join("order-empty.json.reason")).unwrap();
    assert!(reason.contains("empty file"), "{reason}");
    for rec in spool
        .entries()
        .iter()
        .filter(|r| r.name != "order-good.json")
    {
        assert_eq!(rec.state(), State::Quarantined, "{}", rec.name);
        assert!(rec.quarantine_path.as_deref().unwrap().ends_with(&rec.name));
        assert!(rec.last_error.is_some());
    }
}

#[test]
fn names_that_are_hidden_temporary_or_off_pattern_are_left_alone() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let ignored = [
        ".order-1.json",
        "order-2.json.part",
        "order-3.json.tmp",
        "order-4.json~",
        "order-5.xml",
    ];
    for n in ignored {
        spool.drop_order(n, b"{}");
    }
    std::os::unix::fs::symlink("/etc/hostname", spool.outbox().join("link.json")).unwrap();
    fs::create_dir(spool.outbox().join("dir.json")).unwrap();
    // Names that a Linux inbox takes as they are (`names = "posix"`; the portable
    // default quarantines them: `names_a_windows_inbox_would_misread_…`).
    spool.set_config(
        "settle = \"300ms\"",
        "settle = \"300ms\"\nnames = \"posix\"",
    );
    let odd = [
        "-leading dash.json",
        "with space and \"quotes\".json",
        "übergröße-ß.json",
    ];
    let orders: Vec<(String, Vec<u8>)> = odd
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), order(i, 1200)))
        .collect();
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    let mut svc = spool.start();
    svc.wait_ready();
    wait_archived(&spool, &svc, orders.len(), Duration::from_secs(20));
    // Two more sweeps: nothing else may be taken.
    std::thread::sleep(Duration::from_millis(2500));
    svc.stop();
    assert_eq!(spool.entries().len(), orders.len());
    let mut left = names_in(&spool.outbox());
    left.sort();
    let mut want: Vec<String> = ignored
        .iter()
        .map(|s| s.to_string())
        .chain(["dir.json".into(), "link.json".into()])
        .collect();
    want.sort();
    assert_eq!(left, want, "ignored names stay in the outbox untouched");
    let mut inbox = names_in(sshd.inbox());
    inbox.sort();
    let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(inbox, want);
}

#[test]
fn an_unknown_host_key_is_refused_and_nothing_is_sent() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(
        &sshd,
        &format!("known_hosts = \"{}\"", sshd.empty_known_hosts().display()),
    );
    let body = order(9, 3000);
    spool.drop_order("order-2026-000009.json", &body);
    let (status, stdout, stderr) = spool.sync();
    assert_eq!(status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("host key is unknown"), "{stderr}");
    assert!(
        stderr.contains(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", sshd.port())),
        "the hint prints the line to add: {stderr}"
    );
    assert!(stdout.contains("1 found, 0 archived"), "{stdout}");
    // Nothing at all reached the server, and the order is still in the outbox.
    assert!(names_in(sshd.inbox()).is_empty());
    assert_eq!(
        fs::read(spool.outbox().join("order-2026-000009.json")).unwrap(),
        body
    );
    let e = spool.entries();
    assert_eq!(
        (e.len(), e[0].state(), e[0].attempts),
        (1, State::Pending, 0)
    );
}

#[test]
fn a_changed_host_key_is_refused_and_nothing_is_sent() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(
        &sshd,
        &format!("known_hosts = \"{}\"", sshd.other_known_hosts().display()),
    );
    spool.drop_order("order-2026-000010.json", &order(10, 3000));
    let mut svc = spool.start();
    svc.wait_ready();
    wait_for_log(&svc, "host key has CHANGED", Duration::from_secs(20));
    // The service keeps probing with backoff, and never sends a byte.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(svc.is_running());
    assert!(names_in(sshd.inbox()).is_empty());
    svc.stop();
    assert_eq!(
        names_in(&spool.outbox()),
        vec!["order-2026-000010.json".to_string()]
    );
    assert_eq!(spool.entries()[0].state(), State::Pending);
    assert_eq!(
        spool.entries()[0].attempts,
        0,
        "a destination-wide error burns no attempt"
    );
}

#[test]
fn sshd_stopped_and_restarted_mid_stream_delivers_every_file_afterwards() {
    let mut sshd = Sshd::start();
    // An importing ERP: "exactly once" means imported once.
    let erp = Erp::start(sshd.inbox(), ".json");
    let spool = Spool::for_sshd(&sshd, "timeout = \"2s\"");
    let mut svc = spool.start();
    svc.wait_ready();
    let orders: Vec<(String, Vec<u8>)> = (0..120)
        .map(|n| (format!("order-2026-{n:06}.json"), order(n, 2500)))
        .collect();
    for (n, b) in &orders[..40] {
        spool.drop_order(n, b);
    }
    wait_archived(&spool, &svc, 40, Duration::from_secs(30));
    sshd.stop();
    for (n, b) in &orders[40..] {
        spool.drop_order(n, b);
        std::thread::sleep(Duration::from_millis(5));
    }
    // While it is down, nothing new is delivered and nothing is lost.
    assert!(!poll_until(Duration::from_millis(1500), || spool
        .archived()
        .len()
        > 40));
    assert_eq!(names_in(&spool.outbox()).len(), 80);
    sshd.restart();
    wait_archived(&spool, &svc, 120, Duration::from_secs(60));
    wait_no_temps(sshd.inbox());
    assert_eq!(svc.stop().code(), Some(0));
    assert_imported_exactly_once(&spool, &erp, sshd.inbox(), &orders);
    let log = svc.log_text();
    assert!(log.contains("reachable again"), "{}", tail(&log, 40));
    // Logged once per backoff step, not once per file: far fewer than 80 lines.
    let downs = log.matches("destination down").count();
    assert!((1..40).contains(&downs), "{downs} 'destination down' lines");
}

#[test]
fn the_same_content_already_in_the_inbox_counts_as_delivered_and_a_different_one_fails() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let same = order(1, 2000);
    fs::write(sshd.inbox().join("order-same.json"), &same).unwrap();
    fs::write(sshd.inbox().join("order-conflict.json"), order(2, 2000)).unwrap();
    spool.drop_order("order-same.json", &same);
    let mine = order(3, 2000);
    spool.drop_order("order-conflict.json", &mine);
    let (status, stdout, stderr) = spool.sync();
    assert_eq!(
        status.code(),
        Some(1),
        "one file failed: {stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(
            "2 found, 1 archived, 0 quarantined, 0 invalid (left in the outbox), 1 failed"
        ),
        "{stdout}"
    );
    // Never overwritten.
    assert_eq!(
        fs::read(sshd.inbox().join("order-conflict.json")).unwrap(),
        order(2, 2000)
    );
    assert_eq!(
        fs::read(spool.outbox().join("order-conflict.json")).unwrap(),
        mine
    );
    // The conflict's temp is no `sent` entry's any more: the end of the pass took it.
    assert_eq!(
        names_in(sshd.inbox()),
        vec![
            "order-conflict.json".to_string(),
            "order-same.json".to_string()
        ]
    );
    let entries = spool.entries();
    let c = entries
        .iter()
        .find(|r| r.name == "order-conflict.json")
        .unwrap();
    assert_eq!(c.state(), State::Failed);
    assert!(
        c.last_error.as_deref().unwrap().contains("not overwritten"),
        "{:?}",
        c.last_error
    );
    let s = entries
        .iter()
        .find(|r| r.name == "order-same.json")
        .unwrap();
    assert_eq!(s.state(), State::Archived);
}

#[test]
fn sync_delivers_everything_found_and_exits_zero() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let orders: Vec<(String, Vec<u8>)> = (0..25)
        .map(|n| (format!("order-2026-{n:06}.json"), order(n, 3000)))
        .collect();
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    // Not settled yet: sync waits for them rather than skipping them.
    let (status, stdout, stderr) = spool.sync();
    assert_eq!(status.code(), Some(0), "{stdout}\n{}", tail(&stderr, 30));
    assert!(stdout.contains("25 found, 25 archived"), "{stdout}");
    assert_delivered_exactly_once(&spool, sshd.inbox(), &orders);
    // A second run finds nothing and still exits 0.
    let (status, stdout, _) = spool.sync();
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("0 found"), "{stdout}");
}

#[test]
fn sync_exits_nonzero_and_keeps_files_when_the_destination_is_down() {
    let mut sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "timeout = \"2s\"");
    sshd.stop();
    let body = order(5, 2000);
    spool.drop_order("order-2026-000005.json", &body);
    let (status, stdout, stderr) = spool.sync();
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 found, 0 archived"), "{stdout}");
    assert!(stdout.contains("cannot connect"), "{stdout}");
    assert_eq!(
        fs::read(spool.outbox().join("order-2026-000005.json")).unwrap(),
        body
    );
    assert_eq!(spool.entries()[0].attempts, 0);
}

#[test]
fn temp_files_a_crash_left_in_the_inbox_are_removed_at_start() {
    let sshd = Sshd::start();
    fs::write(sshd.inbox().join("order-2026-000001.json.part"), b"{\"half").unwrap();
    fs::write(sshd.inbox().join("someone-elses.json"), b"{}").unwrap();
    // The ERP's own temp file: its final name is not one plutus-sync would send.
    fs::write(sshd.inbox().join("import-log.txt.part"), b"x").unwrap();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    wait_until(
        Duration::from_secs(20),
        "the leftover temp file to go",
        || !sshd.inbox().join("order-2026-000001.json.part").exists(),
    );
    svc.stop();
    assert_eq!(
        names_in(sshd.inbox()),
        vec![
            "import-log.txt.part".to_string(),
            "someone-elses.json".to_string()
        ]
    );
}

#[test]
fn a_second_copy_of_an_archived_order_is_archived_without_being_sent() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let body = order(77, 2500);
    let mut svc = spool.start();
    svc.wait_ready();
    spool.drop_order("order-2026-000077.json", &body);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    // The ERP imports (deletes) it; the web shop writes the same order again.
    fs::remove_file(sshd.inbox().join("order-2026-000077.json")).unwrap();
    spool.drop_order("order-2026-000077.json", &body);
    wait_archived(&spool, &svc, 2, Duration::from_secs(20));
    svc.stop();
    assert!(
        names_in(sshd.inbox()).is_empty(),
        "the duplicate was sent again"
    );
    let e = spool.entries();
    assert_eq!(e.len(), 2);
    assert!(e.iter().all(|r| r.state() == State::Archived));
    let note = e[1]
        .history
        .iter()
        .find(|t| t.to == State::Verified)
        .unwrap();
    assert!(
        format!("{:?}", note.event).contains("duplicate of #"),
        "{:?}",
        note.event
    );
}

#[test]
fn a_file_created_empty_then_written_in_a_second_open_is_delivered_not_quarantined() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    let name = "order-2026-000050.json";
    let body = order(50, 3000);
    // `touch` then write: the first close-after-write event sees an empty file, the
    // second a half one, before the writer is done.
    spool.drop_order(name, b"");
    std::thread::sleep(Duration::from_millis(50));
    spool.drop_order(name, &body[..body.len() / 2]);
    std::thread::sleep(Duration::from_millis(50));
    spool.drop_order(name, &body);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    svc.stop();
    assert!(
        names_in(&spool.quarantine()).is_empty(),
        "quarantined: {:?}",
        names_in(&spool.quarantine())
    );
    assert_delivered_exactly_once(&spool, sshd.inbox(), &[(name.into(), body)]);
}

#[test]
fn a_leftover_temp_name_that_cannot_be_removed_does_not_stop_delivery() {
    let sshd = Sshd::start();
    // A folder with a temp name (non-empty, so it cannot be unlinked) sits in the inbox.
    fs::create_dir_all(sshd.inbox().join("stuck.json.part/inside")).unwrap();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    let body = order(8, 1500);
    spool.drop_order("order-2026-000008.json", &body);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    svc.stop();
    assert_eq!(
        fs::read(sshd.inbox().join("order-2026-000008.json")).unwrap(),
        body
    );
    assert!(svc
        .log_text()
        .contains("cannot remove a leftover temp file"));
    assert!(!svc.log_text().contains("destination down"));
}

#[test]
#[ignore = "needs root: makes a file immutable (chattr +i); tests/ci.sh runs it"]
fn a_leftover_temp_that_cannot_be_truncated_or_removed_does_not_block_its_order_and_is_cleaned_later(
) {
    plutus_testkit::require_root("makes a file immutable (chattr +i)");
    let sshd = Sshd::start();
    let name = "order-2026-000009.json";
    let body = order(9, 1500);
    // What a dropped session leaves on a server that will not let it be truncated or
    // replaced (ProFTPD's AllowOverwrite off, Win32-OpenSSH's exclusive open): a temp
    // of this very order, in the old single-name scheme and in the per-attempt one.
    let leftovers = [
        format!("{name}.part"),
        plutus_sync::transfer::temp_name(name, 1, ".part"),
    ];
    for l in &leftovers {
        let p = sshd.inbox().join(l);
        fs::write(&p, &body[..700]).unwrap();
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success(), "chattr +i {}", p.display());
    }
    // Unlocked on every way out, a panic included, so the temp dir can be removed.
    struct Unlock(Vec<std::path::PathBuf>);
    impl Unlock {
        fn now(&self) {
            for p in &self.0 {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(p)
                    .status();
            }
        }
    }
    impl Drop for Unlock {
        fn drop(&mut self) {
            self.now();
        }
    }
    let unlock = Unlock(leftovers.iter().map(|l| sshd.inbox().join(l)).collect());
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    spool.drop_order(name, &body);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    assert_eq!(fs::read(sshd.inbox().join(name)).unwrap(), body);
    wait_for_log(
        &svc,
        "cannot remove a leftover temp file",
        Duration::from_secs(10),
    );
    for l in &leftovers {
        assert!(sshd.inbox().join(l).exists(), "{l} is immutable, yet gone");
    }
    // Once the server lets go, the periodic clean-up (every sweep interval) takes them.
    unlock.now();
    let gone = plutus_testkit::poll_until(Duration::from_secs(15), || {
        leftovers.iter().all(|l| !sshd.inbox().join(l).exists())
    });
    assert!(gone, "leftovers still there: {:?}", names_in(sshd.inbox()));
    svc.stop();
    assert_eq!(names_in(sshd.inbox()), vec![name.to_string()]);
}

#[test]
fn links_fifos_and_folders_in_the_outbox_are_never_followed_or_waited_on_and_orders_still_flow() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let outbox = spool.outbox();
    let secret = spool.dir.path().join("secret.json");
    fs::write(&secret, br#"{"password": "hunter2"}"#).unwrap();
    std::os::unix::fs::symlink(&secret, outbox.join("order-secret.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", outbox.join("order-zero.json")).unwrap();
    std::os::unix::fs::symlink("/etc", outbox.join("order-dir.json")).unwrap();
    fs::create_dir(outbox.join("order-folder.json")).unwrap();
    // A second name for a file outside the outbox (same file system).
    let other = spool.dir.path().join("other.json");
    fs::write(&other, br#"{"not": "an order"}"#).unwrap();
    fs::hard_link(&other, outbox.join("order-hardlink.json")).unwrap();
    for n in ["order-fifo-1.json", "order-fifo-2.json"] {
        let c =
            std::ffi::CString::new(outbox.join(n).into_os_string().into_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    }
    let mut svc = spool.start();
    svc.wait_ready();
    let orders: Vec<(String, Vec<u8>)> = (0..10)
        .map(|n| (format!("order-2026-{n:06}.json"), order(n, 1500)))
        .collect();
    for (n, b) in &orders[..5] {
        spool.drop_order(n, b);
    }
    wait_archived(&spool, &svc, 5, Duration::from_secs(20));
    // And more, while the hostile names are still there for every sweep to meet.
    for (n, b) in &orders[5..] {
        spool.drop_order(n, b);
    }
    wait_archived(&spool, &svc, 10, Duration::from_secs(20));
    let t = Instant::now();
    assert_eq!(svc.stop().code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        t.elapsed()
    );
    let mut want: Vec<String> = orders.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(
        names_in(sshd.inbox()),
        want,
        "only the regular files' bytes reach the inbox"
    );
    for (n, b) in &orders {
        assert_eq!(&fs::read(sshd.inbox().join(n)).unwrap(), b);
    }
    // Left where they are, untouched.
    assert_eq!(
        fs::read_link(outbox.join("order-secret.json")).unwrap(),
        secret
    );
    assert!(outbox.join("order-fifo-1.json").exists());
    assert!(outbox.join("order-hardlink.json").exists());
}

#[test]
fn names_a_windows_inbox_would_misread_are_quarantined_with_the_reason_and_printed_escaped() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let hostile = [
        "x\\..\\..\\evil.json",
        "a:b.json",
        "CON.json",
        "order .json",
        "order\nINFO forged line.json",
    ];
    let body = order(1, 800);
    for n in hostile {
        spool.drop_order(n, &body);
    }
    spool.drop_order("order-2026-000001.json", &body);
    // A trailing dot never matches `*.json`: not taken at all, left where it is.
    spool.drop_order("order.json.", &body);
    let (status, stdout, stderr) = spool.sync();
    assert!(
        stdout.contains(
            "6 found, 1 archived, 5 quarantined, 0 invalid (left in the outbox), 0 failed"
        ),
        "{status:?} {stdout}\n{}",
        tail(&stderr, 20)
    );
    assert!(spool.outbox().join("order.json.").exists());
    assert_eq!(
        names_in(sshd.inbox()),
        vec!["order-2026-000001.json".to_string()],
        "only the portable name was sent"
    );
    for n in hostile {
        assert!(
            spool.quarantine().join(n).exists(),
            "{n:?} not quarantined: {:?}",
            names_in(&spool.quarantine())
        );
        let mut note = spool.quarantine().join(n).into_os_string();
        note.push(".reason");
        let why = fs::read_to_string(note).unwrap();
        assert!(why.contains("never sent"), "{n:?}: {why}");
    }
    // No name forges a line: every log line and every `journal list` line starts as
    // the tool writes it.
    assert!(
        !stderr.lines().any(|l| l.starts_with("INFO forged")),
        "{stderr}"
    );
    let list = spool.ok(&["journal", "list"]);
    assert!(
        !list.lines().any(|l| l.starts_with("INFO forged")),
        "{list}"
    );
    assert!(list.contains(r#""order\nINFO forged line.json""#), "{list}");
    // `show` prints paths and reasons that carry the name: escaped there too.
    let show = spool.ok(&["journal", "show", "order\nINFO forged line.json"]);
    assert!(
        !show.lines().any(|l| l.starts_with("INFO forged")),
        "{show}"
    );
    assert!(
        show.contains(r"quarantine/order\nINFO forged line.json"),
        "{show}"
    );
}

#[test]
fn a_file_larger_than_max_size_is_quarantined_with_the_reason_and_never_read_whole() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    spool.set_config(
        "settle = \"300ms\"",
        "settle = \"300ms\"\nmax_size = \"2KiB\"",
    );
    let small = order(1, 1500);
    let big = order(2, 5000);
    spool.drop_order("order-small.json", &small);
    spool.drop_order("order-big.json", &big);
    let (_, stdout, stderr) = spool.sync();
    assert!(
        stdout.contains("2 found, 1 archived, 1 quarantined"),
        "{stdout}\n{}",
        tail(&stderr, 20)
    );
    assert_eq!(names_in(sshd.inbox()), vec!["order-small.json".to_string()]);
    assert_eq!(
        fs::read(spool.quarantine().join("order-big.json")).unwrap(),
        big
    );
    let why = fs::read_to_string(spool.quarantine().join("order-big.json.reason")).unwrap();
    assert!(
        why.contains("larger than [source] max_size (2048 bytes)"),
        "{why}"
    );
}
