//! inotify (via notify) → candidate paths. Only close-after-write and moved-in events
//! count. An overflow, a watcher error or a full channel means "sweep now", never
//! "drop": the sweep is the source of truth, the watcher only cuts latency.
//!
//! The same events say which files may be open for writing ([`Writers`]): intake
//! never quarantines one of those, however long its writer pauses.

use crate::intake::Found;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};
use tracing::warn;

/// A file that may be ready to take.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub path: PathBuf,
    pub found: Found,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot watch the outbox: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Names in the outbox that were written to since their last close-after-write: a
/// writer may hold them open.
///
/// inotify as notify sets it up reports every open, but a close only when the file
/// was open for writing, so opens cannot be counted (our own reads would never be
/// closed). A write marks a name and its writer's close clears it, which
/// is what matters: a writer that wrote half an order and paused, or re-opened the
/// file and appended, holds a mark until it closes. Not covered: a writer that opened
/// (or created) the file and has not written yet (the file is then unchanged, and
/// `quarantine_after` is what protects it). An inotify overflow clears every mark:
/// the closes it lost would otherwise hold them forever.
#[derive(Debug, Default)]
pub struct Writers(Mutex<HashSet<OsString>>);

impl Writers {
    /// True if `name` may be open for writing now.
    pub(crate) fn is_writing(&self, name: &OsStr) -> bool {
        self.0.lock().unwrap().contains(name)
    }

    fn mark(&self, path: &Path) {
        if let Some(n) = path.file_name() {
            let mut set = self.0.lock().unwrap();
            if !set.contains(n) {
                set.insert(n.to_os_string());
            }
        }
    }

    fn clear(&self, path: &Path) {
        if let Some(n) = path.file_name() {
            self.0.lock().unwrap().remove(n);
        }
    }

    /// Forget every mark: after an overflow or a new watch, the closes that would
    /// clear them may never come.
    pub(crate) fn forget_all(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Keeps the watch alive; dropping it stops the watch.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
}

/// Start watching `outbox`. When this returns, the watch is registered: every file
/// closed after this point produces a candidate (or a sweep).
///
/// `lost` is notified when the outbox itself is deleted or moved away: its watch is
/// gone with it, and the caller must watch the new folder once it exists.
pub fn start(
    outbox: &Path,
    tx: mpsc::Sender<Candidate>,
    sweep_now: Arc<Notify>,
    lost: Arc<Notify>,
    writers: Arc<Writers>,
) -> Result<Watch, WatchError> {
    let root = outbox.to_path_buf();
    let handler = move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            let about_root = ev.paths.iter().any(|p| p == &root);
            if about_root
                && matches!(
                    ev.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                )
            {
                warn!("the outbox {} was removed or moved away", root.display());
                lost.notify_one();
                return;
            }
            if ev.need_rescan() {
                warn!("inotify queue overflowed; sweeping the outbox");
                writers.forget_all();
                sweep_now.notify_one();
                return;
            }
            match ev.kind {
                // A write, not a create: a name linked in (`link`, `O_TMPFILE` +
                // `linkat`) is created with no close ever reported under it.
                EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
                    ev.paths.iter().for_each(|p| writers.mark(p));
                    return;
                }
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Name(_)) => {
                    ev.paths.iter().for_each(|p| writers.clear(p));
                }
                _ => {}
            }
            let wanted = matches!(
                ev.kind,
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                    | EventKind::Modify(ModifyKind::Name(RenameMode::To))
            );
            if !wanted {
                return;
            }
            for path in ev.paths {
                match tx.try_send(Candidate {
                    path,
                    found: Found::Watch,
                }) {
                    Ok(()) => {}
                    // The intake is behind: the sweep will find the file instead.
                    Err(mpsc::error::TrySendError::Full(_)) => sweep_now.notify_one(),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
        Err(e) => {
            warn!("outbox watcher error: {e}; sweeping the outbox");
            sweep_now.notify_one();
        }
    };
    let err = |source| WatchError {
        path: outbox.to_path_buf(),
        source,
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(err)?;
    watcher
        .watch(outbox, RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok(Watch { _watcher: watcher })
}
