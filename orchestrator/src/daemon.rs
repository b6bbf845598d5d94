//! `orch agent`: builds the agent's parts from the config, runs them under the
//! supervisor, and stops them all on SIGTERM or SIGINT.

use crate::api::{
    AgentInfo, PeerStatus, Request, Role, SiteStatus, StatusReport, TunnelStatus, STATUS_SCHEMA,
};
use crate::config::Loaded;
use crate::peering::{PeerView, Peering};
use agent::control;
use agent::state::{NewEvent, Outcome, Store};
use agent::supervisor::{Shutdown, Supervisor};
use agent::unix_millis;
use anyhow::Context as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tunnel::link::LinkStats;

/// Everything must have stopped this long after a signal (systemd waits 90 s; users less).
const GRACE: Duration = Duration::from_secs(4);
pub const SOCKET: &str = "orch.sock";

pub async fn run(loaded: Loaded) -> anyhow::Result<()> {
    // Before anything can answer: whoever sees the agent up may signal it at once.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let loaded = Arc::new(loaded);
    let me = loaded.me();
    let store = Store::open(&me.state_dir)
        .await
        .context("opening the state store")?;
    let now = unix_millis(SystemTime::now());
    for site in &loaded.config.sites {
        let state = store.ensure_site(&site.name, &site.primary, now).await?;
        tracing::info!(site = %site.name, master = %state.master, epoch = state.epoch, "Site loaded");
    }

    let socket = me.state_dir.join(SOCKET);
    let listener = control::bind(&socket)?;
    let supervisor = Supervisor::new();
    // The tunnel and the peer port need the socket's cleanup if they cannot start.
    let (tunnel, tunnel_stats, peer_listener) =
        match start_network(&loaded, supervisor.token().child_token()).await {
            Ok(started) => started,
            Err(e) => {
                supervisor.token().cancel(); // a tunnel thread that did start stops
                let _ = std::fs::remove_file(&socket);
                return Err(e);
            }
        };
    let (view_tx, peer_view) = watch::channel(PeerView::default());
    let mail_now = Arc::new(tokio::sync::Notify::new());
    let peering = Peering {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        tunnel: tunnel_stats.clone(),
        view: view_tx,
        mail_now: Arc::clone(&mail_now),
    };
    let pid = std::process::id();
    record(
        &store,
        Outcome::Info,
        &format!(
            "agent started (orch {}, pid {pid})",
            env!("CARGO_PKG_VERSION")
        ),
    )
    .await;

    let mailer = match crate::mail::Mailer::new(&loaded.config.mail, &me.state_dir) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            supervisor.token().cancel();
            let _ = std::fs::remove_file(&socket);
            anyhow::bail!("mail: {e}");
        }
    };
    let reports = crate::reports::Context {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        tunnel: tunnel_stats.clone(),
        peer_view: peer_view.clone(),
        mail_now: Arc::clone(&mail_now),
        mailer: Arc::clone(&mailer),
    };
    let alerter =
        crate::alerts::Alerter::new(Arc::clone(&loaded), store.clone(), Arc::clone(&mailer));
    let pusher = crate::push::Pusher {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        alerter: alerter.clone(),
        reports: reports.clone(),
        current: Arc::new(std::sync::Mutex::new(None)),
        one: Arc::new(tokio::sync::Mutex::new(())),
    };
    let api = Arc::new(Api {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        started: SystemTime::now(),
        started_instant: Instant::now(),
        tunnel: tunnel_stats,
        peer_view: peer_view.clone(),
        reports: reports.clone(),
        pusher: pusher.clone(),
    });
    // The tunnel runs on its own thread and stops with the supervisor's token.
    supervisor.spawn("tunnel", move |_stop| async move {
        tunnel.wait().await.map_err(|e| format!("tunnel: {e}"))
    });
    let (me_name, peer) = (loaded.me.clone(), loaded.peer().clone());
    let handler = Arc::new(peering.clone());
    supervisor.spawn("peer-rpc", move |stop| async move {
        agent::peer::serve(
            peer_listener,
            me_name,
            peer.name,
            peer.tunnel_ip,
            handler,
            stop,
        )
        .await;
        Ok(())
    });
    if loaded.me().ddns.is_some() {
        let (loaded, store, view) = (Arc::clone(&loaded), store.clone(), peer_view.clone());
        supervisor.spawn("ddns", move |stop| {
            crate::ddns::run(loaded, store, view, stop)
        });
    }
    if loaded.config.sites.iter().any(|s| !s.databases.is_empty()) {
        let (loaded, store, alerter) = (Arc::clone(&loaded), store.clone(), alerter.clone());
        supervisor.spawn("databases", move |stop| {
            crate::dbcheck::run(loaded, store, alerter, stop)
        });
    }
    {
        let (loaded, store, now) = (Arc::clone(&loaded), store.clone(), Arc::clone(&mail_now));
        supervisor.spawn("mail", move |stop| {
            crate::mail::run(loaded, store, mailer, now, stop)
        });
    }
    {
        let (alerter, tunnel) = (alerter.clone(), reports.tunnel.clone());
        supervisor.spawn("alerts", move |stop| {
            crate::alerts::run(alerter, tunnel, stop)
        });
    }
    {
        let reports = reports.clone();
        supervisor.spawn("reports", move |stop| crate::reports::run(reports, stop));
    }
    {
        let pusher = pusher.clone();
        supervisor.spawn("pushes", move |stop| {
            crate::push::run_schedule(pusher, stop)
        });
    }
    for site in &loaded.config.sites {
        for job in site.sync.iter().filter(|j| j.watch) {
            let Some(root) = job.paths.get(&loaded.me).cloned() else {
                continue;
            };
            let (pusher, site, job) = (pusher.clone(), site.name.clone(), job.name.clone());
            supervisor.spawn("watch", move |stop| {
                crate::push::run_watch(pusher, site, job, root, stop)
            });
        }
    }
    supervisor.spawn("heartbeat", move |stop| async move {
        peering.run_heartbeats(stop).await;
        Ok(())
    });
    supervisor.spawn("control", move |stop| async move {
        control::serve(listener, socket, api, stop).await;
        Ok(())
    });
    tracing::info!(node = %loaded.me, cluster = %loaded.config.cluster.name, pid, "Agent running");

    let token = supervisor.token();
    let failed = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM received, stopping"); false }
        _ = int.recv() => { tracing::info!("SIGINT received, stopping"); false }
        () = token.cancelled() => true,
    };
    let shutdown = supervisor.shutdown(GRACE).await;
    if let Shutdown::TimedOut { remaining } = shutdown {
        tracing::warn!(remaining, "Some tasks did not stop in time; leaving them");
    }
    let outcome = if failed { Outcome::Fail } else { Outcome::Info };
    record(
        &store,
        outcome,
        if failed {
            "agent stopped after a task failed"
        } else {
            "agent stopped"
        },
    )
    .await;
    store.close().await;
    if failed {
        anyhow::bail!("a task of the agent failed (see the log above)");
    }
    tracing::info!("Agent stopped");
    Ok(())
}

async fn record(store: &Store, outcome: Outcome, summary: &str) {
    let event = NewEvent {
        at: unix_millis(SystemTime::now()),
        site: None,
        kind: "agent",
        outcome,
        summary,
        detail: None,
    };
    if let Err(error) = store.record(&event).await {
        tracing::warn!(
            error = agent::error_chain(&error),
            "Could not record an event in the state store"
        );
    }
}

/// Starts the tunnel (on its own thread) and binds peer RPC on the tunnel address.
async fn start_network(
    loaded: &Loaded,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<(
    tunnel::device::TunnelThread,
    watch::Receiver<LinkStats>,
    tokio::net::TcpListener,
)> {
    let (tunnel, stats) = tunnel::device::spawn(tunnel_config(loaded)?, stop)
        .await
        .context("starting the tunnel")?;
    let (ip, port) = (loaded.me().tunnel_ip, loaded.config.cluster.control_port);
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("binding peer RPC on {ip}:{port} (is control_port in use?)"))?;
    Ok((tunnel, stats, listener))
}

/// The tunnel as the config describes it.
fn tunnel_config(loaded: &Loaded) -> anyhow::Result<tunnel::device::TunnelConfig> {
    let (me, peer) = (loaded.me(), loaded.peer());
    let private_key =
        crate::config::read_private_key(&me.private_key_file).map_err(|e| anyhow::anyhow!(e))?;
    Ok(tunnel::device::TunnelConfig {
        link: tunnel::link::LinkConfig {
            private_key,
            peer_public_key: peer.public_key,
            peer_tunnel_ip: peer.tunnel_ip,
            keepalive: loaded.config.cluster.keepalive,
            peer_endpoint: peer.endpoint.as_ref().map(|e| (e.host.clone(), e.port)),
        },
        interface: me.interface.clone(),
        address: me.tunnel_ip,
        prefix: loaded.config.cluster.network.prefix_len(),
        listen_port: me.listen_port,
    })
}

/// Answers the control socket.
struct Api {
    loaded: Arc<Loaded>,
    store: Store,
    started: SystemTime,
    started_instant: Instant,
    tunnel: watch::Receiver<LinkStats>,
    peer_view: watch::Receiver<PeerView>,
    reports: crate::reports::Context,
    pusher: crate::push::Pusher,
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
                let made = crate::reports::make(&self.reports, site, send).await?;
                let delivery = match &made.message_id {
                    Some(id) => Some(crate::reports::delivery(&self.reports, id, SEND_WAIT).await),
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
                    .await?;
                serde_json::to_value(results).map_err(|e| e.to_string())
            }
            Request::PushProgress => {
                serde_json::to_value(self.pusher.progress()).map_err(|e| e.to_string())
            }
        }
    }
}

impl Api {
    async fn status(&self) -> anyhow::Result<StatusReport> {
        let config = &self.loaded.config;
        let me = &self.loaded.me;
        let mut sites = Vec::new();
        for site in &config.sites {
            let state = self.store.site_state(&site.name).await?;
            let (master, epoch) = state.map_or((site.primary.clone(), 0), |s| (s.master, s.epoch));
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
                .map(|(name, c)| crate::api::PeerSite {
                    name,
                    master: c.master,
                    epoch: c.epoch,
                })
                .collect(),
            last_error: view.last_error,
        }
    }

    fn tunnel_status(&self) -> TunnelStatus {
        let stats = self.tunnel.borrow().clone();
        let (me, peer) = (self.loaded.me(), self.loaded.peer());
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
        TunnelStatus {
            interface: me.interface.clone(),
            address: me.tunnel_ip.to_string(),
            listen_port: me.listen_port,
            peer: peer.name.clone(),
            peer_address: peer.tunnel_ip.to_string(),
            endpoint: stats.endpoint.map(|e| e.to_string()),
            up: crate::peering::tunnel_up(&stats),
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
