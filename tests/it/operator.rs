//! Operator commands against a running service and a stopped one.

use plutus_state::{Record, State};
use plutus_testkit::checks::*;
use plutus_testkit::files::names_in;
use plutus_testkit::orders::order;
use plutus_testkit::service::*;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::{poll_until, wait_until};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Three delivered, one failed (conflict), one quarantined.
fn mixed_day(sshd: &Sshd, spool: &Spool, svc: &Service) -> Vec<(String, Vec<u8>)> {
    let orders: Vec<(String, Vec<u8>)> = (1..=3)
        .map(|n| (format!("order-2026-{n:06}.json"), order(n, 2000)))
        .collect();
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    fs::write(
        sshd.inbox().join("order-2026-000009.json"),
        b"{\"theirs\": 1}",
    )
    .unwrap();
    spool.drop_order("order-2026-000009.json", &order(9, 1500));
    spool.drop_order("order-2026-000010.json", b"{\"truncated\": ");
    wait_archived(spool, svc, 3, Duration::from_secs(20));
    wait_until(
        Duration::from_secs(10),
        "three archived, one failed and one quarantined",
        || {
            let stats = spool.ok(&["journal", "stats", "--json"]);
            // `archived` is journaled just after the move wait_archived saw.
            // The same for `quarantined`, journaled after the move and its `.reason`.
            stats.contains("\"archived\":3")
                && stats.contains("\"failed\":1")
                && stats.contains("\"quarantined\":1")
                && names_in(&spool.quarantine()).len() == 2
        },
    );
    orders
}

#[test]
fn journal_commands_answer_the_same_with_the_service_up_and_down() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    let orders = mixed_day(&sshd, &spool, &svc);

    let up = [
        spool.ok(&["journal", "list", "--json"]),
        spool.ok(&["journal", "show", "order-2026-000009.json", "--json"]),
        spool.ok(&["journal", "export"]),
        spool.ok(&["journal", "list", "--state", "archived"]),
    ];
    let stats_up: serde_json::Value =
        serde_json::from_str(&spool.ok(&["journal", "stats", "--json"])).unwrap();
    // What the connection's probe found, only the running service knows.
    assert_eq!(stats_up["destination"]["rename_refuses_overwrite"], true);
    assert_eq!(stats_up["destination"]["fsync"], true);
    let text = spool.ok(&["journal", "stats"]);
    assert!(
        text.contains("rename: refuses overwrite; fsync: yes"),
        "{text}"
    );
    svc.stop();
    assert!(
        !spool.socket().exists(),
        "the socket is removed on shutdown"
    );
    let down = [
        spool.ok(&["journal", "list", "--json"]),
        spool.ok(&["journal", "show", "order-2026-000009.json", "--json"]),
        spool.ok(&["journal", "export"]),
        spool.ok(&["journal", "list", "--state", "archived"]),
    ];
    let stats_down: serde_json::Value =
        serde_json::from_str(&spool.ok(&["journal", "stats", "--json"])).unwrap();
    // Ages may tick between the two runs; everything else is identical.
    for (a, b) in up.iter().zip(&down).take(3) {
        assert_eq!(a, b);
    }
    assert_eq!(up[3].lines().count(), down[3].lines().count());

    let list: Vec<Record> = json_lines(&down[0])
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(list.len(), 5);
    assert!(list.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let state_of = |n: &str| list.iter().find(|r| r.name == n).unwrap().state();
    assert_eq!(state_of("order-2026-000009.json"), State::Failed);
    assert_eq!(state_of("order-2026-000010.json"), State::Quarantined);
    let show: Record = serde_json::from_str(down[1].trim()).unwrap();
    assert!(show
        .last_error
        .as_deref()
        .unwrap()
        .contains("not overwritten"));
    let receipts = json_lines(&down[2]);
    assert_eq!(receipts.len(), 3);
    for ((name, body), r) in orders.iter().zip(&receipts) {
        assert_eq!(r["name"], name.as_str());
        assert_eq!(r["crc32"], format!("{:08x}", crc32fast::hash(body)));
        assert!(humantime::parse_rfc3339(r["verified"].as_str().unwrap()).is_ok());
    }
    assert!(up[3].starts_with("NAME") && up[3].contains("order-2026-000001.json"));

    assert_eq!(stats_up["counts"], stats_down["counts"]);
    assert_eq!(stats_up["counts"]["archived"], 3);
    assert_eq!(stats_up["counts"]["failed"], 1);
    assert_eq!(stats_up["counts"]["quarantined"], 1);
    assert_eq!(stats_up["delivered_last_hour"], 3);
    assert_eq!(stats_up["destination"]["up"], true);
    assert!(
        stats_down["destination"].is_null(),
        "a stopped service knows nothing of the destination"
    );

    let (st, _, err) = spool.cmd(&["journal", "show", "no-such.json"]);
    assert_eq!(st.code(), Some(2));
    assert!(
        err.contains("no journal entry for \"no-such.json\""),
        "{err}"
    );
}

#[test]
fn replaying_a_failed_batch_after_fixing_the_cause_delivers_exactly_those_files() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    let done = order(1, 2000);
    spool.drop_order("order-2026-000001.json", &done);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    let ino = fs::metadata(sshd.inbox().join("order-2026-000001.json"))
        .unwrap()
        .ino();
    // Two conflicts: the ERP still holds stale files of those names.
    let ours: Vec<(String, Vec<u8>)> = (2..=3)
        .map(|n| (format!("order-2026-{n:06}.json"), order(n, 1800)))
        .collect();
    for (n, b) in &ours {
        fs::write(sshd.inbox().join(n), b"{\"stale\": true}").unwrap();
        spool.drop_order(n, b);
    }
    wait_until(Duration::from_secs(20), "two failed files", || {
        spool
            .ok(&["journal", "list", "--state", "failed", "--json"])
            .lines()
            .count()
            == 2
    });
    let failed: Vec<Record> =
        json_lines(&spool.ok(&["journal", "list", "--state", "failed", "--json"]))
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
    let batch = failed[0].batch.clone();

    // A dry run changes nothing.
    let out = spool.ok(&["replay", "--batch", &batch, "--dry-run"]);
    assert!(out.starts_with("would replay 2"), "{out}");
    assert_eq!(
        spool
            .ok(&["journal", "list", "--state", "failed", "--json"])
            .lines()
            .count(),
        2
    );

    // The cause is fixed (the ERP removed its stale files); replay the batch.
    for (n, _) in &ours {
        fs::remove_file(sshd.inbox().join(n)).unwrap();
    }
    let out = spool.ok(&["replay", "--batch", &batch]);
    assert!(out.starts_with("replayed 2: "), "{out}");
    wait_archived(&spool, &svc, 3, Duration::from_secs(20));
    // The conflicts' temps go with the next clean-up (every sweep interval).
    wait_no_temps(sshd.inbox());
    svc.stop();
    for (n, b) in &ours {
        assert_eq!(&fs::read(sshd.inbox().join(n)).unwrap(), b, "{n}");
    }
    assert_eq!(
        fs::metadata(sshd.inbox().join("order-2026-000001.json"))
            .unwrap()
            .ino(),
        ino,
        "a delivered file was sent again"
    );
    assert_eq!(names_in(sshd.inbox()).len(), 3);
    let e = spool.entries();
    assert_eq!(e.len(), 3, "replay reuses the entries: {e:#?}");
    assert!(e.iter().all(|r| r.state() == State::Archived));
}

#[test]
fn replay_refuses_what_it_cannot_send_and_force_resends_from_the_archive() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let gone = order(4, 1000);
    let body = order(5, 1000);
    fs::write(sshd.inbox().join("order-4.json"), b"{}").unwrap();
    spool.drop_order("order-4.json", &gone);
    spool.drop_order("order-5.json", &body);
    spool.sync();
    fs::remove_file(spool.outbox().join("order-4.json")).unwrap();

    // Service down: the journal is changed directly.
    let (st, out, _) = spool.cmd(&["replay", "order-4.json", "order-5.json"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        out.contains("refused order-4.json: the local copy is gone"),
        "{out}"
    );
    assert!(
        out.contains("refused order-5.json: already archived (delivered); add --force"),
        "{out}"
    );

    // The ERP lost its import of order-5: send it again from the archive.
    fs::remove_file(sshd.inbox().join("order-5.json")).unwrap();
    let out = spool.ok(&["replay", "--force", "order-5.json"]);
    assert!(out.starts_with("replayed 1: order-5.json"), "{out}");
    assert!(
        spool.archived().iter().all(|(n, _)| n != "order-5.json"),
        "moved back to the outbox"
    );
    let (st, out, err) = spool.sync();
    assert_eq!(st.code(), Some(0), "{out}{err}");
    assert!(out.contains("1 found, 1 archived"), "{out}");
    assert_eq!(fs::read(sshd.inbox().join("order-5.json")).unwrap(), body);
    let e = spool.entries();
    let r5 = e.iter().find(|r| r.name == "order-5.json").unwrap();
    assert_eq!(r5.state(), State::Archived);
    assert_eq!(
        r5.history
            .iter()
            .filter(|t| t.to == State::Verified)
            .count(),
        2,
        "delivered twice, on purpose"
    );
}

#[test]
fn a_flood_of_malformed_and_oversized_requests_leaves_the_service_delivering() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    let sock = spool.socket();
    // Clients that connect and say nothing hold a connection until the timeout.
    let idle: Vec<UnixStream> = (0..40)
        .filter_map(|_| UnixStream::connect(&sock).ok())
        .collect();
    let garbage: [&[u8]; 5] = [
        b"not json\n",
        b"{\"op\":\"bogus\"}\n",
        b"\xff\xfe\n",
        b"{\"op\":\"list\",\"filter\":7}\n",
        b"\n",
    ];
    let mut errors = 0;
    for i in 0..300 {
        let Ok(mut s) = UnixStream::connect(&sock) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        if i % 10 == 0 {
            // 1 MiB without a newline: over the request limit.
            let _ = s.write_all(&vec![b'{'; 1 << 20]);
        } else {
            let _ = s.write_all(garbage[i % garbage.len()]);
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        if resp.contains("\"error\"") {
            errors += 1;
        }
    }
    assert!(
        errors > 200,
        "malformed requests get an error answer ({errors})"
    );
    drop(idle);
    // Still delivering, still answering.
    spool.drop_order("order-after-flood.json", &order(1, 1000));
    wait_archived(&spool, &svc, 1, Duration::from_secs(30));
    wait_until(Duration::from_secs(10), "archived in the journal", || {
        spool
            .ok(&["journal", "stats", "--json"])
            .contains("\"archived\":1")
    });
    assert!(svc.is_running());
    svc.stop();
}

#[test]
fn check_reports_each_problem_with_its_fix() {
    let mut sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let out = spool.ok(&["check", "--as-root"]);
    for what in [
        "config",
        "outbox",
        "archive",
        "quarantine",
        "filesystem",
        "journal",
        "identity",
        "known_hosts",
        "connect",
        "host key",
        "auth",
        "inbox",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("OK") && l[6..].starts_with(what)),
            "no OK line for {what}:\n{out}"
        );
    }
    assert!(
        names_in(sshd.inbox()).is_empty(),
        "the probe file is removed"
    );

    fs::set_permissions(sshd.client_key(), fs::Permissions::from_mode(0o644)).unwrap();
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        out.contains("FAIL  identity")
            && out.contains(&format!("fix: chmod 600 {}", sshd.client_key().display())),
        "{out}"
    );
    fs::set_permissions(sshd.client_key(), fs::Permissions::from_mode(0o600)).unwrap();

    fs::remove_dir(sshd.inbox()).unwrap();
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(1));
    assert!(out.contains("FAIL  inbox"), "{out}");
    fs::create_dir(sshd.inbox()).unwrap();

    sshd.stop();
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        out.contains("FAIL  connect") && out.contains("SKIP  inbox"),
        "{out}"
    );
}

#[test]
fn a_lost_journal_is_rebuilt_from_disk_and_nothing_is_sent_again() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let delivered: Vec<(String, Vec<u8>)> = (1..=3)
        .map(|n| (format!("order-2026-{n:06}.json"), order(n, 1500)))
        .collect();
    for (n, b) in &delivered {
        spool.drop_order(n, b);
    }
    spool.drop_order("bad.json", b"{");
    spool.sync();
    let mut svc = spool.start();
    svc.wait_ready();
    // Invalid, and left unchanged: quarantined once quarantine_after (1 s) has passed.
    wait_until(
        Duration::from_secs(10),
        "bad.json to be quarantined",
        || spool.quarantine().join("bad.json").exists(),
    );
    let (st, _, err) = spool.cmd(&["journal", "rebuild"]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("the service is running"), "{err}");
    svc.stop();

    // The journal is lost. On disk: the archive; a file renamed into the inbox just
    // before the crash but not yet archived; a second copy of an archived order; a new one.
    fs::remove_dir_all(spool.journal_path()).unwrap();
    let in_flight = order(7, 1500);
    fs::write(sshd.inbox().join("order-2026-000007.json"), &in_flight).unwrap();
    let ino7 = fs::metadata(sshd.inbox().join("order-2026-000007.json"))
        .unwrap()
        .ino();
    spool.drop_order("order-2026-000007.json", &in_flight);
    spool.drop_order("order-2026-000002.json", &delivered[1].1);
    let fresh = order(8, 1500);
    spool.drop_order("order-2026-000008.json", &fresh);
    // The ERP imported (removed) what was delivered before the loss.
    for (n, _) in &delivered {
        fs::remove_file(sshd.inbox().join(n)).unwrap();
    }

    let out = spool.ok(&["journal", "rebuild", "--dry-run"]);
    assert!(out.starts_with("would rebuild"), "{out}");
    assert!(
        !spool.journal_path().exists(),
        "a dry run writes no journal"
    );
    let out = spool.ok(&["journal", "rebuild"]);
    assert!(
        out.contains(
            "3 archived, 1 quarantined, 1 pending, 1 already in the inbox (verified), 1 duplicates"
        ),
        "{out}"
    );

    let (st, out, err) = spool.sync();
    assert_eq!(st.code(), Some(0), "{out}\n{}", tail(&err, 30));
    let mut inbox = names_in(sshd.inbox());
    inbox.sort();
    assert_eq!(
        inbox,
        vec!["order-2026-000007.json", "order-2026-000008.json"],
        "only the new order was sent"
    );
    assert_eq!(
        fs::metadata(sshd.inbox().join("order-2026-000007.json"))
            .unwrap()
            .ino(),
        ino7
    );
    assert_eq!(
        fs::read(sshd.inbox().join("order-2026-000008.json")).unwrap(),
        fresh
    );
    assert!(names_in(&spool.outbox()).is_empty());
}

#[test]
fn archived_entries_older_than_the_retention_are_pruned_and_failed_ones_kept() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    spool.set_config("[journal]\n", "[journal]\nretention = \"1s\"\n");
    fs::write(sshd.inbox().join("order-2.json"), b"{}").unwrap();
    spool.drop_order("order-1.json", &order(1, 1000));
    spool.drop_order("order-2.json", &order(2, 1000));
    spool.sync();
    assert_eq!(spool.entries().len(), 2);
    std::thread::sleep(Duration::from_millis(1100));
    let mut svc = spool.start();
    svc.wait_ready();
    assert!(poll_until(Duration::from_secs(10), || spool
        .ok(&["journal", "stats", "--json"])
        .contains("\"archived\":0")));
    svc.stop();
    let e = spool.entries();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].name.as_str(), e[0].state()),
        ("order-2.json", State::Failed)
    );
}

#[test]
fn a_private_key_others_can_read_or_that_needs_a_passphrase_is_refused_at_start_with_the_fix() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    spool.drop_order("order-1.json", &order(1, 1000));
    fs::set_permissions(sshd.client_key(), fs::Permissions::from_mode(0o644)).unwrap();
    let (st, _, err) = spool.sync();
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(
        err.contains("has mode 644")
            && err.contains(&format!("hint: chmod 600 {}", sshd.client_key().display())),
        "{err}"
    );
    assert!(names_in(sshd.inbox()).is_empty());

    // A key with a passphrase: said so, not a misleading libssh2 error.
    let locked = spool.dir.path().join("locked_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&locked)
        .status()
        .unwrap();
    assert!(made.success());
    spool.set_config(
        &format!("identity = \"{}\"", sshd.client_key().display()),
        &format!("identity = \"{}\"", locked.display()),
    );
    let (st, _, err) = spool.sync();
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("passphrase"), "{err}");
    assert!(spool.outbox().join("order-1.json").exists());
}

#[test]
#[ignore = "needs root: runs check as root, as operators will; tests/ci.sh runs it"]
fn check_as_root_needs_as_root_and_never_writes_through_a_link_planted_where_it_probes() {
    plutus_testkit::require_root("runs `check` as root, as operators will,");
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");

    let (st, out, err) = spool.cmd(&["check"]);
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("this is root") && err.contains("--as-root") && err.contains("sudo -u"),
        "{err}"
    );
    assert!(out.is_empty(), "nothing checked, nothing written: {out}");

    // Whoever can write the outbox (or the inbox) plants links to a file they want
    // overwritten under every name the probes used to take: `.plutus-sync-check-<pid>`
    // and `plutus-sync-check-<pid>-<n>[a|b].part`, for the next thousand pids.
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("shadow");
    fs::write(&victim, b"precious\n").unwrap();
    let next_pid: u32 = fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let local = [
        spool.outbox(),
        spool.archive(),
        spool.quarantine(),
        spool.journal_path().parent().unwrap().to_path_buf(),
    ];
    let inbox = sshd.inbox().to_path_buf();
    for pid in next_pid..next_pid + 1000 {
        for dir in &local {
            std::os::unix::fs::symlink(&victim, dir.join(format!(".plutus-sync-check-{pid}")))
                .unwrap();
        }
        for n in 0..4 {
            for tag in ["", "a", "b"] {
                std::os::unix::fs::symlink(
                    &victim,
                    inbox.join(format!("plutus-sync-check-{pid}-{n}{tag}.part")),
                )
                .unwrap();
            }
        }
    }
    let listing =
        |dirs: &[PathBuf]| -> Vec<Vec<String>> { dirs.iter().map(|d| names_in(d)).collect() };
    let mut all = local.to_vec();
    all.push(inbox.clone());
    let before = listing(&all);

    let out = spool.ok(&["check", "--as-root"]);
    assert!(out.contains("all checks passed"), "{out}");
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious\n",
        "written through a link"
    );
    assert_eq!(listing(&all), before, "check left or removed files:\n{out}");
}

#[test]
fn journal_compact_keeps_every_entry_and_is_refused_while_the_service_runs() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    for i in 0..5 {
        spool.drop_order(&format!("order-2026-00000{i}.json"), &order(i, 2000));
    }
    assert!(spool.sync().0.success());
    let list = || spool.ok(&["journal", "list", "--json"]);
    let before = list();
    assert_eq!(before.lines().count(), 5);
    let mut svc = spool.start();
    svc.wait_ready();
    let (st, _, err) = spool.cmd(&["journal", "compact"]);
    assert!(!st.success());
    assert!(err.contains("stop the service first"), "{err}");
    assert_eq!(svc.stop().code(), Some(0));
    let stats = || -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&spool.ok(&["journal", "stats", "--json"])).unwrap();
        v.as_object_mut().unwrap().remove("destination");
        v
    };
    let stats_before = stats();
    let inode = || fs::metadata(spool.journal_path().join("db")).unwrap().ino();
    let old = inode();
    let said = spool.ok(&["journal", "compact"]);
    assert!(said.contains(": 5 entries,"), "{said}");
    assert_ne!(inode(), old, "the journal's folder holds the copy now");
    assert_eq!(list(), before, "the same entries, byte for byte");
    // The counts and windows the copy carries are the journal's.
    assert_eq!(stats(), stats_before);
    let mut leftover = spool.journal_path().into_os_string();
    leftover.push(".compacting");
    assert!(!std::path::Path::new(&leftover).exists());
    // The service goes on with the compacted journal.
    spool.drop_order("order-2026-000009.json", &order(9, 2000));
    assert!(spool.sync().0.success());
    assert_eq!(spool.archived().len(), 6);
    assert_eq!(list().lines().count(), 6);
}
