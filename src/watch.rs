//! inotify (via notify) → candidate paths. Only close-after-write and moved-in events
//! count. An overflow, a watcher error or a full channel means "sweep now", never
//! "drop": the sweep is the source of truth, the watcher only cuts latency.

use crate::intake::Found;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
                sweep_now.notify_one();
                return;
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
