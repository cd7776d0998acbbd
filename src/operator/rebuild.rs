//! `journal rebuild`: a new journal from what is on disk, for the day the old one is
//! lost or damaged. The archive says what was delivered, the quarantine
//! what was refused, the outbox what is still to do, and the inbox (when reachable)
//! which of those are already there, so a lost journal never causes a mass re-send.

use crate::config::Settings;
use crate::intake;
use crate::operator::socket::{self, ControlError};
use crate::operator::{Answer, Request};
use crate::transfer::{self, Job, Seen};
use anyhow::Context;
use plutus_state::{Event, Journal, JournalOptions, NewEntry, Record, State};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a rebuild found and wrote.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub archived: usize,
    pub quarantined: usize,
    pub pending: usize,
    pub in_inbox: usize,
    pub duplicates: usize,
    /// Outbox files that are not valid orders (yet): the service judges them.
    pub left: usize,
    /// "not needed", "checked", or why the inbox could not be looked at.
    pub inbox: String,
    /// Entries per state in the new journal.
    pub states: Vec<(State, u64)>,
    /// Where the old journal was moved aside.
    pub old: Option<PathBuf>,
}

/// Rebuild (or, with `dry_run`, build in a scratch folder and count) the journal.
/// Refuses while the service runs or the journal is in use.
pub fn rebuild(s: &Settings, dry_run: bool) -> anyhow::Result<Rebuilt> {
    match socket::request(&s.control.socket, &Request::Ping) {
        Ok(Answer::Pong { pid }) => anyhow::bail!(
            "the service is running (pid {pid}); stop it before rebuilding its journal"
        ),
        Ok(other) => anyhow::bail!("the service is running (it answered {other:?})"),
        Err(ControlError::NotRunning { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // A damaged journal may not open at all, which is why we are here; a locked one
    // means someone is using it.
    if s.journal.path.exists() {
        if let Err(plutus_state::JournalError::Locked { path }) =
            Journal::open(&s.journal.path, &JournalOptions::default())
        {
            anyhow::bail!(
                "{}: the journal is in use by another process; stop it first",
                path.display()
            );
        }
    }

    let scratch;
    let (target, old) = if dry_run {
        scratch = tempfile::tempdir().context("cannot create a scratch folder for the dry run")?;
        (scratch.path().join("journal"), None)
    } else {
        let old = if s.journal.path.exists() {
            let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
                .to_string()
                .replace(':', "");
            let mut aside = s.journal.path.clone().into_os_string();
            aside.push(format!(".old-{stamp}"));
            let aside = PathBuf::from(aside);
            fs::rename(&s.journal.path, &aside).with_context(|| {
                format!(
                    "{}: cannot move the old journal aside",
                    s.journal.path.display()
                )
            })?;
            Some(aside)
        } else {
            None
        };
        (s.journal.path.clone(), old)
    };
    let j = Journal::open(&target, &JournalOptions::default())?;
    let mut c = Rebuilt::default();

    for (path, name) in files(&s.source.archive, s) {
        let (size, crc32) = crc(&path)?;
        let rec = j.insert(entry(&name, size, crc32, &path))?;
        j.apply(
            rec.id,
            Event::Verified {
                remote_path: String::new(),
                archive_path: path.display().to_string(),
                note: Some("rebuilt from the archive".into()),
            },
        )?;
        j.apply(rec.id, Event::Archived)?;
        c.archived += 1;
    }

    for (path, name) in files(&s.source.quarantine, s) {
        let (size, crc32) = crc(&path)?;
        let mut note = path.clone().into_os_string();
        note.push(".reason");
        let reason = fs::read_to_string(&note).unwrap_or_else(|_| "found in quarantine".into());
        let rec = j.insert(entry(&name, size, crc32, &path))?;
        j.apply(
            rec.id,
            Event::Quarantined {
                reason: reason.trim().to_string(),
                path: path.display().to_string(),
            },
        )?;
        c.quarantined += 1;
    }

    let mut pending: Vec<Record> = Vec::new();
    for ent in fs::read_dir(&s.source.outbox)
        .with_context(|| format!("{}: cannot list the outbox", s.source.outbox.display()))?
    {
        let ent = ent?;
        let Ok(name) = intake::name_rule(&ent.file_name(), s).map(str::to_string) else {
            continue;
        };
        // The outbox is untrusted, here too: never through a link, never blocking on
        // a FIFO, never more than the size the handle said.
        let scan = match crate::untrusted::open_regular(&ent.path())? {
            crate::untrusted::Opened::File(f, m) => {
                intake::scan(std::io::Read::take(f, m.len() + 1))?
            }
            crate::untrusted::Opened::Refused(_) | crate::untrusted::Opened::Gone => continue,
        };
        if scan.json.is_err() {
            // The service quarantines it with its reason; rebuild moves no file.
            c.left += 1;
            continue;
        }
        let rec = j.insert(entry(&name, scan.size, scan.crc32, &ent.path()))?;
        if let Some(prev) = j.find_archived(&name, scan.size, scan.crc32)? {
            j.apply(
                rec.id,
                Event::Verified {
                    remote_path: String::new(),
                    archive_path: crate::archive::plan(&s.source.archive, &name, SystemTime::now())
                        .display()
                        .to_string(),
                    note: Some(format!(
                        "duplicate of #{} (in the archive); not sent again",
                        prev.id
                    )),
                },
            )?;
            c.duplicates += 1;
        } else {
            pending.push(rec);
        }
    }

    let transport = transfer::from_settings(&s.destination);
    let mut reach = String::from("not needed");
    if !pending.is_empty() {
        match transport.connect() {
            Ok(mut conn) => {
                reach = "checked".into();
                for rec in &pending {
                    let job = Job {
                        name: &rec.name,
                        size: rec.size,
                        crc32: rec.crc32,
                    };
                    if let Ok(Seen::Same) = conn.look_final(&job) {
                        j.apply(
                            rec.id,
                            Event::Verified {
                                remote_path: format!("{}/{}", inbox_of(s), rec.name),
                                archive_path: crate::archive::plan(
                                    &s.source.archive,
                                    &rec.name,
                                    SystemTime::now(),
                                )
                                .display()
                                .to_string(),
                                note: Some(
                                    "found complete in the inbox during a journal rebuild".into(),
                                ),
                            },
                        )?;
                        c.in_inbox += 1;
                    } else {
                        c.pending += 1;
                    }
                }
            }
            Err(e) => {
                reach = format!("unreachable ({e}); each file is checked against the inbox before it is renamed there anyway");
                c.pending = pending.len();
            }
        }
    }
    j.flush()?;
    c.states = j.counts()?.into_iter().filter(|(_, n)| *n > 0).collect();
    c.inbox = reach;
    c.old = old;
    Ok(c)
}

fn inbox_of(s: &Settings) -> String {
    match &s.destination.url {
        crate::config::Destination::Sftp { path, .. } => path.trim_end_matches('/').to_string(),
        crate::config::Destination::File { path } => path.display().to_string(),
    }
}

fn entry(name: &str, size: u64, crc32: u32, path: &Path) -> NewEntry {
    NewEntry {
        name: name.to_string(),
        size,
        crc32,
        batch: intake::batch_id(SystemTime::now()),
        source_path: path.display().to_string(),
        found_by: "rebuild".into(),
    }
}

fn crc(path: &Path) -> anyhow::Result<(u64, u32)> {
    let f = fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let scan = intake::scan(f).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok((scan.size, scan.crc32))
}

/// Order files under `root` (recursively), with the name they were delivered under
/// (`archive::original_name`: `name.json.1` in the archive is a second `name.json`).
fn files(root: &Path, s: &Settings) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
                continue;
            }
            let Ok(fname) = e.file_name().into_string() else {
                continue;
            };
            if fname.ends_with(".reason") {
                continue;
            }
            let name =
                crate::archive::original_name(&fname, |stem| s.source.matcher.is_match(stem));
            out.push((e.path(), name.to_string()));
        }
    }
    out.sort();
    out
}
