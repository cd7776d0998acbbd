//! `packaging/windows/Install-PlutusSyncTarget.ps1`'s sshd_config edit, checked with
//! Debian's sshd: PowerShell cannot run here, so the two blocks the script writes are
//! read out of the script itself (its `$GlobalBlockTemplate` and `$MatchBlockTemplate`
//! here-strings), filled in as `Expand-SshdBlock` does, and placed into
//! Win32-OpenSSH's stock sshd_config (`win32_openssh_sshd_config`: its
//! `contrib/win32/openssh/sshd_config` of the 8.x releases) by a
//! line-for-line port of `Update-SshdConfigText`. The port is ours, not the script's:
//! what this proves is that the blocks' text is valid sshd_config and means what it
//! should (`sshd -t`, `sshd -T -C user=...`), and that the placement is idempotent.

use plutus_testkit::sshd::{ensure_privsep_dir, find_sshd, keygen};
use std::fs;
use std::path::Path;
use std::process::Command;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/windows/Install-PlutusSyncTarget.ps1"
);
const STOCK: &str = include_str!("win32_openssh_sshd_config");
const BEGIN: &str = "# BEGIN plutus-sync";
const END: &str = "# END plutus-sync";

/// The here-string assigned to `$name` in the script.
fn template(script: &str, name: &str) -> String {
    let start = format!("${name} = @'\n");
    let at = script
        .find(&start)
        .unwrap_or_else(|| panic!("{name} here-string not in the script"))
        + start.len();
    let len = script[at..].find("\n'@").expect("here-string end");
    script[at..at + len].to_string()
}

/// `Expand-SshdBlock`: the markers and @NAME@ values put in, as lines.
fn expand(t: &str, values: &[(&str, &str)]) -> Vec<String> {
    let mut text = t.replace("@BEGIN@", BEGIN).replace("@END@", END);
    for (k, v) in values {
        text = text.replace(&format!("@{k}@"), v);
    }
    text.lines().map(str::to_string).collect()
}

/// A port of `Update-SshdConfigText`: our old blocks out, trailing blank lines off,
/// global Port/PubkeyAuthentication/PasswordAuthentication lines commented out with
/// a marker, the global block first and the Match block last.
fn update(text: &str, global: &[String], matchb: &[String]) -> String {
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let managed = ["port", "pubkeyauthentication", "passwordauthentication"];
    let mut kept: Vec<String> = Vec::new();
    let mut ours = false;
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.starts_with(BEGIN) {
            ours = true;
            continue;
        }
        if ours {
            if line.starts_with(END) {
                ours = false;
            }
            continue;
        }
        kept.push(line.to_string());
    }
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    let mut global_scope = true;
    for line in kept.iter_mut() {
        let t = line.trim_start();
        let word: String = t.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        if word == "Match"
            && t[word.len()..]
                .chars()
                .next()
                .is_none_or(char::is_whitespace)
        {
            global_scope = false;
        }
        let after = t[word.len()..].chars().next();
        if global_scope
            && !word.is_empty()
            && after.is_some_and(|c| c.is_whitespace() || c == '=')
            && managed.contains(&word.to_ascii_lowercase().as_str())
        {
            *line = format!("#plutus-sync# {line}");
        }
    }
    let mut all: Vec<String> = global.to_vec();
    all.extend(kept);
    all.push(String::new());
    all.extend(matchb.iter().cloned());
    all.join(nl) + nl
}

fn sshd(config: &Path, hostkey: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(find_sshd())
        .arg("-f")
        .arg(config)
        .arg("-h")
        .arg(hostkey)
        .args(extra)
        .output()
        .expect("run sshd");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_scripts_sshd_config_blocks_pass_sshd_t_and_confine_only_the_upload_account() {
    let script = fs::read_to_string(SCRIPT).unwrap();
    let values = [
        ("PORT", "2222"),
        ("USER", "plutus-sync"),
        ("CHROOT", r"C:\ERP"),
        ("ALLOWGROUPS", r#""administrators" "plutus-sync-sftp""#),
    ];
    let global = expand(&template(&script, "GlobalBlockTemplate"), &values);
    let matchb = expand(&template(&script, "MatchBlockTemplate"), &values);
    assert!(
        !global.iter().chain(&matchb).any(|l| l.contains('@')),
        "every @NAME@ filled in: {global:?} {matchb:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let hostkey = dir.path().join("hostkey");
    keygen(&hostkey, "windows-target-test");
    ensure_privsep_dir();
    // The stock file as Windows has it (CRLF) and with a Port line of the admin's own.
    let crlf = STOCK.replace('\n', "\r\n").replace("#Port 22", "Port 22");
    for (name, stock) in [("lf", STOCK.to_string()), ("crlf", crlf)] {
        let once = update(&stock, &global, &matchb);
        let twice = update(&once, &global, &matchb);
        assert_eq!(once, twice, "{name}: a second run changes nothing");
        assert!(
            !stock.contains("\r\n") || !once.replace("\r\n", "").contains('\n'),
            "{name}: CRLF kept"
        );
        let cfg = dir.path().join(format!("sshd_config_{name}"));
        fs::write(&cfg, &once).unwrap();

        let (ok, out) = sshd(&cfg, &hostkey, &["-t"]);
        assert!(
            ok,
            "{name}: sshd -t rejects the result:\n{out}\n---\n{once}"
        );

        // The upload account: chrooted, sftp only, key only, no forwarding or TTY.
        let (ok, upload) = sshd(
            &cfg,
            &hostkey,
            &["-T", "-C", "user=plutus-sync,host=shop,addr=10.0.0.10"],
        );
        assert!(ok, "{upload}");
        for want in [
            "port 2222",
            r"chrootdirectory C:\ERP",
            "forcecommand internal-sftp",
            "authenticationmethods publickey",
            "allowtcpforwarding no",
            "allowagentforwarding no",
            "x11forwarding no",
            "permittunnel no",
            "permittty no",
            "passwordauthentication no",
            "pubkeyauthentication yes",
        ] {
            assert!(
                upload.lines().any(|l| l == want),
                "{name}: upload account lacks {want:?}:\n{upload}"
            );
        }
        let allow: Vec<&str> = upload
            .lines()
            .filter(|l| l.starts_with("allowgroups "))
            .collect();
        assert!(
            allow.iter().any(|l| l.contains("administrators"))
                && allow.iter().any(|l| l.contains("plutus-sync-sftp")),
            "{name}: administrators and the upload group may log in: {allow:?}"
        );
        assert!(
            !upload.lines().any(|l| l.starts_with("allowusers ")),
            "{name}: no AllowUsers (it would have to match too)"
        );

        // Anyone else (an administrator): none of the confinement, same key-only login.
        let (ok, admin) = sshd(
            &cfg,
            &hostkey,
            &["-T", "-C", "user=root,host=admin-pc,addr=10.0.0.5"],
        );
        assert!(ok, "{admin}");
        for want in [
            "chrootdirectory none",
            "permittty yes",
            "allowtcpforwarding yes",
            "passwordauthentication no",
        ] {
            assert!(
                admin.lines().any(|l| l == want),
                "{name}: an administrator gets {want:?}:\n{admin}"
            );
        }
        assert!(
            !admin
                .lines()
                .any(|l| l.starts_with("forcecommand internal-sftp")),
            "{name}: {admin}"
        );
    }
}
