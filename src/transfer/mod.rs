//! Transports: put one file into the destination inbox so that it never appears
//! under its final name unless complete and verified. Knows nothing of the journal.
//!
//! The protocol is written once, here, over the few primitive operations a `Remote`
//! offers; `sftp` (ssh2) and `local` (`file://`) only implement those primitives.
//!
//! 1. write `<name><temp_suffix>` (create or truncate), computing the CRC32 of the
//!    bytes read from the local file on the way; fsync where the server can;
//! 2. read the temp file back and compare size and CRC32 with intake's values;
//! 3. rename it to `<name>`, a rename that never overwrites (SFTP v3 rename on
//!    OpenSSH and Win32-OpenSSH both refuse an existing target);
//! 4. if the rename is refused, read the existing final file: the same size and CRC32
//!    means "already delivered"; anything else is a conflict, and nothing is overwritten.
//!
//! The read-back happens before the rename because the ERP may import and delete the
//! file the moment it has its final name.

pub mod local;
pub mod sftp;

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Why a remote operation failed, as far as the protocol needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    NotFound,
    PermissionDenied,
    /// The server said "failure" with no detail (OpenSSH says this for a full disk).
    Failure,
    /// The connection timed out or dropped: the destination, not the file.
    Connection,
    Unsupported,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {message}")]
pub struct RemoteError {
    pub op: &'static str,
    pub path: String,
    pub fault: Fault,
    pub message: String,
}

/// Does this error stop the whole destination, or only this file?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Destination,
    File,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot connect to {dest}: {message}")]
    Connect { dest: String, message: String },
    #[error("{dest}: host key {problem}; nothing was sent\n  hint: {hint}")]
    HostKey {
        dest: String,
        problem: String,
        hint: String,
    },
    #[error("{dest}: key authentication as {user:?} failed: {message}")]
    Auth {
        dest: String,
        user: String,
        message: String,
    },
    #[error("inbox {0}")]
    Remote(RemoteError),
    #[error("{path}: cannot read the local file: {source}")]
    LocalRead { path: String, source: io::Error },
    #[error("{name}: the local file changed while it was being sent (size {size}, crc32 {crc32:08x}; intake saw size {want_size}, crc32 {want_crc32:08x})")]
    SourceChanged {
        name: String,
        size: u64,
        crc32: u32,
        want_size: u64,
        want_crc32: u32,
    },
    #[error("{path}: read-back does not match: remote size {size}, crc32 {crc32:08x}; expected size {want_size}, crc32 {want_crc32:08x}")]
    VerifyMismatch {
        path: String,
        size: u64,
        crc32: u32,
        want_size: u64,
        want_crc32: u32,
    },
    #[error("{path}: a different file with this name is already in the inbox (size {size}, crc32 {crc32:08x}; ours: size {want_size}, crc32 {want_crc32:08x}); not overwritten")]
    Conflict {
        path: String,
        size: u64,
        crc32: u32,
        want_size: u64,
        want_crc32: u32,
    },
}

impl TransferError {
    pub fn scope(&self) -> Scope {
        match self {
            TransferError::Connect { .. }
            | TransferError::HostKey { .. }
            | TransferError::Auth { .. } => Scope::Destination,
            TransferError::Remote(e) => match (e.op, e.fault) {
                (_, Fault::Connection) => Scope::Destination,
                // A refused create may be the inbox (missing, not writable) or this
                // name (rejected by the server, a stale temp in the way): it stays with
                // the file, and the pipeline's probe file decides which.

                // A write that fails is a full disk or a dying connection.
                ("write" | "close" | "fsync", _) => Scope::Destination,
                ("list", _) => Scope::Destination,
                _ => Scope::File,
            },
            TransferError::LocalRead { .. }
            | TransferError::SourceChanged { .. }
            | TransferError::VerifyMismatch { .. }
            | TransferError::Conflict { .. } => Scope::File,
        }
    }
}

/// The primitive operations of an inbox. Paths are full remote paths.
pub trait Remote {
    /// The temp file, open for writing and reading back through the same handle.
    type Writer: Write + Read + Seek;
    type Reader: Read;
    /// Create or truncate `path` for writing and reading.
    fn create(&mut self, path: &str) -> Result<Self::Writer, RemoteError>;
    /// Flush `w` to stable storage. `Ok(false)`: the server cannot, and that is fine.
    fn sync(&mut self, w: &mut Self::Writer, path: &str) -> Result<bool, RemoteError>;
    /// Close the written file; errors here are write errors (a full disk, say).
    fn close(&mut self, w: Self::Writer, path: &str) -> Result<(), RemoteError>;
    fn open(&mut self, path: &str) -> Result<Self::Reader, RemoteError>;
    /// Rename that never replaces an existing `to`.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), RemoteError>;
    /// Size of `path`, `None` if it does not exist.
    fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError>;
    fn remove(&mut self, path: &str) -> Result<(), RemoteError>;
    /// Names (not paths) in the inbox.
    fn list(&mut self) -> Result<Vec<String>, RemoteError>;
    /// The inbox folder, without a trailing separator.
    fn inbox(&self) -> &str;
    /// Appended to a name to make the temp name the ERP will not pick up.
    fn temp_suffix(&self) -> &str;
    /// One cheap round trip that proves the connection alive.
    fn ping(&mut self) -> Result<(), RemoteError> {
        Ok(())
    }
}

/// One file to deliver, with the size and CRC32 intake recorded.
#[derive(Clone, Debug)]
pub struct Job<'a> {
    pub name: &'a str,
    pub size: u64,
    pub crc32: u32,
}

/// How a delivery ended well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Uploaded, read back, renamed.
    Sent { remote_path: String, fsynced: bool },
    /// The same content was already there under the final name.
    AlreadyThere { remote_path: String },
}

/// What is under a final name in the inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Absent,
    Same,
    Different { size: u64, crc32: u32 },
}

/// A live connection to the destination. One per worker; thrown away after any
/// destination-wide error.
pub trait Connection: Send {
    /// The temp-verify-rename protocol. `uploaded` runs after the temp file is
    /// written and synced, before the read-back (the pipeline journals `sent` there).
    fn deliver(
        &mut self,
        job: &Job,
        src: &mut dyn Read,
        src_path: &str,
        uploaded: &mut dyn FnMut(&str),
    ) -> Result<Delivered, TransferError>;
    /// Is `job` already delivered under its final name?
    fn check(&mut self, job: &Job) -> Result<Found, TransferError>;
    /// Remove temp files a crash left in the inbox: names ending in the temp suffix
    /// whose final name `ours` accepts (the ERP's own files are not ours to remove).
    /// Returns their names.
    fn clean_temps(&mut self, ours: &dyn Fn(&str) -> bool) -> Result<Vec<String>, TransferError>;
    /// Prove the connection is alive (keepalive); an error means reconnect.
    fn ping(&mut self) -> Result<(), TransferError>;
    /// Prove the inbox is writable: write and remove a small temp-named file.
    fn probe(&mut self) -> Result<(), TransferError>;
}

/// Probes of concurrent workers must not share a file name.
static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Every `Remote` speaks the protocol; transports only provide the primitives.
impl<R: Remote + Send> Connection for R {
    fn deliver(
        &mut self,
        job: &Job,
        src: &mut dyn Read,
        src_path: &str,
        uploaded: &mut dyn FnMut(&str),
    ) -> Result<Delivered, TransferError> {
        deliver(self, job, src, src_path, uploaded)
    }

    fn check(&mut self, job: &Job) -> Result<Found, TransferError> {
        let path = join(self.inbox(), job.name);
        found(self, &path, job)
    }

    fn clean_temps(&mut self, ours: &dyn Fn(&str) -> bool) -> Result<Vec<String>, TransferError> {
        clean_temps(self, ours)
    }

    fn ping(&mut self) -> Result<(), TransferError> {
        Remote::ping(self).map_err(TransferError::Remote)
    }

    fn probe(&mut self) -> Result<(), TransferError> {
        // A temp name, so an ERP that looks at that moment ignores it.
        let path = join(
            self.inbox(),
            &format!(
                "plutus-sync-check-{}-{}{}",
                std::process::id(),
                PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                self.temp_suffix()
            ),
        );
        let mut w = self.create(&path).map_err(TransferError::Remote)?;
        let wrote = w
            .write_all(b"plutus-sync check\n")
            .map_err(|e| io_fault("write", &path, e));
        let closed = self.close(w, &path);
        let removed = self.remove(&path);
        wrote
            .and(closed)
            .and(removed)
            .map_err(TransferError::Remote)
    }
}

/// A destination that hands out connections.
pub trait Transport: Send + Sync {
    fn connect(&self) -> Result<Box<dyn Connection>, TransferError>;
    /// For log lines: the destination URL.
    fn describe(&self) -> String;
}

/// Build the transport a config names.
pub fn from_settings(s: &crate::config::Settings) -> std::sync::Arc<dyn Transport> {
    match &s.destination {
        crate::config::Destination::File { path } => std::sync::Arc::new(local::LocalTransport {
            inbox: path.clone(),
            temp_suffix: s.temp_suffix.clone(),
        }),
        crate::config::Destination::Sftp {
            user,
            host,
            port,
            path,
        } => std::sync::Arc::new(sftp::SftpTransport {
            user: user.clone(),
            host: host.clone(),
            port: *port,
            inbox: path.trim_end_matches('/').to_string(),
            identity: s.identity.clone(),
            known_hosts: s.known_hosts.clone(),
            timeout: s.timeout,
            temp_suffix: s.temp_suffix.clone(),
        }),
    }
}

// The buffer for streaming file contents: large enough to keep SFTP's pipelined
// writes full, small enough that memory stays flat for any file size.
const CHUNK: usize = 128 * 1024;

pub(crate) fn join(inbox: &str, name: &str) -> String {
    format!("{inbox}/{name}")
}

/// The protocol, over any `Remote`.
fn deliver<R: Remote>(
    r: &mut R,
    job: &Job,
    src: &mut dyn Read,
    src_path: &str,
    uploaded: &mut dyn FnMut(&str),
) -> Result<Delivered, TransferError> {
    let final_path = join(r.inbox(), job.name);
    let temp_path = format!("{final_path}{}", r.temp_suffix());
    debug_assert_ne!(final_path, temp_path);

    // 1. upload
    let mut w = r.create(&temp_path).map_err(TransferError::Remote)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                drop(w);
                let _ = r.remove(&temp_path);
                return Err(TransferError::LocalRead {
                    path: src_path.to_string(),
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        w.write_all(&buf[..n])
            .map_err(|e| TransferError::Remote(io_fault("write", &temp_path, e)))?;
    }
    let crc32 = hasher.finalize();
    if (size, crc32) != (job.size, job.crc32) {
        drop(w);
        let _ = r.remove(&temp_path);
        return Err(TransferError::SourceChanged {
            name: job.name.to_string(),
            size,
            crc32,
            want_size: job.size,
            want_crc32: job.crc32,
        });
    }
    w.flush()
        .map_err(|e| TransferError::Remote(io_fault("write", &temp_path, e)))?;
    let fsynced = r.sync(&mut w, &temp_path).map_err(TransferError::Remote)?;
    uploaded(&temp_path);

    // 2. read back, through the handle we wrote with: the server reads the file's
    // bytes either way, and a second open and close would cost two round trips per
    // file. Exactly `size` bytes: the file was created empty (truncated) and only we
    // wrote to it, so asking for an end-of-file would be one more round trip for nothing.
    let back = w
        .seek(SeekFrom::Start(0))
        .and_then(|_| crc_of(&mut w, job.size, &mut buf))
        .map_err(|e| TransferError::Remote(io_fault("read", &temp_path, e)));
    r.close(w, &temp_path).map_err(TransferError::Remote)?;
    let (rsize, rcrc) = back?;
    if (rsize, rcrc) != (job.size, job.crc32) {
        let _ = r.remove(&temp_path);
        return Err(TransferError::VerifyMismatch {
            path: temp_path,
            size: rsize,
            crc32: rcrc,
            want_size: job.size,
            want_crc32: job.crc32,
        });
    }

    // 3. rename, never over an existing file
    match r.rename(&temp_path, &final_path) {
        Ok(()) => Ok(Delivered::Sent {
            remote_path: final_path,
            fsynced,
        }),
        Err(rename_err) => {
            // 4. refused: is it ours already, or someone else's?
            match found(r, &final_path, job)? {
                Found::Same => {
                    let _ = r.remove(&temp_path);
                    Ok(Delivered::AlreadyThere {
                        remote_path: final_path,
                    })
                }
                Found::Different { size, crc32 } => {
                    let _ = r.remove(&temp_path);
                    Err(TransferError::Conflict {
                        path: final_path,
                        size,
                        crc32,
                        want_size: job.size,
                        want_crc32: job.crc32,
                    })
                }
                Found::Absent => Err(TransferError::Remote(rename_err)),
            }
        }
    }
}

fn found<R: Remote>(r: &mut R, path: &str, job: &Job) -> Result<Found, TransferError> {
    match r.size(path).map_err(TransferError::Remote)? {
        None => Ok(Found::Absent),
        Some(_) => {
            let (size, crc32) = read_crc(r, path)?;
            if (size, crc32) == (job.size, job.crc32) {
                Ok(Found::Same)
            } else {
                Ok(Found::Different { size, crc32 })
            }
        }
    }
}

fn clean_temps<R: Remote>(
    r: &mut R,
    ours: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, TransferError> {
    let temp_suffix = r.temp_suffix().to_string();
    let mut removed = Vec::new();
    for name in r.list().map_err(TransferError::Remote)? {
        let is_ours = name
            .strip_suffix(temp_suffix.as_str())
            .is_some_and(|final_name| !final_name.is_empty() && ours(final_name));
        if is_ours {
            let path = join(r.inbox(), &name);
            // Best effort: one temp we cannot remove (a folder of that name, a file
            // the ERP holds open) must not stop every delivery. Our own upload of that
            // name truncates it anyway.
            match r.remove(&path) {
                Ok(()) => removed.push(name),
                Err(e) if e.fault == Fault::Connection => return Err(TransferError::Remote(e)),
                Err(e) => tracing::warn!("cannot remove a leftover temp file: {e}"),
            }
        }
    }
    Ok(removed)
}

/// Size and CRC32 of the first `limit` bytes `rd` gives (fewer at end of file).
fn crc_of(rd: &mut impl Read, limit: u64, buf: &mut [u8]) -> io::Result<(u64, u32)> {
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    while size < limit {
        let want = buf.len().min((limit - size) as usize);
        match rd.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok((size, hasher.finalize()))
}

fn read_crc<R: Remote>(r: &mut R, path: &str) -> Result<(u64, u32), TransferError> {
    let mut rd = r.open(path).map_err(TransferError::Remote)?;
    crc_of(&mut rd, u64::MAX, &mut vec![0u8; CHUNK])
        .map_err(|e| TransferError::Remote(io_fault("read", path, e)))
}

/// Map an `io::Error` from a remote read or write to a fault. (ssh2's `Read`/`Write`
/// keep only the message of its error, not the SFTP status: a lost connection there
/// shows as `Other`, which is why the pipeline pings after a file-scope error.)
pub(crate) fn io_fault(op: &'static str, path: &str, e: io::Error) -> RemoteError {
    let fault = match e.kind() {
        io::ErrorKind::NotFound => Fault::NotFound,
        io::ErrorKind::PermissionDenied => Fault::PermissionDenied,
        io::ErrorKind::TimedOut
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::NotConnected
        | io::ErrorKind::UnexpectedEof => Fault::Connection,
        io::ErrorKind::StorageFull => Fault::Failure,
        io::ErrorKind::Unsupported => Fault::Unsupported,
        _ => Fault::Other,
    };
    RemoteError {
        op,
        path: path.to_string(),
        fault,
        message: e.to_string(),
    }
}
