//! Filling a step's variables: each `{name}` replaced by its value, inside one argv
//! element (never re-split), shell-quoted in `shell` steps, SQL-quoted nowhere (SQL
//! steps take no user input but the config's own values).

use crate::config::playbook::placeholders;
use std::collections::BTreeMap;

/// The values of a run's variables; a missing one is an error when used.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, String>,
    /// Variables known but without a value here, and why.
    missing: BTreeMap<String, String>,
}

impl Vars {
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.missing.remove(name);
        self.values.insert(name.to_owned(), value.into());
    }

    /// `name` has no value in this run, for `why`.
    pub fn unknown(&mut self, name: &str, why: impl Into<String>) {
        self.values.remove(name);
        self.missing.insert(name.to_owned(), why.into());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `text` with every variable filled in; `quote` applied to each value.
    pub fn fill_with(&self, text: &str, quote: impl Fn(&str) -> String) -> Result<String, String> {
        placeholders(text)?;
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let c = rest.as_bytes()[i] as char;
            if rest[i + 1..].starts_with(c) {
                out.push(c);
                rest = &rest[i + 2..];
                continue;
            }
            let end = rest[i + 1..]
                .find('}')
                .map(|e| i + 1 + e)
                .unwrap_or(rest.len());
            let name = &rest[i + 1..end];
            match self.values.get(name) {
                Some(v) => out.push_str(&quote(v)),
                None => {
                    return Err(match self.missing.get(name) {
                        Some(why) => format!("`{{{name}}}` has no value here: {why}"),
                        None => format!("unknown variable `{{{name}}}`"),
                    })
                }
            }
            rest = &rest[(end + 1).min(rest.len())..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `text` with its variables filled in as they are.
    pub fn fill(&self, text: &str) -> Result<String, String> {
        self.fill_with(text, str::to_owned)
    }
}

/// `value` as one word for `/bin/sh`: single-quoted, with `'` written as `'\''`.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c))
    {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.set("site", "alice-web");
        v.set("peer.tunnel_ip", "198.51.100.2");
        v.set("evil", "x'; rm -rf / #");
        v.unknown("peer.public_ip", "the peer has not said it yet");
        v
    }

    #[test]
    fn values_fill_whole_and_braces_escape() {
        let v = vars();
        assert_eq!(
            v.fill("psql -h {peer.tunnel_ip} {{literal}}").unwrap(),
            "psql -h 198.51.100.2 {literal}"
        );
        // A value with spaces stays one argument: the caller fills each argv element.
        assert_eq!(v.fill("{evil}").unwrap(), "x'; rm -rf / #");
        let e = v.fill("{peer.public_ip}").unwrap_err();
        assert!(e.contains("has not said it yet"), "{e}");
        assert!(v.fill("{nope}").unwrap_err().contains("unknown variable"));
        assert!(v.fill("{unclosed").is_err());
    }

    #[test]
    fn shell_steps_get_quoted_values() {
        let v = vars();
        let line = v.fill_with("echo {evil} {site}", shell_quote).unwrap();
        assert_eq!(line, r"echo 'x'\''; rm -rf / #' alice-web");
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "x'; rm -rf / # alice-web\n"
        );
        assert_eq!(shell_quote(""), "''");
    }
}
