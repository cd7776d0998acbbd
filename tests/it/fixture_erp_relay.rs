//! Proves the importing ERP and the TCP relay fixtures with plain files, the
//! stock OpenSSH client and a local echo server, so a broken fixture cannot
//! hide behind (or be blamed on) plutus-sync.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use plutus_testkit::erp::Erp;
use plutus_testkit::files::names_in;
use plutus_testkit::relay::Relay;
use plutus_testkit::sshd::Sshd;
use plutus_testkit::{poll_until, wait_until};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn erp_imports_each_final_file_once_and_leaves_temp_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    let staging = dir.path().join("staging");
    fs::create_dir_all(&inbox).unwrap();
    fs::create_dir_all(&staging).unwrap();
    let temp = "order-9.json.12-abc.part";
    fs::write(inbox.join(temp), b"half an order").unwrap();
    fs::write(inbox.join("early.json"), b"{\"early\":1}").unwrap();

    let erp = Erp::start(&inbox, ".json");
    // The scan right after the watch finds the file that was already there;
    // the temp file beside it survives that scan.
    erp.wait_imported(1, WAIT);
    assert_eq!(erp.imports()[0].name, "early.json");
    assert_eq!(erp.imports()[0].bytes, b"{\"early\":1}");

    // A final name that appears whole (a hard link made outside the inbox).
    fs::write(staging.join("a"), b"{\"a\":1}").unwrap();
    fs::hard_link(staging.join("a"), inbox.join("a.json")).unwrap();
    // A final name written in place: taken as soon as it appears, so its bytes
    // may be read before the write lands. Only the count is certain.
    fs::write(inbox.join("b.json"), b"{\"b\":1}").unwrap();
    // Renamed into place, the way plutus-sync delivers.
    fs::write(inbox.join("c.json.7-x.part"), b"{\"c\":1}").unwrap();
    fs::rename(inbox.join("c.json.7-x.part"), inbox.join("c.json")).unwrap();
    erp.wait_imported(4, WAIT);

    let a = erp.imports().into_iter().find(|i| i.name == "a.json");
    assert_eq!(a.map(|i| i.bytes), Some(b"{\"a\":1}".to_vec()));
    let c = erp.imports().into_iter().find(|i| i.name == "c.json");
    assert_eq!(c.map(|i| i.bytes), Some(b"{\"c\":1}".to_vec()));
    assert_eq!(
        names_in(&inbox),
        vec![temp.to_string()],
        "only the temp is left"
    );
    assert_eq!(fs::read(inbox.join(temp)).unwrap(), b"half an order");
    assert!(erp.duplicates().is_empty(), "{:?}", erp.duplicates());

    // The same name delivered again is a second import: a duplicate.
    fs::write(inbox.join("c.json.8-y.part"), b"{\"c\":2}").unwrap();
    fs::rename(inbox.join("c.json.8-y.part"), inbox.join("c.json")).unwrap();
    erp.wait_imported(5, WAIT);
    assert_eq!(erp.duplicates(), vec![("c.json".to_string(), 2)]);
    let counts = erp.imported_names_counts();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            ("a.json", 1),
            ("b.json", 1),
            ("c.json", 2),
            ("early.json", 1)
        ]
        .map(|(n, c)| (n.to_string(), c))
    );
    let last = erp.imports().pop().unwrap();
    assert_eq!(
        (last.name.as_str(), last.bytes.as_slice()),
        ("c.json", &b"{\"c\":2}"[..])
    );
    assert_eq!(names_in(&inbox), vec![temp.to_string()]);
}

#[test]
fn erp_takes_a_burst_of_renamed_files_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    fs::create_dir_all(&inbox).unwrap();
    let erp = Erp::start(&inbox, ".json");
    // Events and rescans race for the same names: each must still be one import.
    let n = 500;
    for i in 0..n {
        let temp = inbox.join(format!("order-{i}.json.1-t.part"));
        fs::write(&temp, format!("{{\"order\":{i}}}")).unwrap();
        fs::rename(&temp, inbox.join(format!("order-{i}.json"))).unwrap();
    }
    erp.wait_imported(n, WAIT);
    assert!(erp.duplicates().is_empty(), "{:?}", erp.duplicates());
    assert_eq!(erp.imported_names_counts().len(), n);
    for i in erp.imports() {
        let id = i
            .name
            .trim_start_matches("order-")
            .trim_end_matches(".json");
        assert_eq!(
            i.bytes,
            format!("{{\"order\":{id}}}").into_bytes(),
            "{}",
            i.name
        );
    }
    assert!(names_in(&inbox).is_empty(), "{:?}", names_in(&inbox));
}

#[test]
fn relay_carries_an_sftp_session_to_sshd() {
    let sshd = Sshd::start();
    let relay = Relay::start(sshd_addr(&sshd));
    let payload: Vec<u8> = (0u8..=255).cycle().take(300_000).collect();
    let local = sshd.dir().join("through-relay.local");
    fs::write(&local, &payload).unwrap();

    let out = sshd.sftp_put(
        sshd.known_hosts(),
        relay.port(),
        &local,
        "through-relay.bin",
    );
    assert!(out.status.success(), "{}", sshd.describe(&out));
    let arrived = fs::read(sshd.inbox().join("through-relay.bin")).unwrap();
    assert!(arrived == payload, "bytes differ after the relay");
    wait_until(WAIT, "the relay to close the finished session", || {
        relay.connections() == 0
    });
}

#[test]
fn relay_cut_fails_a_transfer_in_flight_at_once_and_keeps_accepting() {
    let sshd = Sshd::start();
    let relay = Relay::start(sshd_addr(&sshd));
    let remote = sshd.inbox().join("stream.bin");
    // A transfer that lasts until the test ends it: ssh copies its stdin to a
    // remote file for as long as the feeder writes.
    let mut child = ssh(&sshd, &relay)
        .arg(format!("cat > '{}'", remote.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh (install openssh-client)");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        // Ends when ssh exits (broken pipe); the cap only bounds a broken test.
        for _ in 0..16 * 1024 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let flowing = poll_until(WAIT, || {
        fs::metadata(&remote).is_ok_and(|m| m.len() >= 1 << 20)
    });
    assert!(
        flowing,
        "no data reached sshd\n--- sshd log ---\n{}",
        sshd.log()
    );
    assert_eq!(relay.connections(), 1);

    let cut_at = Instant::now();
    assert_eq!(relay.cut_all(), 1);
    let exited = poll_until(Duration::from_secs(5), || {
        child.try_wait().unwrap().is_some()
    });
    let failed_after = cut_at.elapsed();
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited,
        "ssh still running 5s after the cut; stderr:\n{stderr}"
    );
    // 255: ssh's own error, here the connection; not the remote cat's status.
    assert_eq!(out.status.code(), Some(255), "stderr:\n{stderr}");
    println!(
        "ssh failed {failed_after:?} after the cut: {}",
        stderr.trim()
    );
    wait_until(WAIT, "the relay to drop the cut connection", || {
        relay.connections() == 0
    });

    let local = sshd.dir().join("after-cut.local");
    fs::write(&local, b"still relaying").unwrap();
    let out = sshd.sftp_put(sshd.known_hosts(), relay.port(), &local, "after-cut.bin");
    assert!(out.status.success(), "{}", sshd.describe(&out));
    assert_eq!(
        fs::read(sshd.inbox().join("after-cut.bin")).unwrap(),
        b"still relaying"
    );
}

#[test]
fn relay_cut_resets_both_peers() {
    let (echo, ended) = echo_server(1);
    let relay = Relay::start(echo);
    let mut client = TcpStream::connect(relay.addr()).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    round_trip(&mut client);

    assert_eq!(relay.cut_all(), 1);
    let mut buf = [0u8; 1];
    let err = client
        .read(&mut buf)
        .expect_err("the client must see the cut");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let server_side = ended
        .recv_timeout(WAIT)
        .expect("the echo server saw the end");
    assert_eq!(server_side, Some(ErrorKind::ConnectionReset));
    wait_until(WAIT, "no live connection", || relay.connections() == 0);
}

#[test]
fn relay_delay_adds_to_every_round_trip_and_keeps_order() {
    let (echo, _ended) = echo_server(1);
    let relay = Relay::start(echo);
    let mut client = TcpStream::connect(relay.addr()).unwrap();
    client.set_nodelay(true).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();

    let plain = (0..5).map(|_| round_trip(&mut client)).min().unwrap();
    // The same connection: the delay applies to data forwarded from now on.
    relay.set_delay(Duration::from_millis(10));
    let delayed: Vec<Duration> = (0..5).map(|_| round_trip(&mut client)).collect();
    println!("round trip without delay {plain:?}, with 10ms each way {delayed:?}");
    for rtt in &delayed {
        assert!(*rtt >= Duration::from_millis(20), "{rtt:?} < 20ms");
    }
    assert!(plain < *delayed.iter().min().unwrap());

    // 4 MiB in many chunks comes back whole and in order.
    let payload: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = client.try_clone().unwrap();
    let sent = payload.clone();
    let sender = thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut back = vec![0u8; payload.len()];
    client.read_exact(&mut back).unwrap();
    sender.join().unwrap();
    assert!(back == payload, "the echo came back altered or reordered");
}

#[test]
fn relay_refusing_closes_new_connections_but_not_live_ones() {
    let (echo, _ended) = echo_server(1);
    let relay = Relay::start(echo);
    let mut live = TcpStream::connect(relay.addr()).unwrap();
    live.set_read_timeout(Some(WAIT)).unwrap();
    round_trip(&mut live);

    relay.set_refuse(true);
    let mut refused = TcpStream::connect(relay.addr()).unwrap();
    refused.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1];
    let n = refused.read(&mut buf);
    assert!(
        matches!(n, Ok(0))
            || n.as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "a refused connection must be closed at once: {n:?}"
    );
    round_trip(&mut live);
    assert_eq!(relay.connections(), 1);
    relay.set_refuse(false);
}

fn sshd_addr(sshd: &Sshd) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, sshd.port()))
}

fn ssh(sshd: &Sshd, relay: &Relay) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(sshd.client_options(sshd.known_hosts()))
        .arg("-p")
        .arg(relay.port().to_string())
        .arg(format!("{}@127.0.0.1", sshd.user()));
    cmd
}

/// An echo server for `conns` connections. Each connection reports how it
/// ended: `None` for a clean EOF, else the error kind of the failed read.
fn echo_server(conns: usize) -> (SocketAddr, mpsc::Receiver<Option<ErrorKind>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().take(conns) {
            let mut stream = stream.unwrap();
            let tx = tx.clone();
            thread::spawn(move || {
                stream.set_nodelay(true).unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let end = loop {
                    match stream.read(&mut buf) {
                        Ok(0) => break None,
                        Ok(n) => {
                            if let Err(e) = stream.write_all(&buf[..n]) {
                                break Some(e.kind());
                            }
                        }
                        Err(e) => break Some(e.kind()),
                    }
                };
                let _ = stream.shutdown(Shutdown::Both);
                let _ = tx.send(end);
            });
        }
    });
    (addr, rx)
}

/// One byte there and back; returns how long it took.
fn round_trip(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    stream.write_all(b"?").unwrap();
    let mut buf = [0u8; 1];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"?");
    start.elapsed()
}
