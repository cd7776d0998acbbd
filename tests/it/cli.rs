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
        std::fs::read_to_string(&spool.config)
            .unwrap()
            .replace("socket = \"control.sock\"", "socket = \"other.sock\""),
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

/// `plutus-sync ARGS…` in `cwd`, with no config in the environment.
fn in_dir(cwd: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("PLUTUS_SYNC_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_quick_start_demo_then_the_journal_commands_work_as_the_readme_says() {
    assert!(
        !std::path::Path::new(plutus_sync::config::DEFAULT_PATH).exists(),
        "{} exists on this machine: the fallback to the demo cannot be tested here",
        plutus_sync::config::DEFAULT_PATH
    );
    let cwd = tempfile::tempdir().unwrap();
    let cwd = cwd.path();

    // Before any demo: the error names --demo.
    let (code, _, err) = in_dir(cwd, &["journal", "list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot read config") && err.contains("add --demo"),
        "{err}"
    );

    // The quick start: a pass of the demo delivers an order.
    let (code, _, err) = in_dir(cwd, &["sync", "--demo"]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::write(
        cwd.join("plutus-demo/outbox/order-2026-000001.json"),
        order(1, 100),
    )
    .unwrap();
    let (code, out, err) = in_dir(cwd, &["sync", "--demo"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 found, 1 archived"), "{out}");

    // `--demo NAME` reads NAME as the order, not as the demo's folder.
    let (code, out, err) = in_dir(
        cwd,
        &["journal", "show", "--demo", "order-2026-000001.json"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with('#')
            && out
                .lines()
                .next()
                .unwrap()
                .ends_with(" order-2026-000001.json"),
        "{out}"
    );
    assert!(out.contains("state        archived"), "{out}");
    assert!(!cwd.join("order-2026-000001.json").exists());

    // No config anywhere: the journal commands find the demo's journal, and say so.
    let (code, out, err) = in_dir(cwd, &["journal", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("order-2026-000001.json  archived"), "{out}");
    assert!(
        err.contains("no config at /etc/plutus-sync/config.toml: using the demo in ./plutus-demo"),
        "{err}"
    );

    // --demo-dir names another folder; a config named with -c is never replaced.
    let (code, _, err) = in_dir(cwd, &["journal", "list", "--demo-dir", "other"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("other/journal: no journal here"), "{err}");
    let (code, _, err) = in_dir(cwd, &["journal", "list", "-c", "missing.toml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.toml: cannot read config"), "{err}");
}
