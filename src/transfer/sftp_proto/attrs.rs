//! File attributes (the v3 `ATTRS` structure): what we send with OPEN and what STAT,
//! LSTAT, FSTAT and READDIR tell. Each field is present only when its flag bit is set,
//! so every field is an `Option` and an absent size is never read as 0.

use super::wire::{attr, put_bytes, put_u32, put_u64, CodecError, Reader};

/// One file's attributes as the server reports them, or as we ask OPEN to create it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    /// The POSIX mode, file type bits included (`0o100644` for a regular file).
    pub permissions: Option<u32>,
    /// Access and modification times, seconds since 1970 (v3 has 32 bits only).
    pub times: Option<(u32, u32)>,
    /// Vendor pairs (`type@domain`, data). OpenSSH never sends any; kept so a server
    /// that does cannot desynchronise the rest of the packet.
    pub extended: Vec<(String, Vec<u8>)>,
}

/// The type bits of `permissions` (`S_IFMT`) and the regular-file value: SFTP v3 has
/// no file-type field, only these POSIX bits (Win32-OpenSSH fills them in too).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;

impl Attrs {
    /// What our files are created with: rw-r--r--, the rest left to the server.
    pub const NEW_FILE: Attrs = Attrs {
        size: None,
        uid_gid: None,
        permissions: Some(0o644),
        times: None,
        extended: Vec::new(),
    };

    /// `Some(true)` for a regular file, `None` when the server did not say.
    pub fn is_regular(&self) -> Option<bool> {
        self.permissions.map(|p| p & S_IFMT == S_IFREG)
    }

    pub fn is_dir(&self) -> Option<bool> {
        self.permissions.map(|p| p & S_IFMT == S_IFDIR)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        for (present, bit) in [
            (self.size.is_some(), attr::SIZE),
            (self.uid_gid.is_some(), attr::UIDGID),
            (self.permissions.is_some(), attr::PERMISSIONS),
            (self.times.is_some(), attr::ACMODTIME),
            (!self.extended.is_empty(), attr::EXTENDED),
        ] {
            if present {
                flags |= bit;
            }
        }
        put_u32(out, flags);
        if let Some(size) = self.size {
            put_u64(out, size);
        }
        if let Some((uid, gid)) = self.uid_gid {
            put_u32(out, uid);
            put_u32(out, gid);
        }
        if let Some(p) = self.permissions {
            put_u32(out, p);
        }
        if let Some((atime, mtime)) = self.times {
            put_u32(out, atime);
            put_u32(out, mtime);
        }
        if !self.extended.is_empty() {
            put_u32(out, self.extended.len() as u32);
            for (name, data) in &self.extended {
                put_bytes(out, name.as_bytes());
                put_bytes(out, data);
            }
        }
    }

    /// Reads the fields the flags announce. Bits v3 does not define are ignored, as
    /// OpenSSH does: a field of unknown layout cannot be skipped, and if one were
    /// really there the packet's length check (trailing bytes) would say so.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Attrs, CodecError> {
        let flags = r.u32("attribute flags")?;
        let mut a = Attrs::default();
        if flags & attr::SIZE != 0 {
            a.size = Some(r.u64("size")?);
        }
        if flags & attr::UIDGID != 0 {
            a.uid_gid = Some((r.u32("uid")?, r.u32("gid")?));
        }
        if flags & attr::PERMISSIONS != 0 {
            a.permissions = Some(r.u32("permissions")?);
        }
        if flags & attr::ACMODTIME != 0 {
            a.times = Some((r.u32("atime")?, r.u32("mtime")?));
        }
        if flags & attr::EXTENDED != 0 {
            let count = r.u32("extended count")?;
            // No capacity from the count: it is the server's word, the bytes are not.
            for _ in 0..count {
                let name = r.text("extended attribute type")?;
                let data = r.bytes("extended attribute data")?.to_vec();
                a.extended.push((name, data));
            }
        }
        Ok(a)
    }
}
