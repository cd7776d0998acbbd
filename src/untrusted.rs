//! Opening a file the web shop's account controls (the outbox is untrusted input):
//! without following a link, never a device or FIFO, only a regular file with one
//! name. Intake, the pipeline, the archive and a rebuild all open outbox files this
//! way; it sits below all of them so none has to reach into another for it.

use std::fs;
use std::io;
use std::path::Path;

/// What opening an outbox file found.
#[derive(Debug)]
pub enum Opened {
    /// A regular file, opened; its metadata from the handle (`fstat`), not the name.
    File(fs::File, fs::Metadata),
    /// Something that is not taken, with the reason for the log line.
    Refused(&'static str),
    /// No file under the name.
    Gone,
}

/// Open an outbox file the one safe way: the outbox is untrusted input. Never through
/// a symbolic link (`O_NOFOLLOW`: a link to a secret or to `/dev/zero` is refused, not
/// read), never blocking (`O_NONBLOCK`: a FIFO with no writer would hang a worker),
/// and only a regular file with one name, judged on the handle (`fstat`), so a name
/// swapped between a check and the open cannot slip through. Every read of the handle
/// must still be bounded by the size expected.
pub fn open_regular(path: &Path) -> io::Result<Opened> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // Look before opening: opening a device can do something by itself (a tape
    // rewinds, a modem line hangs up), whatever is read after. The `fstat` below
    // still decides, since the name can change between the two.
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) => return Ok(Opened::Refused(kind_of(&m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Gone),
        Err(e) => return Err(e),
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Opened::Refused("a symbolic link (never followed)"))
        }
        // A socket file cannot be opened at all.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(Opened::Refused("a socket")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Gone),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    Ok(if meta.file_type().is_file() && meta.nlink() > 1 {
        // Another name for a file elsewhere (the web shop's account could link any
        // file it can reach on this file system): not an order it wrote here.
        Opened::Refused("a hard link (the file has other names)")
    } else if meta.file_type().is_file() {
        Opened::File(file, meta)
    } else {
        Opened::Refused(kind_of(&meta))
    })
}

/// What a file that is not a regular file is, for the log line.
fn kind_of(m: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    if ft.is_symlink() {
        "a symbolic link (never followed)"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "a device"
    }
}
