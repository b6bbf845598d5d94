//! The agent's end of the control socket: answers `orch status`, `orch push`,
//! `orch report` and the push progress.

use super::failover;
use super::push::Pusher;
use super::reports;
use super::roles::Roles;
use crate::api::{
    AgentInfo, FailoverStatus, PeerSite, PeerStatus, Request, Role, SiteStatus, StatusReport,
    TunnelStatus, STATUS_SCHEMA,
};
use crate::cluster::peer::{tunnel_up, PeerView};
use crate::cluster::roles::SiteRole;
use crate::config::Loaded;
use agent::control;
use agent::state::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tunnel::device::TunnelHandle;

/// Answers the control socket.
pub struct Api {
    pub loaded: Arc<Loaded>,
    pub store: Store,
    pub roles: Roles,
    pub started: SystemTime,
    pub started_instant: Instant,
    pub tunnel: TunnelHandle,
    pub peer_view: watch::Receiver<PeerView>,
    pub reports: reports::Context,
    pub pusher: Pusher,
    /// Each site's failover state (the failover task publishes it).
    pub failover: watch::Receiver<BTreeMap<String, FailoverStatus>>,
    /// `orch ack` requests to the failover task.
    pub acks: mpsc::Sender<failover::AskRequest>,
    /// The lines of the switchover under way, and its caller's number (the failover task
    /// writes them).
    pub switchover: watch::Receiver<(u64, Vec<String>)>,
}

/// How long `orch report --send` waits for the first delivery attempt.
const SEND_WAIT: Duration = Duration::from_secs(60);

impl control::Handler for Api {
    type Request = Request;
    type Response = serde_json::Value;

    async fn handle(&self, request: Request) -> Result<serde_json::Value, String> {
        match request {
            Request::Status => {
                let report = self.status().await.map_err(|e| format!("{e:#}"))?;
                serde_json::to_value(report).map_err(|e| e.to_string())
            }
            Request::Report { site, send } => {
                let site = self
                    .loaded
                    .config
                    .site(&site)
                    .ok_or_else(|| format!("no site `{site}` in the config"))?;
                let made = reports::make(&self.reports, site, send)
                    .await
                    .map_err(|e| agent::error_chain(&e))?;
                let delivery = match &made.message_id {
                    Some(id) => Some(reports::delivery(&self.reports, id, SEND_WAIT).await),
                    None => None,
                };
                Ok(serde_json::json!({ "made": made, "delivery": delivery }))
            }
            Request::Push {
                site,
                job,
                dry_run,
                force,
            } => {
                let results = self
                    .pusher
                    .push(&site, job.as_deref(), dry_run, force)
                    .await
                    .map_err(|e| agent::error_chain(&e))?;
                serde_json::to_value(results).map_err(|e| e.to_string())
            }
            Request::PushProgress => {
                serde_json::to_value(self.pusher.progress()).map_err(|e| e.to_string())
            }
            Request::Ack { site } => self.ask(failover::Ask::Ack(site)).await,
            Request::Promote {
                site,
                dry_run,
                force,
                run,
            } => {
                self.ask(failover::Ask::Promote {
                    site,
                    dry_run,
                    force,
                    run,
                })
                .await
            }
            Request::PromoteProgress { run } => {
                // Only its own lines: not another's (a second `orch promote` waits, or is
                // refused, while one runs).
                let lines = match &*self.switchover.borrow() {
                    (r, lines) if *r == run && run != 0 => lines.clone(),
                    _ => Vec::new(),
                };
                serde_json::to_value(lines).map_err(|e| e.to_string())
            }
        }
    }
}

impl Api {
    /// Hands a request to the failover task and waits for its answer.
    async fn ask(&self, ask: failover::Ask) -> Result<serde_json::Value, String> {
        let (tx, rx) = oneshot::channel();
        self.acks
            .send((ask, tx))
            .await
            .map_err(|_| "the agent's failover task does not run".to_owned())?;
        let text = rx
            .await
            .map_err(|_| "the agent's failover task stopped".to_owned())??;
        Ok(serde_json::Value::String(text))
    }

    pub(super) async fn status(&self) -> anyhow::Result<StatusReport> {
        let config = &self.loaded.config;
        let me = &self.loaded.me;
        let mut sites = Vec::new();
        for site in &config.sites {
            let SiteRole { master, epoch } = self.roles.get(&site.name)?;
            let pushes = self.store.latest_push_runs(&site.name).await?;
            sites.push(SiteStatus {
                pushes,
                name: site.name.clone(),
                role: if &master == me {
                    Role::Master
                } else {
                    Role::Standby
                },
                master,
                primary: site.primary.clone(),
                peer: self.loaded.peer().name.clone(),
                epoch,
                failover: site.failover,
                failover_state: self.failover.borrow().get(&site.name).cloned(),
            });
        }
        Ok(StatusReport {
            schema: STATUS_SCHEMA,
            node: me.clone(),
            cluster: config.cluster.name.clone(),
            agent: AgentInfo {
                pid: std::process::id(),
                orch_version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at: humantime::format_rfc3339_seconds(self.started).to_string(),
                uptime_secs: self.started_instant.elapsed().as_secs(),
                state_dir: self.loaded.me().state_dir.display().to_string(),
            },
            tunnel: self.tunnel_status(),
            peer: self.peer_status(),
            sites,
            databases: self.store.db_checks().await?,
            outbox: self.store.outbox_counts().await?,
        })
    }

    fn peer_status(&self) -> PeerStatus {
        let view = self.peer_view.borrow().clone();
        let age = view.last_contact.map(|t| t.elapsed());
        let reachable = view.reachable();
        let heartbeat = view.heartbeat.unwrap_or_default();
        PeerStatus {
            node: self.loaded.peer().name.clone(),
            reachable,
            last_contact_secs: age.map(|a| a.as_secs()),
            our_public_endpoint: heartbeat.observed_endpoint.map(|e| e.to_string()),
            sites: heartbeat
                .sites
                .into_iter()
                .map(|(name, c)| PeerSite {
                    name,
                    master: c.master,
                    epoch: c.epoch,
                })
                .collect(),
            last_error: view.last_error,
        }
    }

    fn tunnel_status(&self) -> TunnelStatus {
        let stats = self.tunnel.stats();
        let (me, peer) = (self.loaded.me(), self.loaded.peer());
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
        TunnelStatus {
            interface: me.interface.clone(),
            address: me.tunnel_ip.to_string(),
            listen_port: me.listen_port,
            peer: peer.name.clone(),
            peer_address: peer.tunnel_ip.to_string(),
            endpoint: stats.endpoint.map(|e| e.to_string()),
            up: tunnel_up(&stats),
            suspect: stats.suspect,
            last_handshake_secs: secs(stats.since_handshake),
            last_received_secs: secs(stats.since_authenticated_rx),
            rx_bytes: stats.rx_bytes,
            tx_bytes: stats.tx_bytes,
            handshakes: stats.handshakes,
            roams: stats.roams,
            rejected: stats.rejected,
        }
    }
}

/// systemd's watchdog (`WatchdogSec=` in the unit): `WATCHDOG=1` every `every` while the
/// agent is healthy: the control socket answers a status request (the accept loop, the
/// handlers and the state store all work) and the tunnel thread published its figures
/// since the last time (it does every 500 ms). A hung agent stops sending, and systemd
/// kills and restarts it.
pub async fn watchdog(
    notifier: Arc<agent::sdnotify::Notifier>,
    every: Duration,
    socket: std::path::PathBuf,
    mut tunnel: watch::Receiver<tunnel::link::LinkStats>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tunnel.mark_changed(); // the first tick finds the tunnel's figures "new"
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // Below 1 s the tunnel's 500 ms figures may not have moved; only the socket counts.
        let tunnel_ok = every < Duration::from_secs(1) || tunnel.has_changed().unwrap_or(false);
        tunnel.borrow_and_update();
        let asked = control::call::<_, serde_json::Value>(&socket, &Request::Status, every).await;
        match (tunnel_ok, asked) {
            (true, Ok(_)) => {
                if let Err(error) = notifier.notify("WATCHDOG=1") {
                    tracing::warn!(%error, "Could not notify systemd's watchdog");
                }
            }
            (false, _) => {
                tracing::warn!("Watchdog: the tunnel thread published nothing since the last check; not notifying systemd")
            }
            (_, Err(error)) => tracing::warn!(
                error = agent::error_chain(&error),
                "Watchdog: the control socket does not answer; not notifying systemd"
            ),
        }
    }
}
