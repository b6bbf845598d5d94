//! `orch agent`: builds the agent's parts from the config, runs them under the
//! supervisor, and stops them all on SIGTERM or SIGINT.

use crate::api::{AgentInfo, Request, Role, SiteStatus, StatusReport, STATUS_SCHEMA};
use crate::config::Loaded;
use agent::control;
use agent::state::{NewEvent, Outcome, Store};
use agent::supervisor::{Shutdown, Supervisor};
use agent::unix_millis;
use anyhow::Context as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::{signal, SignalKind};

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

    let supervisor = Supervisor::new();
    let api = Arc::new(Api {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        started: SystemTime::now(),
        started_instant: Instant::now(),
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

/// Answers the control socket.
struct Api {
    loaded: Arc<Loaded>,
    store: Store,
    started: SystemTime,
    started_instant: Instant,
}

impl control::Handler for Api {
    type Request = Request;
    type Response = serde_json::Value;

    async fn handle(&self, request: Request) -> Result<serde_json::Value, String> {
        match request {
            Request::Status => {
                let report = self.status().await.map_err(|e| format!("{e:#}"))?;
                serde_json::to_value(report).map_err(|e| e.to_string())
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
            sites.push(SiteStatus {
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
            sites,
        })
    }
}
