//! Requests the CLI sends the agent over the control socket, and their answers. The JSON
//! of [`StatusReport`] is what `orch status --json` prints: keep it stable and keep
//! `docs/status-json.md` in step with it.

use crate::config::FailoverMode;
use serde::{Deserialize, Serialize};

/// Version of the `orch status --json` document; bumped only on incompatible change.
pub const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub schema: u32,
    pub node: String,
    pub cluster: String,
    pub agent: AgentInfo,
    pub sites: Vec<SiteStatus>,
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
    pub name: String,
    /// This node's role for the site.
    pub role: Role,
    /// The node that is master now (by epoch), and the site's configured primary.
    pub master: String,
    pub primary: String,
    pub peer: String,
    pub epoch: i64,
    pub failover: FailoverMode,
}
