//! Wires the config's `[[sites.X.database]]` to `agent::db`: each database's master and
//! standby side under the site's current role, the URLs with `{node}` filled in,
//! passwords from their files; in the agent, the periodic checks, the heartbeat writer on
//! the master, and the history and alert events that reports and mail build on.

use super::alerts::Alerter;
use super::roles::Roles;
use crate::config::Loaded;
use crate::databases::targets;
use agent::db::{self, Report, Verdict};
use agent::state::{NewEvent, Outcome, Store};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// Keeps a check's result and turns verdict changes into `db` history events; when
/// `alerter` is given (this node is the site's master), a lagging or broken database is
/// alerted and its recovery resolves the alert.
pub async fn keep(store: &Store, report: &Report, alerter: Option<&Alerter>) {
    let before = match store.put_db_check(report).await {
        Ok(before) => before,
        Err(e) => {
            tracing::warn!(error = agent::error_chain(&e), "Could not store a DB check");
            return;
        }
    };
    if let Some(alerter) = alerter {
        // One alert per database and verdict, so that a database that goes from lagging
        // to broken is alerted at once (the lagging alert is superseded, not resolved).
        // A problem is alerted when two checks in a row agree on it: one check alone may
        // be a transient (a heartbeat row not replicated yet right after start), and an
        // alert once resolved waits an hour before it may be mailed again.
        let confirmed = before == Some(report.verdict);
        let key = |v: Verdict| format!("db:{}:{}:{}", report.site, report.name, v.as_str());
        let summary = format!(
            "database {} is {}: {}",
            report.name,
            report.verdict.as_str(),
            report.problems.join("; ")
        );
        match report.verdict {
            Verdict::Healthy => {
                alerter.clear(&key(Verdict::Lagging)).await;
                alerter.clear(&key(Verdict::Broken)).await;
            }
            Verdict::Lagging => {
                alerter.clear(&key(Verdict::Broken)).await;
                if confirmed {
                    alerter
                        .raise(&key(Verdict::Lagging), Some(&report.site), &summary)
                        .await;
                }
            }
            Verdict::Broken => {
                alerter.supersede(&key(Verdict::Lagging)).await;
                if confirmed {
                    alerter
                        .raise(&key(Verdict::Broken), Some(&report.site), &summary)
                        .await;
                }
            }
        }
    }
    if before == Some(report.verdict) {
        return;
    }
    let outcome = match report.verdict {
        Verdict::Healthy => Outcome::Ok,
        Verdict::Lagging => Outcome::Warn,
        Verdict::Broken => Outcome::Fail,
    };
    let summary = format!(
        "database {}: {}{}",
        report.name,
        report.verdict.as_str(),
        if report.problems.is_empty() {
            String::new()
        } else {
            format!(" — {}", report.problems.join("; "))
        }
    );
    let detail = serde_json::to_value(report).ok();
    let now = agent::unix_millis(SystemTime::now());
    let events = [NewEvent {
        at: now,
        site: Some(&report.site),
        kind: agent::state::EventKind::Db,
        outcome,
        summary: &summary,
        detail,
    }];
    for event in &events {
        if let Err(e) = store.record(event).await {
            tracing::warn!(
                error = agent::error_chain(&e),
                "Could not record a DB event"
            );
        }
    }
    match report.verdict {
        Verdict::Healthy => {
            tracing::info!(site = %report.site, database = %report.name, "Replication healthy")
        }
        _ => {
            tracing::warn!(site = %report.site, database = %report.name, verdict = report.verdict.as_str(), problems = ?report.problems, "Replication not healthy")
        }
    }
}

/// The agent's task: each database checked every `interval`; the heartbeat row written
/// every 10 s by the site's master.
pub async fn run(
    loaded: Arc<Loaded>,
    store: Store,
    roles: Roles,
    alerter: Alerter,
    stop: CancellationToken,
) -> Result<(), Infallible> {
    let mut tasks = tokio::task::JoinSet::new();
    for site in loaded
        .config
        .sites
        .iter()
        .filter(|s| !s.databases.is_empty())
    {
        for (index, db) in site.databases.iter().enumerate() {
            let (loaded, store, roles, stop, alerter) = (
                Arc::clone(&loaded),
                store.clone(),
                roles.clone(),
                stop.clone(),
                alerter.clone(),
            );
            let (site_name, interval) = (site.name.clone(), db.interval);
            tasks.spawn(async move {
                let mut next_check = tokio::time::Instant::now();
                let mut beat_error: Option<String> = None;
                loop {
                    let Some(site) = loaded.config.site(&site_name) else {
                        return;
                    };
                    let Ok(role) = roles.get(&site_name) else {
                        return;
                    };
                    let mine = role.is_master(&loaded.me);
                    let target = targets(&loaded.config, site, &role)
                        .map(|mut t| t.swap_remove(index));
                    match &target {
                        Err(e) => tracing::warn!(site = %site_name, error = %e, "Database check not possible"),
                        Ok(target) => {
                            if mine && target.heartbeat_table.is_some() {
                                let result = db::beat(target, &loaded.me).await;
                                let now_error = result.err();
                                if now_error != beat_error {
                                    if let Some(e) = &now_error {
                                        tracing::warn!(error = %e, "Heartbeat not written");
                                    }
                                    beat_error = now_error;
                                }
                            }
                            if tokio::time::Instant::now() >= next_check {
                                let report = db::check(target).await;
                                keep(&store, &report, mine.then_some(&alerter)).await;
                                next_check = tokio::time::Instant::now() + interval;
                            }
                        }
                    }
                    let wake = next_check.min(tokio::time::Instant::now() + db::HEARTBEAT_EVERY);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep_until(wake) => {}
                    }
                }
            });
        }
    }
    stop.cancelled().await;
    tasks.shutdown().await;
    Ok(())
}
