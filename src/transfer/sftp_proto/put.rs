//! Many files through one client at once, each written, fsynced, read back and closed
//! with the fewest round trips the protocol allows (issue 12).
//!
//! For a batch of files: every OPEN goes out together (one round trip: a WRITE needs
//! the handle); then, file after file, its WRITEs, its FSYNC, the READs of its
//! read-back and its CLOSE go out back to back, without waiting for any answer; the
//! answers are taken as they come. A batch of any size costs about two round trips
//! plus the time its bytes take on the wire, where one file at a time, each request
//! waited for, costs five (OPEN, the WRITEs, FSYNC, READ, CLOSE).
//!
//! This is safe because the server must handle the requests on one handle in the
//! order it received them (draft-ietf-secsh-filexfer-02, 6.1): the READs see every
//! WRITE before them, the FSYNC comes after the WRITEs, and the CLOSE after the READs.
//! Answers to different requests may come in any order; each file's answers are
//! consumed in the order its requests went out.
//!
//! **Memory and the channel.** The WRITEs in flight stay under [`WRITE_WINDOW`]. READ
//! data asked for and not yet consumed (in flight, or arrived and waiting behind an
//! earlier answer of its file) stays under [`READ_WINDOW`]: that bounds both what this
//! process holds and what the server may have to send while we are busy writing (see
//! `client`: it must fit libssh2's receive window, or both sides wait on each other).
//! A batch's memory is flat whatever the size of its files.
//!
//! **Failures.** A refused request fails its file only: its remaining WRITEs and READs
//! are not sent, only its CLOSE. A refused WRITE or CLOSE (a full disk: the inbox,
//! not the file) also stops the files not started yet: they are only closed, and fail
//! with [`PutError::Skipped`], as one file at a time stops after such an error. A
//! session error (a timeout, a reset, a packet that makes no sense) fails every file
//! whose answers were not all in, and leaves the client broken.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use super::client::{Client, ClientError, READ_WINDOW, WRITE_WINDOW};
use super::file::describe;
use super::matcher::Response;
use super::reply::{Status, StatusCode};
use super::request::{OpenFlags, Request};
use super::Attrs;

/// One file to put: created (or truncated) at `path`, filled from `src`, which must
/// give exactly `size` bytes with CRC32 `crc32` (what intake recorded).
pub struct Put<'a> {
    pub path: &'a [u8],
    pub src: &'a mut dyn Read,
    pub size: u64,
    pub crc32: u32,
}

/// What the server said to a file's FSYNC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Not asked (the server does not offer it, or refused it before).
    NotSent,
    Ok,
    /// Any status but OK: no fsync on this server (the read-back is the proof).
    Refused(Status),
}

/// A file whose temp holds exactly its bytes, read back through its own handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Putted {
    pub fsync: Fsync,
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The session failed before this file's answers were all in.
    #[error("{0}")]
    Session(String),
    /// A request of this file was refused. `request` is OPEN, WRITE, FSYNC, READ or
    /// CLOSE.
    #[error("{request}: {}", describe(.status))]
    Status {
        request: &'static str,
        status: Status,
    },
    #[error("{request}: unexpected answer")]
    Unexpected { request: &'static str },
    /// The local file could not be read; the temp is closed and removed.
    #[error("cannot read the local file: {0}")]
    Source(#[source] io::Error),
    /// The local file did not give the bytes intake recorded; the temp is closed and
    /// removed.
    #[error("the local file changed: size {size}, crc32 {crc32:08x}")]
    SourceChanged { size: u64, crc32: u32 },
    /// The read-back differs from what was sent; the temp is left for the caller.
    #[error("read-back: size {size}, crc32 {crc32:08x}")]
    Mismatch { size: u64, crc32: u32 },
    /// A READ came back shorter than asked without reaching the end, so the requests
    /// after it read the wrong ranges. The server allows it; no server we know does
    /// it. The temp is closed and whole: the caller reads it back again its own way.
    #[error("a READ of the read-back came back short")]
    ShortRead { fsync: Fsync },
    /// Not sent: an earlier file's WRITE or CLOSE was refused (a full disk, say), so
    /// the inbox, not this file, is in question. Its empty temp is closed and removed.
    #[error("not sent: {0}")]
    Skipped(String),
}

/// A request of a file whose answer is still to be consumed.
#[derive(Clone, Copy, Debug)]
enum Op {
    Write,
    Fsync,
    Read {
        len: u32,
    },
    Close,
    /// After a failed source: the temp goes. Its answer changes nothing.
    Remove,
}

/// One file's progress.
struct Slot {
    open: u32,
    handle: Option<Vec<u8>>,
    /// Sent, answer not consumed yet, in the order they were sent.
    ops: VecDeque<(u32, Op)>,
    back: crc32fast::Hasher,
    back_len: u64,
    /// A READ answered with the end of the file or no data: the file is shorter.
    back_end: bool,
    fsync: Fsync,
    /// Its CLOSE was answered: every answer of this file is in.
    closed: bool,
    error: Option<PutError>,
}

impl Slot {
    fn new(open: u32) -> Slot {
        Slot {
            open,
            handle: None,
            ops: VecDeque::new(),
            back: crc32fast::Hasher::new(),
            back_len: 0,
            back_end: false,
            fsync: Fsync::NotSent,
            closed: false,
            error: None,
        }
    }

    fn fail(&mut self, e: PutError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// A refused WRITE or CLOSE: the inbox's trouble (a full disk), not the file's.
    fn inbox_refused(&self) -> Option<String> {
        match &self.error {
            Some(
                e @ PutError::Status {
                    request: "WRITE" | "CLOSE",
                    ..
                },
            ) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// The batch's state: the slots, and the READ bytes asked for and not yet consumed.
struct Batch {
    slots: Vec<Slot>,
    reads_held: u64,
}

/// Local reads in pieces of this size.
const CHUNK: usize = 128 * 1024;

/// Puts every file of `puts` through `c`; one result per file, in order. `fsync`:
/// send `fsync@openssh.com` after each file's writes.
pub fn put_many<C: Read + Write>(
    c: &mut Client<C>,
    puts: &mut [Put<'_>],
    fsync: bool,
) -> Vec<Result<Putted, PutError>> {
    let mut b = Batch {
        slots: Vec::with_capacity(puts.len()),
        reads_held: 0,
    };
    if let Err(e) = run(c, puts, fsync, &mut b) {
        let why = e.to_string();
        // Files whose OPEN never went out.
        b.slots.resize_with(puts.len(), || Slot::new(0));
        for s in &mut b.slots {
            if !s.closed {
                s.fail(PutError::Session(why.clone()));
            }
        }
    }
    b.slots
        .into_iter()
        .zip(puts.iter())
        .map(|(s, p)| {
            if let Some(e) = s.error {
                return Err(e);
            }
            debug_assert!(
                s.closed,
                "every opened file is closed before the batch ends"
            );
            let got = (s.back_len, s.back.finalize());
            if got != (p.size, p.crc32) {
                return Err(PutError::Mismatch {
                    size: got.0,
                    crc32: got.1,
                });
            }
            Ok(Putted { fsync: s.fsync })
        })
        .collect()
}

fn run<C: Read + Write>(
    c: &mut Client<C>,
    puts: &mut [Put<'_>],
    fsync: bool,
    b: &mut Batch,
) -> Result<(), ClientError> {
    let flags = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC;
    for p in puts.iter() {
        c.room(0, WRITE_WINDOW)?;
        let open = c.send(&Request::Open {
            path: p.path,
            flags,
            attrs: Attrs::NEW_FILE,
        })?;
        b.slots.push(Slot::new(open));
    }
    c.write_out()?;

    let mut buf = vec![0u8; CHUNK];
    for (i, p) in puts.iter_mut().enumerate() {
        let open = b.slots[i].open;
        let answer = c.wait(open)?;
        consume(c, b);
        // After a refused WRITE or CLOSE the rest are only closed (see the module).
        let refused = b.slots[..i].iter().find_map(Slot::inbox_refused);
        match answer {
            Response::Handle(h) if refused.is_some() => {
                b.slots[i].fail(PutError::Skipped(refused.unwrap_or_default()));
                send(c, b, i, &Request::Close { handle: &h }, Op::Close)?;
                send(c, b, i, &Request::Remove { path: p.path }, Op::Remove)?;
                continue;
            }
            Response::Handle(h) => b.slots[i].handle = Some(h),
            Response::Status(status) => {
                b.slots[i].fail(PutError::Status {
                    request: "OPEN",
                    status,
                });
                continue;
            }
            _ => {
                b.slots[i].fail(PutError::Unexpected { request: "OPEN" });
                continue;
            }
        }
        send_file(c, b, i, p, fsync, &mut buf)?;
        // Whatever has come meanwhile is consumed, so the next file's writes find
        // the answers of this one's already taken.
        consume(c, b);
    }
    c.write_out()?;
    // What the last waits brought in first (a refused OPEN skips the consume above):
    // the loop below must only wait for requests still in flight.
    consume(c, b);
    while b.slots.iter().any(|s| !s.ops.is_empty()) {
        c.wait_any()?;
        consume(c, b);
    }
    Ok(())
}

/// Sends file `i`'s WRITEs from its source, then its FSYNC, READs and CLOSE.
fn send_file<C: Read + Write>(
    c: &mut Client<C>,
    b: &mut Batch,
    i: usize,
    p: &mut Put<'_>,
    fsync: bool,
    buf: &mut [u8],
) -> Result<(), ClientError> {
    let handle = b.slots[i].handle.clone().expect("opened");
    // Answers the wait for this file's OPEN brought in are taken first, so the waits
    // below only ever wait for requests still in flight.
    consume(c, b);
    let max_write = c.bounds().max_write as usize;
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    let source_error = loop {
        let n = match p.src.read(buf) {
            Ok(0) => break None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(PutError::Source(e)),
        };
        hasher.update(&buf[..n]);
        for piece in buf[..n].chunks(max_write) {
            while !c.has_room(piece.len() as u64, WRITE_WINDOW) {
                c.wait_any()?;
                consume(c, b);
            }
            if b.slots[i].error.is_some() {
                // A WRITE was refused: nothing more of this file is worth sending,
                // and its part may be what fills the disk (never renamed: it goes).
                send(c, b, i, &Request::Close { handle: &handle }, Op::Close)?;
                return send(c, b, i, &Request::Remove { path: p.path }, Op::Remove);
            }
            let id = c.send(&Request::Write {
                handle: &handle,
                offset: size,
                data: piece,
            })?;
            b.slots[i].ops.push_back((id, Op::Write));
            size += piece.len() as u64;
        }
    };
    let crc32 = hasher.finalize();
    let source_error = source_error.or_else(|| {
        ((size, crc32) != (p.size, p.crc32)).then_some(PutError::SourceChanged { size, crc32 })
    });
    if let Some(e) = source_error {
        // Nothing of it may be renamed: the temp goes at once.
        b.slots[i].fail(e);
        send(c, b, i, &Request::Close { handle: &handle }, Op::Close)?;
        send(c, b, i, &Request::Remove { path: p.path }, Op::Remove)?;
        return Ok(());
    }
    if fsync {
        send(c, b, i, &Request::Fsync { handle: &handle }, Op::Fsync)?;
    }
    // Exactly `size` bytes: the file was created empty under a name of this attempt's
    // alone, so asking past its end would only cost an answer.
    let max_read = c.bounds().max_read;
    let mut offset = 0u64;
    while offset < size {
        let len = max_read.min((size - offset).min(u64::from(u32::MAX)) as u32);
        while b.reads_held > 0 && b.reads_held + u64::from(len) > READ_WINDOW {
            c.wait_any()?;
            consume(c, b);
        }
        while !c.has_room(u64::from(len), READ_WINDOW) {
            c.wait_any()?;
            consume(c, b);
        }
        if b.slots[i].error.is_some() {
            break;
        }
        let id = c.send(&Request::Read {
            handle: &handle,
            offset,
            len,
        })?;
        b.slots[i].ops.push_back((id, Op::Read { len }));
        b.reads_held += u64::from(len);
        offset += u64::from(len);
    }
    send(c, b, i, &Request::Close { handle: &handle }, Op::Close)
}

/// Sends a request of file `i` whose answer carries no data.
fn send<C: Read + Write>(
    c: &mut Client<C>,
    b: &mut Batch,
    i: usize,
    req: &Request<'_>,
    op: Op,
) -> Result<(), ClientError> {
    while !c.has_room(0, WRITE_WINDOW) {
        c.wait_any()?;
        consume(c, b);
    }
    let id = c.send(req)?;
    b.slots[i].ops.push_back((id, op));
    Ok(())
}

/// Takes every answer that has come and is next in its file's order.
fn consume<C: Read + Write>(c: &mut Client<C>, b: &mut Batch) {
    for s in &mut b.slots {
        while let Some(&(id, op)) = s.ops.front() {
            let Some(r) = c.take(id) else { break };
            s.ops.pop_front();
            if let Op::Read { len } = op {
                b.reads_held -= u64::from(len);
            }
            apply(s, op, r);
        }
    }
}

fn apply(s: &mut Slot, op: Op, r: Response) {
    let status_ok = |request: &'static str, r: Response| match r {
        Response::Status(st) if st.code == StatusCode::Ok => Ok(()),
        Response::Status(status) => Err(PutError::Status { request, status }),
        _ => Err(PutError::Unexpected { request }),
    };
    match op {
        Op::Write => {
            if let Err(e) = status_ok("WRITE", r) {
                s.fail(e);
            }
        }
        Op::Close => {
            s.closed = true;
            // A CLOSE that fails is a write that failed (a full disk on close): it
            // says more than a failed read-back, as one file at a time reports it.
            if let Err(e) = status_ok("CLOSE", r) {
                if matches!(
                    s.error,
                    Some(
                        PutError::ShortRead { .. }
                            | PutError::Status {
                                request: "READ",
                                ..
                            }
                    )
                ) {
                    s.error = None;
                }
                s.fail(e);
            }
        }
        Op::Remove => {}
        Op::Fsync => match r {
            Response::Status(st) if st.code == StatusCode::Ok => s.fsync = Fsync::Ok,
            Response::Status(st)
                if matches!(
                    st.code,
                    StatusCode::NoConnection | StatusCode::ConnectionLost
                ) =>
            {
                s.fail(PutError::Status {
                    request: "FSYNC",
                    status: st,
                })
            }
            // Only OK means durable; any other status means "no fsync here".
            Response::Status(st) => s.fsync = Fsync::Refused(st),
            _ => s.fail(PutError::Unexpected { request: "FSYNC" }),
        },
        Op::Read { len } => match r {
            // Past a short answer or the end, the later READs are not what they
            // seem: their bytes are not counted.
            _ if s.back_end || matches!(s.error, Some(PutError::ShortRead { .. })) => {}
            Response::Data(d) if !d.is_empty() => {
                if (d.len() as u64) < u64::from(len) {
                    // The FSYNC's answer came before (one handle, in order).
                    let fsync = s.fsync.clone();
                    s.fail(PutError::ShortRead { fsync });
                } else {
                    s.back.update(&d);
                    s.back_len += d.len() as u64;
                }
            }
            // The end, or zero bytes of DATA (read as the end): the file is shorter
            // than what we wrote, and fails its comparison.
            Response::Data(_) => s.back_end = true,
            Response::Status(st) if st.code == StatusCode::Eof => s.back_end = true,
            Response::Status(status) => s.fail(PutError::Status {
                request: "READ",
                status,
            }),
            _ => s.fail(PutError::Unexpected { request: "READ" }),
        },
    }
}
