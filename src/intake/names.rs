//! Which names intake takes: the pattern, no hidden or temp names, and (by default)
//! only names a Windows inbox stores as they are. `shown` makes any name safe to print.

use crate::config::Settings;
use std::ffi::OsStr;

/// Names we never take: not matching the pattern, hidden, or temp names of editors and
/// uploaders. Returns the name as UTF-8 if it may be taken.
pub(crate) fn name_rule<'a>(name: &'a OsStr, s: &Settings) -> Result<&'a str, &'static str> {
    let Some(name) = name.to_str() else {
        return Err("name is not UTF-8");
    };
    if name.starts_with('.') {
        return Err("hidden name");
    }
    if name.ends_with(".part")
        || name.ends_with(".tmp")
        || name.ends_with('~')
        || name.ends_with(&s.destination.temp_suffix)
    {
        return Err("temporary name");
    }
    if !s.source.matcher.is_match(name) {
        return Err("name does not match the pattern");
    }
    Ok(name)
}

/// The portable name rule (`[source] names = "portable"`, the default): names a
/// Windows inbox takes as they are. Win32-OpenSSH reads `\\` as a path separator (a
/// name could climb out of the inbox) and `:` as an NTFS stream; `CON`, `NUL`, `COM1`…
/// are devices; a trailing dot or space is dropped; control characters forge log
/// lines. So: a letter or digit, then letters, digits, `.`, `_`, `-`, at most 151 in
/// all, no device name as the part before the first dot, no trailing dot.
pub(crate) fn portable_name(name: &str) -> Result<(), String> {
    let bad = |why: String| {
        Err(format!(
            "name {} {why}; never sent (names = \"portable\")",
            shown(name)
        ))
    };
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return bad("does not start with a letter or digit".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!(
            "holds {c:?}, which a Windows inbox does not take as it is"
        ));
    }
    if name.len() > 151 {
        return bad(format!("is {} characters long (at most 151)", name.len()));
    }
    if name.ends_with('.') {
        return bad("ends with a dot, which Windows drops".into());
    }
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && matches!(stem.as_bytes()[3], b'1'..=b'9'));
    if device {
        return bad(format!("is the Windows device {stem}"));
    }
    Ok(())
}

/// A name as it may be printed in a log line or on an operator's terminal: as it is
/// when it is plain printable text, else quoted with escapes (`"a\nb"`), so no name can
/// forge a line or send terminal escapes.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if name
        .chars()
        .all(|c| !c.is_control() && c != '"' && c != '\\')
    {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(format!("{name:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_windows_inbox_would_misread_are_not_portable() {
        for bad in [
            "x\\..\\..\\evil.json",
            "a:b.json",
            "CON.json",
            "con.json",
            "lpt9.backup.json",
            "order.json.",
            "order .json",
            "order\nINFO forged.json",
            "-order.json",
            "ordér.json",
        ] {
            assert!(portable_name(bad).is_err(), "{bad:?} passed");
        }
        for good in [
            "order-2026-000001.json",
            "CONSOLE.json",
            "com10.json",
            "a_b.c-d.json",
        ] {
            assert_eq!(portable_name(good), Ok(()), "{good}");
        }
        let why = portable_name("order\nINFO forged.json").unwrap_err();
        assert!(!why.contains('\n'), "{why}");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown("order-1.json"), "order-1.json");
    }

    #[test]
    fn name_rules_take_only_matching_visible_final_names() {
        let s = crate::config::demo(std::path::Path::new("/tmp/x"));
        for ok in ["order-2026-000001.json", "-x.json", "a b \"q\" ü.json"] {
            assert_eq!(name_rule(OsStr::new(ok), &s), Ok(ok));
        }
        for bad in [
            ".order.json",
            "order.json.part",
            "order.json.tmp",
            "order.json~",
            "order.xml",
            "order.tmp",
        ] {
            assert!(name_rule(OsStr::new(bad), &s).is_err(), "{bad}");
        }
    }
}
