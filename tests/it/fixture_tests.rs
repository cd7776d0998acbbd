//! Proves the OpenSSH fixture itself, using only the stock OpenSSH client, so
//! a broken fixture cannot hide behind a broken plutus-sync.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use plutus_testkit::sshd::{read_banner, Sshd};

fn assert_upload_works(sshd: &Sshd, name: &str) {
    // Binary content with CR/LF and NULs: the bytes must arrive untouched.
    let payload: Vec<u8> = format!("<order id=\"{name}\"/>\r\n")
        .into_bytes()
        .into_iter()
        .chain((0u8..=255).cycle().take(70_000))
        .collect();
    let local = sshd.dir().join(format!("{name}.local"));
    fs::write(&local, &payload).unwrap();

    let out = sshd.sftp_put(sshd.known_hosts(), sshd.port(), &local, name);
    assert!(out.status.success(), "{}", sshd.describe(&out));
    let arrived = fs::read(sshd.inbox().join(name))
        .unwrap_or_else(|e| panic!("{name} not in inbox: {e}\n{}", sshd.describe(&out)));
    assert!(arrived == payload, "{name}: uploaded bytes differ");
}

fn connect(sshd: &Sshd) -> std::io::Result<TcpStream> {
    TcpStream::connect(("127.0.0.1", sshd.port()))
}

#[test]
fn sshd_fixture_serves_sftp_with_key_auth() {
    let sshd = Sshd::start();

    assert!(sshd.inbox().is_absolute() && sshd.inbox().is_dir());
    assert!(sshd.inbox().starts_with(sshd.dir()));
    assert_eq!(
        sshd.url(),
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            sshd.user(),
            sshd.port(),
            sshd.inbox().display()
        )
    );
    assert!(!sshd.url().contains("//tmp"), "{}", sshd.url());
    let kh = fs::read_to_string(sshd.known_hosts()).unwrap();
    assert!(
        kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", sshd.port())),
        "{kh}"
    );

    assert_upload_works(&sshd, "order-1.xml");
    assert!(
        sshd.log().contains("Accepted publickey for"),
        "{}",
        sshd.log()
    );
}

#[test]
fn sshd_fixture_restarts_on_same_port() {
    let mut sshd = Sshd::start();
    let port = sshd.port();
    assert_upload_works(&sshd, "before.xml");

    // An established connection (served by a per-connection child).
    let mut established = connect(&sshd).unwrap();
    established
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(read_banner(&mut established).is_some_and(|b| b.starts_with("SSH-2.0-")));

    sshd.stop();

    // stop() must drop existing connections, not only the listener.
    let mut buf = [0u8; 64];
    match established.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("established connection survived stop(): {other:?}"),
    }
    let err = connect(&sshd).expect_err("port still accepts after stop()");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    sshd.restart();
    assert_eq!(sshd.port(), port);
    // Same known_hosts: the host key did not change.
    assert_upload_works(&sshd, "after.xml");
    assert!(sshd.inbox().join("before.xml").is_file());
}

#[test]
fn sshd_fixture_host_key_files_are_rejected_when_wrong() {
    let sshd = Sshd::start();
    let local = sshd.dir().join("x.local");
    fs::write(&local, b"x").unwrap();

    let changed = sshd.sftp_put(
        &sshd.other_known_hosts(),
        sshd.port(),
        &local,
        "changed.xml",
    );
    assert!(!changed.status.success(), "{}", sshd.describe(&changed));
    assert!(
        String::from_utf8_lossy(&changed.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        sshd.describe(&changed)
    );

    let unknown = sshd.sftp_put(
        &sshd.empty_known_hosts(),
        sshd.port(),
        &local,
        "unknown.xml",
    );
    assert!(!unknown.status.success(), "{}", sshd.describe(&unknown));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("Host key verification failed"),
        "{}",
        sshd.describe(&unknown)
    );

    assert_eq!(fs::read_dir(sshd.inbox()).unwrap().count(), 0);
    // The right file still works against the same server.
    assert_upload_works(&sshd, "ok.xml");
}

#[test]
fn sshd_fixture_pause_stalls_new_and_established_connections() {
    let sshd = Sshd::start();
    let stall = Duration::from_millis(500);

    let mut established = connect(&sshd).unwrap();
    established
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(read_banner(&mut established).is_some());

    sshd.pause();

    // New connections complete the TCP handshake (kernel backlog) but get
    // no banner.
    let mut fresh = connect(&sshd).expect("paused sshd still accepts TCP");
    fresh.set_read_timeout(Some(stall)).unwrap();
    assert_eq!(read_banner(&mut fresh), None, "banner from a paused sshd");

    // The established session's child is frozen too: after our
    // identification it would normally send KEXINIT at once.
    established.set_read_timeout(Some(stall)).unwrap();
    established.write_all(b"SSH-2.0-fixture_test\r\n").unwrap();
    let mut buf = [0u8; 256];
    let err = established
        .read(&mut buf)
        .expect_err("paused sshd answered");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );

    sshd.resume();

    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(read_banner(&mut fresh).is_some_and(|b| b.starts_with("SSH-2.0-")));
    established
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = established.read(&mut buf).expect("KEXINIT after resume");
    assert!(n > 0);
    drop((fresh, established));

    assert_upload_works(&sshd, "after-resume.xml");
}

#[test]
fn testkit_runs_the_binary_cargo_built_for_these_tests() {
    // The testkit, a library, cannot see this compile-time path; it reads the one
    // cargo puts in the environment, or looks beside the test executable.
    assert_eq!(
        plutus_testkit::service::bin(),
        Path::new(env!("CARGO_BIN_EXE_plutus-sync"))
    );
}
