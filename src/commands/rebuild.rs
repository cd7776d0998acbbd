//! `plutus-sync journal rebuild`: printing only; `operator::rebuild` does the work.

use crate::config::Settings;
use crate::operator::rebuild::rebuild;

pub fn run(s: &Settings, dry_run: bool) -> anyhow::Result<bool> {
    let c = rebuild(s, dry_run)?;
    let states: Vec<String> = c.states.iter().map(|(st, n)| format!("{st} {n}")).collect();
    println!(
        "{} journal at {} from disk: {} archived, {} quarantined, {} pending, {} already in the inbox (verified), {} duplicates of archived files, {} left for the service to check{}",
        if dry_run { "would rebuild" } else { "rebuilt" },
        s.journal.path.display(),
        c.archived,
        c.quarantined,
        c.pending,
        c.in_inbox,
        c.duplicates,
        c.left,
        c.old.map(|o| format!("; the old journal is at {}", o.display())).unwrap_or_default()
    );
    println!("inbox: {}", c.inbox);
    println!("entries: {}", states.join(", "));
    Ok(true)
}
