//! SFTP transport over ssh2 (bundled libssh2): key-only auth, the host key always
//! checked against known_hosts with the port, every blocking wait bounded by a timeout.

use super::{Connection, Fault, Remote, RemoteError, TransferError, Transport};
use ssh2::{
    CheckResult, ErrorCode, KnownHostFileKind, MethodType, OpenFlags, OpenType, RenameFlags,
    Session, Sftp,
};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) struct SftpTransport {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub inbox: String,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub timeout: Duration,
    pub temp_suffix: String,
}

impl SftpTransport {
    fn connect_err(&self, message: impl Into<String>) -> TransferError {
        TransferError::Connect {
            dest: self.describe(),
            message: message.into(),
        }
    }

    fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl Transport for SftpTransport {
    fn describe(&self) -> String {
        format!(
            "sftp://{}@{}:{}{}",
            self.user, self.host, self.port, self.inbox
        )
    }

    fn connect(&self) -> Result<Box<dyn Connection>, TransferError> {
        let known = std::fs::read_to_string(&self.known_hosts).map_err(|e| TransferError::HostKey {
            dest: self.describe(),
            problem: format!("cannot be checked: {}: {e}", self.known_hosts.display()),
            hint: "set [destination] known_hosts to a readable file holding the server's host key line".into(),
        })?;

        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| self.connect_err(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            self.connect_err(
                last.map(|e| e.to_string())
                    .unwrap_or_else(|| "no address".into()),
            )
        })?;
        // Small files are a handful of small packets each: Nagle would add its delay
        // to every round trip.
        let _ = tcp.set_nodelay(true);
        // Kept to tear the connection down at once when we throw it away (see Drop).
        let sock = tcp
            .try_clone()
            .map_err(|e| self.connect_err(e.to_string()))?;

        let mut sess = Session::new().map_err(|e| self.connect_err(e.to_string()))?;
        sess.set_tcp_stream(tcp);
        sess.set_timeout(self.timeout.as_millis().min(u32::MAX as u128) as u32);
        // libssh2 prefers ed25519; a known_hosts holding only another key type would
        // then look like a changed key. Offer only the types known_hosts has.
        let algs = host_key_algorithms(&known, &self.host, self.port);
        if !algs.is_empty() {
            let _ = sess.method_pref(MethodType::HostKey, &algs.join(","));
        }
        sess.handshake()
            .map_err(|e| self.connect_err(format!("SSH handshake failed: {e}")))?;

        let (key, key_type) = sess
            .host_key()
            .ok_or_else(|| self.connect_err("the server sent no host key"))?;
        let mut kh = sess
            .known_hosts()
            .map_err(|e| self.connect_err(e.to_string()))?;
        kh.read_file(&self.known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(|e| TransferError::HostKey {
                dest: self.describe(),
                problem: format!("cannot be checked: {}: {e}", self.known_hosts.display()),
                hint: "the file must be in OpenSSH known_hosts format".into(),
            })?;
        let line = format!(
            "{} {} {}",
            self.known_hosts_name(),
            key_type_name(key_type),
            base64(key)
        );
        match kh.check_port(&self.host, self.port, key) {
            CheckResult::Match => {}
            CheckResult::NotFound => {
                return Err(TransferError::HostKey {
                    dest: self.describe(),
                    problem: format!(
                        "is unknown: {} has no key for {}",
                        self.known_hosts.display(),
                        self.known_hosts_name()
                    ),
                    hint: format!(
                        "check the key on the server (ssh-keygen -lf on its host key) and, if it is right, add this line to {}:\n    {line}",
                        self.known_hosts.display()
                    ),
                })
            }
            CheckResult::Mismatch => {
                return Err(TransferError::HostKey {
                    dest: self.describe(),
                    problem: format!(
                        "has CHANGED: the server's key does not match {}",
                        self.known_hosts.display()
                    ),
                    hint: format!(
                        "this can be an attack or a reinstalled server; confirm with the ERP's administrators before replacing the entry with:\n    {line}"
                    ),
                })
            }
            CheckResult::Failure => {
                return Err(TransferError::HostKey {
                    dest: self.describe(),
                    problem: "could not be checked (libssh2 failure)".into(),
                    hint: format!("check {}", self.known_hosts.display()),
                })
            }
        }

        sess.userauth_pubkey_file(&self.user, None, &self.identity, None)
            .map_err(|e| TransferError::Auth {
                dest: self.describe(),
                user: self.user.clone(),
                message: format!("with key {}: {e}", self.identity.display()),
            })?;
        if !sess.authenticated() {
            return Err(TransferError::Auth {
                dest: self.describe(),
                user: self.user.clone(),
                message: "the server did not accept the key".into(),
            });
        }
        sess.set_keepalive(false, 30);
        let sftp = sess
            .sftp()
            .map_err(|e| self.connect_err(format!("cannot start the SFTP subsystem: {e}")))?;
        Ok(Box::new(SftpConn {
            sftp: Some(sftp),
            sess,
            sock,
            inbox: self.inbox.clone(),
            temp_suffix: self.temp_suffix.clone(),
            fsync: None,
        }))
    }
}

struct SftpConn {
    // Taken in Drop, before the session it runs on.
    sftp: Option<Sftp>,
    sess: Session,
    sock: TcpStream,
    inbox: String,
    temp_suffix: String,
    /// Learnt by trying: `None` until the first fsync.
    fsync: Option<bool>,
}

pub(crate) fn ssh_fault(op: &'static str, path: &str, e: &ssh2::Error) -> RemoteError {
    let fault = match e.code() {
        ErrorCode::SFTP(2) | ErrorCode::SFTP(10) => Fault::NotFound,
        ErrorCode::SFTP(3) => Fault::PermissionDenied,
        ErrorCode::SFTP(4) | ErrorCode::SFTP(14) => Fault::Failure,
        ErrorCode::SFTP(6) | ErrorCode::SFTP(7) => Fault::Connection,
        ErrorCode::SFTP(8) => Fault::Unsupported,
        ErrorCode::SFTP(_) => Fault::Other,
        // Any session-level error (timeout, socket closed, protocol) leaves the session
        // unusable.
        ErrorCode::Session(_) => Fault::Connection,
    };
    RemoteError {
        op,
        path: path.to_string(),
        fault,
        message: e.to_string(),
    }
}

impl SftpConn {
    fn sftp(&self) -> &Sftp {
        self.sftp.as_ref().expect("present until drop")
    }
}

impl Drop for SftpConn {
    /// A connection is thrown away after any error, often because the peer stopped
    /// answering. libssh2's polite teardown (close the SFTP channel, wait for the
    /// reply) would then block for a whole timeout, and requests still queued in the
    /// socket could reach the server later and leave a stray temp file. Reset the TCP
    /// connection first: the teardown fails at once and the queued requests die with it.
    fn drop(&mut self) {
        let _ = rustix::net::sockopt::set_socket_linger(&self.sock, Some(Duration::ZERO));
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        drop(self.sftp.take());
    }
}

impl Remote for SftpConn {
    type Writer = ssh2::File;
    type Reader = ssh2::File;

    fn create(&mut self, path: &str) -> Result<ssh2::File, RemoteError> {
        self.sftp()
            .open_mode(
                Path::new(path),
                OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o644,
                OpenType::File,
            )
            .map_err(|e| ssh_fault("create", path, &e))
    }

    fn create_new(&mut self, path: &str) -> Result<ssh2::File, RemoteError> {
        let flags = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
        match self.sftp().open_mode(
            Path::new(path),
            flags | OpenFlags::EXCLUSIVE,
            0o644,
            OpenType::File,
        ) {
            // OpenSSH (and its Windows port) map SSH_FXF_EXCL to O_EXCL; a server that
            // says it has no exclusive create still gets the probe, under its random
            // name, rather than an outage.
            Err(e) if e.code() == ErrorCode::SFTP(8) => self
                .sftp()
                .open_mode(Path::new(path), flags, 0o644, OpenType::File)
                .map_err(|e| ssh_fault("create", path, &e)),
            r => r.map_err(|e| ssh_fault("create", path, &e)),
        }
    }

    fn sync(&mut self, w: &mut ssh2::File, path: &str) -> Result<bool, RemoteError> {
        if self.fsync == Some(false) {
            return Ok(false);
        }
        match w.fsync() {
            Ok(()) => {
                self.fsync = Some(true);
                Ok(true)
            }
            // Only OK means durable. OP_UNSUPPORTED, and any other status a server
            // answers (some answer FAILURE), mean "no fsync here": the read-back is the
            // proof we rely on anyway (on Windows even an OK flushes nothing). Learnt
            // once per connection, said once.
            Err(e) if matches!(e.code(), ErrorCode::SFTP(c) if c != 6 && c != 7) => {
                tracing::warn!(
                    "{path}: the server answered fsync with {e}; going on without fsync on this connection (the read-back still proves each file)"
                );
                self.fsync = Some(false);
                Ok(false)
            }
            Err(e) => Err(ssh_fault("fsync", path, &e)),
        }
    }

    fn close(&mut self, mut w: ssh2::File, path: &str) -> Result<(), RemoteError> {
        w.close().map_err(|e| ssh_fault("close", path, &e))
    }

    fn open(&mut self, path: &str) -> Result<ssh2::File, RemoteError> {
        self.sftp()
            .open(Path::new(path))
            .map_err(|e| ssh_fault("open", path, &e))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), RemoteError> {
        // No OVERWRITE flag: the server must refuse an existing target (SFTP v3 drops
        // the flags anyway, and both OpenSSH and Win32-OpenSSH then refuse).
        self.sftp()
            .rename(Path::new(from), Path::new(to), Some(RenameFlags::ATOMIC))
            .map_err(|e| ssh_fault("rename", to, &e))
    }

    fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError> {
        match self.sftp().stat(Path::new(path)) {
            Ok(st) => Ok(Some(st.size.unwrap_or(0))),
            Err(e) if matches!(e.code(), ErrorCode::SFTP(2) | ErrorCode::SFTP(10)) => Ok(None),
            Err(e) => Err(ssh_fault("stat", path, &e)),
        }
    }

    fn remove(&mut self, path: &str) -> Result<(), RemoteError> {
        self.sftp()
            .unlink(Path::new(path))
            .map_err(|e| ssh_fault("remove", path, &e))
    }

    fn list(&mut self) -> Result<Vec<String>, RemoteError> {
        let entries = self
            .sftp()
            .readdir(Path::new(&self.inbox))
            .map_err(|e| ssh_fault("list", &self.inbox, &e))?;
        Ok(entries
            .into_iter()
            .filter_map(|(p, _)| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect())
    }

    fn inbox(&self) -> &str {
        &self.inbox
    }

    fn temp_suffix(&self) -> &str {
        &self.temp_suffix
    }

    fn ping(&mut self) -> Result<(), RemoteError> {
        // A keepalive that wants no reply proves little; a stat of the inbox is one
        // round trip and proves the session and the folder.
        self.sess
            .keepalive_send()
            .map_err(|e| ssh_fault("ping", &self.inbox, &e))?;
        self.sftp()
            .stat(Path::new(&self.inbox))
            .map(|_| ())
            .map_err(|e| ssh_fault("list", &self.inbox, &e))
    }
}

/// What is wrong with the private key file at `path`, as ssh would refuse it: the
/// problem and its fix. `None`: usable. Checked before the service starts and by
/// `check`; libssh2 itself would take a key anyone can read, and say nothing useful
/// about one that needs a passphrase.
pub(crate) fn identity_problem(path: &Path) -> Option<(String, String)> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Some((
                format!("cannot be read: {e}"),
                format!(
                    "create a key without a passphrase: ssh-keygen -t ed25519 -N '' -f {shown}"
                ),
            ))
        }
    };
    if meta.mode() & 0o077 != 0 {
        return Some((
            format!(
                "has mode {:o}: group or others may read the private key",
                meta.mode() & 0o777
            ),
            format!("chmod 600 {shown}"),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Some((
            format!(
                "is owned by uid {}, not by the user plutus-sync runs as (uid {me})",
                meta.uid()
            ),
            format!("chown plutus-sync {shown} (the service's user)"),
        ));
    }
    // A key is a few KB; read no more than that of whatever the file is.
    let mut head = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(64 * 1024).read_to_end(&mut head);
    }
    if key_needs_passphrase(&String::from_utf8_lossy(&head)) {
        return Some((
            "is protected by a passphrase, which a service cannot type".into(),
            format!("use a key without one: ssh-keygen -p -N '' -f {shown} (or a new key), then install its .pub on the server again if you made a new one"),
        ));
    }
    None
}

/// Does this private key text need a passphrase? PEM keys say `ENCRYPTED`; OpenSSH's
/// own format names its cipher right after the magic (`none` when unencrypted).
fn key_needs_passphrase(text: &str) -> bool {
    if text.contains("ENCRYPTED") {
        return true;
    }
    let Some(body) = text
        .split("-----BEGIN OPENSSH PRIVATE KEY-----")
        .nth(1)
        .and_then(|b| b.split("-----END").next())
    else {
        return false;
    };
    let b64: String = body
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(64)
        .collect();
    let raw = base64_decode(&b64);
    // "openssh-key-v1\0", then a uint32 length and the cipher name.
    const MAGIC: &[u8] = b"openssh-key-v1\0";
    let Some(rest) = raw.strip_prefix(MAGIC) else {
        return false;
    };
    let Some(len) = rest
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
    else {
        return false;
    };
    rest.get(4..4 + len).is_some_and(|cipher| cipher != b"none")
}

/// Standard base64, as far as it decodes (stops at the first other character).
fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let Some(v) = T.iter().position(|&t| t == c) else {
            break;
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The host-key algorithms to offer: those whose key types known_hosts holds for this
/// host (plain `host` for port 22, `[host]:port` otherwise). Hashed and wildcard
/// entries cannot be matched without more work, so their types are offered too.
pub(crate) fn host_key_algorithms(known_hosts: &str, host: &str, port: u16) -> Vec<&'static str> {
    let want = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let mut types = Vec::new();
    for line in known_hosts.lines() {
        let mut fields = line.split_whitespace();
        let Some(names) = fields.next() else { continue };
        if names.starts_with('#') {
            continue;
        }
        if names.starts_with('@') {
            // @cert-authority / @revoked lines are not plain host keys.
            continue;
        }
        let Some(kt) = fields.next() else { continue };
        let matches = names.starts_with("|1|")
            || names.split(',').any(|n| {
                n == want || (!n.starts_with('!') && (n.contains('*') || n.contains('?')))
            });
        if matches && !types.contains(&kt) {
            types.push(kt);
        }
    }
    let mut algs = Vec::new();
    for pref in [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    ] {
        if types.contains(&pref) {
            if pref == "ssh-rsa" {
                algs.extend(["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]);
            } else {
                algs.push(pref);
            }
        }
    }
    algs
}

fn key_type_name(t: ssh2::HostKeyType) -> &'static str {
    match t {
        ssh2::HostKeyType::Rsa => "ssh-rsa",
        ssh2::HostKeyType::Dss => "ssh-dss",
        ssh2::HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        ssh2::HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        ssh2::HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        ssh2::HostKeyType::Ed25519 => "ssh-ed25519",
        ssh2::HostKeyType::Unknown => "unknown",
    }
}

// The host key line in the hint needs base64; eight lines do not justify a crate.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_key_types_known_for_this_host_and_port_are_offered() {
        let kh = "\
# comment
[127.0.0.1]:2222 ssh-rsa AAAA
127.0.0.1 ssh-ed25519 AAAA
[127.0.0.1]:2222,[::1]:2222 ecdsa-sha2-nistp256 AAAA
@revoked [127.0.0.1]:2222 ssh-ed25519 AAAA
";
        assert_eq!(
            host_key_algorithms(kh, "127.0.0.1", 2222),
            vec![
                "ecdsa-sha2-nistp256",
                "rsa-sha2-512",
                "rsa-sha2-256",
                "ssh-rsa"
            ]
        );
        assert_eq!(
            host_key_algorithms(kh, "127.0.0.1", 22),
            vec!["ssh-ed25519"]
        );
        assert!(host_key_algorithms(kh, "10.0.0.1", 22).is_empty());
    }

    #[test]
    fn a_key_needing_a_passphrase_is_told_apart_from_one_that_does_not() {
        // The first bytes of real keys from ssh-keygen (OpenSSH format).
        let plain = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
        let locked = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABD\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(!key_needs_passphrase(plain));
        assert!(key_needs_passphrase(locked));
        assert!(key_needs_passphrase(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
        ));
        assert_eq!(base64_decode("Zm9vYmFy"), b"foobar");
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
