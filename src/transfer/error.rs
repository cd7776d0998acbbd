//! What can go wrong with a transfer, and whether it is the file's fault or the whole
//! destination's ([`Scope`]): the pipeline retries the one and pauses for the other.

use std::io;

/// Why a remote operation failed, as far as the protocol needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    NotFound,
    PermissionDenied,
    /// The server said "failure" with no detail (OpenSSH says this for a full disk).
    Failure,
    /// The connection timed out or dropped: the destination, not the file.
    Connection,
    Unsupported,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {message}")]
pub struct RemoteError {
    pub op: &'static str,
    pub path: String,
    pub fault: Fault,
    pub message: String,
}

/// Does this error stop the whole destination, or only this file?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Destination,
    File,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot connect to {dest}: {message}")]
    Connect { dest: String, message: String },
    #[error("{dest}: host key {problem}; nothing was sent\n  hint: {hint}")]
    HostKey {
        dest: String,
        problem: String,
        hint: String,
    },
    #[error("{dest}: no SSH algorithm in common with the server (plutus-sync allows no CBC cipher, no SHA-1 key exchange or MAC); nothing was sent: {mismatches}\n  hint: allow one of ours in the server's sshd_config (KexAlgorithms, Ciphers, MACs; `sshd -T` on the server shows what it offers)")]
    Algorithms { dest: String, mismatches: String },
    #[error("{dest}: key authentication as {user:?} failed: {message}")]
    Auth {
        dest: String,
        user: String,
        message: String,
    },
    #[error("inbox {0}")]
    Remote(RemoteError),
    #[error("{path}: cannot read the local file: {source}")]
    LocalRead { path: String, source: io::Error },
    #[error("{name}: the local file changed while it was being sent (size {size}, crc32 {crc32:08x}; intake saw size {want_size}, crc32 {want_crc32:08x})")]
    SourceChanged {
        name: String,
        size: u64,
        crc32: u32,
        want_size: u64,
        want_crc32: u32,
    },
    #[error("{path}: read-back does not match: remote size {size}, crc32 {crc32:08x}; expected size {want_size}, crc32 {want_crc32:08x}")]
    VerifyMismatch {
        path: String,
        size: u64,
        crc32: u32,
        want_size: u64,
        want_crc32: u32,
    },
    #[error("{path}: a different file with this name is already in the inbox (ours: size {want_size}, crc32 {want_crc32:08x}); not overwritten{}", if *temp_gone { "; our temp file is gone too, so the ERP may already have imported this order: ask the ERP before a replay" } else { "" })]
    Conflict {
        path: String,
        want_size: u64,
        want_crc32: u32,
        temp_gone: bool,
    },
    #[error("{dest}: this server's rename REPLACES an existing file (a probe file was overwritten); delivering could overwrite a different order, so nothing is sent\n  hint: use a server whose rename refuses an existing name (OpenSSH, Win32-OpenSSH), or accept a racy stat-then-rename with [destination] overwriting_rename = \"check-then-rename\"")]
    UnsafeRename { dest: String },
}

impl TransferError {
    pub fn scope(&self) -> Scope {
        match self {
            TransferError::Connect { .. }
            | TransferError::UnsafeRename { .. }
            | TransferError::HostKey { .. }
            | TransferError::Algorithms { .. }
            | TransferError::Auth { .. } => Scope::Destination,
            TransferError::Remote(e) => match (e.op, e.fault) {
                (_, Fault::Connection) => Scope::Destination,
                // A refused create may be the inbox (missing, not writable) or this
                // name (rejected by the server, a stale temp in the way): it stays with
                // the file, and the pipeline's probe file decides which.

                // A write that fails is a full disk or a dying connection.
                ("write" | "close" | "fsync", _) => Scope::Destination,
                ("list", _) => Scope::Destination,
                _ => Scope::File,
            },
            TransferError::LocalRead { .. }
            | TransferError::SourceChanged { .. }
            | TransferError::VerifyMismatch { .. }
            | TransferError::Conflict { .. } => Scope::File,
        }
    }
}

/// Map an `io::Error` from a remote read or write to a fault. (`io::Error` has no kind
/// for every SFTP status: a bare FAILURE shows as `Other`, which is why the pipeline
/// probes after a file-scope error; a lost session is a connection kind.)
pub(crate) fn io_fault(op: &'static str, path: &str, e: io::Error) -> RemoteError {
    let fault = match e.kind() {
        io::ErrorKind::NotFound => Fault::NotFound,
        io::ErrorKind::PermissionDenied => Fault::PermissionDenied,
        io::ErrorKind::TimedOut
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::NotConnected
        | io::ErrorKind::UnexpectedEof => Fault::Connection,
        io::ErrorKind::StorageFull => Fault::Failure,
        io::ErrorKind::Unsupported => Fault::Unsupported,
        _ => Fault::Other,
    };
    RemoteError {
        op,
        path: path.to_string(),
        fault,
        message: e.to_string(),
    }
}
