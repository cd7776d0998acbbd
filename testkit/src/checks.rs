//! Waits and the invariants tests end with: everything delivered or imported exactly
//! once, byte-identical, archived and journaled once, no temp file left.

use crate::erp::Erp;
use crate::files::{files_under, names_in};
use crate::service::Service;
use crate::spool::Spool;
use crate::{poll_until, wait_until};
use plutus_state::{Journal, Record, State};
use std::path::Path;
use std::time::Duration;

/// Wait until `n` files are archived, printing the service log on timeout.
pub fn wait_archived(spool: &Spool, svc: &Service, n: usize, timeout: Duration) {
    let ok = poll_until(timeout, || spool.archived().len() >= n);
    if !ok {
        panic!(
            "timed out after {timeout:?}: {} of {n} files archived; outbox holds {}; log tail:\n{}",
            spool.archived().len(),
            names_in(&spool.outbox()).len(),
            tail(&svc.log_text(), 60)
        );
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The invariants every delivery test ends with: each order is in the inbox exactly
/// once and byte-identical, archived exactly once, journaled as archived exactly once,
/// and no temp file is left in the inbox.
pub fn assert_delivered_exactly_once(spool: &Spool, inbox: &Path, orders: &[(String, Vec<u8>)]) {
    let inbox_files = files_under(inbox);
    let temps: Vec<_> = inbox_files
        .iter()
        .filter(|(n, _)| n.ends_with(".part"))
        .map(|(n, _)| n)
        .collect();
    assert!(temps.is_empty(), "temp files left in the inbox: {temps:?}");
    let mut want: Vec<(String, Vec<u8>)> = orders.to_vec();
    want.sort();
    assert_eq!(inbox_files.len(), want.len(), "inbox file count");
    for ((gn, gb), (wn, wb)) in inbox_files.iter().zip(&want) {
        assert_eq!(gn, wn);
        assert!(gb == wb, "{gn}: inbox bytes differ from the order written");
    }
    let journal = assert_archived_once(spool, &want);
    for (name, _) in &want {
        let latest = journal.latest(name).unwrap();
        assert!(
            latest.is_some_and(|r| &r.name == name),
            "name index for {name}"
        );
    }
}

/// The local half of every exactly-once check: each order archived once,
/// byte-identical, the outbox empty, one `archived` journal entry per order with its
/// size and CRC32, and the state index agreeing with the entries (after kills too: the
/// repair at open). Returns the journal for further checks.
pub fn assert_archived_once(spool: &Spool, want: &[(String, Vec<u8>)]) -> Journal {
    assert_eq!(
        spool.archived(),
        want,
        "archive must hold each order once, byte-identical"
    );
    assert!(
        names_in(&spool.outbox()).is_empty(),
        "outbox not empty: {:?}",
        names_in(&spool.outbox())
    );
    let entries = spool.entries();
    for (name, body) in want {
        let mine: Vec<&Record> = entries.iter().filter(|r| &r.name == name).collect();
        assert_eq!(mine.len(), 1, "{name}: journal entries {mine:#?}");
        assert_eq!(mine[0].state(), State::Archived, "{name}");
        assert_eq!(mine[0].crc32, crc32fast::hash(body), "{name}: crc32");
        assert_eq!(mine[0].size, body.len() as u64, "{name}: size");
    }
    let journal = spool.journal();
    for (state, n) in journal.counts().unwrap() {
        let by_entries = entries.iter().filter(|r| r.state() == state).count() as u64;
        assert_eq!(n, by_entries, "state index for {state}");
    }
    journal
}

/// Waits (while the service still runs, so its periodic clean-up can act) until no
/// temp file is left in the inbox.
pub fn wait_no_temps(inbox: &Path) {
    wait_until(
        Duration::from_secs(30),
        "no temp file left in the inbox",
        || !names_in(inbox).iter().any(|n| n.ends_with(".part")),
    );
}

/// The invariants of every exactly-once test against an importing ERP: each order was
/// imported exactly once, byte-identical, and nothing else was; archived exactly once
/// and journaled as archived; no temp file left in the inbox (waited for: a temp that
/// a killed run's session wrote late is removed by the next periodic clean-up).
pub fn assert_imported_exactly_once(
    spool: &Spool,
    erp: &Erp,
    inbox: &Path,
    orders: &[(String, Vec<u8>)],
) {
    erp.wait_imported(orders.len(), Duration::from_secs(60));
    let imports = erp.imports();
    let dups = erp.duplicates();
    assert!(dups.is_empty(), "imported more than once: {dups:?}");
    let mut want: Vec<(String, Vec<u8>)> = orders.to_vec();
    want.sort();
    let mut got: Vec<(String, Vec<u8>)> = imports
        .iter()
        .map(|i| (i.name.clone(), i.bytes.clone()))
        .collect();
    got.sort();
    assert_eq!(got.len(), want.len(), "imports");
    for ((gn, gb), (wn, wb)) in got.iter().zip(&want) {
        assert_eq!(gn, wn);
        assert!(
            gb == wb,
            "{gn}: imported bytes differ from the order written"
        );
    }
    let temps_gone = poll_until(Duration::from_secs(30), || {
        !names_in(inbox).iter().any(|n| n.ends_with(".part"))
    });
    assert!(
        temps_gone,
        "temp files left in the inbox: {:?}",
        names_in(inbox)
    );
    assert_archived_once(spool, &want);
}

pub fn wait_for_log(svc: &Service, what: &str, timeout: Duration) {
    wait_until(timeout, &format!("log line {what:?}"), || {
        svc.log_text().contains(what)
    });
}
