//! Command-line interface (clap derive). Parses only: no I/O here.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "plutus-sync",
    version,
    about = "Verified, journaled, near-real-time delivery of order files to an ERP inbox over SFTP",
    after_help = "Exit codes: 0 success; 1 `sync` left files undelivered, `replay` or `journal forget` refused, or `check` found a problem; 2 error (bad config, journal, setup); 3 `sync` refused: the service runs on the same config."
)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Config file [default: $PLUTUS_SYNC_CONFIG, else /etc/plutus-sync/config.toml].
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Use the embedded demo config instead: outbox, archive, quarantine, journal and a
    /// file:// inbox, all under ./plutus-demo (or --demo-dir). A flag, never taking a
    /// value: `journal show --demo NAME` must not read NAME as a folder.
    #[arg(long, conflicts_with = "config", global = true)]
    pub demo: bool,
    /// The demo's folder [default: plutus-demo]; implies --demo.
    #[arg(long, value_name = "DIR", conflicts_with = "config", global = true)]
    pub demo_dir: Option<PathBuf>,
}

/// The demo's folder when none is named, relative to where plutus-sync is started.
pub const DEMO_DIR: &str = "plutus-demo";

impl ConfigArgs {
    /// The demo folder, if the demo was asked for (`--demo` or `--demo-dir`).
    pub fn demo_dir(&self) -> Option<PathBuf> {
        match (&self.demo_dir, self.demo) {
            (Some(d), _) => Some(d.clone()),
            (None, true) => Some(PathBuf::from(DEMO_DIR)),
            (None, false) => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: watch the outbox and deliver every order file until SIGTERM/SIGINT.
    Run(ConfigArgs),
    /// One pass for cron: sweep once, deliver what can be delivered, exit 0 only if
    /// everything found was archived.
    Sync(ConfigArgs),
    /// Inspect the journal (asks the running service, or reads the journal when it is down).
    Journal(JournalArgs),
    /// Put failed files back in the queue (and, with --force, re-send archived ones).
    Replay(ReplayArgs),
    /// Preflight after editing the config: folders, key, connection, host key, inbox.
    /// Run it as the service's user (`sudo -u plutus-sync plutus-sync check`).
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run as root anyway. `check` answers for the user it runs as: as root every
    /// folder looks writable and the key's owner check is against root.
    #[arg(long)]
    pub as_root: bool,
}

#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub command: JournalCommand,
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// One line per file, newest first.
    List {
        /// Only files in this state (pending, sent, verified, archived, failed, quarantined,
        /// invalid, forgotten).
        #[arg(long)]
        state: Option<plutus_state::State>,
        /// Only files of this batch (the id in the logs, like 20261123-1147).
        #[arg(long)]
        batch: Option<String>,
        /// Only files detected within this long (like 1h, 30m, 2d).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only names matching this glob.
        #[arg(long, value_name = "GLOB")]
        name: Option<String>,
        /// At most this many lines.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One file's whole history, by name or by id (#12).
    Show {
        #[arg(value_name = "NAME|ID")]
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Counts per state, age of the oldest pending file, recent deliveries and
    /// failures, and the destination's status.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Delivery receipts as JSON lines, for reconciling with the ERP's imports.
    Export {
        /// Only files archived within this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
    },
    /// Close a failed entry whose local copy is gone: it leaves the failed count (and
    /// the alert), journaled with who (your user) and why. Refused for an entry that
    /// is not failed, or whose file is still in the outbox (replay that instead).
    Forget {
        /// The name (its newest entry) or an id (#12).
        #[arg(value_name = "NAME|ID")]
        key: String,
        /// Why, for the journal (like "order re-entered by hand in the ERP").
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Say what would be forgotten; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Give back the disk space pruned entries held: copy the journal, live keys
    /// only, and swap the copy in atomically. Refuses to run while the service is up.
    Compact,
    /// Rebuild a lost or damaged journal from the outbox, archive, quarantine and the
    /// inbox listing. Refuses to run while the service is up.
    Rebuild {
        /// Say what would be rebuilt; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["batch", "failed", "names"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Every failed file of this batch.
    #[arg(long)]
    pub batch: Option<String>,
    /// Every failed file.
    #[arg(long)]
    pub failed: bool,
    /// With --failed: only those that failed within this long.
    #[arg(long, requires = "failed", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// These files (by name).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Also re-send archived files, from the archive (for an ERP that lost an import).
    #[arg(long)]
    pub force: bool,
    /// Say what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send them to this destination (`primary` or `backup`, with a
    /// `[destination.backup]`), whichever new deliveries go to now.
    #[arg(long, value_name = "primary|backup")]
    pub to: Option<plutus_state::Site>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("plutus-sync").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn demo_is_a_flag_that_never_takes_the_next_argument() {
        let Command::Journal(j) = parse(&["journal", "show", "--demo", "order-1.json"]) else {
            panic!("not journal")
        };
        assert!(matches!(&j.command, JournalCommand::Show { key, .. } if key == "order-1.json"));
        assert_eq!(j.config.demo_dir(), Some(PathBuf::from(DEMO_DIR)));

        let Command::Replay(r) = parse(&["replay", "--demo", "order-1.json"]) else {
            panic!("not replay")
        };
        assert_eq!(r.names, ["order-1.json"]);

        // The folder is its own option, and implies the demo.
        let Command::Run(a) = parse(&["run", "--demo-dir", "d"]) else {
            panic!("not run")
        };
        assert_eq!(a.demo_dir(), Some(PathBuf::from("d")));
        let Command::Run(a) = parse(&["run"]) else {
            panic!("not run")
        };
        assert_eq!(a.demo_dir(), None);

        // `--demo DIR` is no longer a thing: DIR is an unexpected argument.
        assert!(Cli::try_parse_from(["plutus-sync", "run", "--demo", "d"]).is_err());
        assert!(Cli::try_parse_from(["plutus-sync", "run", "--demo", "-c", "x"]).is_err());
    }
}
