//! A site's checks from this node: `orch check`, `orch dns show`, `orch db …`.

use super::status::print_db_report;
use super::{runtime, Exit, Result};
use crate::config::{self, Loaded};
use anyhow::anyhow;

type DnsRow = crate::dns::Published;

pub(super) fn site_named<'a>(c: &'a config::Config, site: &str) -> Result<&'a config::Site> {
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
pub(super) fn dns_rows(
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

pub(super) fn dns_json(rows: &[DnsRow]) -> serde_json::Value {
    rows.iter()
        .map(|(name, kind, values)| serde_json::json!({ "name": name, "type": kind.to_string(), "values": values }))
        .collect()
}

pub(super) fn print_dns_rows(rows: &[DnsRow], indent: &str) {
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
pub(super) fn db_reports(loaded: &Loaded, site: &config::Site) -> Result<Vec<agent::db::Report>> {
    if site.databases.is_empty() {
        return Ok(Vec::new());
    }
    runtime()?.block_on(async {
        let role = crate::daemon::roles::read(&loaded.me().state_dir, site)
            .await
            .map_err(Exit::failed)?;
        let targets = crate::databases::targets(&loaded.config, site, &role)
            .map_err(|e| Exit::usage(anyhow!("site {}: {e}", site.name)))?;
        let mut reports = Vec::new();
        for target in &targets {
            reports.push(agent::db::check(target).await);
        }
        Ok(reports)
    })
}

/// What would stop a rejoin after a failover, per database and node: PostgreSQL without
/// `wal_log_hints` or data checksums cannot be pg_rewind'ed.
fn rejoin_warnings(loaded: &Loaded, site: &config::Site) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let postgres: Vec<&config::Database> = site
        .databases
        .iter()
        .filter(|d| d.kind == config::DbKind::Postgres)
        .collect();
    if postgres.is_empty() {
        return Ok(out);
    }
    runtime()?.block_on(async {
        for db in postgres {
            for node in &loaded.config.nodes {
                let Ok(side) = crate::databases::endpoint(&loaded.config, db, &node.name) else {
                    continue;
                };
                let sql = "SELECT current_setting('wal_log_hints') = 'on' OR current_setting('data_checksums') = 'on'";
                match agent::db::execute(
                    agent::db::Engine::Postgres,
                    &side,
                    &db.name,
                    sql,
                    std::time::Duration::from_secs(15),
                )
                .await
                {
                    Ok(a) if !agent::db::truthy(&a) => out.push(format!(
                        "database {} on {}: neither wal_log_hints nor data checksums are on, so pg_rewind cannot make it follow a new master after a failover (set wal_log_hints = on and restart)",
                        db.name, node.name
                    )),
                    _ => {}
                }
            }
        }
    });
    Ok(out)
}

pub(super) fn check(loaded: &Loaded, site: &str, json: bool) -> Result {
    let site = site_named(&loaded.config, site)?;
    let dns = dns_rows(loaded, site)?;
    let databases = db_reports(loaded, site)?;
    let warnings = rejoin_warnings(loaded, site)?;
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
        let doc = serde_json::json!({
            "site": site.name,
            "dns": dns,
            "databases": databases,
            "warnings": warnings,
        });
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
        for w in &warnings {
            println!("warning: {w}");
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

pub(super) fn db_command(loaded: &Loaded, command: super::DbCommand) -> Result {
    use super::DbCommand;
    let (site, database, on) = match &command {
        DbCommand::Promote {
            site, database, on, ..
        }
        | DbCommand::Demote { site, database, on }
        | DbCommand::Position { site, database, on }
        | DbCommand::Wait {
            site, database, on, ..
        } => (site, database, on),
        DbCommand::Rejoin { .. } => {
            return Err(Exit::usage(anyhow!(
                "orch db rejoin is dispatched on its own"
            )))
        }
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
        let role = crate::daemon::roles::read(&loaded.me().state_dir, site)
            .await
            .map_err(Exit::failed)?;
        let (master, standby) = (
            role.master.clone(),
            role.standby(&loaded.config, site).to_owned(),
        );
        let targets = crate::databases::targets(&loaded.config, site, &role)
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
            DbCommand::Rejoin { .. } => {}
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

pub(super) fn dns_show(loaded: &Loaded, site: &str, json: bool) -> Result {
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

/// `orch ack SITE`: the agent re-arms automatic failover of the site.
pub(super) fn ack(loaded: &Loaded, site: &str) -> Result {
    let site = site_named(&loaded.config, site)?;
    let text: String = super::call(
        loaded,
        &crate::api::Request::Ack {
            site: site.name.clone(),
        },
    )?;
    println!("{text}");
    Ok(())
}

/// `orch promote SITE [--dry-run] [--force]`: the agent takes the site over here.
pub(super) fn promote(loaded: &Loaded, site: &str, dry_run: bool, force: bool) -> Result {
    let site = site_named(&loaded.config, site)?;
    // This call's number: the agent publishes the switchover's lines under it, so that
    // another `orch promote`'s lines are never printed here.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
        ^ (u64::from(std::process::id()) << 32)
        | 1;
    let request = crate::api::Request::Promote {
        site: site.name.clone(),
        dry_run,
        force,
        run,
    };
    // Each line of a switchover is printed as it comes: the agent is asked for them
    // while the request runs (playbooks and the final push may take minutes).
    let socket = loaded.me().state_dir.join(crate::api::SOCKET);
    let rt = super::runtime()?;
    let mut printed = 0usize;
    let answer: std::result::Result<String, agent::control::ControlError> = rt.block_on(async {
        let call =
            agent::control::call(&socket, &request, std::time::Duration::from_secs(4 * 3600));
        tokio::pin!(call);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(300));
        loop {
            tokio::select! {
                r = &mut call => return r,
                _ = tick.tick() => {
                    let lines: std::result::Result<Vec<String>, _> = agent::control::call(
                        &socket,
                        &crate::api::Request::PromoteProgress { run },
                        std::time::Duration::from_secs(2),
                    )
                    .await;
                    if let Ok(lines) = lines {
                        for l in lines.iter().skip(printed) {
                            println!("{l}");
                        }
                        printed = printed.max(lines.len());
                    }
                }
            }
        }
    });
    let rest = |text: &str| {
        for l in text.lines().skip(printed) {
            println!("{l}");
        }
    };
    match answer {
        Ok(text) => {
            rest(&text);
            Ok(())
        }
        Err(agent::control::ControlError::Refused(text)) => {
            // What was not printed yet goes on; its last line (where it stopped, and why)
            // is the error.
            let rest: Vec<&str> = text.lines().skip(printed).collect();
            let why = match rest.split_last() {
                Some((last, before)) => {
                    for l in before {
                        println!("{l}");
                    }
                    (*last).to_owned()
                }
                None => format!("orch promote {}: not done (see above)", site.name),
            };
            Err(super::Exit::failed(anyhow::anyhow!(why)))
        }
        Err(e @ agent::control::ControlError::Unreachable { .. }) => {
            Err(super::control_failed(loaded, e))
        }
        // The agent stopped (or stopped answering) half-way.
        Err(e) => Err(super::Exit::failed(anyhow::anyhow!(e).context(format!(
            "the agent stopped answering before `orch promote {}` finished: `orch status` says where the site stands (a switchover cut off before its DNS swap is undone when the agent starts again)",
            site.name
        )))),
    }
}
