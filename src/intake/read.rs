//! The one read of an order file (opened by [`crate::untrusted::open_regular`]):
//! bounded, for size + CRC32 + the JSON verdict.

use std::io::{self, BufReader, Read};

/// Size, CRC32 and JSON verdict from one streamed read of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub size: u64,
    pub crc32: u32,
    /// `Err(reason)` when the content is not well-formed JSON.
    pub json: Result<(), String>,
}

struct Tee<R> {
    inner: R,
    hasher: crc32fast::Hasher,
    size: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Files up to this size are read into memory and checked with the slice parser,
/// which is several times faster than the reader's byte-at-a-time path; orders are a
/// few KB. Larger files are streamed.
const SMALL: usize = 256 * 1024;

/// Read `r` once for its size, CRC32 and JSON check.
pub fn scan(mut r: impl Read) -> io::Result<Scan> {
    let mut head = Vec::with_capacity(16 * 1024);
    (&mut r).take(SMALL as u64 + 1).read_to_end(&mut head)?;
    if head.len() <= SMALL {
        return Ok(Scan {
            size: head.len() as u64,
            crc32: crc32fast::hash(&head),
            json: verdict(serde_json::from_slice(&head))?,
        });
    }
    scan_stream(io::Cursor::new(head).chain(r))
}

/// The JSON parser pulls the bytes, the CRC32 sees them on the way. The parser
/// discards what it reads (`IgnoredAny`), so memory stays flat whatever the size.
fn scan_stream(r: impl Read) -> io::Result<Scan> {
    let mut rd = BufReader::with_capacity(
        64 * 1024,
        Tee {
            inner: r,
            hasher: crc32fast::Hasher::new(),
            size: 0,
        },
    );
    let json = verdict(serde_json::from_reader(&mut rd))?;
    // Whatever the parser left unread still belongs to the file's CRC32.
    io::copy(&mut rd, &mut io::sink())?;
    let tee = rd.into_inner();
    Ok(Scan {
        size: tee.size,
        crc32: tee.hasher.finalize(),
        json,
    })
}

/// The parser's answer as the operator will read it; a read error stays an error.
fn verdict(parsed: serde_json::Result<serde::de::IgnoredAny>) -> io::Result<Result<(), String>> {
    match parsed {
        Ok(_) => Ok(Ok(())),
        Err(e) if e.is_io() => Err(io::Error::other(e)),
        Err(e) if e.is_eof() && e.line() == 1 && e.column() == 0 => {
            Ok(Err("empty file".to_string()))
        }
        Err(e) => Ok(Err(format!("not well-formed JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_gives_size_crc_and_json_verdict() {
        let data = br#"{"order": "2026-000001", "lines": [1, 2, 3]}  "#;
        let s = scan(&data[..]).unwrap();
        assert_eq!(s.size, data.len() as u64);
        assert_eq!(s.crc32, crc32fast::hash(data));
        assert_eq!(s.json, Ok(()));
    }

    #[test]
    fn invalid_and_empty_files_are_named_as_such() {
        let s = scan(&b"{\"order\": "[..]).unwrap();
        assert!(s.json.unwrap_err().starts_with("not well-formed JSON"));
        assert_eq!(scan(&b""[..]).unwrap().json, Err("empty file".into()));
        let trailing = b"{} x";
        let s = scan(&trailing[..]).unwrap();
        assert!(s.json.is_err());
        assert_eq!(
            s.crc32,
            crc32fast::hash(trailing),
            "the CRC covers bytes after the error too"
        );
    }

    #[test]
    fn files_either_side_of_the_in_memory_limit_get_the_same_answers() {
        for len in [SMALL - 1, SMALL, SMALL + 1, 3 * SMALL] {
            let mut good = vec![b' '; len];
            good[0] = b'[';
            good[len - 1] = b']';
            let mut bad = good.clone();
            bad[len - 2] = b','; // `[   ,]`: the error is in the file's last bytes
            for (data, ok) in [(&good, true), (&bad, false)] {
                let fast = scan(&data[..]).unwrap();
                let slow = scan_stream(&data[..]).unwrap();
                assert_eq!(fast.size, len as u64);
                assert_eq!(fast.crc32, crc32fast::hash(data));
                assert_eq!((fast.size, fast.crc32), (slow.size, slow.crc32));
                assert_eq!(fast.json.is_ok(), ok, "{len}: {:?}", fast.json);
                assert_eq!(fast.json, slow.json, "{len}");
            }
        }
    }

    #[test]
    fn a_large_file_is_streamed_not_loaded() {
        // 64 MiB of JSON from a generator: if scan buffered it whole, this would still
        // pass, so the bound is the reader's: it never hands out more than asked.
        struct Gen(u64);
        impl Read for Gen {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Ok(0);
                }
                assert!(buf.len() <= 64 * 1024, "read of {} bytes", buf.len());
                let n = buf.len().min(self.0 as usize);
                buf[..n].fill(b' ');
                if self.0 as usize == n {
                    buf[n - 2] = b'{';
                    buf[n - 1] = b'}';
                }
                self.0 -= n as u64;
                Ok(n)
            }
        }
        let s = scan(Gen(64 << 20)).unwrap();
        assert_eq!(s.size, 64 << 20);
        assert_eq!(s.json, Ok(()));
    }
}
