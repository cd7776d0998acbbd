//! `[destination.backup]`: the backup ERP inbox that new deliveries fail over to
//! while the primary is down (see `service::failover`).

use super::url::parse_url;
use super::{ConfigError, Destination};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackup {
    url: String,
    identity: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    after: Option<String>,
    back_after: Option<String>,
}

/// `[destination.backup]`, validated. What it does not name (connections, timeout,
/// temp suffix, rename policy) is the primary's.
#[derive(Clone, Debug)]
pub struct BackupSettings {
    pub url: Destination,
    /// Defaults to the primary's.
    pub identity: PathBuf,
    /// Defaults to the primary's.
    pub known_hosts: PathBuf,
    /// New deliveries go to the backup once the primary has been down this long.
    pub after: Duration,
    /// ... and back to the primary once it has been up again this long.
    pub back_after: Duration,
}

/// What the primary's table says that the backup inherits or must differ from.
pub(super) struct Primary<'a> {
    pub url: &'a Destination,
    pub identity: &'a Path,
    pub known_hosts: &'a Path,
    pub outbox: &'a Path,
}

pub(super) fn parse(
    raw: RawBackup,
    primary: Primary<'_>,
    path: &Path,
    base: &Path,
) -> Result<BackupSettings, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: format!("destination.backup.{key}"),
        reason,
    };
    let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let duration = |key: &str, v: Option<String>, default: &str| {
        let s = v.unwrap_or_else(|| default.to_string());
        match humantime::parse_duration(&s) {
            Ok(d) if d.is_zero() => Err(invalid(key, "must be greater than zero".into())),
            Ok(d) => Ok(d),
            Err(e) => Err(invalid(
                key,
                format!("{s:?} is not a duration ({e}); write it like \"30s\", \"5m\" or \"1h\""),
            )),
        }
    };
    let url = parse_url(&raw.url).map_err(|r| invalid("url", r))?;
    if &url == primary.url {
        return Err(invalid(
            "url",
            "is the primary destination's url; a backup must be another inbox".into(),
        ));
    }
    if let Destination::File { path } = &url {
        if path == primary.outbox {
            return Err(invalid(
                "url",
                "the destination is the outbox itself".into(),
            ));
        }
    }
    Ok(BackupSettings {
        url,
        identity: raw
            .identity
            .map(abs)
            .unwrap_or_else(|| primary.identity.to_path_buf()),
        known_hosts: raw
            .known_hosts
            .map(abs)
            .unwrap_or_else(|| primary.known_hosts.to_path_buf()),
        after: duration("after", raw.after, "5m")?,
        back_after: duration("back_after", raw.back_after, "5m")?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    fn parse_str(text: &str) -> Result<crate::config::Settings, crate::config::ConfigError> {
        parse(text, Path::new("/etc/p.toml"), Path::new("/etc"))
    }

    #[test]
    fn no_backup_table_means_no_backup_and_a_backup_inherits_the_primary_keys() {
        let s = parse_str("[destination]\nurl = \"sftp://erp@a/in\"\n").unwrap();
        assert!(s.destination.backup.is_none());
        let s = parse_str(
            "[destination]\nurl = \"sftp://erp@a/in\"\nidentity = \"k\"\n[destination.backup]\nurl = \"sftp://erp@b/in\"\nafter = \"2s\"\n",
        )
        .unwrap();
        let b = s.destination.backup.unwrap();
        assert_eq!(b.identity, PathBuf::from("/etc/k"));
        assert_eq!(b.known_hosts, s.destination.known_hosts);
        assert_eq!(b.after, Duration::from_secs(2));
        assert_eq!(b.back_after, Duration::from_secs(300));
    }

    #[test]
    fn backup_errors_name_the_key() {
        let cases = [
            ("url = \"ftp://x\"", "[destination.backup.url]"),
            (
                "url = \"sftp://erp@a/in\"",
                "[destination.backup.url]: is the primary",
            ),
            (
                "url = \"sftp://erp@b/in\"\nafter = \"soon\"",
                "[destination.backup.after]: \"soon\" is not a duration",
            ),
            (
                "url = \"sftp://erp@b/in\"\nback_after = \"0s\"",
                "[destination.backup.back_after]: must be greater than zero",
            ),
            (
                "url = \"sftp://erp@b/in\"\nbogus = 1",
                "unknown field `bogus`",
            ),
            ("after = \"1s\"", "missing field `url`"),
        ];
        for (backup, want) in cases {
            let text = format!(
                "[destination]\nurl = \"sftp://erp@a/in\"\n[destination.backup]\n{backup}\n"
            );
            let err = parse_str(&text).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{backup:?} gave {err:?}, wanted {want:?}"
            );
        }
    }
}
