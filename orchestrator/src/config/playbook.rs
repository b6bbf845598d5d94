//! Playbooks: named lists of steps run when a site changes hands (a site's `promote`,
//! `demote` and `rejoin` lists name them). Each is found as
//! `<config dir>/playbooks/NAME.toml`, else among the ones shipped in `playbooks/`
//! (compiled into the binary). This module defines the format and checks it, reporting
//! every problem at once as `FILE:LINE:COL`; the runner is `crate::playbook`.
//!
//! A step is one of `run` (argv, no shell), `shell` (`/bin/sh -c`, only when asked),
//! `sql` (on a site database), `http` (expect a status) or `wait` (poll a check), with
//! `on = "local" | "peer"`, a `timeout` (a default per kind) and `on_failure = "stop" |
//! "continue"`. Text may hold variables, `{site}`, `{peer.tunnel_ip}`, `{db.port}`…
//! ([`VARIABLES`]); `{{` and `}}` stand for braces.

use super::{parse_duration, Database, DbKind, Diagnostic, KeyPath, Locator};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        "postgres-rejoin",
        include_str!("../../../playbooks/postgres-rejoin.toml"),
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
        "mariadb-rejoin",
        include_str!("../../../playbooks/mariadb-rejoin.toml"),
    ),
    (
        "web-start",
        include_str!("../../../playbooks/web-start.toml"),
    ),
    ("web-stop", include_str!("../../../playbooks/web-stop.toml")),
];

/// The variables a step may use. `db.*` is the step's database (its `engine` or
/// `database`); `db.NAME.*` names one.
pub const VARIABLES: &[&str] = &[
    "site",
    "node",
    "peer",
    "epoch",
    "self.tunnel_ip",
    "peer.tunnel_ip",
    "self.public_ip",
    "peer.public_ip",
    "orch",
    "config",
    "state_dir",
];
/// The fields of a database variable: `{db.host}`, `{db.NAME.port}`…
pub const DB_FIELDS: &[&str] = &["host", "port", "name", "user", "data_dir"];

#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub name: String,
    pub description: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum On {
    #[default]
    Local,
    Peer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// The playbook stops (the default).
    #[default]
    Stop,
    /// The failure is recorded and the next step runs (e.g. stopping the old master's
    /// web server when the old master is unreachable).
    Continue,
}

/// What a step does; its text still holds variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(Vec<String>),
    Shell(String),
    Sql(String),
    Http { url: String, expect: u16 },
    Wait(WaitFor),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// `tcp:HOST:PORT` answers a connection.
    Tcp(String),
    /// `http:URL` answers 2xx.
    Http(String),
    /// `sql:QUERY` returns true (or 1, `t`, `yes`) on the step's database.
    Sql(String),
    /// The step's database, a replica, has applied everything it received.
    ReplicaCaughtUp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    pub action: Action,
    pub on: On,
    pub timeout: Duration,
    pub on_failure: OnFailure,
    /// The site database the step is about (`sql`, `wait = "sql:…"`, `db.*` variables).
    pub engine: Option<DbKind>,
    pub database: Option<String>,
}

impl Step {
    pub fn kind(&self) -> &'static str {
        match self.action {
            Action::Run(_) => "run",
            Action::Shell(_) => "shell",
            Action::Sql(_) => "sql",
            Action::Http { .. } => "http",
            Action::Wait(_) => "wait",
        }
    }

    /// Every text of the step that may hold variables.
    pub fn texts(&self) -> Vec<&str> {
        match &self.action {
            Action::Run(argv) => argv.iter().map(String::as_str).collect(),
            Action::Shell(s) | Action::Sql(s) => vec![s],
            Action::Http { url, .. } => vec![url],
            Action::Wait(WaitFor::Tcp(s) | WaitFor::Http(s) | WaitFor::Sql(s)) => vec![s],
            Action::Wait(WaitFor::ReplicaCaughtUp) => vec![],
        }
    }

    /// Whether the step needs one of the site's databases.
    pub fn needs_database(&self) -> bool {
        matches!(
            self.action,
            Action::Sql(_) | Action::Wait(WaitFor::Sql(_) | WaitFor::ReplicaCaughtUp)
        ) || self
            .texts()
            .iter()
            .any(|t| placeholders(t).is_ok_and(|v| v.iter().any(|n| n.starts_with("db."))))
    }
}

/// The default timeout of a step of `kind`.
pub fn default_timeout(kind: &str) -> Duration {
    match kind {
        "http" => Duration::from_secs(30),
        "wait" => Duration::from_secs(120),
        _ => Duration::from_secs(60),
    }
}

/// The variable names in `text` (`{name}`), in order; `{{`/`}}` are literal braces.
pub fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        let c = rest.as_bytes()[i];
        if rest[i + 1..].starts_with(c as char) {
            rest = &rest[i + 2..];
            continue;
        }
        if c == b'}' {
            return Err(format!(
                "a lone `}}` in `{text}` (write `}}}}` for a brace)"
            ));
        }
        let Some(end) = rest[i + 1..].find('}') else {
            return Err(format!(
                "`{{` without `}}` in `{text}` (write `{{{{` for a brace)"
            ));
        };
        out.push(&rest[i + 1..i + 1 + end]);
        rest = &rest[i + 2 + end..];
    }
    Ok(out)
}

/// Why `name` is not a variable a step may use, if it is not.
pub fn unknown_variable(name: &str) -> Option<String> {
    if VARIABLES.contains(&name) {
        return None;
    }
    if let Some(field) = name.strip_prefix("db.") {
        let field = field.rsplit('.').next().unwrap_or(field);
        if DB_FIELDS.contains(&field) && name.split('.').count() <= 3 {
            return None;
        }
        return Some(format!(
            "unknown variable `{{{name}}}`: a database's fields are {}",
            DB_FIELDS.join(", ")
        ));
    }
    Some(format!(
        "unknown variable `{{{name}}}`: known are {}, and db.FIELD / db.NAME.FIELD",
        VARIABLES.join(", ")
    ))
}

/// Where a playbook was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Shipped,
}

/// A playbook found and parsed, with its text for positions.
#[derive(Debug, Clone)]
pub struct Found {
    pub origin: Origin,
    /// The file as diagnostics name it (`<shipped>/NAME.toml` for a shipped one).
    pub file: PathBuf,
    pub text: String,
    pub book: Playbook,
}

/// A playbook that could not be found or parsed, and every problem in it.
#[derive(Debug, Clone)]
pub struct NotFound {
    pub name: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl NotFound {
    /// One line for the config's own list of problems.
    pub fn summary(&self) -> String {
        match self.diagnostics.as_slice() {
            [one] if one.position.is_none() => one.message.clone(),
            all => format!(
                "playbook `{}` has {} problem(s), listed with its file",
                self.name,
                all.len()
            ),
        }
    }
}

impl Found {
    /// Problems of this playbook for `site`: a step about a database the site does not
    /// have (by engine or name), or a database variable with no database to fill it.
    pub fn check_for_site(&self, site: &str, databases: &[Database]) -> Vec<Diagnostic> {
        let locator = Locator::new(&self.text);
        let mut out = Vec::new();
        for (i, step) in self.book.steps.iter().enumerate() {
            let at = KeyPath::root().key("step").index(i);
            let mut push = |key: &str, message: String| {
                out.push(Diagnostic {
                    file: self.file.clone(),
                    position: locator.locate(&at.key(key)),
                    message: format!("step `{}`: {message}", step.name),
                })
            };
            if let Err(e) = step_database(step, databases) {
                if step.needs_database() {
                    let key = if step.database.is_some() {
                        "database"
                    } else {
                        "engine"
                    };
                    push(key, format!("{e} (site {site})"));
                }
            }
            for text in step.texts() {
                for name in placeholders(text).unwrap_or_default() {
                    let mut parts = name.split('.');
                    if let (Some("db"), Some(db), Some(_)) =
                        (parts.next(), parts.next(), parts.next())
                    {
                        if !databases.iter().any(|d| d.name == db) {
                            push(
                                step.kind(),
                                format!("`{{{name}}}`: site {site} has no database `{db}`"),
                            );
                        }
                    }
                }
            }
        }
        out
    }
}

/// The site database `step` is about: the one it names, else the site's only one of its
/// engine.
pub fn step_database<'d>(step: &Step, databases: &'d [Database]) -> Result<&'d Database, String> {
    if let Some(name) = &step.database {
        return databases
            .iter()
            .find(|d| &d.name == name)
            .ok_or_else(|| format!("the site has no database `{name}`"));
    }
    let Some(engine) = step.engine else {
        return Err("it names no database: add `engine` or `database`".into());
    };
    let of: Vec<&Database> = databases.iter().filter(|d| d.kind == engine).collect();
    match of.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("the site has no {} database", engine_name(engine))),
        _ => Err(format!(
            "the site has {} {} databases: name one with `database`",
            of.len(),
            engine_name(engine)
        )),
    }
}

fn engine_name(e: DbKind) -> &'static str {
    match e {
        DbKind::Postgres => "postgres",
        DbKind::Mysql => "mysql",
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Finds and checks the playbook `name`: a local file wins over a shipped one.
pub fn find(config_dir: &Path, name: &str) -> Result<Found, NotFound> {
    let alone = |file: PathBuf, message: String| NotFound {
        name: name.to_owned(),
        diagnostics: vec![Diagnostic {
            file,
            position: None,
            message,
        }],
    };
    if !valid_name(name) {
        return Err(alone(
            config_dir.join("playbooks"),
            format!("`{name}` is not a playbook name (letters, digits, '-', '_')"),
        ));
    }
    let file = config_dir.join("playbooks").join(format!("{name}.toml"));
    let (origin, label, text) = match std::fs::read_to_string(&file) {
        Ok(text) => (Origin::File(file.clone()), file, text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match SHIPPED.iter().find(|(n, _)| *n == name) {
                Some((_, text)) => (
                    Origin::Shipped,
                    PathBuf::from(format!("<shipped>/{name}.toml")),
                    (*text).to_owned(),
                ),
                None => {
                    let shipped: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
                    return Err(alone(
                        file.clone(),
                        format!(
                            "no playbook `{name}`: neither {} nor a shipped one ({})",
                            file.display(),
                            shipped.join(", ")
                        ),
                    ));
                }
            }
        }
        Err(e) => return Err(alone(file.clone(), format!("cannot read it: {e}"))),
    };
    match parse(name, &label, &text) {
        Ok(book) => Ok(Found {
            origin,
            file: label,
            text,
            book,
        }),
        Err(diagnostics) => Err(NotFound {
            name: name.to_owned(),
            diagnostics,
        }),
    }
}

/// Parses and checks one playbook's text: every problem, each at its position in `file`.
pub fn parse(name: &str, file: &Path, text: &str) -> Result<Playbook, Vec<Diagnostic>> {
    let locator = Locator::new(text);
    let mut problems: Vec<(KeyPath, String)> = Vec::new();
    let doc: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Diagnostic {
                file: file.to_owned(),
                position: e.span().map(|s| locator.position(s.start)),
                message: e.message().trim_end().to_owned(),
            }])
        }
    };
    let root = KeyPath::root();
    let mut description = None;
    let mut steps = Vec::new();
    for (key, value) in &doc {
        match (key.as_str(), value) {
            ("description", toml::Value::String(s)) => description = Some(s.clone()),
            ("description", _) => problems.push((root.key(key), "must be a string".into())),
            ("step", toml::Value::Array(list)) => {
                for (i, item) in list.iter().enumerate() {
                    let at = root.key("step").index(i);
                    match item {
                        toml::Value::Table(t) => {
                            if let Some(step) = parse_step(&at, t, &mut problems) {
                                steps.push(step);
                            }
                        }
                        _ => problems.push((at, "a step is a [[step]] table".into())),
                    }
                }
            }
            ("step", _) => problems.push((root.key(key), "write steps as [[step]] tables".into())),
            (other, _) => problems.push((
                root.key(other),
                format!("unknown key `{other}` (a playbook has description and [[step]])"),
            )),
        }
    }
    if !doc.contains_key("step") {
        problems.push((root.clone(), "has no [[step]]".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in steps.iter().enumerate() {
        if !seen.insert(s.name.as_str()) {
            problems.push((
                root.key("step").index(i).key("name"),
                format!("another step is named `{}`", s.name),
            ));
        }
    }
    if problems.is_empty() {
        return Ok(Playbook {
            name: name.to_owned(),
            description,
            steps,
        });
    }
    Err(problems
        .into_iter()
        .map(|(path, message)| Diagnostic {
            file: file.to_owned(),
            position: locator.locate(&path),
            message: if path == KeyPath::root() {
                message
            } else {
                format!("{path}: {message}")
            },
        })
        .collect())
}

const STEP_KEYS: &[&str] = &[
    "name",
    "run",
    "shell",
    "sql",
    "http",
    "wait",
    "engine",
    "database",
    "expect",
    "on",
    "timeout",
    "on_failure",
];
const KINDS: &[&str] = &["run", "shell", "sql", "http", "wait"];

fn parse_step(
    at: &KeyPath,
    t: &toml::Table,
    problems: &mut Vec<(KeyPath, String)>,
) -> Option<Step> {
    let before = problems.len();
    let mut err = |key: &str, message: String| problems.push((at.key(key), message));
    for key in t.keys() {
        if !STEP_KEYS.contains(&key.as_str()) {
            err(
                key,
                format!("unknown key `{key}` (a step has {})", STEP_KEYS.join(", ")),
            );
        }
    }
    let string = |key: &str, err: &mut dyn FnMut(&str, String)| -> Option<String> {
        match t.get(key)? {
            toml::Value::String(s) => Some(s.clone()),
            _ => {
                err(key, "must be a string".into());
                None
            }
        }
    };
    let name = match string("name", &mut err) {
        Some(n) if !n.trim().is_empty() && n.len() <= 100 && !n.contains(['\n', '\0']) => n,
        Some(_) => {
            err("name", "give the step a short one-line name".into());
            String::new()
        }
        None => {
            err("name", "every step needs a name".into());
            String::new()
        }
    };
    let kinds: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| t.contains_key(*k))
        .collect();
    let action = match kinds.as_slice() {
        ["run"] => match t.get("run") {
            Some(toml::Value::Array(a)) if !a.is_empty() => {
                let argv: Vec<String> = a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                if argv.len() != a.len() {
                    err("run", "every argument must be a string".into());
                }
                Some(Action::Run(argv))
            }
            _ => {
                err("run", "run is a list: the program and its arguments".into());
                None
            }
        },
        ["shell"] => string("shell", &mut err).map(Action::Shell),
        ["sql"] => string("sql", &mut err).map(Action::Sql),
        ["http"] => {
            let expect = match t.get("expect") {
                None => Some(200),
                Some(toml::Value::Integer(n)) if (100..=599).contains(n) => Some(*n as u16),
                Some(_) => {
                    err("expect", "an HTTP status, 100 to 599".into());
                    None
                }
            };
            let url = string("http", &mut err);
            if let Some(u) = &url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    err("http", format!("`{u}` is not an http:// or https:// URL"));
                }
            }
            match (url, expect) {
                (Some(url), Some(expect)) => Some(Action::Http { url, expect }),
                _ => None,
            }
        }
        ["wait"] => match string("wait", &mut err) {
            Some(w) => match wait_for(&w) {
                Ok(w) => Some(Action::Wait(w)),
                Err(e) => {
                    err("wait", e);
                    None
                }
            },
            None => None,
        },
        [] => {
            err(
                "name",
                "a step needs one of run, shell, sql, http, wait (it has none)".into(),
            );
            None
        }
        many => {
            err(
                many[1],
                format!(
                    "a step has exactly one of run, shell, sql, http, wait (this one has {})",
                    many.join(", ")
                ),
            );
            None
        }
    };
    if t.contains_key("expect") && !kinds.contains(&"http") {
        err("expect", "expect belongs to an http step".into());
    }
    let on = match string("on", &mut err).as_deref() {
        None | Some("local") => On::Local,
        Some("peer") => On::Peer,
        Some(other) => {
            err("on", format!("`{other}`: on is \"local\" or \"peer\""));
            On::Local
        }
    };
    let on_failure = match string("on_failure", &mut err).as_deref() {
        None | Some("stop") => OnFailure::Stop,
        Some("continue") => OnFailure::Continue,
        Some(other) => {
            err(
                "on_failure",
                format!("`{other}`: on_failure is \"stop\" or \"continue\""),
            );
            OnFailure::Stop
        }
    };
    let engine = match string("engine", &mut err).as_deref() {
        None => None,
        Some("postgres") => Some(DbKind::Postgres),
        Some("mysql") => Some(DbKind::Mysql),
        Some(other) => {
            err(
                "engine",
                format!("`{other}`: engine is \"postgres\" or \"mysql\""),
            );
            None
        }
    };
    let database = string("database", &mut err);
    let kind = kinds.first().copied().unwrap_or("run");
    let timeout = match string("timeout", &mut err) {
        None => default_timeout(kind),
        Some(text) => match parse_duration(&text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                err(
                    "timeout",
                    format!("`{text}` is zero; give a positive duration"),
                );
                Duration::ZERO
            }
            Err(e) => {
                err("timeout", e);
                Duration::ZERO
            }
        },
    };
    if let Some(action) = &action {
        let probe = Step {
            name: name.clone(),
            action: action.clone(),
            on,
            timeout,
            on_failure,
            engine,
            database: database.clone(),
        };
        for text in probe.texts() {
            match placeholders(text) {
                Err(e) => err(kind, e),
                Ok(names) => {
                    for n in names {
                        if let Some(e) = unknown_variable(n) {
                            err(kind, e);
                        } else if (n.starts_with("db.") && n.split('.').count() == 2)
                            && engine.is_none()
                            && database.is_none()
                        {
                            err(
                                kind,
                                format!("`{{{n}}}` needs the step's database: add `engine` or `database`"),
                            );
                        }
                    }
                }
            }
        }
        if matches!(
            action,
            Action::Sql(_) | Action::Wait(WaitFor::Sql(_) | WaitFor::ReplicaCaughtUp)
        ) && engine.is_none()
            && database.is_none()
        {
            err(
                kind,
                "a database step needs `engine` (\"postgres\" or \"mysql\") or `database`".into(),
            );
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(Step {
        name,
        action: action?,
        on,
        timeout,
        on_failure,
        engine,
        database,
    })
}

fn wait_for(text: &str) -> Result<WaitFor, String> {
    if text == "replica-caught-up" {
        return Ok(WaitFor::ReplicaCaughtUp);
    }
    if let Some(rest) = text.strip_prefix("tcp:") {
        if rest
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty())
        {
            return Ok(WaitFor::Tcp(rest.to_owned()));
        }
        return Err(format!("`{text}`: write tcp:HOST:PORT"));
    }
    if let Some(rest) = text.strip_prefix("http:") {
        if rest.starts_with("//") {
            return Ok(WaitFor::Http(format!("http:{rest}")));
        }
        return Ok(WaitFor::Http(rest.to_owned()));
    }
    if let Some(rest) = text.strip_prefix("https:") {
        return Ok(WaitFor::Http(format!("https:{rest}")));
    }
    if let Some(rest) = text.strip_prefix("sql:") {
        if !rest.trim().is_empty() {
            return Ok(WaitFor::Sql(rest.to_owned()));
        }
    }
    Err(format!(
        "`{text}`: wait for tcp:HOST:PORT, http:URL, sql:QUERY or replica-caught-up"
    ))
}

#[cfg(test)]
mod tests;
