//! TOML config → validated `Settings`. Every error names the file, the key and the
//! reason. No network, no directory creation: only reading and checking.
//!
//! The types are here; the TOML text is read and checked in `parse`, the destination
//! URL in `url`.

use globset::GlobMatcher;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod backup;
mod parse;
mod url;

pub use backup::BackupSettings;
pub use parse::parse;
pub use url::Destination;

pub const DEFAULT_PATH: &str = "/etc/plutus-sync/config.toml";
/// Where the control socket is when `[control] socket` is not set: the service's
/// runtime folder (`RuntimeDirectory=` in the unit).
pub const DEFAULT_SOCKET: &str = "/run/plutus-sync/control.sock";
/// The operators' group when `[control] operators` is not set.
pub const DEFAULT_OPERATORS: &str = "plutus-sync-admin";

/// `[metrics] listen`: an address and port, or a port alone (then 127.0.0.1). The
/// metrics have no authentication and name the ERP host, so an address other hosts
/// can reach is refused unless `allow_remote` says it is meant.
fn metrics_address(listen: &str, allow_remote: bool) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = match listen.parse::<u16>() {
        Ok(port) => (std::net::Ipv4Addr::LOCALHOST, port).into(),
        Err(_) => listen.parse().map_err(|e| {
            format!("{listen:?} is not an address and port like \"127.0.0.1:9464\" ({e})")
        })?,
    };
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(format!(
            "{addr} is reachable from other hosts, and the metrics have no authentication; \
             listen on 127.0.0.1, or set [metrics] allow_remote = true if a scraper on \
             another host must reach it (and restrict it with the firewall)"
        ));
    }
    Ok(addr)
}
pub(crate) const ENV_VAR: &str = "PLUTUS_SYNC_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: [{key}]: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// Validated settings, one struct per TOML table, so a stage takes the table it reads
/// (`&settings.source`), not the whole.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file the settings came from ("embedded demo" for `--demo`).
    pub origin: String,
    pub source: SourceSettings,
    pub journal: JournalSettings,
    pub destination: DestinationSettings,
    pub retry: RetrySettings,
    pub control: ControlSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
}

/// `[source]`: where orders come from and what counts as one.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    pub outbox: PathBuf,
    pub archive: PathBuf,
    pub quarantine: PathBuf,
    pub pattern: String,
    pub matcher: GlobMatcher,
    pub sweep_interval: Duration,
    pub settle: Duration,
    /// An invalid file is left in the outbox (state `invalid`) until it has been
    /// unchanged, and not open for writing, this long: its writer may only have paused.
    pub quarantine_after: Duration,
    /// `[source] names = "portable"` (default): only names a Windows inbox takes as
    /// they are; others are quarantined. `"posix"`: any name the pattern takes.
    pub portable_names: bool,
    /// Larger files are quarantined with the reason, not sent: a bound on what the
    /// web shop's account can make the service read and upload.
    pub max_size: u64,
}

/// `[journal]`.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    pub path: PathBuf,
    /// Archived entries older than this are pruned from the journal.
    pub retention: Duration,
    /// How often the running service prunes and looks at the journal's size.
    pub housekeeping_interval: Duration,
    /// The running service compacts the journal once it has doubled since its last
    /// compaction (or since the start) and grown by at least this many bytes.
    pub compact_after_growth: u64,
}

/// `[destination]`: where files go and how the connection behaves.
#[derive(Clone, Debug)]
pub struct DestinationSettings {
    pub url: Destination,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub connections: usize,
    /// Files a connection has in flight at once (their requests interleaved): what
    /// makes a WAN's round trips cost per batch rather than per file.
    pub window: usize,
    pub timeout: Duration,
    pub temp_suffix: String,
    /// Deliver to a server whose rename replaces an existing name, with a stat of the
    /// final name just before each rename (racy; off unless the config says so).
    pub check_then_rename: bool,
    /// `[destination.backup]`: where new deliveries go while the primary is down.
    pub backup: Option<BackupSettings>,
}

impl DestinationSettings {
    /// The backup's settings as a destination of their own: its url and keys, the
    /// primary's everything else, and no backup of its own.
    pub fn backup_destination(&self) -> Option<DestinationSettings> {
        let b = self.backup.as_ref()?;
        Some(DestinationSettings {
            url: b.url.clone(),
            identity: b.identity.clone(),
            known_hosts: b.known_hosts.clone(),
            backup: None,
            ..self.clone()
        })
    }
}

/// `[retry]`: the backoff between attempts.
#[derive(Clone, Debug)]
pub struct RetrySettings {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: u32,
}

/// `[control]`.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    pub socket: PathBuf,
    /// The operators' group: its members (and root) may use every request; the
    /// service's own user may only look; everyone else is refused.
    pub operators: String,
}

/// `[metrics]`.
#[derive(Clone, Debug)]
pub struct MetricsSettings {
    /// Where to serve Prometheus metrics; off when `None`. A loopback address unless
    /// `allow_remote` was set.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[log]`.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// A daily-rotated log file instead of stderr, and how many days to keep.
    pub file: Option<PathBuf>,
    pub keep: usize,
}

/// The config file to read: `-c`, else `$PLUTUS_SYNC_CONFIG`, else the system path.
pub(crate) fn locate(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(ENV_VAR) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Relative paths in the file are relative to the file, wherever we were started.
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    parse(&text, path, &base)
}

/// The embedded demo: everything under `dir`, delivering to `dir/inbox` over `file://`.
/// This is what the README's quick start runs.
pub(crate) fn demo(dir: &Path) -> Settings {
    let text = format!(
        r#"
[source]
outbox = "outbox"
archive = "archive"
quarantine = "quarantine"
settle = "500ms"
quarantine_after = "5s"
[journal]
path = "journal"
[control]
socket = "control.sock"
[destination]
url = "file://{}/inbox"
"#,
        dir.display()
    );
    let mut s = parse(&text, Path::new("embedded demo config"), dir)
        .expect("the embedded demo config is valid");
    s.origin = format!("embedded demo config in {}", dir.display());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid() {
        let s = demo(Path::new("/tmp/demo"));
        assert_eq!(s.source.outbox, PathBuf::from("/tmp/demo/outbox"));
        assert_eq!(
            s.destination.url,
            Destination::File {
                path: "/tmp/demo/inbox".into()
            }
        );
    }
}
