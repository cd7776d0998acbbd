//! Transports: put one file into the destination inbox so that it never appears
//! under its final name unless complete and verified. Knows nothing of the journal:
//! the pipeline calls the steps below in order and journals between them.
//!
//! The protocol is written once, here, over the few primitive operations a `Remote`
//! offers; `sftp` (SSH from ssh2, SFTP from `sftp_proto`) and `local` (`file://`)
//! only implement those primitives.
//!
//! 1. [`Connection::upload`]: write a temp name of this attempt's own
//!    (`<name>.<id>-<token><temp_suffix>`, never reused, so a leftover a server will not
//!    let us truncate cannot block the order), fsync where the server can, read it back
//!    and compare size and CRC32 with intake's values. The pipeline then journals `sent`
//!    with that temp path, durably.
//! 2. [`Connection::rename`]: rename it to `<name>`, a rename that never overwrites (the
//!    server's behaviour is probed first: [`Connection::server`]).
//! 3. [`Connection::look`]: after any doubt (a refused rename, a lost reply, a crash),
//!    what the final name and the temp name hold; `plutus_state::protocol::recover_sent`
//!    decides from that.
//!
//! The read-back happens before the rename because the ERP may import and delete the
//! file the moment it has its final name.

mod batch;
mod error;
pub mod local;
pub mod sftp;
pub mod sftp_proto;

pub(crate) use batch::not_tried;
pub use batch::Put;
pub(crate) use error::io_fault;
pub use error::{Fault, RemoteError, Scope, TransferError};

pub use plutus_state::protocol::Seen;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The primitive operations of an inbox. Paths are full remote paths.
pub(crate) trait Remote {
    /// The temp file, open for writing and reading back through the same handle.
    type Writer: Write + Read + Seek;
    type Reader: Read;
    /// Create or truncate `path` for writing and reading.
    fn create(&mut self, path: &str) -> Result<Self::Writer, RemoteError>;
    /// Create `path`, which must not exist yet (exclusive create, which never follows
    /// a link): for probe files, whose names others could guess and plant first.
    fn create_new(&mut self, path: &str) -> Result<Self::Writer, RemoteError>;
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
    /// Step 1 for many files; one result per file, in order. One after another unless
    /// the transport can do better.
    fn upload_many(&mut self, puts: &mut [Put<'_>]) -> Vec<Result<Uploaded, TransferError>>
    where
        Self: Sized,
    {
        batch::upload_each(self, puts)
    }
    /// [`Remote::rename`] for many `(from, to)` paths; one result each, in order.
    fn rename_many(&mut self, moves: &[(String, String)]) -> Vec<Result<(), RemoteError>>
    where
        Self: Sized,
    {
        batch::rename_each(self, moves)
    }
}

/// One file to deliver, with the size and CRC32 intake recorded.
#[derive(Clone, Debug)]
pub struct Job<'a> {
    pub name: &'a str,
    pub size: u64,
    pub crc32: u32,
}

/// A temp file that holds exactly the job's bytes, read back and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub temp_path: String,
    /// `false`: the server has no working fsync; the read-back is the only proof.
    pub fsynced: bool,
}

/// What the protocol's guarantees rest on, probed on a new connection with probe files
/// under temp names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTraits {
    /// A rename onto an existing name is refused. A server that replaces the target
    /// (seen with paramiko-based servers) could overwrite a different order.
    pub rename_refuses_overwrite: bool,
    /// `fsync@openssh.com` answered OK (on Windows that is no proof; the read-back is).
    pub fsync: bool,
}

/// The name a temp file of this attempt gets: `<name>.<id>-<token><suffix>`. The
/// token is random per attempt, so no two attempts share a temp, across restarts too.
pub fn temp_name(name: &str, id: u64, suffix: &str) -> String {
    format!("{name}.{id}-{:08x}{suffix}", fastrand::u32(..))
}

/// The final name a temp name belongs to: `<name>` from `<name>.<id>-<token><suffix>`
/// (or from `<name><suffix>`, the older scheme). `None` for anything else.
pub(crate) fn final_of_temp<'a>(temp: &'a str, suffix: &str) -> Option<&'a str> {
    let stem = temp.strip_suffix(suffix)?;
    let attempt = stem
        .rsplit_once('.')
        .filter(|(_, tag)| {
            tag.split_once('-').is_some_and(|(id, token)| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && token.len() == 8
                    && token.bytes().all(|b| b.is_ascii_hexdigit())
            })
        })
        .map(|(name, _)| name);
    Some(attempt.unwrap_or(stem)).filter(|n| !n.is_empty())
}

/// Probe files start with this, so clean-up can tell ours from the ERP's.
const PROBE_PREFIX: &str = "plutus-sync-check-";

/// A live connection to the destination. One per worker; thrown away after any
/// destination-wide error.
pub trait Connection: Send {
    /// Step 1: write `job` to `temp_name` in the inbox, fsync where the server can,
    /// read it back and compare. Ok means the temp holds exactly the job's bytes.
    fn upload(
        &mut self,
        job: &Job,
        temp_name: &str,
        src: &mut dyn Read,
        src_path: &str,
    ) -> Result<Uploaded, TransferError>;
    /// Step 1 for many files at once, one result per file in order: on SFTP every file's
    /// requests are in flight together (`sftp_proto::put`). After a destination-wide
    /// error the files not yet done fail with a connection fault too.
    fn upload_many(&mut self, puts: &mut [Put<'_>]) -> Vec<Result<Uploaded, TransferError>>;
    /// Step 2: rename `temp_path` to the job's final name; never over an existing name
    /// (on a server that probes as such).
    fn rename(&mut self, job: &Job, temp_path: &str) -> Result<(), TransferError>;
    /// Step 2 for many `(job, temp_path)` at once; one result each, in order.
    fn rename_many(&mut self, moves: &[(Job<'_>, &str)]) -> Vec<Result<(), TransferError>>;
    /// What the final name and `temp_path` hold, in that order (see `recover_sent`).
    fn look(&mut self, job: &Job, temp_path: &str) -> Result<(Seen, Seen), TransferError>;
    /// What the final name holds.
    fn look_final(&mut self, job: &Job) -> Result<Seen, TransferError>;
    /// Remove a file of ours; `Ok(false)` if it was not there.
    fn remove(&mut self, path: &str) -> Result<bool, TransferError>;
    /// The final path of `name`.
    fn final_path(&self, name: &str) -> String;
    /// Remove temp files nobody needs: names that are temp names of final names
    /// `ours` accepts (the ERP's own files are not ours to remove) and that `keep` does
    /// not claim (a `sent` entry's temp, an upload in progress). Returns their names.
    fn clean_temps(
        &mut self,
        ours: &dyn Fn(&str) -> bool,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, TransferError>;
    /// Prove the connection is alive (keepalive); an error means reconnect.
    fn ping(&mut self) -> Result<(), TransferError>;
    /// Prove the inbox is writable: write and remove a small temp-named file.
    fn probe(&mut self) -> Result<(), TransferError>;
    /// Probe what the guarantees rest on: does a rename onto an existing name fail,
    /// does fsync work. Costs a few round trips; callers cache it per connection.
    fn server(&mut self) -> Result<ServerTraits, TransferError>;
}

/// Probes of concurrent workers must not share a file name.
static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The names of probe files in use right now, on any connection of this process: the
/// clean-up (on another worker's connection) must not remove them mid-probe. A probe
/// cut off midway leaves its files unclaimed, and the next clean-up takes them.
static LIVE_PROBES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn live_probes() -> std::sync::MutexGuard<'static, Vec<String>> {
    LIVE_PROBES.lock().unwrap_or_else(|p| p.into_inner())
}

/// A probe file's path, claimed until the guard drops.
struct ProbeName(String);

impl Drop for ProbeName {
    fn drop(&mut self) {
        live_probes().retain(|n| !self.0.ends_with(&format!("/{n}")));
    }
}

fn probe_path<R: Remote>(r: &R, tag: &str) -> ProbeName {
    // A temp name, so an ERP that looks at that moment ignores it.
    // The random token makes the name unguessable; the exclusive create makes a
    // planted file or link under it an error, never a write through it.
    let name = format!(
        "{PROBE_PREFIX}{}-{}-{:08x}{tag}{}",
        std::process::id(),
        PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        fastrand::u32(..),
        r.temp_suffix()
    );
    live_probes().push(name.clone());
    ProbeName(join(r.inbox(), &name))
}

/// Write a small probe file; whether fsync worked on it.
fn write_probe<R: Remote>(r: &mut R, path: &str, body: &[u8]) -> Result<bool, RemoteError> {
    let mut w = r.create_new(path)?;
    let wrote = w.write_all(body).map_err(|e| io_fault("write", path, e));
    let synced = match wrote {
        Ok(()) => r.sync(&mut w, path),
        Err(e) => Err(e),
    };
    let closed = r.close(w, path);
    let synced = synced?;
    closed?;
    Ok(synced)
}

/// Every `Remote` speaks the protocol; transports only provide the primitives.
impl<R: Remote + Send> Connection for R {
    fn upload(
        &mut self,
        job: &Job,
        temp_name: &str,
        src: &mut dyn Read,
        src_path: &str,
    ) -> Result<Uploaded, TransferError> {
        upload(self, job, temp_name, src, src_path)
    }

    fn upload_many(&mut self, puts: &mut [Put<'_>]) -> Vec<Result<Uploaded, TransferError>> {
        Remote::upload_many(self, puts)
    }

    fn rename(&mut self, job: &Job, temp_path: &str) -> Result<(), TransferError> {
        let final_path = join(self.inbox(), job.name);
        debug_assert_ne!(final_path, temp_path);
        Remote::rename(self, temp_path, &final_path).map_err(TransferError::Remote)
    }

    fn rename_many(&mut self, moves: &[(Job<'_>, &str)]) -> Vec<Result<(), TransferError>> {
        let moves: Vec<(String, String)> = moves
            .iter()
            .map(|(job, temp)| (temp.to_string(), join(self.inbox(), job.name)))
            .collect();
        Remote::rename_many(self, &moves)
            .into_iter()
            .map(|r| r.map_err(TransferError::Remote))
            .collect()
    }

    fn look(&mut self, job: &Job, temp_path: &str) -> Result<(Seen, Seen), TransferError> {
        let final_path = join(self.inbox(), job.name);
        let f = seen(self, &final_path, job)?;
        let t = seen(self, temp_path, job)?;
        Ok((f, t))
    }

    fn look_final(&mut self, job: &Job) -> Result<Seen, TransferError> {
        let final_path = join(self.inbox(), job.name);
        seen(self, &final_path, job)
    }

    fn remove(&mut self, path: &str) -> Result<bool, TransferError> {
        match Remote::remove(self, path) {
            Ok(()) => Ok(true),
            Err(e) if e.fault == Fault::NotFound => Ok(false),
            Err(e) => Err(TransferError::Remote(e)),
        }
    }

    fn final_path(&self, name: &str) -> String {
        join(self.inbox(), name)
    }

    fn clean_temps(
        &mut self,
        ours: &dyn Fn(&str) -> bool,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, TransferError> {
        clean_temps(self, ours, keep)
    }

    fn ping(&mut self) -> Result<(), TransferError> {
        Remote::ping(self).map_err(TransferError::Remote)
    }

    fn probe(&mut self) -> Result<(), TransferError> {
        let claim = probe_path(self, "");
        let path = &claim.0;
        let wrote = write_probe(self, path, b"plutus-sync check\n").map(|_| ());
        let removed = Remote::remove(self, path);
        wrote.and(removed).map_err(TransferError::Remote)
    }

    fn server(&mut self) -> Result<ServerTraits, TransferError> {
        let claims = (probe_path(self, "a"), probe_path(self, "b"));
        let (a, b) = (&claims.0 .0, &claims.1 .0);
        let result = (|| {
            let fsync = write_probe(self, a, b"a\n")?;
            write_probe(self, b, b"bb\n")?;
            let renamed = match Remote::rename(self, a, b) {
                Ok(()) => true,
                Err(e) if e.fault == Fault::Connection => return Err(e),
                Err(_) => false,
            };
            // Conclusive only if the files say the same as the answer: refused with
            // both still there as written, or replaced with `b` holding `a`'s bytes.
            let (sa, sb) = (self.size(a)?, self.size(b)?);
            let rename_refuses_overwrite = match (renamed, sa, sb) {
                (false, Some(2), Some(3)) => true,
                (true, None, Some(2)) => false,
                _ => {
                    return Err(RemoteError {
                        op: "probe",
                        path: b.clone(),
                        fault: Fault::Other,
                        message: format!(
                            "the rename probe was inconclusive (rename {}, then sizes {sa:?} and {sb:?}); something else changed the probe files",
                            if renamed { "succeeded" } else { "refused" }
                        ),
                    })
                }
            };
            Ok(ServerTraits {
                rename_refuses_overwrite,
                fsync,
            })
        })();
        // Both, whatever happened: after a replacing rename only `b` is left.
        for p in [a, b] {
            match Remote::remove(self, p) {
                Err(e) if e.fault == Fault::Connection => {
                    return Err(TransferError::Remote(e));
                }
                _ => {}
            }
        }
        result.map_err(TransferError::Remote)
    }
}

/// A destination that hands out connections.
pub trait Transport: Send + Sync {
    fn connect(&self) -> Result<Box<dyn Connection>, TransferError>;
    /// For log lines: the destination URL.
    fn describe(&self) -> String;
    /// For `check`: what the last connection negotiated (SSH algorithms), if
    /// anything worth saying.
    fn negotiated(&self) -> Option<String> {
        None
    }
}

/// Build the transport the `[destination]` table names.
pub fn from_settings(d: &crate::config::DestinationSettings) -> std::sync::Arc<dyn Transport> {
    match &d.url {
        crate::config::Destination::File { path } => std::sync::Arc::new(local::LocalTransport {
            inbox: path.clone(),
            temp_suffix: d.temp_suffix.clone(),
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
            identity: d.identity.clone(),
            known_hosts: d.known_hosts.clone(),
            timeout: d.timeout,
            temp_suffix: d.temp_suffix.clone(),
            negotiated: Default::default(),
        }),
    }
}

// The buffer for streaming file contents: large enough to keep SFTP's pipelined
// writes full, small enough that memory stays flat for any file size.
const CHUNK: usize = 128 * 1024;

pub(crate) fn join(inbox: &str, name: &str) -> String {
    format!("{inbox}/{name}")
}

/// Step 1 over any `Remote`: upload, sync, read back.
fn upload<R: Remote>(
    r: &mut R,
    job: &Job,
    temp_name: &str,
    src: &mut dyn Read,
    src_path: &str,
) -> Result<Uploaded, TransferError> {
    let temp_path = join(r.inbox(), temp_name);
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

    // Read back through the handle we wrote with: the server reads the file's bytes
    // either way, and a second open and close would cost two round trips per file.
    // Exactly `size` bytes: the file was created empty and the name is this attempt's
    // alone, so asking for an end-of-file would be one more round trip for nothing.
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
    Ok(Uploaded { temp_path, fsynced })
}

/// What `path` holds compared with the job: a size that differs answers without
/// reading; the same size is read and its CRC32 compared.
fn seen<R: Remote>(r: &mut R, path: &str, job: &Job) -> Result<Seen, TransferError> {
    match r.size(path).map_err(TransferError::Remote)? {
        None => Ok(Seen::Absent),
        Some(size) if size != job.size => Ok(Seen::Different),
        Some(_) => match read_crc(r, path) {
            Ok(got) if got == (job.size, job.crc32) => Ok(Seen::Same),
            Ok(_) => Ok(Seen::Different),
            // Gone between the stat and the open: the ERP took it.
            Err(TransferError::Remote(e)) if e.fault == Fault::NotFound => Ok(Seen::Absent),
            Err(e) => Err(e),
        },
    }
}

fn clean_temps<R: Remote>(
    r: &mut R,
    ours: &dyn Fn(&str) -> bool,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, TransferError> {
    let temp_suffix = r.temp_suffix().to_string();
    let mut removed = Vec::new();
    for name in r.list().map_err(TransferError::Remote)? {
        // A probe running now (on another worker's connection) keeps its files.
        let is_probe = name.starts_with(PROBE_PREFIX) && name.ends_with(temp_suffix.as_str());
        let live_probe = is_probe && live_probes().contains(&name);
        let is_ours = (is_probe && !live_probe)
            || (!is_probe && final_of_temp(&name, &temp_suffix).is_some_and(ours));
        // `keep` is asked after the listing: an upload that started after the listing
        // registered its name before creating the file, so it is claimed here.
        if is_ours && !keep(&name) {
            let path = join(r.inbox(), &name);
            // Best effort: one temp we cannot remove (a folder of that name, a file
            // the ERP or a dropped session holds open) must not stop every delivery;
            // no upload reuses its name, and the next clean-up tries again.
            match r.remove(&path) {
                Ok(()) => removed.push(name),
                Err(e) if e.fault == Fault::NotFound => {}
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
