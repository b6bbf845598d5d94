//! `orch agent`: builds the agent's parts from the config, runs them under the
//! supervisor, and stops them all on SIGTERM or SIGINT.
//!
//! The daemon's tasks, one file each, and who they depend on (no file imports one above
//! it in this list):
//! - [`control`]: the control socket (`orch status`, `push`, `report`);
//! - [`peering`]: peer RPC: heartbeats, the peer's mail and space requests, its pushes
//!   (handed to [`receive`]);
//! - [`push`]: the sender, on schedule, on change and on demand; then [`reports`];
//! - [`reports`]: the nightly report (free space from [`space`]);
//! - [`dbcheck`]: database checks and the heartbeat row; then [`alerts`];
//! - [`failover`]: each site's failover on its standby (probes, the DNS lock, promote
//!   playbooks) and its records kept current on its master;
//! - [`ddns`], [`outbox`] (mail), [`alerts`] (the tunnel-down alert and reminders),
//!   [`probes`] (health at a chosen address, witnesses: what failover observes);
//! - [`roles`]: the one owner of every site's role, read by all of the above.

pub mod alerts;
pub mod control;
pub mod dbcheck;
pub mod ddns;
pub mod failover;
pub mod metrics;
pub mod outbox;
pub mod peering;
pub mod probes;
pub mod push;
pub mod receive;
pub mod reports;
pub mod roles;
pub mod space;

use crate::cluster::peer::PeerView;
use crate::config::Loaded;
use agent::control as control_socket;
use agent::state::{NewEvent, Outcome, Store};
use agent::supervisor::{Shutdown, Supervisor};
use agent::unix_millis;
use anyhow::Context as _;
use peering::Peering;
use roles::Roles;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;
use tunnel::device::TunnelHandle;

/// Everything must have stopped this long after a signal (systemd waits 90 s; users less).
const GRACE: Duration = Duration::from_secs(4);

pub async fn run(loaded: Loaded) -> anyhow::Result<()> {
    raise_open_files();
    agent::memory::limit_arenas();
    // Before anything can answer: whoever sees the agent up may signal it at once.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let loaded = Arc::new(loaded);
    let me = loaded.me();
    let store = Store::open(&me.state_dir)
        .await
        .context("opening the state store")?;
    let roles = Roles::load(store.clone(), &loaded.config)
        .await
        .context("loading the sites' roles")?;

    let socket = me.state_dir.join(crate::api::SOCKET);
    let listener = control_socket::bind(&socket)?;
    let socket_path = socket.clone();
    let supervisor = Supervisor::new();
    // The tunnel and the peer port need the socket's cleanup if they cannot start.
    let (tunnel_thread, tunnel, peer_listener) =
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
    let receiver = Arc::new(receive::Receiver::new(
        Arc::clone(&loaded),
        store.clone(),
        roles.clone(),
    ));
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
    let reports = reports::Context {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        roles: roles.clone(),
        tunnel: tunnel.subscribe(),
        peer_view: peer_view.clone(),
        mail_now: Arc::clone(&mail_now),
        mailer: Arc::clone(&mailer),
    };
    let alerter = alerts::Alerter::new(Arc::clone(&loaded), store.clone(), Arc::clone(&mailer));
    let pusher = push::Pusher {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        roles: roles.clone(),
        alerter: alerter.clone(),
        reports: reports.clone(),
        current: Arc::new(std::sync::Mutex::new(None)),
        one: Arc::new(tokio::sync::Mutex::new(())),
    };
    let (failover_status, failover_view) = watch::channel(Default::default());
    let (switchover_tx, switchover_view) = watch::channel((0, Vec::new()));
    let (acks, ack_requests) = tokio::sync::mpsc::channel(4);
    let peering = Peering {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        roles: roles.clone(),
        receiver,
        tunnel: tunnel.subscribe(),
        view: view_tx,
        mail_now: Arc::clone(&mail_now),
        pusher: pusher.clone(),
        asks: acks.clone(),
        alerter: alerter.clone(),
    };
    let api = Arc::new(control::Api {
        loaded: Arc::clone(&loaded),
        store: store.clone(),
        roles: roles.clone(),
        started: SystemTime::now(),
        started_instant: Instant::now(),
        tunnel: tunnel.clone(),
        peer_view: peer_view.clone(),
        reports: reports.clone(),
        pusher: pusher.clone(),
        failover: failover_view,
        acks,
        switchover: switchover_view,
    });
    // The tunnel runs on its own thread and stops with the supervisor's token.
    supervisor.spawn("tunnel", move |_stop| tunnel_thread.wait());
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
        Ok::<(), std::convert::Infallible>(())
    });
    let ddns_now = Arc::new(tokio::sync::Notify::new());
    if loaded.me().ddns.is_some() {
        let (loaded, store, view) = (Arc::clone(&loaded), store.clone(), peer_view.clone());
        let now = Arc::clone(&ddns_now);
        supervisor.spawn("ddns", move |stop| {
            ddns::run(loaded, store, view, now, stop)
        });
    }
    if loaded.config.sites.iter().any(|s| !s.databases.is_empty()) {
        let (loaded, store, roles, alerter) = (
            Arc::clone(&loaded),
            store.clone(),
            roles.clone(),
            alerter.clone(),
        );
        supervisor.spawn("databases", move |stop| {
            dbcheck::run(loaded, store, roles, alerter, stop)
        });
    }
    {
        let (loaded, store, now) = (Arc::clone(&loaded), store.clone(), Arc::clone(&mail_now));
        supervisor.spawn("mail", move |stop| {
            outbox::run(loaded, store, mailer, now, stop)
        });
    }
    {
        let (alerter, tunnel) = (alerter.clone(), tunnel.subscribe());
        supervisor.spawn("alerts", move |stop| alerts::run(alerter, tunnel, stop));
    }
    {
        let task = failover::Task {
            loaded: Arc::clone(&loaded),
            store: store.clone(),
            roles: roles.clone(),
            alerter: alerter.clone(),
            peer_view: peer_view.clone(),
            tunnel: tunnel.clone(),
            status: failover_status,
            ddns_now,
            progress: switchover_tx,
            switchovers: tokio::sync::Mutex::new(()),
            agent_probe: tokio::sync::Mutex::new(None),
        };
        supervisor.spawn("failover", move |stop| {
            failover::run(task, ack_requests, stop)
        });
    }
    {
        let reports = reports.clone();
        supervisor.spawn("reports", move |stop| reports::run(reports, stop));
    }
    {
        let pusher = pusher.clone();
        supervisor.spawn("pushes", move |stop| push::run_schedule(pusher, stop));
    }
    for site in &loaded.config.sites {
        for job in site.sync.iter().filter(|j| j.watch) {
            let Some(root) = job.paths.get(&loaded.me).cloned() else {
                continue;
            };
            let (pusher, site, job) = (pusher.clone(), site.name.clone(), job.name.clone());
            supervisor.spawn("watch", move |stop| {
                push::run_watch(pusher, site, job, root, stop)
            });
        }
    }
    supervisor.spawn("heartbeat", move |stop| async move {
        peering.run_heartbeats(stop).await;
        Ok::<(), std::convert::Infallible>(())
    });
    if let Some(addr) = loaded.me().metrics {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let api = Arc::clone(&api);
                supervisor.spawn("metrics", move |stop| metrics::serve(listener, api, stop));
                tracing::info!(%addr, "Serving Prometheus metrics at /metrics");
            }
            Err(e) => {
                supervisor.token().cancel();
                let _ = std::fs::remove_file(&socket);
                return Err(anyhow::anyhow!(e).context(format!(
                    "binding the metrics endpoint on {addr} (is `metrics` of node {} in use?)",
                    loaded.me
                )));
            }
        }
    }
    supervisor.spawn("control", move |stop| async move {
        control_socket::serve(listener, socket, api, stop).await;
        Ok::<(), std::convert::Infallible>(())
    });
    tracing::info!(node = %loaded.me, cluster = %loaded.config.cluster.name, pid, "Agent running");
    // Under systemd (`Type=notify`): ready now that the tunnel and the control socket are
    // up, and the watchdog fed while the agent is healthy.
    let notifier = agent::sdnotify::Notifier::from_env()
        .inspect_err(
            |error| tracing::warn!(%error, "NOTIFY_SOCKET is unusable; not notifying systemd"),
        )
        .ok()
        .flatten()
        .map(Arc::new);
    if let Some(notifier) = &notifier {
        if let Err(error) = notifier.notify("READY=1") {
            tracing::warn!(%error, "Could not notify systemd that the agent is ready");
        }
        if let Some(every) = notifier.watchdog_every() {
            let (notifier, socket, tunnel) =
                (Arc::clone(notifier), socket_path, tunnel.subscribe());
            supervisor.spawn("watchdog", move |stop| {
                control::watchdog(notifier, every, socket, tunnel, stop)
            });
        }
    }

    let token = supervisor.token();
    let failed = tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM received, stopping"); false }
        _ = int.recv() => { tracing::info!("SIGINT received, stopping"); false }
        () = token.cancelled() => true,
    };
    if let Some(notifier) = &notifier {
        let _ = notifier.notify("STOPPING=1");
    }
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

/// Raises the open-file soft limit to the hard one (often 1 024 and 524 288): pushes of
/// big trees hold many files and directories open. The unit sets `LimitNOFILE` too; the
/// receiver stays under 1 024 either way.
fn raise_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current < now.maximum || (now.current.is_some() && now.maximum.is_none()) {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = ?now.current, to = ?now.maximum, "Open-file limit raised")
            }
            Err(e) => tracing::warn!(error = %e, "The open-file limit could not be raised"),
        }
    }
}

async fn record(store: &Store, outcome: Outcome, summary: &str) {
    let event = NewEvent {
        at: unix_millis(SystemTime::now()),
        site: None,
        kind: agent::state::EventKind::Agent,
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
    TunnelHandle,
    tokio::net::TcpListener,
)> {
    let (tunnel, handle) = tunnel::device::spawn(tunnel_config(loaded)?, stop)
        .await
        .context("starting the tunnel")?;
    let (ip, port) = (loaded.me().tunnel_ip, loaded.config.cluster.control_port);
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("binding peer RPC on {ip}:{port} (is control_port in use?)"))?;
    Ok((tunnel, handle, listener))
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
            own_tunnel_ip: me.tunnel_ip,
            keepalive: loaded.config.cluster.keepalive,
            peer_endpoint: peer.endpoint.as_ref().map(|e| (e.host.clone(), e.port)),
        },
        interface: me.interface.clone(),
        address: me.tunnel_ip,
        prefix: loaded.config.cluster.network.prefix_len(),
        listen_port: me.listen_port,
    })
}
