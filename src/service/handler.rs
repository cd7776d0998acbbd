//! The control socket's answers from inside the running service: the journal's
//! answer, plus what only the service knows (the destination's status), and replays
//! queued at once.

use super::Shared;
use crate::control::{self, Request};
use crate::journal as ops;
use plutus_state::now_ms;
use std::sync::Arc;
use tracing::info;

/// Answers the control socket from inside the running service.
pub(super) struct ServiceHandler(pub(super) Arc<Shared>);

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
