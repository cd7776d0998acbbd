//! One SFTP connection as a `Remote`: the delivery protocol's primitives as requests
//! of our own SFTP client, statuses mapped to faults as the protocol needs them. Knows
//! nothing of SSH beyond the session it keeps for keepalives and the socket it resets.

use crate::transfer::sftp_proto::client::{Client, ClientError};
use crate::transfer::sftp_proto::file::{describe, File, FileError, Shared};
use crate::transfer::sftp_proto::put::Fsync;
use crate::transfer::sftp_proto::{Attrs, OpenFlags, Request, Response, Status, StatusCode};
use crate::transfer::{Fault, Remote, RemoteError};
use ssh2::{Channel, Session};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// An open remote file: our own pipelined handle (see `sftp_proto::client`).
pub(crate) type SftpFile = File<Channel>;

pub(super) struct SftpConn {
    // Taken in Drop, after the socket is reset.
    client: Option<Shared<Channel>>,
    sess: Session,
    sock: TcpStream,
    inbox: String,
    temp_suffix: String,
    /// Learnt by trying: `None` until the first fsync.
    pub(super) fsync: Option<bool>,
}

/// The fault a STATUS stands for, as `op` on `path`.
pub(super) fn status_fault(op: &'static str, path: &str, s: &Status) -> RemoteError {
    let fault = match s.code {
        StatusCode::NoSuchFile | StatusCode::Other(10) => Fault::NotFound,
        StatusCode::PermissionDenied => Fault::PermissionDenied,
        StatusCode::Failure | StatusCode::Other(14) => Fault::Failure,
        // ProFTPD refuses a rename onto an existing name with 11 (FILE_ALREADY_EXISTS
        // of later drafts): the same refusal OpenSSH says with FAILURE.
        StatusCode::Other(11) if op == "rename" => Fault::Failure,
        StatusCode::NoConnection | StatusCode::ConnectionLost => Fault::Connection,
        StatusCode::OpUnsupported => Fault::Unsupported,
        _ => Fault::Other,
    };
    RemoteError {
        op,
        path: path.to_string(),
        fault,
        // As libssh2 wrote it, so the messages in docs/OPERATIONS.md stay true.
        message: format!("[SFTP({})] {}", s.code.to_u32(), describe(s)),
    }
}

/// Any client error leaves the session unusable (a timeout, a reset, a packet that
/// makes no sense): the destination, not the file.
pub(super) fn client_fault(op: &'static str, path: &str, e: &ClientError) -> RemoteError {
    RemoteError {
        op,
        path: path.to_string(),
        fault: Fault::Connection,
        message: e.to_string(),
    }
}

fn file_fault(op: &'static str, path: &str, e: &FileError) -> RemoteError {
    match e {
        FileError::Client(c) => client_fault(op, path, c),
        FileError::Status { status, .. } => status_fault(op, path, status),
        FileError::Unexpected { .. } => RemoteError {
            op,
            path: path.to_string(),
            fault: Fault::Other,
            message: e.to_string(),
        },
    }
}

/// An answer of the wrong kind for a request that can only be answered one way.
fn unexpected(op: &'static str, path: &str, r: &Response) -> RemoteError {
    match r {
        Response::Status(s) => status_fault(op, path, s),
        _ => RemoteError {
            op,
            path: path.to_string(),
            fault: Fault::Other,
            message: "the server sent an unexpected answer".into(),
        },
    }
}

impl SftpConn {
    /// A connection over an SFTP client that has done its handshake. `sock`: a clone
    /// of the session's socket, reset on drop.
    pub(super) fn new(
        client: Client<Channel>,
        sess: Session,
        sock: TcpStream,
        inbox: String,
        temp_suffix: String,
    ) -> SftpConn {
        SftpConn {
            client: Some(Arc::new(Mutex::new(client))),
            sess,
            sock,
            inbox,
            temp_suffix,
            fsync: None,
        }
    }

    pub(super) fn client(&self) -> MutexGuard<'_, Client<Channel>> {
        self.client
            .as_ref()
            .expect("present until drop")
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// One request, one reply; a lost session is a `Connection` fault.
    fn call(
        &self,
        op: &'static str,
        path: &str,
        req: &Request<'_>,
    ) -> Result<Response, RemoteError> {
        self.client()
            .call(req)
            .map_err(|e| client_fault(op, path, &e))
    }

    /// A request answered by a STATUS: OK or the fault.
    fn call_ok(&self, op: &'static str, path: &str, req: &Request<'_>) -> Result<(), RemoteError> {
        match self.call(op, path, req)? {
            Response::Status(s) if s.code == StatusCode::Ok => Ok(()),
            r => Err(unexpected(op, path, &r)),
        }
    }

    fn open_file(
        &self,
        path: &str,
        flags: OpenFlags,
        attrs: Attrs,
        written_from_empty: bool,
    ) -> Result<Result<SftpFile, Status>, RemoteError> {
        let req = Request::Open {
            path: path.as_bytes(),
            flags,
            attrs,
        };
        match self.call("create", path, &req)? {
            Response::Handle(h) => Ok(Ok(File::new(
                self.client.clone().expect("present until drop"),
                h,
                written_from_empty,
            ))),
            Response::Status(s) if s.code != StatusCode::Ok => Ok(Err(s)),
            r => Err(unexpected("create", path, &r)),
        }
    }
}

impl Drop for SftpConn {
    /// A connection is thrown away after any error, often because the peer stopped
    /// answering. A polite teardown (close the SFTP channel, wait for the reply) would
    /// then block for a whole timeout, and requests still queued in the socket could
    /// reach the server later and leave a stray temp file. Reset the TCP connection
    /// first: the teardown fails at once and the queued requests die with it.
    fn drop(&mut self) {
        let _ = rustix::net::sockopt::set_socket_linger(&self.sock, Some(Duration::ZERO));
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        drop(self.client.take());
    }
}

impl Remote for SftpConn {
    type Writer = SftpFile;
    type Reader = SftpFile;

    fn create(&mut self, path: &str) -> Result<SftpFile, RemoteError> {
        let flags = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
        self.open_file(path, flags, Attrs::NEW_FILE, true)?
            .map_err(|s| status_fault("create", path, &s))
    }

    fn create_new(&mut self, path: &str) -> Result<SftpFile, RemoteError> {
        let flags = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREAT;
        match self.open_file(path, flags | OpenFlags::EXCL, Attrs::NEW_FILE, true)? {
            Ok(f) => Ok(f),
            // OpenSSH (and its Windows port) map SSH_FXF_EXCL to O_EXCL; a server that
            // says it has no exclusive create still gets the probe, under its random
            // name, rather than an outage.
            Err(s) if s.code == StatusCode::OpUnsupported => self
                .open_file(path, flags, Attrs::NEW_FILE, true)?
                .map_err(|s| status_fault("create", path, &s)),
            Err(s) => Err(status_fault("create", path, &s)),
        }
    }

    fn sync(&mut self, w: &mut SftpFile, path: &str) -> Result<bool, RemoteError> {
        if !self.fsync_wanted(path) {
            return Ok(false);
        }
        let mut c = self.client();
        w.flush_writes(&mut c)
            .map_err(|e| file_fault("write", path, &e))?;
        let answer = c
            .call(&Request::Fsync { handle: w.handle() })
            .map_err(|e| client_fault("fsync", path, &e))?;
        drop(c);
        match answer {
            Response::Status(s) if s.code == StatusCode::Ok => {
                Ok(self.fsync_learnt(path, &Fsync::Ok))
            }
            // Only OK means durable. OP_UNSUPPORTED, and any other status a server
            // answers (some answer FAILURE), mean "no fsync here": the read-back is
            // the proof we rely on anyway (on Windows even an OK flushes nothing).
            Response::Status(s)
                if !matches!(
                    s.code,
                    StatusCode::NoConnection | StatusCode::ConnectionLost
                ) =>
            {
                Ok(self.fsync_learnt(path, &Fsync::Refused(s)))
            }
            r => Err(unexpected("fsync", path, &r)),
        }
    }

    fn close(&mut self, w: SftpFile, path: &str) -> Result<(), RemoteError> {
        let client = self.client.clone().expect("present until drop");
        let mut c = client.lock().unwrap_or_else(|p| p.into_inner());
        w.close(&mut c).map_err(|e| file_fault("close", path, &e))
    }

    fn open(&mut self, path: &str) -> Result<SftpFile, RemoteError> {
        let req = Request::Open {
            path: path.as_bytes(),
            flags: OpenFlags::READ,
            attrs: Attrs::default(),
        };
        match self.call("open", path, &req)? {
            Response::Handle(h) => Ok(File::new(
                self.client.clone().expect("present until drop"),
                h,
                false,
            )),
            r => Err(unexpected("open", path, &r)),
        }
    }

    fn upload_many(
        &mut self,
        puts: &mut [crate::transfer::Put<'_>],
    ) -> Vec<Result<crate::transfer::Uploaded, crate::transfer::TransferError>> {
        super::batch::upload_many(self, puts)
    }

    fn rename_many(&mut self, moves: &[(String, String)]) -> Vec<Result<(), RemoteError>> {
        super::batch::rename_many(self, moves)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), RemoteError> {
        // Plain v3 RENAME, never posix-rename@openssh.com: the server must refuse an
        // existing target (OpenSSH and Win32-OpenSSH do; `server()` probes the rest).
        let req = Request::Rename {
            from: from.as_bytes(),
            to: to.as_bytes(),
        };
        self.call_ok("rename", to, &req)
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError> {
        match self.call(
            "stat",
            path,
            &Request::Stat {
                path: path.as_bytes(),
            },
        )? {
            Response::Attrs(a) => Ok(Some(a.size.unwrap_or(0))),
            Response::Status(s)
                if matches!(s.code, StatusCode::NoSuchFile | StatusCode::Other(10)) =>
            {
                Ok(None)
            }
            r => Err(unexpected("stat", path, &r)),
        }
    }

    fn remove(&mut self, path: &str) -> Result<(), RemoteError> {
        self.call_ok(
            "remove",
            path,
            &Request::Remove {
                path: path.as_bytes(),
            },
        )
    }

    fn list(&mut self) -> Result<Vec<String>, RemoteError> {
        let inbox = self.inbox.clone();
        let handle = match self.call(
            "list",
            &inbox,
            &Request::Opendir {
                path: inbox.as_bytes(),
            },
        )? {
            Response::Handle(h) => h,
            r => return Err(unexpected("list", &inbox, &r)),
        };
        let mut names = Vec::new();
        let listed = loop {
            match self.call("list", &inbox, &Request::Readdir { handle: &handle }) {
                Ok(Response::Name(entries)) => names.extend(
                    entries
                        .into_iter()
                        .filter_map(|e| String::from_utf8(e.filename).ok())
                        .filter(|n| n != "." && n != ".."),
                ),
                Ok(Response::Status(s)) if s.code == StatusCode::Eof => break Ok(()),
                Ok(r) => break Err(unexpected("list", &inbox, &r)),
                Err(e) => return Err(e),
            }
        };
        let closed = self.call_ok("list", &inbox, &Request::Close { handle: &handle });
        listed?;
        closed?;
        Ok(names)
    }

    fn inbox(&self) -> &str {
        &self.inbox
    }

    fn temp_suffix(&self) -> &str {
        &self.temp_suffix
    }

    fn ping(&mut self) -> Result<(), RemoteError> {
        // A keepalive that wants no reply proves little; a stat of the inbox is one
        // round trip and proves the session and the folder.
        self.sess.keepalive_send().map_err(|e| RemoteError {
            op: "ping",
            path: self.inbox.clone(),
            fault: Fault::Connection,
            message: e.to_string(),
        })?;
        let inbox = self.inbox.clone();
        match self.call(
            "list",
            &inbox,
            &Request::Stat {
                path: inbox.as_bytes(),
            },
        )? {
            Response::Attrs(_) => Ok(()),
            r => Err(unexpected("list", &inbox, &r)),
        }
    }
}
