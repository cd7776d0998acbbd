//! What operators watch: the Prometheus endpoint and the log file.

use plutus_testkit::checks::*;
use plutus_testkit::files::names_in;
use plutus_testkit::orders::order;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::{free_port, wait_until};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn metrics_move_during_a_real_delivery_and_show_the_destination_down() {
    let mut sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "timeout = \"2s\"");
    let port = free_port();
    spool.append_config(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut svc = spool.start();
    svc.wait_ready();

    let before = scrape(port);
    assert_eq!(value(&before, "plutus_sync_deliveries_total"), 0.0);
    assert_eq!(value(&before, "plutus_sync_destination_up"), 1.0);
    let orders: Vec<(String, Vec<u8>)> = (0..3)
        .map(|n| (format!("order-{n}.json"), order(n, 2000)))
        .collect();
    for (n, b) in &orders {
        spool.drop_order(n, b);
    }
    wait_archived(&spool, &svc, 3, Duration::from_secs(20));
    // The journal records `archived` just after the move the test saw.
    wait_until(Duration::from_secs(10), "3 archived in the journal", || {
        value(&scrape(port), "plutus_sync_files{state=\"archived\"}") == 3.0
    });
    let after = scrape(port);
    assert_eq!(value(&after, "plutus_sync_deliveries_total"), 3.0);
    assert_eq!(value(&after, "plutus_sync_files{state=\"archived\"}"), 3.0);
    let bytes: usize = orders.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(value(&after, "plutus_sync_sent_bytes_total"), bytes as f64);
    assert_eq!(
        value(&after, "plutus_sync_close_to_verified_seconds_count"),
        3.0
    );
    assert_eq!(
        value(&after, "plutus_sync_transfer_duration_seconds_count"),
        3.0
    );
    assert!(value(&after, "plutus_sync_last_delivery_timestamp_seconds") > 1.7e9);

    sshd.stop();
    spool.drop_order("order-late.json", &order(9, 1000));
    // Stopping sshd can cut the session after the late file's upload but
    // before its rename: then it waits as `sent`, which is just as undelivered.
    let live = |t: &str| {
        value(t, "plutus_sync_files{state=\"pending\"}")
            + value(t, "plutus_sync_files{state=\"sent\"}")
    };
    wait_until(
        Duration::from_secs(20),
        "destination_up 0 with the late file waiting",
        || {
            let t = scrape(port);
            value(&t, "plutus_sync_destination_up") == 0.0 && live(&t) == 1.0
        },
    );
    let down = scrape(port);
    assert_eq!(value(&down, "plutus_sync_files{state=\"archived\"}"), 3.0);
    assert!(value(&down, "plutus_sync_queue_depth") >= 1.0);
    // The late file has waited since it was detected: a real age, not the
    // gauge's 0 for "nothing waiting" (and not some other file's).
    let age = value(&down, "plutus_sync_oldest_pending_age_seconds");
    assert!(age > 0.0 && age < 60.0, "oldest pending age {age}");
    svc.stop();
}

#[test]
fn a_log_file_replaces_stderr_with_timestamped_lines_naming_file_batch_and_state() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let logs = spool.dir.path().join("logs");
    spool.append_config(&format!(
        "[log]\nfile = \"{}/plutus-sync.log\"\nkeep = 7\n",
        logs.display()
    ));
    spool.drop_order("order-1.json", &order(1, 1000));
    let (st, _, stderr) = spool.sync();
    assert!(st.success());
    assert!(
        !stderr.contains("verified"),
        "logs went to stderr too: {stderr}"
    );
    let files = names_in(&logs);
    assert_eq!(files.len(), 1, "{files:?}");
    // Daily rotation: the date is in the name.
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10]
        .to_string();
    assert_eq!(files[0], format!("plutus-sync.log.{today}"));
    let text = fs::read_to_string(logs.join(&files[0])).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("verified as"))
        .unwrap_or_else(|| panic!("{text}"));
    let ts = line.split_whitespace().next().unwrap();
    assert!(humantime::parse_rfc3339(ts).is_ok(), "{line}");
    assert!(
        line.contains("INFO")
            && line.contains("file=order-1.json")
            && line.contains("batch=")
            && line.contains("state=verified"),
        "{line}"
    );
}

#[test]
fn metrics_refuse_an_address_other_hosts_reach_unless_allowed_by_name() {
    let spool = Spool::with_destination("url = \"file:///nonexistent/inbox\"\n");
    spool.append_config("[metrics]\nlisten = \"0.0.0.0:9464\"\n");
    for args in [&["check", "--as-root"][..], &["run"]] {
        let (st, out, err) = spool.cmd(args);
        assert!(!st.success(), "{args:?} started: {out}");
        let text = format!("{out}{err}");
        assert!(
            text.contains("[metrics.listen]: 0.0.0.0:9464 is reachable from other hosts")
                && text.contains("set [metrics] allow_remote = true"),
            "{args:?}: {text}"
        );
    }
}

#[test]
fn at_most_four_scrapes_at_once_and_the_rest_are_told_to_come_back() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let port = free_port();
    // A port alone: loopback.
    spool.append_config(&format!("[metrics]\nlisten = \"{port}\"\n"));
    let mut svc = spool.start();
    svc.wait_ready();
    assert!(svc.log_text().contains(&format!(
        "serving metrics on http://127.0.0.1:{port}/metrics"
    )));

    // Four clients that connect and say nothing hold the four places.
    let idle: Vec<TcpStream> = (0..plutus_sync::metrics::MAX_SCRAPES)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let mut fifth = TcpStream::connect(("127.0.0.1", port)).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = String::new();
    fifth.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{out:?}"
    );
    assert!(out.contains("Retry-After: 1"), "{out}");

    // Their places come back as soon as they go.
    drop(idle);
    wait_until(Duration::from_secs(10), "a scrape is served again", || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200 OK")
    });
    assert!(svc.is_running());
    svc.stop();
}
