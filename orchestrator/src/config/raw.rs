//! The config file as written: serde structs that accept any string where a value needs
//! checking, so that `validate` can report every problem at once. Unknown keys are
//! refused here, with the key's position.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub cluster: RawCluster,
    #[serde(default)]
    pub nodes: BTreeMap<String, RawNode>,
    pub mail: Option<RawMail>,
    #[serde(default)]
    pub dns: BTreeMap<String, RawDns>,
    #[serde(default)]
    pub sites: BTreeMap<String, RawSite>,
    pub notify: Option<RawNotify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: String,
    pub network: String,
    pub listen_port: Option<u16>,
    pub keepalive: Option<String>,
    pub control_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub public_key: String,
    pub tunnel_ip: String,
    pub endpoint: Option<String>,
    pub public_ip: Option<String>,
    pub ddns: Option<RawDdns>,
    pub ssh: Option<RawSsh>,
    pub private_key_file: Option<String>,
    pub state_dir: Option<String>,
    pub interface: Option<String>,
    pub listen_port: Option<u16>,
    pub reserve: Option<String>,
    pub metrics: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDdns {
    pub provider: String,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<String>,
    pub port: Option<u16>,
    /// This node's sshd host key (`ssh-ed25519 AAAA…`), pinned by its peer.
    pub host_key: Option<String>,
    /// The private key this node logs into its peer with.
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    Smtp,
    Sendmail,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTls {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub transport: Option<MailTransport>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<MailTls>,
    pub ca_file: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    pub hand_off_after: Option<String>,
    pub tunnel_alert_after: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnsKind {
    Rfc2136,
    Cloudflare,
    Ovh,
    Gandi,
    Desec,
    Duckdns,
    Dyndns2,
    Command,
}

/// One flat table for every provider kind, so that an unknown key is reported at its
/// own position; `validate` checks which keys each kind needs and allows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub kind: DnsKind,
    pub server: Option<String>,
    pub zone: Option<String>,
    pub tsig_name: Option<String>,
    pub tsig_algorithm: Option<String>,
    pub tsig_secret_file: Option<String>,
    pub token_file: Option<String>,
    pub endpoint: Option<String>,
    pub application_key: Option<String>,
    pub application_secret_file: Option<String>,
    pub consumer_key_file: Option<String>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub command: Option<Vec<String>>,
    pub api_url: Option<String>,
    pub nameservers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMode {
    #[default]
    Auto,
    Manual,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    pub primary: String,
    pub standby: String,
    pub dns: Option<String>,
    #[serde(default)]
    pub records: Vec<String>,
    pub ttl: Option<u32>,
    #[serde(default)]
    pub health: Vec<String>,
    #[serde(default)]
    pub failover: FailoverMode,
    pub after: Option<String>,
    /// No automatic failover when the standby's database was further behind than this
    /// at its last check (default: each database's `max_lag`).
    pub max_lag_on_failover: Option<String>,
    #[serde(default)]
    pub witnesses: Vec<String>,
    #[serde(default)]
    pub promote: Vec<String>,
    #[serde(default)]
    pub demote: Vec<String>,
    #[serde(default)]
    pub rejoin: Vec<String>,
    pub report: Option<String>,
    #[serde(default)]
    pub sync: Vec<RawSync>,
    #[serde(default)]
    pub database: Vec<RawDatabase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub name: String,
    pub path: PathSpec,
    pub schedule: Option<String>,
    #[serde(default)]
    pub watch: bool,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub max_delete: Option<String>,
    /// Apply setuid (and file setgid) bits the master sends: trust the peer with root.
    #[serde(default)]
    pub keep_setuid: bool,
}

/// `path = "/srv/x"` (same on both nodes) or `path = { alice = "...", bob = "..." }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSpec {
    Same(String),
    PerNode(BTreeMap<String, String>),
}

impl<'de> Deserialize<'de> for PathSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathVisitor;
        impl<'de> Visitor<'de> for PathVisitor {
            type Value = PathSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path string, or a table of node name = path")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PathSpec, E> {
                Ok(PathSpec::Same(v.to_owned()))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<PathSpec, M::Error> {
                let mut paths = BTreeMap::new();
                while let Some((node, path)) = map.next_entry::<String, String>()? {
                    paths.insert(node, path);
                }
                Ok(PathSpec::PerNode(paths))
            }
        }
        deserializer.deserialize_any(PathVisitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    Postgres,
    Mysql,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub name: String,
    pub kind: DbKind,
    pub url: String,
    pub password_file: Option<String>,
    pub max_lag: Option<String>,
    pub interval: Option<String>,
    pub heartbeat: Option<bool>,
    pub heartbeat_table: Option<String>,
    /// PostgreSQL: the data directory on each node (for `orch db rejoin`).
    pub data_dir: Option<PathSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    Ntfy,
    Gotify,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub kind: NotifyKind,
    pub url: String,
    pub token_file: Option<String>,
}
