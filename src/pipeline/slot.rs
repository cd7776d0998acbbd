//! A worker's connection and the temp names claimed on it: [`Slot`] makes the
//! connection on first use, learns what the server does (rename, fsync) and clears
//! leftover temps; [`Inflight`] keeps the clean-up off a temp an upload is writing.

use crate::intake;
use crate::transfer::{self, Connection, ServerTraits, TransferError};
use plutus_state::State;
use std::collections::HashSet;
use std::sync::Mutex;

use super::Ctx;

/// The temp names of uploads in progress. A name is claimed before its file is created
/// and released after its `sent` record is written, so a clean-up that lists the inbox
/// and then asks here and then the journal never misses one.
#[derive(Default)]
pub struct Inflight(Mutex<HashSet<String>>);

impl Inflight {
    pub(super) fn claim(&self, name: &str) -> Claim<'_> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string());
        Claim {
            set: self,
            name: name.to_string(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}

pub(super) struct Claim<'a> {
    set: &'a Inflight,
    name: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// A worker's connection, made on first use and thrown away after any error (libssh2
/// sessions are not reliable after one), with what the server's probe found.
#[derive(Default)]
pub struct Slot {
    conn: Option<Box<dyn Connection>>,
    traits: Option<ServerTraits>,
}

impl Slot {
    /// The connection if there is one; never makes one (for a health check after an
    /// error, which must not count a fresh connection as proof).
    pub(super) fn existing(&mut self) -> Option<&mut Box<dyn Connection>> {
        self.conn.as_mut()
    }

    /// The connection, made and probed if there is none. A server whose rename would
    /// replace an existing name is refused here, for every file, unless the config
    /// accepts check-then-rename.
    pub(super) fn get(&mut self, ctx: &Ctx) -> Result<&mut Box<dyn Connection>, TransferError> {
        if self.conn.is_none() {
            let mut c = ctx.transport.connect()?;
            let traits = c.server()?;
            *ctx.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(traits);
            if !traits.rename_refuses_overwrite && !ctx.settings.destination.check_then_rename {
                return Err(TransferError::UnsafeRename {
                    dest: ctx.transport.describe(),
                });
            }
            self.traits = Some(traits);
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Connect now rather than on the first file, so the first file does not pay for
    /// the SSH handshake and the server probe.
    pub fn connect(&mut self, ctx: &Ctx) -> Result<(), TransferError> {
        self.get(ctx).map(|_| ())
    }

    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    pub(crate) fn drop_conn(&mut self) {
        self.conn = None;
        self.traits = None;
    }

    /// Does this server replace on rename (accepted by the config)? Then every rename
    /// is preceded by a look at the final name.
    pub(super) fn rename_replaces(&self) -> bool {
        self.traits.is_some_and(|t| !t.rename_refuses_overwrite)
    }

    /// Make sure a connection that sat idle is still alive; a dead one is dropped so
    /// the next use reconnects instead of failing a file.
    pub(crate) fn refresh(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            if c.ping().is_err() {
                self.drop_conn();
            }
        }
    }

    /// Remove temp files nobody needs from the inbox: temp names of files the outbox's
    /// name rules would take, that no upload in progress claims and no `sent` entry
    /// names (its temp is the proof of where that delivery stands). Safe to run while
    /// other workers upload.
    pub fn clean_temps(&mut self, ctx: &Ctx) -> Result<Vec<String>, TransferError> {
        let s = &ctx.settings;
        let ours = |name: &str| intake::name_rule(std::ffi::OsStr::new(name), s).is_ok();
        // Asked after the listing, in this order (see `Inflight`).
        let keep = |temp: &str| {
            if ctx.inflight.contains(temp) {
                return true;
            }
            let Some(name) = transfer::final_of_temp(temp, &s.destination.temp_suffix) else {
                return false;
            };
            match ctx.journal.history_of(name) {
                Ok(recs) => recs.iter().any(|r| {
                    r.state() == State::Sent
                        && r.remote_path
                            .as_deref()
                            .is_some_and(|p| p.rsplit('/').next() == Some(temp))
                }),
                // Cannot tell: keep it; the next clean-up asks again.
                Err(_) => true,
            }
        };
        let r = self.get(ctx)?.clean_temps(&ours, &keep);
        if r.is_err() {
            self.drop_conn();
        }
        r
    }
}
