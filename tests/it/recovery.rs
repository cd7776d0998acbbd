//! Start-up recovery, step by step: entries left in `sent` or `verified` by a crash are
//! finished without sending anything twice. Drives the pipeline as a library against
//! a real sshd, with the journal set up as the crash left it.

use plutus_state::{Event, Journal, JournalOptions, NewEntry, Record, State};
use plutus_sync::config;
use plutus_sync::pipeline::{self, Ctx, Slot, Step};
use plutus_sync::transfer;
use plutus_testkit::files::names_in;
use plutus_testkit::orders::order;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::wait_until;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A pipeline context on `spool`'s config, as the service builds it.
pub(crate) fn ctx(spool: &Spool) -> Ctx {
    let settings = config::load(&spool.config).unwrap();
    let journal = Journal::open(&settings.journal.path, &JournalOptions::default()).unwrap();
    Ctx::new(
        Arc::new(settings.clone()),
        Arc::new(journal),
        transfer::from_settings(&settings.destination),
        Arc::default(),
    )
}

/// A server, a spool delivering to it with the tests' timers, and the pipeline on
/// that spool: each test's start.
fn setup() -> (Sshd, Spool, Ctx) {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let ctx = ctx(&spool);
    (sshd, spool, ctx)
}

/// `run_out`, which must end with the entry needing nothing more (`Step::Done`) in
/// `state`: the entry.
fn run_out_to(ctx: &Ctx, id: u64, state: State) -> Record {
    let step = run_out(ctx, &mut Slot::default(), id);
    assert!(matches!(step, Step::Done), "{step:?}");
    let rec = ctx.journal.get(id).unwrap().unwrap();
    assert_eq!(rec.state(), state, "{rec:?}");
    rec
}

/// Steps until the entry needs nothing more now (a retry due at once is taken at once,
/// as the queue would).
fn run_out(ctx: &Ctx, slot: &mut Slot, id: u64) -> Step {
    for _ in 0..5 {
        match process(ctx, slot, id).unwrap() {
            Step::RetryAt(at) if at <= plutus_state::now_ms() => continue,
            step => return step,
        }
    }
    panic!("entry #{id} still retrying at once after 5 steps");
}

/// Journal entry `id` as `sent` to a temp of the current scheme; returns its path.
fn sent(ctx: &Ctx, sshd: &Sshd, id: u64, name: &str) -> std::path::PathBuf {
    let temp = sshd.inbox().join(transfer::temp_name(name, id, ".part"));
    ctx.journal
        .apply(
            id,
            Event::Uploaded {
                remote_path: temp.display().to_string(),
            },
        )
        .unwrap();
    temp
}

/// What a worker and then the archiver do with the entry: one step, and the archive
/// batch (of this one entry) if the step verified it.
fn process(ctx: &Ctx, slot: &mut Slot, id: u64) -> Result<Step, plutus_state::JournalError> {
    match pipeline::process(ctx, slot, id)? {
        Step::Verified(sent_as) => {
            let mut steps = pipeline::archive_batch(ctx, &[(id, sent_as)])?;
            assert_eq!(steps.len(), 1);
            Ok(steps.pop().unwrap().1)
        }
        step => Ok(step),
    }
}

/// Journal entry `id` as verified, the way a crash before the archive move leaves
/// it; returns the archive path it plans.
fn verified(ctx: &Ctx, spool: &Spool, id: u64, name: &str) -> std::path::PathBuf {
    let archive_path = spool.archive().join("2026/11/23").join(name);
    ctx.journal
        .apply(
            id,
            Event::Verified {
                remote_path: format!("/inbox/{name}"),
                archive_path: archive_path.display().to_string(),
                note: None,
            },
        )
        .unwrap();
    archive_path
}

pub(crate) fn pending(ctx: &Ctx, spool: &Spool, name: &str, body: &[u8]) -> u64 {
    spool.drop_order(name, body);
    ctx.journal
        .insert(NewEntry {
            name: name.into(),
            size: body.len() as u64,
            crc32: crc32fast::hash(body),
            batch: "20261123-1200".into(),
            source_path: spool.outbox().join(name).display().to_string(),
            found_by: "sweep".into(),
        })
        .unwrap()
        .id
}

// The recovery of a `sent` entry, one test per row of `protocol::recover_sent`.

#[test]
fn a_sent_entry_already_renamed_into_the_inbox_is_verified_without_uploading_again() {
    let (sshd, spool, ctx) = setup();
    let body = order(1, 3000);
    let id = pending(&ctx, &spool, "order-1.json", &body);
    sent(&ctx, &sshd, id, "order-1.json");
    // The crash came after the rename, before `verified` was journaled.
    fs::write(sshd.inbox().join("order-1.json"), &body).unwrap();
    let ino = fs::metadata(sshd.inbox().join("order-1.json"))
        .unwrap()
        .ino();

    let rec = run_out_to(&ctx, id, State::Archived);
    assert_eq!(
        fs::metadata(sshd.inbox().join("order-1.json"))
            .unwrap()
            .ino(),
        ino,
        "the inbox file was replaced: it was uploaded again"
    );
    assert!(rec
        .remote_path
        .as_deref()
        .unwrap()
        .ends_with("/order-1.json"));
    assert_eq!(spool.archived(), vec![("order-1.json".to_string(), body)]);
}

#[test]
fn a_sent_entry_whose_final_name_holds_other_content_fails_as_a_conflict_and_overwrites_nothing() {
    let (sshd, spool, ctx) = setup();
    let body = order(3, 3000);
    let id = pending(&ctx, &spool, "order-3.json", &body);
    let temp = sent(&ctx, &sshd, id, "order-3.json");
    fs::write(&temp, &body).unwrap();
    fs::write(sshd.inbox().join("order-3.json"), b"{\"someone\":\"else\"}").unwrap();

    let rec = run_out_to(&ctx, id, State::Failed);
    assert!(
        rec.last_error
            .as_deref()
            .unwrap()
            .contains("not overwritten"),
        "{rec:?}"
    );
    assert_eq!(
        fs::read(sshd.inbox().join("order-3.json")).unwrap(),
        b"{\"someone\":\"else\"}"
    );
    // Our temp is no `sent` entry's any more: the clean-up takes it, nothing else.
    assert!(temp.exists());
    Slot::default().clean_temps(&ctx).unwrap();
    assert_eq!(names_in(sshd.inbox()), vec!["order-3.json".to_string()]);
    assert!(
        spool.outbox().join("order-3.json").exists(),
        "the order stays"
    );
}

#[test]
fn a_sent_entry_whose_verified_temp_is_still_there_is_renamed_without_uploading_again() {
    let (sshd, spool, ctx) = setup();
    let body = order(4, 4000);
    let id = pending(&ctx, &spool, "order-4.json", &body);
    let temp = sent(&ctx, &sshd, id, "order-4.json");
    fs::write(&temp, &body).unwrap();
    let ino = fs::metadata(&temp).unwrap().ino();

    run_out_to(&ctx, id, State::Archived);
    let delivered = sshd.inbox().join("order-4.json");
    assert_eq!(fs::read(&delivered).unwrap(), body);
    assert_eq!(
        fs::metadata(&delivered).unwrap().ino(),
        ino,
        "the final file is not the temp renamed: it was uploaded again"
    );
    assert_eq!(names_in(sshd.inbox()), vec!["order-4.json".to_string()]);
}

#[test]
fn a_sent_entry_with_neither_temp_nor_final_was_taken_by_the_erp_and_is_not_sent_again() {
    let (sshd, spool, ctx) = setup();
    let body = order(5, 2000);
    let id = pending(&ctx, &spool, "order-5.json", &body);
    // The rename happened, its reply was lost, and the ERP imported and removed the
    // file: the inbox is empty.
    sent(&ctx, &sshd, id, "order-5.json");

    let rec = run_out_to(&ctx, id, State::Archived);
    let noted = rec.history.iter().any(|t| {
        matches!(&t.event, Some(Event::Verified { note: Some(n), .. }) if n.contains("taken by the ERP before the reply"))
    });
    assert!(noted, "{:#?}", rec.history);
    assert!(
        names_in(sshd.inbox()).is_empty(),
        "sent again: {:?}",
        names_in(sshd.inbox())
    );
    assert_eq!(spool.archived(), vec![("order-5.json".to_string(), body)]);
}

#[test]
fn a_sent_entry_whose_temp_no_longer_matches_is_removed_uploaded_again_and_delivered() {
    let (sshd, spool, ctx) = setup();
    let body = order(2, 5000);
    let id = pending(&ctx, &spool, "order-2.json", &body);
    let temp = sent(&ctx, &sshd, id, "order-2.json");
    fs::write(&temp, &body[..100]).unwrap();

    let rec = run_out_to(&ctx, id, State::Archived);
    assert!(rec
        .history
        .iter()
        .any(|t| matches!(t.event, Some(Event::Reupload { .. }))));
    assert_eq!(fs::read(sshd.inbox().join("order-2.json")).unwrap(), body);
    assert_eq!(names_in(sshd.inbox()), vec!["order-2.json".to_string()]);
}

#[test]
fn a_verified_entry_is_archived_without_contacting_the_destination() {
    let mut sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "timeout = \"1s\"");
    let ctx = ctx(&spool);
    let body = order(3, 2000);
    let id = pending(&ctx, &spool, "order-3.json", &body);
    let archive_path = verified(&ctx, &spool, id, "order-3.json");
    sshd.stop(); // proof that nothing is sent: there is nobody to send to

    let mut slot = Slot::default();
    let step = process(&ctx, &mut slot, id).unwrap();
    assert!(matches!(step, Step::Done), "{step:?}");
    assert!(!slot.is_connected());
    assert_eq!(
        ctx.journal.get(id).unwrap().unwrap().state(),
        State::Archived
    );
    assert_eq!(fs::read(&archive_path).unwrap(), body);
    assert!(names_in(&spool.outbox()).is_empty());
}

#[test]
fn a_verified_entry_whose_file_was_already_moved_counts_as_archived() {
    let (_sshd, spool, ctx) = setup();
    let body = order(4, 2000);
    let id = pending(&ctx, &spool, "order-4.json", &body);
    let archive_path = verified(&ctx, &spool, id, "order-4.json");
    // The crash came after the archive move, before `archived` was journaled.
    fs::create_dir_all(archive_path.parent().unwrap()).unwrap();
    fs::rename(spool.outbox().join("order-4.json"), &archive_path).unwrap();

    process(&ctx, &mut Slot::default(), id).unwrap();
    assert_eq!(
        ctx.journal.get(id).unwrap().unwrap().state(),
        State::Archived
    );
    assert_eq!(spool.archived(), vec![("order-4.json".to_string(), body)]);
}

#[test]
fn a_pending_entry_whose_local_file_vanished_is_failed_with_the_reason() {
    let (sshd, spool, ctx) = setup();
    let id = pending(&ctx, &spool, "order-5.json", &order(5, 1000));
    fs::remove_file(spool.outbox().join("order-5.json")).unwrap();
    process(&ctx, &mut Slot::default(), id).unwrap();
    let rec = ctx.journal.get(id).unwrap().unwrap();
    assert_eq!(rec.state(), State::Failed);
    assert!(
        rec.last_error
            .as_deref()
            .unwrap()
            .contains("disappeared from the outbox"),
        "{:?}",
        rec.last_error
    );
    assert!(names_in(sshd.inbox()).is_empty());
}

#[test]
fn a_file_error_retries_with_a_stored_schedule_and_gives_up_after_max_attempts() {
    let (sshd, spool, ctx) = setup();
    // A different file already under the final name: a conflict fails at once…
    fs::write(sshd.inbox().join("order-6.json"), b"{\"other\": true}").unwrap();
    let id = pending(&ctx, &spool, "order-6.json", &order(6, 1000));
    process(&ctx, &mut Slot::default(), id).unwrap();
    assert_eq!(ctx.journal.get(id).unwrap().unwrap().state(), State::Failed);

    // …while a file the server refuses to create (a name it rejects: this one is fine
    // locally, but its temp name is longer than the inbox's file system allows) is
    // retried with its next attempt time in the journal, then failed after
    // max_attempts (3 here).
    let long = format!("order-7-{}.json", "x".repeat(240));
    let id = pending(&ctx, &spool, &long, &order(7, 1000));
    let mut times = Vec::new();
    for attempt in 1..=3 {
        let step = process(&ctx, &mut Slot::default(), id).unwrap();
        let rec = ctx.journal.get(id).unwrap().unwrap();
        assert_eq!(rec.attempts, attempt);
        if attempt < 3 {
            let Step::RetryAt(at) = step else {
                panic!("attempt {attempt}: {step:?}")
            };
            assert_eq!(rec.next_attempt_at, Some(at));
            assert_eq!(rec.state(), State::Pending);
            times.push(at);
        } else {
            assert!(matches!(step, Step::Done), "{step:?}");
            assert_eq!(rec.state(), State::Failed);
        }
    }
    assert!(
        names_in(&spool.outbox()).contains(&long),
        "a failed file stays in the outbox"
    );
}

#[test]
fn a_missing_inbox_pauses_the_destination_without_burning_attempts() {
    let (sshd, spool, ctx) = setup();
    let body = order(8, 1000);
    let id = pending(&ctx, &spool, "order-8.json", &body);
    fs::remove_dir(sshd.inbox()).unwrap();
    let step = process(&ctx, &mut Slot::default(), id).unwrap();
    assert!(matches!(step, Step::DestinationDown(_)), "{step:?}");
    let rec = ctx.journal.get(id).unwrap().unwrap();
    assert_eq!((rec.state(), rec.attempts), (State::Pending, 0));
    assert_eq!(fs::read(spool.outbox().join("order-8.json")).unwrap(), body);
}

#[test]
fn an_invalid_file_that_cannot_be_quarantined_is_never_left_pending() {
    let (sshd, spool, ctx) = setup();
    // The move to quarantine fails (a file stands where the folder should be). Were
    // the entry moved on before the move, a `pending` entry could be left for the
    // pipeline to send.
    fs::remove_dir(spool.quarantine()).unwrap();
    fs::write(spool.quarantine(), b"in the way").unwrap();
    spool.drop_order("bad.json", b"{\"truncated\": ");
    let path = spool.outbox().join("bad.json");
    let take = || {
        plutus_sync::intake::take(
            &ctx.journal,
            &ctx.settings,
            &path,
            plutus_sync::intake::Found::Watch,
            || false,
        )
    };
    // First `invalid` (its writer may be at it); once unchanged for quarantine_after
    // (1 s here), the move is tried and fails.
    let mut first = None;
    wait_until(
        Duration::from_secs(10),
        "intake to try the quarantine",
        || match take() {
            Err(e) => {
                first = Some(e.to_string());
                true
            }
            Ok(plutus_sync::intake::Outcome::Invalid { .. })
            | Ok(plutus_sync::intake::Outcome::StillInvalid { .. })
            | Ok(plutus_sync::intake::Outcome::Wait(_)) => false,
            Ok(other) => panic!("{other:?}"),
        },
    );
    let entries: Vec<_> = ctx.journal.iter().map(|r| r.unwrap()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].state(), State::Invalid, "{entries:?}");
    assert!(path.exists(), "the file stays in the outbox");

    // Once the folder is back, it is quarantined, and its entry moves on.
    fs::remove_file(spool.quarantine()).unwrap();
    fs::create_dir(spool.quarantine()).unwrap();
    let r = take().unwrap();
    let plutus_sync::intake::Outcome::Quarantined(rec) = r else {
        panic!("{r:?}")
    };
    assert_eq!(rec.history.len(), 3);
    assert_eq!(rec.state(), State::Quarantined);
    assert!(names_in(sshd.inbox()).is_empty());
}

#[test]
fn a_file_replaced_between_its_delivery_and_its_archive_move_stays_and_is_taken_again() {
    let (sshd, spool, ctx) = setup();
    let sent = order(6, 2000);
    let id = pending(&ctx, &spool, "order-6.json", &sent);
    // The worker delivers it and hands it to the archiver...
    let step = pipeline::process(&ctx, &mut Slot::default(), id).unwrap();
    let Step::Verified(sent_as) = step else {
        panic!("{step:?}")
    };
    assert_eq!(fs::read(sshd.inbox().join("order-6.json")).unwrap(), sent);
    // ...and before the archiver moves it, the web shop writes a new order 6.
    let new = order(60, 2500);
    let tmp = spool.dir.path().join("order-6.new");
    fs::write(&tmp, &new).unwrap();
    fs::rename(&tmp, spool.outbox().join("order-6.json")).unwrap();

    let steps = pipeline::archive_batch(&ctx, &[(id, sent_as)]).unwrap();
    assert!(
        matches!(steps[..], [(i, Step::Rescan)] if i == id),
        "{steps:?}"
    );
    // The new content is not archived as if it had been sent; the delivered entry
    // is closed with a note, and the sweep asked for takes the new file as new.
    assert_eq!(fs::read(spool.outbox().join("order-6.json")).unwrap(), new);
    assert!(spool.archived().is_empty());
    let rec = ctx.journal.get(id).unwrap().unwrap();
    assert_eq!(rec.state(), State::Archived);
    assert!(
        rec.history
            .iter()
            .any(|t| matches!(t.event, Some(Event::LocalReplaced { .. }))),
        "{rec:?}"
    );
    assert_eq!(fs::read(sshd.inbox().join("order-6.json")).unwrap(), sent);
}

// The outbox is untrusted: what the web shop's account swaps in under a name after
// intake saw a regular file is never followed, never blocks, never read unbounded.

/// Order `n` taken in as `order-N.json`, then its outbox file replaced by what `make`
/// creates at its path: the server, the spool, the pipeline and the entry's id.
fn taken_in_then_swapped(n: usize, make: impl FnOnce(&Spool, &Path)) -> (Sshd, Spool, Ctx, u64) {
    let (sshd, spool, ctx) = setup();
    let name = format!("order-{n}.json");
    let id = pending(&ctx, &spool, &name, &order(n, 1500));
    let path = spool.outbox().join(&name);
    fs::remove_file(&path).unwrap();
    make(&spool, &path);
    (sshd, spool, ctx, id)
}

/// `run_out` on a thread, failing the test if it does not return in time (a worker
/// blocked on a FIFO would hang it).
fn run_out_within(ctx: Ctx, id: u64, secs: u64) -> (Step, Ctx) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let step = run_out(&ctx, &mut Slot::default(), id);
        let _ = tx.send((step, ctx));
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("delivery of #{id} still blocked after {secs} s"))
}

/// Runs the swapped entry's delivery out (`run_out_within`): it must end failed,
/// with nothing under any name in the inbox, not even a temp. The entry, for its
/// reason.
fn swapped_delivery_fails(sshd: &Sshd, ctx: Ctx, id: u64) -> Record {
    let (step, ctx) = run_out_within(ctx, id, 20);
    assert!(matches!(step, Step::Done), "{step:?}");
    let rec = ctx.journal.get(id).unwrap().unwrap();
    assert_eq!(rec.state(), State::Failed);
    assert!(
        names_in(sshd.inbox()).is_empty(),
        "{:?}",
        names_in(sshd.inbox())
    );
    rec
}

#[test]
fn a_file_swapped_for_a_symlink_to_a_secret_after_intake_is_never_sent() {
    let (sshd, _spool, ctx, id) = taken_in_then_swapped(11, |spool, p| {
        // A file the service's user may read, valid JSON, outside the outbox.
        let secret = spool.dir.path().join("secret.json");
        fs::write(&secret, br#"{"password": "hunter2"}"#).unwrap();
        std::os::unix::fs::symlink(&secret, p).unwrap()
    });
    let rec = swapped_delivery_fails(&sshd, ctx, id);
    assert!(
        rec.last_error.as_deref().unwrap().contains("symbolic link"),
        "{rec:?}"
    );
}

#[test]
fn a_file_swapped_for_a_symlink_to_dev_zero_after_intake_is_not_read_endlessly() {
    let (sshd, _spool, ctx, id) = taken_in_then_swapped(12, |_, p| {
        std::os::unix::fs::symlink("/dev/zero", p).unwrap()
    });
    // Failed, and no byte of /dev/zero was uploaded.
    swapped_delivery_fails(&sshd, ctx, id);
}

#[test]
fn a_file_swapped_for_a_fifo_after_intake_does_not_block_the_worker() {
    let (sshd, _spool, ctx, id) = taken_in_then_swapped(13, |_, p| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    });
    let rec = swapped_delivery_fails(&sshd, ctx, id);
    assert!(
        rec.last_error.as_deref().unwrap().contains("FIFO"),
        "{rec:?}"
    );
}

#[test]
#[ignore = "needs root: makes a device node (mknod); tests/ci.sh runs it"]
fn a_file_swapped_for_a_device_after_intake_is_refused_without_being_opened() {
    plutus_testkit::require_root("makes a device node (mknod)");
    use notify::event::{AccessKind, EventKind};
    use notify::Watcher;
    let name = "order-15.json";
    // /dev/zero's numbers (1, 5): harmless here, but opening some devices acts by
    // itself (a tape rewinds), so the rule is: never opened at all.
    let (sshd, spool, ctx, id) = taken_in_then_swapped(15, |_, p| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
        assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
    });
    // Every open under the outbox, as inotify reports it.
    let opened: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = opened.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if matches!(ev.kind, EventKind::Access(AccessKind::Open(_))) {
                for p in ev.paths {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    seen.lock().unwrap().push(n);
                }
            }
        }
    })
    .unwrap();
    watcher
        .watch(&spool.outbox(), notify::RecursiveMode::NonRecursive)
        .unwrap();

    let rec = swapped_delivery_fails(&sshd, ctx, id);
    assert!(
        rec.last_error.as_deref().unwrap().contains("a device"),
        "{rec:?}"
    );
    // inotify keeps order: once an open made after the delivery has been reported,
    // an open of the device would have been reported before it.
    let sentinel = spool.outbox().join(".sentinel");
    fs::write(&sentinel, b"").unwrap();
    drop(fs::File::open(&sentinel).unwrap());
    wait_until(Duration::from_secs(10), "the sentinel's open", || {
        opened.lock().unwrap().iter().any(|n| n == ".sentinel")
    });
    assert!(
        !opened.lock().unwrap().iter().any(|n| n == name),
        "the device was opened: {:?}",
        opened.lock().unwrap()
    );
}

#[test]
fn a_file_that_grew_after_intake_is_sent_with_no_more_than_its_new_content() {
    let (sshd, spool, ctx) = setup();
    let id = pending(&ctx, &spool, "order-14.json", b"{\"a\": 1}");
    // The writer was not done: the file is longer now, and valid.
    let grown = order(14, 3000);
    fs::write(spool.outbox().join("order-14.json"), &grown).unwrap();
    let (step, ctx) = run_out_within(ctx, id, 20);
    assert!(matches!(step, Step::Done), "{step:?}");
    assert_eq!(
        ctx.journal.get(id).unwrap().unwrap().state(),
        State::Archived
    );
    assert_eq!(fs::read(sshd.inbox().join("order-14.json")).unwrap(), grown);
    assert_eq!(names_in(sshd.inbox()), vec!["order-14.json".to_string()]);
}
