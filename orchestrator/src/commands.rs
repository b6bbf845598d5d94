//! What each subcommand does. Every command returns `Err(Exit)` carrying its exit code;
//! `main` prints the error once.

use crate::api::{Request, Role, StatusReport};
use crate::cli::{Cli, Command, ConfigCommand, DnsCommand};
use crate::config::{self, ConfigError, LoadOptions, Loaded};
use agent::control::{self, ControlError};
use anyhow::{anyhow, Context as _};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A failed command: the exit code and the error to print.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NO_AGENT: u8 = 3;

    fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Self::FAILED,
            error: error.into(),
        }
    }
    fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Self::USAGE,
            error: error.into(),
        }
    }
}

impl From<ConfigError> for Exit {
    fn from(e: ConfigError) -> Self {
        Exit::usage(e)
    }
}

type Result<T = ()> = std::result::Result<T, Exit>;

pub fn run(cli: Cli) -> Result {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG));
    let options = LoadOptions {
        node: cli.node.clone(),
    };
    match cli.command {
        Command::Init {
            tunnel_ip,
            endpoint,
        } => init(&config_path, cli.node.as_deref(), tunnel_ip, endpoint),
        Command::Pubkey => pubkey(&config_path, &options),
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&config_path, &options),
        Command::Agent => {
            let loaded = config::load(&config_path, &options)?;
            runtime()?
                .block_on(crate::daemon::run(loaded))
                .map_err(Exit::failed)
        }
        Command::Status { json } => status(&config::load(&config_path, &options)?, json),
        Command::History { site, limit, json } => history(
            &config::load(&config_path, &options)?,
            site.as_deref(),
            limit,
            json,
        ),
        Command::Dns {
            command: DnsCommand::Show { site, json },
        } => dns_show(&config::load(&config_path, &options)?, &site, json),
        Command::Check { site, json } => check(&config::load(&config_path, &options)?, &site, json),
        Command::Report { site, send, html } => {
            report(&config::load(&config_path, &options)?, &site, send, html)
        }
        Command::Push {
            site,
            job,
            dry_run,
            force,
        } => push(
            &config::load(&config_path, &options)?,
            &site,
            job,
            dry_run,
            force,
        ),
        Command::Db { command } => db_command(&config::load(&config_path, &options)?, command),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "orch", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(Exit::failed)
}

fn config_check(path: &Path, options: &LoadOptions) -> Result {
    let loaded = config::load(path, options)?;
    let c = &loaded.config;
    let jobs: usize = c.sites.iter().map(|s| s.sync.len()).sum();
    let dbs: usize = c.sites.iter().map(|s| s.databases.len()).sum();
    println!(
        "{}: ok: cluster {}, this node is {} (peer {}); {} site(s), {} sync job(s), {} database(s)",
        path.display(),
        c.cluster.name,
        loaded.me,
        loaded.peer().name,
        c.sites.len(),
        jobs,
        dbs
    );
    Ok(())
}

fn init(
    config_path: &Path,
    node: Option<&str>,
    tunnel_ip: Option<std::net::IpAddr>,
    endpoint: Option<String>,
) -> Result {
    let node = node.ok_or_else(|| {
        Exit::usage(anyhow!(
            "orch init needs --node NAME (this node's name in the config)"
        ))
    })?;
    if node.is_empty()
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Exit::usage(anyhow!(
            "node name `{node}` must be letters, digits, '-' or '_'"
        )));
    }
    if let Some(ep) = &endpoint {
        config::validate_endpoint(ep).map_err(|e| Exit::usage(anyhow!("--endpoint: {e}")))?;
    }
    let dir = config::config_dir(config_path);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(Exit::failed)?;

    let key_file = dir.join(config::DEFAULT_KEY_FILE);
    let key = if key_file.exists() {
        let key = config::read_private_key(&key_file).map_err(|e| Exit::failed(anyhow!(e)))?;
        eprintln!(
            "Keeping the existing key {} (orch init never replaces a key).",
            key_file.display()
        );
        key
    } else {
        let key = tunnel::PrivateKey::generate();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)
            .and_then(|mut f| {
                f.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
                f.sync_all()
            })
            .with_context(|| format!("writing {}", key_file.display()))
            .map_err(Exit::failed)?;
        eprintln!("Wrote the private key {} (mode 0600).", key_file.display());
        key
    };
    let public = key.public_key();
    let tunnel_ip = tunnel_ip.unwrap_or(std::net::IpAddr::from([10, 77, 0, 1]));
    let section =
        crate::starter::node_section(node, &public.to_string(), tunnel_ip, endpoint.as_deref());

    if config_path.exists() {
        eprintln!(
            "{} exists and was left alone. Make sure it has this node:\n\n{section}",
            config_path.display()
        );
    } else {
        let text = crate::starter::config(node, &section, tunnel_ip);
        std::fs::write(config_path, text)
            .with_context(|| format!("writing {}", config_path.display()))
            .map_err(Exit::failed)?;
        eprintln!(
            "Wrote a starter config {}.\nNext: add the peer's [nodes.NAME] (its `orch pubkey`), then copy the \
             same file to both nodes and run `orch config check` on each.",
            config_path.display()
        );
    }
    println!("{public}");
    Ok(())
}

fn pubkey(config_path: &Path, options: &LoadOptions) -> Result {
    let key_file = match config::load(config_path, options) {
        Ok(loaded) => loaded.me().private_key_file.clone(),
        // A config that is not complete yet (one node, right after `orch init`) still
        // has the key beside it.
        Err(_) => config::config_dir(config_path).join(config::DEFAULT_KEY_FILE),
    };
    let key = config::read_private_key(&key_file).map_err(|e| Exit::failed(anyhow!(e)))?;
    println!("{}", key.public_key());
    Ok(())
}

fn call<T: serde::de::DeserializeOwned>(loaded: &Loaded, request: &Request) -> Result<T> {
    call_within(loaded, request, Duration::from_secs(30))
}

fn call_within<T: serde::de::DeserializeOwned>(
    loaded: &Loaded,
    request: &Request,
    timeout: Duration,
) -> Result<T> {
    let socket = loaded.me().state_dir.join(crate::daemon::SOCKET);
    let rt = runtime()?;
    rt.block_on(control::call(&socket, request, timeout))
        .map_err(|e| control_failed(loaded, e))
}

/// A failed control call as an exit: 3 when no agent answers, else 1.
fn control_failed(loaded: &Loaded, e: ControlError) -> Exit {
    match e {
        ControlError::Unreachable { .. } => Exit {
            code: Exit::NO_AGENT,
            error: anyhow!(e).context(format!(
                "the agent of node {} is not running (start it: `systemctl start orch`, or `orch agent`)",
                loaded.me
            )),
        },
        other => Exit::failed(other),
    }
}

fn status(loaded: &Loaded, json: bool) -> Result {
    let report: StatusReport = call(loaded, &Request::Status)?;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(Exit::failed)?;
        println!("{text}");
        return Ok(());
    }
    let a = &report.agent;
    println!(
        "node {} (cluster {}): agent pid {}, orch {}, up {}",
        report.node,
        report.cluster,
        a.pid,
        a.orch_version,
        humantime::format_duration(Duration::from_secs(a.uptime_secs))
    );
    let t = &report.tunnel;
    let ago = |s: Option<u64>| {
        s.map_or("never".to_string(), |s| {
            format!("{} ago", humantime::format_duration(Duration::from_secs(s)))
        })
    };
    println!(
        "tunnel {} {} → {} {} at {}: {}; last handshake {}, last received {}; rx {} B, tx {} B",
        t.interface,
        t.address,
        t.peer,
        t.peer_address,
        t.endpoint.as_deref().unwrap_or("(endpoint unknown)"),
        if t.up {
            "up"
        } else if t.suspect {
            "DOWN (suspect: re-resolving, re-handshaking)"
        } else {
            "connecting"
        },
        ago(t.last_handshake_secs),
        ago(t.last_received_secs),
        t.rx_bytes,
        t.tx_bytes
    );
    let p = &report.peer;
    match (p.reachable, &p.last_error) {
        (true, _) => println!(
            "peer agent {}: answering (last heartbeat {}); it sees this node at {}",
            p.node,
            ago(p.last_contact_secs),
            p.our_public_endpoint.as_deref().unwrap_or("(unknown)")
        ),
        (false, error) => println!(
            "peer agent {}: NOT answering (last heartbeat {}){}",
            p.node,
            ago(p.last_contact_secs),
            error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        ),
    }
    if report.sites.is_empty() {
        println!("\nno sites configured");
        return Ok(());
    }
    let width = report
        .sites
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "\n{:width$}  {:8} {:12} {:>6}  FAILOVER",
        "SITE", "ROLE", "MASTER", "EPOCH"
    );
    for s in &report.sites {
        let role = match s.role {
            Role::Master => "master",
            Role::Standby => "standby",
        };
        let failover = serde_json::to_value(s.failover)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:width$}  {:8} {:12} {:>6}  {}",
            s.name, role, s.master, s.epoch, failover
        );
    }
    let runs: Vec<_> = report.sites.iter().flat_map(|s| &s.pushes).collect();
    if !runs.is_empty() {
        println!();
        for r in runs {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(r.started_at.max(0) as u64);
            println!(
                "push {}/{}: {} at {}: {} of {} entries changed, {} sent of {}, {} deletion(s), {} diverged in {:.1} s{}",
                r.site,
                r.job,
                r.outcome.as_str(),
                humantime::format_rfc3339_seconds(at),
                r.files_changed,
                r.files_total,
                crate::report::bytes(r.bytes_sent.max(0) as u64),
                crate::report::bytes(r.bytes_total.max(0) as u64),
                r.deletions,
                r.diverged,
                r.duration_ms as f64 / 1000.0,
                r.errors.first().map(|e| format!("; {e}")).unwrap_or_default()
            );
        }
    }
    if !report.databases.is_empty() {
        println!();
        for r in &report.databases {
            print_db_report(r, report_age(r.checked_at));
        }
    }
    let o = &report.outbox;
    println!(
        "\nmail: {} pending, {} sent, {} handed to {}{}",
        o.pending,
        o.sent,
        o.handed_off,
        report.peer.node,
        o.oldest_error
            .as_ref()
            .map_or(String::new(), |e| format!("; oldest pending failed: {e}"))
    );
    Ok(())
}

fn report_age(checked_at: i64) -> String {
    let now = agent::unix_millis(std::time::SystemTime::now());
    format!("checked {} s ago", ((now - checked_at).max(0)) / 1000)
}

/// One database's check, as `orch status` and `orch check` print it.
fn print_db_report(r: &agent::db::Report, when: String) {
    let engine = match r.engine {
        agent::db::Engine::Postgres => "postgres",
        agent::db::Engine::Mysql => "mysql",
    };
    println!(
        "database {}/{} ({engine}): {} ({when})",
        r.site,
        r.name,
        r.verdict.as_str().to_uppercase()
    );
    for (what, side) in [("master", &r.master), ("standby", &r.standby)] {
        match &side.error {
            Some(e) => println!("  {what:8} {:10} ERROR {e}", side.node),
            None => println!(
                "  {what:8} {:10} {}{}, position {}",
                side.node,
                match side.role {
                    Some(agent::db::Role::Primary) => "primary",
                    Some(agent::db::Role::Standby) => "standby",
                    None => "?",
                },
                if side.read_only == Some(true) {
                    ", read-only"
                } else {
                    ""
                },
                side.position.as_deref().unwrap_or("-"),
            ),
        }
    }
    let figures = crate::report::db_figures(r);
    if !figures.is_empty() {
        println!("  {}", figures.join(", "));
    }
    for p in &r.problems {
        println!("  ! {p}");
    }
}

fn history(loaded: &Loaded, site: Option<&str>, limit: u32, json: bool) -> Result {
    if let Some(site) = site {
        if loaded.config.site(site).is_none() {
            let known: Vec<&str> = loaded
                .config
                .sites
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return Err(Exit::usage(anyhow!(
                "no site `{site}` in the config (sites: {})",
                known.join(", ")
            )));
        }
    }
    let state_dir = loaded.me().state_dir.clone();
    let events = runtime()?
        .block_on(async move {
            let store = agent::state::Store::open_read_only(&state_dir).await?;
            let events = store.history(site, limit).await;
            store.close().await;
            events
        })
        .map_err(Exit::failed)?;
    let mut out = std::io::stdout().lock();
    for e in &events {
        let line = if json {
            serde_json::to_string(e).map_err(Exit::failed)?
        } else {
            let at = chrono::DateTime::from_timestamp_millis(e.at)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string()
                })
                .unwrap_or_else(|| e.at.to_string());
            format!(
                "{at}  {:10} {:9} {:5}  {}",
                e.site.as_deref().unwrap_or("-"),
                e.kind,
                e.outcome.as_str(),
                e.summary
            )
        };
        // A closed pipe (`orch history | head`) ends the listing quietly.
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    if events.is_empty() && !json {
        eprintln!("no events recorded yet");
    }
    Ok(())
}

type DnsRow = crate::dns::Published;

fn site_named<'a>(c: &'a config::Config, site: &str) -> Result<&'a config::Site> {
    c.site(site).ok_or_else(|| {
        let known: Vec<&str> = c.sites.iter().map(|s| s.name.as_str()).collect();
        Exit::usage(anyhow!(
            "no site `{site}` in the config (sites: {})",
            known.join(", ")
        ))
    })
}

/// What the site's records (A and AAAA) and its `_orch` TXT record hold at the
/// authoritative servers; `None` when the site has no DNS provider.
fn dns_rows(
    loaded: &Loaded,
    site: &config::Site,
) -> Result<Option<std::result::Result<Vec<DnsRow>, crate::dns::DnsError>>> {
    if let Some(name) = &site.dns {
        if !loaded.config.dns.contains_key(name) {
            return Err(Exit::usage(anyhow!("no [dns.{name}]")));
        }
    }
    Ok(runtime()?.block_on(crate::dns::site_view(&loaded.config, site)))
}

fn dns_json(rows: &[DnsRow]) -> serde_json::Value {
    rows.iter()
        .map(|(name, kind, values)| serde_json::json!({ "name": name, "type": kind.to_string(), "values": values }))
        .collect()
}

fn print_dns_rows(rows: &[DnsRow], indent: &str) {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(4);
    for (name, kind, values) in rows {
        let shown = if values.is_empty() {
            "(none)".to_string()
        } else {
            values.join(", ")
        };
        println!("{indent}{name:width$}  {:4}  {shown}", kind.to_string());
    }
}

/// Runs the checks of every database of `site` from here (over the tunnel).
fn db_reports(loaded: &Loaded, site: &config::Site) -> Result<Vec<agent::db::Report>> {
    if site.databases.is_empty() {
        return Ok(Vec::new());
    }
    runtime()?.block_on(async {
        let store = agent::state::Store::open_read_only(&loaded.me().state_dir)
            .await
            .ok();
        let (master, _) = crate::dbcheck::roles(&loaded.config, site, store.as_ref()).await;
        let targets = crate::dbcheck::targets(&loaded.config, site, &master)
            .map_err(|e| Exit::usage(anyhow!("site {}: {e}", site.name)))?;
        let mut reports = Vec::new();
        for target in &targets {
            reports.push(agent::db::check(target).await);
        }
        Ok(reports)
    })
}

fn check(loaded: &Loaded, site: &str, json: bool) -> Result {
    let site = site_named(&loaded.config, site)?;
    let dns = dns_rows(loaded, site)?;
    let databases = db_reports(loaded, site)?;
    let failed = matches!(dns, Some(Err(_)))
        || databases
            .iter()
            .any(|r| r.verdict != agent::db::Verdict::Healthy);
    if json {
        let dns = match &dns {
            None => serde_json::Value::Null,
            Some(Ok(rows)) => serde_json::json!({ "ok": true, "records": dns_json(rows) }),
            Some(Err(e)) => serde_json::json!({ "ok": false, "error": e.to_string() }),
        };
        let doc = serde_json::json!({ "site": site.name, "dns": dns, "databases": databases });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(Exit::failed)?
        );
    } else {
        println!("site {}", site.name);
        match &dns {
            None => println!("dns: not configured (no dns provider for this site)"),
            Some(Ok(rows)) => {
                println!(
                    "dns: ok (provider {}, at the authoritative servers)",
                    site.dns.as_deref().unwrap_or_default()
                );
                print_dns_rows(rows, "  ");
            }
            Some(Err(e)) => println!("dns: FAILED: {e}"),
        }
        if databases.is_empty() {
            println!("databases: none configured");
        }
        for r in &databases {
            print_db_report(r, "now".into());
        }
    }
    if failed {
        return Err(Exit::failed(anyhow!(
            "a check of site {} failed",
            site.name
        )));
    }
    Ok(())
}

fn db_command(loaded: &Loaded, command: crate::cli::DbCommand) -> Result {
    use crate::cli::DbCommand;
    let (site, database, on) = match &command {
        DbCommand::Promote {
            site, database, on, ..
        }
        | DbCommand::Demote { site, database, on }
        | DbCommand::Position { site, database, on }
        | DbCommand::Wait {
            site, database, on, ..
        } => (site, database, on),
    };
    let site = site_named(&loaded.config, site)?;
    if !site.databases.iter().any(|d| &d.name == database) {
        let known: Vec<&str> = site.databases.iter().map(|d| d.name.as_str()).collect();
        return Err(Exit::usage(anyhow!(
            "site {} has no database `{database}` (databases: {})",
            site.name,
            known.join(", ")
        )));
    }
    if let Some(node) = on {
        if !loaded.config.nodes.iter().any(|n| &n.name == node) {
            return Err(Exit::usage(anyhow!("no node `{node}` in the config")));
        }
    }
    runtime()?.block_on(async {
        let store = agent::state::Store::open_read_only(&loaded.me().state_dir)
            .await
            .ok();
        let (master, standby) = crate::dbcheck::roles(&loaded.config, site, store.as_ref()).await;
        let targets = crate::dbcheck::targets(&loaded.config, site, &master)
            .map_err(|e| Exit::usage(anyhow!("site {}: {e}", site.name)))?;
        let target = targets
            .into_iter()
            .find(|t| &t.name == database)
            .ok_or_else(|| Exit::usage(anyhow!("no database {database}")))?;
        let pick = |default: &str| {
            let node = on.clone().unwrap_or_else(|| default.to_owned());
            if node == target.master.node {
                target.master.clone()
            } else {
                target.standby.clone()
            }
        };
        let failed = |e: String| Exit::failed(anyhow!(e));
        match &command {
            DbCommand::Promote { timeout, .. } => {
                let side = pick(&standby);
                agent::db::promote(target.engine, &side, database, *timeout)
                    .await
                    .map_err(failed)?;
                println!("promoted: database {database} on {} is writable", side.node);
            }
            DbCommand::Demote { .. } => {
                let side = pick(&master);
                agent::db::demote(target.engine, &side, database)
                    .await
                    .map_err(failed)?;
                println!(
                    "demoted: database {database} on {} refuses writes",
                    side.node
                );
            }
            DbCommand::Position { .. } => {
                let side = pick(&master);
                let position = agent::db::position(target.engine, &side, database)
                    .await
                    .map_err(failed)?;
                println!("{position}");
            }
            DbCommand::Wait {
                position, timeout, ..
            } => {
                let side = pick(&standby);
                agent::db::wait_for(target.engine, &side, database, position, *timeout)
                    .await
                    .map_err(failed)?;
                println!(
                    "caught up: database {database} on {} has applied {position}",
                    side.node
                );
            }
        }
        Ok(())
    })
}

fn report(loaded: &Loaded, site: &str, send: bool, html: bool) -> Result {
    use crate::reports::{Delivery, Made};
    #[derive(serde::Deserialize)]
    struct Answer {
        made: Made,
        delivery: Option<Delivery>,
    }
    let site = site_named(&loaded.config, site)?;
    if send {
        eprintln!("Gathering and sending the report of {}…", site.name);
    }
    let request = Request::Report {
        site: site.name.clone(),
        send,
    };
    // Gathering (DNS, the peer) and one delivery attempt, each bounded by the agent.
    let answer: Answer = call_within(loaded, &request, Duration::from_secs(150))?;
    let r = &answer.made.report;
    if !send {
        if html {
            print!("{}", r.html);
        } else {
            println!("Subject: {}\n\n{}", r.subject, r.text);
        }
        return Ok(());
    }
    match answer.delivery {
        Some(Delivery::Sent) => {
            println!("sent: {}", r.subject);
            Ok(())
        }
        Some(Delivery::HandedOff) => {
            println!(
                "handed to {}'s agent, which sends it: {}",
                loaded.peer().name,
                r.subject
            );
            Ok(())
        }
        Some(Delivery::Pending(error)) => Err(Exit::failed(anyhow!(
            "the report is not delivered yet: {error}\nIt stays in the outbox of {} and is \
             retried with backoff (after {} it is handed to {}'s agent); fix [mail] if the \
             error says how.",
            loaded.me,
            humantime::format_duration(loaded.config.mail.hand_off_after),
            loaded.peer().name
        ))),
        None => Err(Exit::failed(anyhow!("the agent did not queue the report"))),
    }
}

fn push(loaded: &Loaded, site: &str, job: Option<String>, dry_run: bool, force: bool) -> Result {
    use crate::push::{JobResult, ProgressView};
    use std::io::IsTerminal as _;
    let site = site_named(&loaded.config, site)?;
    if let Some(j) = &job {
        if !site.sync.iter().any(|s| &s.name == j) {
            return Err(Exit::usage(anyhow!(
                "site {} has no sync job `{j}`",
                site.name
            )));
        }
    }
    let request = Request::Push {
        site: site.name.clone(),
        job,
        dry_run,
        force,
    };
    let socket = loaded.me().state_dir.join(crate::daemon::SOCKET);
    let rt = runtime()?;
    let bar = std::io::stderr().is_terminal();
    let results: std::result::Result<Vec<JobResult>, ControlError> = rt.block_on(async {
        // A first push of a big tree may take hours: no overall limit.
        let call = control::call(&socket, &request, Duration::from_secs(7 * 24 * 3600));
        tokio::pin!(call);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut drawn = false;
        loop {
            tokio::select! {
                r = &mut call => {
                    if drawn {
                        eprint!("\r\x1b[2K");
                    }
                    return r;
                }
                _ = tick.tick(), if bar => {
                    let p: std::result::Result<Option<ProgressView>, _> =
                        control::call(&socket, &Request::PushProgress, Duration::from_secs(2)).await;
                    if let Ok(Some(p)) = p {
                        let width = 24usize;
                        let filled = (p.steps_done * width as u64)
                            .checked_div(p.steps_total)
                            .unwrap_or(0) as usize;
                        eprint!(
                            "\r\x1b[2K{}/{} [{}{}] {}/{} steps, {} sent, {:.0} s — {}",
                            p.site,
                            p.job,
                            "#".repeat(filled.min(width)),
                            " ".repeat(width - filled.min(width)),
                            p.steps_done,
                            p.steps_total,
                            crate::report::bytes(p.bytes_sent),
                            p.elapsed_ms as f64 / 1000.0,
                            p.phase
                        );
                        drawn = true;
                    }
                }
            }
        }
    });
    let results = results.map_err(|e| control_failed(loaded, e))?;
    let mut failed = 0;
    for r in &results {
        for c in &r.changes {
            println!("{c}");
        }
        println!("{}/{}: {}: {}", r.site, r.job, r.outcome, r.summary);
        if let Some(d) = &r.diverged_dir {
            println!("  diverged data kept in {d}");
        }
        if let Some(run) = &r.run {
            for e in run.errors.iter().take(20) {
                println!("  {e}");
            }
        }
        if r.outcome == "fail" || r.outcome == "refused" {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(Exit::failed(anyhow!(
            "{failed} of {} push job(s) did not complete",
            results.len()
        )));
    }
    Ok(())
}

fn dns_show(loaded: &Loaded, site: &str, json: bool) -> Result {
    let site = site_named(&loaded.config, site)?;
    let rows = match dns_rows(loaded, site)? {
        None => {
            return Err(Exit::usage(anyhow!(
                "site {} has no dns provider (set dns = \"NAME\" and records)",
                site.name
            )))
        }
        Some(rows) => rows.map_err(Exit::failed)?,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&dns_json(&rows)).map_err(Exit::failed)?
        );
        return Ok(());
    }
    print_dns_rows(&rows, "");
    Ok(())
}
