//! Failover to the backup destination and back (`[destination.backup]`).
//!
//! The rule that keeps every order in exactly one ERP: **an entry is bound to the
//! destination where its upload started.** A `sent` entry has its temp file at one
//! destination, and only there can the exactly-once rules (`recover_sent`) resolve
//! it; it is never sent to the other. Only entries that have not started (`pending`,
//! no temp anywhere) go where new deliveries go, and that is what this module
//! decides: the primary, until its gate has been closed for `after`; then the
//! backup, until the primary has been up again for `back_after` (probed in the
//! background by `prober` with the gate's own backoff) or the backup is down while
//! the primary is up.
//!
//! [`failed_over`] is the pure decision; `Router` applies it to the two gates.

use super::Shared;
use crate::pipeline::{Ctx, Slot};
use crate::retry::Gate;
use plutus_state::{now_ms, Journal, JournalError, Record, Site, State};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A destination's gate as the decision sees it: up or down, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up(Duration),
    Down(Duration),
}

/// `after` and `back_after` from the config.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub after: Duration,
    pub back_after: Duration,
}

/// Do new deliveries go to the backup, given whether they did until now?
///
/// - Not failed over: only once the primary has been down for `after`. (Whether the
///   backup is down is not asked: its gate then pauses the queue as the primary's
///   did, and whichever comes back first takes the waiting orders.)
/// - Failed over: back once the primary has been up for `back_after`, or at once if
///   the primary is up while the backup is down.
pub fn failed_over(was: bool, primary: Health, backup: Health, p: Policy) -> bool {
    match (was, primary) {
        (false, Health::Up(_)) => false,
        (false, Health::Down(d)) => d >= p.after,
        (true, Health::Down(_)) => true,
        (true, Health::Up(up)) => up < p.back_after && !matches!(backup, Health::Down(_)),
    }
}

/// How long until [`failed_over`] changes by itself, nothing else changing.
pub fn next_change(now: bool, primary: Health, backup: Health, p: Policy) -> Option<Duration> {
    match (now, primary, backup) {
        (false, Health::Down(d), _) => Some(p.after.saturating_sub(d)),
        (true, Health::Up(up), Health::Up(_)) => Some(p.back_after.saturating_sub(up)),
        _ => None,
    }
}

/// The destination an entry is bound to, if any: a `sent` one's temp is where its
/// upload started (the primary in journals written before a backup existed); a
/// `pending` one may have been pinned by `replay --to`.
pub fn bound_to(rec: &Record) -> Option<Site> {
    match rec.state() {
        State::Sent => Some(rec.destination.unwrap_or(Site::Primary)),
        State::Pending => rec.destination,
        _ => None,
    }
}

/// Entries of a batch bound to a destination (`Some`) or free to go where new
/// deliveries go (`None`).
pub(super) type Groups = Vec<(Option<Site>, Vec<u64>)>;

/// A batch split by destination: `Some(site)` for entries bound there, `None` for
/// the rest, which go where new deliveries go. Order within a group is kept.
pub(super) fn split(journal: &Journal, ids: &[u64]) -> Result<Groups, JournalError> {
    let mut groups: Groups = Vec::new();
    for &id in ids {
        let to = journal.get(id)?.as_ref().and_then(bound_to);
        match groups.iter_mut().find(|(s, _)| *s == to) {
            Some((_, g)) => g.push(id),
            None => groups.push((to, vec![id])),
        }
    }
    Ok(groups)
}

fn health(g: &Gate, now: Instant) -> Health {
    let (down, since) = g.health();
    let d = now.saturating_duration_since(since);
    if down {
        Health::Down(d)
    } else {
        Health::Up(d)
    }
}

/// The backup destination of a run: its own connection settings, gate and clean-up
/// clock, and the router that decides between it and the primary.
pub(super) struct Backup {
    pub ctx: Arc<Ctx>,
    pub gate: Gate,
    pub cleaned: Mutex<Option<Instant>>,
    pub cleaned_once: AtomicBool,
    pub router: Router,
}

/// Applies [`failed_over`] to the two gates, and remembers since when.
pub(super) struct Router {
    policy: Policy,
    /// Failed over since (monotonic, and ms since the epoch for operators).
    since: Mutex<Option<(Instant, u64)>>,
    primary_url: String,
    backup_url: String,
}

impl Router {
    pub fn new(policy: Policy, primary_url: String, backup_url: String) -> Router {
        Router {
            policy,
            since: Mutex::new(None),
            primary_url,
            backup_url,
        }
    }

    /// Where new deliveries go now; a change is logged once, when it happens.
    pub fn current(&self, primary: &Gate, backup: &Gate) -> Site {
        let now = Instant::now();
        let (p, b) = (health(primary, now), health(backup, now));
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let was = since.is_some();
        let is = failed_over(was, p, b, self.policy);
        if is && !was {
            *since = Some((now, now_ms()));
            warn!(
                "failed over: the primary destination {} has been down for {}; new deliveries go to the backup {} (entries already sent to the primary wait for it)",
                self.primary_url,
                humantime::format_duration(secs(p)),
                self.backup_url
            );
        } else if was && !is {
            let (t, _) = since.take().expect("was failed over");
            info!(
                failed_over_for = %humantime::format_duration(Duration::from_secs(t.elapsed().as_secs())),
                "failed back: new deliveries go to the primary destination {} again",
                self.primary_url
            );
        }
        if is {
            Site::Backup
        } else {
            Site::Primary
        }
    }

    /// Since when new deliveries go to the backup (ms since the epoch), if they do.
    pub fn failed_over_since(&self) -> Option<u64> {
        self.since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(_, ms)| ms)
    }

    /// Wait until new deliveries have somewhere to go: the chosen destination's
    /// gate is open. Wakes when either gate reopens and when the decision is due to
    /// change. `None` when cancelled.
    pub async fn wait(
        &self,
        primary: &Gate,
        backup: &Gate,
        cancel: &CancellationToken,
    ) -> Option<(Site, u64)> {
        loop {
            let site = self.current(primary, backup);
            let gate = match site {
                Site::Primary => primary,
                Site::Backup => backup,
            };
            if let Some(epoch) = gate.open_now() {
                return Some((site, epoch));
            }
            let now = Instant::now();
            let mut wake = gate.paused_until().unwrap_or(now);
            let (p, b) = (health(primary, now), health(backup, now));
            if let Some(d) = next_change(site == Site::Backup, p, b, self.policy) {
                wake = wake.min(now + d);
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep_until(wake) => {}
                _ = primary.reopened() => {}
                _ = backup.reopened() => {}
            }
        }
    }
}

fn secs(h: Health) -> Duration {
    let (Health::Up(d) | Health::Down(d)) = h;
    Duration::from_secs(d.as_secs())
}

/// Probes the primary in the background while it is down or failed over from, with
/// its gate's backoff: the workers are busy with the backup then, and only a
/// successful probe lets the primary's `back_after` clock start. Once failed over,
/// it keeps probing every `retry.initial` while the primary is up, so an outage
/// within `back_after` restarts the clock.
pub(super) fn prober(shared: Arc<Shared>, rt: tokio::runtime::Handle) {
    let Some(backup) = shared.backup.as_ref() else {
        return;
    };
    let every = shared.ctx.settings.retry.initial;
    let pause = |d: Duration| {
        rt.block_on(async {
            tokio::select! {
                _ = shared.cancel.cancelled() => false,
                _ = tokio::time::sleep(d) => true,
            }
        })
    };
    loop {
        let watching = backup.router.failed_over_since().is_some() || shared.gate.is_down();
        if !watching {
            if !pause(every) {
                return;
            }
            continue;
        }
        let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) else {
            return;
        };
        // A fresh connection each time: an old one proves nothing about now.
        let mut slot = Slot::default();
        let primary = shared.dest(Site::Primary);
        match slot.connect(&shared.ctx) {
            Ok(()) => super::workers::destination_up(&primary),
            Err(e) => {
                super::workers::destination_down(&shared, &primary, epoch, e);
            }
        }
        drop(slot);
        // Let the router see the change now, not at the next delivery.
        backup.router.current(&shared.gate, &backup.gate);
        if !pause(every) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        after: Duration::from_secs(300),
        back_after: Duration::from_secs(120),
    };
    fn up(s: u64) -> Health {
        Health::Up(Duration::from_secs(s))
    }
    fn down(s: u64) -> Health {
        Health::Down(Duration::from_secs(s))
    }

    #[test]
    fn the_primary_keeps_new_deliveries_until_it_has_been_down_for_after() {
        assert!(!failed_over(false, up(0), up(0), P));
        assert!(!failed_over(false, down(299), up(0), P));
        assert_eq!(
            next_change(false, down(299), up(0), P),
            Some(Duration::from_secs(1))
        );
        assert!(failed_over(false, down(300), up(0), P));
        // The backup being down does not keep the queue on a dead primary: whichever
        // comes back first takes the orders.
        assert!(failed_over(false, down(300), down(10), P));
    }

    #[test]
    fn failed_over_stays_until_the_primary_has_been_up_for_back_after() {
        assert!(failed_over(true, down(1000), up(0), P));
        assert!(failed_over(true, down(1000), down(5), P));
        assert_eq!(next_change(true, down(1000), up(0), P), None);
        assert!(failed_over(true, up(119), up(500), P));
        assert_eq!(
            next_change(true, up(119), up(500), P),
            Some(Duration::from_secs(1))
        );
        assert!(!failed_over(true, up(120), up(500), P));
    }

    #[test]
    fn both_down_then_the_primary_first_takes_the_orders_at_once() {
        assert!(!failed_over(true, up(0), down(30), P));
    }

    #[test]
    fn both_down_then_the_backup_first_takes_them_only_after_after() {
        // Not yet failed over: the backup coming back changes nothing until `after`.
        assert!(!failed_over(false, down(10), up(0), P));
        // Failed over already (the backup went down after): it takes them as it returns.
        assert!(failed_over(true, down(400), up(0), P));
    }

    #[test]
    fn only_unstarted_entries_move() {
        use plutus_state::{Event, NewEntry};
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j"), &Default::default()).unwrap();
        let new = |name: &str| NewEntry {
            name: name.into(),
            size: 1,
            crc32: 1,
            batch: "b".into(),
            source_path: name.into(),
            found_by: "watch".into(),
        };
        let pending = j.insert(new("a.json")).unwrap();
        assert_eq!(bound_to(&pending), None);
        let legacy = j.insert(new("b.json")).unwrap();
        let legacy = j
            .apply(
                legacy.id,
                Event::Uploaded {
                    remote_path: "t".into(),
                },
            )
            .unwrap();
        assert_eq!(
            bound_to(&legacy),
            Some(Site::Primary),
            "written before a backup existed"
        );
        let at_backup = j.insert(new("c.json")).unwrap();
        let at_backup = j
            .apply_at(
                at_backup.id,
                Event::Uploaded {
                    remote_path: "t".into(),
                },
                None,
                Some(Site::Backup),
            )
            .unwrap();
        assert_eq!(bound_to(&at_backup), Some(Site::Backup));
        let groups = split(&j, &[pending.id, legacy.id, at_backup.id]).unwrap();
        assert_eq!(
            groups,
            vec![
                (None, vec![pending.id]),
                (Some(Site::Primary), vec![legacy.id]),
                (Some(Site::Backup), vec![at_backup.id]),
            ]
        );
    }
}
