//! The binary's edges: config errors, the journal lock, log formats.

use plutus_testkit::orders::order;
use plutus_testkit::service::*;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use std::process::Command;

#[test]
fn a_bad_config_is_refused_naming_the_file_the_key_and_the_reason() {
    let spool = Spool::with_destination("url = \"file:///tmp\"\n");
    spool.set_config("settle = \"300ms\"", "settle = \"soon\"");
    let out = Command::new(bin())
        .args(["run", "-c"])
        .arg(&spool.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "error: {}: [source.settle]: \"soon\" is not a duration",
            spool.config.display()
        )),
        "{err}"
    );
    assert!(
        spool.dir.path().join("journal").read_dir().is_err(),
        "nothing may start on a bad config"
    );

    let missing = spool.dir.path().join("nope.toml");
    let out = Command::new(bin())
        .args(["sync", "-c"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: cannot read config", missing.display())),
        "{err}"
    );
}

#[test]
fn the_config_path_comes_from_the_environment_when_no_flag_is_given() {
    let spool = Spool::with_destination("url = \"ftp://nowhere/x\"\n");
    let out = Command::new(bin())
        .arg("sync")
        .env("PLUTUS_SYNC_CONFIG", &spool.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: [destination.url]", spool.config.display())),
        "{err}"
    );
}

#[test]
fn a_second_process_on_the_same_journal_is_refused_with_a_clear_error() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    // The same config: the service answers on its control socket, and `sync` names
    // it (exit 3, which the cron wrapper tells from an error).
    let (status, _, stderr) = spool.sync();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("the service is running (pid {},", svc.pid()))
            && stderr.contains("remove the cron line"),
        "{stderr}"
    );
    // Another config on the same journal (its own control socket): the journal's
    // lock refuses it.
    let other = spool.dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "{}\n[control]\nsocket = \"other.sock\"\n",
            std::fs::read_to_string(&spool.config).unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["sync", "-c"])
        .arg(&other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("journal is in use by another process"),
        "{stderr}"
    );
    assert!(svc.is_running(), "the running service is unaffected");
    svc.stop();
}

#[test]
fn json_logs_are_one_object_per_line_with_timestamp_level_file_and_state() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    spool.drop_order("order-2026-000001.json", &order(1, 2000));
    let out = Command::new(bin())
        .args(["--log-format", "json", "sync", "-c"])
        .arg(&spool.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let verified = lines
        .iter()
        .find(|v| v["state"] == "verified")
        .unwrap_or_else(|| panic!("no verified line in {stderr}"));
    let ts = verified["timestamp"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(ts).is_ok(),
        "timestamp {ts} is not RFC 3339"
    );
    assert_eq!(verified["level"], "INFO");
    assert_eq!(verified["span"]["file"], "order-2026-000001.json");
    assert!(verified["span"]["batch"].as_str().unwrap().len() == 13);
    assert!(verified["elapsed_ms"].is_u64());
}
