//! The operator's kit (issue 14): the attempts every view shows, and `journal
//! forget` for a failed entry whose file is gone.

use plutus_testkit::orders::order;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use std::fs;

/// The ATT column of `journal list`'s line for `name`.
fn att_in_list(list: &str, name: &str) -> u32 {
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no line for {name} in\n{list}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The `attempt=N` of the log line about `name` that contains `what`.
fn attempt_logged(log: &str, name: &str, what: &str) -> u32 {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("file={name} ")) && l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} line for {name} in\n{log}"));
    let n = line
        .split("attempt=")
        .nth(1)
        .unwrap_or_else(|| panic!("{line}"));
    n.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn attempts_made_are_the_same_in_the_log_list_show_json_and_export() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let ok = "order-2026-000001.json";
    let taken = "order-2026-000002.json";
    spool.drop_order(ok, &order(1, 500));
    // Someone else's file under the second name: a conflict, given up at once.
    fs::write(sshd.inbox().join(taken), b"{\"theirs\": 1}").unwrap();
    spool.drop_order(taken, &order(2, 500));
    let (st, _, log) = spool.sync();
    assert_eq!(st.code(), Some(1), "{log}");

    // Delivered on its first attempt: 1 everywhere (the list said 0).
    assert_eq!(attempt_logged(&log, ok, "verified as"), 1);
    let list = spool.ok(&["journal", "list"]);
    assert_eq!(att_in_list(&list, ok), 1, "{list}");
    let show = spool.ok(&["journal", "show", ok]);
    assert!(show.contains("\n  attempts     1\n"), "{show}");
    let json: serde_json::Value =
        serde_json::from_str(spool.ok(&["journal", "show", ok, "--json"]).trim()).unwrap();
    assert_eq!(
        (json["attempts_made"].as_u64(), json["attempts"].as_u64()),
        (Some(1), Some(0))
    );
    let export: serde_json::Value =
        serde_json::from_str(spool.ok(&["journal", "export"]).trim()).unwrap();
    assert_eq!(export["name"], ok);
    assert_eq!(export["attempts"], 1);

    // Failed on its first attempt: 1 as well, and it says it failed.
    assert_eq!(attempt_logged(&log, taken, "gave up"), 1);
    assert_eq!(att_in_list(&list, taken), 1, "{list}");
    let show = spool.ok(&["journal", "show", taken]);
    assert!(show.contains("\n  attempts     1 (1 failed)\n"), "{show}");
    let line = spool.ok(&["journal", "list", "--json", "--state", "failed"]);
    let json: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        (json["attempts_made"].as_u64(), json["attempts"].as_u64()),
        (Some(1), Some(1))
    );
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

/// `plutus_sync_files{state="STATE"}` in a scrape.
fn files_gauge(text: &str, state: &str) -> u64 {
    let key = format!("plutus_sync_files{{state=\"{state}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("{key} not in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn counts(spool: &Spool) -> serde_json::Value {
    let stats: serde_json::Value =
        serde_json::from_str(spool.ok(&["journal", "stats", "--json"]).trim()).unwrap();
    stats["counts"].clone()
}

#[test]
fn forget_closes_a_failed_entry_whose_file_is_gone_with_who_and_why_through_the_service_or_not() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let port = plutus_testkit::free_port();
    spool.append_config(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    // Two conflicts (someone else's files under the names): failed at once.
    let (a, b, ok) = (
        "order-2026-000001.json",
        "order-2026-000002.json",
        "order-2026-000003.json",
    );
    for (n, name) in [(1, a), (2, b)] {
        fs::write(sshd.inbox().join(name), b"{\"theirs\": 1}").unwrap();
        spool.drop_order(name, &order(n, 300));
    }
    spool.drop_order(ok, &order(3, 300));
    let (st, _, log) = spool.sync();
    assert_eq!(st.code(), Some(1), "{log}");
    assert_eq!(counts(&spool)["failed"], 2);

    // Its file is still in the outbox: refused, saying what to do instead.
    let (st, out, err) = spool.cmd(&["journal", "forget", a, "--reason", "gone"]);
    assert_eq!(st.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("its local copy is still in")
            && out.contains(&format!("plutus-sync replay {a}")),
        "{out}"
    );
    // Not failed: refused.
    let (st, out, _) = spool.cmd(&["journal", "forget", ok, "--reason", "x"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        out.contains("archived (delivered): nothing to forget"),
        "{out}"
    );
    // A reason is required.
    let (st, _, err) = spool.cmd(&["journal", "forget", a]);
    assert_eq!(st.code(), Some(2));
    assert!(err.contains("--reason <TEXT>"), "{err}");

    // The local copies are gone (deleted by hand, say).
    fs::remove_file(spool.outbox().join(a)).unwrap();
    fs::remove_file(spool.outbox().join(b)).unwrap();
    let out = spool.ok(&["journal", "forget", a, "--reason", "x", "--dry-run"]);
    assert!(out.starts_with("would forget #"), "{out}");
    assert_eq!(counts(&spool)["failed"], 2, "a dry run changed the journal");

    // With the service down: straight into the journal.
    let out = spool.ok(&[
        "journal",
        "forget",
        a,
        "--reason",
        "re-entered by hand in the ERP",
    ]);
    assert!(out.contains("forgot #") && out.contains(a), "{out}");
    let show = spool.ok(&["journal", "show", a]);
    assert!(show.contains("  state        forgotten\n"), "{show}");
    let me = plutus_sync::operator::access::me().to_string();
    assert!(
        show.contains(&format!(
            "failed → forgotten  forgotten by {me}: re-entered by hand in the ERP"
        )),
        "{show}"
    );

    // With the service up: through the control socket, who taken from the socket.
    let mut svc = spool.start();
    svc.wait_ready();
    let metrics = scrape(port);
    assert_eq!(files_gauge(&metrics, "failed"), 1, "{metrics}");
    assert_eq!(files_gauge(&metrics, "forgotten"), 1, "{metrics}");
    let id = spool
        .entries_while_running(&svc)
        .iter()
        .find(|r| r.name == b)
        .unwrap()
        .id;
    let out = spool.ok(&[
        "journal",
        "forget",
        &format!("#{id}"),
        "--reason",
        "duplicate, cancelled",
    ]);
    assert!(out.starts_with(&format!("forgot #{id} {b}")), "{out}");
    let metrics = scrape(port);
    assert_eq!(files_gauge(&metrics, "failed"), 0, "{metrics}");
    assert_eq!(files_gauge(&metrics, "forgotten"), 2, "{metrics}");
    assert!(
        svc.log_text()
            .contains("failed entry forgotten by an operator"),
        "{}",
        svc.log_text()
    );
    let show = spool.ok(&["journal", "show", b]);
    assert!(
        show.contains(&format!("forgotten by {me}: duplicate, cancelled")),
        "{show}"
    );
    assert_eq!(
        spool
            .ok(&["journal", "list", "--state", "forgotten", "--json"])
            .lines()
            .count(),
        2
    );
    // Once is enough.
    let (st, out, _) = spool.cmd(&["journal", "forget", b, "--reason", "again"]);
    assert_eq!(st.code(), Some(1));
    assert!(out.contains("already forgotten"), "{out}");
    svc.stop();
}
