//! The running service: wires watch, sweep, intake, the worker pool and the
//! destination gate around one journal. `run` (forever) and `sync` (one pass) both
//! come through here; what they differ in is `Mode` (policy.rs), named once.
//!
//! - `queue`: entry ids waiting for a worker.
//! - `source`: the watch, the sweep and the intake loop.
//! - `workers`: connection threads, the archiver, the inbox clean-up.
//! - `housekeeping`: the systemd watchdog, journal pruning.
//! - `handler`: control-socket answers only the running service can give.
//! - `failover`: which destination new deliveries go to, with a backup configured.

pub mod failover;
mod handler;
mod housekeeping;
mod policy;
mod queue;
mod source;
mod workers;

pub use policy::Mode;

use crate::config::Settings;
use crate::operator::socket as control;
use crate::pipeline::{Ctx, Slot};
use crate::retry::Gate;
use crate::transfer;
use crate::watch::{self, Candidate};
use plutus_state::{now_ms, Journal, JournalError, JournalOptions, Site, State};
use queue::Queue;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: {what}: {source}")]
    Setup {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{a} and {b} are on different file systems; the archive and quarantine must be on the outbox's file system so that moving a file is one rename")]
    FileSystems { a: PathBuf, b: PathBuf },
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("{addr}: cannot serve metrics: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: journal write failed; stopped so that no file moves unrecorded: {source}\n  hint: free space or fix permissions there, then start again: every file not yet verified is still in the outbox")]
    JournalFailed { path: PathBuf, source: JournalError },
    #[error("{path}: private key {problem}; refusing to start\n  hint: {fix}")]
    Key {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("host key {problem}; refusing to start\n  hint: {fix}")]
    KnownHosts { problem: String, fix: String },
    #[error("{count} entries (e.g. {example}) were uploaded to the backup destination and are not finished, but the config has no [destination.backup]; refusing to start, since only the backup can tell whether they were delivered\n  hint: put the [destination.backup] table back until `plutus-sync journal list --state sent` shows none at the backup")]
    BackupGone { count: usize, example: String },
}

/// What a `sync` pass did.
#[derive(Debug, Default)]
pub struct Summary {
    pub found: usize,
    pub archived: usize,
    pub quarantined: usize,
    /// Not valid orders (yet), left in the outbox for their writers.
    pub invalid: usize,
    pub failed: usize,
    pub unfinished: usize,
    pub destination_error: Option<String>,
}

impl Summary {
    pub(crate) fn all_archived(&self) -> bool {
        self.archived == self.found && self.destination_error.is_none()
    }
}

/// Shared by the tasks of one run.
struct Shared {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    gate: Gate,
    mode: Mode,
    cancel: CancellationToken,
    /// When the inbox's unneeded temp files were last removed (`None`: not yet; every
    /// worker waits for that first clean-up before its first upload).
    cleaned: Mutex<Option<Instant>>,
    cleaned_once: AtomicBool,
    /// Entries this run touched (for `sync`'s summary; empty in the service).
    seen: Mutex<Vec<u64>>,
    destination_error: Mutex<Option<String>>,
    fatal: Mutex<Option<JournalError>>,
    /// Ask the sweep task for a sweep now.
    sweep_now: Arc<Notify>,
    /// Outbox files that may be open for writing (the watch keeps it; intake reads it).
    writers: Arc<watch::Writers>,
    /// `[destination.backup]`, when configured. `ctx`, `gate` and `cleaned` above are
    /// the primary's.
    backup: Option<failover::Backup>,
}

/// One destination's parts, as the workers use them.
pub(crate) struct Dest<'a> {
    site: Site,
    ctx: &'a Arc<Ctx>,
    gate: &'a Gate,
    cleaned: &'a Mutex<Option<Instant>>,
    cleaned_once: &'a AtomicBool,
}

impl Shared {
    /// Destination `site`'s parts (the primary's when there is no backup).
    fn dest(&self, site: Site) -> Dest<'_> {
        match (&self.backup, site) {
            (Some(b), Site::Backup) => Dest {
                site,
                ctx: &b.ctx,
                gate: &b.gate,
                cleaned: &b.cleaned,
                cleaned_once: &b.cleaned_once,
            },
            _ => Dest {
                site: Site::Primary,
                ctx: &self.ctx,
                gate: &self.gate,
                cleaned: &self.cleaned,
                cleaned_once: &self.cleaned_once,
            },
        }
    }

    /// Where new deliveries go now (the primary when there is no backup).
    fn current_site(&self) -> Site {
        match &self.backup {
            Some(b) => b.router.current(&self.gate, &b.gate),
            None => Site::Primary,
        }
    }
    /// Note that this run touched entry `id` (kept only for a pass's summary).
    fn touched(&self, id: u64) {
        if self.mode.summarises() {
            self.seen.lock().unwrap().push(id);
        }
    }

    fn fatal(&self, e: JournalError) {
        error!("journal error, stopping: {e}");
        crate::shutdown::notify_stopping();
        self.fatal.lock().unwrap().get_or_insert(e);
        self.cancel.cancel();
    }
}

/// Create the local folders if missing and check they share one file system.
fn prepare_dirs(s: &Settings) -> Result<(), ServiceError> {
    for (p, what) in [
        (&s.source.outbox, "cannot create the outbox"),
        (&s.source.archive, "cannot create the archive"),
        (&s.source.quarantine, "cannot create the quarantine"),
    ] {
        std::fs::create_dir_all(p).map_err(|source| ServiceError::Setup {
            path: p.clone(),
            what,
            source,
        })?;
    }
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .map_err(|source| ServiceError::Setup {
                path: p.to_path_buf(),
                what: "cannot read",
                source,
            })
    };
    let d = dev(&s.source.outbox)?;
    for other in [&s.source.archive, &s.source.quarantine] {
        if dev(other)? != d {
            return Err(ServiceError::FileSystems {
                a: s.source.outbox.clone(),
                b: other.clone(),
            });
        }
    }
    Ok(())
}

pub fn open_journal(s: &Settings) -> Result<Journal, ServiceError> {
    if let Some(parent) = s.journal.path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ServiceError::Setup {
            path: parent.to_path_buf(),
            what: "cannot create the journal's folder",
            source,
        })?;
    }
    Ok(Journal::open(&s.journal.path, &JournalOptions::default())?)
}

/// Run until `cancel` fires (Service) or until one pass is done (Once).
pub async fn run(
    settings: Settings,
    mode: Mode,
    cancel: CancellationToken,
) -> Result<Summary, ServiceError> {
    // As ssh does: a key others may read, or one that needs a passphrase, is refused
    // before anything starts, with the fix. The backup's too.
    let backup_dest = settings.destination.backup_destination();
    for dest in std::iter::once(&settings.destination).chain(backup_dest.as_ref()) {
        let crate::config::Destination::Sftp { host, port, .. } = &dest.url else {
            continue;
        };
        // Likewise a known_hosts line that cannot be read or honoured (see
        // transfer::sftp::known_hosts): never skipped.
        if let Err((problem, fix)) =
            transfer::sftp::read_known_hosts(&dest.known_hosts, host, *port)
        {
            return Err(ServiceError::KnownHosts { problem, fix });
        }
        if let Some((problem, fix)) = transfer::sftp::identity_problem(&dest.identity) {
            return Err(ServiceError::Key {
                path: dest.identity.clone(),
                problem,
                fix,
            });
        }
    }
    prepare_dirs(&settings)?;
    // Whichever way `run` returns (a set-up step below can fail after the workers
    // started), every task and worker thread is told to stop: a worker thread left
    // waiting would keep the runtime, and the process, from ending.
    let _stop_all = cancel.clone().drop_guard();
    let journal = Arc::new(open_journal(&settings)?);
    let transport = transfer::from_settings(&settings.destination);
    let settings = Arc::new(settings);
    info!(
        config = %settings.origin,
        outbox = %settings.source.outbox.display(),
        destination = %transport.describe(),
        journal = %settings.journal.path.display(),
        "starting"
    );
    let n = journal.recovered();
    if n > 0 {
        warn!(
            entries = n,
            "the last run stopped in the middle of journal writes (killed, crashed or power cut); the index keys of those entries were repaired"
        );
    }

    let metrics = match &backup_dest {
        Some(_) => crate::metrics::Metrics::new().with_failover(),
        None => crate::metrics::Metrics::new(),
    };
    let metrics = Arc::new(metrics);
    let mut primary_ctx = Ctx::new(
        settings.clone(),
        journal.clone(),
        transport,
        metrics.clone(),
    );
    let backup = match (backup_dest, &settings.destination.backup) {
        (Some(dest), Some(b)) => {
            primary_ctx = primary_ctx.at(Site::Primary);
            let transport = transfer::from_settings(&dest);
            let router = failover::Router::new(
                failover::Policy {
                    after: b.after,
                    back_after: b.back_after,
                },
                primary_ctx.transport.describe(),
                transport.describe(),
            );
            info!(
                backup = %transport.describe(),
                after = %humantime::format_duration(b.after),
                back_after = %humantime::format_duration(b.back_after),
                "backup destination configured"
            );
            let mut s = (*settings).clone();
            s.destination = dest;
            Some(failover::Backup {
                ctx: Arc::new(
                    Ctx::new(Arc::new(s), journal.clone(), transport, metrics).at(Site::Backup),
                ),
                gate: Gate::new(settings.retry.initial, settings.retry.max),
                cleaned: Mutex::new(None),
                cleaned_once: AtomicBool::new(false),
                router,
            })
        }
        _ => None,
    };
    let shared = Arc::new(Shared {
        ctx: Arc::new(primary_ctx),
        queue: Arc::new(Queue::new()),
        gate: Gate::new(settings.retry.initial, settings.retry.max),
        mode,
        cancel: cancel.clone(),
        cleaned: Mutex::new(None),
        cleaned_once: AtomicBool::new(false),
        seen: Mutex::new(Vec::new()),
        destination_error: Mutex::new(None),
        fatal: Mutex::new(None),
        sweep_now: Arc::new(Notify::new()),
        writers: Arc::default(),
        backup,
    });

    // Recovery: whatever was in flight when the last run stopped goes first.
    let live = journal.live()?;
    // An entry sent to a backup that the config no longer names cannot be resolved
    // anywhere else: its temp, the proof, is there (failover.rs).
    if shared.backup.is_none() {
        let at_backup: Vec<_> = live
            .iter()
            .filter(|r| failover::bound_to(r) == Some(Site::Backup) && r.state() == State::Sent)
            .collect();
        if let Some(first) = at_backup.first() {
            return Err(ServiceError::BackupGone {
                count: at_backup.len(),
                example: crate::intake::shown(&first.name).into_owned(),
            });
        }
    }
    let now = now_ms();
    for rec in &live {
        shared.touched(rec.id);
        match rec.next_attempt_at {
            // A stored retry time holds across restarts.
            Some(at) if at > now => {
                if mode.waits_for_retries() {
                    shared.queue.push_at(rec.id, at, &cancel);
                }
            }
            _ => shared.queue.push(rec.id),
        }
    }
    if !live.is_empty() {
        info!(
            entries = live.len(),
            "resuming entries left pending, sent or verified by the last run"
        );
    }

    let tracker = TaskTracker::new();
    if mode.serves() {
        let listener = control::bind(&settings.control.socket)?;
        let handler: Arc<dyn control::Handler> = Arc::new(handler::ServiceHandler(shared.clone()));
        let access = crate::operator::access::Access::new(&settings.control.operators);
        tracker.spawn(control::serve(listener, handler, access, cancel.clone()));
        tracker.spawn(housekeeping::prune_task(shared.clone()));
        if let Some(addr) = settings.metrics.listen {
            let listener = crate::metrics::bind(addr)
                .map_err(|source| ServiceError::Metrics { addr, source })?;
            let sh = shared.clone();
            let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                let m = &sh.ctx.metrics;
                m.refresh(&sh.ctx.journal, sh.queue.depth(), !sh.gate.is_down());
                if let Some(b) = &sh.backup {
                    let over = b.router.current(&sh.gate, &b.gate) == Site::Backup;
                    m.refresh_failover(!sh.gate.is_down(), !b.gate.is_down(), over);
                }
            });
            tracker.spawn(crate::metrics::serve(
                listener,
                shared.ctx.metrics.clone(),
                refresh,
                cancel.clone(),
            ));
            info!("serving metrics on http://{addr}/metrics");
        }
    }

    // Bounded so a burst cannot grow memory without limit; when it is full the
    // watcher asks for a sweep instead of dropping anything.
    let (tx, rx) = mpsc::channel::<Candidate>(4096);
    let sweep_now = shared.sweep_now.clone();
    {
        let shared = shared.clone();
        let retry_tx = mode.looks_again_later().then(|| tx.clone());
        tracker.spawn(async move {
            source::intake_task(shared.clone(), rx, retry_tx).await;
            if !shared.mode.repeats() {
                shared.queue.close();
            }
        });
    }

    // The watch is registered before the first sweep, so no file falls between them.
    if mode.watches() {
        let lost = Arc::new(Notify::new());
        let w = watch::start(
            &settings.source.outbox,
            tx.clone(),
            sweep_now.clone(),
            lost.clone(),
            shared.writers.clone(),
        )?;
        tracker.spawn(source::watch_task(
            shared.clone(),
            w,
            tx.clone(),
            sweep_now.clone(),
            lost,
        ));
    }
    {
        let shared = shared.clone();
        let sweep_now = sweep_now.clone();
        tracker.spawn(source::sweep_task(shared, tx, sweep_now));
    }
    // Workers last, once nothing above can fail: their threads cannot be dropped
    // like tasks, only told to stop.
    let (archive_tx, archive_rx) = mpsc::unbounded_channel();
    for n in 0..settings.destination.connections {
        let (shared, tx, rt) = (
            shared.clone(),
            archive_tx.clone(),
            tokio::runtime::Handle::current(),
        );
        tracker.spawn_blocking(move || workers::worker(n, shared, tx, rt));
    }
    drop(archive_tx);
    tracker.spawn(workers::archiver(shared.clone(), archive_rx));
    if shared.backup.is_some() && mode.pauses_when_down() {
        let (shared, rt) = (shared.clone(), tokio::runtime::Handle::current());
        tracker.spawn_blocking(move || failover::prober(shared, rt));
    }
    info!(
        workers = settings.destination.connections,
        resumed = live.len(),
        "ready: {} {}",
        mode.ready_line(),
        settings.source.outbox.display()
    );

    // Service: until a signal. Once: every task ends by itself when the pass is done
    // (the sweep stops, the intake channel closes, the closed queue empties).
    if mode.serves() {
        crate::shutdown::notify_ready();
        housekeeping::supervise(&shared).await;
        crate::shutdown::notify_stopping();
    }
    tracker.close();
    tracker.wait().await;
    // `sync` ends with no temp a delivery left behind (a conflict's, a recovered
    // entry's): every upload of the pass is over, so one more clean-up takes them all.
    if !mode.repeats() && shared.destination_error.lock().unwrap().is_none() {
        let sh = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            *sh.cleaned.lock().unwrap_or_else(|p| p.into_inner()) = None;
            workers::clean_once(&sh.dest(Site::Primary), &mut Slot::default())
        })
        .await;
    }
    let flushed = journal.flush();
    if mode.serves() {
        let _ = std::fs::remove_file(&settings.control.socket);
    }
    if let Some(e) = shared.fatal.lock().unwrap().take().or(flushed.err()) {
        return Err(ServiceError::JournalFailed {
            path: settings.journal.path.clone(),
            source: e,
        });
    }

    let summary = summarise(&shared, &journal)?;
    info!("stopped; journal flushed");
    Ok(summary)
}

/// Where each entry this run touched ended up (empty for the service, which keeps none).
fn summarise(shared: &Shared, journal: &Journal) -> Result<Summary, JournalError> {
    let mut summary = Summary {
        destination_error: shared.destination_error.lock().unwrap().clone(),
        ..Summary::default()
    };
    let mut ids = std::mem::take(&mut *shared.seen.lock().unwrap());
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let Some(rec) = journal.get(id)? else {
            continue;
        };
        summary.found += 1;
        match rec.state() {
            State::Archived => summary.archived += 1,
            State::Quarantined => summary.quarantined += 1,
            State::Invalid => summary.invalid += 1,
            State::Failed => summary.failed += 1,
            _ => summary.unfinished += 1,
        }
    }
    Ok(summary)
}
