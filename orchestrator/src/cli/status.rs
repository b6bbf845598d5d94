//! What the agent knows: `orch status` and `orch history`.

use super::{call, runtime, Exit, Result};
use crate::api::{Request, Role, StatusReport};
use crate::config::Loaded;
use anyhow::anyhow;
use std::io::Write as _;
use std::time::Duration;

pub(super) fn status(loaded: &Loaded, json: bool) -> Result {
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
    // One line per site: what the failover logic sees and why it acts or not.
    println!();
    for s in &report.sites {
        match &s.failover_state {
            Some(f) => println!("failover {}: {}", s.name, f.summary),
            None => println!("failover {}: not evaluated yet", s.name),
        }
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
                crate::units::bytes(r.bytes_sent.max(0) as u64),
                crate::units::bytes(r.bytes_total.max(0) as u64),
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

pub(super) fn report_age(checked_at: i64) -> String {
    let now = agent::unix_millis(std::time::SystemTime::now());
    format!("checked {} s ago", ((now - checked_at).max(0)) / 1000)
}

/// One database's check, as `orch status` and `orch check` print it.
pub(super) fn print_db_report(r: &agent::db::Report, when: String) {
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

/// `--since WHEN` as Unix milliseconds: a duration before `now` ("2h", "3days"), a local
/// date ("2026-12-01", its midnight) or date and time ("2026-12-01 04:30[:00]"), or an
/// RFC 3339 time.
pub(super) fn parse_since(
    text: &str,
    now: chrono::DateTime<chrono::Local>,
) -> std::result::Result<i64, String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone as _};
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
        return Ok((now - ago).timestamp_millis());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    let local = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    match local.map(|t| chrono::Local.from_local_datetime(&t).earliest()) {
        Some(Some(t)) => Ok(t.timestamp_millis()),
        Some(None) => Err(format!("`{text}` does not exist in the local time zone")),
        None => Err(format!(
            "--since `{text}`: a duration ago (\"2h\", \"3days\"), a local date (\"2026-12-01\"), \
             a date and time (\"2026-12-01 04:30\") or RFC 3339"
        )),
    }
}

pub(super) fn history(
    loaded: &Loaded,
    site: Option<&str>,
    limit: u32,
    since: Option<i64>,
    json: bool,
) -> Result {
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
            let events = store.history_since(site, limit, since).await;
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
        eprintln!(
            "{}",
            if since.is_some() {
                "no events recorded since then"
            } else {
                "no events recorded yet"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_since;
    use chrono::TimeZone as _;

    #[test]
    fn since_takes_a_duration_ago_a_local_date_and_time_or_rfc3339() {
        let now = chrono::Local
            .with_ymd_and_hms(2026, 12, 2, 12, 0, 0)
            .unwrap();
        let ms = |t: chrono::DateTime<chrono::Local>| t.timestamp_millis();
        assert_eq!(parse_since("2h", now), Ok(ms(now) - 2 * 3_600_000));
        assert_eq!(parse_since("3days", now), Ok(ms(now) - 3 * 86_400_000));
        let day = chrono::Local
            .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .unwrap();
        assert_eq!(parse_since("2026-12-01", now), Ok(ms(day)));
        let at = chrono::Local
            .with_ymd_and_hms(2026, 12, 1, 4, 30, 0)
            .unwrap();
        assert_eq!(parse_since("2026-12-01 04:30", now), Ok(ms(at)));
        assert_eq!(parse_since("2026-12-01T04:30:00", now), Ok(ms(at)));
        assert_eq!(
            parse_since("2026-12-01T04:30:00Z", now),
            Ok(1_796_099_400_000)
        );
        let e = parse_since("yesterday-ish", now).unwrap_err();
        assert!(e.contains("a duration ago"), "{e}");
    }
}
