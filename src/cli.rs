//! Command-line interface (clap derive). Parses only: no I/O here.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "plutus-sync",
    version,
    about = "Verified, journaled, near-real-time delivery of order files to an ERP inbox over SFTP",
    after_help = "Exit codes: 0 success; 1 `sync` left files undelivered; 2 error (bad config, journal, setup)."
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
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use the embedded demo config instead: outbox, archive, quarantine, journal and a
    /// file:// inbox, all under DIR.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "plutus-demo", conflicts_with = "config")]
    pub demo: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: watch the outbox and deliver every order file until SIGTERM/SIGINT.
    Run(ConfigArgs),
    /// One pass for cron: sweep once, deliver what can be delivered, exit 0 only if
    /// everything found was archived.
    Sync(ConfigArgs),
}
