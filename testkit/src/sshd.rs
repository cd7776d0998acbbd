//! A real OpenSSH server for integration tests, in the spirit of redis-rs's
//! `redis-test` server fixture.
//!
//! Each [`Sshd`] owns a private temp dir holding fresh ed25519 host and client
//! keys, an `authorized_keys`, a matching `known_hosts`, an `inbox/` (the SFTP
//! destination) and an `sshd_config`, and runs `sshd -D` on its own free port
//! on 127.0.0.1. Instances are independent, so tests may run them in parallel.
//! SFTP is sshd's `internal-sftp`, or with [`Sshd::start_with_sftp_wrapper`]
//! OpenSSH's `sftp-server` behind the misbehaving `sftp_wrapper.py`.
//!
//! Linux only: connection children are found through `/proc` (sshd `setsid`s
//! them out of its process group, so signalling the group alone would leave
//! established sessions alive).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;
use crate::procfs::{descendants, tree_cpu_seconds};

/// How long sshd gets to log "Server listening" and send its banner.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `restart` keeps retrying while the old port is still unavailable.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports tried by `start` when another process grabs ours first.
const START_ATTEMPTS: usize = 5;
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A running OpenSSH server with key-only auth for the current user.
///
/// Dropping it kills sshd and every per-connection child and deletes the temp
/// dir.
pub struct Sshd {
    /// Deleted on drop; `Drop for Sshd` kills sshd before fields are dropped.
    _tmp: TempDir,
    /// Canonical path of `_tmp`.
    dir: PathBuf,
    sshd_bin: PathBuf,
    user: String,
    port: u16,
    client_key: PathBuf,
    known_hosts: PathBuf,
    inbox: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    host_key_line: String,
    config_base: String,
    child: Option<Child>,
}

/// What serves the `sftp` subsystem.
enum SftpSubsystem<'a> {
    /// sshd's built-in `internal-sftp`.
    Internal,
    /// `sftp_wrapper.py MODES sftp-server`, logging to the sshd log.
    Wrapper { modes: &'a str },
}

impl SftpSubsystem<'_> {
    /// The `Subsystem sftp` command. sshd_config drops quotes from it, so
    /// no part may contain whitespace.
    fn command(&self, log: &Path) -> String {
        let SftpSubsystem::Wrapper { modes } = self else {
            return "internal-sftp".to_string();
        };
        // Beside this crate's Cargo.toml: found through the path cargo compiled it
        // from, wherever the tests run.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sftp_wrapper.py");
        let server = find_sftp_server();
        // Fail here, not as a closed SFTP channel later: python3 must run
        // the script, and the script must accept the modes.
        let check = Command::new("python3")
            .arg(&script)
            .args(["--check", modes])
            .arg(&server)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run python3 {}: {e}", script.display()));
        assert!(
            check.status.success(),
            "{} rejects modes {modes:?}: {}",
            script.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        let parts = [
            "/usr/bin/env python3".to_string(),
            script.display().to_string(),
            "--log".to_string(),
            log.display().to_string(),
            modes.to_string(),
            server.display().to_string(),
        ];
        for part in &parts[1..] {
            assert!(
                !part.contains(char::is_whitespace),
                "sshd_config cannot quote {part:?} in a Subsystem command"
            );
        }
        parts.join(" ")
    }
}

enum LaunchError {
    /// sshd could not bind its port (someone else holds it).
    AddrInUse,
    Other(String),
}

impl Sshd {
    /// Creates keys and config in a fresh temp dir, starts sshd on a free
    /// port and waits until it answers with an SSH banner.
    pub fn start() -> Sshd {
        Sshd::start_with(SftpSubsystem::Internal)
    }

    /// Like [`Sshd::start`], but SFTP is served by OpenSSH's `sftp-server`
    /// behind `testkit/sftp_wrapper.py`, which misbehaves as `modes`
    /// (comma-separated) says: `rename-overwrites` (a rename replaces an
    /// existing target), `fsync-fails` (`fsync@openssh.com` answers
    /// `SSH_FX_FAILURE`), `passthrough` (no change). Each rewritten request
    /// is logged as one line in [`Sshd::log`].
    pub fn start_with_sftp_wrapper(modes: &str) -> Sshd {
        Sshd::start_with(SftpSubsystem::Wrapper { modes })
    }

    fn start_with(sftp: SftpSubsystem) -> Sshd {
        let sshd_bin = find_sshd();
        let user = current_user();
        let is_root = unsafe { libc::geteuid() } == 0;
        if is_root {
            ensure_privsep_dir();
        }
        let use_pam = decide_use_pam(&user, is_root);

        let tmp = tempfile::Builder::new()
            .prefix("plutus-sshd-")
            .tempdir()
            .expect("create temp dir for sshd");
        let root = tmp
            .path()
            .canonicalize()
            .expect("canonicalize sshd temp dir");

        let host_key = root.join("ssh_host_ed25519_key");
        keygen(&host_key, "plutus-test-host");
        let client_key = root.join("id_ed25519");
        keygen(&client_key, "plutus-test-client");

        let authorized_keys = root.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized_keys)
            .expect("write authorized_keys");
        let inbox = root.join("inbox");
        fs::create_dir(&inbox).expect("create inbox dir");
        let log_path = root.join("sshd.log");

        let mut config_base = String::new();
        for line in [
            "ListenAddress 127.0.0.1".to_string(),
            format!("HostKey {}", host_key.display()),
            format!("AuthorizedKeysFile {}", authorized_keys.display()),
            format!("PidFile {}", root.join("sshd.pid").display()),
            "StrictModes no".to_string(),
            // See `decide_use_pam`: PAM only when the account is locked.
            format!("UsePAM {}", if use_pam { "yes" } else { "no" }),
            "PasswordAuthentication no".to_string(),
            "KbdInteractiveAuthentication no".to_string(),
            "PubkeyAuthentication yes".to_string(),
            "PermitRootLogin prohibit-password".to_string(),
            format!("Subsystem sftp {}", sftp.command(&log_path)),
            "LogLevel VERBOSE".to_string(),
            "ClientAliveInterval 0".to_string(),
            "MaxStartups 100".to_string(),
            "MaxSessions 50".to_string(),
        ] {
            config_base.push_str(&line);
            config_base.push('\n');
        }
        // OpenSSH >= 9.8 penalises source addresses that fail auth or drop
        // connections; tests do both on purpose from 127.0.0.1 and must not
        // be locked out. Older sshd rejects the unknown keyword.
        if sshd_version(&sshd_bin) >= (9, 8) {
            config_base.push_str("PerSourcePenalties no\n");
        }

        let mut sshd = Sshd {
            _tmp: tmp,
            dir: root.clone(),
            sshd_bin,
            user,
            port: 0,
            known_hosts: root.join("known_hosts"),
            host_key_line: public_key_line(&host_key),
            client_key,
            inbox,
            config_path: root.join("sshd_config"),
            log_path,
            config_base,
            child: None,
        };

        for _ in 0..START_ATTEMPTS {
            // The port is free only between dropping this listener and sshd's
            // bind; if another process wins that race, pick a new one.
            sshd.port = free_port();
            sshd.write_port_files();
            match sshd.launch() {
                Ok(()) => return sshd,
                Err(LaunchError::AddrInUse) => continue,
                Err(LaunchError::Other(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "sshd could not bind a free port in {START_ATTEMPTS} attempts\n--- sshd log ---\n{}",
            sshd.log()
        );
    }

    /// Kills sshd and all its connection children (so established sessions
    /// drop) and waits for the listener to exit. No-op when already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
    }

    /// Starts sshd again on the same port with the same keys and waits until
    /// it is ready. Stops it first if it is still running.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(LaunchError::AddrInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(LaunchError::AddrInUse) => panic!(
                    "sshd could not re-bind port {} within {REBIND_TIMEOUT:?}\n--- sshd log ---\n{}",
                    self.port,
                    self.log()
                ),
                Err(LaunchError::Other(msg)) => panic!("{msg}"),
            }
        }
    }

    /// Adds `lines` to sshd_config (e.g. `Ciphers aes128-cbc`; a keyword the base
    /// config already sets would be ignored: sshd takes the first) and restarts
    /// sshd with them, on the same port with the same keys.
    pub fn restart_with_config(&mut self, lines: &str) {
        self.config_base.push_str(lines.trim_end());
        self.config_base.push('\n');
        self.write_port_files();
        self.restart();
    }

    /// Freezes sshd and every connection child (SIGSTOP): the port still
    /// accepts TCP connections, but nothing answers. Simulates a stalled
    /// network/peer.
    pub fn pause(&self) {
        let pid = self.pid();
        signal(pid, libc::SIGSTOP);
        freeze_descendants(pid);
    }

    /// Undoes [`Sshd::pause`] (SIGCONT to sshd and all its children).
    pub fn resume(&self) {
        let pid = self.pid();
        for d in descendants(pid) {
            signal(d, libc::SIGCONT);
        }
        signal(pid, libc::SIGCONT);
    }

    /// CPU seconds used so far by sshd and every process below it (the connection
    /// children and their SFTP servers), each tick counted once.
    pub fn cpu_seconds(&self) -> f64 {
        tree_cpu_seconds(self.pid())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user (the user running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Absolute path of the SFTP destination directory.
    pub fn inbox(&self) -> &Path {
        &self.inbox
    }

    /// Private key (no passphrase) accepted for [`Sshd::user`].
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// A known_hosts file holding the correct host key for
    /// `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// `sftp://USER@127.0.0.1:PORT/ABS/INBOX`: the URL path is the absolute
    /// inbox path.
    pub fn url(&self) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            self.inbox.display()
        )
    }

    /// Everything sshd has logged so far (all starts).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path, 0)
    }

    /// The fixture's temp dir, for files that tests want to keep beside it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a known_hosts for `[127.0.0.1]:PORT` that names a different,
    /// freshly generated ed25519 key ("host key changed").
    pub fn other_known_hosts(&self) -> PathBuf {
        let key = self.dir().join("other_host_ed25519_key");
        if !key.exists() {
            keygen(&key, "plutus-test-other-host");
        }
        let path = self.dir().join("other_known_hosts");
        let line = format!("{} {}\n", self.host_pattern(), public_key_line(&key));
        fs::write(&path, line).expect("write other_known_hosts");
        path
    }

    /// Writes a known_hosts naming this server's real key for `[127.0.0.1]:port`: for
    /// a client that reaches it through a relay listening on `port`.
    pub fn known_hosts_for_port(&self, port: u16) -> PathBuf {
        let path = self.dir().join(format!("known_hosts_{port}"));
        let line = format!("[127.0.0.1]:{port} {}\n", self.host_key_line);
        fs::write(&path, line).expect("write known_hosts for a relay port");
        path
    }

    /// Options for the stock OpenSSH client (`ssh`, `sftp`) to log in to this server
    /// with its client key, checking its host key against `known_hosts` (under the
    /// name `[127.0.0.1]:PORT` even through a relay), never asking anything, and
    /// ignoring the ~/.ssh/config of whoever runs the tests. The port is the
    /// caller's (`-p` for ssh, `-P` for sftp).
    pub fn client_options(&self, known_hosts: &Path) -> Vec<String> {
        let mut args = vec!["-F".to_string(), "/dev/null".to_string(), "-i".to_string()];
        args.push(self.client_key().display().to_string());
        for o in [
            format!("UserKnownHostsFile={}", known_hosts.display()),
            format!("HostKeyAlias={}", self.host_pattern()),
            "CheckHostIP=no".to_string(),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            "BatchMode=yes".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "ConnectTimeout=10".to_string(),
            "ServerAliveInterval=5".to_string(),
            "ServerAliveCountMax=2".to_string(),
        ] {
            args.push("-o".to_string());
            args.push(o);
        }
        args
    }

    /// The stock `sftp -b -` (the batch on stdin, stdio piped), logging in to this
    /// server through `port` (its own, or a relay's) with [`Sshd::client_options`].
    pub fn sftp_batch(&self, known_hosts: &Path, port: u16) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.args(["-b", "-"])
            .args(self.client_options(known_hosts))
            .arg("-P")
            .arg(port.to_string())
            .arg(format!("{}@127.0.0.1", self.user))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Uploads `local` to `inbox/remote_name` with [`Sshd::sftp_batch`] through
    /// `port`: what sftp said. The fixture tests use it to prove the fixtures with
    /// the stock client alone.
    pub fn sftp_put(
        &self,
        known_hosts: &Path,
        port: u16,
        local: &Path,
        remote_name: &str,
    ) -> Output {
        let mut child = self
            .sftp_batch(known_hosts, port)
            .spawn()
            .expect("run sftp (install openssh-client)");
        let batch = format!(
            "put \"{}\" \"{}/{}\"\n",
            local.display(),
            self.inbox.display(),
            remote_name
        );
        let mut stdin = child.stdin.take().expect("sftp stdin");
        stdin.write_all(batch.as_bytes()).expect("write sftp batch");
        drop(stdin);
        child.wait_with_output().expect("wait for sftp")
    }

    /// A client's exit status and output with this server's log, for a failure message.
    pub fn describe(&self, out: &Output) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- sshd log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        )
    }

    /// Writes an empty known_hosts ("unknown host key").
    pub fn empty_known_hosts(&self) -> PathBuf {
        let path = self.dir().join("empty_known_hosts");
        fs::write(&path, "").expect("write empty_known_hosts");
        path
    }

    fn host_pattern(&self) -> String {
        format!("[127.0.0.1]:{}", self.port)
    }

    fn pid(&self) -> u32 {
        let child = self.child.as_ref().expect("sshd is not running");
        child.id()
    }

    fn write_port_files(&self) {
        let kh = format!("{} {}\n", self.host_pattern(), self.host_key_line);
        fs::write(&self.known_hosts, kh).expect("write known_hosts");
        let config = format!("Port {}\n{}", self.port, self.config_base);
        fs::write(&self.config_path, config).expect("write sshd_config");
    }

    /// Spawns sshd and waits for readiness: it must log that it listens on
    /// our port (so a banner from someone else's server on a recycled port
    /// cannot fool us) and then actually send an SSH-2.0 banner.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open sshd log");
        writeln!(log, "=== fixture: starting sshd on port {} ===", self.port)
            .expect("write sshd log");
        let offset = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);

        let child = Command::new(&self.sshd_bin)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            // Own process group, so signals reach sshd and not the test runner.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.sshd_bin.display()));
        self.child = Some(child);

        let listening = format!("Server listening on 127.0.0.1 port {}", self.port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let new_log = read_lossy(&self.log_path, offset);
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                if new_log.contains("Address already in use") {
                    return Err(LaunchError::AddrInUse);
                }
                return Err(LaunchError::Other(format!(
                    "sshd exited during startup ({status})\n--- sshd log ---\n{}",
                    self.log()
                )));
            }
            if new_log.contains(&listening) && banner_ok(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(LaunchError::Other(format!(
                    "sshd on port {} not ready within {READY_TIMEOUT:?}\n--- sshd log ---\n{}",
                    self.port,
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connects and reads the identification line. Sends our own identification
/// before closing so the sshd log shows a plain disconnect, not an error.
fn banner_ok(port: u16) -> bool {
    let addr = SocketAddr::from((LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let ok = read_banner(&mut stream).is_some_and(|b| b.starts_with("SSH-2.0-"));
    let _ = stream.write_all(b"SSH-2.0-plutus_fixture_probe\r\n");
    ok
}

/// Reads the server's identification line (skipping any pre-banner lines).
/// `None` on EOF, timeout or garbage.
pub fn read_banner(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 1024 {
        match stream.read(&mut byte) {
            Ok(1) => {}
            _ => return None,
        }
        if byte[0] != b'\n' {
            line.push(byte[0]);
            continue;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.starts_with("SSH-") {
            return Some(text);
        }
        line.clear();
    }
    None
}

/// The sshd binary (`/usr/sbin/sshd`, else the first on PATH).
pub fn find_sshd() -> PathBuf {
    let candidates = [PathBuf::from("/usr/sbin/sshd")].into_iter().chain(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.join("sshd")),
    );
    for c in candidates {
        if c.is_file() {
            // sshd re-execs itself and insists on an absolute path.
            return c.canonicalize().unwrap_or(c);
        }
    }
    panic!("sshd not found in /usr/sbin or PATH: install openssh-server (tests/ci.sh does)");
}

/// OpenSSH's standalone SFTP server (Debian: openssh-sftp-server, a
/// dependency of openssh-server).
fn find_sftp_server() -> PathBuf {
    let candidates = ["/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server"];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|c| c.is_file())
        .unwrap_or_else(|| {
            panic!(
                "sftp-server not found at {}: install openssh-sftp-server \
                 (pulled in by openssh-server, which tests/ci.sh installs)",
                candidates.join(" or ")
            )
        })
}

/// `(major, minor)` from `sshd -V` ("OpenSSH_9.2p1 ..."); (0, 0) if unknown.
fn sshd_version(sshd: &Path) -> (u32, u32) {
    let Ok(out) = Command::new(sshd).arg("-V").stdin(Stdio::null()).output() else {
        return (0, 0);
    };
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    parse_openssh_version(&text).unwrap_or((0, 0))
}

fn parse_openssh_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("OpenSSH_")? + "OpenSSH_".len()..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("run `id -un`");
    assert!(out.status.success(), "`id -un` failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("user name is UTF-8")
        .trim()
        .to_string()
}

/// sshd (as root) refuses to start without its privilege-separation dir.
pub fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    match fs::create_dir(dir) {
        Ok(()) => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod /run/sshd");
        }
        // Another test (or the system) created it first.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => panic!("create /run/sshd (sshd's privilege-separation dir): {e}"),
    }
}

/// With `UsePAM no`, sshd rejects *every* login, keys included, for an
/// account whose shadow password starts with '!' ("account is locked"),
/// which is common for root and for CI users. With PAM, Debian/Ubuntu's
/// account stack only checks expiry, so key logins work: use it then, and
/// only then (PAM sessions add moving parts we do not otherwise need).
fn decide_use_pam(user: &str, is_root: bool) -> bool {
    // Only root can read /etc/shadow; non-root sshd cannot either, so it
    // never sees the lock.
    let Ok(shadow) = fs::read_to_string("/etc/shadow") else {
        return false;
    };
    if !shadow_locked(&shadow, user) {
        return false;
    }
    if is_root && Path::new("/etc/pam.d/sshd").is_file() {
        return true;
    }
    panic!(
        "account {user:?} is locked in /etc/shadow ('!' password prefix) and \
         there is no /etc/pam.d/sshd to work around it: sshd would refuse \
         even key logins. Unlock it without setting a password, e.g. \
         `sudo usermod -p '*' {user}`."
    );
}

fn shadow_locked(shadow: &str, user: &str) -> bool {
    shadow
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| *name == user)
        .is_some_and(|(_, rest)| rest.starts_with('!'))
}

/// A new ed25519 key pair at `path` and `path.pub`, without a passphrase.
pub fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen (install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// "ssh-ed25519 AAAA..." (type and key, comment dropped) of `key`'s .pub.
fn public_key_line(key: &Path) -> String {
    let text = fs::read_to_string(key.with_extension("pub")).expect("read public key");
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(blob)) => format!("{kind} {blob}"),
        _ => panic!("malformed public key {}: {text:?}", key.display()),
    }
}

fn read_lossy(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = (offset as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

fn signal(pid: u32, sig: libc::c_int) {
    // ESRCH (already gone) is fine for every caller.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Stops every descendant of the (already stopped) `pid`, rescanning until
/// the set is stable so a process that was mid-fork cannot slip through.
/// Returns them all.
fn freeze_descendants(pid: u32) -> HashSet<u32> {
    let mut frozen = HashSet::new();
    loop {
        let found: Vec<u32> = descendants(pid)
            .into_iter()
            .filter(|d| !frozen.contains(d))
            .collect();
        if found.is_empty() {
            return frozen;
        }
        for d in found {
            signal(d, libc::SIGSTOP);
            frozen.insert(d);
        }
    }
}

/// Kills sshd, its process group and all descendants (connection children
/// `setsid` away from the group), then reaps sshd.
fn kill_tree(child: &mut Child) {
    let pid = child.id();
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // Stopped first so it cannot fork while we collect its children, and
    // the tree is collected before anything dies and gets re-parented.
    signal(pid, libc::SIGSTOP);
    for d in freeze_descendants(pid) {
        signal(d, libc::SIGKILL);
    }
    // The group id stays reserved until we reap the leader below.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_lock_detection() {
        let shadow = "root:!:19000:0:99999:7:::\nbob:*:19000::::::\nal:!$6$x:1::::::\n";
        assert!(shadow_locked(shadow, "root"));
        assert!(!shadow_locked(shadow, "bob"));
        assert!(shadow_locked(shadow, "al"));
        assert!(!shadow_locked(shadow, "nobody"));
        assert!(!shadow_locked(shadow, "roo"));
    }

    #[test]
    fn openssh_version_parsing() {
        let v = "OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024";
        assert_eq!(parse_openssh_version(v), Some((9, 2)));
        assert_eq!(
            parse_openssh_version("OpenSSH_10.0, OpenSSL 3.5"),
            Some((10, 0))
        );
        assert_eq!(parse_openssh_version("garbage"), None);
    }
}
