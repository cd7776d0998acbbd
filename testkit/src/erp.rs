//! An importing ERP: a consumer that takes each order file from an inbox folder
//! as soon as its final name appears, records it and deletes it, the way the
//! real ERP empties its inbox. Delivery tests count imports per name, so
//! "exactly once" means imported once, not "a second copy was suppressed".
//!
//! It owns one thread, which owns the inotify watch (through `notify`). Events
//! are only there for latency: the folder is also rescanned right after the
//! watch is registered and every `RESCAN_INTERVAL`, and on a queue overflow
//! or a watcher error, so a missed event delays an import but never loses it.
//!
//! It reads a final name the moment it appears (created, closed after a write,
//! renamed into place): a writer that writes in place can be read half-written,
//! which is what a real ERP would do too. It never touches any other name
//! (dot files, `order.json.12-abc.part` temps).

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

/// How often the inbox is rescanned whatever the watcher reports.
const RESCAN_INTERVAL: Duration = Duration::from_millis(50);

/// One file taken from the inbox.
#[derive(Clone, Debug)]
pub struct Import {
    pub name: String,
    pub bytes: Vec<u8>,
    /// When it was read.
    pub at: Instant,
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    Stop,
}

/// The running consumer. Dropping it stops and joins its thread.
pub struct Erp {
    inbox: PathBuf,
    imports: Arc<Mutex<Vec<Import>>>,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl Erp {
    /// Starts watching `inbox` for names ending in `pattern_suffix` (e.g.
    /// ".json"). Returns once the watch is registered.
    pub fn start(inbox: &Path, pattern_suffix: &str) -> Erp {
        let inbox = inbox.to_path_buf();
        let imports = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let consumer = Consumer {
            inbox: inbox.clone(),
            suffix: pattern_suffix.to_string(),
            imports: imports.clone(),
        };
        let events = tx.clone();
        let thread = thread::Builder::new()
            .name("erp".into())
            .spawn(move || {
                // The channel is unbounded: the watcher never drops an event
                // because this thread is busy importing.
                let watcher = notify::recommended_watcher(move |ev| {
                    let _ = events.send(Msg::Fs(ev));
                })
                .and_then(|mut w| {
                    w.watch(&consumer.inbox, RecursiveMode::NonRecursive)
                        .map(|()| w)
                });
                match watcher {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        consumer.run(&rx);
                        drop(w);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .expect("spawn the erp thread");
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("erp: watch {}: {e}", inbox.display()),
            Err(_) => panic!("erp: thread died before watching {}", inbox.display()),
        }
        Erp {
            inbox,
            imports,
            tx,
            thread: Some(thread),
        }
    }

    /// Every import so far, in order.
    pub fn imports(&self) -> Vec<Import> {
        self.imports.lock().unwrap().clone()
    }

    /// How many times each name was imported.
    pub fn imported_names_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for i in self.imports.lock().unwrap().iter() {
            *counts.entry(i.name.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Names imported more than once, with their count.
    pub fn duplicates(&self) -> Vec<(String, usize)> {
        self.imported_names_counts()
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .collect()
    }

    /// Waits until at least `n` imports happened; panics with what it saw
    /// (imports and what is left in the inbox) after `timeout`.
    pub fn wait_imported(&self, n: usize, timeout: Duration) {
        let ok = crate::poll_until(timeout, || self.imports.lock().unwrap().len() >= n);
        if !ok {
            panic!(
                "timed out after {timeout:?} waiting for {n} imports from {}: imported {:?}; \
                 inbox holds {:?}",
                self.inbox.display(),
                self.imported_names_counts(),
                crate::files::names_in(&self.inbox)
            );
        }
    }

    /// Stops watching and joins the thread. Idempotent.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Msg::Stop);
            if t.join().is_err() && !thread::panicking() {
                panic!("erp thread panicked");
            }
        }
    }
}

impl Drop for Erp {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Consumer {
    inbox: PathBuf,
    suffix: String,
    imports: Arc<Mutex<Vec<Import>>>,
}

impl Consumer {
    fn run(&self, rx: &mpsc::Receiver<Msg>) {
        // Files that were there before the watch existed.
        self.rescan();
        let mut next_rescan = Instant::now() + RESCAN_INTERVAL;
        loop {
            let wait = next_rescan.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Fs(Ok(ev))) if !ev.need_rescan() => {
                    if is_arrival(&ev.kind) {
                        for p in &ev.paths {
                            self.take(p);
                        }
                    }
                }
                // A queue overflow or a watcher error: events were lost.
                Ok(Msg::Fs(_)) => {
                    self.rescan();
                    next_rescan = Instant::now() + RESCAN_INTERVAL;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.rescan();
                    next_rescan = Instant::now() + RESCAN_INTERVAL;
                }
            }
        }
    }

    fn rescan(&self) {
        let Ok(rd) = fs::read_dir(&self.inbox) else {
            return;
        };
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            self.take(&p);
        }
    }

    /// Imports `path` if it is a final name directly in the inbox and still
    /// there: read, record, delete.
    fn take(&self, path: &Path) {
        if path.parent() != Some(self.inbox.as_path()) {
            return;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        if name.starts_with('.') || !name.ends_with(&self.suffix) {
            return;
        }
        let bytes = match fs::read(path) {
            Ok(b) => b,
            // Already taken (an event after a rescan), or renamed away.
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            // A directory with a final-looking name, or unreadable: not an order.
            Err(_) => return,
        };
        let at = Instant::now();
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => panic!("erp: delete {}: {e}", path.display()),
        }
        self.imports.lock().unwrap().push(Import {
            name: name.to_string(),
            bytes,
            at,
        });
    }
}

/// A name appeared: created, closed after a write, or renamed into place.
fn is_arrival(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::To | RenameMode::Both | RenameMode::Any
            ))
    )
}
