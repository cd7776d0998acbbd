//! The subcommands: arguments → call → print.

pub mod check;
pub mod journal;
pub mod rebuild;
pub mod replay;
pub mod run;
pub mod sync;

use crate::cli::{ConfigArgs, DEMO_DIR};
use crate::config::{self, ConfigError, Settings};
use anyhow::Context;
use std::path::Path;

/// Settings from `-c`, `$PLUTUS_SYNC_CONFIG`, the system path, or the embedded demo.
pub fn settings(args: &ConfigArgs) -> anyhow::Result<Settings> {
    if let Some(dir) = args.demo_dir() {
        return demo(&dir);
    }
    let path = config::locate(args.config.as_deref());
    config::load(&path).map_err(|e| with_demo_hint(e, args))
}

/// `settings` for the operator commands (`journal`, `replay`): with no config named
/// and none at the system path, the demo the quick start left in ./plutus-demo is
/// what a newcomer means, so it is used, with a note on stderr saying so.
pub fn operator_settings(args: &ConfigArgs) -> anyhow::Result<Settings> {
    let path = config::locate(args.config.as_deref());
    let default = args.config.is_none() && path == Path::new(config::DEFAULT_PATH);
    if args.demo_dir().is_none()
        && default
        && !path.exists()
        && Path::new(DEMO_DIR).join("journal").is_dir()
    {
        eprintln!(
            "note: no config at {}: using the demo in ./{DEMO_DIR} (as --demo would)",
            path.display()
        );
        return demo(Path::new(DEMO_DIR));
    }
    settings(args)
}

fn demo(dir: &Path) -> anyhow::Result<Settings> {
    std::fs::create_dir_all(dir.join("inbox"))
        .with_context(|| format!("{}: cannot create the demo folder", dir.display()))?;
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("{}: cannot resolve the demo folder", dir.display()))?;
    Ok(config::demo(&dir))
}

/// A config that is not there, and none was named: say how to name one, or where the
/// quick start's demo is.
fn with_demo_hint(e: ConfigError, args: &ConfigArgs) -> anyhow::Error {
    let missing = matches!(&e, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
    if missing && args.config.is_none() {
        anyhow::anyhow!(
            "{e}\n  hint: name a config with -c FILE (or $PLUTUS_SYNC_CONFIG); for the quick start's demo add --demo (its folder: --demo-dir DIR)"
        )
    } else {
        e.into()
    }
}
