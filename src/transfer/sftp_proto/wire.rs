//! The SFTP v3 wire vocabulary: packet type numbers, status codes and flag bits as
//! draft-ietf-secsh-filexfer-02 and OpenSSH's `sftp.h` define them, SSH's big-endian
//! `uint32`/`uint64`/`string` encodings, and the codec's error type. Everything else in
//! `sftp_proto` builds packets and reads them through the helpers here, so a length is
//! checked in exactly one place.

/// The protocol version we speak, and the only one we accept back.
pub const VERSION: u32 = 3;

/// The largest packet OpenSSH's client and server accept (`SFTP_MAX_MSG_LENGTH` in
/// `sftp-common.h`, counted without the length prefix). A good bound for the decoder:
/// OpenSSH never sends more, and memory per connection stays at about this much.
pub const DEFAULT_MAX_PACKET: u32 = 256 * 1024;

/// Packet types (the byte after the length).
pub mod fxp {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// Bits of an ATTRS `flags` word. v3 defines no others; their layout is unknown, so a
/// reader cannot skip them (OpenSSH ignores them too).
pub mod attr {
    pub const SIZE: u32 = 0x0000_0001;
    pub const UIDGID: u32 = 0x0000_0002;
    pub const PERMISSIONS: u32 = 0x0000_0004;
    pub const ACMODTIME: u32 = 0x0000_0008;
    pub const EXTENDED: u32 = 0x8000_0000;
}

/// Names of the OpenSSH extensions we send, as announced in VERSION.
pub mod ext {
    pub const FSYNC: &str = "fsync@openssh.com";
    pub const LIMITS: &str = "limits@openssh.com";
}

/// Why bytes from the server are not a packet we can read. Any of these means the
/// stream can no longer be trusted: the caller throws the session away (destination
/// scope), it never retries the packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("sftp packet length {len} is not within 1..={max}")]
    BadLength { len: u32, max: u32 },
    #[error("sftp {packet} packet ends inside its {field}")]
    Truncated {
        packet: &'static str,
        field: &'static str,
    },
    #[error("sftp packet type {0} is not a reply we understand")]
    UnknownType(u8),
    #[error("sftp {packet} packet: its {field} is not UTF-8 text")]
    BadUtf8 {
        packet: &'static str,
        field: &'static str,
    },
    #[error("sftp {packet} packet has {extra} bytes after its last field")]
    TrailingBytes { packet: &'static str, extra: usize },
    /// Only when encoding: a request we could not even frame (over 4 GiB).
    #[error("sftp {packet} request of {len} bytes does not fit a packet")]
    RequestTooLarge { packet: &'static str, len: usize },
}

/// Reads SSH wire types from one packet's bytes; every read names the packet and
/// field it is for, so a short packet says what was missing.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    packet: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], packet: &'static str) -> Self {
        Reader { buf, packet }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated {
                packet: self.packet,
                field,
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_be_bytes(b))
    }

    /// A `string`: its length is checked against what is left of this packet before
    /// anything is copied, so a lying length costs nothing.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    /// A `string` that must be text (names of extensions).
    pub(crate) fn text(&mut self, field: &'static str) -> Result<String, CodecError> {
        let b = self.bytes(field)?;
        String::from_utf8(b.to_vec()).map_err(|_| CodecError::BadUtf8 {
            packet: self.packet,
            field,
        })
    }

    /// A `string` meant for people (a status message). A server in a non-UTF-8 locale
    /// may send its system's message bytes as they are: that must not turn a refused
    /// file into a broken connection, so bad bytes become U+FFFD.
    pub(crate) fn lossy_text(&mut self, field: &'static str) -> Result<String, CodecError> {
        Ok(String::from_utf8_lossy(self.bytes(field)?).into_owned())
    }

    /// The rest of the packet, whatever it holds (an EXTENDED_REPLY's request-specific
    /// fields).
    pub(crate) fn bytes_to_end(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Everything left of the packet must have been read.
    pub(crate) fn finish(self) -> Result<(), CodecError> {
        match self.buf.len() {
            0 => Ok(()),
            extra => Err(CodecError::TrailingBytes {
                packet: self.packet,
                extra,
            }),
        }
    }
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A `string`. Lengths beyond `u32` are caught for the whole packet when it is framed
/// (see `request::frame`): a string cannot be longer than the packet holding it.
pub(crate) fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_u32(out, v.len() as u32);
    out.extend_from_slice(v);
}
