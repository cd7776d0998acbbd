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
