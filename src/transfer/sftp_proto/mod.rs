//! An SFTP request layer of our own (issue 12): SFTP version 3 as OpenSSH and
//! Win32-OpenSSH speak it (draft-ietf-secsh-filexfer-02 plus OpenSSH's `PROTOCOL`
//! extensions), with many requests in flight on one channel. libssh2's `Sftp` waits
//! for each reply before the next request, about seven round trips per file; here a
//! file's WRITEs, fsync, READs and CLOSE are to follow its OPEN without waiting.
//!
//! Owns the bytes of the protocol and nothing else: no I/O, no ssh2, no clock. This
//! first part is the codec: requests encoded, replies parsed, the server's byte
//! stream cut into packets under a length bound. Any error from it means the session
//! no longer says what we think it says: drop it and reconnect. Status codes, even
//! odd ones, are answers, not errors: what they mean for a file is the transport's
//! call.
//!
//! - `wire`: constants, SSH encodings, [`CodecError`].
//! - `attrs`: the ATTRS structure. `request`: what we send. `reply`: what we parse.
//! - `frame`: the byte stream cut into packets, under a length bound.

mod attrs;
mod frame;
mod reply;
mod request;
mod wire;

#[cfg(test)]
mod frame_tests;
#[cfg(test)]
mod reply_tests;
#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod testing;

pub use attrs::Attrs;
pub use frame::FrameDecoder;
pub use reply::{
    Limits, NameEntry, Reply, ReplyBody, ReplyKind, ServerPacket, ServerVersion, Status, StatusCode,
};
pub use request::{encode_init, OpenFlags, Request, RequestKind};
pub use wire::{ext, CodecError, DEFAULT_MAX_PACKET, VERSION};
