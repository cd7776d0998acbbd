//! Cuts the server's byte stream into packets (`uint32 length` + that many bytes).
//! Channel reads end anywhere: a packet may arrive in pieces, several may arrive in
//! one read. The length is checked against a bound as soon as its four bytes are
//! here, before anything is kept for the packet, so a hostile or broken server (or a
//! login banner printed into the channel, which OpenSSH's client warns about) cannot
//! make us buffer 4 GiB.
//!
//! Use: after each read, [`FrameDecoder::push`] the bytes, then take
//! [`FrameDecoder::next_packet`] until it gives `None`. Buffered bytes then never
//! exceed one incomplete packet plus one read.

use super::reply::ServerPacket;
use super::wire::CodecError;

#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the next packet's length prefix starts in `buf`; what is before it has
    /// been handed out and is dropped at the next push.
    start: usize,
    max: u32,
    /// A bad length leaves no way to find the next packet: every later call says so.
    failed: Option<CodecError>,
}

impl FrameDecoder {
    /// `max_packet`: the largest packet accepted, length prefix not counted
    /// ([`DEFAULT_MAX_PACKET`](super::wire::DEFAULT_MAX_PACKET) is OpenSSH's).
    pub fn new(max_packet: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max: max_packet,
            failed: None,
        }
    }

    /// Adds bytes read from the channel. Refuses at once a packet whose length is out
    /// of bounds, so a caller that reads in a loop stops reading a broken stream.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.header().map(|_| ())
    }

    /// The next whole packet (type byte first, no length prefix), or `None` until more
    /// bytes are pushed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, CodecError> {
        let Some(len) = self.header()? else {
            return Ok(None);
        };
        let body = self.start + 4;
        let end = body + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        self.start = end;
        Ok(Some(&self.buf[body..end]))
    }

    /// The next whole packet, parsed.
    pub fn next_packet(&mut self) -> Result<Option<ServerPacket>, CodecError> {
        match self.next_frame()? {
            Some(frame) => ServerPacket::parse(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Bytes held that are not yet a whole packet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The length of the packet at `start`, checked; `None` while its prefix is
    /// incomplete.
    fn header(&mut self) -> Result<Option<u32>, CodecError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(prefix) = self.buf.get(self.start..self.start + 4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        // 0 cannot even hold the type byte.
        if len == 0 || len > self.max {
            let e = CodecError::BadLength { len, max: self.max };
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(Some(len))
    }
}
