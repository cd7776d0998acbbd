//! The request/reply matcher: gives each request its id, remembers what every
//! outstanding id may be answered with, and pairs replies with requests in whatever
//! order they come. Pure bookkeeping (no I/O, no ssh2): the channel loop above feeds
//! it packets and bounds what is in flight with [`Matcher::outstanding`] and
//! [`Matcher::bytes_outstanding`].
//!
//! Every refusal leaves the matcher as it was: a reply for an unknown or answered id,
//! or of a type the request cannot get, disturbs no other request. The caller still
//! treats any refused reply as a broken session (the server no longer says what we
//! think it says) and reconnects; what the journal recorded decides what happens next.

use std::collections::HashMap;

use super::attrs::Attrs;
use super::reply::{
    Limits, NameEntry, Reply, ReplyBody, ReplyKind, ServerPacket, ServerVersion, Status,
};
use super::request::{Request, RequestKind};
use super::wire::{CodecError, DEFAULT_MAX_PACKET, VERSION};

/// How big a request may be. The server may close the connection on a packet over
/// its limit (OpenSSH's server exits), so the matcher refuses to send one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Whole packet, length prefix included.
    pub max_packet: u32,
    /// Bytes a READ may ask for. Also bounds what comes back: a DATA is this plus 13
    /// bytes, which must fit the decoder's bound.
    pub max_read: u32,
    /// Bytes of data in one WRITE.
    pub max_write: u32,
}

impl Default for Bounds {
    /// Safe on any server without `limits@openssh.com`: the draft says servers SHOULD
    /// take packets of 34000 bytes, and 32 KiB reads and writes are what every client
    /// uses.
    fn default() -> Self {
        Bounds {
            max_packet: 34_000,
            max_read: 32_768,
            max_write: 32_768,
        }
    }
}

impl Bounds {
    /// What `limits@openssh.com` allows, capped at OpenSSH's own 256 KiB packet (our
    /// decoder's default bound) and with 0 ("no limit of the server's own") read as
    /// the safe default. Like OpenSSH's client, 1 KiB of a packet is left for the
    /// header of a READ's or WRITE's data, so a full-size WRITE always fits a packet.
    pub fn from_limits(l: &Limits) -> Bounds {
        let safe = Bounds::default();
        let pick = |v: u64, dflt: u32, cap: u32| match v {
            0 => dflt.min(cap),
            v => v.min(u64::from(cap)) as u32,
        };
        let max_packet = pick(l.max_packet_length, safe.max_packet, DEFAULT_MAX_PACKET);
        let data_cap = max_packet.saturating_sub(1024);
        Bounds {
            max_packet,
            max_read: pick(l.max_read_length, safe.max_read, data_cap),
            max_write: pick(l.max_write_length, safe.max_write, data_cap),
        }
    }
}

/// A reply matched to its request, with what the caller attached when sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered<T> {
    pub id: u32,
    pub request: RequestKind,
    pub tag: T,
    pub response: Response,
}

/// A reply's content, checked against the request: EXTENDED_REPLY is parsed as what
/// the request asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Status(Status),
    Handle(Vec<u8>),
    Data(Vec<u8>),
    Name(Vec<NameEntry>),
    Attrs(Attrs),
    Limits(Limits),
}

#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error("sftp {reply} reply for id {id}, which is not outstanding (never sent, or already answered)")]
    UnknownId { id: u32, reply: ReplyKind },
    #[error("sftp {request} (id {id}) answered with {reply}, which it cannot get")]
    WrongReply {
        id: u32,
        request: RequestKind,
        reply: ReplyKind,
    },
    #[error("sftp READ (id {id}) asked for {asked} bytes and got {got}")]
    DataTooLong { id: u32, asked: u32, got: usize },
    #[error("sftp {request} (id {id}): {source}")]
    BadReply {
        id: u32,
        request: RequestKind,
        source: CodecError,
    },
    #[error("sftp server answered INIT with {0}, not VERSION")]
    NotVersion(ReplyKind),
    #[error("sftp server speaks protocol version {0}; only version 3 is supported")]
    UnsupportedVersion(u32),
    #[error("sftp VERSION arrived again, after the handshake")]
    UnexpectedVersion,
    /// The caller's mistake, caught before anything was sent: nothing changed.
    #[error("sftp {request}: {what} of {len} bytes is over the bound of {max}")]
    OverBound {
        request: RequestKind,
        what: &'static str,
        len: usize,
        max: u32,
    },
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The server's answer to INIT, checked: VERSION, and version 3.
pub fn expect_version(packet: ServerPacket) -> Result<ServerVersion, MatchError> {
    match packet {
        ServerPacket::Version(v) if v.version == VERSION => Ok(v),
        ServerPacket::Version(v) => Err(MatchError::UnsupportedVersion(v.version)),
        ServerPacket::Reply(r) => Err(MatchError::NotVersion(r.body.kind())),
    }
}

#[derive(Debug)]
struct Pending<T> {
    kind: RequestKind,
    /// Data bytes this request holds in flight: a WRITE's payload, a READ's length.
    bytes: u32,
    tag: T,
}

/// Outstanding requests of one SFTP session. `T` is whatever the caller needs back
/// with the reply (which file, which offset).
#[derive(Debug)]
pub struct Matcher<T> {
    bounds: Bounds,
    next_id: u32,
    pending: HashMap<u32, Pending<T>>,
    bytes: u64,
}

impl<T> Matcher<T> {
    pub fn new(bounds: Bounds) -> Self {
        Matcher {
            bounds,
            // Like OpenSSH's client; any start would do.
            next_id: 1,
            pending: HashMap::new(),
            bytes: 0,
        }
    }

    /// Makes `id` the next one tried, to test the wrap-around without 2^32 requests.
    #[cfg(test)]
    pub(crate) fn set_next_id(&mut self, id: u32) {
        self.next_id = id;
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Requests sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Data bytes in flight: WRITE payloads not yet acknowledged plus READ lengths not
    /// yet answered (what the server holds for us, and what may come back at once).
    pub fn bytes_outstanding(&self) -> u64 {
        self.bytes
    }

    /// What is still unanswered, for a deadline's error message.
    pub fn pending(&self) -> impl Iterator<Item = (u32, RequestKind, &T)> {
        self.pending.iter().map(|(id, p)| (*id, p.kind, &p.tag))
    }

    /// Appends `req` as a packet to `out` and remembers it under a fresh id, which it
    /// returns. On error nothing was appended or remembered.
    pub fn send(
        &mut self,
        req: &Request<'_>,
        tag: T,
        out: &mut Vec<u8>,
    ) -> Result<u32, MatchError> {
        let kind = req.kind();
        let bytes = match req {
            Request::Read { len, .. } => {
                check(kind, "read length", *len as usize, self.bounds.max_read)?
            }
            Request::Write { data, .. } => {
                check(kind, "write data", data.len(), self.bounds.max_write)?
            }
            _ => 0,
        };
        let id = self.free_id();
        let start = out.len();
        req.encode(id, out)?;
        if let Err(e) = check(kind, "packet", out.len() - start, self.bounds.max_packet) {
            out.truncate(start);
            return Err(e);
        }
        self.next_id = id.wrapping_add(1);
        self.bytes += u64::from(bytes);
        self.pending.insert(id, Pending { kind, bytes, tag });
        Ok(id)
    }

    /// Pairs a packet from the server with its request; VERSION is refused (it comes
    /// once, before the matcher exists: see [`expect_version`]).
    pub fn receive_packet(&mut self, packet: ServerPacket) -> Result<Answered<T>, MatchError> {
        match packet {
            ServerPacket::Reply(r) => self.receive(r),
            ServerPacket::Version(_) => Err(MatchError::UnexpectedVersion),
        }
    }

    /// Pairs a reply with its request: the request is answered and forgotten.
    pub fn receive(&mut self, reply: Reply) -> Result<Answered<T>, MatchError> {
        let id = reply.id;
        let got = reply.body.kind();
        let Some(p) = self.pending.get(&id) else {
            return Err(MatchError::UnknownId { id, reply: got });
        };
        let request = p.kind;
        if !accepts(request, got) {
            return Err(MatchError::WrongReply {
                id,
                request,
                reply: got,
            });
        }
        let response = match reply.body {
            ReplyBody::Status(s) => Response::Status(s),
            ReplyBody::Handle(h) => Response::Handle(h),
            // OpenSSH's client treats more data than asked as fatal too: the bytes
            // would land past the range this READ stands for.
            ReplyBody::Data(d) if d.len() > p.bytes as usize => {
                return Err(MatchError::DataTooLong {
                    id,
                    asked: p.bytes,
                    got: d.len(),
                });
            }
            ReplyBody::Data(d) => Response::Data(d),
            ReplyBody::Name(n) => Response::Name(n),
            ReplyBody::Attrs(a) => Response::Attrs(a),
            ReplyBody::ExtendedReply(data) => match Limits::parse(&data) {
                Ok(l) => Response::Limits(l),
                Err(source) => {
                    return Err(MatchError::BadReply {
                        id,
                        request,
                        source,
                    })
                }
            },
        };
        let p = self.pending.remove(&id).expect("looked up above");
        self.bytes -= u64::from(p.bytes);
        Ok(Answered {
            id,
            request,
            tag: p.tag,
            response,
        })
    }

    /// The next id not in use. Ids wrap after 2^32 requests; one still outstanding
    /// from long ago is skipped, never reused.
    fn free_id(&self) -> u32 {
        let mut id = self.next_id;
        while self.pending.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        id
    }
}

fn check(
    request: RequestKind,
    what: &'static str,
    len: usize,
    max: u32,
) -> Result<u32, MatchError> {
    match u32::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(MatchError::OverBound {
            request,
            what,
            len,
            max,
        }),
    }
}

/// Which replies a request can get besides STATUS, which any request can (it is how
/// every failure is told, and how success is told where nothing else comes back).
fn accepts(request: RequestKind, reply: ReplyKind) -> bool {
    use RequestKind as Q;
    match reply {
        ReplyKind::Status => true,
        ReplyKind::Handle => matches!(request, Q::Open | Q::Opendir),
        ReplyKind::Data => request == Q::Read,
        ReplyKind::Name => request == Q::Readdir,
        ReplyKind::Attrs => matches!(request, Q::Stat | Q::Lstat | Q::Fstat),
        ReplyKind::ExtendedReply => request == Q::Limits,
        ReplyKind::Version => false,
    }
}
