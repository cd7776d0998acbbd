//! Several files at once: the batch forms of steps 1 and 2 ([`Connection::upload_many`],
//! [`Connection::rename_many`]). A transport that can keep many requests in flight
//! (SFTP) overrides them; any other does one file after another, as here.
//!
//! [`Connection::upload_many`]: super::Connection::upload_many
//! [`Connection::rename_many`]: super::Connection::rename_many

use super::{upload, Fault, Job, Remote, RemoteError, Scope, TransferError, Uploaded};
use std::io::Read;

/// One file of a batch upload: step 1's arguments.
pub struct Put<'a> {
    pub job: Job<'a>,
    /// The attempt's temp name (see [`super::temp_name`]), not a path.
    pub temp_name: String,
    pub src: &'a mut dyn Read,
    /// For error messages: where `src` was opened.
    pub src_path: &'a str,
}

/// The error a file gets when the connection died before its turn: a connection
/// fault, so the pipeline pauses the destination and the entry keeps its state.
pub(crate) fn not_tried(
    op: &'static str,
    path: &str,
    cause: &dyn std::fmt::Display,
) -> TransferError {
    TransferError::Remote(RemoteError {
        op,
        path: path.to_string(),
        fault: Fault::Connection,
        message: format!("not tried: the connection failed earlier in the batch ({cause})"),
    })
}

/// Step 1 for each file in turn; after a destination-wide error the rest are not tried.
pub(super) fn upload_each<R: Remote>(
    r: &mut R,
    puts: &mut [Put<'_>],
) -> Vec<Result<Uploaded, TransferError>> {
    let mut out: Vec<Result<Uploaded, TransferError>> = Vec::with_capacity(puts.len());
    for p in puts.iter_mut() {
        let dead = out
            .iter()
            .find_map(|r| r.as_ref().err().filter(|e| e.scope() == Scope::Destination));
        if let Some(cause) = dead {
            let path = super::join(r.inbox(), &p.temp_name);
            out.push(Err(not_tried("create", &path, cause)));
            continue;
        }
        out.push(upload(r, &p.job, &p.temp_name, &mut *p.src, p.src_path));
    }
    out
}

/// Step 2 for each `(from, to)` in turn; after a lost connection the rest are not tried.
pub(super) fn rename_each<R: Remote>(
    r: &mut R,
    moves: &[(String, String)],
) -> Vec<Result<(), RemoteError>> {
    let mut out: Vec<Result<(), RemoteError>> = Vec::with_capacity(moves.len());
    for (from, to) in moves {
        let dead = out
            .iter()
            .find_map(|r| r.as_ref().err().filter(|e| e.fault == Fault::Connection));
        if let Some(cause) = dead {
            out.push(Err(RemoteError {
                op: "rename",
                path: to.clone(),
                fault: Fault::Connection,
                message: format!("not tried: the connection failed earlier in the batch ({cause})"),
            }));
            continue;
        }
        out.push(r.rename(from, to));
    }
    out
}
