//! Entry point: logging, arguments, dispatch, and errors turned into one readable
//! message and an exit code. No pipeline logic here.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use plutus_sync::cli::{Cli, Command, LogFormat};
use plutus_sync::config::Settings;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// Logs go to stderr (journald keeps them), or with `[log] file` to a daily-rotated
/// file for hosts without journald. The guard flushes the file writer on exit.
fn init_logging(
    format: LogFormat,
    settings: Option<&Settings>,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let filter = EnvFilter::try_from_env("PLUTUS_SYNC_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, ansi, guard) =
        match settings.and_then(|s| s.log.file.as_ref().map(|f| (f, s.log.keep))) {
            Some((file, keep)) => {
                let dir = file.parent().expect("validated: has a parent");
                let appender = tracing_appender::rolling::Builder::new()
                    .rotation(tracing_appender::rolling::Rotation::DAILY)
                    .filename_prefix(
                        file.file_name()
                            .expect("validated: has a name")
                            .to_string_lossy(),
                    )
                    .max_log_files(keep)
                    .build(dir)
                    .with_context(|| format!("{}: cannot open the log file", file.display()))?;
                let (nb, guard) = tracing_appender::non_blocking(appender);
                (BoxMakeWriter::new(nb), false, Some(guard))
            }
            None => (
                BoxMakeWriter::new(std::io::stderr),
                std::io::stderr().is_terminal(),
                None,
            ),
        };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    Ok(guard)
}

fn fail(e: anyhow::Error) -> ExitCode {
    // `journal export | head`: the reader has all it wanted.
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    // ripgrep's style: the whole chain on one line, hints on their own lines. Our
    // errors already name their cause; add only what the message does not say yet.
    let mut msg = format!("error: {e}");
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(&format!(": {c}"));
        }
    }
    eprintln!("{msg}");
    // `sync` next to a running service: a cron wrapper tells it from an error.
    if e.downcast_ref::<plutus_sync::commands::sync::ServiceRunning>()
        .is_some()
    {
        return ExitCode::from(3);
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service's settings come first: they say where the logs go.
    let settings = match &cli.command {
        Command::Run(a) | Command::Sync(a) => match plutus_sync::commands::settings(a) {
            Ok(s) => Some(s),
            Err(e) => return fail(e),
        },
        _ => None,
    };
    let _log_guard = match init_logging(cli.log_format, settings.as_ref()) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    // One worker thread: the async side only routes (watch events, intake hand-offs,
    // the archiver, the control socket); every blocking step has a thread of its own
    // or the blocking pool. A second worker mostly woke up to look for work it could
    // steal, which at a trickle cost more CPU than the work (issue 17).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
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
            Command::Run(_) => plutus_sync::commands::run::run(settings.expect("loaded above"))
                .await
                .map(|()| true),
            Command::Sync(_) => {
                plutus_sync::commands::sync::run(settings.expect("loaded above")).await
            }
            // Blocking sled reads and one SSH connection: not worth the runtime's care.
            Command::Journal(args) => plutus_sync::commands::journal::run(args),
            Command::Replay(args) => plutus_sync::commands::replay::run(args),
            Command::Check(args) => plutus_sync::commands::check::run(args),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => fail(e),
    }
}
