//! The one part of the layer that does I/O: an SFTP client over a blocking byte
//! channel (an `ssh2::Channel` on the `sftp` subsystem in production, anything
//! `Read + Write` in tests). It owns the handshake, the output buffer, the reading of
//! replies, and the bound on what is in flight; what a status means for a file is the
//! caller's business (`transfer::sftp`). Open files are [`super::file`].
//!
//! **Interleaving.** The channel is blocking: a write blocks while the server does not
//! read, a read blocks until something comes (each wait bounded by the session
//! timeout). A server stops reading requests when its replies are not read (OpenSSH's
//! `sftp-server` stops once its output queue is full), so a client that keeps writing
//! without reading can deadlock with it. Here requests only go out while what they can
//! bring back stays under a window ([`WRITE_WINDOW`], [`READ_WINDOW`], and at most
//! [`MAX_REQUESTS`] outstanding): before a request that would go over, the client
//! writes out what it holds and reads replies until there is room. Replies to a WRITE
//! are a few bytes each, and the DATA of the READs in flight fit libssh2's receive
//! window (2 MiB), so nothing the server sends is ever left waiting on us for long:
//! [`MAX_REQUESTS`] STATUS replies are ~32 KiB, and with [`READ_WINDOW`] of DATA they
//! stay well under that window.
//!
//! **Failures.** A channel error (the session timeout, a reset), the channel closing,
//! or a packet the matcher refuses makes the client *broken*: every later call fails
//! at once with [`ClientError::Broken`], and the caller throws the connection away.
//! A stall costs one timeout, never a hang. A STATUS is an answer, never an error here.
//!
//! Never call `flush()` on an `ssh2::Channel`: it maps to `libssh2_channel_flush_ex`,
//! which *discards* unread incoming data (replies), not what we wrote.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use super::frame::FrameDecoder;
use super::matcher::{expect_version, Bounds, MatchError, Matcher, Response};
use super::reply::ServerVersion;
use super::request::{encode_init, Request};
use super::wire::{ext, DEFAULT_MAX_PACKET};

/// WRITE payload in flight: 64 × 32 KiB, as OpenSSH's client keeps. Replies to them
/// are tiny; the bound is on what the server must hold for us.
pub const WRITE_WINDOW: u64 = 64 * 32 * 1024;
/// READ lengths in flight: half of libssh2's 2 MiB receive window, so every DATA they
/// bring back fits it while we are busy writing.
pub const READ_WINDOW: u64 = 32 * 32 * 1024;
/// Requests in flight, whatever their size. A batch of small files (`put`) has five
/// or so per file in flight: OPEN, WRITE, FSYNC, READ, CLOSE.
pub const MAX_REQUESTS: usize = 1024;
/// Reads the channel in pieces of this size.
const READ_CHUNK: usize = 64 * 1024;

/// The session no longer works: the caller drops the connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The channel failed; a stall shows here as the session timeout
    /// (`io::ErrorKind::TimedOut`).
    #[error("sftp channel: {0}")]
    Io(#[source] io::Error),
    #[error("the server closed the sftp channel")]
    Closed,
    #[error(transparent)]
    Protocol(#[from] MatchError),
    /// Our own mistake: waiting for a reply with no request in flight.
    #[error("sftp client waited for a reply with no request in flight")]
    Idle,
    /// An earlier error left the session unusable.
    #[error("sftp session unusable after an earlier error: {0}")]
    Broken(String),
}

impl ClientError {
    /// As an `io::Error` for `Read`/`Write` callers: always a connection kind
    /// (`TimedOut` for a timeout, `ConnectionAborted` otherwise).
    pub fn to_io(&self) -> io::Error {
        let kind = match self {
            ClientError::Io(e) if e.kind() == io::ErrorKind::TimedOut => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::ConnectionAborted,
        };
        io::Error::new(kind, self.to_string())
    }
}

impl From<super::wire::CodecError> for ClientError {
    fn from(e: super::wire::CodecError) -> Self {
        ClientError::Protocol(MatchError::Codec(e))
    }
}

/// One SFTP session over channel `C`.
pub struct Client<C> {
    chan: C,
    matcher: Matcher<()>,
    decoder: FrameDecoder,
    /// Requests encoded and not yet written to the channel.
    out: Vec<u8>,
    rbuf: Box<[u8]>,
    /// Replies that came, by id, until their caller takes them.
    done: HashMap<u32, Response>,
    /// Ids whose replies nobody wants any more (read-ahead past the end of a file, a
    /// CLOSE sent from a drop): dropped as they come.
    discard: HashSet<u32>,
    version: ServerVersion,
    max_handles: Option<u64>,
    broken: Option<String>,
}

impl<C: Read + Write> Client<C> {
    /// INIT → VERSION, then `limits@openssh.com` if announced (its bounds, else the
    /// safe defaults).
    pub fn start(chan: C) -> Result<Self, ClientError> {
        let mut c = Client {
            chan,
            matcher: Matcher::new(Bounds::default()),
            decoder: FrameDecoder::new(DEFAULT_MAX_PACKET),
            out: Vec::new(),
            rbuf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            done: HashMap::new(),
            discard: HashSet::new(),
            version: ServerVersion {
                version: 0,
                extensions: Vec::new(),
            },
            max_handles: None,
            broken: None,
        };
        encode_init(&mut c.out);
        c.write_out()?;
        let packet = loop {
            if let Some(p) = c.decoder.next_packet()? {
                break p;
            }
            c.read_some()?;
        };
        c.version = expect_version(packet)?;
        if c.version.supports(ext::LIMITS, b"1") {
            if let Response::Limits(l) = c.call(&Request::Limits)? {
                // Nothing is outstanding now: a fresh matcher loses nothing.
                c.matcher = Matcher::new(Bounds::from_limits(&l));
                c.max_handles = (l.max_open_handles > 0).then_some(l.max_open_handles);
            }
        }
        Ok(c)
    }

    pub fn bounds(&self) -> Bounds {
        self.matcher.bounds()
    }

    /// Whether the server announced `fsync@openssh.com` version "1".
    pub fn fsync_offered(&self) -> bool {
        self.version.supports(ext::FSYNC, b"1")
    }

    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Encodes `req` into the output buffer (written out by the next wait) and returns
    /// its id. Check [`Client::room`] first to stay under a window.
    pub fn send(&mut self, req: &Request<'_>) -> Result<u32, ClientError> {
        self.usable()?;
        match self.matcher.send(req, (), &mut self.out) {
            Ok(id) => Ok(id),
            Err(e) => self.fail(e.into()),
        }
    }

    /// Reads the channel once and files every whole reply that came; at least one
    /// request must be in flight.
    pub fn wait_any(&mut self) -> Result<(), ClientError> {
        self.pump()
    }

    /// The most handles the server lets one session hold open (`limits@openssh.com`),
    /// `None` when it did not say.
    pub fn max_handles(&self) -> Option<u64> {
        self.max_handles
    }

    /// One request, one reply.
    pub fn call(&mut self, req: &Request<'_>) -> Result<Response, ClientError> {
        let id = self.send(req)?;
        self.wait(id)
    }

    /// The reply to `id`, reading the channel until it comes.
    pub fn wait(&mut self, id: u32) -> Result<Response, ClientError> {
        loop {
            if let Some(r) = self.done.remove(&id) {
                return Ok(r);
            }
            self.pump()?;
        }
    }

    /// The reply to `id` if it has come; never reads the channel.
    pub fn take(&mut self, id: u32) -> Option<Response> {
        self.done.remove(&id)
    }

    /// The reply to `id` will not be asked for: drop it, now or when it comes.
    pub fn forget(&mut self, id: u32) {
        if self.done.remove(&id).is_none() {
            self.discard.insert(id);
        }
    }

    /// Reads replies until one more request of `bytes` data fits under `window` (and
    /// under [`MAX_REQUESTS`]). A request larger than the window alone still goes, once
    /// nothing else is in flight.
    pub fn room(&mut self, bytes: u64, window: u64) -> Result<(), ClientError> {
        while !self.has_room(bytes, window) {
            self.pump()?;
        }
        Ok(())
    }

    /// Whether one more request of `bytes` data fits under `window` now (see
    /// [`Client::room`]), without reading anything.
    pub fn has_room(&self, bytes: u64, window: u64) -> bool {
        let b = self.matcher.bytes_outstanding();
        self.matcher.outstanding() < MAX_REQUESTS && (b == 0 || b + bytes <= window)
    }

    /// Writes out what is buffered, without waiting for any reply.
    pub fn write_out(&mut self) -> Result<(), ClientError> {
        self.usable()?;
        if self.out.is_empty() {
            return Ok(());
        }
        // Not `flush()`: see the module comment.
        match self.chan.write_all(&self.out) {
            Ok(()) => {
                self.out.clear();
                Ok(())
            }
            Err(e) => self.fail(ClientError::Io(e)),
        }
    }

    /// Writes out what is buffered, then reads once and files every whole reply.
    fn pump(&mut self) -> Result<(), ClientError> {
        if self.matcher.outstanding() == 0 {
            // Nothing could ever come: waiting would only cost a timeout.
            return self.fail(ClientError::Idle);
        }
        self.write_out()?;
        self.read_some()?;
        loop {
            let packet = match self.decoder.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return self.fail(e.into()),
            };
            match self.matcher.receive_packet(packet) {
                Ok(a) => {
                    if !self.discard.remove(&a.id) {
                        self.done.insert(a.id, a.response);
                    }
                }
                Err(e) => return self.fail(e.into()),
            }
        }
    }

    fn read_some(&mut self) -> Result<(), ClientError> {
        self.usable()?;
        loop {
            match self.chan.read(&mut self.rbuf) {
                Ok(0) => return self.fail(ClientError::Closed),
                Ok(n) => {
                    return match self.decoder.push(&self.rbuf[..n]) {
                        Ok(()) => Ok(()),
                        Err(e) => self.fail(e.into()),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(ClientError::Io(e)),
            }
        }
    }

    fn usable(&self) -> Result<(), ClientError> {
        match &self.broken {
            Some(why) => Err(ClientError::Broken(why.clone())),
            None => Ok(()),
        }
    }

    fn fail<T>(&mut self, e: ClientError) -> Result<T, ClientError> {
        if self.broken.is_none() {
            self.broken = Some(e.to_string());
        }
        Err(e)
    }
}
