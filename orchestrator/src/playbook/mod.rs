//! The playbook runner: a playbook's steps in order, each bounded by its timeout, with
//! its variables filled in; `on = "peer"` steps go over SSH to the peer's tunnel address,
//! where the peer's forced command (`orch ssh serve`, [`ssh`]) runs the peer's **own**
//! copy of that step of a playbook its own config names. Every step leaves a record in
//! the history (status, duration, the tail of its output); the first failing step stops
//! the playbook unless it says `on_failure = "continue"`.
//!
//! [`run`] is what `orch playbook run` and the failover code call; [`plan`] is the
//! `--dry-run`: every step with its variables filled in, nothing run.

pub mod exec;
pub mod ssh;
pub mod vars;

use crate::config::playbook::{self, Found, On, OnFailure, Step};
use crate::config::{Loaded, Site};
use agent::state::{EventKind, NewEvent, Outcome as EventOutcome, Store};
use serde::Serialize;
use std::net::IpAddr;
use std::path::Path;
use tokio::time::Instant;
use vars::Vars;

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("no site `{0}` in the config")]
    UnknownSite(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<crate::config::Diagnostic>),
}

/// Who runs a playbook, for which site, and what is known of the pair.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub loaded: &'a Loaded,
    pub site: &'a Site,
    /// The site's epoch here, or why it is not known.
    pub epoch: Result<i64, String>,
    pub self_public_ip: Result<IpAddr, String>,
    pub peer_public_ip: Result<IpAddr, String>,
}

/// One step as it ran (or would run).
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub kind: &'static str,
    pub on: String,
    /// What it does, variables filled in (no secrets: those stay in files).
    pub does: String,
    pub ok: bool,
    pub status: String,
    pub duration_ms: u64,
    pub output: String,
    /// A failure that `on_failure = "continue"` let pass.
    pub continued: bool,
}

/// A playbook's run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub playbook: String,
    pub site: String,
    pub node: String,
    pub ok: bool,
    pub steps: Vec<StepRecord>,
}

impl Report {
    /// The failure, for an alert: which step, how it ended, and its output.
    pub fn failure(&self) -> Option<String> {
        let s = self.steps.iter().find(|s| !s.ok && !s.continued)?;
        Some(format!(
            "playbook {} of site {} stopped at step `{}` on {} ({}): {}\n{}",
            self.playbook,
            self.site,
            s.name,
            s.on,
            s.kind,
            s.status,
            s.output.trim_end()
        ))
    }
}

/// The variables of a run on this node (`db.*` are added per step).
pub fn variables(ctx: &Context) -> Vars {
    let (me, peer) = (ctx.loaded.me(), ctx.loaded.peer());
    let mut v = Vars::default();
    v.set("site", &ctx.site.name);
    v.set("node", &me.name);
    v.set("peer", &peer.name);
    match &ctx.epoch {
        Ok(e) => v.set("epoch", e.to_string()),
        Err(why) => v.unknown("epoch", why.clone()),
    }
    v.set("self.tunnel_ip", me.tunnel_ip.to_string());
    v.set("peer.tunnel_ip", peer.tunnel_ip.to_string());
    match &ctx.self_public_ip {
        Ok(ip) => v.set("self.public_ip", ip.to_string()),
        Err(why) => v.unknown("self.public_ip", why.clone()),
    }
    match &ctx.peer_public_ip {
        Ok(ip) => v.set("peer.public_ip", ip.to_string()),
        Err(why) => v.unknown("peer.public_ip", why.clone()),
    }
    match std::env::current_exe() {
        Ok(p) => v.set("orch", p.display().to_string()),
        Err(e) => v.unknown("orch", e.to_string()),
    }
    // `{config}`: steps that call `orch` again read the same file.
    let path = &ctx.loaded.config.path;
    let config = std::path::absolute(path).unwrap_or_else(|_| path.clone());
    v.set("config", config.display().to_string());
    v.set("state_dir", me.state_dir.display().to_string());
    for db in &ctx.site.databases {
        for (field, value) in db_fields(ctx.loaded, db) {
            match value {
                Ok(val) => v.set(&format!("db.{}.{field}", db.name), val),
                Err(why) => v.unknown(&format!("db.{}.{field}", db.name), why),
            }
        }
    }
    v
}

/// `host`, `port`, `name`, `user`, `data_dir` of `db` on this node.
fn db_fields(
    loaded: &Loaded,
    db: &crate::config::Database,
) -> Vec<(&'static str, Result<String, String>)> {
    let url = url::Url::parse(&db.url_for(loaded.me().tunnel_ip));
    let default_port = match db.kind {
        crate::config::DbKind::Postgres => 5432,
        crate::config::DbKind::Mysql => 3306,
    };
    let (host, port, dbname, user) = match &url {
        Ok(u) => (
            Ok(u.host_str()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned()),
            Ok(u.port().unwrap_or(default_port).to_string()),
            Ok(u.path().trim_start_matches('/').to_owned()),
            Ok(u.username().to_owned()),
        ),
        Err(e) => {
            let e = format!("url: {e}");
            (Err(e.clone()), Err(e.clone()), Err(e.clone()), Err(e))
        }
    };
    let data_dir = db
        .data_dirs
        .get(&loaded.me)
        .map(|d| d.display().to_string())
        .ok_or_else(|| format!("database {} has no data_dir for {}", db.name, loaded.me));
    vec![
        ("host", host),
        ("port", port),
        ("name", dbname.map(|_| db.name.clone())),
        ("user", user),
        ("data_dir", data_dir),
    ]
}

/// The run's variables plus `db.*` for `step`'s database.
pub fn step_vars(base: &Vars, ctx: &Context, step: &Step) -> Vars {
    let mut v = base.clone();
    if let Ok(db) = playbook::step_database(step, &ctx.site.databases) {
        for (field, value) in db_fields(ctx.loaded, db) {
            match value {
                Ok(val) => v.set(&format!("db.{field}"), val),
                Err(why) => v.unknown(&format!("db.{field}"), why),
            }
        }
    }
    v
}

/// What `step` does, with `vars` filled in, in one line.
pub fn describe(step: &Step, vars: &Vars) -> String {
    use crate::config::playbook::{Action, WaitFor};
    let fill = |t: &str| vars.fill(t).unwrap_or_else(|e| format!("{t} [{e}]"));
    match &step.action {
        Action::Run(argv) => argv
            .iter()
            .map(|a| vars::shell_quote(&fill(a)))
            .collect::<Vec<_>>()
            .join(" "),
        Action::Shell(line) => format!(
            "sh -c {}",
            vars::shell_quote(
                &vars
                    .fill_with(line, vars::shell_quote)
                    .unwrap_or_else(|e| format!("{line} [{e}]"))
            )
        ),
        Action::Sql(sql) => format!("sql: {}", fill(sql)),
        Action::Http { url, expect } => format!("GET {} expecting {expect}", fill(url)),
        Action::Wait(WaitFor::Tcp(t)) => format!("wait for tcp:{}", fill(t)),
        Action::Wait(WaitFor::Http(t)) => format!("wait for {}", fill(t)),
        Action::Wait(WaitFor::Sql(t)) => format!("wait until sql: {}", fill(t)),
        Action::Wait(WaitFor::ReplicaCaughtUp) => "wait until the replica caught up".into(),
    }
}

fn on_name(step: &Step, ctx: &Context) -> String {
    match step.on {
        On::Local => ctx.loaded.me.clone(),
        On::Peer => ctx.loaded.peer().name.clone(),
    }
}

/// Finds `name` in this node's config dir and checks it for the site.
pub fn load(ctx: &Context, name: &str) -> Result<Found, PlaybookError> {
    let found = playbook::find(&crate::config::config_dir(&ctx.loaded.config.path), name)
        .map_err(|nf| PlaybookError::Invalid(nf.diagnostics))?;
    let problems = found.check_for_site(&ctx.site.name, &ctx.site.databases);
    if !problems.is_empty() {
        return Err(PlaybookError::Invalid(problems));
    }
    Ok(found)
}

/// The dry run: each step with where it would run and what it would do.
pub fn plan(ctx: &Context, name: &str) -> Result<Report, PlaybookError> {
    let found = load(ctx, name)?;
    let base = variables(ctx);
    let steps = found
        .book
        .steps
        .iter()
        .map(|s| StepRecord {
            name: s.name.clone(),
            kind: s.kind(),
            on: on_name(s, ctx),
            does: describe(s, &step_vars(&base, ctx, s)),
            ok: true,
            status: format!(
                "would run (timeout {} s{})",
                s.timeout.as_secs(),
                if s.on_failure == OnFailure::Continue {
                    ", continue on failure"
                } else {
                    ""
                }
            ),
            duration_ms: 0,
            output: String::new(),
            continued: false,
        })
        .collect();
    Ok(Report {
        playbook: name.to_owned(),
        site: ctx.site.name.clone(),
        node: ctx.loaded.me.clone(),
        ok: true,
        steps,
    })
}

/// Runs the playbook `name` for the site, step by step; `progress` hears of each step as
/// it starts (`None`) and ends (`Some`). Records go to `store` when given.
pub async fn run(
    ctx: &Context<'_>,
    name: &str,
    store: Option<&Store>,
    progress: &mut (dyn FnMut(&Step, Option<&StepRecord>) + Send),
) -> Result<Report, PlaybookError> {
    let found = load(ctx, name)?;
    let base = variables(ctx);
    let mut report = Report {
        playbook: name.to_owned(),
        site: ctx.site.name.clone(),
        node: ctx.loaded.me.clone(),
        ok: true,
        steps: Vec::new(),
    };
    let mut peer: Option<Result<ssh::PeerShell, String>> = None;
    for step in &found.book.steps {
        progress(step, None);
        let vars = step_vars(&base, ctx, step);
        let t0 = Instant::now();
        let outcome = match step.on {
            On::Local => {
                let db = local_db(ctx, step);
                exec::run_local(step, &vars, db.as_ref()).await
            }
            On::Peer => {
                if peer.is_none() {
                    peer = Some(
                        ssh::PeerShell::connect(ctx.loaded)
                            .await
                            .map_err(|e| e.to_string()),
                    );
                }
                match peer.as_ref() {
                    Some(Ok(shell)) => shell.step(&ctx.site.name, name, step).await,
                    Some(Err(e)) => exec::Outcome {
                        ok: false,
                        status: "not run: no SSH session to the peer".into(),
                        output: e.clone(),
                    },
                    None => unreachable_outcome(),
                }
            }
        };
        let record = StepRecord {
            name: step.name.clone(),
            kind: step.kind(),
            on: on_name(step, ctx),
            does: describe(step, &vars),
            ok: outcome.ok,
            status: outcome.status,
            duration_ms: t0.elapsed().as_millis() as u64,
            output: outcome.output,
            continued: !outcome.ok && step.on_failure == OnFailure::Continue,
        };
        progress(step, Some(&record));
        if let Some(store) = store {
            keep(store, &report, &record).await;
        }
        let stop = !record.ok && !record.continued;
        report.steps.push(record);
        if stop {
            report.ok = false;
            break;
        }
    }
    if let Some(Ok(shell)) = peer {
        shell.close().await;
    }
    if let Some(store) = store {
        let (outcome, summary) = match report.failure() {
            None => (
                EventOutcome::Ok,
                format!(
                    "playbook {} done on {} ({} steps)",
                    name,
                    report.node,
                    report.steps.len()
                ),
            ),
            Some(f) => (
                EventOutcome::Fail,
                f.lines().next().unwrap_or_default().to_owned(),
            ),
        };
        let event = NewEvent {
            at: agent::unix_millis(std::time::SystemTime::now()),
            site: Some(&ctx.site.name),
            kind: EventKind::Playbook,
            outcome,
            summary: &summary,
            detail: serde_json::to_value(&report).ok(),
        };
        if let Err(e) = store.record(&event).await {
            tracing::warn!(error = agent::error_chain(&e), "Playbook run not recorded");
        }
    }
    Ok(report)
}

fn unreachable_outcome() -> exec::Outcome {
    exec::Outcome {
        ok: false,
        status: "not run".into(),
        output: String::new(),
    }
}

/// The step's database on this node, when it has one.
pub fn local_db(ctx: &Context, step: &Step) -> Option<exec::Db> {
    let db = playbook::step_database(step, &ctx.site.databases).ok()?;
    let local = crate::databases::endpoint(&ctx.loaded.config, db, &ctx.loaded.me).ok()?;
    Some(exec::Db {
        engine: crate::databases::engine(db.kind),
        name: db.name.clone(),
        local,
    })
}

/// One step's record in the history.
async fn keep(store: &Store, report: &Report, step: &StepRecord) {
    let summary = format!(
        "playbook {} step `{}` on {}: {} in {:.1} s{}",
        report.playbook,
        step.name,
        step.on,
        step.status,
        step.duration_ms as f64 / 1000.0,
        if step.continued { " (continued)" } else { "" }
    );
    let event = NewEvent {
        at: agent::unix_millis(std::time::SystemTime::now()),
        site: Some(&report.site),
        kind: EventKind::Playbook,
        outcome: if step.ok {
            EventOutcome::Ok
        } else if step.continued {
            EventOutcome::Warn
        } else {
            EventOutcome::Fail
        },
        summary: &summary,
        detail: serde_json::to_value(step).ok(),
    };
    if let Err(e) = store.record(&event).await {
        tracing::warn!(error = agent::error_chain(&e), "Playbook step not recorded");
    }
}

/// Every playbook a site of the config names, and every file in `<config dir>/playbooks`.
pub fn all_names(loaded_dir: &Path, sites: &[Site]) -> Vec<String> {
    let mut names: Vec<String> = sites
        .iter()
        .flat_map(|s| s.promote.iter().chain(&s.demote).chain(&s.rejoin).cloned())
        .collect();
    if let Ok(entries) = std::fs::read_dir(loaded_dir.join("playbooks")) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                if let Some(stem) = p.file_stem() {
                    names.push(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}
