//! Playbooks: named lists of steps run on promote and demote. A site names them; each is
//! found as `<config dir>/playbooks/NAME.toml`, else among the ones shipped in
//! `playbooks/` (compiled into the binary). This module defines and checks the format;
//! the runner builds on it.

use super::parse_duration;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The playbooks shipped with orch.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "postgres-promote",
        include_str!("../../../playbooks/postgres-promote.toml"),
    ),
    (
        "postgres-demote",
        include_str!("../../../playbooks/postgres-demote.toml"),
    ),
    (
        "mariadb-promote",
        include_str!("../../../playbooks/mariadb-promote.toml"),
    ),
    (
        "mariadb-demote",
        include_str!("../../../playbooks/mariadb-demote.toml"),
    ),
    (
        "web-start",
        include_str!("../../../playbooks/web-start.toml"),
    ),
    ("web-stop", include_str!("../../../playbooks/web-stop.toml")),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub description: Option<String>,
    #[serde(rename = "step", default)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum On {
    #[default]
    Local,
    Peer,
}

/// One step; exactly one of `run`, `shell`, `sql`, `http`, `wait` says what it does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    /// A program and its arguments, run without a shell.
    pub run: Option<Vec<String>>,
    /// A command line for `/bin/sh -c`, only when a shell is really wanted.
    pub shell: Option<String>,
    /// SQL run on the site's databases of `engine` (or the one named by `database`).
    pub sql: Option<String>,
    pub engine: Option<super::DbKind>,
    pub database: Option<String>,
    /// A URL that must answer with `expect` (default 200).
    pub http: Option<String>,
    pub expect: Option<u16>,
    /// A check polled until it passes: "tcp:HOST:PORT", "http:URL", "sql:QUERY",
    /// "replica-caught-up".
    pub wait: Option<String>,
    #[serde(default)]
    pub on: On,
    pub timeout: Option<String>,
}

/// Where a playbook was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Shipped,
}

/// Finds and checks the playbook `name`: a local file wins over a shipped one.
pub fn find(config_dir: &Path, name: &str) -> Result<(Origin, Playbook), String> {
    let safe = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !safe {
        return Err(format!(
            "`{name}` is not a playbook name (letters, digits, '-', '_')"
        ));
    }
    let file = config_dir.join("playbooks").join(format!("{name}.toml"));
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let book = parse(&text).map_err(|e| format!("playbook {}: {e}", file.display()))?;
            Ok((Origin::File(file), book))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match SHIPPED.iter().find(|(n, _)| *n == name) {
                Some((_, text)) => {
                    let book = parse(text).map_err(|e| format!("shipped playbook {name}: {e}"))?;
                    Ok((Origin::Shipped, book))
                }
                None => {
                    let shipped: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
                    Err(format!(
                        "no playbook `{name}`: neither {} nor a shipped one ({})",
                        file.display(),
                        shipped.join(", ")
                    ))
                }
            }
        }
        Err(e) => Err(format!("playbook {}: {e}", file.display())),
    }
}

/// Parses and checks one playbook's text.
pub fn parse(text: &str) -> Result<Playbook, String> {
    let book: Playbook = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| {
            let p = super::Locator::new(text).position(s.start);
            format!("{}:{}: ", p.line, p.column)
        });
        format!("{}{}", at.unwrap_or_default(), e.message().trim_end())
    })?;
    if book.steps.is_empty() {
        return Err("has no [[step]]".into());
    }
    for step in &book.steps {
        let actions = [
            step.run.is_some(),
            step.shell.is_some(),
            step.sql.is_some(),
            step.http.is_some(),
            step.wait.is_some(),
        ];
        let n = actions.iter().filter(|a| **a).count();
        if n != 1 {
            return Err(format!(
                "step `{}` must have exactly one of run, shell, sql, http, wait (has {n})",
                step.name
            ));
        }
        if step.run.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!(
                "step `{}`: run needs at least the program",
                step.name
            ));
        }
        if let Some(t) = &step.timeout {
            parse_duration(t).map_err(|e| format!("step `{}`: timeout {e}", step.name))?;
        }
    }
    Ok(book)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_playbook_parses() {
        for (name, text) in SHIPPED {
            parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn local_files_win_and_bad_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("playbooks")).unwrap();
        std::fs::write(
            dir.path().join("playbooks/web-start.toml"),
            "[[step]]\nname = \"x\"\nrun = [\"true\"]\n",
        )
        .unwrap();
        let (origin, _) = find(dir.path(), "web-start").unwrap();
        assert!(matches!(origin, Origin::File(_)));
        assert_eq!(find(dir.path(), "web-stop").unwrap().0, Origin::Shipped);

        std::fs::write(
            dir.path().join("playbooks/bad.toml"),
            "[[step]]\nname = \"x\"\n",
        )
        .unwrap();
        let e = find(dir.path(), "bad").unwrap_err();
        assert!(e.contains("exactly one of"), "{e}");
        let e = find(dir.path(), "../etc/passwd").unwrap_err();
        assert!(e.contains("not a playbook name"), "{e}");
        let e = find(dir.path(), "nope").unwrap_err();
        assert!(e.contains("no playbook `nope`"), "{e}");
    }
}
