//! The client against a fake server in memory: a channel whose writes are parsed as
//! requests and answered at once, whose reads hand the answers back in small pieces,
//! and which "times out" when the client waits with nothing to read (a stall).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use super::client::{Client, ClientError, READ_WINDOW, WRITE_WINDOW};
use super::file::{File, FileError};
use super::reply::{Limits, ReplyBody, ServerPacket, ServerVersion, StatusCode};
use super::request::{OpenFlags, Request};
use super::testing::{encode_packet, framed, limits_data, reply, status};
use super::wire::fxp;
use super::{Attrs, Response};

#[derive(Default)]
pub(super) struct Fake {
    pub(super) files: HashMap<Vec<u8>, Vec<u8>>,
    pub(super) handles: HashMap<Vec<u8>, Vec<u8>>,
    pub(super) input: Vec<u8>,
    /// Answers not yet read, each with the WRITE and READ bytes its request held in
    /// flight.
    pub(super) ready: VecDeque<(Vec<u8>, u64, u64)>,
    /// Bytes of the front answer already read.
    pub(super) front_read: usize,
    /// READs answer at most this much.
    pub(super) short: Option<usize>,
    /// Each batch of answers comes back in reverse order.
    pub(super) reverse: bool,
    /// WRITEs at or past this offset fail with FAILURE.
    pub(super) fail_write_at: Option<u64>,
    /// After this many requests, nothing more is answered.
    pub(super) stall_after: Option<usize>,
    pub(super) fsync: bool,
    pub(super) requests: usize,
    pub(super) reads: usize,
    pub(super) max_write_in_flight: u64,
    pub(super) max_read_in_flight: u64,
    /// WRITEs to this path fail with FAILURE.
    pub(super) fail_write_path: Option<Vec<u8>>,
    /// OPENs of this path are refused with PERMISSION_DENIED.
    pub(super) refuse_open: Option<Vec<u8>>,
    /// fsync@openssh.com is answered with this status instead of OK.
    pub(super) fsync_status: Option<StatusCode>,
    /// READ answers have their first byte flipped.
    pub(super) corrupt_reads: bool,
    /// Round trips: `Some` holds every answer back until the client waits with
    /// nothing left to read, then hands all of them over at once and counts one.
    pub(super) rounds: Option<usize>,
    /// Answers written meanwhile, in `rounds` mode.
    pub(super) held: Vec<(Vec<u8>, u64, u64)>,
    /// Requests by kind, in the order they came.
    pub(super) kinds: Vec<u8>,
    /// The refused OPEN of `refuse_open` is answered only after the next batch of
    /// requests (a server may answer in any order).
    pub(super) late_refusal: bool,
    /// Late answers waiting for the next batch.
    pub(super) stash: Vec<(Vec<u8>, u64, u64)>,
}

fn take_u32(b: &mut &[u8]) -> u32 {
    let (h, t) = b.split_at(4);
    *b = t;
    u32::from_be_bytes(h.try_into().unwrap())
}

fn take_u64(b: &mut &[u8]) -> u64 {
    (u64::from(take_u32(b)) << 32) | u64::from(take_u32(b))
}

fn take_str(b: &mut &[u8]) -> Vec<u8> {
    let n = take_u32(b) as usize;
    let (h, t) = b.split_at(n);
    *b = t;
    h.to_vec()
}

impl Fake {
    fn answer(&mut self, packet: &[u8]) -> Option<(Vec<u8>, u64, u64)> {
        let (kind, mut b) = (packet[0], &packet[1..]);
        if kind == fxp::INIT {
            let mut extensions = vec![("limits@openssh.com".into(), b"1".to_vec())];
            if self.fsync {
                extensions.push(("fsync@openssh.com".into(), b"1".to_vec()));
            }
            let v = ServerPacket::Version(ServerVersion {
                version: 3,
                extensions,
            });
            return Some((framed(&encode_packet(&v)), 0, 0));
        }
        self.requests += 1;
        if self.stall_after.is_some_and(|n| self.requests > n) {
            return None;
        }
        self.kinds.push(kind);
        let id = take_u32(&mut b);
        let ok = || status(StatusCode::Ok);
        let (body, w, r) = match kind {
            fxp::OPEN => {
                let path = take_str(&mut b);
                let flags = take_u32(&mut b);
                if self.refuse_open.as_ref() == Some(&path) {
                    if self.late_refusal {
                        let a = (self.frame(id, status(StatusCode::PermissionDenied)), 0, 0);
                        self.stash.push(a);
                        return None;
                    }
                    return Some((self.frame(id, status(StatusCode::PermissionDenied)), 0, 0));
                }
                let h = format!("h{}", self.handles.len()).into_bytes();
                if flags & OpenFlags::TRUNC.0 != 0 {
                    self.files.insert(path.clone(), Vec::new());
                }
                if !self.files.contains_key(&path) {
                    return Some((self.frame(id, status(StatusCode::NoSuchFile)), 0, 0));
                }
                self.handles.insert(h.clone(), path);
                (ReplyBody::Handle(h), 0, 0)
            }
            fxp::WRITE => {
                let h = take_str(&mut b);
                let off = take_u64(&mut b);
                let data = take_str(&mut b);
                let n = data.len() as u64;
                if self.fail_write_at.is_some_and(|at| off >= at)
                    || self.fail_write_path.as_ref() == Some(&self.handles[&h])
                {
                    (status(StatusCode::Failure), n, 0)
                } else {
                    let f = self.files.get_mut(&self.handles[&h]).unwrap();
                    let end = off as usize + data.len();
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[off as usize..end].copy_from_slice(&data);
                    (ok(), n, 0)
                }
            }
            fxp::READ => {
                self.reads += 1;
                let h = take_str(&mut b);
                let off = take_u64(&mut b) as usize;
                let len = take_u32(&mut b) as usize;
                let f = &self.files[&self.handles[&h]];
                let len = self.short.map_or(len, |s| s.min(len));
                if off >= f.len() {
                    (status(StatusCode::Eof), 0, len as u64)
                } else {
                    let mut d = f[off..f.len().min(off + len)].to_vec();
                    if self.corrupt_reads {
                        d[0] ^= 0xff;
                    }
                    (ReplyBody::Data(d), 0, len as u64)
                }
            }
            fxp::CLOSE => (ok(), 0, 0),
            fxp::REMOVE => {
                let path = take_str(&mut b);
                match self.files.remove(&path) {
                    Some(_) => (ok(), 0, 0),
                    None => (status(StatusCode::NoSuchFile), 0, 0),
                }
            }
            fxp::EXTENDED => match take_str(&mut b).as_slice() {
                b"limits@openssh.com" => {
                    let l = Limits {
                        max_packet_length: 256 * 1024,
                        max_read_length: 32 * 1024,
                        max_write_length: 32 * 1024,
                        max_open_handles: 0,
                    };
                    (ReplyBody::ExtendedReply(limits_data(&l)), 0, 0)
                }
                b"fsync@openssh.com" => (status(self.fsync_status.unwrap_or(StatusCode::Ok)), 0, 0),
                _ => (ok(), 0, 0),
            },
            _ => (status(StatusCode::OpUnsupported), 0, 0),
        };
        Some((self.frame(id, body), w, r))
    }

    fn frame(&self, id: u32, body: ReplyBody) -> Vec<u8> {
        framed(&encode_packet(&ServerPacket::Reply(reply(id, body))))
    }
}

/// The channel side of the fake: `Arc` so a test can look at the server afterwards.
#[derive(Clone, Default)]
pub(super) struct Chan(pub(super) Arc<Mutex<Fake>>);

impl Write for Chan {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut f = self.0.lock().unwrap();
        f.input.extend_from_slice(buf);
        let earlier = std::mem::take(&mut f.stash);
        let mut batch = Vec::new();
        loop {
            if f.input.len() < 4 {
                break;
            }
            let n = u32::from_be_bytes(f.input[..4].try_into().unwrap()) as usize;
            if f.input.len() < 4 + n {
                break;
            }
            let packet: Vec<u8> = f.input.drain(..4 + n).skip(4).collect();
            if let Some(a) = f.answer(&packet) {
                batch.push(a);
            }
        }
        if f.reverse {
            batch.reverse();
        }
        if !batch.is_empty() {
            batch.extend(earlier);
        } else {
            let mut e = earlier;
            e.extend(std::mem::take(&mut f.stash));
            f.stash = e;
        }
        if f.rounds.is_some() {
            f.held.extend(batch);
        } else {
            f.ready.extend(batch);
        }
        // What the client holds in flight: every request answered but not yet read.
        let (w, r) = f
            .ready
            .iter()
            .chain(&f.held)
            .fold((0, 0), |(w, r), a| (w + a.1, r + a.2));
        f.max_write_in_flight = f.max_write_in_flight.max(w);
        f.max_read_in_flight = f.max_read_in_flight.max(r);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        panic!("flush() on an ssh2 channel discards what the server sent");
    }
}

impl Read for Chan {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut f = self.0.lock().unwrap();
        if f.ready.is_empty() && !f.held.is_empty() {
            // The client waits: everything it sent comes back after one round trip.
            let held = std::mem::take(&mut f.held);
            f.ready.extend(held);
            *f.rounds.as_mut().expect("held only in rounds mode") += 1;
        }
        let Some((front, _, _)) = f.ready.front() else {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        };
        // Small pieces: packets arrive cut anywhere.
        let (at, len) = (f.front_read, front.len());
        let n = buf.len().min(1000).min(len - at);
        buf[..n].copy_from_slice(&front[at..at + n]);
        f.front_read += n;
        if f.front_read == len {
            f.ready.pop_front();
            f.front_read = 0;
        }
        Ok(n)
    }
}

pub(super) fn start(fake: Fake) -> (Chan, Arc<Mutex<Client<Chan>>>) {
    let chan = Chan(Arc::new(Mutex::new(fake)));
    let client = Client::start(chan.clone()).expect("handshake");
    (chan, Arc::new(Mutex::new(client)))
}

fn create(client: &Arc<Mutex<Client<Chan>>>, path: &str) -> File<Chan> {
    let r = client
        .lock()
        .unwrap()
        .call(&Request::Open {
            path: path.as_bytes(),
            flags: OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREAT | OpenFlags::TRUNC,
            attrs: Attrs::default(),
        })
        .unwrap();
    let Response::Handle(h) = r else {
        panic!("{r:?}")
    };
    File::new(client.clone(), h, true)
}

pub(super) fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn a_file_written_in_many_writes_reads_back_whole_with_replies_in_any_order() {
    let (chan, client) = start(Fake {
        reverse: true,
        fsync: true,
        ..Fake::default()
    });
    assert!(client.lock().unwrap().fsync_offered());
    let data = body(3 * 1024 * 1024 + 123);
    let mut f = create(&client, "/in/a.part");
    for piece in data.chunks(128 * 1024) {
        f.write_all(piece).unwrap();
    }
    f.flush().unwrap();
    assert_eq!(chan.0.lock().unwrap().files[&b"/in/a.part".to_vec()], data);
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    f.close(&mut client.lock().unwrap()).unwrap();
    let fake = chan.0.lock().unwrap();
    assert!(
        fake.max_write_in_flight <= WRITE_WINDOW,
        "{}",
        fake.max_write_in_flight
    );
    assert!(
        fake.max_write_in_flight > WRITE_WINDOW / 2,
        "writes are kept in flight"
    );
    assert!(
        fake.max_read_in_flight <= READ_WINDOW,
        "{}",
        fake.max_read_in_flight
    );
    assert!(
        fake.max_read_in_flight > READ_WINDOW / 2,
        "reads are sent ahead"
    );
}

#[test]
fn short_reads_are_asked_again_and_the_end_of_file_ends_the_read() {
    let (chan, client) = start(Fake {
        short: Some(1000),
        ..Fake::default()
    });
    assert!(!client.lock().unwrap().fsync_offered());
    let data = body(100_000);
    chan.0
        .lock()
        .unwrap()
        .files
        .insert(b"/in/b".to_vec(), data.clone());
    let r = client
        .lock()
        .unwrap()
        .call(&Request::Open {
            path: b"/in/b",
            flags: OpenFlags::READ,
            attrs: Attrs::default(),
        })
        .unwrap();
    let Response::Handle(h) = r else {
        panic!("{r:?}")
    };
    let mut f = File::new(client.clone(), h, false);
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(back, data);
    // Dropped unclosed: the CLOSE goes out; replies to READs sent past the end are
    // dropped as they come, and the session goes on.
    drop(f);
    let r = client.lock().unwrap().call(&Request::Stat { path: b"/x" });
    assert!(matches!(r, Ok(Response::Status(_))), "{r:?}");
}

#[test]
fn a_failed_write_is_told_at_the_flush_and_again_after() {
    let (_chan, client) = start(Fake {
        fail_write_at: Some(64 * 1024),
        ..Fake::default()
    });
    let mut f = create(&client, "/in/c.part");
    let mut failed = None;
    for piece in body(1024 * 1024).chunks(100_000) {
        if let Err(e) = f.write_all(piece) {
            failed = Some(e);
            break;
        }
    }
    let e = match failed {
        Some(e) => e,
        None => f.flush().unwrap_err(),
    };
    assert_eq!(e.kind(), io::ErrorKind::Other, "{e}");
    assert!(e.to_string().contains("failure"), "{e}");
    let e = f.close(&mut client.lock().unwrap()).unwrap_err();
    assert!(matches!(e, FileError::Status { .. }), "{e}");
}

#[test]
fn a_stall_costs_one_timeout_and_leaves_the_session_broken() {
    let (_chan, client) = start(Fake {
        // limits@openssh.com and the OPEN are answered; the WRITE is not.
        stall_after: Some(2),
        ..Fake::default()
    });
    let mut f = create(&client, "/in/d.part");
    f.write_all(&body(10_000)).unwrap();
    let e = f.flush().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    let e = client
        .lock()
        .unwrap()
        .call(&Request::Stat { path: b"/x" })
        .unwrap_err();
    assert!(matches!(e, ClientError::Broken(_)), "{e}");
    // Dropping the file on a broken session sends nothing and does not block.
    drop(f);
}
