//! The subcommands: arguments → call → print.

pub mod check;
pub mod journal;
pub mod rebuild;
pub mod replay;
pub mod run;
pub mod sync;

use crate::cli::ConfigArgs;
use crate::config::{self, Settings};
use anyhow::Context;

/// Settings from `-c`, `$PLUTUS_SYNC_CONFIG`, the system path, or the embedded demo.
pub fn settings(args: &ConfigArgs) -> anyhow::Result<Settings> {
    if let Some(dir) = &args.demo {
        std::fs::create_dir_all(dir.join("inbox"))
            .with_context(|| format!("{}: cannot create the demo folder", dir.display()))?;
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("{}: cannot resolve the demo folder", dir.display()))?;
        return Ok(config::demo(&dir));
    }
    let path = config::locate(args.config.as_deref());
    Ok(config::load(&path)?)
}
