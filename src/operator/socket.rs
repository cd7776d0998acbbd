//! The control socket: a Unix socket (mode 0660: the service's user and group only)
//! speaking one JSON request line → one JSON response line. It is how the CLI reads
//! the journal while the running service holds sled's lock. Requests are bounded in
//! size and time, so a bad client can neither crash nor block the service.

use super::protocol::{Answer, Request, Response};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest request line accepted; real ones are a few hundred bytes.
pub(crate) const MAX_REQUEST: u64 = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What answers requests: the running service.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Blocking (sled); called from `spawn_blocking`.
    fn handle(&self, req: Request) -> Result<Answer, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{path}: cannot create the control socket: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("{path}: the service is not running (no one answers on the control socket)")]
    NotRunning { path: PathBuf },
    #[error("{path}: permission denied on the control socket\n  hint: run as the service's user, or join its group (plutus-sync)")]
    Denied { path: PathBuf },
    #[error("{path}: control socket: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: bad answer from the service: {message}")]
    Protocol { path: PathBuf, message: String },
    #[error("{0}")]
    Refused(String),
}

/// Bind the socket, replacing a stale one (the journal lock already proved no other
/// service runs), and restrict it to user and group.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    Ok(listener)
}

/// Serve until cancelled. Each connection gets its own task; a bad one only hurts itself.
pub(crate) async fn serve(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    cancel: CancellationToken,
) {
    // Bounds the work a flood of clients can queue up.
    let permits = Arc::new(tokio::sync::Semaphore::new(16));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Too many at once: refuse this one rather than queue without bound.
            let mut s = stream;
            let _ = s
                .write_all(b"{\"error\":\"busy: too many control connections\"}\n")
                .await;
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(one(stream, handler, permit));
    }
}

/// One connection. The timeouts bound the client (a request that never comes, an
/// answer nobody reads), not the work: a long export still gets its answer. The
/// permit lives as long as the work, so the limit bounds work as well as sockets.
async fn one(
    stream: tokio::net::UnixStream,
    handler: Arc<dyn Handler>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let peer = stream.peer_cred().ok().map(|c| c.uid());
    let (rd, mut wr) = stream.into_split();
    let mut line = Vec::new();
    let mut limited = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(rd, MAX_REQUEST + 1));
    let read = tokio::time::timeout(IO_TIMEOUT, limited.read_until(b'\n', &mut line)).await;
    let read = match read {
        Ok(r) => r,
        Err(_) => {
            debug!("control client sent no request within {IO_TIMEOUT:?}");
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
            Ok(mut req) => match tokio::task::spawn_blocking(move || {
                // Who closes an entry is journaled: the kernel's word for it, not
                // the client's.
                if let Request::Forget { by, .. } = &mut req {
                    *by = peer.map_or_else(
                        || "unknown (no peer credentials)".into(),
                        super::forget::who,
                    );
                }
                let _permit = permit;
                handler.handle(req)
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
