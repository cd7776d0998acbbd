//! The SSH algorithms plutus-sync allows, pinned on every session, and what to say
//! when a server offers none of them.
//!
//! Key exchange: ML-KEM/X25519 hybrid, X25519 and NIST ECDH; no finite-field DH, no
//! SHA-1. Ciphers: AES-GCM first, then ChaCha20-Poly1305, then AES-CTR; no CBC.
//! MACs (for CTR only; the AEAD ciphers carry their own): SHA-2 encrypt-then-MAC
//! only. libssh2 drops from each list what its build lacks.
//!
//! Terrapin (CVE-2023-48795): libssh2 (1.11.2 here) always offers strict key
//! exchange (`kex-strict-c-v00@openssh.com`), so a server that has it (OpenSSH
//! 9.6 and later) gets it. A server without it (Win32-OpenSSH 8.1) is why AES-GCM comes
//! before ChaCha20-Poly1305: GCM is not open to the prefix truncation, while
//! ChaCha20-Poly1305 and CBC/CTR with encrypt-then-MAC are, without strict kex.

use ssh2::{MethodType, Session};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub(crate) const KEX: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
];
pub(crate) const CIPHERS: &[&str] = &[
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];
const AEAD: &[&str] = &[
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
];
pub(crate) const MACS: &[&str] = &[
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
];
const STRICT_KEX_SERVER: &str = "kex-strict-s-v00@openssh.com";

/// Pins the session to the lists above (both directions).
pub(crate) fn pin(sess: &Session) -> Result<(), ssh2::Error> {
    sess.method_pref(MethodType::Kex, &KEX.join(","))?;
    for t in [MethodType::CryptCs, MethodType::CryptSc] {
        sess.method_pref(t, &CIPHERS.join(","))?;
    }
    for t in [MethodType::MacCs, MethodType::MacSc] {
        sess.method_pref(t, &MACS.join(","))?;
    }
    Ok(())
}

/// What the session negotiated, for `check` and the debug log.
pub(crate) fn negotiated(sess: &Session) -> String {
    let m = |t| sess.methods(t).unwrap_or("?").to_string();
    let mac = m(MethodType::MacCs);
    let cipher = m(MethodType::CryptCs);
    let mac = if AEAD.contains(&cipher.as_str()) {
        "built into the cipher".to_string()
    } else {
        mac
    };
    format!(
        "kex {}, host key {}, cipher {cipher}, MAC {mac}",
        m(MethodType::Kex),
        m(MethodType::HostKey)
    )
}

/// The name-lists of a server's KEXINIT (RFC 4253 §7.1), in order: kex, host key,
/// ciphers c→s, s→c, MACs c→s, s→c, compression ×2, languages ×2.
pub(crate) struct ServerOffer {
    pub lists: Vec<Vec<String>>,
}

impl ServerOffer {
    /// Reads the server's KEXINIT on a connection of its own: it is sent in clear
    /// right after the banners, before anything is agreed. Bounded: 8 KiB of banner
    /// lines, one packet of at most 35000 bytes (RFC 4253 §6.1), the timeout.
    pub(crate) fn fetch(addr: SocketAddr, timeout: Duration) -> std::io::Result<ServerOffer> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(b"SSH-2.0-plutus_sync_probe\r\n")?;
        // Lines before "SSH-" may come first (RFC 4253 §4.2).
        let mut line = Vec::new();
        let mut seen = 0;
        loop {
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            seen += 1;
            if seen > 8192 {
                return Err(bad("no SSH banner in 8 KiB"));
            }
            if b[0] == b'\n' {
                if line.starts_with(b"SSH-") {
                    break;
                }
                line.clear();
            } else {
                line.push(b[0]);
            }
        }
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if !(6..=35000).contains(&len) {
            return Err(bad("implausible packet length"));
        }
        let mut pkt = vec![0u8; len];
        s.read_exact(&mut pkt)?;
        let pad = pkt[0] as usize;
        let payload = pkt
            .get(1..len.saturating_sub(pad))
            .ok_or_else(|| bad("padding longer than the packet"))?;
        ServerOffer::parse(payload).ok_or_else(|| bad("not a KEXINIT"))
    }

    fn parse(payload: &[u8]) -> Option<ServerOffer> {
        if payload.first() != Some(&20) {
            return None;
        }
        let mut rest = payload.get(17..)?;
        let mut lists = Vec::new();
        for _ in 0..10 {
            let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let text = std::str::from_utf8(rest.get(4..4 + n)?).ok()?;
            lists.push(
                text.split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
            rest = &rest[4 + n..];
        }
        Some(ServerOffer { lists })
    }

    pub(crate) fn strict_kex(&self) -> bool {
        self.lists[0].iter().any(|a| a == STRICT_KEX_SERVER)
    }

    /// What has nothing in common with ours, one clause each: "ciphers: the server
    /// offers aes128-cbc; plutus-sync allows aes256-gcm@openssh.com,...".
    /// `host_keys`: the host-key algorithms offered for known_hosts' key types.
    pub(crate) fn mismatches(&self, host_keys: &[&str]) -> Vec<String> {
        let theirs = |i: usize| &self.lists[i];
        let common = |i: usize, ours: &[&str]| theirs(i).iter().any(|a| ours.contains(&a.as_str()));
        let mut out = Vec::new();
        let mut say = |what: &str, i: usize, ours: &[&str]| {
            let offered: Vec<&str> = theirs(i)
                .iter()
                .map(String::as_str)
                .filter(|a| !a.starts_with("kex-strict-") && !a.starts_with("ext-info-"))
                .collect();
            out.push(format!(
                "{what}: the server offers {}; plutus-sync allows {}",
                offered.join(","),
                ours.join(",")
            ));
        };
        if !common(0, KEX) {
            say("key exchange", 0, KEX);
        }
        if !host_keys.is_empty() && !common(1, host_keys) {
            say("host key", 1, host_keys);
        }
        // Both directions alike (as sshd_config makes them): named once.
        let same = theirs(2) == theirs(3) && theirs(4) == theirs(5);
        let dirs: &[(usize, &str)] = if same {
            &[(2, "")]
        } else {
            &[(2, " (client to server)"), (3, " (server to client)")]
        };
        for &(i, dir) in dirs {
            if !common(i, CIPHERS) {
                say(&format!("ciphers{dir}"), i, CIPHERS);
            } else if !theirs(i).iter().any(|a| AEAD.contains(&a.as_str())) && !common(i + 2, MACS)
            {
                say(&format!("MACs{dir}"), i + 2, MACS);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kexinit(lists: [&str; 10]) -> Vec<u8> {
        let mut p = vec![20u8];
        p.extend([0u8; 16]);
        for l in lists {
            p.extend((l.len() as u32).to_be_bytes());
            p.extend(l.as_bytes());
        }
        p.extend([0u8; 5]); // first_kex_packet_follows, reserved
        p
    }

    #[test]
    fn a_cbc_only_server_is_named_as_a_cipher_mismatch() {
        let offer = ServerOffer::parse(&kexinit([
            "curve25519-sha256,kex-strict-s-v00@openssh.com",
            "ssh-ed25519",
            "aes128-cbc,aes256-cbc",
            "aes128-cbc,aes256-cbc",
            "hmac-sha2-256",
            "hmac-sha2-256",
            "none",
            "none",
            "",
            "",
        ]))
        .unwrap();
        assert!(offer.strict_kex());
        let m = offer.mismatches(&["ssh-ed25519"]);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with(
            "ciphers: the server offers aes128-cbc,aes256-cbc; plutus-sync allows aes256-gcm@openssh.com"
        ));
    }

    #[test]
    fn sha1_kex_and_macs_and_another_host_key_type_are_named() {
        let offer = ServerOffer::parse(&kexinit([
            "diffie-hellman-group14-sha1",
            "ssh-rsa",
            "aes128-ctr",
            "aes128-ctr",
            "hmac-sha1",
            "hmac-sha1",
            "none",
            "none",
            "",
            "",
        ]))
        .unwrap();
        assert!(!offer.strict_kex());
        let m = offer.mismatches(&["ssh-ed25519"]);
        assert!(m[0].starts_with("key exchange: the server offers diffie-hellman-group14-sha1;"));
        assert!(m[1].starts_with("host key: the server offers ssh-rsa;"));
        assert!(m[2].starts_with("MACs: the server offers hmac-sha1;"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn what_win32_openssh_8_1_offers_by_default_has_one_in_common_of_each() {
        // OpenSSH 8.1's compiled-in defaults (myproposal.h), as Win32-OpenSSH 8.1
        // ships them with no Ciphers/MACs/KexAlgorithms lines in sshd_config.
        let offer = ServerOffer::parse(&kexinit([
            "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,diffie-hellman-group14-sha1",
            "rsa-sha2-512,rsa-sha2-256,ssh-rsa,ecdsa-sha2-nistp256,ssh-ed25519",
            "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com",
            "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com",
            "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1",
            "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1",
            "none,zlib@openssh.com",
            "none,zlib@openssh.com",
            "",
            "",
        ]))
        .unwrap();
        assert!(offer.mismatches(&["ssh-ed25519"]).is_empty());
        // No strict kex before OpenSSH 9.6: hence AES-GCM first in our list.
        assert!(!offer.strict_kex());
    }
}
