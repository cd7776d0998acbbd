//! `plutus-sync check`: the preflight an operator runs after editing the config. One
//! line per check, OK or FAIL, and for a FAIL the fix.

use crate::cli::CheckArgs;
use crate::config::{Destination, Settings};
use crate::transfer::{self, TransferError};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

struct Report {
    failed: usize,
}

/// A closed stdout (`check | head -2`) is not an error worth a panic.
fn say(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl AsRef<str>) {
        say(format!("OK    {what:<12} {}", detail.as_ref()));
    }
    fn fail(&mut self, what: &str, detail: impl AsRef<str>, fix: impl AsRef<str>) {
        self.failed += 1;
        say(format!("FAIL  {what:<12} {}", detail.as_ref()));
        say(format!("      fix: {}", fix.as_ref()));
    }
    fn skip(&mut self, what: &str, why: &str) {
        say(format!("SKIP  {what:<12} {why}"));
    }
}

/// Returns whether every check passed. Refuses to run as root without `--as-root`.
pub fn run(args: &CheckArgs) -> anyhow::Result<bool> {
    if rustix::process::geteuid().is_root() && !args.as_root {
        anyhow::bail!(
            "check answers for the user it runs as, and this is root: every folder would look writable to it, \
             the key's owner check would be against root, and a file it made would be root's\n  \
             hint: run it as the service's user (sudo -u plutus-sync plutus-sync check), or pass --as-root"
        );
    }
    let mut r = Report { failed: 0 };
    let s = match super::settings(&args.config) {
        Ok(s) => {
            r.ok("config", &s.origin);
            s
        }
        Err(e) => {
            r.fail(
                "config",
                e.to_string(),
                "correct the file and key named above",
            );
            return Ok(false);
        }
    };
    for (what, dir) in [
        ("outbox", &s.source.outbox),
        ("archive", &s.source.archive),
        ("quarantine", &s.source.quarantine),
    ] {
        writable_dir(&mut r, what, dir);
    }
    same_fs(&mut r, &s);
    match s.journal.path.parent() {
        Some(p) => writable_dir(&mut r, "journal", p),
        None => r.fail(
            "journal",
            s.journal.path.display().to_string(),
            "set [journal] path to a folder",
        ),
    }
    if let Destination::Sftp { .. } = &s.destination.url {
        key_files(&mut r, &s);
    }
    destination(&mut r, &s);
    // The backup is checked as a destination of its own: its keys, host key, inbox.
    if let Some(dest) = s.destination.backup_destination() {
        say("backup destination ([destination.backup]):".into());
        let mut b = s.clone();
        b.destination = dest;
        if let Destination::Sftp { .. } = &b.destination.url {
            key_files(&mut r, &b);
        }
        destination(&mut r, &b);
    }
    if r.failed == 0 {
        say("all checks passed".into());
    } else {
        say(format!("{} check(s) failed", r.failed));
    }
    Ok(r.failed == 0)
}

fn writable_dir(r: &mut Report, what: &str, dir: &Path) {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return r.fail(
                what,
                format!("{} is not a folder", dir.display()),
                "point the config at a folder",
            )
        }
        Err(e) => {
            return r.fail(
                what,
                format!("{}: {e}", dir.display()),
                format!(
                    "mkdir -p {0} && chown plutus-sync:plutus-sync {0}",
                    dir.display()
                ),
            )
        }
    }
    // A new file under a random name, created exclusively (O_CREAT|O_EXCL, which never
    // follows a link): whoever can write the folder cannot point the probe at a file
    // of their choice, even when `check` runs as root. Removed when dropped.
    let probe = tempfile::Builder::new()
        .prefix(".plutus-sync-check-")
        .tempfile_in(dir)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"check")?;
            f.close()
        });
    match probe {
        Ok(()) => r.ok(what, format!("{} exists and is writable", dir.display())),
        Err(e) => r.fail(
            what,
            format!("{} is not writable: {e}", dir.display()),
            format!("give the service's user write access to {}", dir.display()),
        ),
    }
}

fn same_fs(r: &mut Report, s: &Settings) {
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    match (
        dev(&s.source.outbox),
        dev(&s.source.archive),
        dev(&s.source.quarantine),
    ) {
        (Some(a), Some(b), Some(c)) if a == b && b == c => r.ok(
            "filesystem",
            "outbox, archive and quarantine share one file system",
        ),
        (Some(_), Some(_), Some(_)) => r.fail(
            "filesystem",
            "outbox, archive and quarantine are not on one file system",
            "put them on one file system: the archive move must be a rename",
        ),
        _ => r.skip("filesystem", "a folder above is missing"),
    }
}

fn key_files(r: &mut Report, s: &Settings) {
    match transfer::sftp::identity_problem(&s.destination.identity) {
        Some((problem, fix)) => r.fail(
            "identity",
            format!("{} {problem}", s.destination.identity.display()),
            fix,
        ),
        None => r.ok(
            "identity",
            format!(
                "{} exists, readable by its owner only, no passphrase",
                s.destination.identity.display()
            ),
        ),
    }
    let Destination::Sftp { host, port, .. } = &s.destination.url else {
        return;
    };
    let shown = s.destination.known_hosts.display();
    match transfer::sftp::read_known_hosts(&s.destination.known_hosts, host, *port) {
        Ok(k) if k.key_types(&transfer::sftp::lookup_name(host, *port)).is_empty() => r.fail(
            "known_hosts",
            format!(
                "{shown} has no key for {} (a port other than 22 needs a [host]:port entry, as in OpenSSH)",
                transfer::sftp::lookup_name(host, *port)
            ),
            "add the server's host key line after checking its fingerprint (see GUIDE.md §2, in /usr/share/doc/plutus-sync or docs/)",
        ),
        Ok(_) => r.ok("known_hosts", format!("{shown} has a key for {}", transfer::sftp::lookup_name(host, *port))),
        Err((problem, fix)) => r.fail("known_hosts", problem, fix),
    }
}

fn destination(r: &mut Report, s: &Settings) {
    let t = transfer::from_settings(&s.destination);
    let url = t.describe();
    let mut conn = match t.connect() {
        Ok(c) => {
            r.ok("connect", &url);
            if let Destination::Sftp { .. } = s.destination.url {
                r.ok(
                    "host key",
                    format!("matches {}", s.destination.known_hosts.display()),
                );
                r.ok(
                    "auth",
                    format!("key {} accepted", s.destination.identity.display()),
                );
                if let Some(n) = t.negotiated() {
                    r.ok("algorithms", n);
                }
            }
            c
        }
        Err(e) => {
            let (what, fix) = match &e {
                TransferError::HostKey { .. } => ("host key", "see the hint above; never accept a changed key unchecked".to_string()),
                TransferError::Algorithms { .. } => ("algorithms", "see the hint above; plutus-sync's list is fixed (GUIDE §2)".to_string()),
                TransferError::Auth { user, .. } => (
                    "auth",
                    format!("install {}.pub in {user}'s authorized_keys on the server (non-admin account on Windows)", s.destination.identity.display()),
                ),
                _ => ("connect", "check the host, the port, the firewall and that the server runs".to_string()),
            };
            r.fail(what, e.to_string(), fix);
            r.skip("inbox", "no connection");
            return;
        }
    };
    match conn.probe() {
        Ok(()) => r.ok("inbox", "writable (a probe file was written and removed)"),
        Err(e) => {
            r.fail(
                "inbox",
                e.to_string(),
                "create the inbox folder and give the upload account write access to it; an account chrooted by Install-PlutusSyncTarget.ps1 sees its inbox as /inbox, not /C:/ERP/inbox",
            );
            r.skip("rename", "the inbox is not writable");
            r.skip("fsync", "the inbox is not writable");
            return;
        }
    }
    // What exactly-once rests on, tried with probe files under temp names.
    match conn.server() {
        Ok(t) => {
            if t.rename_refuses_overwrite {
                r.ok(
                    "rename",
                    "refuses overwrite (a rename onto an existing probe file was refused)",
                );
            } else if s.destination.check_then_rename {
                r.ok("rename", "REPLACES an existing file; accepted by overwriting_rename = \"check-then-rename\" (racy: see the example config)");
            } else {
                r.fail(
                    "rename",
                    "REPLACES an existing file: a rename onto an existing probe file overwrote it; plutus-sync will not deliver here, it could overwrite a different order",
                    "use a server whose rename refuses an existing name (OpenSSH, Win32-OpenSSH), or accept the racy check with [destination] overwriting_rename = \"check-then-rename\"",
                );
            }
            if t.fsync {
                r.ok("fsync", "yes (fsync@openssh.com answered OK)");
            } else {
                r.ok("fsync", "no: each file is proven by its read-back alone");
            }
        }
        Err(e) => r.fail(
            "rename",
            e.to_string(),
            "check the inbox's permissions and the connection",
        ),
    }
}
