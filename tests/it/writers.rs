//! Writers that pause: a valid order never ends in quarantine because the web shop
//! was slow writing it. An invalid file stays in the outbox as `invalid` while it may
//! still be written, and is quarantined only once unchanged for `quarantine_after`
//! and not open for writing.
//!
//! The pauses below are the behaviour under test (a writer taking its time), not a
//! way to wait for the service: every wait for the service polls a condition.

use plutus_state::{Event, Journal, JournalOptions, NewEntry, State};
use plutus_sync::config;
use plutus_sync::intake::{self, Found, Outcome};
use plutus_sync::pipeline::{process, Slot, Step};
use plutus_testkit::checks::*;
use plutus_testkit::erp::Erp;
use plutus_testkit::files::names_in;
use plutus_testkit::orders::order;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::wait_until;
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

/// A pause several times `settle` (300 ms in the tests) and several sweeps (1 s).
const PAUSE: Duration = Duration::from_millis(1500);

fn was_invalid(rec: &plutus_state::Record) -> bool {
    rec.history
        .iter()
        .any(|t| matches!(t.event, Some(Event::Invalid { .. })) || t.to == State::Invalid)
}

#[test]
fn a_writer_that_pauses_between_opens_or_after_a_rename_in_is_delivered_complete_never_quarantined()
{
    let sshd = Sshd::start();
    let erp = Erp::start(sshd.inbox(), ".json");
    let spool = Spool::for_sshd(&sshd, "");
    // Longer than the pauses: only `quarantine_after` may end a writer's chances.
    spool.set_config("quarantine_after = \"1s\"", "quarantine_after = \"30s\"");
    let mut svc = spool.start();
    svc.wait_ready();

    let reopened = ("order-2026-000061.json".to_string(), order(61, 4000));
    let renamed = ("order-2026-000062.json".to_string(), order(62, 4000));
    let (a, b) = (&reopened.1, &renamed.1);

    // 1. Half an order, closed (a close event: intake looks at once), a pause, then
    //    re-opened to append the rest.
    let p1 = spool.outbox().join(&reopened.0);
    fs::write(&p1, &a[..a.len() / 2]).unwrap();
    // 2. Half an order written elsewhere on the same file system, renamed in (a
    //    moved-in event), then appended through the same handle after a pause.
    let outside = spool.outbox().parent().unwrap().join("writing.tmp");
    let mut f2 = fs::File::create(&outside).unwrap();
    f2.write_all(&b[..b.len() / 2]).unwrap();
    fs::rename(&outside, spool.outbox().join(&renamed.0)).unwrap();

    std::thread::sleep(PAUSE);
    // Both were looked at and found not valid yet; neither moved nor sent.
    wait_until(
        Duration::from_secs(10),
        "both to be journaled invalid",
        || {
            let list = spool.ok(&["journal", "list", "--state", "invalid"]);
            list.contains(&reopened.0) && list.contains(&renamed.0)
        },
    );
    assert!(names_in(&spool.quarantine()).is_empty());
    assert!(erp.imports().is_empty());
    std::thread::sleep(PAUSE);

    let mut f1 = fs::OpenOptions::new().append(true).open(&p1).unwrap();
    f1.write_all(&a[a.len() / 2..]).unwrap();
    drop(f1);
    f2.write_all(&b[b.len() / 2..]).unwrap();
    drop(f2);

    wait_archived(&spool, &svc, 2, Duration::from_secs(30));
    svc.stop();
    assert!(
        names_in(&spool.quarantine()).is_empty(),
        "quarantined: {:?}\n{}",
        names_in(&spool.quarantine()),
        tail(&svc.log_text(), 40)
    );
    let want = [reopened.clone(), renamed.clone()];
    assert_imported_exactly_once(&spool, &erp, sshd.inbox(), &want);
    for rec in spool.entries() {
        assert_eq!(rec.state(), State::Archived, "{}", rec.name);
        assert!(
            was_invalid(&rec),
            "{} was never judged invalid: {rec:?}",
            rec.name
        );
    }
    // Logged once each at WARN, not once per look.
    let log = svc.log_text();
    for (name, _) in &want {
        let warned = log
            .lines()
            .filter(|l| l.contains("not a valid order") && l.contains(name.as_str()))
            .count();
        assert_eq!(warned, 1, "{name}:\n{log}");
    }
}

#[test]
fn a_file_held_open_by_its_writer_is_never_quarantined_however_long_the_writer_pauses() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    // quarantine_after is 1 s in the tests; the writer pauses three times as long with
    // the file open and half written.
    let mut svc = spool.start();
    svc.wait_ready();
    let name = "order-2026-000063.json";
    let body = order(63, 4000);
    let path = spool.outbox().join(name);
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(&body[..body.len() / 2]).unwrap();
    // The sweep finds it settled and not valid: `invalid`, never judged further.
    wait_until(
        Duration::from_secs(10),
        "the half file to be journaled invalid",
        || {
            spool
                .ok(&["journal", "list", "--state", "invalid"])
                .contains(name)
        },
    );
    std::thread::sleep(3 * Duration::from_secs(1));
    assert!(
        path.exists() && names_in(&spool.quarantine()).is_empty(),
        "quarantined while open for writing:\n{}",
        tail(&svc.log_text(), 30)
    );
    f.write_all(&body[body.len() / 2..]).unwrap();
    drop(f);
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    svc.stop();
    assert!(names_in(&spool.quarantine()).is_empty());
    assert_delivered_exactly_once(&spool, sshd.inbox(), &[(name.into(), body)]);
}

#[test]
fn a_truly_invalid_file_is_quarantined_once_unchanged_for_quarantine_after_and_not_before() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    spool.set_config("quarantine_after = \"1s\"", "quarantine_after = \"4s\"");
    let mut svc = spool.start();
    svc.wait_ready();
    let name = "order-bad\u{1b}[31m.json";
    // Not portable (an escape character): quarantined at once, whatever the content.
    spool.drop_order(name, b"{}");
    let bad = "order-2026-000064.json";
    spool.drop_order(bad, b"{\"order_id\": \"2026-64\", ");
    let path = spool.outbox().join(bad);
    let written = fs::metadata(&path).unwrap().modified().unwrap();

    let mut list = String::new();
    wait_until(
        Duration::from_secs(10),
        "the invalid file to be listed",
        || {
            list = spool.ok(&["journal", "list"]);
            list.contains(bad)
        },
    );
    // Listed as `invalid` at first (4 s before it may be quarantined).
    let line = list.lines().find(|l| l.contains(bad)).unwrap();
    assert!(line.contains("invalid"), "{list}");
    assert!(
        !list.contains('\u{1b}'),
        "a raw escape reached the terminal: {list:?}"
    );
    assert!(list.contains(r#"\u{1b}"#), "{list}");

    let quarantined = spool.quarantine().join(bad);
    wait_until(
        Duration::from_secs(20),
        "the invalid file to be quarantined",
        || quarantined.exists(),
    );
    let waited = SystemTime::now().duration_since(written).unwrap();
    svc.stop();
    assert!(
        waited >= Duration::from_secs(4),
        "quarantined {waited:?} after it was written, before quarantine_after (4 s)"
    );
    assert!(!path.exists());
    assert_eq!(
        fs::read(&quarantined).unwrap(),
        b"{\"order_id\": \"2026-64\", "
    );
    let mut note = quarantined.into_os_string();
    note.push(".reason");
    let why = fs::read_to_string(note).unwrap();
    assert!(
        why.contains("not well-formed JSON") && why.contains("unchanged for 4s"),
        "{why}"
    );
    assert!(names_in(sshd.inbox()).is_empty());
    let rec = spool.entries().into_iter().find(|r| r.name == bad).unwrap();
    assert_eq!(rec.state(), State::Quarantined);
    assert!(was_invalid(&rec), "{rec:?}");
}

#[test]
fn a_pending_file_rewritten_half_is_sent_back_to_wait_for_its_writer_and_delivered_when_complete() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let ctx = crate::recovery::ctx(&spool);
    let name = "order-2026-000065.json";
    let first = order(65, 2000);
    spool.drop_order(name, &first);
    let id = ctx
        .journal
        .insert(NewEntry {
            name: name.into(),
            size: first.len() as u64,
            crc32: crc32fast::hash(&first),
            batch: "20261202-1300".into(),
            source_path: spool.outbox().join(name).display().to_string(),
            found_by: "watch".into(),
        })
        .unwrap()
        .id;
    // The web shop rewrites the order (a correction) and is halfway through when the
    // worker gets to it.
    let second = order(66, 3000);
    let path = spool.outbox().join(name);
    spool.drop_order(name, &second[..second.len() / 2]);
    let step = process(&ctx, &mut Slot::default(), id).unwrap();
    // Back to intake at once (a sweep now), not at the next sweep.
    assert!(matches!(step, Step::Rescan), "{step:?}");
    let rec = ctx.journal.get(id).unwrap().unwrap();
    assert_eq!(rec.state(), State::Invalid, "{rec:?}");
    assert!(path.exists(), "left in the outbox for its writer");
    assert!(names_in(&spool.quarantine()).is_empty());
    assert!(names_in(sshd.inbox()).is_empty(), "nothing sent");

    // The writer finishes: intake takes the same entry on, and it is delivered whole.
    spool.drop_order(name, &second);
    let out = intake::take(&ctx.journal, &ctx.settings, &path, Found::Watch, || false).unwrap();
    let Outcome::Pending(rec) = out else {
        panic!("{out:?}")
    };
    assert_eq!((rec.id, rec.size), (id, second.len() as u64));
    let started = Instant::now();
    let mut slot = Slot::default();
    loop {
        match process(&ctx, &mut slot, id).unwrap() {
            Step::Done | Step::Verified(_) => break,
            Step::RetryAt(_) if started.elapsed() < Duration::from_secs(10) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fs::read(sshd.inbox().join(name)).unwrap(), second);
}

#[test]
fn an_invalid_file_its_writer_removes_is_dropped_from_the_journal() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    spool.set_config("quarantine_after = \"1s\"", "quarantine_after = \"60s\"");
    let mut svc = spool.start();
    svc.wait_ready();
    let name = "order-2026-000067.json";
    spool.drop_order(name, b"{\"half\": ");
    wait_until(
        Duration::from_secs(10),
        "the file to be journaled invalid",
        || {
            spool
                .ok(&["journal", "list", "--state", "invalid"])
                .contains(name)
        },
    );
    fs::remove_file(spool.outbox().join(name)).unwrap();
    // The next sweep (every 1 s) finds its file gone.
    wait_until(Duration::from_secs(10), "the entry to be dropped", || {
        !spool.ok(&["journal", "list"]).contains(name)
    });
    svc.stop();
    assert!(spool.entries().is_empty(), "{:?}", spool.entries());
    assert!(names_in(&spool.quarantine()).is_empty());
    assert!(svc.log_text().contains("entry #1 dropped"));
}

#[test]
fn an_order_its_writer_finished_in_the_quarantine_is_put_back_by_replay_and_delivered() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let mut svc = spool.start();
    svc.wait_ready();
    // A writer that paused longer than quarantine_after (1 s here) with the file
    // closed: its half order goes to quarantine.
    let name = "order-2026-000068.json";
    let body = order(68, 3000);
    let path = spool.outbox().join(name);
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(&body[..body.len() / 2]).unwrap();
    let mut f = {
        // Closed (a close event) and re-opened: a handle that follows the file.
        drop(f);
        fs::OpenOptions::new().append(true).open(&path).unwrap()
    };
    let quarantined = spool.quarantine().join(name);
    // Only an open handle that has not written is not seen as a writer: the file is
    // judged once unchanged for quarantine_after.
    wait_until(
        Duration::from_secs(20),
        "the half order to be quarantined",
        // Journaled `quarantined` after the move and its `.reason`: the journal too.
        || {
            quarantined.exists()
                && spool
                    .ok(&["journal", "list", "--state", "quarantined"])
                    .contains(name)
        },
    );
    // The writer finishes, inside the quarantine: the handle followed the file.
    f.write_all(&body[body.len() / 2..]).unwrap();
    drop(f);
    assert!(names_in(sshd.inbox()).is_empty());

    let out = spool.ok(&["replay", name]);
    assert!(out.starts_with("replayed 1"), "{out}");
    wait_archived(&spool, &svc, 1, Duration::from_secs(20));
    svc.stop();
    assert!(
        names_in(&spool.quarantine()).is_empty(),
        "the file and its .reason left the quarantine: {:?}",
        names_in(&spool.quarantine())
    );
    assert_eq!(fs::read(sshd.inbox().join(name)).unwrap(), body);
    let states: Vec<State> = spool
        .entries()
        .iter()
        .filter(|r| r.name == name)
        .map(|r| r.state())
        .collect();
    assert_eq!(states, vec![State::Quarantined, State::Archived]);
}

#[test]
fn a_file_invalid_at_first_that_completes_as_a_copy_of_an_archived_order_is_not_sent_again() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let settings = config::load(&spool.config).unwrap();
    let journal = Journal::open(&settings.journal.path, &JournalOptions::default()).unwrap();
    let name = "order-2026-000069.json";
    let body = order(69, 2000);
    // Delivered and archived before.
    let first = journal
        .insert(NewEntry {
            name: name.into(),
            size: body.len() as u64,
            crc32: crc32fast::hash(&body),
            batch: "20261202-1200".into(),
            source_path: "x".into(),
            found_by: "watch".into(),
        })
        .unwrap();
    journal
        .apply(
            first.id,
            Event::Verified {
                remote_path: "r".into(),
                archive_path: "a".into(),
                note: None,
            },
        )
        .unwrap();
    journal.apply(first.id, Event::Archived).unwrap();
    // The web shop writes the same order again, slowly: half of it first.
    let path = spool.outbox().join(name);
    fs::write(&path, &body[..body.len() / 2]).unwrap();
    let old = SystemTime::now() - Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = intake::take(&journal, &settings, &path, Found::Sweep, || false).unwrap();
    assert!(matches!(out, Outcome::Invalid { .. }), "{out:?}");
    fs::write(&path, &body).unwrap();
    let out = intake::take(&journal, &settings, &path, Found::Watch, || false).unwrap();
    let Outcome::Duplicate { record, of } = out else {
        panic!("{out:?}")
    };
    assert_eq!(of, first.id);
    // Its own size and CRC32, not the half file's: the archive move checks them.
    assert_eq!(
        (record.size, record.crc32, record.state()),
        (body.len() as u64, crc32fast::hash(&body), State::Verified)
    );
    let all: Vec<_> = journal.iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        all.len(),
        2,
        "the invalid entry is not left beside it: {all:?}"
    );
}
