//! An open remote file over a [`Client`]: writes cut into WRITEs kept in flight,
//! reads served from READs sent ahead, both under the client's windows. `Seek` then
//! `Read` reads back what was written, through the same handle. Holds no lock of its
//! own: every call locks the shared client for its duration.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use super::client::{Client, ClientError, READ_WINDOW, WRITE_WINDOW};
use super::matcher::Response;
use super::reply::{Status, StatusCode};
use super::request::Request;

/// READs sent ahead for a file of unknown size, at most (as OpenSSH's client).
const MAX_AHEAD: usize = 64;

/// A client shared by a connection and the files open on it.
pub type Shared<C> = Arc<Mutex<Client<C>>>;

fn lock<C>(c: &Shared<C>) -> MutexGuard<'_, Client<C>> {
    // A panic mid-call leaves at worst a broken session, which the next call reports.
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a file operation failed: the session, or the server's answer.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{request}: {}", describe(.status))]
    Status {
        request: &'static str,
        status: Status,
    },
    #[error("{request}: unexpected answer")]
    Unexpected { request: &'static str },
}

/// A status for people: the code, and the server's own words when they say more
/// (OpenSSH's only repeat the code: "No such file").
pub fn describe(s: &Status) -> String {
    let code = s.code.to_string();
    if s.message.is_empty() || s.message.eq_ignore_ascii_case(&code) {
        code
    } else {
        format!("{code} ({})", s.message)
    }
}

impl FileError {
    /// As an `io::Error`, the kinds ssh2's `File` gave for the same failures (so
    /// `transfer::io_fault` reads them the same): no such file → `NotFound`,
    /// permission denied → `PermissionDenied`, a lost session → a connection kind.
    pub fn to_io(&self) -> io::Error {
        let kind = match self {
            FileError::Client(c) => return c.to_io(),
            FileError::Status { status, .. } => match status.code {
                StatusCode::NoSuchFile | StatusCode::Other(10) => io::ErrorKind::NotFound,
                StatusCode::PermissionDenied => io::ErrorKind::PermissionDenied,
                StatusCode::NoConnection | StatusCode::ConnectionLost => {
                    io::ErrorKind::ConnectionAborted
                }
                StatusCode::OpUnsupported => io::ErrorKind::Unsupported,
                _ => io::ErrorKind::Other,
            },
            FileError::Unexpected { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, self.to_string())
    }
}

/// OK, or the status as an error.
fn expect_ok(request: &'static str, r: Response) -> Result<(), FileError> {
    match r {
        Response::Status(s) if s.code == StatusCode::Ok => Ok(()),
        Response::Status(status) => Err(FileError::Status { request, status }),
        _ => Err(FileError::Unexpected { request }),
    }
}

/// An open remote file: writes are cut into WRITE requests kept in flight under
/// [`WRITE_WINDOW`]; reads are served from READs sent ahead under [`READ_WINDOW`].
/// `Seek` to a position, then `Read`, reads back what was written.
///
/// Dropped without [`File::close`], it queues a CLOSE and writes it out, without
/// waiting for the answer (Win32-OpenSSH opens files exclusively: a handle left open
/// would keep the ERP from the file).
pub struct File<C: Read + Write> {
    client: Shared<C>,
    handle: Vec<u8>,
    /// The caller's position: the next byte read or written.
    pos: u64,
    /// The file's size as far as we know it (we created it empty and wrote up to
    /// here); `None` for a file opened to read.
    end: Option<u64>,
    /// Bytes written and not yet sent, starting at `wbuf_at`.
    wbuf: Vec<u8>,
    wbuf_at: u64,
    /// WRITEs not yet acknowledged.
    writes: Vec<u32>,
    /// The first failed WRITE: every later write, flush, read and close returns it.
    werr: Option<(StatusCode, String)>,
    /// READs in flight, in file order: (id, offset, length). The first starts where
    /// `rbuf` ends.
    reads: VecDeque<(u32, u64, u32)>,
    /// Where the next READ sent ahead starts.
    next_read: u64,
    /// READs to keep in flight for a file of unknown size: doubles with each full
    /// DATA, so a small file costs few READs past its end.
    ahead: usize,
    rbuf: Vec<u8>,
    rbuf_at: usize,
    eof: bool,
    closed: bool,
}

impl<C: Read + Write> File<C> {
    /// A file the server opened for us under `handle`. `written_from_empty`: we
    /// created (or truncated) it, so what we write is all it holds.
    pub fn new(client: Shared<C>, handle: Vec<u8>, written_from_empty: bool) -> Self {
        File {
            client,
            handle,
            pos: 0,
            end: written_from_empty.then_some(0),
            wbuf: Vec::new(),
            wbuf_at: 0,
            writes: Vec::new(),
            werr: None,
            reads: VecDeque::new(),
            next_read: 0,
            ahead: 4,
            rbuf: Vec::new(),
            rbuf_at: 0,
            eof: false,
            closed: false,
        }
    }

    pub fn handle(&self) -> &[u8] {
        &self.handle
    }

    /// Sends every byte written and waits until each WRITE is answered; the first
    /// failure, if any.
    pub fn flush_writes(&mut self, c: &mut Client<C>) -> Result<(), FileError> {
        self.send_writes(c, true)?;
        c.write_out()?;
        while let Some(id) = self.writes.pop() {
            let r = c.wait(id)?;
            self.note_write(r);
        }
        self.write_error()
    }

    /// Flushes the writes and closes the handle, waiting for the answer. `c` is this
    /// file's client, locked by the caller.
    pub fn close(mut self, c: &mut Client<C>) -> Result<(), FileError> {
        // Set first: the drop at the end of this call must not lock the client again.
        self.closed = true;
        self.drop_reads(c);
        let flushed = self.flush_writes(c);
        let closed = c
            .call(&Request::Close {
                handle: &self.handle,
            })
            .map_err(FileError::from)
            .and_then(|r| expect_ok("CLOSE", r));
        flushed.and(closed)
    }

    fn write_error(&self) -> Result<(), FileError> {
        match &self.werr {
            Some((code, message)) => Err(FileError::Status {
                request: "WRITE",
                status: Status {
                    code: *code,
                    message: message.clone(),
                    language: String::new(),
                },
            }),
            None => Ok(()),
        }
    }

    fn note_write(&mut self, r: Response) {
        if self.werr.is_some() {
            return;
        }
        match r {
            Response::Status(s) if s.code == StatusCode::Ok => {}
            Response::Status(s) => self.werr = Some((s.code, s.message)),
            _ => self.werr = Some((StatusCode::BadMessage, "not a STATUS".into())),
        }
    }

    /// Files the answers that have come for our WRITEs.
    fn reap_writes(&mut self, c: &mut Client<C>) {
        let mut answered = Vec::new();
        self.writes.retain(|&id| match c.take(id) {
            Some(r) => {
                answered.push(r);
                false
            }
            None => true,
        });
        for r in answered {
            self.note_write(r);
        }
    }

    /// Sends full WRITEs from the buffer (all of it with `all`), each once there is
    /// room in the window.
    fn send_writes(&mut self, c: &mut Client<C>, all: bool) -> Result<(), FileError> {
        let max = c.bounds().max_write as usize;
        let mut sent = 0;
        while self.wbuf.len() - sent >= max || (all && sent < self.wbuf.len()) {
            let n = max.min(self.wbuf.len() - sent);
            c.room(n as u64, WRITE_WINDOW)?;
            self.reap_writes(c);
            let id = c.send(&Request::Write {
                handle: &self.handle,
                offset: self.wbuf_at,
                data: &self.wbuf[sent..sent + n],
            })?;
            self.writes.push(id);
            self.wbuf_at += n as u64;
            sent += n;
        }
        self.wbuf.drain(..sent);
        self.reap_writes(c);
        self.write_error()
    }

    fn drop_reads(&mut self, c: &mut Client<C>) {
        for (id, _, _) in self.reads.drain(..) {
            c.forget(id);
        }
        self.rbuf.clear();
        self.rbuf_at = 0;
    }

    fn write_with(&mut self, c: &mut Client<C>, buf: &[u8]) -> Result<usize, FileError> {
        self.write_error()?;
        if !self.reads.is_empty() || self.rbuf_at < self.rbuf.len() {
            self.drop_reads(c);
        }
        if self.wbuf.is_empty() {
            self.wbuf_at = self.pos;
        }
        self.wbuf.extend_from_slice(buf);
        self.pos += buf.len() as u64;
        if let Some(end) = &mut self.end {
            *end = (*end).max(self.pos);
        }
        self.send_writes(c, false)?;
        Ok(buf.len())
    }

    /// Sends READs ahead of `pos`: up to the known end of the file (and one past it
    /// when nothing is in flight, to learn the end), or `ahead` of them.
    fn read_ahead(&mut self, c: &mut Client<C>) -> Result<(), FileError> {
        let max = c.bounds().max_read;
        loop {
            let len = match self.end {
                Some(end) if self.next_read < end => max.min((end - self.next_read) as u32),
                Some(_) if self.reads.is_empty() => max,
                Some(_) => break,
                None if self.reads.len() < self.ahead => max,
                None => break,
            };
            if self.reads.is_empty() {
                c.room(u64::from(len), READ_WINDOW)?;
            } else if !c.has_room(u64::from(len), READ_WINDOW) {
                // Ours are in flight: read those before sending more.
                break;
            }
            let id = c.send(&Request::Read {
                handle: &self.handle,
                offset: self.next_read,
                len,
            })?;
            self.reads.push_back((id, self.next_read, len));
            self.next_read += u64::from(len);
        }
        Ok(())
    }

    fn read_with(&mut self, c: &mut Client<C>, buf: &mut [u8]) -> Result<usize, FileError> {
        if !self.wbuf.is_empty() || !self.writes.is_empty() {
            self.flush_writes(c)?;
        }
        self.write_error()?;
        loop {
            if self.rbuf_at < self.rbuf.len() {
                let n = buf.len().min(self.rbuf.len() - self.rbuf_at);
                buf[..n].copy_from_slice(&self.rbuf[self.rbuf_at..self.rbuf_at + n]);
                self.rbuf_at += n;
                self.pos += n as u64;
                return Ok(n);
            }
            if self.eof || buf.is_empty() {
                return Ok(0);
            }
            if self.reads.is_empty() {
                self.next_read = self.pos;
            }
            self.read_ahead(c)?;
            let (id, offset, len) = self.reads.pop_front().expect("read_ahead sent one");
            match c.wait(id)? {
                Response::Data(d) if !d.is_empty() => {
                    let n = d.len() as u32;
                    if n < len {
                        // A short read is not the end: ask for the rest of this range
                        // before anything after it.
                        let rest = c.send(&Request::Read {
                            handle: &self.handle,
                            offset: offset + u64::from(n),
                            len: len - n,
                        })?;
                        self.reads
                            .push_front((rest, offset + u64::from(n), len - n));
                    } else if self.ahead < MAX_AHEAD {
                        self.ahead *= 2;
                    }
                    self.rbuf = d;
                    self.rbuf_at = 0;
                }
                Response::Status(s) if s.code == StatusCode::Eof => {
                    self.eof = true;
                    self.drop_reads(c);
                }
                // Zero bytes of DATA: read as the end too (a short file then fails
                // its verification; it never passes for a longer one).
                Response::Data(_) => {
                    self.eof = true;
                    self.drop_reads(c);
                }
                Response::Status(status) => {
                    self.drop_reads(c);
                    return Err(FileError::Status {
                        request: "READ",
                        status,
                    });
                }
                _ => return Err(FileError::Unexpected { request: "READ" }),
            }
        }
    }
}

impl<C: Read + Write> Write for File<C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let client = self.client.clone();
        let mut c = lock(&client);
        self.write_with(&mut c, buf).map_err(|e| e.to_io())
    }

    /// Sends every byte written and waits for every WRITE's answer.
    fn flush(&mut self) -> io::Result<()> {
        let client = self.client.clone();
        let mut c = lock(&client);
        self.flush_writes(&mut c).map_err(|e| e.to_io())
    }
}

impl<C: Read + Write> Read for File<C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let client = self.client.clone();
        let mut c = lock(&client);
        self.read_with(&mut c, buf).map_err(|e| e.to_io())
    }
}

impl<C: Read + Write> io::Seek for File<C> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            io::SeekFrom::End(d) => match self.end {
                Some(end) => end.checked_add_signed(d),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "seek from the end of a file opened to read",
                    ))
                }
            },
        };
        let Some(target) = target else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            ));
        };
        if target != self.pos {
            let client = self.client.clone();
            let mut c = lock(&client);
            // Whatever was read ahead or buffered belongs to the old position.
            self.flush_writes(&mut c).map_err(|e| e.to_io())?;
            self.drop_reads(&mut c);
            self.eof = false;
            self.pos = target;
        }
        Ok(self.pos)
    }
}

impl<C: Read + Write> Drop for File<C> {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let client = self.client.clone();
        let mut c = lock(&client);
        if c.is_broken() {
            return;
        }
        self.drop_reads(&mut c);
        for id in self.writes.drain(..) {
            c.forget(id);
        }
        // Unsent bytes are abandoned with the file (the caller removes it). The CLOSE
        // goes out now: a handle left open on an idle session would keep the file
        // locked on Windows.
        if let Ok(id) = c.send(&Request::Close {
            handle: &self.handle,
        }) {
            c.forget(id);
            let _ = c.write_out();
        }
    }
}
