//! Packaging checks: the systemd unit's hardening and the .deb (see packaging/).
//!
//! The .deb tests take the package from `$PLUTUS_DEB`, which tests/ci.sh builds with
//! `cargo deb` before `cargo test`. Building it from here is no option: the release
//! build would wait on the build lock this very `cargo test` holds, or, in a target
//! dir of its own, take both cores from the timing-sensitive tests running beside it.
//! They are `#[ignore]`d (tests/ci.sh runs them with `--ignored`); without
//! `$PLUTUS_DEB` they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/systemd/plutus-sync.service"
);

// ---------------------------------------------------------------------------
// The systemd unit

#[test]
fn the_systemd_unit_scores_2_0_or_lower_on_systemd_analyze_security() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", UNIT])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze: {e}\n  hint: tests/ci.sh installs it (Debian package systemd)"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "systemd-analyze printed no overall exposure level ({}):\n{stdout}\n{stderr}",
                out.status
            )
        });
    let score: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    let flagged: Vec<&str> = stdout.lines().filter(|l| l.starts_with('✗')).collect();
    assert!(
        score <= 2.0,
        "{line}\n  the unit must score 2.0 or lower; flagged:\n{}",
        flagged.join("\n")
    );
    // A misspelt setting is ignored with a warning, and would only show as a worse
    // score once it mattered.
    let ignored: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ignoring") || l.contains("Unknown"))
        .collect();
    assert!(
        ignored.is_empty(),
        "systemd ignores part of the unit:\n{}",
        ignored.join("\n")
    );
    eprintln!("{line}");
}

/// `key=value` settings of one section of a unit file, in order; a key may repeat.
fn unit_settings(section: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(UNIT).unwrap();
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).to_string();
        } else if !line.is_empty() && !line.starts_with('#') && current == section {
            let (k, v) = line.split_once('=').expect("key=value");
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn unit_values(settings: &[(String, String)], key: &str) -> Vec<String> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn the_systemd_unit_runs_the_service_the_way_the_service_expects() {
    let s = unit_settings("Service");
    let one = |key: &str| {
        let v = unit_values(&s, key);
        assert_eq!(v.len(), 1, "{key} must be set once in {UNIT}, found {v:?}");
        v[0].clone()
    };
    // READY=1, WATCHDOG=1 and STOPPING=1 come from the main process (src/shutdown.rs).
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("WatchdogSec"), "30s");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("User"), "plutus-sync");
    assert_eq!(one("Group"), "plutus-sync");
    // The control socket's default folder is the unit's runtime folder, and every
    // local user reaches it (the service judges each peer itself).
    assert_eq!(one("RuntimeDirectory"), "plutus-sync");
    assert_eq!(one("RuntimeDirectoryMode"), "0755");
    assert_eq!(
        Path::new(plutus_sync::config::DEFAULT_SOCKET).parent(),
        Some(Path::new("/run/plutus-sync"))
    );
    // In a user namespace of its own, SO_PEERCRED would show every operator as
    // "nobody" (src/operator/access.rs).
    assert!(
        unit_values(&s, "PrivateUsers").iter().all(|v| v == "no"),
        "PrivateUsers= hides the control socket's peers from the service"
    );
    assert_eq!(
        one("ExecStart"),
        format!(
            "/usr/bin/plutus-sync run -c {}",
            plutus_sync::config::DEFAULT_PATH
        )
    );
    // The benches start the service with the unit's malloc setting, so their RSS
    // figures are the installed service's.
    assert_eq!(
        one("Environment"),
        format!(
            "MALLOC_ARENA_MAX={}",
            plutus_testkit::service::UNIT_MALLOC_ARENA_MAX
        )
    );
    assert_eq!(one("LimitNOFILE"), "65536");
    assert_eq!(
        unit_values(&unit_settings("Install"), "WantedBy"),
        ["multi-user.target"]
    );
}

#[test]
fn the_systemd_unit_lets_the_service_write_every_path_the_shipped_config_names() {
    let s = unit_settings("Service");
    assert_eq!(unit_values(&s, "ProtectSystem"), ["strict"]);
    let mut writable: Vec<PathBuf> = unit_values(&s, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|p| PathBuf::from(p.trim_start_matches('-')))
        .collect();
    for (key, base) in [
        ("StateDirectory", "/var/lib"),
        ("LogsDirectory", "/var/log"),
        ("RuntimeDirectory", "/run"),
        ("CacheDirectory", "/var/cache"),
    ] {
        for v in unit_values(&s, key) {
            writable.extend(v.split_whitespace().map(|d| Path::new(base).join(d)));
        }
    }

    let example = Path::new(MANIFEST_DIR).join("packaging/config/example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let c = plutus_sync::config::parse(&text, &example, Path::new("/etc/plutus-sync"))
        .unwrap_or_else(|e| panic!("the shipped config does not load: {e}"));
    let mut needed = vec![
        ("source.outbox", c.source.outbox.clone()),
        ("source.archive", c.source.archive.clone()),
        ("source.quarantine", c.source.quarantine.clone()),
        ("journal.path", c.journal.path.clone()),
        ("control.socket", c.control.socket.clone()),
    ];
    // The log file's folder, whether the example turns the log file on or not.
    needed.push((
        "log.file",
        c.log
            .file
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/log/plutus-sync/plutus-sync.log")),
    ));
    for (key, path) in needed {
        assert!(
            writable.iter().any(|w| path.starts_with(w)),
            "{key} = {} is read-only under the unit (ProtectSystem=strict); writable: {writable:?}",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------
// The .deb

/// The alert rules load, and their promtool unit tests (each alert firing and not
/// firing: packaging/monitoring/plutus-sync.rules.test.yml) pass.
#[test]
fn the_alert_rules_pass_promtool_and_their_firing_and_not_firing_tests() {
    let dir = Path::new(MANIFEST_DIR).join("packaging/monitoring");
    need_tool("promtool", "prometheus");
    ok(Command::new("promtool")
        .args(["check", "rules", "plutus-sync.rules.yml"])
        .current_dir(&dir));
    // promtool resolves rule_files relative to the test file's folder.
    let out = ok(Command::new("promtool")
        .args(["test", "rules", "plutus-sync.rules.test.yml"])
        .current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_debian_changelog_starts_with_the_crate_version() {
    let path = Path::new(MANIFEST_DIR).join("packaging/deb/changelog");
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap_or_default();
    let want = format!("plutus-sync ({}-", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&want),
        "{}: the newest entry is {first:?}, the crate is {}\n  hint: add an entry on top (dch -v {}-1), or lintian and users see a stale changelog",
        path.display(),
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION")
    );
}

/// The package tests/ci.sh built. These tests are `#[ignore]`d, so a local `cargo
/// test` lists them as ignored rather than passing them; run with `--ignored`, they
/// fail without the package.
fn package_under_test() -> Option<PathBuf> {
    match std::env::var_os("PLUTUS_DEB") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "PLUTUS_DEB={}: no such file", p.display());
            Some(p)
        }
        _ => panic!(
            "PLUTUS_DEB is not set: the .deb tests need the package\n  hint: tests/ci.sh builds it with `cargo deb` and exports PLUTUS_DEB=$(ls target/debian/plutus-sync_*.deb)"
        ),
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run `cmd`, panic with its output unless it succeeds, return its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn need_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| d.join(tool).is_file())
            || ["/usr/sbin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(tool).is_file())
    });
    assert!(
        found,
        "{tool} is missing\n  hint: tests/ci.sh installs it (Debian package {package})"
    );
}

fn deb_field(deb: &Path, field: &str) -> String {
    ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field))
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs the .deb that tests/ci.sh builds (PLUTUS_DEB); tests/ci.sh runs it"]
fn lintian_finds_nothing_in_the_package_that_is_not_explained() {
    let Some(deb) = package_under_test() else {
        return;
    };
    need_tool("lintian", "lintian");
    let out = output(
        Command::new("lintian")
            .args(["--display-info", "--no-tag-display-limit"])
            .arg(&deb),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{text}");
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("E:")
                || l.starts_with("W:")
                || l.contains("unused-override")
                || l.contains("mismatched-override")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "lintian on {}:\n{}\n  fix them, or override one in packaging/deb/lintian-overrides with its reason there and in packaging/deb/README.md",
        deb.display(),
        bad.join("\n")
    );

    // Every override is explained in the README.
    let readme =
        std::fs::read_to_string(Path::new(MANIFEST_DIR).join("packaging/deb/README.md")).unwrap();
    let overrides =
        std::fs::read_to_string(Path::new(MANIFEST_DIR).join("packaging/deb/lintian-overrides"))
            .unwrap();
    for line in overrides
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let tag = line
            .split_once(':')
            .map(|(_, t)| t)
            .unwrap_or(line)
            .split_whitespace()
            .next()
            .unwrap();
        assert!(
            readme.contains(tag),
            "the lintian override {tag} is not explained in packaging/deb/README.md"
        );
    }
}

/// `plutus-sync`, `plutus-sync-journal`, `plutus-sync-journal-forget`, …: the man page
/// of every command clap knows, as clap_mangen names them.
fn commands(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
    out.push(prefix.to_string());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() != "help" {
            commands(sub, &format!("{prefix}-{}", sub.get_name()), out);
        }
    }
}

#[test]
#[ignore = "needs the .deb that tests/ci.sh builds (PLUTUS_DEB); tests/ci.sh runs it"]
fn the_deb_ships_the_cron_wrapper_man_pages_completions_docs_and_the_example_config() {
    let Some(deb) = package_under_test() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(work.path()));
    let root = work.path();
    let same = |installed: &str, source: &str| {
        let got = std::fs::read(root.join(installed))
            .unwrap_or_else(|e| panic!("{installed} not in the package: {e}"));
        let want = std::fs::read(Path::new(MANIFEST_DIR).join(source)).unwrap();
        assert!(got == want, "{installed} is not {source} as it is now");
    };
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };

    // The cron wrapper, executable.
    same(
        "usr/share/plutus-sync/sync_plutus.sh",
        "packaging/cron/sync_plutus.sh",
    );
    assert_eq!(mode("usr/share/plutus-sync/sync_plutus.sh"), 0o755);

    // The docs and the config reference, as in the tree.
    for (installed, source) in [
        (
            "usr/share/doc/plutus-sync/OPERATIONS.md",
            "docs/OPERATIONS.md",
        ),
        (
            "usr/share/doc/plutus-sync/ARCHITECTURE.md",
            "docs/ARCHITECTURE.md",
        ),
        ("usr/share/doc/plutus-sync/GUIDE.md", "docs/GUIDE.md"),
        (
            "usr/share/doc/plutus-sync/examples/config.toml",
            "packaging/config/example.toml",
        ),
    ] {
        same(installed, source);
        assert_eq!(mode(installed), 0o644, "{installed}");
    }

    // A man page for every command, gzipped, and `man -l` renders them cleanly.
    let mut names = Vec::new();
    commands(
        &<plutus_sync::cli::Cli as clap::CommandFactory>::command(),
        "plutus-sync",
        &mut names,
    );
    assert!(names.contains(&"plutus-sync-journal-forget".to_string()));
    need_tool("man", "man-db");
    for name in &names {
        let page = root.join(format!("usr/share/man/man1/{name}.1.gz"));
        assert!(page.is_file(), "no man page {name}.1.gz in the package");
        let out = output(
            Command::new("man")
                .args(["--warnings", "-E", "UTF-8", "-l"])
                .arg(&page)
                .env("MANWIDTH", "80")
                .env("LC_ALL", "C.UTF-8"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.is_empty(),
            "man -l {name}: {err}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("SYNOPSIS"),
            "{name}: no SYNOPSIS"
        );
    }

    // Completions where bash-completion, zsh and fish look for them.
    for (path, word) in [
        (
            "usr/share/bash-completion/completions/plutus-sync",
            "--demo-dir",
        ),
        (
            "usr/share/zsh/vendor-completions/_plutus-sync",
            "--demo-dir",
        ),
        (
            "usr/share/fish/vendor_completions.d/plutus-sync.fish",
            "-l demo-dir",
        ),
    ] {
        let text = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("{path} not in the package: {e}"));
        assert!(text.contains("forget") && text.contains(word), "{path}");
    }
}

/// A root file system to install into: a copy of a cached debootstrap, removed on drop.
struct Root {
    dir: tempfile::TempDir,
}

const CHROOT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

impl Root {
    fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn file(&self, p: &str) -> PathBuf {
        self.path().join(p.trim_start_matches('/'))
    }

    fn sh_cmd(&self, script: &str) -> Command {
        let mut c = Command::new("chroot");
        c.arg(self.path())
            .args(["/usr/bin/env", "-i"])
            .arg(format!("PATH={CHROOT_PATH}"))
            .args([
                "DEBIAN_FRONTEND=noninteractive",
                "LC_ALL=C",
                "/bin/sh",
                "-ec",
                script,
            ]);
        c
    }

    /// Run a shell script as root inside; panic unless it succeeds.
    fn sh(&self, script: &str) -> String {
        ok(&mut self.sh_cmd(script))
    }

    /// Run a shell script inside as `user` with primary group `group` and the
    /// supplementary `groups` (comma-separated, may be empty); its output either way.
    fn sh_as(&self, user: &str, group: &str, groups: &str, script: &str) -> Output {
        let groups = if groups.is_empty() {
            "--clear-groups".to_string()
        } else {
            format!("--groups={groups}")
        };
        output(&mut self.sh_cmd(&format!(
            "exec setpriv --reuid={user} --regid={group} {groups} -- /bin/sh -c '{}'",
            script.replace('\'', r"'\''")
        )))
    }

    /// `user:group mode` of a path, names as the root's own passwd and group say.
    fn stat(&self, p: &str) -> String {
        self.sh(&format!("stat -c '%U:%G %a' {p}"))
            .trim()
            .to_string()
    }

    fn exists(&self, p: &str) -> bool {
        self.file(p).symlink_metadata().is_ok()
    }

    fn has_account(&self, db: &str, name: &str) -> bool {
        output(&mut self.sh_cmd(&format!("getent {db} {name}")))
            .status
            .success()
    }

    /// The groups `user` is in (primary and supplementary), sorted.
    fn groups_of(&self, user: &str) -> Vec<String> {
        let mut g: Vec<String> = self
            .sh(&format!("id -Gn {user}"))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        g.sort();
        g
    }

    fn dpkg(&self, args: &str) -> String {
        let out = output(&mut self.sh_cmd(&format!("dpkg {args}")));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "dpkg {args} failed ({}):\n{text}",
            out.status
        );
        text
    }

    fn status(&self) -> String {
        let out = output(
            &mut self.sh_cmd("dpkg-query -W -f='${db:Status-Abbrev}${Version}' plutus-sync"),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The owners and modes of every path the package installs or makes, and its groups:
/// the service's own (plutus-sync), the writers' (plutus-outbox, which the service is
/// in too) and the operators' (plutus-sync-admin, which it is not).
fn expect_layout(root: &Root, when: &str) {
    for (path, want) in [
        ("/etc/plutus-sync", "root:plutus-sync 750"),
        ("/etc/plutus-sync/config.toml", "root:plutus-sync 640"),
        ("/var/spool/plutus-sync", "root:plutus-outbox 750"),
        (
            "/var/spool/plutus-sync/outbox",
            "plutus-sync:plutus-outbox 2770",
        ),
        (
            "/var/spool/plutus-sync/archive",
            "plutus-sync:plutus-sync 2750",
        ),
        (
            "/var/spool/plutus-sync/quarantine",
            "plutus-sync:plutus-sync 2750",
        ),
        ("/var/lib/plutus-sync", "plutus-sync:plutus-sync 750"),
        ("/var/log/plutus-sync", "plutus-sync:plutus-sync 750"),
        ("/usr/bin/plutus-sync", "root:root 755"),
        (
            "/usr/lib/systemd/system/plutus-sync.service",
            "root:root 644",
        ),
    ] {
        assert_eq!(root.stat(path), want, "{path} {when}");
    }
    for group in ["plutus-sync", "plutus-outbox", "plutus-sync-admin"] {
        assert!(root.has_account("group", group), "no group {group} {when}");
    }
    assert_eq!(
        root.groups_of("plutus-sync"),
        ["plutus-outbox", "plutus-sync"],
        "the service's groups {when}"
    );
}

/// `user` (in plutus-outbox) writes the outbox and can neither forge nor read the
/// archive or the quarantine, the journal, the logs or the config.
fn expect_writer_only(root: &Root, user: &str, when: &str) {
    let groups = "plutus-outbox";
    assert!(
        root.sh_as(user, user, groups, "test -w /var/spool/plutus-sync/outbox")
            .status
            .success(),
        "{user} cannot write the outbox {when}"
    );
    for script in [
        "touch /var/spool/plutus-sync/archive/forged.json",
        "ls /var/spool/plutus-sync/archive",
        "ls /var/spool/plutus-sync/quarantine",
        "ls /var/lib/plutus-sync",
        "ls /var/log/plutus-sync",
        "cat /etc/plutus-sync/config.toml",
    ] {
        let out = root.sh_as(user, user, groups, script);
        assert!(!out.status.success(), "{user} may `{script}` {when}");
    }
}

/// Unmount anything mounted below `dir` (a debootstrap that died leaves /proc and
/// /sys mounted in its target), so that removing `dir` cannot reach into them.
fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut below: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in below {
        let _ = Command::new("umount").args(["-l", m]).status();
    }
}

/// A minimal Debian root with the package's dependencies, made by debootstrap once and
/// kept in the target dir: about 40 s and 215 MB the first time, nothing after.
fn base_root(deb: &Path) -> PathBuf {
    // The host's release (the binary is linked against its libraries) from its
    // Debian mirror; both can be overridden.
    let suite = std::env::var("PLUTUS_DEBOOTSTRAP_SUITE").unwrap_or_else(|_| {
        std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
            .map(|v| v.trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
            .expect("/etc/os-release names no VERSION_CODENAME; set PLUTUS_DEBOOTSTRAP_SUITE")
    });
    let mirror = std::env::var("PLUTUS_DEBOOTSTRAP_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_string());
    let include: Vec<String> = deb_field(deb, "Depends")
        .split(',')
        .map(|d| {
            d.split('|')
                .next()
                .unwrap()
                .split('(')
                .next()
                .unwrap()
                .trim()
                .to_string()
        })
        .filter(|d| !d.is_empty())
        .collect();
    let include = include.join(",");

    // Two tests of this binary may want it at once: one makes it, the other waits.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&suite, &mirror, &include).hash(&mut h);
        format!("{suite}-minbase-{:016x}", h.finish())
    };
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging");
    let done = cache.join(&key);
    if done.is_dir() {
        eprintln!("debootstrap: cached {}", done.display());
        return done;
    }
    need_tool("debootstrap", "debootstrap");
    std::fs::create_dir_all(&cache).unwrap();
    let partial = cache.join(format!("{key}.partial"));
    if partial.exists() {
        unmount_below(&partial);
        std::fs::remove_dir_all(&partial).unwrap();
    }
    let t = Instant::now();
    let out = output(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={include}"), &suite])
            .arg(&partial)
            .arg(&mirror),
    );
    if !out.status.success() {
        unmount_below(&partial);
        let log = std::fs::read_to_string(partial.join("debootstrap/debootstrap.log"))
            .unwrap_or_default();
        panic!(
            "debootstrap {suite} from {mirror} failed ({}):\n{}\n{}\n{log}\n  hint: set PLUTUS_DEBOOTSTRAP_MIRROR or PLUTUS_DEBOOTSTRAP_SUITE",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::rename(&partial, &done).unwrap();
    eprintln!("debootstrap {suite} with {include}: {:.1?}", t.elapsed());
    done
}

/// A copy of `deb` with another version, and `edit` applied to its unpacked tree.
fn repack(deb: &Path, version: &str, out: &Path, edit: impl FnOnce(&Path)) {
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tree = work.path().join("tree");
    ok(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("Version:") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&control, text).unwrap();
    edit(&tree);
    // gzip: the copies live for one test only; xz would take longer than the test.
    ok(Command::new("dpkg-deb")
        .args(["-Zgzip", "-z1", "-b"])
        .arg(&tree)
        .arg(out));
}

#[test]
#[ignore = "needs root and the .deb that tests/ci.sh builds (PLUTUS_DEB); tests/ci.sh runs it"]
fn the_deb_installs_upgrades_keeping_the_edited_config_and_purges_in_a_throwaway_root() {
    let Some(deb) = package_under_test() else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test installs a package in a chroot and must run as root (CI does)"
    );
    for (tool, package) in [("chroot", "coreutils"), ("dpkg-deb", "dpkg")] {
        need_tool(tool, package);
    }
    let started = Instant::now();
    let base = base_root(&deb);
    let after_debootstrap = started.elapsed();

    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging");
    std::fs::create_dir_all(&work).unwrap();
    let root = Root {
        dir: tempfile::Builder::new()
            .prefix("throwaway-")
            .tempdir_in(&work)
            .unwrap(),
    };
    ok(Command::new("cp").arg("-a").arg(&base).arg(root.path()));
    // No name server: nothing run inside may reach past this machine.
    let _ = std::fs::remove_file(root.file("/etc/resolv.conf"));

    let v1 = deb_field(&deb, "Version");
    let (v2, v3) = (format!("{v1}+test2"), format!("{v1}+test3"));
    std::fs::copy(&deb, root.file("/tmp/v1.deb")).unwrap();
    repack(&deb, &v2, &root.file("/tmp/v2.deb"), |_| {});
    repack(&deb, &v3, &root.file("/tmp/v3.deb"), |tree| {
        let conf = tree.join("etc/plutus-sync/config.toml");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("\n# A line the next version of the package adds.\n");
        std::fs::write(conf, text).unwrap();
    });

    // --- Install -----------------------------------------------------------
    root.dpkg("-i /tmp/v1.deb");
    assert_eq!(root.status(), format!("ii {v1}"));
    assert!(root.has_account("passwd", "plutus-sync"));
    assert!(root.has_account("group", "plutus-sync"));
    let account = root.sh("getent passwd plutus-sync");
    assert!(
        account
            .trim_end()
            .ends_with(":/var/lib/plutus-sync:/usr/sbin/nologin"),
        "{account}"
    );
    let expect_modes = |when: &str| expect_layout(&root, when);
    expect_modes("after install");
    let conffiles = root.sh("dpkg-query -W -f='${Conffiles}' plutus-sync");
    assert!(
        conffiles.contains("/etc/plutus-sync/config.toml"),
        "not a conffile: {conffiles}"
    );
    assert!(
        root.exists("/etc/systemd/system/multi-user.target.wants/plutus-sync.service"),
        "the unit is not enabled"
    );
    let version = root.sh("plutus-sync --version");
    assert!(
        version.starts_with(&format!("plutus-sync {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // The service's account reads the config and writes every folder it needs. The
    // key and known_hosts do not exist yet: check fails on those, and stops before
    // any connection.
    let check = root.sh_as(
        "plutus-sync",
        "plutus-sync",
        "plutus-outbox",
        "plutus-sync check -c /etc/plutus-sync/config.toml",
    );
    let check = String::from_utf8_lossy(&check.stdout).into_owned();
    for line in [
        "OK    config",
        "OK    outbox",
        "OK    archive",
        "OK    quarantine",
        "OK    filesystem",
        "OK    journal",
        "FAIL  identity",
    ] {
        assert!(check.contains(line), "no {line:?} in check:\n{check}");
    }
    assert!(
        !root
            .sh_as(
                "plutus-sync",
                "plutus-sync",
                "",
                "test -w /etc/plutus-sync/config.toml"
            )
            .status
            .success(),
        "the service can write its own config"
    );

    // The web shop's account, in plutus-outbox only, writes into the outbox; the file
    // keeps the group and the service can read it. It reads nothing else of ours.
    root.sh("adduser --system --group --quiet webshop && adduser --quiet webshop plutus-outbox");
    assert_eq!(root.groups_of("webshop"), ["plutus-outbox", "webshop"]);
    let wrote = root.sh_as(
        "webshop",
        "webshop",
        "plutus-outbox",
        "umask 0027 && echo '{\"order\": 1}' > /var/spool/plutus-sync/outbox/order-1.json",
    );
    assert!(
        wrote.status.success(),
        "the web shop cannot write: {wrote:?}"
    );
    assert_eq!(
        root.stat("/var/spool/plutus-sync/outbox/order-1.json"),
        "webshop:plutus-outbox 640"
    );
    assert!(root
        .sh_as(
            "plutus-sync",
            "plutus-sync",
            "plutus-outbox",
            "cat /var/spool/plutus-sync/outbox/order-1.json"
        )
        .status
        .success());
    expect_writer_only(&root, "webshop", "after install");

    // --- Upgrade with an edited config ----------------------------------------
    root.sh("sed -i 's/^connections = 2$/connections = 3/' /etc/plutus-sync/config.toml");
    let edited = std::fs::read_to_string(root.file("/etc/plutus-sync/config.toml")).unwrap();
    assert!(edited.contains("connections = 3"));
    root.dpkg("-i /tmp/v2.deb");
    assert_eq!(root.status(), format!("ii {v2}"));
    assert_eq!(
        std::fs::read_to_string(root.file("/etc/plutus-sync/config.toml")).unwrap(),
        edited,
        "the upgrade lost the edit"
    );
    assert!(!root.exists("/etc/plutus-sync/config.toml.dpkg-dist"));
    expect_modes("after an upgrade");

    // The next version changes the shipped config too: the edit is kept, the new one
    // is put beside it.
    root.dpkg("-i --force-confdef --force-confold /tmp/v3.deb");
    assert_eq!(root.status(), format!("ii {v3}"));
    assert_eq!(
        std::fs::read_to_string(root.file("/etc/plutus-sync/config.toml")).unwrap(),
        edited,
        "the upgrade over a changed conffile lost the edit"
    );
    let dist = std::fs::read_to_string(root.file("/etc/plutus-sync/config.toml.dpkg-dist"))
        .expect("the new config is beside the edited one");
    assert!(dist.contains("A line the next version of the package adds."));
    root.sh("rm /etc/plutus-sync/config.toml.dpkg-dist");
    expect_modes("after an upgrade with a changed conffile");
    assert!(root.exists("/var/spool/plutus-sync/outbox/order-1.json"));

    // --- Remove, then purge ------------------------------------------------
    // What an operator adds: the host key file (and, in real life, the key).
    root.sh("echo 'erp.plutus.local ssh-ed25519 AAAA' > /etc/plutus-sync/known_hosts");
    root.dpkg("-r plutus-sync");
    assert!(root.status().starts_with("rc "), "{}", root.status());
    assert!(!root.exists("/usr/bin/plutus-sync"));
    assert!(
        root.exists("/etc/plutus-sync/config.toml"),
        "remove took the config"
    );
    assert!(root.exists("/var/lib/plutus-sync"));

    let purged = root.dpkg("-P plutus-sync");
    assert_eq!(root.status(), "", "still known to dpkg after purge");
    assert!(!root.exists("/etc/plutus-sync/config.toml"));
    assert!(
        root.exists("/etc/plutus-sync/known_hosts"),
        "purge took a file the operator made"
    );
    assert!(
        purged.contains("directory '/etc/plutus-sync' not empty so not removed"),
        "{purged}"
    );
    assert!(!root.exists("/var/lib/plutus-sync"));
    assert!(!root.exists("/var/log/plutus-sync"));
    // The undelivered order stays; the empty folders go.
    assert!(root.exists("/var/spool/plutus-sync/outbox/order-1.json"));
    assert!(!root.exists("/var/spool/plutus-sync/archive"));
    assert!(!root.exists("/var/spool/plutus-sync/quarantine"));
    assert!(
        purged.contains("/var/spool/plutus-sync still holds order files"),
        "{purged}"
    );
    // The account and the groups stay (packaging/deb/README.md says why).
    assert!(root.has_account("passwd", "plutus-sync"));
    for group in ["plutus-sync", "plutus-outbox", "plutus-sync-admin"] {
        assert!(root.has_account("group", group), "purge removed {group}");
    }
    assert_eq!(root.sh("dpkg-statoverride --list || true"), "");
    assert!(!root.exists("/etc/systemd/system/multi-user.target.wants/plutus-sync.service"));
    assert!(!root.exists("/etc/systemd/system/plutus-sync.service"));

    // --- Install again over what purge kept, then purge an empty install --------
    root.dpkg("-i /tmp/v1.deb");
    assert_eq!(root.status(), format!("ii {v1}"));
    expect_modes("after a reinstall");
    root.sh("rm /etc/plutus-sync/known_hosts /var/spool/plutus-sync/outbox/order-1.json");
    root.dpkg("-P plutus-sync");
    for gone in [
        "/etc/plutus-sync",
        "/var/spool/plutus-sync",
        "/var/lib/plutus-sync",
    ] {
        assert!(
            !root.exists(gone),
            "{gone} is left after purging an empty install"
        );
    }

    eprintln!(
        "packaging lifecycle: {:.1?} (debootstrap {:.1?})",
        started.elapsed(),
        after_debootstrap
    );
}

/// The postinst of the packages before the writers and operators had groups of their
/// own, kept as it was (a fixture, not installed).
const OLD_POSTINST: &str = include_str!("packaging_old_postinst.sh");

/// A copy of the package built from this tree with the old postinst (and the same
/// systemd part cargo-deb put at `#DEBHELPER#`): the layout an upgrade starts from.
fn repack_with_old_postinst(deb: &Path, version: &str, out: &Path) {
    repack(deb, version, out, |tree| {
        let built = std::fs::read_to_string(tree.join("DEBIAN/postinst")).unwrap();
        let source =
            std::fs::read_to_string(Path::new(MANIFEST_DIR).join("packaging/deb/postinst"))
                .unwrap();
        let (head, tail) = source.split_once("#DEBHELPER#").unwrap();
        let debhelper = built
            .strip_prefix(head)
            .and_then(|b| b.strip_suffix(tail))
            .unwrap_or_else(|| {
                panic!("cannot find #DEBHELPER#'s part in the built postinst:\n{built}")
            });
        let (old_head, old_tail) = OLD_POSTINST.split_once("#DEBHELPER#").unwrap();
        std::fs::write(
            tree.join("DEBIAN/postinst"),
            format!("{old_head}{debhelper}{old_tail}"),
        )
        .unwrap();
    });
}

/// A throwaway copy of the cached debootstrap root, without a name server.
fn throwaway_root(base: &Path) -> Root {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging");
    std::fs::create_dir_all(&work).unwrap();
    let root = Root {
        dir: tempfile::Builder::new()
            .prefix("throwaway-")
            .tempdir_in(&work)
            .unwrap(),
    };
    ok(Command::new("cp").arg("-a").arg(base).arg(root.path()));
    let _ = std::fs::remove_file(root.file("/etc/resolv.conf"));
    root
}

#[test]
#[ignore = "needs root and the .deb that tests/ci.sh builds (PLUTUS_DEB); tests/ci.sh runs it"]
fn an_upgrade_from_the_one_group_layout_moves_the_writers_without_locking_them_out() {
    let Some(deb) = package_under_test() else {
        return;
    };
    plutus_testkit::require_root("installs a package in a chroot");
    let base = base_root(&deb);
    let v1 = deb_field(&deb, "Version");
    let v0 = format!("{v1}~onegroup");

    // --- Nobody else in plutus-sync: moved at once ------------------------------
    let root = throwaway_root(&base);
    repack_with_old_postinst(&deb, &v0, &root.file("/tmp/v0.deb"));
    std::fs::copy(&deb, root.file("/tmp/v1.deb")).unwrap();
    root.dpkg("-i /tmp/v0.deb");
    assert_eq!(
        root.stat("/var/spool/plutus-sync/outbox"),
        "plutus-sync:plutus-sync 2770",
        "the old layout"
    );
    root.sh("echo '{\"order\": 0}' > /var/spool/plutus-sync/outbox/order-0.json");
    let out = root.dpkg("-i /tmp/v1.deb");
    assert!(
        out.contains(
            "/var/spool/plutus-sync/outbox now belongs to the writers' group plutus-outbox"
        ),
        "{out}"
    );
    expect_layout(&root, "after the upgrade from one group, no writer");
    assert!(root.exists("/var/spool/plutus-sync/outbox/order-0.json"));
    drop(root);

    // --- A web shop in plutus-sync: added, told, then moved by hand ---------------
    let root = throwaway_root(&base);
    let v2 = format!("{v1}+test2");
    repack_with_old_postinst(&deb, &v0, &root.file("/tmp/v0.deb"));
    std::fs::copy(&deb, root.file("/tmp/v1.deb")).unwrap();
    repack(&deb, &v2, &root.file("/tmp/v2.deb"), |_| {});
    root.dpkg("-i /tmp/v0.deb");
    root.sh("adduser --system --group --quiet webshop && adduser --quiet webshop plutus-sync");
    // And a name left in the group after its account was removed by hand.
    root.sh("sed -i 's/^plutus-sync:.*$/&,ghost/' /etc/group && getent group plutus-sync | grep -q ghost");
    // The web shop's process, started before the upgrade, keeps these groups.
    let old_creds = |n: u32| {
        root.sh_as(
            "webshop",
            "webshop",
            "plutus-sync",
            &format!("umask 0027 && echo '{{\"order\": {n}}}' > /var/spool/plutus-sync/outbox/order-{n}.json"),
        )
    };
    assert!(old_creds(1).status.success());

    let out = root.dpkg("-i /tmp/v1.deb");
    assert!(out.contains("Added to plutus-outbox: webshop."), "{out}");
    assert_eq!(
        root.groups_of("webshop"),
        ["plutus-outbox", "plutus-sync", "webshop"]
    );
    // Until the admin finishes, the outbox is as it was: the running web shop still
    // writes, and the service reads what it wrote.
    assert_eq!(
        root.stat("/var/spool/plutus-sync/outbox"),
        "plutus-sync:plutus-sync 2770"
    );
    let second = old_creds(2);
    assert!(
        second.status.success(),
        "locked out by the upgrade: {second:?}"
    );

    // Exactly what it said to run.
    let commands: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("    ")).collect();
    assert_eq!(
        commands,
        [
            "chgrp plutus-outbox /var/spool/plutus-sync /var/spool/plutus-sync/outbox && chmod g+s /var/spool/plutus-sync/outbox",
            "gpasswd -d webshop plutus-sync",
        ],
        "{out}"
    );
    for c in &commands {
        root.sh(c);
    }
    expect_layout(&root, "after the move by hand");
    assert_eq!(root.groups_of("webshop"), ["plutus-outbox", "webshop"]);
    // The web shop, restarted with its new groups, writes; it reads nothing else.
    let third = root.sh_as(
        "webshop",
        "webshop",
        "plutus-outbox",
        "umask 0027 && echo '{\"order\": 3}' > /var/spool/plutus-sync/outbox/order-3.json",
    );
    assert!(third.status.success(), "{third:?}");
    expect_writer_only(&root, "webshop", "after the move by hand");
    // Not a file lost: the service reads and may move every one of them.
    for n in 1..=3 {
        let f = format!("/var/spool/plutus-sync/outbox/order-{n}.json");
        let read = root.sh_as(
            "plutus-sync",
            "plutus-sync",
            "plutus-outbox",
            &format!("cat {f} && test -w /var/spool/plutus-sync/outbox"),
        );
        assert!(read.status.success(), "{f}: {read:?}");
    }
    // Done: the next upgrade has nothing to say and changes nothing.
    let out = root.dpkg("-i /tmp/v2.deb");
    assert!(!out.contains("plutus-outbox"), "{out}");
    expect_layout(&root, "after the next upgrade");
}
