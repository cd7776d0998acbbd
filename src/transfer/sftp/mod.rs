//! SFTP transport: SSH from ssh2 (bundled libssh2) for the connection, key-only auth
//! and the host key, always checked against known_hosts with the port; SFTP itself is
//! our own layer (`sftp_proto::client`) on the session's `sftp` subsystem channel, with
//! many requests in flight. Every blocking wait is bounded by the session timeout.
//! `remote`: the connection's `Remote` primitives as SFTP requests; `batch`: steps 1
//! and 2 for many files at once, their requests in flight together.

mod algorithms;
mod batch;
mod known_hosts;
mod remote;

use super::sftp_proto::client::Client;
use super::{Connection, TransferError, Transport};
pub(crate) use known_hosts::lookup_name;
use known_hosts::{KnownHosts, Verdict};
use remote::SftpConn;
use ssh2::{ExtendedData, MethodType, Session};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
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
    /// What the last session negotiated (`algorithms::negotiated`), for `check`.
    pub negotiated: std::sync::Mutex<Option<String>>,
}

impl SftpTransport {
    fn connect_err(&self, message: impl Into<String>) -> TransferError {
        TransferError::Connect {
            dest: self.describe(),
            message: message.into(),
        }
    }

    fn known_hosts_name(&self) -> String {
        known_hosts::lookup_name(&self.host, self.port)
    }

    /// A failed handshake; when it is because the server offers none of the
    /// algorithms we allow, its own offer (read on a second connection) says which.
    fn handshake_err(&self, e: ssh2::Error, addr: SocketAddr, host_keys: &[&str]) -> TransferError {
        // Only a failed negotiation (LIBSSH2_ERROR_KEX_FAILURE) is worth the second
        // connection: a stalled server must not cost a second timeout.
        const KEX_FAILURE: ssh2::ErrorCode = ssh2::ErrorCode::Session(-5);
        let mismatches = if e.code() == KEX_FAILURE {
            algorithms::ServerOffer::fetch(addr, self.timeout)
                .map(|o| o.mismatches(host_keys))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if mismatches.is_empty() {
            return self.connect_err(format!("SSH handshake failed: {e}"));
        }
        TransferError::Algorithms {
            dest: self.describe(),
            mismatches: mismatches.join("; "),
        }
    }

    /// Whether the server offers strict key exchange (Terrapin), asked on a
    /// connection of its own; `None` if it could not be read.
    pub(crate) fn strict_kex(&self) -> Option<bool> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()?
            .next()?;
        algorithms::ServerOffer::fetch(addr, self.timeout)
            .ok()
            .map(|o| o.strict_kex())
    }

    fn host_key_err(&self, problem: String, hint: String) -> TransferError {
        TransferError::HostKey {
            dest: self.describe(),
            problem,
            hint,
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

    fn negotiated(&self) -> Option<String> {
        let n = self.negotiated.lock().ok()?.clone()?;
        let strict = match self.strict_kex() {
            Some(true) => "yes",
            Some(false) => "no (the server lacks it: OpenSSH < 9.6; AES-GCM, first in our list, is not open to Terrapin)",
            None => "unknown",
        };
        Some(format!("{n}; strict kex (Terrapin): {strict}"))
    }

    fn connect(&self) -> Result<Box<dyn Connection>, TransferError> {
        // Read and judged before connecting: a line we cannot honour stops here.
        let known = read_known_hosts(&self.known_hosts, &self.host, self.port)
            .map_err(|(problem, hint)| self.host_key_err(problem, hint))?;

        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| self.connect_err(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(s) => {
                    tcp = Some((s, *addr));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let (tcp, addr) = tcp.ok_or_else(|| {
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
        let algs = host_key_algorithms(&known.key_types(&self.known_hosts_name()));
        if !algs.is_empty() {
            let _ = sess.method_pref(MethodType::HostKey, &algs.join(","));
        }
        algorithms::pin(&sess)
            .map_err(|e| self.connect_err(format!("cannot set the SSH algorithms: {e}")))?;
        if let Err(e) = sess.handshake() {
            return Err(self.handshake_err(e, addr, &algs));
        }
        let negotiated = algorithms::negotiated(&sess);
        tracing::debug!(dest = %self.describe(), "SSH session: {negotiated}");
        if let Ok(mut n) = self.negotiated.lock() {
            *n = Some(negotiated);
        }

        let (key, key_type) = sess
            .host_key()
            .ok_or_else(|| self.connect_err("the server sent no host key"))?;
        let line = format!(
            "{} {} {}",
            self.known_hosts_name(),
            key_type_name(key_type),
            base64(key)
        );
        let shown = self.known_hosts.display();
        match known.check(&self.known_hosts_name(), key) {
            Verdict::Match => {}
            Verdict::Revoked(n) => {
                return Err(self.host_key_err(
                    format!("is REVOKED: {shown} line {n} marks the server's key @revoked"),
                    "the server must get a new host key; confirm the new key's fingerprint with the ERP's administrators and list it".into(),
                ))
            }
            Verdict::Unknown => {
                return Err(self.host_key_err(
                    format!("is unknown: {shown} has no key for {}", self.known_hosts_name()),
                    format!(
                        "check the key on the server (ssh-keygen -lf on its host key) and, if it is right, add this line to {shown}{}:\n    {line}",
                        if self.port == 22 { "" } else { " (a port other than 22 needs the [host]:port form, as in OpenSSH)" }
                    ),
                ))
            }
            Verdict::Changed => {
                return Err(self.host_key_err(
                    format!("has CHANGED: the server's key does not match {shown}"),
                    format!(
                        "this can be an attack or a reinstalled server; confirm with the ERP's administrators before replacing the entry with:\n    {line}"
                    ),
                ))
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
        // The subsystem's stderr would come as extended data and, never read, eat
        // the channel's window: discard it, as libssh2's own SFTP does.
        let chan = sess
            .channel_session()
            .and_then(|mut c| {
                c.handle_extended_data(ExtendedData::Ignore)?;
                c.subsystem("sftp")?;
                Ok(c)
            })
            .map_err(|e| self.connect_err(format!("cannot start the SFTP subsystem: {e}")))?;
        let client = Client::start(chan)
            .map_err(|e| self.connect_err(format!("cannot start the SFTP subsystem: {e}")))?;
        Ok(Box::new(SftpConn::new(
            client,
            sess,
            sock,
            self.inbox.clone(),
            self.temp_suffix.clone(),
        )))
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

/// known_hosts for `host`:`port`, read and judged: what is wrong and its fix if it
/// cannot be read, has a line we cannot read, or asks for what we cannot honour
/// (`@cert-authority`). Checked at start, by `check`, and on every connect.
pub(crate) fn read_known_hosts(
    path: &Path,
    host: &str,
    port: u16,
) -> Result<KnownHosts, (String, String)> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        (
            format!("cannot be checked: {shown}: {e}"),
            "set [destination] known_hosts to a readable file holding the server's host key line"
                .into(),
        )
    })?;
    let known = KnownHosts::parse(&text)
        .and_then(|k| {
            k.usable_for(&known_hosts::lookup_name(host, port))
                .map(|()| k)
        })
        .map_err(|e| (format!("cannot be checked: {shown} {e}"), e.fix()))?;
    Ok(known)
}

/// The host-key algorithms to offer for the key types known_hosts holds for this
/// host and port: libssh2 prefers ed25519, and a known_hosts holding only another
/// type would then look like a changed key. RSA only with SHA-2 signatures.
fn host_key_algorithms(types: &[&str]) -> Vec<&'static str> {
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
                algs.extend(["rsa-sha2-512", "rsa-sha2-256"]);
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
        let kh = KnownHosts::parse(
            "\
# comment
[127.0.0.1]:2222 ssh-rsa AAAA
127.0.0.1 ssh-ed25519 AAAA
[127.0.0.1]:2222,[::1]:2222 ecdsa-sha2-nistp256 AAAA
@revoked [127.0.0.1]:2222 ssh-ed25519 AAAA
",
        )
        .unwrap();
        let name = known_hosts::lookup_name;
        assert_eq!(
            host_key_algorithms(&kh.key_types(&name("127.0.0.1", 2222))),
            vec!["ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"]
        );
        assert_eq!(
            host_key_algorithms(&kh.key_types(&name("127.0.0.1", 22))),
            vec!["ssh-ed25519"]
        );
        assert!(host_key_algorithms(&kh.key_types(&name("10.0.0.1", 22))).is_empty());
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
