//! An SFTP request layer of our own (issue 12): SFTP version 3 as OpenSSH and
//! Win32-OpenSSH speak it (draft-ietf-secsh-filexfer-02 plus OpenSSH's `PROTOCOL`
//! extensions), with many requests in flight on one channel. libssh2's `Sftp` waits
//! for each reply before the next request, about seven round trips per file; here a
//! file's WRITEs, fsync, READs and CLOSE follow its OPEN without waiting.
//!
//! Owns the bytes of the protocol: no ssh2, no clock. Only `client` and `file` do I/O, over any
//! blocking `Read + Write` channel (an `ssh2::Channel` on `subsystem("sftp")` in
//! `transfer::sftp`); everything else is pure. The client drives the rest so:
//!
//! 1. [`encode_init`], then the first packet must pass [`expect_version`];
//! 2. if the server announces `limits@openssh.com` "1", ask [`Request::Limits`] and
//!    build the [`Matcher`] from [`Bounds::from_limits`] (else [`Bounds::default`]);
//! 3. [`Matcher::send`] appends packets to an output buffer the loop writes out;
//!    bytes read go to [`FrameDecoder::push`], and each
//!    [`FrameDecoder::next_packet`] to [`Matcher::receive_packet`], which says which
//!    request (and which caller `tag`) it answers.
//!
//! Any error from the decoder or the matcher means the session no longer says what we
//! think it says: drop it and reconnect. Status codes, even odd ones, are answers, not
//! errors: what they mean for a file is the transport's call.
//!
//! - `wire`: constants, SSH encodings, [`CodecError`].
//! - `attrs`: the ATTRS structure. `request`: what we send. `reply`: what we parse.
//! - `frame`: the byte stream cut into packets, under a length bound.
//! - `matcher`: ids, outstanding requests, which reply fits which request.
//! - `client`: the handshake, the channel loop and its windows. `file`: open files.
//! - `put`: many files at once, each written, fsynced, read back and closed in one go.

mod attrs;
pub mod client;
pub mod file;
mod frame;
mod matcher;
pub mod put;
mod reply;
mod request;
mod wire;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod frame_tests;
#[cfg(test)]
mod matcher_tests;
#[cfg(test)]
mod put_tests;
#[cfg(test)]
mod reply_tests;
#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod testing;

pub use attrs::Attrs;
pub use frame::FrameDecoder;
pub use matcher::{expect_version, Answered, Bounds, MatchError, Matcher, Response};
pub use reply::{
    Limits, NameEntry, Reply, ReplyBody, ReplyKind, ServerPacket, ServerVersion, Status, StatusCode,
};
pub use request::{encode_init, OpenFlags, Request, RequestKind};
pub use wire::{ext, CodecError, DEFAULT_MAX_PACKET, VERSION};
