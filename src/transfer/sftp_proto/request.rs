//! Requests we send, encoded into framed packets (`uint32 length`, `byte type`,
//! `uint32 id`, fields). Only what the delivery protocol needs: no SETSTAT, MKDIR,
//! SYMLINK. RENAME is the plain v3 one, never `posix-rename@openssh.com`: posix rename
//! replaces an existing target, and a replaced target could be another order.
//!
//! Paths, handles and data are borrowed bytes: file names on the wire are bytes, and a
//! WRITE's payload goes straight from the caller's buffer into the packet.

use super::attrs::Attrs;
use super::wire::{ext, fxp, put_bytes, put_u32, put_u64, CodecError, VERSION};

/// `pflags` of OPEN. A bit set, combined with `|`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenFlags(pub u32);

impl OpenFlags {
    pub const READ: OpenFlags = OpenFlags(0x01);
    pub const WRITE: OpenFlags = OpenFlags(0x02);
    pub const APPEND: OpenFlags = OpenFlags(0x04);
    pub const CREAT: OpenFlags = OpenFlags(0x08);
    /// The draft says CREAT MUST come with it.
    pub const TRUNC: OpenFlags = OpenFlags(0x10);
    /// Fail if the name exists; the draft says CREAT MUST come with it. OpenSSH maps
    /// it to `O_EXCL`, which also refuses a planted link.
    pub const EXCL: OpenFlags = OpenFlags(0x20);

    pub fn contains(self, other: OpenFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for OpenFlags {
    type Output = OpenFlags;
    fn bitor(self, rhs: OpenFlags) -> OpenFlags {
        OpenFlags(self.0 | rhs.0)
    }
}

/// One request. The id is not part of it: the matcher gives each one when it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Open {
        path: &'a [u8],
        flags: OpenFlags,
        attrs: Attrs,
    },
    Close {
        handle: &'a [u8],
    },
    Read {
        handle: &'a [u8],
        offset: u64,
        len: u32,
    },
    Write {
        handle: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    Lstat {
        path: &'a [u8],
    },
    Stat {
        path: &'a [u8],
    },
    Fstat {
        handle: &'a [u8],
    },
    Opendir {
        path: &'a [u8],
    },
    Readdir {
        handle: &'a [u8],
    },
    Remove {
        path: &'a [u8],
    },
    /// v3 RENAME: OpenSSH and Win32-OpenSSH refuse an existing `to` (a hard link then
    /// unlink); some servers replace it, which is why the transport probes first.
    Rename {
        from: &'a [u8],
        to: &'a [u8],
    },
    /// EXTENDED `fsync@openssh.com`. Win32-OpenSSH answers OK even when the flush
    /// failed: no proof, the read-back is.
    Fsync {
        handle: &'a [u8],
    },
    /// EXTENDED `limits@openssh.com` (OpenSSH 8.6 and later); the reply is
    /// [`Limits`](super::reply::Limits).
    Limits,
}

/// What a request is, without its data: what the matcher keeps per outstanding id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    Open,
    Close,
    Read,
    Write,
    Lstat,
    Stat,
    Fstat,
    Opendir,
    Readdir,
    Remove,
    Rename,
    Fsync,
    Limits,
}

impl RequestKind {
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Open => "OPEN",
            RequestKind::Close => "CLOSE",
            RequestKind::Read => "READ",
            RequestKind::Write => "WRITE",
            RequestKind::Lstat => "LSTAT",
            RequestKind::Stat => "STAT",
            RequestKind::Fstat => "FSTAT",
            RequestKind::Opendir => "OPENDIR",
            RequestKind::Readdir => "READDIR",
            RequestKind::Remove => "REMOVE",
            RequestKind::Rename => "RENAME",
            RequestKind::Fsync => "fsync@openssh.com",
            RequestKind::Limits => "limits@openssh.com",
        }
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Request<'_> {
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Open { .. } => RequestKind::Open,
            Request::Close { .. } => RequestKind::Close,
            Request::Read { .. } => RequestKind::Read,
            Request::Write { .. } => RequestKind::Write,
            Request::Lstat { .. } => RequestKind::Lstat,
            Request::Stat { .. } => RequestKind::Stat,
            Request::Fstat { .. } => RequestKind::Fstat,
            Request::Opendir { .. } => RequestKind::Opendir,
            Request::Readdir { .. } => RequestKind::Readdir,
            Request::Remove { .. } => RequestKind::Remove,
            Request::Rename { .. } => RequestKind::Rename,
            Request::Fsync { .. } => RequestKind::Fsync,
            Request::Limits => RequestKind::Limits,
        }
    }

    /// Appends this request with id `id`, framed, to `out`. On error `out` is as it
    /// was, so a batch of packets in one buffer is never left with half of one.
    pub fn encode(&self, id: u32, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = begin(out);
        match self {
            Request::Open { path, flags, attrs } => {
                head(out, fxp::OPEN, id);
                put_bytes(out, path);
                put_u32(out, flags.0);
                attrs.encode(out);
            }
            Request::Close { handle } => path_like(out, fxp::CLOSE, id, handle),
            Request::Read {
                handle,
                offset,
                len,
            } => {
                head(out, fxp::READ, id);
                put_bytes(out, handle);
                put_u64(out, *offset);
                put_u32(out, *len);
            }
            Request::Write {
                handle,
                offset,
                data,
            } => {
                head(out, fxp::WRITE, id);
                put_bytes(out, handle);
                put_u64(out, *offset);
                put_bytes(out, data);
            }
            Request::Lstat { path } => path_like(out, fxp::LSTAT, id, path),
            Request::Stat { path } => path_like(out, fxp::STAT, id, path),
            Request::Fstat { handle } => path_like(out, fxp::FSTAT, id, handle),
            Request::Opendir { path } => path_like(out, fxp::OPENDIR, id, path),
            Request::Readdir { handle } => path_like(out, fxp::READDIR, id, handle),
            Request::Remove { path } => path_like(out, fxp::REMOVE, id, path),
            Request::Rename { from, to } => {
                head(out, fxp::RENAME, id);
                put_bytes(out, from);
                put_bytes(out, to);
            }
            Request::Fsync { handle } => {
                head(out, fxp::EXTENDED, id);
                put_bytes(out, ext::FSYNC.as_bytes());
                put_bytes(out, handle);
            }
            Request::Limits => {
                head(out, fxp::EXTENDED, id);
                put_bytes(out, ext::LIMITS.as_bytes());
            }
        }
        frame(out, start, self.kind().name())
    }
}

/// Appends INIT (version 3, no extensions of ours). It has no id: the server answers
/// it with VERSION, before any other packet.
pub fn encode_init(out: &mut Vec<u8>) {
    let start = begin(out);
    out.push(fxp::INIT);
    put_u32(out, VERSION);
    frame(out, start, "INIT").expect("an INIT packet is 9 bytes");
}

/// Reserves the length prefix; returns where the packet starts.
fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    put_u32(out, 0);
    start
}

fn head(out: &mut Vec<u8>, kind: u8, id: u32) {
    out.push(kind);
    put_u32(out, id);
}

/// The many requests that are an id and one string.
fn path_like(out: &mut Vec<u8>, kind: u8, id: u32, s: &[u8]) {
    head(out, kind, id);
    put_bytes(out, s);
}

/// Writes the length prefix of the packet that starts at `start`.
fn frame(out: &mut Vec<u8>, start: usize, packet: &'static str) -> Result<(), CodecError> {
    let len = out.len() - start - 4;
    match u32::try_from(len) {
        Ok(n) => {
            out[start..start + 4].copy_from_slice(&n.to_be_bytes());
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(CodecError::RequestTooLarge { packet, len })
        }
    }
}
