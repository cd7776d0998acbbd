//! The SSH policy against the real sshd: known_hosts read as OpenSSH reads it
//! (`@revoked`, `[host]:port`, negation, hashed names, `@cert-authority` refused).

use plutus_state::State;
use plutus_testkit::files::names_in;
use plutus_testkit::orders::order;
use plutus_testkit::spool::Spool;
use plutus_testkit::sshd::Sshd;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// "ssh-ed25519 AAAA... comment": the server's real key, without its names.
fn key_line(sshd: &Sshd) -> String {
    let kh = fs::read_to_string(sshd.known_hosts()).unwrap();
    kh.trim()
        .split_once(' ')
        .expect("names then key")
        .1
        .to_string()
}

fn known_hosts(sshd: &Sshd, name: &str, text: &str) -> PathBuf {
    let path = sshd.dir().join(name);
    fs::write(&path, text).unwrap();
    path
}

fn spool_with(sshd: &Sshd, kh: &std::path::Path) -> Spool {
    Spool::for_sshd(sshd, &format!("known_hosts = \"{}\"", kh.display()))
}

/// One order through `sync`, refused: stderr says `want`, nothing reached the
/// inbox, the order is still in the outbox, pending, never tried.
fn refused(sshd: &Sshd, spool: &Spool, want: &str) -> String {
    let body = order(1, 2000);
    spool.drop_order("order-1.json", &body);
    let (st, out, err) = spool.sync();
    assert!(!st.success(), "stdout: {out}\nstderr: {err}");
    assert!(err.contains(want), "want {want:?} in:\n{err}");
    assert!(names_in(sshd.inbox()).is_empty(), "nothing was sent");
    assert_eq!(fs::read(spool.outbox().join("order-1.json")).unwrap(), body);
    for e in spool.entries() {
        assert_eq!((e.state(), e.attempts), (State::Pending, 0));
    }
    err
}

fn delivered(sshd: &Sshd, spool: &Spool) {
    spool.drop_order("order-2.json", &order(2, 2000));
    let (st, out, err) = spool.sync();
    assert!(st.success(), "stdout: {out}\nstderr: {err}");
    assert_eq!(names_in(sshd.inbox()), vec!["order-2.json".to_string()]);
}

#[test]
fn a_revoked_host_key_is_refused_even_when_another_line_accepts_it() {
    let sshd = Sshd::start();
    let key = key_line(&sshd);
    let kh = known_hosts(
        &sshd,
        "kh_revoked",
        &format!("[127.0.0.1]:{} {key}\n@revoked * {key}\n", sshd.port()),
    );
    let spool = spool_with(&sshd, &kh);
    let err = refused(&sshd, &spool, "host key is REVOKED");
    assert!(err.contains("line 2"), "{err}");
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        out.contains("FAIL  host key") && out.contains("REVOKED"),
        "{out}"
    );
}

#[test]
fn a_plain_host_entry_does_not_match_a_server_on_another_port() {
    let sshd = Sshd::start();
    assert_ne!(sshd.port(), 22);
    let kh = known_hosts(
        &sshd,
        "kh_plain",
        &format!("127.0.0.1 {}\n", key_line(&sshd)),
    );
    let spool = spool_with(&sshd, &kh);
    let err = refused(&sshd, &spool, "host key is unknown");
    assert!(
        err.contains("[host]:port"),
        "the hint names the form: {err}"
    );
    let out = spool.cmd(&["check", "--as-root"]).1;
    assert!(
        out.contains("FAIL  known_hosts")
            && out.contains(&format!("no key for [127.0.0.1]:{}", sshd.port())),
        "{out}"
    );
}

#[test]
fn a_negated_pattern_rules_its_line_out_and_wildcards_match() {
    let sshd = Sshd::start();
    let key = key_line(&sshd);
    let kh = known_hosts(
        &sshd,
        "kh_negated",
        &format!("[127.0.0.1]:*,![127.0.0.1]:{} {key}\n", sshd.port()),
    );
    refused(&sshd, &spool_with(&sshd, &kh), "host key is unknown");

    let kh = known_hosts(&sshd, "kh_wild", &format!("[127.0.0.?]:* {key}\n"));
    delivered(&sshd, &spool_with(&sshd, &kh));
}

#[test]
fn hashed_names_written_by_ssh_keygen_are_matched() {
    let sshd = Sshd::start();
    let kh = known_hosts(
        &sshd,
        "kh_hashed",
        &fs::read_to_string(sshd.known_hosts()).unwrap(),
    );
    let st = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .expect("run ssh-keygen -H");
    assert!(st.status.success(), "{st:?}");
    let text = fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|"), "hashed: {text}");
    delivered(&sshd, &spool_with(&sshd, &kh));
}

#[test]
fn a_cert_authority_line_for_the_destination_refuses_start_and_check() {
    let sshd = Sshd::start();
    let key = key_line(&sshd);
    let kh = known_hosts(
        &sshd,
        "kh_ca",
        &format!(
            "[127.0.0.1]:{} {key}\n@cert-authority [127.0.0.1]:* {key}\n",
            sshd.port()
        ),
    );
    let spool = spool_with(&sshd, &kh);
    let err = refused(&sshd, &spool, "refusing to start");
    assert!(
        err.contains("line 2: @cert-authority") && err.contains("list the server's own host key"),
        "{err}"
    );
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        out.contains("FAIL  known_hosts") && out.contains("@cert-authority"),
        "{out}"
    );

    // A CA line for other hosts does not concern this destination.
    let kh = known_hosts(
        &sshd,
        "kh_ca_other",
        &format!(
            "[127.0.0.1]:{} {key}\n@cert-authority *.example {key}\n",
            sshd.port()
        ),
    );
    delivered(&sshd, &spool_with(&sshd, &kh));
}

#[test]
fn check_prints_the_negotiated_algorithms() {
    let sshd = Sshd::start();
    let spool = Spool::for_sshd(&sshd, "");
    let out = spool.ok(&["check", "--as-root"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("OK    algorithms"))
        .unwrap_or_else(|| panic!("no algorithms line:\n{out}"));
    // Debian's OpenSSH takes our first choices, and has strict kex (>= 9.6).
    for want in [
        "kex ",
        "host key ssh-ed25519",
        "cipher aes256-gcm@openssh.com",
        "MAC built into the cipher",
        "strict kex (Terrapin): yes",
    ] {
        assert!(line.contains(want), "want {want:?} in {line}");
    }
    assert!(!line.contains("sha1") && !line.contains("cbc"), "{line}");
}

#[test]
fn a_server_offering_only_cbc_ciphers_is_refused_naming_the_mismatch() {
    let mut sshd = Sshd::start();
    sshd.restart_with_config("Ciphers aes128-cbc,aes256-cbc");
    let spool = Spool::for_sshd(&sshd, "");
    let err = refused(&sshd, &spool, "no SSH algorithm in common with the server");
    assert!(
        err.contains("ciphers: the server offers aes128-cbc,aes256-cbc; plutus-sync allows aes256-gcm@openssh.com"),
        "{err}"
    );
    let (st, out, _) = spool.cmd(&["check", "--as-root"]);
    assert_eq!(st.code(), Some(1));
    assert!(
        out.contains("FAIL  algorithms") && out.contains("aes128-cbc"),
        "{out}"
    );

    // SHA-1-only MACs with a CTR cipher: the MACs are named.
    let mut sshd = Sshd::start();
    sshd.restart_with_config("Ciphers aes128-ctr\nMACs hmac-sha1,hmac-sha1-etm@openssh.com");
    let spool = Spool::for_sshd(&sshd, "");
    let err = refused(&sshd, &spool, "no SSH algorithm in common");
    assert!(err.contains("MACs: the server offers hmac-sha1"), "{err}");
}
