//! Failover to `[destination.backup]` and back, against two real sshd instances:
//! new orders go to the backup once the primary has been down for `after`, entries
//! whose upload started at the primary are finished there and nowhere else, and new
//! orders go to the primary again once it has been up for `back_after`. With an
//! importing ERP on both sides, every order is imported exactly once across the two.

use plutus_state::{Event, NewEntry, Record, Site, State};
use plutus_sync::transfer;
use plutus_testkit::checks::{assert_archived_once, tail, wait_archived, wait_for_log};
use plutus_testkit::erp::Erp;
use plutus_testkit::files::names_in;
use plutus_testkit::orders::order;
use plutus_testkit::service::Service;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::{poll_until, wait_until};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A primary and a backup sshd and a spool delivering to the primary, failing over
/// after `after` and back after `back_after`.
fn pair(after: &str, back_after: &str) -> (Sshd, Sshd, Spool) {
    let (primary, backup) = (Sshd::start(), Sshd::start());
    let spool = Spool::with_destination(&format!(
        "url = \"{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\ntimeout = \"2s\"\nconnections = 2\n\n\
         [destination.backup]\nurl = \"{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\n\
         after = \"{after}\"\nback_after = \"{back_after}\"\n",
        primary.url(),
        primary.client_key().display(),
        primary.known_hosts().display(),
        backup.url(),
        backup.client_key().display(),
        backup.known_hosts().display(),
    ));
    (primary, backup, spool)
}

fn orders(from: usize, to: usize) -> Vec<(String, Vec<u8>)> {
    (from..to)
        .map(|n| (format!("order-2026-{n:06}.json"), order(n, 1500 + n % 700)))
        .collect()
}

fn finals(inbox: &std::path::Path) -> BTreeSet<String> {
    names_in(inbox)
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect()
}

fn verified_at(rec: &Record) -> Option<Site> {
    rec.history
        .iter()
        .rev()
        .find(|t| matches!(t.event, Some(Event::Verified { .. })))
        .and_then(|t| t.destination)
}

/// Each order imported exactly once across the two ERPs, byte-identical; archived
/// once; the journal names where each went. Returns how many went to the backup.
fn assert_imported_once_across(
    spool: &Spool,
    erps: [&Erp; 2],
    orders: &[(String, Vec<u8>)],
) -> usize {
    let ok = poll_until(Duration::from_secs(60), || {
        erps[0].imports().len() + erps[1].imports().len() >= orders.len()
    });
    assert!(ok, "not every order imported");
    let mut got: Vec<(String, Vec<u8>, Site)> = Vec::new();
    for (erp, site) in erps.iter().zip([Site::Primary, Site::Backup]) {
        got.extend(erp.imports().into_iter().map(|i| (i.name, i.bytes, site)));
    }
    got.sort();
    let mut want = orders.to_vec();
    want.sort();
    let names: Vec<&String> = got.iter().map(|(n, _, _)| n).collect();
    let unique: BTreeSet<&String> = names.iter().copied().collect();
    assert_eq!(
        names.len(),
        unique.len(),
        "imported more than once across the two ERPs"
    );
    assert_eq!(got.len(), want.len(), "imports");
    for ((gn, gb, _), (wn, wb)) in got.iter().zip(&want) {
        assert_eq!(gn, wn);
        assert!(gb == wb, "{gn}: imported bytes differ");
    }
    let journal = assert_archived_once(spool, &want);
    let mut at_backup = 0;
    for (name, _, site) in &got {
        let rec = journal.latest(name).unwrap().unwrap();
        assert_eq!(
            rec.destination.unwrap_or(Site::Primary),
            *site,
            "{name}: the journal says {:?}, the ERP that imported it is the {site}",
            rec.destination
        );
        at_backup += usize::from(*site == Site::Backup);
    }
    at_backup
}

#[test]
fn with_the_primary_stopped_new_orders_go_to_the_backup_and_come_back_once_it_is_up() {
    let (mut primary, backup, spool) = pair("1s", "1s");
    let port = plutus_testkit::free_port();
    spool.append_config(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut svc = spool.start();
    svc.wait_ready();
    let all = orders(0, 45);
    for (n, b) in &all[..10] {
        spool.drop_order(n, b);
    }
    wait_archived(&spool, &svc, 10, Duration::from_secs(30));
    assert_eq!(finals(primary.inbox()).len(), 10);

    primary.stop();
    let stopped = Instant::now();
    for (n, b) in &all[10..30] {
        spool.drop_order(n, b);
    }
    wait_for_log(&svc, "failed over", Duration::from_secs(30));
    let to_fail_over = stopped.elapsed();
    wait_archived(&spool, &svc, 30, Duration::from_secs(30));
    let to_deliver = stopped.elapsed();
    let (p, b) = (finals(primary.inbox()), finals(backup.inbox()));
    assert_eq!(p.len(), 10, "nothing new at the stopped primary");
    assert_eq!(b.len(), 20, "{b:?}");
    assert!(p.is_disjoint(&b), "an order in both inboxes");
    for rec in spool.entries_while_running(&svc) {
        let n: usize = rec.name[11..17].parse().unwrap();
        let want = if n < 10 { Site::Primary } else { Site::Backup };
        assert_eq!(rec.destination, Some(want), "{}", rec.name);
        assert_eq!(verified_at(&rec), Some(want), "{}", rec.name);
    }

    let m = scrape(port);
    for line in [
        "plutus_sync_failed_over 1",
        "plutus_sync_destination_reachable{destination=\"primary\"} 0",
        "plutus_sync_destination_reachable{destination=\"backup\"} 1",
        "plutus_sync_destination_deliveries_total{destination=\"backup\"} 20",
        "plutus_sync_destination_deliveries_total{destination=\"primary\"} 10",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }
    let (st, out, err) = spool.cmd(&["journal", "stats"]);
    assert!(st.success(), "{err}");
    assert!(
        out.contains("destination    DOWN (") && out.contains(" since "),
        "{out}"
    );
    assert!(out.contains("backup         up ("), "{out}");
    assert!(out.contains("failed over    since "), "{out}");
    let (_, out, _) = spool.cmd(&["journal", "list", "--limit", "100"]);
    assert!(out.contains("DEST") && out.contains("backup"), "{out}");

    primary.restart();
    let restarted = Instant::now();
    wait_for_log(&svc, "failed back", Duration::from_secs(30));
    let to_fail_back = restarted.elapsed();
    for (n, b) in &all[30..] {
        spool.drop_order(n, b);
    }
    wait_archived(&spool, &svc, 45, Duration::from_secs(30));
    let (p, b) = (finals(primary.inbox()), finals(backup.inbox()));
    assert!(scrape(port)
        .lines()
        .any(|l| l == "plutus_sync_failed_over 0"));
    assert_eq!(p.len(), 25, "new orders at the primary again");
    assert_eq!(b.len(), 20, "nothing verified at the backup sent again");
    assert!(p.is_disjoint(&b));
    eprintln!(
        "FIGURES: failed over {to_fail_over:?} after the primary stopped (after = 1s), 20 orders at the backup {to_deliver:?} after it stopped; failed back {to_fail_back:?} after it restarted (back_after = 1s)"
    );
    assert_eq!(svc.stop().code(), Some(0));
    let log = svc.log_text();
    assert_eq!(log.matches("failed over:").count(), 1, "{}", tail(&log, 40));
}

/// Entries `sent` at the primary when it died (their temps there, written as the
/// pipeline writes them) wait for it while new orders go to the backup; once it is
/// back they are renamed there, never uploaded to the backup.
#[test]
fn entries_sent_at_the_primary_are_finished_there_never_sent_to_the_backup() {
    let (mut primary, backup, spool) = pair("1s", "1s");
    let (erp_p, erp_b) = (
        Erp::start(primary.inbox(), ".json"),
        Erp::start(backup.inbox(), ".json"),
    );
    let all = orders(0, 12);
    {
        let journal = spool.journal();
        for (i, (name, body)) in all.iter().enumerate() {
            spool.drop_order(name, body);
            let rec = journal
                .insert(NewEntry {
                    name: name.clone(),
                    size: body.len() as u64,
                    crc32: crc32fast::hash(body),
                    batch: "20261203-1200".into(),
                    source_path: spool.outbox().join(name).display().to_string(),
                    found_by: "sweep".into(),
                })
                .unwrap();
            if i < 5 {
                // Uploaded and read back at the primary, `sent` durable, the rename
                // not yet made: the temp is the proof, and it is at the primary.
                let temp = primary
                    .inbox()
                    .join(transfer::temp_name(name, rec.id, ".part"));
                std::fs::write(&temp, body).unwrap();
                journal
                    .apply_at(
                        rec.id,
                        Event::Uploaded {
                            remote_path: temp.display().to_string(),
                        },
                        None,
                        Some(Site::Primary),
                    )
                    .unwrap();
            }
        }
        journal.flush().unwrap();
    }
    primary.stop();
    let mut svc = spool.start();
    svc.wait_ready();
    // The seven not started go to the backup; the five sent wait for the primary.
    erp_b.wait_imported(7, Duration::from_secs(30));
    wait_until(
        Duration::from_secs(10),
        "the sent entries still waiting",
        || {
            let e = spool.entries_while_running(&svc);
            e.iter().filter(|r| r.state() == State::Archived).count() == 7
                && e.iter()
                    .filter(|r| r.state() == State::Sent)
                    .all(|r| r.destination == Some(Site::Primary))
        },
    );
    assert!(erp_p.imports().is_empty());
    let moved = erp_b.imports().len();
    primary.restart();
    wait_archived(&spool, &svc, 12, Duration::from_secs(30));
    assert_eq!(svc.stop().code(), Some(0));
    drop(svc);
    let at_backup = assert_imported_once_across(&spool, [&erp_p, &erp_b], &all);
    assert_eq!((moved, at_backup), (7, 7));
    for (name, _) in &all[..5] {
        let rec = spool.journal().latest(name).unwrap().unwrap();
        assert_eq!(verified_at(&rec), Some(Site::Primary), "{name}");
    }
    assert!(!names_in(backup.inbox())
        .iter()
        .any(|n| n.ends_with(".part")));
}

/// A burst is in flight when the primary dies: whatever had started there is
/// finished there when it returns; the rest goes to the backup; each order is
/// imported exactly once across the two ERPs.
#[test]
fn a_burst_in_flight_when_the_primary_dies_is_imported_exactly_once_across_both() {
    let (mut primary, backup, spool) = pair("1s", "1s");
    let (erp_p, erp_b) = (
        Erp::start(primary.inbox(), ".json"),
        Erp::start(backup.inbox(), ".json"),
    );
    let mut svc = spool.start();
    svc.wait_ready();
    let all = orders(0, 300);
    for (n, b) in &all {
        spool.drop_order(n, b);
    }
    wait_until(Duration::from_secs(60), "deliveries under way", || {
        erp_p.imports().len() >= 20
    });
    primary.stop();
    // Everything not bound to the primary ends up delivered at the backup.
    wait_until(
        Duration::from_secs(60),
        "all but the primary's to be archived",
        || {
            let e = spool.entries_while_running(&svc);
            e.len() == all.len()
                && e.iter().all(|r| {
                    r.state() == State::Archived
                        || (r.state() == State::Sent && r.destination == Some(Site::Primary))
                })
        },
    );
    let waiting = spool
        .entries_while_running(&svc)
        .iter()
        .filter(|r| r.state() == State::Sent)
        .count();
    primary.restart();
    wait_archived(&spool, &svc, all.len(), Duration::from_secs(60));
    assert_eq!(svc.stop().code(), Some(0));
    drop(svc);
    let at_backup = assert_imported_once_across(&spool, [&erp_p, &erp_b], &all);
    eprintln!(
        "FIGURES: burst of 300, primary stopped after >= 20 imports: {at_backup} moved to the backup, {waiting} sent at the primary waited for it"
    );
    assert!(at_backup > 0);
    assert!(!names_in(backup.inbox())
        .iter()
        .any(|n| n.ends_with(".part")));
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Wait until the (shared) log holds `n` lines with `what`.
fn wait_lines(svc: &Service, what: &str, n: usize) {
    if !poll_until(Duration::from_secs(30), || {
        svc.log_text().matches(what).count() >= n
    }) {
        panic!(
            "{n} times {what:?} not logged; log:\n{}",
            tail(&svc.log_text(), 60)
        );
    }
}

/// Both down, orders waiting; `back` says which returns first. Returns the spool's
/// inboxes' final names (primary, backup) once all are archived.
fn both_down_then(back: Site) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut primary, mut backup, spool) = pair("1s", "1s");
    let mut svc = spool.start();
    svc.wait_ready();
    primary.stop();
    backup.stop();
    let all = orders(0, 15);
    for (n, b) in &all {
        spool.drop_order(n, b);
    }
    // The primary down for `after`: failed over, and the backup found down too.
    wait_for_log(&svc, "failed over", Duration::from_secs(30));
    wait_for_log(&svc, "destination down (backup)", Duration::from_secs(30));
    // No attempt burned while both are down.
    let e = spool.entries_while_running(&svc);
    assert!(
        e.iter()
            .all(|r| r.state() == State::Pending && r.attempts == 0),
        "{e:?}"
    );
    match back {
        Site::Primary => primary.restart(),
        Site::Backup => backup.restart(),
    }
    wait_archived(&spool, &svc, all.len(), Duration::from_secs(30));
    assert_eq!(svc.stop().code(), Some(0));
    let r = (finals(primary.inbox()), finals(backup.inbox()));
    drop(svc);
    assert_archived_once(&spool, &all);
    r
}

#[test]
fn both_down_the_backup_returning_first_takes_the_waiting_orders() {
    let (p, b) = both_down_then(Site::Backup);
    assert_eq!((p.len(), b.len()), (0, 15));
}

#[test]
fn both_down_the_primary_returning_first_takes_the_waiting_orders() {
    let (p, b) = both_down_then(Site::Primary);
    assert_eq!((p.len(), b.len()), (15, 0));
}

/// The service is killed (SIGKILL) while failing over and again while failing back:
/// nothing lost, nothing imported twice across the two ERPs.
#[test]
fn sigkill_during_failover_and_fail_back_loses_nothing_and_imports_nothing_twice() {
    let (mut primary, backup, spool) = pair("1s", "1s");
    let (erp_p, erp_b) = (
        Erp::start(primary.inbox(), ".json"),
        Erp::start(backup.inbox(), ".json"),
    );
    let all = orders(0, 240);
    let mut svc = spool.start();
    svc.wait_ready();
    for (n, b) in &all[..80] {
        spool.drop_order(n, b);
    }
    wait_until(Duration::from_secs(60), "deliveries under way", || {
        erp_p.imports().len() >= 10
    });
    primary.stop();
    for (n, b) in &all[80..160] {
        spool.drop_order(n, b);
    }
    wait_until(Duration::from_secs(60), "deliveries to the backup", || {
        !erp_b.imports().is_empty()
    });
    // Killed while failing over, orders in flight to the backup.
    svc.kill();
    let at_kill = erp_b.imports().len();
    let mut svc: Service = spool.start();
    svc.wait_ready();
    for (n, b) in &all[160..200] {
        spool.drop_order(n, b);
    }
    // The log is shared by the runs: this run's own failover is the second line.
    wait_lines(&svc, "failed over:", 2);
    wait_until(
        Duration::from_secs(60),
        "more at the backup after the restart",
        || erp_b.imports().len() >= at_kill + 20,
    );
    primary.restart();
    for (n, b) in &all[200..] {
        spool.drop_order(n, b);
    }
    wait_lines(&svc, "failed back:", 1);
    // Killed just after failing back, orders in flight to the primary.
    svc.kill();
    let mut svc: Service = spool.start();
    svc.wait_ready();
    wait_archived(&spool, &svc, all.len(), Duration::from_secs(90));
    assert_eq!(svc.stop().code(), Some(0));
    drop(svc);
    let at_backup = assert_imported_once_across(&spool, [&erp_p, &erp_b], &all);
    assert!(at_backup > 0);
}

/// A failed order (its name taken at the primary by other content) replayed to the
/// backup is delivered there; the primary's file is left alone; the operator's
/// commands show where it went.
#[test]
fn replay_to_backup_sends_a_failed_order_there() {
    let (primary, backup, spool) = pair("1h", "1s");
    let (name, body) = orders(1, 2).pop().unwrap();
    std::fs::write(primary.inbox().join(&name), b"someone else's file").unwrap();
    let mut svc = spool.start();
    svc.wait_ready();
    spool.drop_order(&name, &body);
    wait_until(Duration::from_secs(30), "the order to fail", || {
        spool
            .entries_while_running(&svc)
            .iter()
            .any(|r| r.state() == State::Failed)
    });
    let (st, out, err) = spool.cmd(&["replay", &name, "--to", "backup"]);
    assert!(st.success(), "{out}{err}");
    wait_archived(&spool, &svc, 1, Duration::from_secs(30));
    assert_eq!(std::fs::read(backup.inbox().join(&name)).unwrap(), body);
    assert_eq!(
        std::fs::read(primary.inbox().join(&name)).unwrap(),
        b"someone else's file"
    );
    let (_, show, _) = spool.cmd(&["journal", "show", &name]);
    assert!(show.contains("destination  backup"), "{show}");
    assert!(show.contains("[backup]"), "{show}");
    let (_, export, _) = spool.cmd(&["journal", "export"]);
    assert!(export.contains("\"destination\":\"backup\""), "{export}");
    let (_, stats, _) = spool.cmd(&["journal", "stats"]);
    assert!(stats.contains("failed over    no"), "{stats}");
    assert_eq!(svc.stop().code(), Some(0));
}

#[test]
fn replay_to_backup_without_a_backup_is_refused_by_name() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let (st, out, err) = spool.cmd(&["replay", "x.json", "--to", "backup"]);
    assert!(!st.success());
    assert!(
        format!("{out}{err}").contains("no [destination.backup]"),
        "{out}{err}"
    );
}

/// An entry sent to the backup, and a config that no longer names one: only the
/// backup can tell whether it was delivered, so the service refuses to start rather
/// than let the primary's inbox decide (it would read "taken by the ERP").
#[test]
fn a_config_without_the_backup_refuses_entries_still_sent_there() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let (name, body) = orders(7, 8).pop().unwrap();
    {
        let journal = spool.journal();
        spool.drop_order(&name, &body);
        let rec = journal
            .insert(NewEntry {
                name: name.clone(),
                size: body.len() as u64,
                crc32: crc32fast::hash(&body),
                batch: "20261203-1200".into(),
                source_path: spool.outbox().join(&name).display().to_string(),
                found_by: "sweep".into(),
            })
            .unwrap();
        journal
            .apply_at(
                rec.id,
                Event::Uploaded {
                    remote_path: "/backup/inbox/x.part".into(),
                },
                None,
                Some(Site::Backup),
            )
            .unwrap();
        journal.flush().unwrap();
    }
    let (st, out, err) = spool.cmd(&["sync"]);
    assert_eq!(st.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("no [destination.backup]") && err.contains(&name),
        "{err}"
    );
    assert!(
        names_in(sshd.inbox()).is_empty(),
        "nothing sent to the primary"
    );
    assert_eq!(spool.entries()[0].state(), State::Sent);
}

/// `check` checks the backup as a destination of its own, and fails naming it when
/// it is down.
#[test]
fn check_checks_the_backup_too() {
    let (_primary, mut backup, spool) = pair("5m", "5m");
    let (st, out, err) = spool.cmd(&["check", "--as-root"]);
    assert!(st.success(), "{out}{err}");
    let (_, after) = out
        .split_once("backup destination ([destination.backup]):")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        after.contains(&backup.url()) || after.contains("OK"),
        "{out}"
    );
    backup.stop();
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(1), "{out}");
    let (before, after) = out.split_once("backup destination").unwrap();
    assert!(!before.contains("FAIL"), "the primary is fine: {out}");
    assert!(after.contains("FAIL"), "{out}");
}
