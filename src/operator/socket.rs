//! The control socket: a Unix socket speaking one JSON request line → one JSON
//! response line. It is how the CLI reads the journal while the running service holds
//! sled's lock. Every local user may connect (mode 0666) and is then judged by
//! [`super::access`] from the kernel's record of who connected; connections are
//! limited per uid, so one user holding many open cannot lock the others out.
//! Requests are bounded in size and time, so a bad client can neither crash nor
//! block the service.

use super::access::Access;
use super::protocol::{Answer, Request, Response};
use plutus_state::Caller;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest request line accepted; real ones are a few hundred bytes.
pub(crate) const MAX_REQUEST: u64 = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one uid may hold at once (root: no limit of its own). An operator
/// needs one at a time; a cron job and a terminal, two.
pub(crate) const PER_UID: usize = 4;
/// Connections at once, all uids together: bounds the work a flood can queue.
pub(crate) const TOTAL: usize = 64;

/// What answers requests: the running service.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Blocking (sled); called from `spawn_blocking`. `caller` was allowed to make
    /// `req`; it is who a replay is journaled as.
    fn handle(&self, req: Request, caller: &Caller) -> Result<Answer, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{path}: cannot create the control socket: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("{path}: the service is not running (no one answers on the control socket)")]
    NotRunning { path: PathBuf },
    #[error("{path}: permission denied on the control socket\n  hint: operators join the plutus-sync-admin group ([control] operators)")]
    Denied { path: PathBuf },
    #[error("{path}: control socket: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: bad answer from the service: {message}")]
    Protocol { path: PathBuf, message: String },
    #[error("{0}")]
    Refused(String),
}

/// Bind the socket, replacing a stale one (the journal lock already proved no other
/// service of this journal runs; one that answers belongs to another service and is
/// left alone), open to every local user: [`super::access`] decides who may ask what.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another service answers on it; give this one its own [control] socket",
        )));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

/// Open connections per uid and in all; a [`Slot`] gives its place back when dropped.
#[derive(Default)]
struct Slots {
    by_uid: Mutex<(HashMap<u32, usize>, usize)>,
}

struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, String> {
        let mut g = self.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        let (by_uid, total) = &mut *g;
        let mine = by_uid.get(&uid).copied().unwrap_or(0);
        if *total >= TOTAL {
            return Err(format!(
                "busy: {TOTAL} control connections are open; try again"
            ));
        }
        if uid != 0 && mine >= PER_UID {
            return Err(format!(
                "busy: uid {uid} has {PER_UID} control connections open already; close one"
            ));
        }
        by_uid.insert(uid, mine + 1);
        *total += 1;
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.slots.by_uid.lock().unwrap_or_else(|p| p.into_inner());
        let (by_uid, total) = &mut *g;
        *total -= 1;
        if let Some(n) = by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                by_uid.remove(&self.uid);
            }
        }
    }
}

/// Serve until cancelled. Each connection gets its own task; a bad one only hurts itself.
pub(crate) async fn serve(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    access: Access,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Slots::default());
    let access = Arc::new(access);
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Who connected, as the kernel recorded it at connect(): not something the
        // client can claim.
        let Ok(cred) = stream.peer_cred() else {
            continue;
        };
        let slot = match slots.take(cred.uid()) {
            Ok(slot) => slot,
            Err(busy) => {
                // Too many at once: refuse this one rather than queue without bound.
                let mut s = stream;
                let line = serde_json::to_vec(&Response::Error(busy)).unwrap_or_default();
                let _ = tokio::time::timeout(IO_TIMEOUT, async {
                    let _ = s.write_all(&line).await;
                    let _ = s.write_all(b"\n").await;
                })
                .await;
                continue;
            }
        };
        let (handler, access) = (handler.clone(), access.clone());
        tokio::spawn(one(stream, handler, access, (cred.uid(), cred.gid()), slot));
    }
}

/// One connection. The timeouts bound the client (a request that never comes, an
/// answer nobody reads), not the work: a long export still gets its answer. The
/// slot lives as long as the work, so the limits bound work as well as sockets.
async fn one(
    stream: tokio::net::UnixStream,
    handler: Arc<dyn Handler>,
    access: Arc<Access>,
    (uid, gid): (u32, u32),
    slot: Slot,
) {
    let (rd, mut wr) = stream.into_split();
    let mut line = Vec::new();
    let mut limited = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(rd, MAX_REQUEST + 1));
    let read = tokio::time::timeout(IO_TIMEOUT, limited.read_until(b'\n', &mut line)).await;
    let read = match read {
        Ok(r) => r,
        Err(_) => {
            debug!(uid, "control client sent no request within {IO_TIMEOUT:?}");
            return;
        }
    };
    let resp = match read {
        Err(e) => Response::Error(format!("cannot read request: {e}")),
        Ok(_) if line.len() as u64 > MAX_REQUEST => {
            Response::Error(format!("request longer than {MAX_REQUEST} bytes"))
        }
        Ok(_) => match serde_json::from_slice::<Request>(&line) {
            Err(e) => Response::Error(format!("malformed request: {e}")),
            Ok(req) => match tokio::task::spawn_blocking(move || {
                let _slot = slot;
                let (role, caller) = access.who(uid, gid);
                if let Err(denied) = access.check(role, &req, &caller) {
                    let (what, ops) = (req.name(), &access.operators);
                    if req.is_read_only() {
                        debug!("control request refused: {what} by {caller}, not in {ops}");
                    } else {
                        warn!("control request refused: {what} by {caller}, not in {ops}");
                    }
                    return Err(denied);
                }
                handler.handle(req, &caller)
            })
            .await
            {
                Ok(Ok(v)) => Response::Ok(v),
                Ok(Err(e)) => Response::Error(e),
                Err(e) => Response::Error(format!("request failed: {e}")),
            },
        },
    };
    let mut out =
        serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"error\":\"unencodable\"}".to_vec());
    out.push(b'\n');
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        let _ = wr.write_all(&out).await;
        let _ = wr.shutdown().await;
    })
    .await;
}

/// Ask the running service. `NotRunning` means: open the journal yourself.
pub fn request(path: &Path, req: &Request) -> Result<Answer, ControlError> {
    let io_err = |source: io::Error| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ControlError::Denied {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(e)),
    };
    // Exports of a month of deliveries take a while to gather; a wedged service must
    // still not hang the operator's terminal.
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(io_err)?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).expect("requests serialize");
    line.push(b'\n');
    s.write_all(&line).map_err(io_err)?;
    let mut resp = String::new();
    BufReader::new(s.take(1 << 30))
        .read_line(&mut resp)
        .map_err(io_err)?;
    match serde_json::from_str::<Response>(&resp) {
        Ok(Response::Ok(v)) => Ok(v),
        Ok(Response::Error(e)) => Err(ControlError::Refused(e)),
        Err(e) => Err(ControlError::Protocol {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}
