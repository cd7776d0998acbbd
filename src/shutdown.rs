//! One cancel signal for all tasks, fired by SIGTERM or SIGINT; and what systemd
//! hears of our life cycle (READY, WATCHDOG, STOPPING). Outside systemd the
//! notifications are no-ops.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancel `token` on the first SIGTERM or SIGINT. Tasks stop at their next safe
/// point: a file in flight finishes its step first.
pub(crate) fn on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = token.cancelled() => return,
        };
        info!("{which} received: finishing files in flight, then stopping");
        token.cancel();
    });
    Ok(())
}

/// READY=1: the journal is open, the watch registered, the first sweep queued.
pub(crate) fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

pub(crate) fn notify_watchdog() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

/// STOPPING=1, once per process however many paths to a stop there are (each
/// journal error calls it): a notify socket's queue is short (10 datagrams by
/// default) and a send to a full one blocks, which would hang the stop itself.
pub(crate) fn notify_stopping() {
    static SENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SENT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

/// `WatchdogSec=` of the unit, if systemd asked for keep-alives.
pub(crate) fn watchdog_period() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled()
}
