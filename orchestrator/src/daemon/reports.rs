//! The agent's side of reports: gathers a site's [`Facts`] (the state store, the tunnel,
//! the peer's free space over peer RPC, DNS at the authoritative servers), renders and
//! queues the report, on the site's `report` schedule and on `orch report SITE --send`.
//! A site's report is written by the node that is its master.

use super::roles::{RoleError, Roles};
use crate::api::{Delivery, Made};
use crate::cluster::peer::{tunnel_up, PeerView};
use crate::config::{Loaded, Site};
use crate::report::{self, Dns, DnsRecord, Facts, Space, Tunnel};
use agent::peer::{self, Request, Response};
use agent::state::{OutboxState, Store, StoreError};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tunnel::link::LinkStats;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("reading the state store")]
    Store(#[from] StoreError),
    #[error("composing the mail: {0}")]
    Compose(String),
}

/// DNS and the peer's answer may take this long before the report goes without them.
const DNS_LIMIT: Duration = Duration::from_secs(30);
const PEER_LIMIT: Duration = Duration::from_secs(10);

/// What the agent knows that a report needs.
#[derive(Clone)]
pub struct Context {
    pub loaded: Arc<Loaded>,
    pub store: Store,
    pub roles: Roles,
    pub tunnel: watch::Receiver<LinkStats>,
    pub peer_view: watch::Receiver<PeerView>,
    /// Wakes the mail task to send at once.
    pub mail_now: Arc<Notify>,
    pub mailer: Arc<crate::mail::Mailer>,
}

/// Everything the report of `site` says, as of now.
pub async fn gather(ctx: &Context, site: &Site) -> Result<Facts, ReportError> {
    let config = &ctx.loaded.config;
    let now = chrono::Local::now();
    let role = ctx.roles.get(&site.name)?;
    let standby = role.standby(config, site).to_owned();
    let databases: Vec<agent::db::Report> = ctx
        .store
        .db_checks()
        .await?
        .into_iter()
        .filter(|r| r.site == site.name)
        .collect();
    let stats = ctx.tunnel.borrow().clone();
    let peer_agent = ctx.peer_view.borrow().reachable();
    let tunnel = Tunnel {
        peer: ctx.loaded.peer().name.clone(),
        up: tunnel_up(&stats),
        peer_agent,
        endpoint: stats.endpoint.map(|e| e.to_string()),
        last_handshake_secs: stats.since_handshake.map(|d| d.as_secs()),
        rx_bytes: stats.rx_bytes,
        tx_bytes: stats.tx_bytes,
    };
    let dns = match tokio::time::timeout(DNS_LIMIT, crate::dns::site_view(config, site)).await {
        Err(_) => Dns::Error(format!(
            "no answer within {}",
            humantime::format_duration(DNS_LIMIT)
        )),
        Ok(None) => Dns::NotConfigured,
        Ok(Some(Err(e))) => Dns::Error(e.to_string()),
        Ok(Some(Ok(rows))) => Dns::Records(
            rows.into_iter()
                .map(|(name, kind, values)| DnsRecord {
                    name,
                    kind: kind.to_string(),
                    values,
                })
                .collect(),
        ),
    };
    let failover_blockers = failover_blockers(ctx, site, &databases).await?;
    Ok(Facts {
        failover_blockers,
        site: site.name.clone(),
        cluster: config.cluster.name.clone(),
        node: ctx.loaded.me.clone(),
        epoch: role.epoch,
        generated_at: now.timestamp_millis(),
        utc_offset_secs: now.offset().local_minus_utc(),
        jobs: site.sync.iter().map(|j| j.name.clone()).collect(),
        pushes: ctx.store.latest_push_runs(&site.name).await?,
        // A day more than the chart shows: its first day starts at local midnight.
        recent: ctx
            .store
            .push_runs_since(
                &site.name,
                now.timestamp_millis() - (crate::report::CHART_DAYS as i64 + 1) * 86_400_000,
            )
            .await?,
        databases,
        tunnel,
        dns,
        space: standby_space(ctx, site, &standby).await,
        master: role.master,
        standby,
    })
}

/// What stops an automatic failover of `site` now, in the failover logic's own words:
/// the standby's data (`cluster::failover::data_guard`, the guard the failover itself
/// applies), a fence on this node, and the one-failover-until-ack rule.
async fn failover_blockers(
    ctx: &Context,
    site: &Site,
    databases: &[agent::db::Report],
) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = databases
        .iter()
        .filter_map(|r| crate::cluster::failover::data_guard(r, site.max_lag_on_failover))
        .filter_map(|g| g.problem())
        .collect();
    if let Some(why) = ctx.roles.fenced(&site.name) {
        out.push(why);
    }
    let (armed, _) = ctx.store.failover(&site.name).await?;
    if !armed {
        out.push(format!(
            "automatic failover is disarmed after the last one until `orch ack {}`",
            site.name
        ));
    }
    Ok(out)
}

/// Free space under the standby's sync targets: measured here when this node is the
/// standby, else asked of the peer's agent (which measures its own configured paths).
async fn standby_space(ctx: &Context, site: &Site, standby: &str) -> Result<Vec<Space>, String> {
    if site.sync.is_empty() {
        return Ok(Vec::new());
    }
    let spaces = if standby == ctx.loaded.me {
        super::space::target_spaces(&ctx.loaded, &site.name).map_err(|e| e.to_string())?
    } else {
        let peer = ctx.loaded.peer();
        let addr =
            std::net::SocketAddr::new(peer.tunnel_ip, ctx.loaded.config.cluster.control_port);
        let request = Request::Space {
            site: site.name.clone(),
        };
        match peer::call(addr, &ctx.loaded.me, &peer.name, &request, PEER_LIMIT).await {
            Ok(Response::Space(spaces)) => {
                peer::check_space(&spaces).map_err(|e| format!("{}'s answer: {e}", peer.name))?;
                spaces
            }
            Ok(other) => return Err(format!("unexpected answer from {}: {other:?}", peer.name)),
            Err(e) => {
                return Err(format!(
                    "the agent on {} does not answer: {}",
                    peer.name,
                    agent::error_chain(&e)
                ))
            }
        }
    };
    Ok(spaces
        .into_iter()
        .map(|s| Space {
            job: s.job,
            node: standby.to_owned(),
            path: s.path,
            free_bytes: s.free_bytes,
            total_bytes: s.total_bytes,
        })
        .collect())
}

/// Renders the report of `site`; with `queue`, puts it in the outbox and wakes the sender.
pub async fn make(ctx: &Context, site: &Site, queue: bool) -> Result<Made, ReportError> {
    let facts = gather(ctx, site).await?;
    let rendered = report::render(&facts);
    if !queue {
        return Ok(Made {
            report: rendered,
            message_id: None,
        });
    }
    let id = crate::mail::new_message_id(&ctx.loaded.me);
    let message = ctx
        .mailer
        .compose(&id, &rendered.subject, &rendered.text, Some(&rendered.html))
        .map_err(ReportError::Compose)?;
    crate::mail::queue(
        &ctx.store,
        &ctx.loaded.me,
        Some(&site.name),
        &id,
        &rendered.subject,
        &message,
        facts.generated_at,
    )
    .await?;
    let outcome = match rendered.status {
        report::Status::Ok => agent::state::Outcome::Ok,
        report::Status::Warn => agent::state::Outcome::Warn,
        report::Status::Fail => agent::state::Outcome::Fail,
    };
    let event = agent::state::NewEvent {
        at: facts.generated_at,
        site: Some(&site.name),
        kind: agent::state::EventKind::Report,
        outcome,
        summary: rendered.subject.trim_start_matches("[orch] "),
        detail: Some(serde_json::json!({ "message_id": id, "findings": rendered.findings })),
    };
    if let Err(e) = ctx.store.record(&event).await {
        tracing::warn!(
            error = agent::error_chain(&e),
            "Report not recorded in history"
        );
    }
    ctx.mail_now.notify_one();
    tracing::info!(site = %site.name, subject = %rendered.subject, "Report queued");
    Ok(Made {
        report: rendered,
        message_id: Some(id),
    })
}

/// Waits (up to `within`) until the message was sent, handed off, or one attempt failed.
pub async fn delivery(ctx: &Context, message_id: &str, within: Duration) -> Delivery {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match ctx.store.outbox_state(message_id).await {
            Ok(Some((OutboxState::Sent, _, _))) => return Delivery::Sent,
            Ok(Some((OutboxState::HandedOff, _, _))) => return Delivery::HandedOff,
            Ok(Some((OutboxState::Pending, attempts, error))) if attempts > 0 => {
                return Delivery::Pending(error.unwrap_or_default())
            }
            Ok(_) => {}
            Err(e) => return Delivery::Pending(agent::error_chain(&e)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Delivery::Pending(format!(
                "not attempted within {}",
                humantime::format_duration(within)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The agent's task: each site's report on its `report` schedule (local time), written
/// by the site's master.
pub async fn run(ctx: Context, stop: CancellationToken) -> Result<(), Infallible> {
    let mut tasks = tokio::task::JoinSet::new();
    for site in ctx
        .loaded
        .config
        .sites
        .iter()
        .filter(|s| s.report.is_some())
    {
        let (ctx, stop, name) = (ctx.clone(), stop.clone(), site.name.clone());
        tasks.spawn(async move {
            loop {
                let Some(site) = ctx.loaded.config.site(&name) else {
                    return;
                };
                let Some(schedule) = &site.report else { return };
                let now = chrono::Local::now();
                let Some(next) = schedule.next_after(&now) else {
                    tracing::warn!(site = %name, schedule = %schedule.text, "The report schedule never fires again");
                    return;
                };
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                match ctx.roles.get(&name) {
                    Ok(role) if !role.is_master(&ctx.loaded.me) => continue, // the master's agent reports it
                    Ok(_) => {
                        if let Err(e) = make(&ctx, site, true).await {
                            tracing::error!(site = %name, error = agent::error_chain(&e), "Report not made");
                        }
                    }
                    Err(e) => tracing::error!(site = %name, error = %e, "Report not made"),
                }
                // Never twice for the same minute, however fast the above was.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    stop.cancelled().await;
    tasks.shutdown().await;
    Ok(())
}
