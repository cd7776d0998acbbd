//! TOML text → validated [`Settings`]: defaults, paths made absolute, and every
//! check that names the key it refuses.

use super::url::parse_url;
use super::{
    ConfigError, ControlSettings, Destination, DestinationSettings, JournalSettings, LogSettings,
    MetricsSettings, RetrySettings, Settings, SourceSettings,
};
use globset::Glob;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    source: RawSource,
    #[serde(default)]
    journal: RawJournal,
    destination: Option<RawDestination>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    file: Option<PathBuf>,
    keep: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<PathBuf>,
    operators: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSource {
    outbox: Option<PathBuf>,
    archive: Option<PathBuf>,
    quarantine: Option<PathBuf>,
    pattern: Option<String>,
    sweep_interval: Option<String>,
    settle: Option<String>,
    quarantine_after: Option<String>,
    names: Option<String>,
    max_size: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    path: Option<PathBuf>,
    retention: Option<String>,
    housekeeping_interval: Option<String>,
    compact_after_growth: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    url: String,
    identity: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    connections: Option<usize>,
    window: Option<usize>,
    timeout: Option<String>,
    temp_suffix: Option<String>,
    overwriting_rename: Option<String>,
    backup: Option<super::backup::RawBackup>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial: Option<String>,
    max: Option<String>,
    max_attempts: Option<u32>,
}

/// Parse and validate. Relative paths are taken from `base` (the config file's folder),
/// so a config and its folders can move together.
pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Settings, ConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })?;
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let duration = |key: &str, v: Option<String>, default: &str| -> Result<Duration, ConfigError> {
        let s = v.unwrap_or_else(|| default.to_string());
        let d = humantime::parse_duration(&s).map_err(|e| {
            invalid(
                key,
                format!("{s:?} is not a duration ({e}); write it like \"30s\", \"5m\" or \"1h\""),
            )
        })?;
        if d.is_zero() {
            return Err(invalid(key, "must be greater than zero".into()));
        }
        Ok(d)
    };

    let spool = Path::new("/var/spool/plutus-sync");
    let src = raw.source;
    let outbox = abs(src.outbox.unwrap_or_else(|| spool.join("outbox")));
    let archive = abs(src.archive.unwrap_or_else(|| spool.join("archive")));
    let quarantine = abs(src.quarantine.unwrap_or_else(|| spool.join("quarantine")));
    for (key, p) in [
        ("source.archive", &archive),
        ("source.quarantine", &quarantine),
    ] {
        if p == &outbox || p.starts_with(&outbox) {
            return Err(invalid(
                key,
                format!(
                    "{} is the outbox or inside it; it must be a folder of its own beside it",
                    p.display()
                ),
            ));
        }
    }
    if archive == quarantine {
        return Err(invalid(
            "source.quarantine",
            "must differ from source.archive".into(),
        ));
    }
    let pattern = src.pattern.unwrap_or_else(|| "*.json".into());
    if pattern.contains('/') {
        return Err(invalid(
            "source.pattern",
            format!("{pattern:?} is matched against file names only; it cannot contain '/'"),
        ));
    }
    let matcher = Glob::new(&pattern)
        .map_err(|e| invalid("source.pattern", format!("{pattern:?}: {e}")))?
        .compile_matcher();
    let sweep_interval = duration("source.sweep_interval", src.sweep_interval, "5m")?;
    let settle = duration("source.settle", src.settle, "2s")?;
    let quarantine_after = duration("source.quarantine_after", src.quarantine_after, "10m")?;
    if quarantine_after <= settle {
        return Err(invalid(
            "source.quarantine_after",
            format!(
                "{} is not longer than settle ({}): a file must be given longer to become valid than to settle",
                humantime::format_duration(quarantine_after),
                humantime::format_duration(settle)
            ),
        ));
    }
    let max_size_text = src.max_size.as_deref().unwrap_or("64MiB");
    let max_size = parse_size(max_size_text).ok_or_else(|| {
        invalid(
            "source.max_size",
            format!("{max_size_text:?} is not a size such as \"64MiB\" (bytes, KiB, MiB or GiB; more than 0)"),
        )
    })?;
    let portable_names = match src.names.as_deref() {
        None | Some("portable") => true,
        Some("posix") => false,
        Some(other) => {
            return Err(invalid(
                "source.names",
                format!("{other:?} is not one of \"portable\", \"posix\""),
            ))
        }
    };

    let journal = abs(raw
        .journal
        .path
        .unwrap_or_else(|| PathBuf::from("/var/lib/plutus-sync/journal")));
    let retention = duration("journal.retention", raw.journal.retention, "30d")?;
    let housekeeping_interval = duration(
        "journal.housekeeping_interval",
        raw.journal.housekeeping_interval,
        "5m",
    )?;
    let growth_text = raw
        .journal
        .compact_after_growth
        .as_deref()
        .unwrap_or("64MiB");
    let compact_after_growth = parse_size(growth_text).ok_or_else(|| {
        invalid(
            "journal.compact_after_growth",
            format!("{growth_text:?} is not a size such as \"64MiB\" (bytes, KiB, MiB or GiB; more than 0)"),
        )
    })?;
    // The service's runtime folder (RuntimeDirectory= in the unit): the socket is
    // not data, and /run is cleaned at boot.
    let socket = raw
        .control
        .socket
        .map(abs)
        .unwrap_or_else(|| PathBuf::from(super::DEFAULT_SOCKET));
    let operators = raw
        .control
        .operators
        .unwrap_or_else(|| super::DEFAULT_OPERATORS.to_string());
    if operators.is_empty() || operators.contains([':', '\n', ' ', '/']) {
        return Err(invalid(
            "control.operators",
            format!("{operators:?} is not a group name"),
        ));
    }

    let metrics_listen = match raw.metrics.listen {
        None => None,
        Some(a) => Some(
            super::metrics_address(&a, raw.metrics.allow_remote == Some(true))
                .map_err(|reason| invalid("metrics.listen", reason))?,
        ),
    };
    let log_file = raw.log.file.map(abs);
    if let Some(f) = &log_file {
        if f.file_name().is_none() || f.parent().is_none() {
            return Err(invalid(
                "log.file",
                format!("{} names no file", f.display()),
            ));
        }
    }
    let log_keep = raw.log.keep.unwrap_or(14);
    if log_keep == 0 {
        return Err(invalid("log.keep", "must be at least 1".into()));
    }

    let Some(dest) = raw.destination else {
        return Err(invalid(
            "destination",
            "missing; add a [destination] table with url = \"sftp://user@host:port/inbox\" or \"file:///path\"".into(),
        ));
    };
    let destination = parse_url(&dest.url).map_err(|r| invalid("destination.url", r))?;
    if let Destination::File { path } = &destination {
        if path == &outbox {
            return Err(invalid(
                "destination.url",
                "the destination is the outbox itself".into(),
            ));
        }
    }
    let identity = abs(dest
        .identity
        .unwrap_or_else(|| PathBuf::from("/etc/plutus-sync/id_ed25519")));
    let known_hosts = abs(dest
        .known_hosts
        .unwrap_or_else(|| PathBuf::from("/etc/plutus-sync/known_hosts")));
    let connections = dest.connections.unwrap_or(2);
    if !(1..=32).contains(&connections) {
        return Err(invalid(
            "destination.connections",
            format!("{connections} is out of range 1..=32"),
        ));
    }
    let window = dest.window.unwrap_or(64);
    if !(1..=1024).contains(&window) {
        return Err(invalid(
            "destination.window",
            format!("{window} is out of range 1..=1024"),
        ));
    }
    let timeout = duration("destination.timeout", dest.timeout, "30s")?;
    let temp_suffix = dest.temp_suffix.unwrap_or_else(|| ".part".into());
    // An empty suffix would make the temp name the final name: the rename onto itself
    // that deletes the file on some Win32-OpenSSH versions, and a half file visible.
    if temp_suffix.is_empty() || temp_suffix.contains('/') || temp_suffix.contains('\\') {
        return Err(invalid(
            "destination.temp_suffix",
            format!("{temp_suffix:?} must be non-empty and hold no path separator"),
        ));
    }
    if matcher.is_match(format!("order{temp_suffix}"))
        || matcher.is_match(format!("order.json.1-0000000a{temp_suffix}"))
    {
        return Err(invalid(
            "destination.temp_suffix",
            format!("temp names ending in {temp_suffix:?} would match source.pattern {pattern:?}; the ERP could import them half-written"),
        ));
    }

    // A server whose rename replaces an existing name is refused unless the operator
    // accepts the racy stat-then-rename by name (see the example config).
    let check_then_rename = match dest.overwriting_rename.as_deref() {
        None | Some("refuse") => false,
        Some("check-then-rename") => true,
        Some(other) => {
            return Err(invalid(
                "destination.overwriting_rename",
                format!("{other:?} is not one of \"refuse\", \"check-then-rename\""),
            ))
        }
    };

    let backup = match dest.backup {
        None => None,
        Some(raw) => Some(super::backup::parse(
            raw,
            super::backup::Primary {
                url: &destination,
                identity: &identity,
                known_hosts: &known_hosts,
                outbox: &outbox,
            },
            path,
            base,
        )?),
    };

    let retry_initial = duration("retry.initial", raw.retry.initial, "1s")?;
    let retry_max = duration("retry.max", raw.retry.max, "5m")?;
    if retry_max < retry_initial {
        return Err(invalid(
            "retry.max",
            format!(
                "{} is shorter than retry.initial ({})",
                humantime::format_duration(retry_max),
                humantime::format_duration(retry_initial)
            ),
        ));
    }
    let max_attempts = raw.retry.max_attempts.unwrap_or(10);
    if max_attempts == 0 {
        return Err(invalid("retry.max_attempts", "must be at least 1".into()));
    }

    Ok(Settings {
        origin: path.display().to_string(),
        source: SourceSettings {
            outbox,
            archive,
            quarantine,
            pattern,
            matcher,
            sweep_interval,
            settle,
            quarantine_after,
            portable_names,
            max_size,
        },
        journal: JournalSettings {
            path: journal,
            retention,
            housekeeping_interval,
            compact_after_growth,
        },
        destination: DestinationSettings {
            url: destination,
            identity,
            known_hosts,
            connections,
            window,
            timeout,
            temp_suffix,
            check_then_rename,
            backup,
        },
        retry: RetrySettings {
            initial: retry_initial,
            max: retry_max,
            max_attempts,
        },
        control: ControlSettings { socket, operators },
        metrics: MetricsSettings {
            listen: metrics_listen,
        },
        log: LogSettings {
            file: log_file,
            keep: log_keep,
        },
    })
}

/// A size: a number of bytes, or a number with `KiB`, `MiB` or `GiB`. `None` if it
/// is not one (or is zero).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    num.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| n.checked_mul(mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_binary_units_and_never_zero() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("1500"), Some(1500));
        assert_eq!(parse_size("2KiB"), Some(2048));
        for bad in ["", "0", "64MB", "-1", "1.5MiB", "MiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    fn parse_str(text: &str) -> Result<Settings, ConfigError> {
        parse(text, Path::new("/etc/p.toml"), Path::new("/etc"))
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let s = parse_str("[destination]\nurl = \"sftp://erp@10.0.0.2/C:/ERP/inbox\"\n").unwrap();
        assert_eq!(
            s.source.outbox,
            PathBuf::from("/var/spool/plutus-sync/outbox")
        );
        assert_eq!(s.source.sweep_interval, Duration::from_secs(300));
        assert_eq!(s.source.settle, Duration::from_secs(2));
        assert_eq!(s.source.quarantine_after, Duration::from_secs(600));
        assert_eq!(s.destination.connections, 2);
        assert_eq!(s.destination.window, 64);
        assert_eq!(s.destination.temp_suffix, ".part");
        assert_eq!(
            (s.retry.initial, s.retry.max),
            (Duration::from_secs(1), Duration::from_secs(300))
        );
        assert_eq!(s.retry.max_attempts, 10);
        assert_eq!(s.journal.retention, Duration::from_secs(30 * 86400));
        assert_eq!(s.journal.housekeeping_interval, Duration::from_secs(300));
        assert_eq!(s.journal.compact_after_growth, 64 << 20);
        assert_eq!(
            s.control.socket,
            PathBuf::from("/run/plutus-sync/control.sock")
        );
        assert_eq!(s.control.operators, "plutus-sync-admin");
        assert_eq!(s.metrics.listen, None);
        assert_eq!(
            s.destination.url,
            Destination::Sftp {
                user: "erp".into(),
                host: "10.0.0.2".into(),
                port: 22,
                path: "/C:/ERP/inbox".into()
            }
        );
        assert!(s.source.matcher.is_match("order-2026-000001.json"));
        assert!(!s.source.matcher.is_match("order-2026-000001.json.part"));
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_reason() {
        let cases = [
            ("[source]\nsettle = \"soon\"\n[destination]\nurl=\"file:///x\"", "[source.settle]: \"soon\" is not a duration"),
            ("[source]\nsettle = \"2s\"\nquarantine_after = \"1s\"\n[destination]\nurl=\"file:///x\"", "[source.quarantine_after]: 1s is not longer than settle (2s)"),
            ("[destination]\nurl = \"ftp://x/y\"", "[destination.url]: \"ftp://x/y\": expected sftp://"),
            ("[destination]\nurl = \"sftp://host/in\"", "the user is missing"),
            ("[destination]\nurl = \"sftp://u@h:99999/in\"", "is not a port number"),
            ("[destination]\nurl = \"file:///x\"\ntemp_suffix = \"\"", "[destination.temp_suffix]"),
            ("[destination]\nurl = \"file:///x\"\nconnections = 0", "[destination.connections]: 0 is out of range"),
            ("[destination]\nurl = \"file:///x\"\nwindow = 0", "[destination.window]: 0 is out of range"),
            ("[retry]\nmax = \"1s\"\ninitial = \"1m\"\n[destination]\nurl = \"file:///x\"", "[retry.max]"),
            ("[source]\noutbox = \"/s/o\"\narchive = \"/s/o/a\"\n[destination]\nurl = \"file:///x\"", "[source.archive]"),
            ("[source]\nbogus = 1\n[destination]\nurl = \"file:///x\"", "unknown field `bogus`"),
            ("[source]\n", "[destination]: missing"),
            ("[metrics]\nlisten = \"localhost\"\n[destination]\nurl = \"file:///x\"", "[metrics.listen]: \"localhost\" is not an address"),
            ("[log]\nkeep = 0\n[destination]\nurl = \"file:///x\"", "[log.keep]: must be at least 1"),
            ("[metrics]\nlisten = \"0.0.0.0:9464\"\n[destination]\nurl = \"file:///x\"", "[metrics.listen]: 0.0.0.0:9464 is reachable from other hosts, and the metrics have no authentication; listen on 127.0.0.1, or set [metrics] allow_remote = true"),
            ("[metrics]\nlisten = \"[::]:9464\"\nallow_remote = false\n[destination]\nurl = \"file:///x\"", "[metrics.listen]: [::]:9464 is reachable"),
            ("[control]\noperators = \"\"\n[destination]\nurl = \"file:///x\"", "[control.operators]: \"\" is not a group name"),
            ("[journal]\ncompact_after_growth = \"0\"\n[destination]\nurl = \"file:///x\"", "[journal.compact_after_growth]: \"0\" is not a size"),
            ("[journal]\nhousekeeping_interval = \"0s\"\n[destination]\nurl = \"file:///x\"", "[journal.housekeeping_interval]: must be greater than zero"),
        ];
        for (text, want) in cases {
            let err = parse_str(text).unwrap_err().to_string();
            assert!(err.starts_with("/etc/p.toml: "), "{err}");
            assert!(err.contains(want), "{text:?} gave {err:?}, wanted {want:?}");
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_folder() {
        let s = parse_str(
            "[source]\noutbox = \"o\"\n[destination]\nurl = \"file:///srv/in\"\nidentity = \"k\"",
        )
        .unwrap();
        assert_eq!(s.source.outbox, PathBuf::from("/etc/o"));
        assert_eq!(s.destination.identity, PathBuf::from("/etc/k"));
    }

    #[test]
    fn metrics_listen_on_loopback_unless_remote_is_allowed_by_name() {
        let listen = |m: &str| {
            parse_str(&format!(
                "[metrics]\n{m}\n[destination]\nurl = \"file:///x\""
            ))
            .map(|s| s.metrics.listen.map(|a| a.to_string()))
        };
        assert_eq!(
            listen("listen = \"9464\"").unwrap().as_deref(),
            Some("127.0.0.1:9464")
        );
        assert_eq!(
            listen("listen = \"127.0.0.1:9464\"").unwrap().as_deref(),
            Some("127.0.0.1:9464")
        );
        assert_eq!(
            listen("listen = \"[::1]:9464\"").unwrap().as_deref(),
            Some("[::1]:9464")
        );
        assert_eq!(
            listen("listen = \"0.0.0.0:9464\"\nallow_remote = true")
                .unwrap()
                .as_deref(),
            Some("0.0.0.0:9464")
        );
        assert!(listen("listen = \"192.0.2.7:9464\"").is_err());
        assert_eq!(listen("allow_remote = true").unwrap(), None);
    }
}
