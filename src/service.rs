//! The running service: wires watch, sweep, intake, the worker pool and the
//! destination gate around one journal. `run` (forever) and `sync` (one pass) both
//! come through here; only `Mode` differs.

use crate::config::Settings;
use crate::control::{self, Request};
use crate::intake::{self, Found, Outcome};
use crate::journal as ops;
use crate::pipeline::{self, Ctx, Slot, Step};
use crate::retry::{Down, Gate};
use crate::sweep;
use crate::transfer::{self, TransferError};
use crate::watch::{self, Candidate};
use plutus_state::{now_ms, Journal, JournalError, JournalOptions, State};
use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Watch and deliver until cancelled.
    Service,
    /// One sweep, one attempt per file, then stop (`sync`, for cron).
    Once,
}

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
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
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
    pub fn all_archived(&self) -> bool {
        self.archived == self.found && self.destination_error.is_none()
    }
}

/// Entry ids waiting for a worker. An id is in `queued` from the moment it is pushed
/// until a worker or the archiver says it is done with it, so no entry is ever worked
/// on twice at once. A push of an id already queued (a replay while the archiver holds
/// it) is remembered in `again` and honoured when it is done.
struct Queue {
    inner: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<u64>,
    queued: HashSet<u64>,
    again: HashSet<u64>,
    closed: bool,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            inner: Mutex::new(QueueState::default()),
            ready: Notify::new(),
        }
    }

    fn push(&self, id: u64) {
        let mut st = self.inner.lock().unwrap();
        if st.queued.insert(id) {
            st.ready.push_back(id);
            drop(st);
            self.ready.notify_one();
        } else {
            st.again.insert(id);
        }
    }

    /// Back to the front: an entry that met a destination outage keeps its turn.
    fn requeue(&self, id: u64) {
        self.inner.lock().unwrap().ready.push_front(id);
        self.ready.notify_one();
    }

    /// Push `id` when `at` (ms since epoch) comes.
    fn push_at(self: &Arc<Self>, id: u64, at: u64, cancel: &CancellationToken) {
        {
            let mut st = self.inner.lock().unwrap();
            if !st.queued.insert(id) {
                return;
            }
        }
        self.requeue_at(id, at, cancel);
    }

    /// Like `push_at` for an id a worker holds.
    fn requeue_at(self: &Arc<Self>, id: u64, at: u64, cancel: &CancellationToken) {
        let q = self.clone();
        let cancel = cancel.clone();
        let wait = Duration::from_millis(at.saturating_sub(now_ms()));
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(wait) => {
                    q.inner.lock().unwrap().ready.push_back(id);
                    q.ready.notify_one();
                }
            }
        });
    }

    fn done(&self, id: u64) {
        let mut st = self.inner.lock().unwrap();
        if st.again.remove(&id) && !st.closed {
            st.ready.push_back(id);
            drop(st);
            self.ready.notify_one();
            return;
        }
        st.queued.remove(&id);
        if st.closed && st.queued.is_empty() {
            drop(st);
            self.ready.notify_waiters();
        }
    }

    /// No more pushes will come: workers stop once everything queued is done.
    fn close(&self) {
        self.inner.lock().unwrap().closed = true;
        self.ready.notify_waiters();
    }

    async fn pop(&self, cancel: &CancellationToken) -> Option<u64> {
        loop {
            let notified = self.ready.notified();
            {
                let mut st = self.inner.lock().unwrap();
                if let Some(id) = st.ready.pop_front() {
                    return Some(id);
                }
                if st.closed && st.queued.is_empty() {
                    return None;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = notified => {}
            }
        }
    }

    fn depth(&self) -> usize {
        self.inner.lock().unwrap().queued.len()
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
    /// Entries this run touched (for `sync`'s summary).
    seen: Mutex<Vec<u64>>,
    destination_error: Mutex<Option<String>>,
    fatal: Mutex<Option<JournalError>>,
    /// Ask the sweep task for a sweep now.
    sweep_now: Arc<Notify>,
    /// Outbox files that may be open for writing (the watch keeps it; intake reads it).
    writers: Arc<watch::Writers>,
}

impl Shared {
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
        (&s.outbox, "cannot create the outbox"),
        (&s.archive, "cannot create the archive"),
        (&s.quarantine, "cannot create the quarantine"),
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
    let d = dev(&s.outbox)?;
    for other in [&s.archive, &s.quarantine] {
        if dev(other)? != d {
            return Err(ServiceError::FileSystems {
                a: s.outbox.clone(),
                b: other.clone(),
            });
        }
    }
    Ok(())
}

pub fn open_journal(s: &Settings) -> Result<Journal, ServiceError> {
    if let Some(parent) = s.journal.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ServiceError::Setup {
            path: parent.to_path_buf(),
            what: "cannot create the journal's folder",
            source,
        })?;
    }
    Ok(Journal::open(&s.journal, &JournalOptions::default())?)
}

/// Run until `cancel` fires (Service) or until one pass is done (Once).
pub async fn run(
    settings: Settings,
    mode: Mode,
    cancel: CancellationToken,
) -> Result<Summary, ServiceError> {
    // As ssh does: a key others may read, or one that needs a passphrase, is refused
    // before anything starts, with the fix.
    if let crate::config::Destination::Sftp { .. } = settings.destination {
        if let Some((problem, fix)) = transfer::sftp::identity_problem(&settings.identity) {
            return Err(ServiceError::Key {
                path: settings.identity.clone(),
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
    let transport = transfer::from_settings(&settings);
    let settings = Arc::new(settings);
    info!(
        config = %settings.origin,
        outbox = %settings.outbox.display(),
        destination = %transport.describe(),
        journal = %settings.journal.display(),
        "starting"
    );
    let n = journal.recovered();
    if n > 0 {
        warn!(
            entries = n,
            "the last run stopped in the middle of journal writes (killed, crashed or power cut); the index keys of those entries were repaired"
        );
    }

    let shared = Arc::new(Shared {
        ctx: Arc::new(Ctx::new(
            settings.clone(),
            journal.clone(),
            transport,
            Arc::new(crate::metrics::Metrics::new()),
        )),
        queue: Arc::new(Queue::new()),
        gate: Gate::new(settings.retry_initial, settings.retry_max),
        mode,
        cancel: cancel.clone(),
        cleaned: Mutex::new(None),
        cleaned_once: AtomicBool::new(false),
        seen: Mutex::new(Vec::new()),
        destination_error: Mutex::new(None),
        fatal: Mutex::new(None),
        sweep_now: Arc::new(Notify::new()),
        writers: Arc::default(),
    });

    // Recovery: whatever was in flight when the last run stopped goes first.
    let live = journal.live()?;
    let now = now_ms();
    for rec in &live {
        shared.seen.lock().unwrap().push(rec.id);
        match rec.next_attempt_at {
            // A stored retry time holds across restarts: a cron `sync` every few
            // minutes must not burn an attempt per run on a file that is backing off.
            Some(at) if at > now => {
                if mode == Mode::Service {
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
    if mode == Mode::Service {
        let listener = control::bind(&settings.socket)?;
        let handler: Arc<dyn control::Handler> = Arc::new(ServiceHandler(shared.clone()));
        tracker.spawn(control::serve(listener, handler, cancel.clone()));
        tracker.spawn(prune_task(shared.clone()));
        if let Some(addr) = settings.metrics_listen {
            let listener = crate::metrics::bind(addr)
                .map_err(|source| ServiceError::Metrics { addr, source })?;
            let sh = shared.clone();
            let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || refresh_gauges(&sh));
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
        let retry_tx = (mode == Mode::Service).then(|| tx.clone());
        tracker.spawn(async move {
            intake_task(shared.clone(), rx, retry_tx).await;
            if shared.mode == Mode::Once {
                shared.queue.close();
            }
        });
    }

    // The watch is registered before the first sweep, so no file falls between them.
    if mode == Mode::Service {
        let lost = Arc::new(Notify::new());
        let w = watch::start(
            &settings.outbox,
            tx.clone(),
            sweep_now.clone(),
            lost.clone(),
            shared.writers.clone(),
        )?;
        tracker.spawn(watch_task(
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
        tracker.spawn(sweep_task(shared, tx, sweep_now));
    }
    // Workers last, once nothing above can fail: their threads cannot be dropped
    // like tasks, only told to stop.
    let (archive_tx, archive_rx) = mpsc::unbounded_channel();
    for n in 0..settings.connections {
        let (shared, tx, rt) = (
            shared.clone(),
            archive_tx.clone(),
            tokio::runtime::Handle::current(),
        );
        tracker.spawn_blocking(move || worker(n, shared, tx, rt));
    }
    drop(archive_tx);
    tracker.spawn(archiver(shared.clone(), archive_rx));
    match mode {
        Mode::Service => info!(
            workers = settings.connections,
            resumed = live.len(),
            "ready: watching {}",
            settings.outbox.display()
        ),
        Mode::Once => info!(
            workers = settings.connections,
            resumed = live.len(),
            "ready: one pass over {}",
            settings.outbox.display()
        ),
    }

    // Service: until a signal. Once: every task ends by itself when the pass is done
    // (the sweep stops, the intake channel closes, the closed queue empties).
    if mode == Mode::Service {
        crate::shutdown::notify_ready();
        supervise(&shared).await;
        crate::shutdown::notify_stopping();
    }
    tracker.close();
    tracker.wait().await;
    // `sync` ends with no temp a delivery left behind (a conflict's, a recovered
    // entry's): every upload of the pass is over, so one more clean-up takes them all.
    if mode == Mode::Once && shared.destination_error.lock().unwrap().is_none() {
        let sh = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            *sh.cleaned.lock().unwrap_or_else(|p| p.into_inner()) = None;
            clean_once(&sh, &mut Slot::default())
        })
        .await;
    }
    let flushed = journal.flush();
    if mode == Mode::Service {
        let _ = std::fs::remove_file(&settings.socket);
    }
    if let Some(e) = shared.fatal.lock().unwrap().take().or(flushed.err()) {
        return Err(ServiceError::JournalFailed {
            path: settings.journal.clone(),
            source: e,
        });
    }

    let mut summary = Summary {
        destination_error: shared.destination_error.lock().unwrap().clone(),
        ..Summary::default()
    };
    let mut ids = shared.seen.lock().unwrap().clone();
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
    info!("stopped; journal flushed");
    Ok(summary)
}

/// Keeps the watch alive across the outbox being deleted and created again (a restore
/// from backup, an operator's `rm -r`): the old watch dies with the folder.
async fn watch_task(
    shared: Arc<Shared>,
    first: watch::Watch,
    tx: mpsc::Sender<Candidate>,
    sweep_now: Arc<Notify>,
    lost: Arc<Notify>,
) {
    let outbox = shared.ctx.settings.outbox.clone();
    let mut current = Some(first);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = lost.notified() => {}
        }
        drop(current.take());
        loop {
            if outbox.is_dir() {
                match watch::start(
                    &outbox,
                    tx.clone(),
                    sweep_now.clone(),
                    lost.clone(),
                    shared.writers.clone(),
                ) {
                    Ok(w) => {
                        current = Some(w);
                        info!("watching the outbox again: {}", outbox.display());
                        sweep_now.notify_one();
                        break;
                    }
                    Err(e) => warn!("{e}; trying again"),
                }
            }
            tokio::select! {
                _ = shared.cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

async fn sweep_task(shared: Arc<Shared>, tx: mpsc::Sender<Candidate>, sweep_now: Arc<Notify>) {
    let s = shared.ctx.settings.clone();
    loop {
        let (j, st) = (shared.ctx.journal.clone(), s.clone());
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || sweep::scan(&j, &st)).await {
            Ok(Ok(paths)) => {
                debug!(
                    found = paths.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "sweep"
                );
                for path in paths {
                    tokio::select! {
                        _ = shared.cancel.cancelled() => return,
                        r = tx.send(Candidate { path, found: Found::Sweep }) => if r.is_err() { return },
                    }
                }
            }
            Ok(Err(e)) => warn!("{}: cannot sweep the outbox: {e}", s.outbox.display()),
            Err(e) => warn!("sweep task failed: {e}"),
        }
        if shared.mode == Mode::Once {
            return;
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(s.sweep_interval) => {}
            _ = sweep_now.notified() => {}
        }
    }
}

async fn intake_task(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Candidate>,
    retry_tx: Option<mpsc::Sender<Candidate>>,
) {
    let waiting: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
    // Once mode: files not yet settled are looked at again after the channel drains.
    let mut deferred: Vec<(Instant, PathBuf, u32)> = Vec::new();
    loop {
        let c = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            c = rx.recv() => c,
        };
        let c = match c {
            Some(c) => c,
            None => {
                let Some(pos) = (0..deferred.len()).min_by_key(|&i| deferred[i].0) else {
                    return;
                };
                let (at, path, tries) = deferred.swap_remove(pos);
                tokio::time::sleep_until(at).await;
                if tries >= 3 {
                    warn!(file = %crate::intake::shown(&path.display().to_string()), "still being written after {tries} waits; left for the next run");
                    continue;
                }
                take(
                    &shared,
                    Candidate {
                        path,
                        found: Found::Sweep,
                    },
                    tries,
                    &mut deferred,
                    &waiting,
                    retry_tx.as_ref(),
                )
                .await;
                continue;
            }
        };
        // A file already waiting for a second look is not looked at twice; one that is
        // gone is (an `invalid` entry's file removed by its writer: dropped now).
        if c.found == Found::Sweep
            && waiting.lock().unwrap().contains(&c.path)
            && std::fs::symlink_metadata(&c.path).is_ok()
        {
            continue;
        }
        take(&shared, c, 0, &mut deferred, &waiting, retry_tx.as_ref()).await;
    }
}

async fn take(
    shared: &Arc<Shared>,
    c: Candidate,
    tries: u32,
    deferred: &mut Vec<(Instant, PathBuf, u32)>,
    waiting: &Arc<Mutex<HashSet<PathBuf>>>,
    retry_tx: Option<&mpsc::Sender<Candidate>>,
) {
    let ctx = shared.ctx.clone();
    let path = c.path.clone();
    let writing = path
        .file_name()
        .is_some_and(|n| shared.writers.is_writing(n));
    let out = tokio::task::spawn_blocking(move || {
        intake::take(&ctx.journal, &ctx.settings, &c.path, c.found, writing)
    })
    .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            warn!("intake task failed: {e}");
            return;
        }
    };
    // Look at `path` again after `d`: the service waits; `sync` takes up to three
    // short waits for a file still settling, then leaves it for the next run.
    let look_again = |d: Duration, deferred: &mut Vec<(Instant, PathBuf, u32)>| match retry_tx {
        Some(tx) => {
            if waiting.lock().unwrap().insert(path.clone()) {
                let (tx, waiting, cancel, path) = (
                    tx.clone(),
                    waiting.clone(),
                    shared.cancel.clone(),
                    path.clone(),
                );
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(d) => {
                            waiting.lock().unwrap().remove(&path);
                            let _ = tx.send(Candidate { path, found: Found::Sweep }).await;
                        }
                    }
                });
            }
        }
        None => deferred.push((Instant::now() + d, path.clone(), tries + 1)),
    };
    match out {
        Ok(Outcome::Pending(rec)) => {
            let was = if rec.history.len() > 1 {
                " (was invalid; its writer finished it)"
            } else {
                ""
            };
            info!(file = %crate::intake::shown(&rec.name), batch = %rec.batch, state = %rec.state(), size = rec.size, crc32 = %rec.crc_hex(), found_by = %rec.found_by, "detected{was}");
            shared.seen.lock().unwrap().push(rec.id);
            shared.queue.push(rec.id);
        }
        Ok(Outcome::Duplicate { record, of }) => {
            warn!(file = %crate::intake::shown(&record.name), batch = %record.batch, state = %record.state(), "duplicate of #{of}, which was delivered with the same size and CRC32: archiving without sending");
            shared.seen.lock().unwrap().push(record.id);
            shared.queue.push(record.id);
        }
        Ok(Outcome::Quarantined(rec)) => {
            shared.ctx.metrics.quarantined.inc();
            warn!(
                file = %crate::intake::shown(&rec.name), batch = %rec.batch, state = %rec.state(),
                "{}: quarantined to {}",
                rec.last_error.as_deref().unwrap_or("invalid"),
                crate::intake::shown(rec.quarantine_path.as_deref().unwrap_or("?"))
            );
            shared.seen.lock().unwrap().push(rec.id);
        }
        Ok(Outcome::Invalid { record, recheck_in }) => {
            // Logged once, here; the looks after this one are silent until it moves on.
            warn!(
                file = %crate::intake::shown(&record.name), batch = %record.batch, state = %record.state(),
                "{}: not a valid order; left in the outbox, never sent. Looked at again on every change: delivered if it becomes valid, quarantined once unchanged for {}",
                record.last_error.as_deref().unwrap_or("invalid"),
                humantime::format_duration(shared.ctx.settings.quarantine_after)
            );
            shared.seen.lock().unwrap().push(record.id);
            if shared.mode == Mode::Service {
                look_again(recheck_in, deferred);
            }
        }
        Ok(Outcome::StillInvalid(d)) => {
            if shared.mode == Mode::Service {
                look_again(d, deferred);
            }
        }
        Ok(Outcome::Dropped { record, why }) => {
            info!(file = %crate::intake::shown(&record.name), "{why}: it left the outbox before it became a valid order; entry #{} dropped", record.id);
        }
        Ok(Outcome::Wait(d)) => look_again(d, deferred),
        Ok(Outcome::Skip(why)) => {
            debug!(file = %crate::intake::shown(&path.display().to_string()), "skipped: {why}")
        }
        Err(intake::IntakeError::Journal(e)) => shared.fatal(e),
        Err(e) => warn!("{e}; the next sweep will try again"),
    }
}

/// One worker per connection, on a thread of its own for the whole run: a file's
/// steps all block (ssh2, sled, file reads), and handing each one to tokio's blocking
/// pool and back cost more CPU than the steps themselves in the burst benchmark. The
/// waits (queue, destination gate) go through the runtime's handle.
fn worker(
    n: usize,
    shared: Arc<Shared>,
    archive: mpsc::UnboundedSender<ToArchive>,
    rt: tokio::runtime::Handle,
) {
    let ctx = shared.ctx.clone();
    let mut slot = Slot::default();
    let mut last_used = Instant::now();
    // In the service, worker 0 cleans the inbox at once, so a crash's temp files do not
    // wait for the next order, and every worker connects before the first file arrives.
    // If the destination is down, the first delivery does both.
    if shared.mode == Mode::Service {
        if let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) {
            let r = if n == 0 {
                clean_once(&shared, &mut slot)
            } else {
                slot.connect(&ctx)
            };
            if let Err(e) = r {
                destination_down(&shared, epoch, e);
            }
        }
    }
    // Worker 0 of the service also cleans the inbox when it sits idle, so a leftover
    // a server would not let go of is removed once it can be, not at the next order.
    let idle_clean = shared.mode == Mode::Service && n == 0;
    loop {
        let popped = rt.block_on(async {
            if idle_clean {
                tokio::time::timeout(
                    shared.ctx.settings.sweep_interval,
                    shared.queue.pop(&shared.cancel),
                )
                .await
            } else {
                Ok(shared.queue.pop(&shared.cancel).await)
            }
        });
        let id = match popped {
            Ok(Some(id)) => id,
            Ok(None) => break,
            Err(_idle) => {
                if let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) {
                    // A connection that sat idle may have died quietly (a NAT, the
                    // server's idle limit): a fresh one, not a false outage.
                    slot.refresh();
                    if let Err(e) = clean_once(&shared, &mut slot) {
                        destination_down(&shared, epoch, e);
                    }
                }
                continue;
            }
        };
        let Some(epoch) = rt.block_on(shared.gate.wait_open(&shared.cancel)) else {
            break;
        };
        // A connection that sat idle is pinged (and replaced if dead) before anything
        // uses it, the clean-up included.
        if last_used.elapsed() > Duration::from_secs(15) {
            slot.refresh();
        }

        if let Err(e) = clean_once(&shared, &mut slot) {
            if destination_down(&shared, epoch, e) {
                shared.queue.requeue(id);
            } else {
                shared.queue.done(id);
            }
            continue;
        }

        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pipeline::process(&ctx, &mut slot, id)
        }));
        last_used = Instant::now();
        let step = match step {
            Ok(step) => step,
            Err(_) => {
                error!(worker = n, id, "worker step panicked");
                slot = Slot::default();
                // Not dropped: the entry is still live in the journal, and only the
                // queue brings it back before the next restart.
                settle(&shared, id, pipeline::retry_later(&shared.ctx));
                continue;
            }
        };
        match step {
            Ok(Step::DestinationDown(e)) => {
                if destination_down(&shared, epoch, e) {
                    shared.queue.requeue(id);
                } else {
                    shared.queue.done(id);
                }
            }
            Ok(step) => {
                if slot.is_connected() && matches!(step, Step::Done | Step::Verified(_)) {
                    destination_up(&shared);
                }
                if let Step::Verified(sent_as) = step {
                    // Still queued until the archiver is done with it, so nothing
                    // else picks the entry up meanwhile.
                    if archive.send((id, sent_as)).is_err() {
                        shared.queue.done(id);
                    }
                } else {
                    settle(&shared, id, step);
                }
            }
            Err(e) => {
                shared.queue.done(id);
                shared.fatal(e);
            }
        }
    }
}

/// After a step that needs nothing more from a worker: done, or back in the queue later.
fn settle(shared: &Shared, id: u64, step: Step) {
    match step {
        Step::Rescan => {
            shared.queue.done(id);
            shared.sweep_now.notify_one();
        }
        Step::RetryAt(at) if shared.mode == Mode::Service => {
            shared.queue.requeue_at(id, at, &shared.cancel);
        }
        _ => shared.queue.done(id),
    }
}

type ToArchive = (u64, Option<crate::archive::LocalId>);

/// Archives what the workers verified, in batches: everything that arrived while the
/// last batch was being archived shares one journal flush and one fsync per folder.
/// Ends when every worker has ended (their senders dropped) and the channel is empty.
async fn archiver(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<ToArchive>) {
    const MAX_BATCH: usize = 512;
    // How long the first file of a batch waits for others: the flush and the folder
    // fsyncs cost the same for one file or a hundred. Nothing waits on the archive
    // move (the file is already in the inbox), so a few ms here are invisible.
    const WINDOW: Duration = Duration::from_millis(5);
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() < MAX_BATCH {
            let _ = tokio::time::timeout(WINDOW, async {
                while batch.len() < MAX_BATCH {
                    let room = MAX_BATCH - batch.len();
                    if rx.recv_many(&mut batch, room).await == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        let ctx = shared.ctx.clone();
        let work = std::mem::take(&mut batch);
        let ids: Vec<u64> = work.iter().map(|&(id, _)| id).collect();
        let joined =
            tokio::task::spawn_blocking(move || pipeline::archive_batch(&ctx, &work)).await;
        match joined {
            Ok(Ok(steps)) => {
                for (id, step) in steps {
                    settle(&shared, id, step);
                }
            }
            Ok(Err(e)) => {
                for id in ids {
                    shared.queue.done(id);
                }
                shared.fatal(e);
            }
            Err(e) => {
                error!("archive step panicked: {e}");
                for id in ids {
                    settle(&shared, id, pipeline::retry_later(&shared.ctx));
                }
            }
        }
    }
}

/// Remove temp files nobody needs from the inbox (a crash's, a dropped connection's):
/// at start, before any upload, and again every sweep interval, since a temp that a
/// dropped session still held open (Win32-OpenSSH) may only be removable later.
fn clean_once(shared: &Shared, slot: &mut Slot) -> Result<(), TransferError> {
    // The first clean-up is waited for by every worker; a later one by nobody (another
    // worker doing it is as good).
    let mut last = match shared.cleaned.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) if shared.cleaned_once.load(Ordering::Acquire) => {
            return Ok(());
        }
        Err(std::sync::TryLockError::WouldBlock) => {
            shared.cleaned.lock().unwrap_or_else(|p| p.into_inner())
        }
    };
    if last.is_some_and(|at| at.elapsed() < shared.ctx.settings.sweep_interval) {
        return Ok(());
    }
    let removed = slot.clean_temps(&shared.ctx)?;
    *last = Some(Instant::now());
    shared.cleaned_once.store(true, Ordering::Release);
    if !removed.is_empty() {
        info!(
            count = removed.len(),
            "removed temp files no delivery needs from the inbox: {}",
            removed.join(", ")
        );
    }
    Ok(())
}

/// The service's main loop: wait for the signal, and while waiting prove to systemd's
/// watchdog that the runtime and the journal still answer. A wedged service stops
/// saying so, and systemd restarts it.
async fn supervise(shared: &Arc<Shared>) {
    let Some(period) = crate::shutdown::watchdog_period() else {
        shared.cancel.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(period / 2) => {}
        }
        let j = shared.ctx.journal.clone();
        let alive = tokio::time::timeout(
            period / 2,
            tokio::task::spawn_blocking(move || j.counts().is_ok()),
        )
        .await;
        if matches!(alive, Ok(Ok(true))) {
            crate::shutdown::notify_watchdog();
        } else {
            warn!(
                "journal did not answer within {:?}; not petting the watchdog",
                period / 2
            );
        }
    }
}

/// Scrape-time gauges: states from the journal's index, the queue, the oldest pending.
fn refresh_gauges(shared: &Shared) {
    let m = &shared.ctx.metrics;
    let j = &shared.ctx.journal;
    if let Ok(counts) = j.counts() {
        for (st, n) in counts {
            m.files
                .get_or_create(&crate::metrics::StateLabel {
                    state: st.to_string(),
                })
                .set(n as i64);
        }
    }
    m.queue_depth.set(shared.queue.depth() as i64);
    let oldest = [State::Pending, State::Sent]
        .into_iter()
        .filter_map(|st| j.oldest_in_state(st).ok().flatten())
        .map(|r| r.detected_at)
        .min();
    m.oldest_pending_age_seconds
        .set(oldest.map_or(0.0, |t| now_ms().saturating_sub(t) as f64 / 1000.0));
    m.destination_up.set(i64::from(!shared.gate.is_down()));
}

fn destination_up(shared: &Shared) {
    if let Some(failures) = shared.gate.report_up() {
        info!(
            failed_probes = failures,
            "destination {} is reachable again",
            shared.ctx.transport.describe()
        );
    }
}

/// Returns whether the entry should wait in the queue (Service) or not (Once: the
/// pass ends here).
fn destination_down(shared: &Shared, epoch: u64, e: TransferError) -> bool {
    let msg = e.to_string();
    if shared.mode == Mode::Once {
        let mut d = shared.destination_error.lock().unwrap();
        if d.is_none() {
            error!("{msg}");
            *d = Some(msg);
        }
        shared.cancel.cancel();
        return false;
    }
    match shared.gate.report_down(epoch, &msg) {
        Down::Paused { failures, retry_in } => {
            let retry_in =
                humantime::format_duration(Duration::from_secs(retry_in.as_secs().max(1)));
            let queued = shared.queue.depth();
            if matches!(
                e,
                TransferError::HostKey { .. } | TransferError::Auth { .. }
            ) {
                error!(
                    failures,
                    queued, "{msg}\n  destination paused; next try in {retry_in}"
                );
            } else {
                warn!(
                    failures,
                    queued, "destination down: {msg}; next try in {retry_in}"
                );
            }
        }
        Down::AlreadyPaused => debug!("destination down (already paused): {msg}"),
    }
    true
}

/// Answers the control socket from inside the running service.
struct ServiceHandler(Arc<Shared>);

impl control::Handler for ServiceHandler {
    fn handle(&self, req: Request) -> Result<serde_json::Value, String> {
        let sh = &self.0;
        let mut v = ops::answer(&sh.ctx.journal, &sh.ctx.settings, &req)?;
        match req {
            // Only the service knows how the destination is doing.
            Request::Stats => {
                let (failures, left, last_error) = sh.gate.status();
                let server = *sh.ctx.server.lock().unwrap_or_else(|p| p.into_inner());
                let dest = ops::Destination {
                    url: sh.ctx.transport.describe(),
                    up: failures == 0,
                    failures,
                    next_probe_at: left.map(|d| now_ms() + d.as_millis() as u64),
                    last_error,
                    rename_refuses_overwrite: server.map(|t| t.rename_refuses_overwrite),
                    fsync: server.map(|t| t.fsync),
                };
                v["destination"] = serde_json::to_value(dest).map_err(|e| e.to_string())?;
            }
            // Replayed entries go to the queue at once.
            Request::Replay { dry_run: false, .. } => {
                let r: ops::Replayed =
                    serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                for (id, name) in r.replayed {
                    info!(file = %crate::intake::shown(&name), id, "replayed by an operator");
                    sh.queue.push(id);
                }
            }
            _ => {}
        }
        Ok(v)
    }
}

/// Keep the journal bounded: archived entries older than `retention` go, hourly.
async fn prune_task(shared: Arc<Shared>) {
    loop {
        let (j, retention) = (shared.ctx.journal.clone(), shared.ctx.settings.retention);
        let r = tokio::task::spawn_blocking(move || {
            let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
            let mut total = 0;
            loop {
                let n = j.prune_archived(cutoff, 10_000)?;
                total += n;
                if n < 10_000 {
                    return Ok::<_, JournalError>(total);
                }
            }
        })
        .await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(
                entries = n,
                "pruned archived journal entries older than the retention"
            ),
            Ok(Err(e)) => warn!("cannot prune the journal: {e}"),
            Err(e) => warn!("prune task failed: {e}"),
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_push_while_the_id_is_held_is_honoured_when_it_is_done() {
        let q = Queue::new();
        let cancel = CancellationToken::new();
        // A lost push would leave `pop` waiting forever: fail instead.
        let pop = || tokio::time::timeout(Duration::from_secs(1), q.pop(&cancel));
        q.push(7);
        assert_eq!(pop().await, Ok(Some(7)));
        // A replay of entry 7 while the archiver still holds it.
        q.push(7);
        assert_eq!(q.depth(), 1, "not queued twice");
        q.done(7);
        assert_eq!(pop().await, Ok(Some(7)), "the replay is not lost");
        q.done(7);
        assert_eq!(q.depth(), 0);
        q.close();
        assert_eq!(pop().await, Ok(None));
    }
}
