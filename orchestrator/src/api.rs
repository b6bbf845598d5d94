//! Requests the CLI sends the agent over the control socket, and their answers. The JSON
//! of [`StatusReport`] is what `orch status --json` prints: keep it stable and keep
//! `docs/status-json.md` in step with it.

use crate::config::FailoverMode;
use agent::state::PushRun;
use serde::{Deserialize, Serialize};

/// The agent's control socket, in the state directory (0600).
pub const SOCKET: &str = "orch.sock";

/// Version of the `orch status --json` document; bumped only on incompatible change.
pub const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Render the report of `site`; with `send`, queue it and wait for the first attempt.
    Report {
        site: String,
        send: bool,
    },
    /// Push `site`'s jobs (or `job`) now; answers when done with `Vec<JobResult>`.
    Push {
        site: String,
        job: Option<String>,
        dry_run: bool,
        force: bool,
    },
    /// The push under way (`Option<ProgressView>`).
    PushProgress,
    /// Re-arm automatic failover of `site` (`orch ack`); answers with a sentence.
    Ack {
        site: String,
    },
    /// Make this node master of `site` (`orch promote`); answers with the lines to print.
    /// `run`: the caller's number for it, to ask its progress by.
    Promote {
        site: String,
        dry_run: bool,
        force: bool,
        #[serde(default)]
        run: u64,
    },
    /// The lines the switchover `run` has printed so far (`Vec<String>`; empty while it
    /// waits, or when another runs).
    PromoteProgress {
        run: u64,
    },
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub schema: u32,
    pub node: String,
    pub cluster: String,
    pub agent: AgentInfo,
    pub tunnel: TunnelStatus,
    pub peer: PeerStatus,
    pub sites: Vec<SiteStatus>,
    /// The latest replication check of each database (`agent::db::Report`); empty until
    /// the first check.
    #[serde(default)]
    pub databases: Vec<agent::db::Report>,
    /// Mail in this node's outbox: pending, sent, handed to the peer's agent.
    #[serde(default)]
    pub outbox: agent::state::OutboxCounts,
}

/// The peer's agent, as its heartbeats over the tunnel describe it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub node: String,
    /// A heartbeat went through within the last 15 s.
    pub reachable: bool,
    pub last_contact_secs: Option<u64>,
    /// This node's public address and port as the peer sees its WireGuard packets
    /// (what `public_ip = "auto"` uses).
    pub our_public_endpoint: Option<String>,
    /// The peer's view of each site.
    pub sites: Vec<PeerSite>,
    /// Why the last heartbeat failed, if it did.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerSite {
    pub name: String,
    pub master: String,
    pub epoch: i64,
}

/// The WireGuard tunnel to the peer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct TunnelStatus {
    pub interface: String,
    /// This node's tunnel address.
    pub address: String,
    pub listen_port: u16,
    pub peer: String,
    pub peer_address: String,
    /// Where the peer's packets come from now (`null` until known).
    pub endpoint: Option<String>,
    /// True when a handshake completed less than 180 s ago and the peer is not silent.
    pub up: bool,
    /// Nothing authenticated from the peer for 2 x keepalive: re-resolving and re-handshaking.
    pub suspect: bool,
    pub last_handshake_secs: Option<u64>,
    pub last_received_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub handshakes: u64,
    pub roams: u64,
    /// Datagrams that failed authentication, and packets refused by cryptokey routing.
    pub rejected: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct AgentInfo {
    pub pid: u32,
    pub orch_version: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub uptime_secs: u64,
    pub state_dir: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Standby,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SiteStatus {
    /// The latest run of each push job (as `orch history` and reports see them).
    #[serde(default)]
    pub pushes: Vec<agent::state::PushRun>,
    pub name: String,
    /// This node's role for the site.
    pub role: Role,
    /// The node that is master now (by epoch), and the site's configured primary.
    pub master: String,
    pub primary: String,
    pub peer: String,
    pub epoch: i64,
    pub failover: FailoverMode,
    /// What the failover logic sees and does for the site on this node (`null` until its
    /// first tick).
    #[serde(default)]
    pub failover_state: Option<FailoverStatus>,
}

/// The failover logic of one site on this node, in words and figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailoverStatus {
    /// `master` (this node keeps the records), `watching`, `counting` (the master looks
    /// lost), `holding` (it looks lost, but a guard stops the failover), `taking-over`,
    /// `failed-over` (waiting for `orch ack`), `off` (no DNS provider or records).
    pub state: String,
    /// One line: what it sees and why it does or does not act.
    pub summary: String,
    /// Automatic failover possible (false after one, until `orch ack`).
    pub armed: bool,
    /// When the master started to look lost (RFC 3339), while it does.
    pub lost_since: Option<String>,
    /// Seconds until the failover, while counting.
    pub failing_over_in_secs: Option<u64>,
    /// The last result of each probe.
    pub probes: Vec<Probe>,
}

/// One probe's last result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    /// `agent`, `health`, `witness`, `dns` or `data`.
    pub kind: String,
    /// What was asked (the URL and address, the witness, the record).
    pub target: String,
    pub ok: bool,
    pub detail: String,
    /// RFC 3339.
    pub at: String,
}

/// What `orch push` shows while it waits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressView {
    pub site: String,
    pub job: String,
    pub phase: String,
    pub steps_done: u64,
    pub steps_total: u64,
    pub bytes_sent: u64,
    pub elapsed_ms: u64,
}

/// The result of one job's push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub site: String,
    pub job: String,
    pub outcome: PushOutcome,
    pub summary: String,
    pub run: Option<PushRun>,
    /// A dry run: what would change (`+` create or overwrite, `~` metadata, `-` delete).
    #[serde(default)]
    pub changes: Vec<String>,
    #[serde(default)]
    pub diverged_dir: Option<String>,
}

/// How one job's push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushOutcome {
    Ok,
    /// Done, but some entries failed.
    Warn,
    Fail,
    /// A guard refused it; nothing changed.
    Refused,
    DryRun,
}

impl PushOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Ok => "ok",
            PushOutcome::Warn => "warn",
            PushOutcome::Fail => "fail",
            PushOutcome::Refused => "refused",
            PushOutcome::DryRun => "dry-run",
        }
    }
}

/// A rendered report and, when it was queued, its message id.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Made {
    pub report: crate::report::Rendered,
    pub message_id: Option<String>,
}

/// How a queued message fared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Delivery {
    Sent,
    /// The peer's agent took it and sends it.
    HandedOff,
    /// Not sent yet; kept in the outbox and retried.
    Pending(String),
}
