//! The control socket's answers from inside the running service: the journal's
//! answer, plus what only the service knows (the destination's status), and replays
//! queued at once.

use super::Shared;
use crate::operator::protocol::DestinationStatus;
use crate::operator::socket::Handler;
use crate::operator::{self, Answer, Request};
use plutus_state::{now_ms, Caller};
use std::sync::Arc;
use tracing::info;

/// How one destination is doing.
fn status(ctx: &crate::pipeline::Ctx, gate: &crate::retry::Gate) -> DestinationStatus {
    let (failures, left, last_error) = gate.status();
    let (down, since) = gate.health();
    let server = *ctx.server.lock().unwrap_or_else(|p| p.into_inner());
    DestinationStatus {
        url: ctx.transport.describe(),
        up: failures == 0,
        failures,
        next_probe_at: left.map(|d| now_ms() + d.as_millis() as u64),
        last_error,
        rename_refuses_overwrite: server.map(|t| t.rename_refuses_overwrite),
        fsync: server.map(|t| t.fsync),
        down_since: down.then(|| now_ms().saturating_sub(since.elapsed().as_millis() as u64)),
    }
}

/// Answers the control socket from inside the running service.
pub(super) struct ServiceHandler(pub(super) Arc<Shared>);

impl Handler for ServiceHandler {
    fn handle(&self, req: Request, caller: &Caller) -> Result<Answer, String> {
        let sh = &self.0;
        let mut answer = operator::answer(&sh.ctx.journal, &sh.ctx.settings, &req, caller)?;
        match (&req, &mut answer) {
            // Only the service knows how the destination is doing.
            (Request::Stats, Answer::Stats(stats)) => {
                stats.destination = Some(status(&sh.ctx, &sh.gate));
                if let Some(b) = &sh.backup {
                    b.router.current(&sh.gate, &b.gate);
                    stats.backup = Some(Box::new(status(&b.ctx, &b.gate)));
                    stats.failed_over_since = b.router.failed_over_since();
                }
            }
            // Replayed entries go to the queue at once.
            (Request::Replay { dry_run: false, .. }, Answer::Replay(r)) => {
                for (id, name) in &r.replayed {
                    info!(file = %crate::intake::shown(name), id, "queued again after a replay by {caller}");
                    sh.queue.push(*id);
                }
            }
            (
                Request::Forget {
                    dry_run: false,
                    reason,
                    ..
                },
                Answer::Forget(f),
            ) if f.refused.is_none() => {
                info!(file = %crate::intake::shown(&f.name), id = f.id, by = %caller, reason = %reason.trim().escape_default(), "failed entry forgotten by an operator");
            }
            _ => {}
        }
        Ok(answer)
    }
}
