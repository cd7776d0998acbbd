//! Packets the server sends, parsed from one frame's bytes (type byte first, length
//! prefix already taken off by [`FrameDecoder`](super::frame::FrameDecoder)). Parsing
//! knows nothing of what was asked: which reply fits which request is the matcher's
//! business, and so is reading an EXTENDED_REPLY, whose layout depends on the request.

use super::attrs::Attrs;
use super::wire::{fxp, CodecError, Reader};

/// A packet from the server: VERSION once, at the start; replies after that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerPacket {
    Version(ServerVersion),
    Reply(Reply),
}

/// The answer to INIT: the server's protocol version and the extensions it announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerVersion {
    pub version: u32,
    /// (name, data) in the order announced. For OpenSSH's extensions the data is the
    /// extension's own version as ASCII (`"1"`).
    pub extensions: Vec<(String, Vec<u8>)>,
}

impl ServerVersion {
    /// Whether `name` is announced with data `version`. OpenSSH's PROTOCOL says a
    /// client MUST check the version before using an extension: a version we do not
    /// know may mean another request layout.
    pub fn supports(&self, name: &str, version: &[u8]) -> bool {
        self.extensions
            .iter()
            .any(|(n, v)| n == name && v.as_slice() == version)
    }
}

/// A reply to the request with this id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub id: u32,
    pub body: ReplyBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyBody {
    Status(Status),
    Handle(Vec<u8>),
    Data(Vec<u8>),
    Name(Vec<NameEntry>),
    Attrs(Attrs),
    /// Request-specific bytes after the id; see [`Limits::parse`].
    ExtendedReply(Vec<u8>),
}

/// The type of a reply, for error messages and the matcher's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    Version,
    Status,
    Handle,
    Data,
    Name,
    Attrs,
    ExtendedReply,
}

impl std::fmt::Display for ReplyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplyKind::Version => "VERSION",
            ReplyKind::Status => "STATUS",
            ReplyKind::Handle => "HANDLE",
            ReplyKind::Data => "DATA",
            ReplyKind::Name => "NAME",
            ReplyKind::Attrs => "ATTRS",
            ReplyKind::ExtendedReply => "EXTENDED_REPLY",
        })
    }
}

impl ReplyBody {
    pub fn kind(&self) -> ReplyKind {
        match self {
            ReplyBody::Status(_) => ReplyKind::Status,
            ReplyBody::Handle(_) => ReplyKind::Handle,
            ReplyBody::Data(_) => ReplyKind::Data,
            ReplyBody::Name(_) => ReplyKind::Name,
            ReplyBody::Attrs(_) => ReplyKind::Attrs,
            ReplyBody::ExtendedReply(_) => ReplyKind::ExtendedReply,
        }
    }
}

/// A STATUS reply: how a request ended, when it returns nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: StatusCode,
    /// For people; may be empty (see [`ServerPacket::parse`]).
    pub message: String,
    pub language: String,
}

/// v3 status codes. Servers send others: ProFTPD answers a rename onto an existing
/// name with 11 (`FILE_ALREADY_EXISTS` of later drafts). Those stay numbers, so the
/// layer above can decide what 11 means instead of the codec calling it an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusCode {
    Ok,
    Eof,
    NoSuchFile,
    PermissionDenied,
    Failure,
    BadMessage,
    NoConnection,
    ConnectionLost,
    OpUnsupported,
    Other(u32),
}

impl StatusCode {
    pub fn from_u32(n: u32) -> StatusCode {
        match n {
            0 => StatusCode::Ok,
            1 => StatusCode::Eof,
            2 => StatusCode::NoSuchFile,
            3 => StatusCode::PermissionDenied,
            4 => StatusCode::Failure,
            5 => StatusCode::BadMessage,
            6 => StatusCode::NoConnection,
            7 => StatusCode::ConnectionLost,
            8 => StatusCode::OpUnsupported,
            n => StatusCode::Other(n),
        }
    }

    pub fn to_u32(self) -> u32 {
        match self {
            StatusCode::Ok => 0,
            StatusCode::Eof => 1,
            StatusCode::NoSuchFile => 2,
            StatusCode::PermissionDenied => 3,
            StatusCode::Failure => 4,
            StatusCode::BadMessage => 5,
            StatusCode::NoConnection => 6,
            StatusCode::ConnectionLost => 7,
            StatusCode::OpUnsupported => 8,
            StatusCode::Other(n) => n,
        }
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            StatusCode::Ok => "ok",
            StatusCode::Eof => "end of file",
            StatusCode::NoSuchFile => "no such file",
            StatusCode::PermissionDenied => "permission denied",
            StatusCode::Failure => "failure",
            StatusCode::BadMessage => "bad message",
            StatusCode::NoConnection => "no connection",
            StatusCode::ConnectionLost => "connection lost",
            StatusCode::OpUnsupported => "operation unsupported",
            StatusCode::Other(11) => "file already exists (status 11)",
            StatusCode::Other(n) => return write!(f, "status {n}"),
        };
        f.write_str(text)
    }
}

/// One entry of a NAME reply. `filename` is raw bytes: a name on the server need not
/// be UTF-8, and we must be able to name it back (to remove it) byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameEntry {
    pub filename: Vec<u8>,
    /// `ls -l`-style line, for display only; its format is not specified in v3.
    pub longname: Vec<u8>,
    pub attrs: Attrs,
}

/// The `limits@openssh.com` reply. 0 in a field means the server sets no limit of its
/// own (the operating system's still apply).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_packet_length: u64,
    pub max_read_length: u64,
    pub max_write_length: u64,
    pub max_open_handles: u64,
}

impl Limits {
    /// Reads the EXTENDED_REPLY bytes after the id.
    pub fn parse(data: &[u8]) -> Result<Limits, CodecError> {
        let mut r = Reader::new(data, "limits@openssh.com reply");
        let limits = Limits {
            max_packet_length: r.u64("max-packet-length")?,
            max_read_length: r.u64("max-read-length")?,
            max_write_length: r.u64("max-write-length")?,
            max_open_handles: r.u64("max-open-handles")?,
        };
        r.finish()?;
        Ok(limits)
    }
}

impl ServerPacket {
    /// Parses one packet: `byte type` then its fields, nothing after the last one.
    ///
    /// A STATUS may end right after its code: v3 adds the message and language tag,
    /// but OpenSSH's client and libssh2 read only the code, so a server that leaves
    /// them out works with every client we would replace.
    pub fn parse(packet: &[u8]) -> Result<ServerPacket, CodecError> {
        let (&kind, rest) = packet.split_first().ok_or(CodecError::Truncated {
            packet: "sftp",
            field: "type",
        })?;
        if kind == fxp::VERSION {
            let mut r = Reader::new(rest, "VERSION");
            let version = r.u32("version")?;
            let mut extensions = Vec::new();
            while !r.is_empty() {
                let name = r.text("extension name")?;
                let data = r.bytes("extension data")?.to_vec();
                extensions.push((name, data));
            }
            return Ok(ServerPacket::Version(ServerVersion {
                version,
                extensions,
            }));
        }
        let name = match kind {
            fxp::STATUS => "STATUS",
            fxp::HANDLE => "HANDLE",
            fxp::DATA => "DATA",
            fxp::NAME => "NAME",
            fxp::ATTRS => "ATTRS",
            fxp::EXTENDED_REPLY => "EXTENDED_REPLY",
            other => return Err(CodecError::UnknownType(other)),
        };
        let mut r = Reader::new(rest, name);
        let id = r.u32("id")?;
        let body = match kind {
            fxp::STATUS => {
                let code = StatusCode::from_u32(r.u32("status code")?);
                let message = opt(&mut r, |r| r.lossy_text("message"))?;
                let language = opt(&mut r, |r| r.lossy_text("language tag"))?;
                ReplyBody::Status(Status {
                    code,
                    message,
                    language,
                })
            }
            fxp::HANDLE => ReplyBody::Handle(r.bytes("handle")?.to_vec()),
            fxp::DATA => ReplyBody::Data(r.bytes("data")?.to_vec()),
            fxp::NAME => {
                let count = r.u32("count")?;
                // Each entry takes at least 12 bytes: a count beyond what is left is
                // a lie, found before allocating anything for it.
                if count as usize > r.remaining() / 12 {
                    return Err(CodecError::Truncated {
                        packet: name,
                        field: "entries its count announces",
                    });
                }
                let mut entries = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    entries.push(NameEntry {
                        filename: r.bytes("filename")?.to_vec(),
                        longname: r.bytes("longname")?.to_vec(),
                        attrs: Attrs::decode(&mut r)?,
                    });
                }
                ReplyBody::Name(entries)
            }
            fxp::ATTRS => ReplyBody::Attrs(Attrs::decode(&mut r)?),
            _ => {
                let rest = r.bytes_to_end();
                ReplyBody::ExtendedReply(rest.to_vec())
            }
        };
        r.finish()?;
        Ok(ServerPacket::Reply(Reply { id, body }))
    }
}

/// A trailing optional field: empty when the packet ends before it.
fn opt(
    r: &mut Reader<'_>,
    read: impl FnOnce(&mut Reader<'_>) -> Result<String, CodecError>,
) -> Result<String, CodecError> {
    if r.is_empty() {
        Ok(String::new())
    } else {
        read(r)
    }
}
