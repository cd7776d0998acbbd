//! Steps 1 and 2 for many files on one SFTP connection, with every file's requests in
//! flight together (`sftp_proto::put`), and what each file's outcome means to the
//! protocol: the same errors, with the same scopes, as one file at a time gives.

use super::remote::{client_fault, status_fault, SftpConn};
use crate::transfer::batch::not_tried;
use crate::transfer::sftp_proto::file::describe;
use crate::transfer::sftp_proto::put::{self, Fsync, PutError, Putted};
use crate::transfer::sftp_proto::{Request, Response, StatusCode};
use crate::transfer::{join, read_crc, Fault, Put, Remote, RemoteError, TransferError, Uploaded};

/// Handles a batch may hold open when the server does not say (`limits@openssh.com`):
/// OpenSSH's sftp-server allows far more; Win32-OpenSSH's limit is its process's.
const DEFAULT_MAX_HANDLES: u64 = 64;
/// Handles left to others (a `look`, a listing) when the server gives its limit.
const SPARE_HANDLES: u64 = 8;

/// Files per `put_many` call: what the server lets one session hold open.
fn files_per_round(max_handles: Option<u64>) -> usize {
    let n = match max_handles {
        Some(m) => m.saturating_sub(SPARE_HANDLES),
        None => DEFAULT_MAX_HANDLES,
    };
    n.clamp(1, 4096) as usize
}

/// The protocol's name for the step a request belongs to: the scopes in
/// `TransferError::scope` are keyed by it.
fn op_of(request: &'static str) -> &'static str {
    match request {
        "OPEN" => "create",
        "WRITE" => "write",
        "FSYNC" => "fsync",
        "READ" => "read",
        _ => "close",
    }
}

pub(super) fn upload_many(
    conn: &mut SftpConn,
    puts: &mut [Put<'_>],
) -> Vec<Result<Uploaded, TransferError>> {
    let paths: Vec<String> = puts
        .iter()
        .map(|p| join(conn.inbox(), &p.temp_name))
        .collect();
    let fsync = conn.fsync_wanted(paths.first().map_or("", String::as_str));
    let per_round = files_per_round(conn.client().max_handles());

    let mut out: Vec<Result<Uploaded, TransferError>> = Vec::with_capacity(puts.len());
    for (round, paths) in puts.chunks_mut(per_round).zip(paths.chunks(per_round)) {
        let dead = out.iter().find_map(|r| {
            r.as_ref()
                .err()
                .filter(|e| e.scope() == crate::transfer::Scope::Destination)
        });
        if let Some(cause) = dead {
            let cause = cause.to_string();
            for path in paths {
                out.push(Err(not_tried("create", path, &cause)));
            }
            continue;
        }
        let results = {
            let mut wire: Vec<put::Put<'_>> = round
                .iter_mut()
                .zip(paths)
                .map(|(p, path)| put::Put {
                    path: path.as_bytes(),
                    src: &mut *p.src,
                    size: p.job.size,
                    crc32: p.job.crc32,
                })
                .collect();
            let mut c = conn.client();
            put::put_many(&mut c, &mut wire, fsync)
        };
        for ((p, path), r) in round.iter().zip(paths).zip(results) {
            out.push(outcome(conn, p, path, r));
        }
    }
    out
}

/// One file's result as step 1 would have given it.
fn outcome(
    conn: &mut SftpConn,
    p: &Put<'_>,
    path: &str,
    r: Result<Putted, PutError>,
) -> Result<Uploaded, TransferError> {
    let job = &p.job;
    let mismatch = |size: u64, crc32: u32| TransferError::VerifyMismatch {
        path: path.to_string(),
        size,
        crc32,
        want_size: job.size,
        want_crc32: job.crc32,
    };
    let remote = |op: &'static str, message: String, fault: Fault| {
        TransferError::Remote(RemoteError {
            op,
            path: path.to_string(),
            fault,
            message,
        })
    };
    match r {
        Ok(Putted { fsync }) => Ok(Uploaded {
            temp_path: path.to_string(),
            fsynced: conn.fsync_learnt(path, &fsync),
        }),
        Err(PutError::Session(message)) => Err(remote("write", message, Fault::Connection)),
        Err(PutError::Status { request, status }) => Err(TransferError::Remote(status_fault(
            op_of(request),
            path,
            &status,
        ))),
        Err(PutError::Unexpected { request }) => Err(remote(
            op_of(request),
            format!("the server sent an unexpected answer to {request}"),
            Fault::Other,
        )),
        Err(PutError::Source(source)) => Err(TransferError::LocalRead {
            path: p.src_path.to_string(),
            source,
        }),
        Err(PutError::SourceChanged { size, crc32 }) => Err(TransferError::SourceChanged {
            name: job.name.to_string(),
            size,
            crc32,
            want_size: job.size,
            want_crc32: job.crc32,
        }),
        Err(PutError::Mismatch { size, crc32 }) => {
            let _ = Remote::remove(conn, path);
            Err(mismatch(size, crc32))
        }
        // The temp is whole and closed; read it back the plain way.
        Err(PutError::ShortRead { fsync }) => {
            let (size, crc32) = read_crc(conn, path)?;
            if (size, crc32) != (job.size, job.crc32) {
                let _ = Remote::remove(conn, path);
                return Err(mismatch(size, crc32));
            }
            Ok(Uploaded {
                temp_path: path.to_string(),
                fsynced: conn.fsync_learnt(path, &fsync),
            })
        }
        // Like the files one file at a time never tries after a full disk: the
        // destination's trouble, so the entry waits without an attempt burned.
        Err(PutError::Skipped(why)) => Err(not_tried("create", path, &why)),
    }
}

/// Every RENAME sent together, the answers taken in order. A lost session fails the
/// renames not answered yet with a connection fault: whether they happened is for
/// `look` to say.
pub(super) fn rename_many(
    conn: &mut SftpConn,
    moves: &[(String, String)],
) -> Vec<Result<(), RemoteError>> {
    let mut c = conn.client();
    let mut ids: Vec<Result<u32, RemoteError>> = Vec::with_capacity(moves.len());
    for (from, to) in moves {
        // Plain v3 RENAME, never posix-rename@openssh.com: see `Remote::rename`.
        let sent = c
            .room(0, crate::transfer::sftp_proto::client::WRITE_WINDOW)
            .and_then(|()| {
                c.send(&Request::Rename {
                    from: from.as_bytes(),
                    to: to.as_bytes(),
                })
            })
            .map_err(|e| client_fault("rename", to, &e));
        ids.push(sent);
    }
    let flushed = c.write_out().map_err(|e| e.to_string());
    ids.into_iter()
        .zip(moves)
        .map(|(id, (_, to))| {
            let id = id?;
            if let Err(why) = &flushed {
                return Err(RemoteError {
                    op: "rename",
                    path: to.clone(),
                    fault: Fault::Connection,
                    message: why.clone(),
                });
            }
            match c.wait(id).map_err(|e| client_fault("rename", to, &e))? {
                Response::Status(s) if s.code == StatusCode::Ok => Ok(()),
                Response::Status(s) => Err(status_fault("rename", to, &s)),
                _ => Err(RemoteError {
                    op: "rename",
                    path: to.clone(),
                    fault: Fault::Other,
                    message: "the server sent an unexpected answer to RENAME".into(),
                }),
            }
        })
        .collect()
}

impl SftpConn {
    /// Whether to send FSYNC: unless the server does not offer it, or refused it
    /// before on this connection (said once, here). For a batch and for one file.
    pub(super) fn fsync_wanted(&mut self, path: &str) -> bool {
        if self.fsync == Some(false) {
            return false;
        }
        if !self.client().fsync_offered() {
            tracing::warn!(
                "{path}: the server does not offer fsync@openssh.com; going on without fsync on this connection (the read-back still proves each file)"
            );
            self.fsync = Some(false);
            return false;
        }
        true
    }

    /// What an FSYNC's answer teaches this connection; whether the file was fsynced.
    pub(super) fn fsync_learnt(&mut self, path: &str, f: &Fsync) -> bool {
        match f {
            Fsync::Ok => {
                self.fsync = Some(true);
                true
            }
            Fsync::NotSent => false,
            Fsync::Refused(s) => {
                if self.fsync != Some(false) {
                    tracing::warn!(
                        "{path}: the server answered fsync with {}; going on without fsync on this connection (the read-back still proves each file)",
                        describe(s)
                    );
                    self.fsync = Some(false);
                }
                false
            }
        }
    }
}
