//! The cluster configuration (`/etc/orch/orch.toml`, identical on both nodes): the file
//! is parsed into [`raw`] structs, then [`validate`] checks everything it can and builds
//! the typed [`Config`], reporting every problem with its `FILE:LINE:COL`.

mod locate;
pub mod playbook;
pub mod raw;
mod schedule;
mod validate;

pub use locate::{KeyPath, Locator, Position};
pub use raw::{DbKind, DnsKind, FailoverMode, MailTls, MailTransport, NotifyKind};
pub use schedule::{parse_duration, CronSchedule};

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tunnel::PublicKey;

pub const DEFAULT_CONFIG: &str = "/etc/orch/orch.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/orch";
pub const DEFAULT_INTERFACE: &str = "orch0";
/// File name of a node's private key beside the config file (`/etc/orch/private.key`).
pub const DEFAULT_KEY_FILE: &str = "private.key";
/// The key this node logs into its peer with, beside the config (`orch ssh setup`).
pub const DEFAULT_SSH_KEY_FILE: &str = "ssh/id_ed25519";

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it are relative to its folder.
    pub path: PathBuf,
    pub cluster: Cluster,
    /// Exactly two, in name order.
    pub nodes: Vec<Node>,
    pub mail: Mail,
    pub dns: BTreeMap<String, DnsProvider>,
    pub sites: Vec<Site>,
    pub notify: Option<Notify>,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub network: IpNet,
    pub listen_port: u16,
    pub keepalive: Duration,
    pub control_port: u16,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub public_key: PublicKey,
    pub tunnel_ip: IpAddr,
    pub endpoint: Option<Endpoint>,
    pub public_ip: PublicIp,
    pub ddns: Option<Ddns>,
    pub ssh: Ssh,
    pub private_key_file: PathBuf,
    pub state_dir: PathBuf,
    pub interface: String,
    pub listen_port: u16,
    /// Free space every received file must leave on the replica's filesystem (and the
    /// state directory must have): `"5%"`, `"2GiB"`; by default 5%, at most 2 GiB.
    pub reserve: agent::sync::recv::Reserve,
    /// Where the agent serves Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
}

/// `host:port`, where host is a name (re-resolved when the tunnel is suspect) or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where a node learns its own public address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicIp {
    Auto,
    Fixed(IpAddr),
    Interface(String),
    Url(url::Url),
}

#[derive(Debug, Clone)]
pub struct Ddns {
    pub provider: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    /// This node's sshd host key as `TYPE BASE64`, which its peer pins.
    pub host_key: Option<String>,
    /// The private key this node logs into its peer with.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub transport: MailTransport,
    pub host: Option<String>,
    pub port: u16,
    pub tls: MailTls,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub from: Option<String>,
    pub to: Vec<String>,
    /// A message this node could not send for this long is handed to the peer's agent.
    pub hand_off_after: Duration,
    /// The tunnel must be down this long before it is alerted.
    pub tunnel_alert_after: Duration,
}

impl Mail {
    /// The default: `.eml` files in `<state_dir>/outbox`.
    pub fn file() -> Mail {
        Mail {
            transport: MailTransport::File,
            host: None,
            port: 25,
            tls: MailTls::None,
            ca_file: None,
            username: None,
            password_file: None,
            from: None,
            to: Vec::new(),
            hand_off_after: Duration::from_secs(600),
            tunnel_alert_after: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DnsProvider {
    pub name: String,
    pub kind: DnsKind,
    pub server: Option<String>,
    pub zone: Option<String>,
    pub tsig_name: Option<String>,
    pub tsig_algorithm: Option<String>,
    pub tsig_secret_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub application_key: Option<String>,
    pub application_secret_file: Option<PathBuf>,
    pub consumer_key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub command: Option<Vec<String>>,
    /// The API's base URL, when not the provider's own (a sandbox, a test server).
    pub api_url: Option<String>,
    /// The zone's authoritative servers (`host[:port]`), when not discovered.
    pub nameservers: Vec<String>,
}

impl DnsProvider {
    /// A provider of `kind` with no keys set (for building one in code).
    pub fn new(name: &str, kind: DnsKind) -> DnsProvider {
        DnsProvider {
            name: name.to_owned(),
            kind,
            server: None,
            zone: None,
            tsig_name: None,
            tsig_algorithm: None,
            tsig_secret_file: None,
            token_file: None,
            endpoint: None,
            application_key: None,
            application_secret_file: None,
            consumer_key_file: None,
            username: None,
            password_file: None,
            command: None,
            api_url: None,
            nameservers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub primary: String,
    pub standby: String,
    pub dns: Option<String>,
    pub records: Vec<String>,
    pub ttl: u32,
    pub health: Vec<url::Url>,
    pub failover: FailoverMode,
    pub after: Duration,
    /// The most this standby's database may lag at its last check for an automatic
    /// failover; `None`: each database's own `max_lag`.
    pub max_lag_on_failover: Option<Duration>,
    pub witnesses: Vec<Witness>,
    pub promote: Vec<String>,
    pub demote: Vec<String>,
    /// Run once this node has become the site's standby (after `demote`): follow the
    /// new master.
    pub rejoin: Vec<String>,
    pub report: Option<CronSchedule>,
    pub sync: Vec<SyncJob>,
    pub databases: Vec<Database>,
}

/// An "am I online" probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    /// A TCP connection that opens.
    Tcp { host: String, port: u16 },
    /// An HTTP(S) answer (any status: the server answered), no redirect followed.
    Http(url::Url),
}

impl std::fmt::Display for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Witness::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Witness::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Witness::Http(url) => write!(f, "{url}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncJob {
    pub name: String,
    /// The job's tree on each node.
    pub paths: BTreeMap<String, PathBuf>,
    pub schedule: Option<CronSchedule>,
    pub watch: bool,
    pub exclude: Vec<String>,
    pub max_delete: MaxDelete,
    /// The receiver applies setuid bits (and setgid on files) as sent.
    pub keep_setuid: bool,
}

/// The most a push may delete without `--force`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDelete {
    Percent(f64),
    Count(u64),
}

impl MaxDelete {
    /// The push engine's form of it (sender and receiver both hold a push to it).
    pub fn limit(self) -> agent::sync::plan::Limit {
        match self {
            MaxDelete::Percent(p) => agent::sync::plan::Limit::Percent(p),
            MaxDelete::Count(n) => agent::sync::plan::Limit::Count(n),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    pub kind: DbKind,
    /// The URL with `{node}` still in it; [`Database::url_for`] fills it in.
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub max_lag: Duration,
    pub interval: Duration,
    pub heartbeat: bool,
    pub heartbeat_table: String,
    /// PostgreSQL's data directory on each node, when given.
    pub data_dirs: BTreeMap<String, PathBuf>,
}

impl Database {
    /// The connection URL for the database on the node with this tunnel address.
    pub fn url_for(&self, tunnel_ip: IpAddr) -> String {
        let host = match tunnel_ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        self.url.replace("{node}", &host)
    }
}

#[derive(Debug, Clone)]
pub struct Notify {
    pub kind: NotifyKind,
    pub url: url::Url,
    pub token_file: Option<PathBuf>,
}

impl Config {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The other node of the pair.
    pub fn peer_of(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name != name)
    }

    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }
}

/// A loaded, valid config, and which of its nodes this machine is.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub me: String,
}

impl Loaded {
    pub fn me(&self) -> &Node {
        // `validate` only returns a `Loaded` whose `me` names one of its two nodes.
        self.config.node(&self.me).unwrap_or(&self.config.nodes[0])
    }
    pub fn peer(&self) -> &Node {
        self.config
            .peer_of(&self.me)
            .unwrap_or(&self.config.nodes[1])
    }
}

/// One problem, where it is, and in which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                p.line,
                p.column,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source} (create it with `orch init --node NAME`, or pass --config PATH)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    let n = diagnostics.len();
    out.push(format!(
        "{n} problem{} found",
        if n == 1 { "" } else { "s" }
    ));
    out.join("\n")
}

/// What the caller knows beyond the file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--node` / `ORCH_NODE`; otherwise the node whose key file matches its public key.
    pub node: Option<String>,
}

/// Reads, parses and validates the config at `path`.
pub fn load(path: &Path, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, options)
}

/// Parses and validates config text; `path` names it in messages and anchors relative paths.
pub fn parse(path: &Path, text: &str, options: &LoadOptions) -> Result<Loaded, ConfigError> {
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let locator = Locator::new(text);
            let position = e.span().map(|s| locator.position(s.start));
            return Err(ConfigError::Invalid(vec![Diagnostic {
                file: path.to_owned(),
                position,
                message: e.message().trim_end().to_owned(),
            }]));
        }
    };
    validate::validate(path, text, raw, options).map_err(ConfigError::Invalid)
}

/// The folder relative paths in the config are resolved against.
pub fn config_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

pub use validate::{
    check_api_url, check_secret_mode, dyndns2_url, read_private_key, read_secret_file,
};

/// Checks a `HOST:PORT` endpoint as the config would.
pub fn validate_endpoint(text: &str) -> Result<Endpoint, String> {
    validate::parse_endpoint(text, None)
}

/// A valid two-node config for in-process tests of other modules.
#[cfg(test)]
pub mod testing {
    use super::{parse, LoadOptions, Loaded};
    use std::os::unix::fs::PermissionsExt;

    /// The pair alice (198.51.100.1) and bob (198.51.100.2) plus `extra`, loaded as
    /// `node`; keys and the state dirs live in the returned temp dir (`state-NODE`).
    pub fn pair(node: &str, extra: &str) -> (tempfile::TempDir, Loaded) {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (
            tunnel::PrivateKey::generate(),
            tunnel::PrivateKey::generate(),
        );
        for (name, key) in [("alice", &alice), ("bob", &bob)] {
            let file = dir.path().join(format!("{name}.key"));
            std::fs::write(&file, key.to_base64()).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let d = dir.path().display();
        let text = format!(
            "[cluster]\nname = \"t\"\nnetwork = \"198.51.100.0/24\"\n\n\
             [nodes.alice]\npublic_key = \"{}\"\ntunnel_ip = \"198.51.100.1\"\nendpoint = \"192.0.2.1:51820\"\n\
             private_key_file = \"{d}/alice.key\"\nstate_dir = \"{d}/state-alice\"\n\n\
             [nodes.bob]\npublic_key = \"{}\"\ntunnel_ip = \"198.51.100.2\"\n\
             private_key_file = \"{d}/bob.key\"\nstate_dir = \"{d}/state-bob\"\n\n{extra}",
            alice.public_key(),
            bob.public_key()
        );
        let options = LoadOptions {
            node: Some(node.to_owned()),
        };
        let loaded =
            parse(&dir.path().join("orch.toml"), &text, &options).unwrap_or_else(|e| match e {
                super::ConfigError::Invalid(d) => panic!("{d:#?}"),
                other => panic!("{other}"),
            });
        (dir, loaded)
    }
}
