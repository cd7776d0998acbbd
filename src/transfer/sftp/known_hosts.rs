//! known_hosts read as OpenSSH reads it (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"), by
//! us rather than by libssh2: libssh2's check also accepts a plain `host` entry for
//! any port, knows neither `!negated` patterns nor wildcards, and has no markers, so
//! a `@revoked` line would at best fail the whole file and at worst be skipped.
//!
//! - The name looked up is `host` for port 22 and `[host]:port` otherwise; a plain
//!   `host` entry does not match another port.
//! - Patterns: `*` and `?` wildcards, case-insensitive; a matching `!pattern` makes
//!   the whole line not apply, whatever else on it matches.
//! - Hashed names (`|1|salt|hash`, `HashKnownHosts yes`) are HMAC-SHA1 of the name.
//! - `@revoked`: that key is refused, for every host (stricter than OpenSSH, which
//!   applies the line's patterns: a revoked key is revoked wherever it turns up).
//! - `@cert-authority`: libssh2 cannot check host certificates, so a CA line that
//!   applies to the destination is refused with the fix, never skipped. CA lines for
//!   other hosts do not concern this destination.
//!
//! A line that cannot be read (too few fields, a key that is not base64, an unknown
//! marker) is an error naming the line, not skipped as ssh does: a typo in the one
//! line that matters must not turn into "unknown host".

use hmac::{Hmac, Mac};
use sha1::Sha1;

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum KnownHostsError {
    #[error("line {line}: {what}")]
    Malformed { line: usize, what: String },
    #[error("line {line}: @cert-authority for {name}: host certificates cannot be checked (libssh2 has no certificate support)")]
    CertAuthority { line: usize, name: String },
}

impl KnownHostsError {
    pub(crate) fn fix(&self) -> String {
        match self {
            KnownHostsError::Malformed { .. } => {
                "each line is `[marker] names keytype base64-key [comment]`; correct or remove that line".into()
            }
            KnownHostsError::CertAuthority { .. } => {
                "remove that line (or narrow its names) and list the server's own host key instead (ssh-keyscan -p PORT HOST, checked against the server's fingerprint)".into()
            }
        }
    }
}

/// What known_hosts says of the key the server sent.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    Match,
    /// On an `@revoked` line (1-based line number).
    Revoked(usize),
    /// The name has entries, none with this key.
    Changed,
    Unknown,
}

#[derive(Debug, PartialEq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug)]
struct Entry {
    line: usize,
    marker: Marker,
    names: String,
    key_type: String,
    blob: Vec<u8>,
}

pub(crate) struct KnownHosts {
    entries: Vec<Entry>,
}

/// The name OpenSSH looks up for this host and port.
pub(crate) fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

impl KnownHosts {
    pub(crate) fn parse(text: &str) -> Result<KnownHosts, KnownHostsError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |what: &str| KnownHostsError::Malformed {
                line,
                what: what.into(),
            };
            let mut fields = raw.split_whitespace().peekable();
            match fields.peek() {
                None => continue,
                Some(f) if f.starts_with('#') => continue,
                _ => {}
            }
            let marker = match fields.peek().copied() {
                Some("@revoked") => Marker::Revoked,
                Some("@cert-authority") => Marker::CertAuthority,
                Some(m) if m.starts_with('@') => {
                    return Err(bad(&format!(
                        "unknown marker {m:?} (OpenSSH knows @revoked and @cert-authority)"
                    )))
                }
                _ => Marker::None,
            };
            if marker != Marker::None {
                fields.next();
            }
            let (Some(names), Some(key_type), Some(key)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad("expected host names, a key type and a base64 key"));
            };
            let blob = super::base64_decode(key);
            if blob.is_empty()
                || super::base64(&blob).trim_end_matches('=') != key.trim_end_matches('=')
            {
                return Err(bad("the key is not base64"));
            }
            entries.push(Entry {
                line,
                marker,
                names: names.to_string(),
                key_type: key_type.to_string(),
                blob,
            });
        }
        Ok(KnownHosts { entries })
    }

    /// Refuses what cannot be honoured for this name: an `@cert-authority` line
    /// that applies to it. Checked before connecting, at start and by `check`.
    pub(crate) fn usable_for(&self, name: &str) -> Result<(), KnownHostsError> {
        match self
            .entries
            .iter()
            .find(|e| e.marker == Marker::CertAuthority && names_match(&e.names, name))
        {
            Some(e) => Err(KnownHostsError::CertAuthority {
                line: e.line,
                name: name.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The key types of the plain entries for `name`, in file order.
    pub(crate) fn key_types(&self, name: &str) -> Vec<&str> {
        let mut types: Vec<&str> = Vec::new();
        for e in self.plain_for(name) {
            if !types.contains(&e.key_type.as_str()) {
                types.push(&e.key_type);
            }
        }
        types
    }

    /// What the file says of `key` (the server's public key blob) for `name`.
    pub(crate) fn check(&self, name: &str, key: &[u8]) -> Verdict {
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.blob == key)
        {
            return Verdict::Revoked(e.line);
        }
        let mut any = false;
        for e in self.plain_for(name) {
            if e.blob == key {
                return Verdict::Match;
            }
            any = true;
        }
        if any {
            Verdict::Changed
        } else {
            Verdict::Unknown
        }
    }

    fn plain_for(&self, name: &str) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.marker == Marker::None && names_match(&e.names, name))
            .collect()
    }
}

/// Does the names field of a line apply to `name`? Hashed (`|1|salt|hash`), or a
/// comma-separated pattern list as OpenSSH's match_hostname: a matching negated
/// pattern rules the line out, otherwise one positive match is needed.
fn names_match(names: &str, name: &str) -> bool {
    if let Some(rest) = names.strip_prefix("|1|") {
        let Some((salt, hash)) = rest.split_once('|') else {
            return false;
        };
        let (salt, hash) = (super::base64_decode(salt), super::base64_decode(hash));
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(name.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    let name = name.to_ascii_lowercase();
    let mut positive = false;
    for pat in names.split(',') {
        let (negated, pat) = match pat.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        if glob(pat.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// `*` any run of characters, `?` any one character, as OpenSSH's match_pattern.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBVYN6mNJ1tLQHHS9ZDfW2MfNxvU8tFa5bC1RLbZnxNf";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOkR4Jv1sk1qv3l6rXrc0MROFw4jE1O9yZWP1P1tS1aX";

    fn kh(text: &str) -> KnownHosts {
        KnownHosts::parse(text).expect("parses")
    }
    fn blob(k: &str) -> Vec<u8> {
        crate::transfer::sftp::base64_decode(k)
    }

    #[test]
    fn a_plain_host_entry_matches_port_22_only() {
        let f = kh(&format!("127.0.0.1 ssh-ed25519 {K1}\n"));
        assert_eq!(
            f.check(&lookup_name("127.0.0.1", 22), &blob(K1)),
            Verdict::Match
        );
        assert_eq!(
            f.check(&lookup_name("127.0.0.1", 2222), &blob(K1)),
            Verdict::Unknown
        );
        let f = kh(&format!("[127.0.0.1]:2222 ssh-ed25519 {K1}\n"));
        assert_eq!(f.check("[127.0.0.1]:2222", &blob(K1)), Verdict::Match);
        assert_eq!(f.check("[127.0.0.1]:2223", &blob(K1)), Verdict::Unknown);
        assert_eq!(f.check("[127.0.0.1]:2222", &blob(K2)), Verdict::Changed);
    }

    #[test]
    fn a_revoked_key_is_refused_even_when_another_line_accepts_it() {
        let f = kh(&format!(
            "[erp]:2222 ssh-ed25519 {K1}\n@revoked * ssh-ed25519 {K1}\n"
        ));
        assert_eq!(f.check("[erp]:2222", &blob(K1)), Verdict::Revoked(2));
        // Revoked for every host, whatever the line's names.
        let f = kh(&format!(
            "[erp]:2222 ssh-ed25519 {K1}\n@revoked oldhost ssh-ed25519 {K1}\n"
        ));
        assert_eq!(f.check("[erp]:2222", &blob(K1)), Verdict::Revoked(2));
        // A revoked line offers no key type.
        assert!(f.key_types("oldhost").is_empty());
    }

    #[test]
    fn negation_rules_a_line_out_and_wildcards_match() {
        let f = kh(&format!(
            "*.shop.example,!db.shop.example ssh-ed25519 {K1}\n"
        ));
        assert_eq!(f.check("erp.shop.example", &blob(K1)), Verdict::Match);
        assert_eq!(f.check("ERP.Shop.Example", &blob(K1)), Verdict::Match);
        assert_eq!(f.check("db.shop.example", &blob(K1)), Verdict::Unknown);
        let f = kh(&format!("[10.0.0.?]:2222 ssh-ed25519 {K1}\n"));
        assert_eq!(f.check("[10.0.0.7]:2222", &blob(K1)), Verdict::Match);
        assert_eq!(f.check("[10.0.0.17]:2222", &blob(K1)), Verdict::Unknown);
        // A negation alone matches nothing.
        let f = kh(&format!("!erp ssh-ed25519 {K1}\n"));
        assert_eq!(f.check("other", &blob(K1)), Verdict::Unknown);
        assert!(glob(b"a*b*c", b"axxbyyc") && !glob(b"a*b*c", b"axxbyy") && glob(b"*", b""));
    }

    #[test]
    fn hashed_names_match_as_ssh_keygen_hashes_them() {
        // `ssh-keygen -H` of "[127.0.0.1]:2222": HMAC-SHA1 keyed with the salt.
        let name = "[127.0.0.1]:2222";
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(name.as_bytes());
        let hash = mac.finalize().into_bytes();
        let b64 = crate::transfer::sftp::base64;
        let line = format!("|1|{}|{} ssh-ed25519 {K1}\n", b64(&salt), b64(&hash));
        let f = kh(&line);
        assert_eq!(f.check(name, &blob(K1)), Verdict::Match);
        assert_eq!(f.check("127.0.0.1", &blob(K1)), Verdict::Unknown);
        assert_eq!(f.key_types(name), vec!["ssh-ed25519"]);
        // RFC 2202 test case 2, so the HMAC itself is the standard one.
        let mut mac = Hmac::<Sha1>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            mac.finalize().into_bytes().as_slice(),
            [
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ]
        );
    }

    #[test]
    fn a_cert_authority_line_for_this_host_is_refused_others_are_not() {
        let f = kh(&format!(
            "@cert-authority *.shop.example ssh-ed25519 {K2}\n[erp]:2222 ssh-ed25519 {K1}\n"
        ));
        assert_eq!(
            f.usable_for("erp.shop.example"),
            Err(KnownHostsError::CertAuthority {
                line: 1,
                name: "erp.shop.example".into()
            })
        );
        assert_eq!(f.usable_for("[erp]:2222"), Ok(()));
        // A CA key is not a host key.
        assert_eq!(f.check("erp.shop.example", &blob(K2)), Verdict::Unknown);
    }

    #[test]
    fn unreadable_lines_are_errors_naming_the_line() {
        for (text, what) in [
            ("# c\n\nerp ssh-ed25519\n", "expected host names"),
            ("erp ssh-ed25519 not-base64!\n", "not base64"),
            ("@trusted erp ssh-ed25519 AAAA\n", "unknown marker"),
        ] {
            match KnownHosts::parse(text) {
                Err(KnownHostsError::Malformed { line, what: w }) => {
                    assert!(w.contains(what), "{w}");
                    assert_eq!(line, text.lines().count());
                }
                Ok(_) => panic!("{text:?} parsed"),
                Err(e) => panic!("{e}"),
            }
        }
    }
}
