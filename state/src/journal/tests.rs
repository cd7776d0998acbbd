//! The journal's unit and property tests.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn new(name: &str, crc32: u32) -> NewEntry {
    NewEntry {
        name: name.into(),
        size: 3,
        crc32,
        batch: "b".into(),
        source_path: format!("/o/{name}"),
        found_by: "sweep".into(),
    }
}

/// sled's flusher thread lets go of the lock a moment after a drop: a test that
/// reopens at once waits for it.
fn open(dir: &Path) -> Journal {
    for _ in 0..1000 {
        match Journal::open(dir, &JournalOptions::default()) {
            Err(JournalError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            r => return r.unwrap(),
        }
    }
    panic!("{}: still locked after 5 s", dir.display())
}

fn sled_open(dir: &Path) -> sled::Db {
    for _ in 0..1000 {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    panic!("{}: sled still locked after 5 s", dir.display())
}

#[test]
fn a_live_entry_whose_state_key_was_lost_is_found_after_an_unclean_stop_only() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let j = open(dir.path());
        let id = j.insert(new("a.json", 1)).unwrap().id;
        j.insert(new("b.json", 2)).unwrap();
        j.flush().unwrap();
        id
    };
    // What sled can leave after a torn write: the entry without its index key.
    let tamper = |clean: bool| {
        let db = sled_open(dir.path());
        db.open_tree(keys::TREE_BY_STATE)
            .unwrap()
            .remove(keys::by_state(State::Pending, id))
            .unwrap();
        db.open_tree(keys::TREE_BY_NAME)
            .unwrap()
            .remove(keys::by_name("a.json", id))
            .unwrap();
        let meta = db.open_tree(keys::TREE_META).unwrap();
        if clean {
            meta.insert(keys::META_CLEAN_CLOSE, &[]).unwrap();
        } else {
            meta.remove(keys::META_CLEAN_CLOSE).unwrap();
        }
        db.flush().unwrap();
    };
    // After a clean close the index is trusted as it is (no scan at open)…
    tamper(true);
    let ids = |j: &Journal| j.live().unwrap().iter().map(|r| r.id).collect::<Vec<_>>();
    {
        let j = open(dir.path());
        assert_eq!(j.recovered(), 0);
        assert_eq!(ids(&j).len(), 1);
    }
    // …after an unclean stop every entry is checked, and the order is live again.
    tamper(false);
    let j = open(dir.path());
    assert_eq!(j.recovered(), 2);
    assert!(ids(&j).contains(&id), "{:?}", ids(&j));
    assert_eq!(ids(&j).len(), 2);
    assert_eq!(j.latest("a.json").unwrap().map(|r| r.id), Some(id));
}

#[test]
fn a_journal_from_another_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree(keys::TREE_META)
            .unwrap()
            .insert(keys::META_SCHEMA, b"0")
            .unwrap();
        db.flush().unwrap();
    }
    // sled lets go of its lock a moment after the drop above: wait for that,
    // not for the answer under test (this test failed once on a loaded machine).
    let mut tries = 0;
    let r = loop {
        match Journal::open(dir.path(), &JournalOptions::default()) {
            Err(JournalError::Locked { .. }) if tries < 1000 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => break r,
        }
    };
    match r {
        Err(JournalError::Schema { found, .. }) => assert_eq!(found, "0"),
        Err(other) => panic!("expected a schema error, got {other}"),
        Ok(_) => panic!("expected a schema error, got a journal"),
    }
}

#[test]
fn index_keys_a_stopped_process_left_half_written_are_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let j = open(dir.path());
        assert_eq!(j.recovered(), 0);
        a = j.insert(new("a.json", 1)).unwrap();
        b = j.insert(new("b.json", 2)).unwrap();
        // What a kill in the middle of three changes leaves: `a` moved on to
        // `sent` but its state key did not; `b`'s name key is not written yet;
        // entry 99 was being removed and only its entry is gone.
        j.begin(a.id, "a.json").unwrap();
        j.entries
            .insert(
                keys::id(a.id),
                encode(&{
                    let mut r = a.clone();
                    r.apply(
                        Event::Uploaded {
                            remote_path: "t".into(),
                        },
                        1,
                        None,
                    )
                    .unwrap();
                    r
                }),
            )
            .unwrap();
        j.begin(b.id, "b.json").unwrap();
        j.by_name.remove(keys::by_name("b.json", b.id)).unwrap();
        j.begin(99, "gone.json").unwrap();
        j.by_state
            .insert(keys::by_state(State::Failed, 99), &[])
            .unwrap();
        j.by_name
            .insert(keys::by_name("gone.json", 99), &[])
            .unwrap();
    }
    let j = open(dir.path());
    assert_eq!(j.recovered(), 3);
    let ids = |st| -> Vec<u64> { j.in_state(st).unwrap().iter().map(|r| r.id).collect() };
    assert_eq!(ids(State::Sent), vec![a.id]);
    assert_eq!(ids(State::Pending), vec![b.id]);
    let counts = j.counts().unwrap();
    assert!(
        counts
            .iter()
            .all(|&(st, n)| n == u64::from(matches!(st, State::Sent | State::Pending))),
        "{counts:?}"
    );
    assert_eq!(j.latest("b.json").unwrap().unwrap().id, b.id);
    assert!(j.history_of("gone.json").unwrap().is_empty());
    assert!(j
        .by_name
        .scan_prefix(keys::name_prefix("gone.json"))
        .next()
        .is_none());
    // New ids continue past the old ones.
    assert_eq!(j.insert(new("c.json", 3)).unwrap().id, b.id + 1);
    drop(j);
    assert_eq!(open(dir.path()).recovered(), 0, "nothing left to repair");
}

#[test]
fn an_illegal_transition_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    let r = j.insert(new("a.json", 1)).unwrap();
    let err = j.apply(r.id, Event::Archived).unwrap_err();
    assert!(matches!(err, JournalError::Illegal { .. }), "{err}");
    assert_eq!(j.get(r.id).unwrap().unwrap(), r);
    assert_eq!(j.in_state(State::Pending).unwrap().len(), 1);
}

#[test]
fn find_archived_matches_name_size_and_crc_only() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    let r = j.insert(new("a.json", 9)).unwrap();
    for ev in [
        Event::Uploaded {
            remote_path: "t".into(),
        },
        Event::Verified {
            remote_path: "f".into(),
            archive_path: "a".into(),
            note: None,
        },
        Event::Archived,
    ] {
        j.apply(r.id, ev).unwrap();
    }
    assert!(j.find_archived("a.json", 3, 9).unwrap().is_some());
    assert!(j.find_archived("a.json", 3, 8).unwrap().is_none());
    assert!(j.find_archived("a.jso", 3, 9).unwrap().is_none());
}

#[test]
fn pruning_removes_old_archived_entries_only() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    let mut ids = Vec::new();
    for n in 0..4 {
        let r = j.insert(new(&format!("o{n}.json"), n)).unwrap();
        ids.push(r.id);
    }
    for &id in &ids[..3] {
        for ev in [
            Event::Verified {
                remote_path: "f".into(),
                archive_path: "a".into(),
                note: None,
            },
            Event::Archived,
        ] {
            j.apply(id, ev).unwrap();
        }
    }
    j.apply(ids[3], Event::Failed { error: "x".into() })
        .unwrap();
    assert_eq!(
        j.prune_archived(0, 10).unwrap(),
        0,
        "nothing is older than the epoch"
    );
    assert_eq!(j.prune_archived(u64::MAX, 2).unwrap(), 2, "at most max");
    assert_eq!(j.prune_archived(u64::MAX, 10).unwrap(), 1);
    let left: Vec<u64> = j.iter().map(|r| r.unwrap().id).collect();
    assert_eq!(left, vec![ids[3]], "the failed entry stays");
    assert!(j.history_of("o0.json").unwrap().is_empty());
    assert!(j.in_state(State::Archived).unwrap().is_empty());
}

#[test]
fn a_flush_with_nothing_new_to_write_is_free_and_concurrent_flushes_all_return() {
    let dir = tempfile::tempdir().unwrap();
    let j = std::sync::Arc::new(open(dir.path()));
    j.flush().unwrap();
    let before = j.flushed.load(Ordering::SeqCst);
    j.flush().unwrap();
    assert_eq!(j.flushed.load(Ordering::SeqCst), before);
    let handles: Vec<_> = (0..8)
        .map(|n| {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    j.insert(new(&format!("t{n}-{i}.json"), i)).unwrap();
                    j.flush().unwrap();
                    // Everything this thread wrote is covered by a finished flush.
                    assert!(j.flushed.load(Ordering::SeqCst) >= 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        j.flushed.load(Ordering::SeqCst),
        j.writes.load(Ordering::SeqCst)
    );
    assert_eq!(j.len(), 400);
}

#[test]
fn the_windows_after_a_stop_mid_transition_equal_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let verified = Event::Verified {
        remote_path: "f".into(),
        archive_path: "a".into(),
        note: None,
    };
    {
        let j = open(dir.path());
        let a = j.insert(new("a.json", 1)).unwrap();
        j.apply(
            a.id,
            Event::Uploaded {
                remote_path: "t".into(),
            },
        )
        .unwrap();
        let b = j.insert(new("b.json", 2)).unwrap();
        j.apply(b.id, Event::Failed { error: "x".into() }).unwrap();
        // A kill after `a`'s entry reached `verified` and before its window key was
        // written: its in-flight mark is still there.
        j.begin(a.id, "a.json").unwrap();
        let mut r = j.get(a.id).unwrap().unwrap();
        r.apply(verified, crate::now_ms(), None).unwrap();
        j.entries.insert(keys::id(a.id), encode(&r)).unwrap();
    }
    let check = |j: &Journal| {
        let now = crate::now_ms();
        let w = j.windows(now);
        assert_eq!(w, j.windows_by_scan(now).unwrap());
        assert_eq!(
            (w.delivered_last_hour, w.delivered_last_day),
            (1, 1),
            "{w:?}"
        );
        assert_eq!((w.failed_last_hour, w.failed_last_day), (1, 1), "{w:?}");
        assert!(j.last_delivery_at().is_some());
    };
    let j = open(dir.path());
    assert_eq!(j.recovered(), 1);
    check(&j);
    drop(j);
    // An unclean stop whose log lost window keys without a mark to say so (a torn
    // blob): the full check at open finds them from the entries' histories.
    {
        let db = sled_open(dir.path());
        db.open_tree(keys::TREE_BY_TIME).unwrap().clear().unwrap();
        db.open_tree(keys::TREE_META)
            .unwrap()
            .remove(keys::META_CLEAN_CLOSE)
            .unwrap();
        db.flush().unwrap();
    }
    let j = open(dir.path());
    check(&j);
    check(&j);
}

#[test]
fn pruning_the_window_keys_drops_the_old_and_keeps_the_last_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let j = open(dir.path());
    for n in 0..3 {
        let r = j.insert(new(&format!("o{n}.json"), n)).unwrap();
        j.apply(
            r.id,
            Event::Uploaded {
                remote_path: "t".into(),
            },
        )
        .unwrap();
        j.apply(
            r.id,
            Event::Verified {
                remote_path: "f".into(),
                archive_path: "a".into(),
                note: None,
            },
        )
        .unwrap();
    }
    let last = j.last_delivery_at().unwrap();
    // Nothing is two days old yet.
    assert_eq!(j.prune_windows(crate::now_ms()).unwrap(), 0);
    // Three days on: all three keys are past the horizon, the newest stays.
    assert_eq!(j.prune_windows(crate::now_ms() + 3 * DAY).unwrap(), 2);
    assert_eq!(j.by_time.len(), 1);
    drop(j);
    let j = open(dir.path());
    assert_eq!(j.last_delivery_at(), Some(last));
}

#[test]
fn a_copy_holds_every_live_key_opens_clean_and_is_smaller_after_churn() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("j"), dir.path().join("copy"));
    let size = |p: &Path| -> u64 {
        std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
            .map(|m| m.len())
            .sum()
    };
    let j = open(&src);
    // Churn: 3,000 delivered and archived, all but the last 200 pruned.
    let mut cutoff = 0;
    for i in 0..3000u32 {
        let r = j.insert(new(&format!("o{i}.json"), i)).unwrap();
        j.apply(
            r.id,
            Event::Uploaded {
                remote_path: "t".into(),
            },
        )
        .unwrap();
        j.apply(
            r.id,
            Event::Verified {
                remote_path: "f".into(),
                archive_path: "a".into(),
                note: None,
            },
        )
        .unwrap();
        let r = j.apply(r.id, Event::Archived).unwrap();
        if i == 2799 {
            cutoff = r.updated_at + 1;
        }
    }
    let failed = j.insert(new("bad.json", 7)).unwrap();
    j.apply(failed.id, Event::Failed { error: "x".into() })
        .unwrap();
    // Entries archived in the same millisecond as the 2,800th stay too.
    let pruned = j.prune_archived(cutoff, usize::MAX).unwrap();
    assert!(pruned >= 2700, "{pruned}");
    j.flush().unwrap();
    let stored: Vec<Record> = j.iter().collect::<Result<_>>().unwrap();
    let (counts, now) = (j.counts().unwrap(), crate::now_ms());
    let windows = j.windows(now);
    assert_eq!(j.copy_to(&dest).unwrap(), stored.len());
    drop(j);
    let before = size(&src);
    let c = open(&dest);
    assert_eq!(c.recovered(), 0);
    let copied: Vec<Record> = c.iter().collect::<Result<_>>().unwrap();
    assert_eq!(copied, stored);
    assert_eq!(c.counts().unwrap(), counts);
    assert_eq!(c.counts_by_scan().unwrap(), counts);
    assert_eq!(c.windows(now), windows);
    assert_eq!(
        c.latest("bad.json").unwrap().unwrap().state(),
        State::Failed
    );
    // New ids continue past the copied ones.
    assert!(c.insert(new("next.json", 1)).unwrap().id > failed.id);
    drop(c);
    let after = size(&dest);
    eprintln!("journal {before} bytes, its copy {after} bytes");
    assert!(after * 2 < before, "copy {after} bytes vs {before}");
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u8),
    Apply(usize, Event),
    Reopen,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Uploaded {
            remote_path: "t".into()
        }),
        Just(Event::Verified {
            remote_path: "f".into(),
            archive_path: "a".into(),
            note: None
        }),
        Just(Event::Archived),
        Just(Event::LocalReplaced { note: "n".into() }),
        (0u64..100).prop_map(|n| Event::Retry {
            error: "e".into(),
            next_attempt_at: n
        }),
        Just(Event::Failed { error: "x".into() }),
        Just(Event::Quarantined {
            reason: "bad".into(),
            path: "q".into()
        }),
        Just(Event::Replay { by: None }),
        Just(Event::Resend {
            from_path: "a".into(),
            by: Some(crate::machine::Caller {
                uid: 1001,
                user: Some("ops".into())
            })
        }),
        (0u64..5, any::<u32>()).prop_map(|(size, crc32)| Event::Rehash { size, crc32 }),
        Just(Event::Forgotten {
            reason: "r".into(),
            by: "b".into()
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4).prop_map(Op::Insert),
        8 => (any::<usize>(), event()).prop_map(|(i, e)| Op::Apply(i, e)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The journal behaves like a BTreeMap of records run through the same
    /// transition table, and its two indexes always agree with the entries,
    /// across reopenings.
    #[test]
    fn journal_agrees_with_a_btreemap_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path());
        let mut model: BTreeMap<u64, Record> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(n) => {
                    let r = j.insert(new(&format!("order-{n}.json"), n as u32)).unwrap();
                    prop_assert!(!model.contains_key(&r.id));
                    model.insert(r.id, r);
                }
                Op::Apply(i, ev) => {
                    if model.is_empty() { continue; }
                    let id = *model.keys().nth(i % model.len()).unwrap();
                    let mut want = model[&id].clone();
                    let model_ok = want.apply(ev.clone(), 0, None).is_ok();
                    match j.apply(id, ev) {
                        Ok(got) => {
                            prop_assert!(model_ok);
                            prop_assert_eq!(got.state(), want.state());
                            model.insert(id, got);
                        }
                        Err(JournalError::Illegal { .. }) => prop_assert!(!model_ok),
                        Err(e) => panic!("{e}"),
                    }
                }
                Op::Reopen => {
                    j.flush().unwrap();
                    drop(j);
                    j = open(dir.path());
                }
            }
            let stored: BTreeMap<u64, Record> =
                j.iter().map(|r| r.map(|r| (r.id, r))).collect::<Result<_>>().unwrap();
            prop_assert_eq!(&stored, &model);
            for st in State::ALL {
                let want: Vec<u64> = model.values().filter(|r| r.state() == st).map(|r| r.id).collect();
                let got: Vec<u64> = j.in_state(st).unwrap().iter().map(|r| r.id).collect();
                prop_assert_eq!(got, want);
            }
            // The kept counts, through every insert, transition, prune and reopen.
            prop_assert_eq!(j.counts().unwrap(), j.counts_by_scan().unwrap());
            // And the windows: every transition into `verified` or `failed` counted
            // once, through reopenings (rebuilt from the window keys).
            let now = crate::now_ms();
            prop_assert_eq!(j.windows(now), j.windows_by_scan(now).unwrap());
            let last = model.values().flat_map(|r| &r.history)
                .filter(|t| t.from == Some(State::Sent) && t.to == State::Verified)
                .map(|t| t.at).max();
            prop_assert_eq!(j.last_delivery_at(), last);
            for r in model.values() {
                prop_assert!(j.history_of(&r.name).unwrap().iter().any(|h| h.id == r.id));
            }
        }
    }
}

/// A clean close by this build (tallies in the mark), then writes by a build that knows
/// the clean-close mark but not its tallies (it leaves an empty mark), then this build
/// again: the empty mark carries no tallies, so they are counted afresh.
#[test]
fn tallies_are_counted_afresh_after_a_build_that_writes_an_empty_mark() {
    let dir = tempfile::tempdir().unwrap();
    {
        let j = open(dir.path());
        let a = j.insert(new("a.json", 1)).unwrap();
        j.apply(a.id, Event::Failed { error: "x".into() }).unwrap();
    }
    {
        // What such a build's open, one replay and clean close write.
        let db = sled_open(dir.path());
        let meta = db.open_tree(keys::TREE_META).unwrap();
        meta.remove(keys::META_CLEAN_CLOSE).unwrap();
        let entries = db.open_tree(keys::TREE_ENTRIES).unwrap();
        let by_state = db.open_tree(keys::TREE_BY_STATE).unwrap();
        let (k, raw) = entries.first().unwrap().unwrap();
        let mut r: Record = serde_json::from_slice(&raw).unwrap();
        r.apply(Event::Replay { by: None }, crate::now_ms(), None)
            .unwrap();
        entries.insert(k, encode(&r)).unwrap();
        by_state
            .insert(keys::by_state(State::Pending, r.id), &[])
            .unwrap();
        by_state
            .remove(keys::by_state(State::Failed, r.id))
            .unwrap();
        meta.insert(keys::META_CLEAN_CLOSE, &[]).unwrap();
        db.flush().unwrap();
    }
    let j = open(dir.path());
    assert_eq!(j.counts().unwrap(), j.counts_by_scan().unwrap());
}
