//! SFTP servers that are not Linux OpenSSH's `internal-sftp`: the real `sftp-server`
//! behind `testkit/sftp_wrapper.py`, which makes a rename replace its target (as
//! paramiko-based servers do) or answers fsync with FAILURE. Exactly-once must not rest
//! on what such a server does not promise.

use plutus_state::{Event, State};
use plutus_testkit::checks::*;
use plutus_testkit::files::names_in;
use plutus_testkit::orders::order;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use std::fs;

fn orders(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("order-2026-{i:06}.json"), order(i, 2000)))
        .collect()
}

#[test]
fn a_server_whose_rename_replaces_fails_check_and_gets_nothing() {
    let sshd = Sshd::start_with_sftp_wrapper("rename-overwrites");
    let spool = Spool::for_sshd(&sshd, "");
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL  rename") && out.contains("REPLACES an existing file"),
        "{out}"
    );
    assert!(
        names_in(sshd.inbox()).is_empty(),
        "the probe files are removed"
    );

    let orders = orders(3);
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    let (status, stdout, stderr) = spool.sync();
    assert_ne!(status.code(), Some(0), "{stdout}");
    assert!(
        stderr.contains("rename REPLACES an existing file"),
        "{}",
        tail(&stderr, 20)
    );
    assert!(
        names_in(sshd.inbox()).is_empty(),
        "delivered to a server that would overwrite: {:?}",
        names_in(sshd.inbox())
    );
    for (n, _) in &orders {
        assert!(spool.outbox().join(n).exists(), "{n} left the outbox");
    }
    assert!(spool
        .entries()
        .iter()
        .all(|r| r.state() == State::Pending && r.attempts == 0));
}

#[test]
fn a_replacing_rename_accepted_by_config_delivers_and_still_never_overwrites_a_different_order() {
    let sshd = Sshd::start_with_sftp_wrapper("rename-overwrites");
    let spool = Spool::for_sshd(&sshd, "overwriting_rename = \"check-then-rename\"");
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(0), "{out}");
    assert!(
        out.contains("OK    rename") && out.contains("check-then-rename"),
        "{out}"
    );

    // Someone else's file already holds one order's name.
    fs::write(sshd.inbox().join("order-2026-000001.json"), b"{\"erp\":1}").unwrap();
    let orders = orders(3);
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    let (status, stdout, stderr) = spool.sync();
    assert_ne!(status.code(), Some(0), "the conflict fails: {stdout}");
    assert_eq!(
        fs::read(sshd.inbox().join("order-2026-000001.json")).unwrap(),
        b"{\"erp\":1}",
        "overwritten:\n{}",
        tail(&stderr, 20)
    );
    for (n, b) in [&orders[0], &orders[2]] {
        assert_eq!(&fs::read(sshd.inbox().join(n)).unwrap(), b);
    }
    let failed: Vec<_> = spool
        .entries()
        .into_iter()
        .filter(|r| r.state() == State::Failed)
        .map(|r| r.name)
        .collect();
    assert_eq!(failed, vec!["order-2026-000001.json".to_string()]);
}

#[test]
fn a_server_answering_fsync_with_failure_still_gets_every_order_noted_no_fsync() {
    let sshd = Sshd::start_with_sftp_wrapper("fsync-fails");
    let spool = Spool::for_sshd(&sshd, "");
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(0), "{out}");
    assert!(out.contains("OK    fsync") && out.contains("no:"), "{out}");

    let orders = orders(5);
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    let (status, stdout, stderr) = spool.sync();
    assert_eq!(status.code(), Some(0), "{stdout}\n{}", tail(&stderr, 20));
    assert_delivered_exactly_once(&spool, sshd.inbox(), &orders);
    for r in spool.entries() {
        let noted = r.history.iter().any(|t| {
            matches!(&t.event, Some(Event::Verified { note: Some(n), .. }) if n.contains("no fsync"))
        });
        assert!(noted, "{}: {:#?}", r.name, r.history);
    }
}
