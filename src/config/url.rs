//! The destination URL: `sftp://user@host[:port]/path` or `file:///path`.

use std::path::PathBuf;

/// Where the files go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Sftp {
        user: String,
        host: String,
        port: u16,
        /// Remote inbox directory, as the server spells it (`/C:/ERP/inbox` on Windows).
        path: String,
    },
    File {
        path: PathBuf,
    },
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Sftp {
                user,
                host,
                port,
                path,
            } => write!(f, "sftp://{user}@{host}:{port}{path}"),
            Destination::File { path } => write!(f, "file://{}", path.display()),
        }
    }
}

/// `sftp://user@host[:port]/path` or `file:///path`. Percent-escapes in the path are
/// decoded, so `%20` may stand for a space.
pub(crate) fn parse_url(url: &str) -> Result<Destination, String> {
    let decode = |p: &str| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| format!("{url:?}: the path is not valid UTF-8 after decoding"))
    };
    if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(format!(
                "{url:?}: a file URL needs an absolute path, like file:///srv/erp/inbox"
            ));
        }
        return Ok(Destination::File {
            path: PathBuf::from(decode(rest)?),
        });
    }
    let Some(rest) = url.strip_prefix("sftp://") else {
        return Err(format!(
            "{url:?}: expected sftp://user@host:port/path or file:///path"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.is_empty() || path == "/" {
        return Err(format!(
            "{url:?}: name the inbox folder after the host, like sftp://erp@host/C:/ERP/inbox"
        ));
    }
    let Some((user, hostport)) = authority.rsplit_once('@') else {
        return Err(format!(
            "{url:?}: the user is missing; write sftp://USER@host/path"
        ));
    };
    if user.is_empty() || user.contains(':') {
        return Err(format!(
            "{url:?}: give only a user name before '@' (keys only: no password in the URL)"
        ));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '[' in the host"))?;
        (h, tail.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: the host is missing"));
    }
    let port = match port {
        None => 22,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{url:?}: {p:?} is not a port number"))?,
    };
    Ok(Destination::Sftp {
        user: user.to_string(),
        host: host.to_string(),
        port,
        path: decode(path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_ipv6_ports_and_escapes() {
        assert_eq!(
            parse_url("sftp://a@[::1]:2222/in%20box").unwrap(),
            Destination::Sftp {
                user: "a".into(),
                host: "::1".into(),
                port: 2222,
                path: "/in box".into()
            }
        );
        assert_eq!(
            parse_url("file:///srv/erp/inbox").unwrap(),
            Destination::File {
                path: "/srv/erp/inbox".into()
            }
        );
        assert!(parse_url("sftp://a:pw@h/in").is_err());
        assert!(parse_url("sftp://a@h").is_err());
        assert!(parse_url("file://relative").is_err());
    }
}
