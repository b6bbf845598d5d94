//! The optional Prometheus endpoint (`metrics = "127.0.0.1:9477"` in the node's section):
//! `GET /metrics` answers with what `orch status` knows, in Prometheus' text format
//! 0.0.4 — the tunnel, the peer, each job's last push, each database's replication, each
//! site's role and failover state, the outbox. Rendering ([`render`]) is a pure function
//! of the status report; the server is a minimal HTTP/1.1 responder (one request per
//! connection, bounded head, deadline, a few connections at a time).

use super::control::Api;
use crate::api::{Role, StatusReport};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A request head longer than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const DEADLINE: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait.
const CONNECTIONS: usize = 4;

pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return Ok(());
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "Metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            if let Err(error) = tokio::time::timeout(DEADLINE, answer(stream, &api)).await {
                tracing::debug!(%error, "Metrics: a client took too long");
            }
            drop(slot);
        });
    }
}

async fn answer(mut stream: TcpStream, api: &Api) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            let _ = respond(&mut stream, "431 Request Header Fields Too Large", "").await;
            return;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    if method != b"GET" && method != b"HEAD" {
        let _ = respond(&mut stream, "405 Method Not Allowed", "").await;
        return;
    }
    if path != b"/metrics" {
        let _ = respond(&mut stream, "404 Not Found", "only /metrics here\n").await;
        return;
    }
    let body = match api.status().await {
        Ok(status) => render(&status),
        Err(error) => {
            let text = format!(
                "# the agent's status failed: {}\n",
                agent::error_chain(&*error)
            );
            let _ = respond(&mut stream, "500 Internal Server Error", &text).await;
            return;
        }
    };
    let body = if method == b"HEAD" {
        String::new()
    } else {
        body
    };
    let _ = respond(&mut stream, "200 OK", &body).await;
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The metric families, in the exposition format.
pub fn render(s: &StatusReport) -> String {
    let mut m = Metrics::default();
    let node = [("node", s.node.as_str())];
    m.family(
        "orch_agent_info",
        "gauge",
        "The agent: node, cluster and orch version (always 1).",
    );
    m.sample(
        "orch_agent_info",
        &[
            ("node", &s.node),
            ("cluster", &s.cluster),
            ("version", &s.agent.orch_version),
        ],
        1.0,
    );
    m.gauge(
        "orch_agent_uptime_seconds",
        "Seconds since the agent started.",
        &node,
        s.agent.uptime_secs as f64,
    );

    let t = &s.tunnel;
    let peer = [("peer", t.peer.as_str())];
    m.gauge(
        "orch_tunnel_up",
        "1 when a handshake completed within 180 s and the peer is not silent.",
        &peer,
        f64::from(u8::from(t.up)),
    );
    m.family(
        "orch_tunnel_last_handshake_age_seconds",
        "gauge",
        "Seconds since the last completed WireGuard handshake (absent before the first).",
    );
    if let Some(age) = t.last_handshake_secs {
        m.sample("orch_tunnel_last_handshake_age_seconds", &peer, age as f64);
    }
    m.family(
        "orch_tunnel_last_received_age_seconds",
        "gauge",
        "Seconds since the last authenticated packet from the peer (absent before the first).",
    );
    if let Some(age) = t.last_received_secs {
        m.sample("orch_tunnel_last_received_age_seconds", &peer, age as f64);
    }
    m.counter(
        "orch_tunnel_received_bytes_total",
        "Bytes received through the tunnel since the agent started.",
        &peer,
        t.rx_bytes as f64,
    );
    m.counter(
        "orch_tunnel_sent_bytes_total",
        "Bytes sent through the tunnel since the agent started.",
        &peer,
        t.tx_bytes as f64,
    );
    m.counter(
        "orch_tunnel_handshakes_total",
        "Completed WireGuard handshakes since the agent started.",
        &peer,
        t.handshakes as f64,
    );
    m.counter(
        "orch_tunnel_roams_total",
        "Times the peer's endpoint changed since the agent started.",
        &peer,
        t.roams as f64,
    );
    m.counter(
        "orch_tunnel_rejected_packets_total",
        "Datagrams that failed authentication and packets refused by cryptokey routing.",
        &peer,
        t.rejected as f64,
    );
    m.gauge(
        "orch_peer_reachable",
        "1 when a heartbeat from the peer's agent went through within 15 s.",
        &peer,
        f64::from(u8::from(s.peer.reachable)),
    );

    m.family(
        "orch_push_last_success",
        "gauge",
        "1 when the job's last push ended ok, 0 otherwise.",
    );
    m.family(
        "orch_push_last_timestamp_seconds",
        "gauge",
        "When the job's last push started (Unix time).",
    );
    m.family(
        "orch_push_last_duration_seconds",
        "gauge",
        "How long the job's last push took.",
    );
    m.family(
        "orch_push_last_sent_bytes",
        "gauge",
        "Bytes the job's last push sent (after deltas and compression).",
    );
    m.family(
        "orch_push_last_tree_bytes",
        "gauge",
        "Bytes of file content in the job's tree at its last push.",
    );
    m.family(
        "orch_push_last_changed_files",
        "gauge",
        "Entries the job's last push created or changed.",
    );
    m.family(
        "orch_push_last_deletions",
        "gauge",
        "Entries the job's last push deleted.",
    );
    for site in &s.sites {
        for p in &site.pushes {
            let l = [("site", p.site.as_str()), ("job", p.job.as_str())];
            let ok = p.outcome == agent::state::Outcome::Ok;
            m.sample("orch_push_last_success", &l, f64::from(u8::from(ok)));
            m.sample(
                "orch_push_last_timestamp_seconds",
                &l,
                p.started_at as f64 / 1000.0,
            );
            m.sample(
                "orch_push_last_duration_seconds",
                &l,
                p.duration_ms as f64 / 1000.0,
            );
            m.sample("orch_push_last_sent_bytes", &l, p.bytes_sent as f64);
            m.sample("orch_push_last_tree_bytes", &l, p.bytes_total as f64);
            m.sample("orch_push_last_changed_files", &l, p.files_changed as f64);
            m.sample("orch_push_last_deletions", &l, p.deletions as f64);
        }
    }

    m.family(
        "orch_database_healthy",
        "gauge",
        "1 when the last replication check found the database healthy (0: lagging or broken).",
    );
    m.family(
        "orch_database_replication_lag_seconds",
        "gauge",
        "Replay lag (PostgreSQL) or Seconds_Behind_Master (MariaDB/MySQL) at the last check.",
    );
    m.family(
        "orch_database_replication_lag_bytes",
        "gauge",
        "WAL bytes the standby has not replayed (PostgreSQL) at the last check.",
    );
    m.family(
        "orch_database_heartbeat_age_seconds",
        "gauge",
        "Age of orch's heartbeat row on the standby, by the master's clock, at the last check.",
    );
    m.family(
        "orch_database_check_timestamp_seconds",
        "gauge",
        "When the database was last checked (Unix time).",
    );
    for d in &s.databases {
        let engine = match d.engine {
            agent::db::Engine::Postgres => "postgres",
            agent::db::Engine::Mysql => "mysql",
        };
        let l = [
            ("site", d.site.as_str()),
            ("database", d.name.as_str()),
            ("engine", engine),
        ];
        let healthy = d.verdict == agent::db::Verdict::Healthy;
        m.sample("orch_database_healthy", &l, f64::from(u8::from(healthy)));
        let f = &d.figures;
        let lag = f.replay_lag_seconds.or(f.seconds_behind.map(|s| s as f64));
        if let Some(lag) = lag {
            m.sample("orch_database_replication_lag_seconds", &l, lag);
        }
        if let Some(bytes) = f.lag_bytes {
            m.sample("orch_database_replication_lag_bytes", &l, bytes as f64);
        }
        if let Some(age) = f.heartbeat_age_ms {
            m.sample(
                "orch_database_heartbeat_age_seconds",
                &l,
                age as f64 / 1000.0,
            );
        }
        m.sample(
            "orch_database_check_timestamp_seconds",
            &l,
            d.checked_at as f64 / 1000.0,
        );
    }

    m.family(
        "orch_site_master",
        "gauge",
        "1 when this node is the site's master, 0 when its standby.",
    );
    m.family(
        "orch_site_epoch",
        "gauge",
        "The site's epoch (raised by every failover and switchover).",
    );
    m.family("orch_failover_state", "gauge", "The site's failover state on this node: 1 for the current one (master, watching, counting, holding, taking-over, failed-over, handing-over, fenced, rejoining, rejoined, standby, undoing-switchover, off).");
    m.family(
        "orch_failover_armed",
        "gauge",
        "1 when an automatic failover of the site is possible (0 after one, until `orch ack`).",
    );
    for site in &s.sites {
        let l = [("site", site.name.as_str())];
        m.sample(
            "orch_site_master",
            &l,
            f64::from(u8::from(site.role == Role::Master)),
        );
        m.sample("orch_site_epoch", &l, site.epoch as f64);
        if let Some(f) = &site.failover_state {
            m.sample(
                "orch_failover_state",
                &[("site", &site.name), ("state", &f.state)],
                1.0,
            );
            m.sample("orch_failover_armed", &l, f64::from(u8::from(f.armed)));
        }
    }

    m.family(
        "orch_outbox_messages",
        "gauge",
        "Mail in this node's outbox, by state.",
    );
    for (state, n) in [
        ("pending", s.outbox.pending),
        ("sent", s.outbox.sent),
        ("handed_off", s.outbox.handed_off),
    ] {
        m.sample("orch_outbox_messages", &[("state", state)], n as f64);
    }
    m.text
}

#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, labels, value);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, "counter", help);
        self.sample(name, labels, value);
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut m = Metrics::default();
        m.sample("x", &[("site", "a\"b\\c\nd")], 1.5);
        assert_eq!(m.text, "x{site=\"a\\\"b\\\\c\\nd\"} 1.5\n");
    }
}
