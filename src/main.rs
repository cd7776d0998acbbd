//! Entry point: logging, arguments, dispatch, and errors turned into one readable
//! message and an exit code. No pipeline logic here.

use clap::Parser;
use plutus_sync::cli::{Cli, Command, LogFormat};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PLUTUS_SYNC_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        match &cli.command {
            Command::Run(args) => plutus_sync::commands::run::run(args).await.map(|()| true),
            Command::Sync(args) => plutus_sync::commands::sync::run(args).await,
            // Blocking sled reads and one SSH connection: not worth the runtime's care.
            Command::Journal(args) => plutus_sync::commands::journal::run(args),
            Command::Replay(args) => plutus_sync::commands::replay::run(args),
            Command::Check(args) => plutus_sync::commands::check::run(args),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // ripgrep's style: the whole chain on one line, hints on their own lines.
            // Our errors already name their cause in their message; add only what the
            // message does not say yet.
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(&format!(": {c}"));
                }
            }
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}
