//! `plutus-sync journal …`: list, show, stats, export, rebuild, compact. Printing only; the
//! answers come from `crate::operator`, through the service or straight from disk.

use crate::cli::{JournalArgs, JournalCommand};
use crate::operator::protocol::{DestinationStatus, ListFilter, Stats};
use crate::operator::queries::rfc3339;
use crate::operator::{ask, expect, Answer, Request};
use plutus_state::{now_ms, Event, Record, State};
use std::io::{IsTerminal, Write};

pub fn run(args: &JournalArgs) -> anyhow::Result<bool> {
    let s = super::operator_settings(&args.config)?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        JournalCommand::List {
            state,
            batch,
            since,
            name,
            limit,
            json,
        } => {
            let filter = ListFilter {
                state: *state,
                batch: batch.clone(),
                since_ms: since.map(|d| d.as_millis() as u64),
                name: name.clone(),
                limit: Some(*limit),
            };
            let recs = expect(ask(&s, &Request::List { filter })?, "list", |a| match a {
                Answer::List(r) => Some(r),
                _ => None,
            })?;
            if *json {
                for r in &recs {
                    writeln!(out, "{}", record_json(r)?)?;
                }
            } else {
                print_list(&mut out, &recs, *limit)?;
            }
        }
        JournalCommand::Show { key, json } => {
            let recs = expect(
                ask(&s, &Request::Show { key: key.clone() })?,
                "show",
                |a| match a {
                    Answer::Show(r) => Some(r),
                    _ => None,
                },
            )?;
            for r in &recs {
                if *json {
                    writeln!(out, "{}", record_json(r)?)?;
                } else {
                    print_show(&mut out, r)?;
                }
            }
        }
        JournalCommand::Stats { json } => {
            let st = expect(ask(&s, &Request::Stats)?, "stats", |a| match a {
                Answer::Stats(st) => Some(st),
                _ => None,
            })?;
            if *json {
                writeln!(out, "{}", serde_json::to_string(&st)?)?;
            } else {
                print_stats(&mut out, &st)?;
            }
        }
        JournalCommand::Export { since } => {
            let since_ms = since.map(|d| d.as_millis() as u64);
            let receipts = expect(
                ask(&s, &Request::Export { since_ms })?,
                "export",
                |a| match a {
                    Answer::Export(r) => Some(r),
                    _ => None,
                },
            )?;
            for r in &receipts {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        JournalCommand::Forget {
            key,
            reason,
            dry_run,
        } => {
            let req = Request::Forget {
                key: key.clone(),
                reason: reason.clone(),
                dry_run: *dry_run,
            };
            let f = expect(ask(&s, &req)?, "forget", |a| match a {
                Answer::Forget(f) => Some(f),
                _ => None,
            })?;
            let name = crate::intake::shown(&f.name);
            match &f.refused {
                Some(why) => {
                    writeln!(out, "refused #{} {name}: {why}", f.id)?;
                    return Ok(false);
                }
                None if f.dry_run => writeln!(out, "would forget #{} {name}", f.id)?,
                None => writeln!(
                    out,
                    "forgot #{} {name}: it no longer counts as failed",
                    f.id
                )?,
            }
        }
        JournalCommand::Rebuild { dry_run } => return super::rebuild::run(&s, *dry_run),
        JournalCommand::Compact => {
            let c = crate::operator::compact::compact(&s)?;
            writeln!(
                out,
                "compacted the journal at {}: {} entries, {:.1} MB → {:.1} MB",
                s.journal.path.display(),
                c.entries,
                c.bytes_before as f64 / 1e6,
                c.bytes_after as f64 / 1e6
            )?;
        }
    }
    Ok(true)
}

/// An entry as one JSON line: the journal's record, plus `attempts_made`, the count
/// the table, `show`, `export` and the logs give (`attempts` is the failed ones).
fn record_json(r: &Record) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(r)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("attempts_made".into(), r.attempts_made().into());
    }
    Ok(serde_json::to_string(&v)?)
}

/// "42s", "3m", "5h", "2d": an age at a glance.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=99 => format!("{s}s"),
        100..=5999 => format!("{}m", s / 60),
        6000..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size().map(|(w, _)| w.0 as usize)
}

fn print_list(out: &mut impl Write, recs: &[Record], limit: usize) -> anyhow::Result<()> {
    if recs.is_empty() {
        writeln!(out, "no matching entries")?;
        return Ok(());
    }
    let now = now_ms();
    let name_w = recs
        .iter()
        .map(|r| crate::intake::shown(&r.name).chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let cols = width();
    // The destination column only once some entry has one (a backup is configured).
    let dest_w = if recs.iter().any(|r| r.destination.is_some()) {
        9
    } else {
        0
    };
    let dest = |d: &str| {
        if dest_w == 0 {
            String::new()
        } else {
            format!("{d:<7}  ")
        }
    };
    writeln!(
        out,
        "{:<name_w$}  {:<11}  {}{:>3}  {:>9}  {:<13}  {:>4}  LAST ERROR",
        "NAME",
        "STATE",
        dest("DEST"),
        "ATT",
        "SIZE",
        "BATCH",
        "AGE"
    )?;
    for r in recs {
        let mut line = format!(
            "{:<name_w$}  {:<11}  {}{:>3}  {:>9}  {:<13}  {:>4}  {}",
            crate::intake::shown(&r.name),
            r.state(),
            dest(r.destination.map_or("-", |d| d.as_str())),
            r.attempts_made(),
            r.size,
            r.batch,
            age(now.saturating_sub(r.detected_at)),
            plain(
                r.last_error
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            )
        );
        if let Some(w) = cols {
            if line.chars().count() > w {
                line = line.chars().take(w.saturating_sub(1)).collect::<String>() + "…";
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    if recs.len() >= limit {
        writeln!(out, "(first {limit} shown; --limit N for more)")?;
    }
    Ok(())
}

fn print_show(out: &mut impl Write, r: &Record) -> anyhow::Result<()> {
    writeln!(out, "#{} {}", r.id, crate::intake::shown(&r.name))?;
    writeln!(out, "  state        {}", r.state())?;
    writeln!(out, "  size         {} bytes", r.size)?;
    writeln!(out, "  crc32        {}", r.crc_hex())?;
    writeln!(out, "  batch        {}", r.batch)?;
    writeln!(
        out,
        "  found by     {} at {}",
        r.found_by,
        rfc3339(r.detected_at)
    )?;
    writeln!(out, "  source       {}", plain(&r.source_path))?;
    if let Some(d) = r.destination {
        writeln!(out, "  destination  {d}")?;
    }
    for (label, v) in [
        ("remote", &r.remote_path),
        ("archive", &r.archive_path),
        ("quarantine", &r.quarantine_path),
    ] {
        if let Some(v) = v {
            writeln!(out, "  {label:<12} {}", plain(v))?;
        }
    }
    let failed = match r.attempts {
        0 => String::new(),
        n => format!(" ({n} failed)"),
    };
    writeln!(out, "  attempts     {}{failed}", r.attempts_made())?;
    if let Some(at) = r.next_attempt_at {
        writeln!(out, "  next try     {}", rfc3339(at))?;
    }
    if let Some(e) = &r.last_error {
        writeln!(out, "  last error   {}", plain(e))?;
    }
    writeln!(out, "  history:")?;
    for t in &r.history {
        let from = t.from.map(|f| format!("{f} → ")).unwrap_or_default();
        let detail = match &t.event {
            None => "detected".to_string(),
            Some(Event::Uploaded { remote_path }) => format!("uploaded to {remote_path}"),
            Some(Event::Verified {
                remote_path, note, ..
            }) => format!(
                "verified as {remote_path}{}",
                note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
            ),
            Some(Event::Archived) => "archived".into(),
            Some(Event::ArchivedAs { path }) => {
                format!("archived as {path} (the planned name was taken)")
            }
            Some(Event::Reupload { reason }) => reason.clone(),
            Some(Event::LocalReplaced { note }) => note.clone(),
            Some(Event::Retry {
                error,
                next_attempt_at,
            }) => {
                format!(
                    "attempt failed: {error}; retry at {}",
                    rfc3339(*next_attempt_at)
                )
            }
            Some(Event::Failed { error }) => format!("gave up: {error}"),
            Some(Event::Quarantined { reason, path }) => format!("quarantined to {path}: {reason}"),
            Some(Event::Invalid { reason }) => {
                format!("not a valid order yet: {reason}; left in the outbox for its writer")
            }
            Some(Event::Replay { by }) => format!("replayed by {}", operator(by)),
            Some(Event::Resend { from_path, by }) => {
                format!("re-send from {from_path} forced by {}", operator(by))
            }
            Some(Event::Rehash { size, crc32 }) => {
                format!("file changed: now {size} bytes, crc32 {crc32:08x}")
            }
            Some(Event::Forgotten { reason, by }) => {
                format!("forgotten by {by}: {reason}")
            }
        };
        let took = t
            .elapsed_ms
            .map(|ms| format!(" ({ms} ms)"))
            .unwrap_or_default();
        // Paths and reasons carry file names: nothing reaches the terminal raw.
        let detail = plain(&detail);
        let at = t.destination.map(|d| format!(" [{d}]")).unwrap_or_default();
        writeln!(
            out,
            "    {}  {from}{}  {detail}{took}{at}",
            rfc3339(t.at),
            t.to
        )?;
    }
    Ok(())
}

/// Who replayed: "alice (uid 1001)", or "an operator" in entries from before the
/// journal recorded it.
fn operator(by: &Option<plutus_state::Caller>) -> String {
    by.as_ref()
        .map_or_else(|| "an operator".to_string(), |c| c.to_string())
}

/// `s` with every control character escaped (`\n`, `\u{1b}`), nothing else
/// changed: a name inside a path or a reason cannot forge a line or send a terminal
/// escape.
fn plain(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

fn print_stats(out: &mut impl Write, st: &Stats) -> anyhow::Result<()> {
    let now = now_ms();
    let counts: Vec<String> = State::ALL
        .iter()
        .map(|s| format!("{s} {}", st.counts.get(s).copied().unwrap_or(0)))
        .collect();
    writeln!(out, "files          {}", counts.join(", "))?;
    writeln!(
        out,
        "oldest pending {}",
        st.oldest_pending_at
            .map(|t| format!(
                "{} ago (detected {})",
                age(now.saturating_sub(t)),
                rfc3339(t)
            ))
            .unwrap_or_else(|| "none".into())
    )?;
    writeln!(
        out,
        "last delivery  {}",
        st.last_delivery_at
            .map(|t| format!("{} ({} ago)", rfc3339(t), age(now.saturating_sub(t))))
            .unwrap_or_else(|| "none".into())
    )?;
    writeln!(
        out,
        "delivered      {} in the last hour, {} in the last day",
        st.delivered_last_hour, st.delivered_last_day
    )?;
    writeln!(
        out,
        "failed         {} in the last hour, {} in the last day",
        st.failed_last_hour, st.failed_last_day
    )?;
    match &st.destination {
        None => writeln!(out, "destination    unknown: the service is not running")?,
        Some(DestinationStatus { url, up: true, .. }) => writeln!(out, "destination    up ({url})")?,
        Some(DestinationStatus {
            url,
            failures,
            next_probe_at,
            last_error,
            down_since,
            ..
        }) => writeln!(
            out,
            "destination    DOWN ({url}){}: {failures} failed probes, backing off until {}; last error: {}",
            down_since.map(|t| format!(" since {}", rfc3339(t))).unwrap_or_default(),
            next_probe_at.map(rfc3339).unwrap_or_else(|| "now".into()),
            last_error.as_deref().unwrap_or("?")
        )?,
    }
    if let Some(b) = &st.backup {
        match &**b {
            DestinationStatus { url, up: true, .. } => writeln!(out, "backup         up ({url})")?,
            DestinationStatus {
                url,
                failures,
                down_since,
                last_error,
                ..
            } => writeln!(
                out,
                "backup         DOWN ({url}) since {}: {failures} failed probes; last error: {}",
                down_since.map(rfc3339).unwrap_or_else(|| "?".into()),
                last_error.as_deref().unwrap_or("?")
            )?,
        }
        match st.failed_over_since {
            Some(t) => writeln!(
                out,
                "failed over    since {}: new deliveries go to the backup",
                rfc3339(t)
            )?,
            None => writeln!(out, "failed over    no: new deliveries go to the primary")?,
        }
    }
    if let Some(d) = &st.destination {
        let yes_no = |b: Option<bool>, yes: &str, no: &str| match b {
            Some(true) => yes.to_string(),
            Some(false) => no.to_string(),
            None => "not probed yet".to_string(),
        };
        writeln!(
            out,
            "server         rename: {}; fsync: {}",
            yes_no(
                d.rename_refuses_overwrite,
                "refuses overwrite",
                "REPLACES an existing file"
            ),
            yes_no(d.fsync, "yes", "no (read-back only)")
        )?;
    }
    Ok(())
}
