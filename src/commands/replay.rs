//! `plutus-sync replay`: failed files back to pending, through the service when it
//! runs (it starts them at once) or straight into the journal when it does not.

use crate::cli::ReplayArgs;
use crate::operator::protocol::Selector;
use crate::operator::{ask, expect, Answer, Request};
use std::io::Write;

/// Returns false when some selected file was refused.
pub fn run(args: &ReplayArgs) -> anyhow::Result<bool> {
    let s = super::operator_settings(&args.config)?;
    if args.to == Some(plutus_state::Site::Backup) && s.destination.backup.is_none() {
        anyhow::bail!(
            "--to backup: {}: the config has no [destination.backup]",
            s.origin
        );
    }
    let selector = if let Some(b) = &args.batch {
        Selector::Batch(b.clone())
    } else if args.failed {
        Selector::Failed(args.since.map(|d| d.as_millis() as u64))
    } else {
        Selector::Names(args.names.clone())
    };
    let req = Request::Replay {
        selector,
        dry_run: args.dry_run,
        force: args.force,
        to: args.to,
    };
    let r = expect(ask(&s, &req)?, "replay", |a| match a {
        Answer::Replay(r) => Some(r),
        _ => None,
    })?;
    let mut out = std::io::stdout().lock();
    let verb = if r.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    let names: Vec<&str> = r.replayed.iter().map(|(_, n)| n.as_str()).collect();
    writeln!(
        out,
        "{verb} {}{}{}",
        names.len(),
        if names.is_empty() { "" } else { ": " },
        names.join(", ")
    )?;
    for (name, why) in &r.refused {
        writeln!(out, "refused {name}: {why}")?;
    }
    Ok(r.refused.is_empty())
}
