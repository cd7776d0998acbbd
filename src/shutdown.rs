//! One cancel signal for all tasks, fired by SIGTERM or SIGINT.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancel `token` on the first SIGTERM or SIGINT. Tasks stop at their next safe
/// point: a file in flight finishes its step first.
pub fn on_signal(token: CancellationToken) -> std::io::Result<()> {
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
