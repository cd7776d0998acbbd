//! Entry ids waiting for a worker.

use plutus_state::now_ms;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Entry ids waiting for a worker. An id is in `queued` from the moment it is pushed
/// until a worker or the archiver says it is done with it, so no entry is ever worked
/// on twice at once. A push of an id already queued (a replay while the archiver holds
/// it) is remembered in `again` and honoured when it is done.
pub(super) struct Queue {
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
    pub(super) fn new() -> Queue {
        Queue {
            inner: Mutex::new(QueueState::default()),
            ready: Notify::new(),
        }
    }

    pub(super) fn push(&self, id: u64) {
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
    pub(super) fn requeue(&self, id: u64) {
        self.inner.lock().unwrap().ready.push_front(id);
        self.ready.notify_one();
    }

    /// Push `id` when `at` (ms since epoch) comes.
    pub(super) fn push_at(self: &Arc<Self>, id: u64, at: u64, cancel: &CancellationToken) {
        {
            let mut st = self.inner.lock().unwrap();
            if !st.queued.insert(id) {
                return;
            }
        }
        self.requeue_at(id, at, cancel);
    }

    /// Like `push_at` for an id a worker holds.
    pub(super) fn requeue_at(self: &Arc<Self>, id: u64, at: u64, cancel: &CancellationToken) {
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

    pub(super) fn done(&self, id: u64) {
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
    pub(super) fn close(&self) {
        self.inner.lock().unwrap().closed = true;
        self.ready.notify_waiters();
    }

    pub(super) async fn pop(&self, cancel: &CancellationToken) -> Option<u64> {
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

    /// The rest of a worker's batch after [`Queue::pop`] gave it the first: ids ready
    /// now, never waiting, at most `max`, and no more than its share when `workers`
    /// split what is ready (the first included), so a burst smaller than the window
    /// goes over every connection rather than one.
    pub(super) fn pop_ready(&self, max: usize, workers: usize) -> Vec<u64> {
        let mut st = self.inner.lock().unwrap();
        let share = (st.ready.len() + 1).div_ceil(workers.max(1)) - 1;
        let n = max.min(share);
        st.ready.drain(..n).collect()
    }

    pub(super) fn depth(&self) -> usize {
        self.inner.lock().unwrap().queued.len()
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

    #[tokio::test]
    async fn pop_ready_takes_what_is_ready_in_order_and_never_waits() {
        let q = Queue::new();
        assert!(
            q.pop_ready(8, 1).is_empty(),
            "an empty queue gives nothing at once"
        );
        for id in 1..=5 {
            q.push(id);
        }
        assert_eq!(q.pop_ready(3, 1), vec![1, 2, 3], "at most the window");
        assert_eq!(q.pop_ready(8, 1), vec![4, 5]);
        assert_eq!(q.depth(), 5, "still queued until done");
        for id in 6..=13 {
            q.push(id);
        }
        // 8 ready, plus the first a worker popped: 9 split by 2 workers, 5 each.
        assert_eq!(q.pop_ready(64, 2), vec![6, 7, 8, 9]);
        assert_eq!(q.pop_ready(64, 2), vec![10, 11], "the next worker's share");
        for id in 1..=13 {
            q.done(id);
        }
        assert_eq!(q.depth(), 0);
    }
}
