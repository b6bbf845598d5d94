//! Semantic checks of a parsed config. Every check runs, every problem is collected
//! with the path of the value it is about, and only a config without problems becomes a
//! [`Config`].

use super::raw::{DnsKind, MailTls, MailTransport, PathSpec, RawConfig, RawDns, RawNode, RawSite};
use super::*;
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;

struct Problem {
    path: KeyPath,
    message: String,
}

struct Checker {
    dir: PathBuf,
    problems: Vec<Problem>,
    /// Problems in other files (playbooks), with their own positions.
    extra: Vec<Diagnostic>,
}

impl Checker {
    fn err(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.clone(),
            message: message.into(),
        });
    }

    /// Records the error of a parse and returns its value, if any.
    fn check<T>(&mut self, path: &KeyPath, result: Result<T, String>) -> Option<T> {
        result.map_err(|e| self.err(path, e)).ok()
    }

    fn resolve(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn duration(&mut self, path: &KeyPath, text: Option<&str>, default: &str) -> Duration {
        let text = text.unwrap_or(default);
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.err(path, format!("`{text}` is zero; give a positive duration"));
                d
            }
            Ok(d) => d,
            Err(e) => {
                self.err(path, e);
                Duration::ZERO
            }
        }
    }

    fn cron(&mut self, path: &KeyPath, text: Option<&str>) -> Option<CronSchedule> {
        let text = text?;
        self.check(path, CronSchedule::parse(text))
    }

    /// A file holding a secret: it must exist and be unreadable by group and others.
    fn secret_file(&mut self, path: &KeyPath, file: Option<&str>) -> Option<PathBuf> {
        let resolved = self.resolve(file?);
        if let Err(e) = check_secret_mode(&resolved) {
            self.err(path, e);
        }
        Some(resolved)
    }

    fn name(&mut self, path: &KeyPath, what: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            self.err(
                path,
                format!("{what} name `{name}` must be 1-63 letters, digits, '-' or '_'"),
            );
        }
    }
}

/// A secret from its file, after [`check_secret_mode`]; the final line break removed.
/// The file is opened without following a symlink and checked on the open file.
pub fn read_secret_file(file: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(file)
        .map_err(|e| secret_problem(file, e))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    secret_meta_ok(file, &meta)?;
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// Refuses a secret file that is missing, a symlink, not owned by the agent's user (or
/// root), or readable by group or others.
pub fn check_secret_mode(file: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(file) {
        Err(e) => Err(secret_problem(file, e)),
        Ok(meta) => secret_meta_ok(file, &meta),
    }
}

fn secret_problem(file: &Path, e: std::io::Error) -> String {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        format!(
            "{} is a symlink: name the file itself in the config (a secret is read without following links)",
            file.display()
        )
    } else {
        format!(
            "{}: {e} (create it holding the secret, with mode 0600)",
            file.display()
        )
    }
}

fn secret_meta_ok(file: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        Err(format!(
            "{} is a symlink: name the file itself in the config (a secret is read without following links)",
            file.display()
        ))
    } else if !meta.is_file() {
        Err(format!("{} is not a file", file.display()))
    } else if meta.uid() != me && meta.uid() != 0 {
        Err(format!(
            "{} is owned by uid {}, not by the agent's user (uid {me}) or root: whoever owns it can change the secret (run `chown {me} {}`)",
            file.display(),
            meta.uid(),
            file.display()
        ))
    } else if meta.permissions().mode() & 0o077 != 0 {
        Err(format!(
            "{} has mode {:04o}: group or others can read or change it (run `chmod 600 {}`)",
            file.display(),
            meta.permissions().mode() & 0o7777,
            file.display()
        ))
    } else {
        Ok(())
    }
}

pub(super) fn validate(
    path: &Path,
    text: &str,
    raw: RawConfig,
    options: &LoadOptions,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut c = Checker {
        dir: config_dir(path),
        problems: Vec::new(),
        extra: Vec::new(),
    };
    let root = KeyPath::root();

    let cluster = check_cluster(&mut c, &raw);
    let nodes = check_nodes(&mut c, &raw, &cluster);
    let node_names: Vec<String> = raw.nodes.keys().cloned().collect();
    let me = which_node(&mut c, &raw, &nodes, options);
    let mail = check_mail(&mut c, &raw);
    let dns: BTreeMap<String, DnsProvider> = raw
        .dns
        .iter()
        .map(|(name, d)| {
            (
                name.clone(),
                check_dns(&mut c, &root.key("dns").key(name), name, d),
            )
        })
        .collect();
    for (name, node) in &raw.nodes {
        if let Some(ddns) = &node.ddns {
            let p = root.key("nodes").key(name).key("ddns").key("provider");
            if !dns.contains_key(&ddns.provider) {
                c.err(
                    &p,
                    unknown("DNS provider", &ddns.provider, "dns", dns.keys()),
                );
            }
        }
    }
    let sites: Vec<Site> = raw
        .sites
        .iter()
        .map(|(name, s)| check_site(&mut c, name, s, &node_names, &nodes, &dns))
        .collect();
    check_sync_overlaps(&mut c, &sites);
    check_sync_guards(&mut c, &sites, &nodes);
    let notify = raw.notify.as_ref().and_then(|n| {
        let p = root.key("notify");
        let url = c.check(&p.key("url"), http_url(&n.url));
        if let Some(u) = &url {
            if n.token_file.is_some() && u.scheme() == "http" && !loopback(u) {
                c.err(
                    &p.key("url"),
                    format!("`{u}`: plain http would send the token in clear; use https (http is allowed to a loopback address only)"),
                );
            }
        }
        let token_file = c.secret_file(&p.key("token_file"), n.token_file.as_deref());
        Some(Notify {
            kind: n.kind,
            url: url?,
            token_file,
        })
    });

    if !c.problems.is_empty() {
        let locator = Locator::new(text);
        let mut all: Vec<Diagnostic> = c
            .problems
            .into_iter()
            .map(|p| Diagnostic {
                file: path.to_owned(),
                position: locator.locate(&p.path),
                message: format!("{}: {}", p.path, p.message),
            })
            .collect();
        for d in c.extra {
            if !all.contains(&d) {
                all.push(d);
            }
        }
        return Err(all);
    }
    let (Some(cluster), Some(me)) = (cluster, me) else {
        return Err(unreachable_problem(path));
    };
    let nodes = nodes.into_iter().flatten().collect();
    Ok(Loaded {
        config: Config {
            path: path.to_owned(),
            cluster,
            nodes,
            mail,
            dns,
            sites,
            notify,
        },
        me,
    })
}

/// A value can only be missing after a recorded problem; if not, say so rather than panic.
fn unreachable_problem(path: &Path) -> Vec<Diagnostic> {
    vec![Diagnostic {
        file: path.to_owned(),
        position: None,
        message: "internal error: validation lost a problem; please report this".into(),
    }]
}

fn unknown<'a>(
    what: &str,
    name: &str,
    table: &str,
    known: impl Iterator<Item = &'a String>,
) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    if known.is_empty() {
        format!("no {what} `{name}`: there is no [{table}.{name}] table")
    } else {
        format!("no {what} `{name}` (known: {})", known.join(", "))
    }
}

fn check_cluster(c: &mut Checker, raw: &RawConfig) -> Option<Cluster> {
    let p = KeyPath::root().key("cluster");
    let rc = &raw.cluster;
    c.name(&p.key("name"), "cluster", &rc.name);
    let network = c.check(
        &p.key("network"),
        rc.network
            .parse::<IpNet>()
            .map_err(|e| {
                format!(
                    "`{}` is not a network ({e}); write it like \"198.51.100.0/24\"",
                    rc.network
                )
            })
            .and_then(|net| {
                if net.trunc() == net {
                    Ok(net)
                } else {
                    Err(format!(
                        "`{net}` has host bits set; did you mean {}?",
                        net.trunc()
                    ))
                }
            }),
    );
    let listen_port = port(c, &p.key("listen_port"), rc.listen_port, 51820);
    let control_port = port(c, &p.key("control_port"), rc.control_port, 7440);
    let keepalive = c.duration(&p.key("keepalive"), rc.keepalive.as_deref(), "15s");
    if keepalive.subsec_nanos() != 0 || keepalive.as_secs() > u64::from(u16::MAX) {
        c.err(
            &p.key("keepalive"),
            "WireGuard keepalive is whole seconds, from 1s to 65535s",
        );
    }
    Some(Cluster {
        name: rc.name.clone(),
        network: network?,
        listen_port,
        keepalive,
        control_port,
    })
}

fn port(c: &mut Checker, path: &KeyPath, value: Option<u16>, default: u16) -> u16 {
    let port = value.unwrap_or(default);
    if port == 0 {
        c.err(path, "port 0 is not a port; use 1-65535");
    }
    port
}

fn check_nodes(c: &mut Checker, raw: &RawConfig, cluster: &Option<Cluster>) -> Vec<Option<Node>> {
    let p = KeyPath::root().key("nodes");
    if raw.nodes.len() != 2 {
        let names: Vec<&str> = raw.nodes.keys().map(String::as_str).collect();
        c.err(
            &p,
            format!(
                "a cluster has exactly two nodes, this file has {} ({}); add a [nodes.NAME] table for each",
                names.len(),
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ),
        );
    }
    let nodes: Vec<Option<Node>> = raw
        .nodes
        .iter()
        .map(|(name, n)| check_node(c, &p.key(name), name, n, cluster))
        .collect();

    let mut seen_ips: HashMap<IpAddr, &str> = HashMap::new();
    let mut seen_keys: HashMap<PublicKey, &str> = HashMap::new();
    for node in nodes.iter().flatten() {
        if let Some(other) = seen_ips.insert(node.tunnel_ip, &node.name) {
            c.err(
                &p.key(&node.name).key("tunnel_ip"),
                format!(
                    "{} is also node {other}'s tunnel_ip; each node needs its own",
                    node.tunnel_ip
                ),
            );
        }
        if let Some(other) = seen_keys.insert(node.public_key, &node.name) {
            c.err(
                &p.key(&node.name).key("public_key"),
                format!(
                    "same public key as node {other}; run `orch init` on each node for its own key"
                ),
            );
        }
    }
    if raw.nodes.len() == 2 && raw.nodes.values().all(|n| n.endpoint.is_none()) {
        c.err(
            &p,
            "neither node has an endpoint; at least one must say where it can be reached",
        );
    }
    nodes
}

fn check_node(
    c: &mut Checker,
    p: &KeyPath,
    name: &str,
    n: &RawNode,
    cluster: &Option<Cluster>,
) -> Option<Node> {
    c.name(p, "node", name);
    let public_key = c.check(
        &p.key("public_key"),
        n.public_key.parse::<PublicKey>().map_err(|e| {
            format!(
                "`{}` is not a WireGuard public key: {e} (`orch pubkey` prints it)",
                n.public_key
            )
        }),
    );
    let tunnel_ip = c.check(
        &p.key("tunnel_ip"),
        n.tunnel_ip
            .parse::<IpAddr>()
            .map_err(|e| format!("`{}` is not an IP address ({e})", n.tunnel_ip)),
    );
    if let (Some(ip), Some(cluster)) = (tunnel_ip, cluster) {
        let net = cluster.network;
        if !net.contains(&ip) {
            c.err(
                &p.key("tunnel_ip"),
                format!("{ip} is outside cluster.network {net}"),
            );
        } else if net.prefix_len() < net.max_prefix_len() - 1
            && (ip == net.network() || (ip.is_ipv4() && ip == net.broadcast()))
        {
            c.err(
                &p.key("tunnel_ip"),
                format!(
                    "{ip} is the network's own or broadcast address; pick a host address in {net}"
                ),
            );
        }
    }
    let endpoint = n
        .endpoint
        .as_deref()
        .and_then(|e| c.check(&p.key("endpoint"), parse_endpoint(e, None)));
    let public_ip = c.check(
        &p.key("public_ip"),
        parse_public_ip(n.public_ip.as_deref().unwrap_or("auto")),
    );
    let ddns = n.ddns.as_ref().map(|d| {
        if let Err(e) = hostname(&d.name) {
            c.err(&p.key("ddns").key("name"), e);
        }
        Ddns {
            provider: d.provider.clone(),
            name: d.name.clone(),
        }
    });
    let ssh = Ssh {
        user: n
            .ssh
            .as_ref()
            .and_then(|s| s.user.clone())
            .unwrap_or_else(|| "orch".into()),
        port: port(
            c,
            &p.key("ssh").key("port"),
            n.ssh.as_ref().and_then(|s| s.port),
            22,
        ),
        host_key: n
            .ssh
            .as_ref()
            .and_then(|s| s.host_key.as_deref())
            .and_then(|k| c.check(&p.key("ssh").key("host_key"), parse_host_key(k))),
        key_file: c.resolve(
            n.ssh
                .as_ref()
                .and_then(|s| s.key_file.as_deref())
                .unwrap_or(DEFAULT_SSH_KEY_FILE),
        ),
    };
    let interface = n
        .interface
        .clone()
        .unwrap_or_else(|| DEFAULT_INTERFACE.into());
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ', ':']) {
        c.err(
            &p.key("interface"),
            format!(
                "`{interface}` is not an interface name (1-15 characters, no '/', ':' or space)"
            ),
        );
    }
    let listen_port = match (n.listen_port, cluster) {
        (Some(port_), _) => port(c, &p.key("listen_port"), Some(port_), 0),
        (None, Some(cl)) => cl.listen_port,
        (None, None) => 51820,
    };
    let reserve = match n.reserve.as_deref().map(parse_reserve) {
        None => agent::sync::recv::Reserve::Auto,
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            c.err(&p.key("reserve"), e);
            agent::sync::recv::Reserve::Auto
        }
    };
    let metrics = n.metrics.as_deref().and_then(|m| {
        c.check(
            &p.key("metrics"),
            m.parse::<std::net::SocketAddr>()
                .map_err(|_| format!("`{m}` is not an address and port, e.g. \"127.0.0.1:9477\"")),
        )
    });
    Some(Node {
        name: name.to_owned(),
        public_key: public_key?,
        tunnel_ip: tunnel_ip?,
        endpoint,
        public_ip: public_ip?,
        ddns,
        ssh,
        private_key_file: c.resolve(n.private_key_file.as_deref().unwrap_or(DEFAULT_KEY_FILE)),
        state_dir: c.resolve(n.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR)),
        interface,
        listen_port,
        reserve,
        metrics,
    })
}

/// `reserve = "5%"` or a size (`"2GiB"`, `"500MB"`, `"0"`).
fn parse_reserve(text: &str) -> Result<agent::sync::recv::Reserve, String> {
    use agent::sync::recv::Reserve;
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match p.trim().parse::<f64>() {
            Ok(v) if (0.0..=50.0).contains(&v) => Ok(Reserve::Percent(v)),
            _ => Err(format!(
                "reserve `{text}`: a percentage from 0 to 50, e.g. \"5%\""
            )),
        };
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = match unit.trim() {
        "" | "B" => 1u64,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => 0,
    };
    match num.parse::<u64>() {
        Ok(n) if unit > 0 => n
            .checked_mul(unit)
            .map(Reserve::Bytes)
            .ok_or_else(|| format!("reserve `{text}` is too large")),
        _ => Err(format!(
            "reserve `{text}`: a percentage (\"5%\") or a size (\"2GiB\", \"500MB\")"
        )),
    }
}

/// Decides which node this machine is, and checks that node's private key file.
fn which_node(
    c: &mut Checker,
    raw: &RawConfig,
    nodes: &[Option<Node>],
    options: &LoadOptions,
) -> Option<String> {
    let p = KeyPath::root().key("nodes");
    let me = match &options.node {
        Some(name) if raw.nodes.contains_key(name) => name.clone(),
        Some(name) => {
            c.err(
                &p,
                unknown("node", name, "nodes", raw.nodes.keys()) + " (from --node / ORCH_NODE)",
            );
            return None;
        }
        None => {
            let found = nodes.iter().flatten().find(|n| {
                read_private_key(&n.private_key_file).is_ok_and(|k| k.public_key() == n.public_key)
            });
            match found {
                Some(node) => node.name.clone(),
                None => {
                    if nodes.iter().all(Option::is_some) {
                        let files: BTreeSet<String> = nodes
                            .iter()
                            .flatten()
                            .map(|n| n.private_key_file.display().to_string())
                            .collect();
                        c.err(
                            &p,
                            format!(
                                "cannot tell which node this machine is: no private key in {} matches a node's \
                                 public_key; pass --node NAME (or set ORCH_NODE), or create the key with `orch init`",
                                files.into_iter().collect::<Vec<_>>().join(" or ")
                            ),
                        );
                    }
                    return None;
                }
            }
        }
    };
    let node = nodes.iter().flatten().find(|n| n.name == me)?;
    let key_path = match raw.nodes.get(&me).and_then(|n| n.private_key_file.as_ref()) {
        Some(_) => p.key(&me).key("private_key_file"),
        None => p.key(&me),
    };
    match read_private_key(&node.private_key_file) {
        Err(e) => c.err(&key_path, format!("this node's private key: {e}")),
        Ok(key) if key.public_key() != node.public_key => c.err(
            &p.key(&me).key("public_key"),
            format!(
                "does not match this node's private key {} (whose public key is {}); \
                 fix public_key, or pass the right --node",
                node.private_key_file.display(),
                key.public_key()
            ),
        ),
        Ok(_) => {}
    }
    Some(me)
}

/// Reads a private key file, refusing one that group or others can read.
pub fn read_private_key(file: &Path) -> Result<tunnel::PrivateKey, String> {
    check_secret_mode(file)?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.trim().parse().map_err(|e| {
        format!(
            "{} does not hold a WireGuard private key: {e}",
            file.display()
        )
    })
}

fn check_mail(c: &mut Checker, raw: &RawConfig) -> Mail {
    let p = KeyPath::root().key("mail");
    let Some(m) = &raw.mail else {
        return Mail::file();
    };
    let transport = m.transport.unwrap_or(MailTransport::File);
    let tls = m.tls.unwrap_or(MailTls::Starttls);
    let default_port = match tls {
        MailTls::Starttls => 587,
        MailTls::Tls => 465,
        MailTls::None => 25,
    };
    if transport == MailTransport::Smtp {
        if m.host.is_none() {
            c.err(&p, "transport = \"smtp\" needs host = \"smtp.example.org\"");
        }
        if m.username.is_some() != m.password_file.is_some() {
            c.err(&p, "give username and password_file together, or neither");
        }
        let local = m.host.as_deref().is_some_and(|h| {
            h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
        if tls == MailTls::None && m.username.is_some() && !local {
            c.err(
                &p.key("tls"),
                "tls = \"none\" would send the SMTP password in clear: use \"starttls\" or \"tls\" (\"none\" with credentials is allowed to a loopback host only)",
            );
        }
    }
    if transport != MailTransport::File && (m.from.is_none() || m.to.is_empty()) {
        c.err(
            &p,
            "mail needs from = \"orch@…\" and at least one address in to = [\"…\"]",
        );
    }
    if let Some(from) = &m.from {
        if let Err(e) = mailbox(from) {
            c.err(&p.key("from"), e);
        }
    }
    for (i, to) in m.to.iter().enumerate() {
        if let Err(e) = mailbox(to) {
            c.err(&p.key("to").index(i), e);
        }
    }
    let ca_file = m.ca_file.as_deref().map(|f| c.resolve(f));
    if let Some(ca) = &ca_file {
        if !ca.is_file() {
            c.err(
                &p.key("ca_file"),
                format!("{} is not a readable file", ca.display()),
            );
        }
    }
    Mail {
        transport,
        host: m.host.clone(),
        port: port(c, &p.key("port"), m.port, default_port),
        tls,
        ca_file,
        username: m.username.clone(),
        password_file: c.secret_file(&p.key("password_file"), m.password_file.as_deref()),
        from: m.from.clone(),
        to: m.to.clone(),
        hand_off_after: c.duration(&p.key("hand_off_after"), m.hand_off_after.as_deref(), "10m"),
        tunnel_alert_after: c.duration(
            &p.key("tunnel_alert_after"),
            m.tunnel_alert_after.as_deref(),
            "5m",
        ),
    }
}

fn mailbox(addr: &str) -> Result<(), String> {
    match addr.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && hostname(domain).is_ok()
                && !addr.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!("`{addr}` is not an email address")),
    }
}

fn check_dns(c: &mut Checker, p: &KeyPath, name: &str, d: &RawDns) -> DnsProvider {
    c.name(p, "DNS provider", name);
    let present: Vec<(&str, bool)> = vec![
        ("server", d.server.is_some()),
        ("zone", d.zone.is_some()),
        ("tsig_name", d.tsig_name.is_some()),
        ("tsig_algorithm", d.tsig_algorithm.is_some()),
        ("tsig_secret_file", d.tsig_secret_file.is_some()),
        ("token_file", d.token_file.is_some()),
        ("endpoint", d.endpoint.is_some()),
        ("application_key", d.application_key.is_some()),
        (
            "application_secret_file",
            d.application_secret_file.is_some(),
        ),
        ("consumer_key_file", d.consumer_key_file.is_some()),
        ("username", d.username.is_some()),
        ("password_file", d.password_file.is_some()),
        ("command", d.command.is_some()),
        ("api_url", d.api_url.is_some()),
        ("nameservers", d.nameservers.is_some()),
    ];
    let (required, optional): (&[&str], &[&str]) = match d.kind {
        DnsKind::Rfc2136 => (
            &["server", "zone", "tsig_name", "tsig_secret_file"],
            &["tsig_algorithm"],
        ),
        DnsKind::Cloudflare | DnsKind::Gandi | DnsKind::Desec => {
            (&["token_file", "zone"], &["api_url", "nameservers"])
        }
        DnsKind::Ovh => (
            &[
                "application_key",
                "application_secret_file",
                "consumer_key_file",
                "zone",
            ],
            &["endpoint", "api_url", "nameservers"],
        ),
        DnsKind::Duckdns => (&["token_file"], &["api_url", "nameservers"]),
        DnsKind::Dyndns2 => (&["server", "username", "password_file"], &["nameservers"]),
        DnsKind::Command => (&["command"], &["zone", "nameservers"]),
    };
    let kind = serde_json::to_value(d.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    for (key, is_set) in present {
        if is_set && !required.contains(&key) && !optional.contains(&key) {
            c.err(
                &p.key(key),
                format!("`{key}` does not apply to kind = \"{kind}\""),
            );
        } else if !is_set && required.contains(&key) {
            c.err(p, format!("kind = \"{kind}\" needs `{key}`"));
        }
    }
    match (d.kind, &d.server) {
        (DnsKind::Rfc2136, Some(server)) => {
            if let Err(e) = parse_endpoint(server, Some(53)) {
                c.err(&p.key("server"), e);
            }
        }
        (DnsKind::Dyndns2, Some(server)) => {
            if let Err(e) = check_api_url(&dyndns2_url(server)) {
                c.err(&p.key("server"), e);
            }
        }
        _ => {}
    }
    if let Some(u) = &d.api_url {
        if let Err(e) = check_api_url(u) {
            c.err(&p.key("api_url"), e);
        }
    }
    for (i, ns) in d.nameservers.iter().flatten().enumerate() {
        if let Err(e) = parse_endpoint(ns, Some(53)) {
            c.err(&p.key("nameservers").index(i), e);
        }
    }
    if d.kind == DnsKind::Duckdns {
        if let Some(zone) = &d.zone {
            if zone.trim_end_matches('.') != "duckdns.org" {
                c.err(&p.key("zone"), "DuckDNS names are always in duckdns.org");
            }
        }
    }
    if let Some(alg) = &d.tsig_algorithm {
        if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&alg.as_str()) {
            c.err(
                &p.key("tsig_algorithm"),
                format!("`{alg}` is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512"),
            );
        }
    }
    if let Some(zone) = &d.zone {
        if let Err(e) = hostname(zone.trim_end_matches('.')) {
            c.err(&p.key("zone"), e);
        }
    }
    if let Some(ep) = &d.endpoint {
        if !["ovh-eu", "ovh-ca", "ovh-us"].contains(&ep.as_str()) {
            c.err(
                &p.key("endpoint"),
                format!("`{ep}` is not an OVH endpoint; use ovh-eu, ovh-ca or ovh-us"),
            );
        }
    }
    if d.command.as_ref().is_some_and(Vec::is_empty) {
        c.err(
            &p.key("command"),
            "command needs at least the program to run",
        );
    }
    DnsProvider {
        name: name.to_owned(),
        kind: d.kind,
        server: d.server.clone(),
        zone: d.zone.as_ref().map(|z| z.trim_end_matches('.').to_owned()),
        tsig_name: d.tsig_name.clone(),
        tsig_algorithm: d.tsig_algorithm.clone(),
        tsig_secret_file: c.secret_file(&p.key("tsig_secret_file"), d.tsig_secret_file.as_deref()),
        token_file: c.secret_file(&p.key("token_file"), d.token_file.as_deref()),
        endpoint: d.endpoint.clone(),
        application_key: d.application_key.clone(),
        application_secret_file: c.secret_file(
            &p.key("application_secret_file"),
            d.application_secret_file.as_deref(),
        ),
        consumer_key_file: c
            .secret_file(&p.key("consumer_key_file"), d.consumer_key_file.as_deref()),
        username: d.username.clone(),
        password_file: c.secret_file(&p.key("password_file"), d.password_file.as_deref()),
        command: d.command.clone(),
        api_url: d.api_url.clone(),
        nameservers: d.nameservers.clone().unwrap_or_default(),
    }
}

/// A dyndns2 `server`: `host[:port]` means https; a full URL is used as it is.
pub fn dyndns2_url(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("https://{server}")
    }
}

/// An HTTP API's base URL: https, or plain http to a loopback address only (a secret
/// sent in clear over a network is a secret given away).
pub fn check_api_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            if !loopback(&url) {
                return Err(format!(
                    "`{text}`: plain http would send the credentials in clear; use https (http is allowed to a loopback address only)"
                ));
            }
        }
        other => return Err(format!("`{text}`: scheme `{other}` is not http(s)")),
    }
    if url.host().is_none() {
        return Err(format!("`{text}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
        return Err(format!(
            "`{text}`: no credentials or query in the URL; secrets belong in files"
        ));
    }
    Ok(())
}

fn check_site(
    c: &mut Checker,
    name: &str,
    s: &RawSite,
    node_names: &[String],
    nodes: &[Option<Node>],
    dns: &BTreeMap<String, DnsProvider>,
) -> Site {
    let p = KeyPath::root().key("sites").key(name);
    c.name(&p, "site", name);
    for (key, node) in [("primary", &s.primary), ("standby", &s.standby)] {
        if !node_names.contains(node) {
            c.err(
                &p.key(key),
                unknown("node", node, "nodes", node_names.iter()),
            );
        }
    }
    if s.primary == s.standby {
        c.err(
            &p.key("standby"),
            format!(
                "standby is `{}`, the same node as primary; name the other node",
                s.standby
            ),
        );
    }
    let provider = s.dns.as_ref().and_then(|d| match dns.get(d) {
        Some(provider) if matches!(provider.kind, DnsKind::Duckdns | DnsKind::Dyndns2) => {
            c.err(
                &p.key("dns"),
                format!(
                    "provider `{d}` is a dynamic-DNS service: it can keep a node's own name (ddns) but cannot hold a site's records and its _orch TXT record; use rfc2136, cloudflare, ovh, gandi, desec or command"
                ),
            );
            None
        }
        Some(provider) if provider.zone.is_none() => {
            c.err(
                &p.key("dns"),
                format!("provider `{d}` needs `zone` to hold a site's records (the ownership record is _orch.SITE.ZONE)"),
            );
            None
        }
        Some(provider) => Some(provider),
        None => {
            c.err(&p.key("dns"), unknown("DNS provider", d, "dns", dns.keys()));
            None
        }
    });
    match (&s.dns, s.records.is_empty()) {
        (None, false) => c.err(
            &p.key("records"),
            "records need a DNS provider: add dns = \"NAME\"",
        ),
        (Some(_), true) => c.err(
            &p,
            "dns is set but records is empty: name the records that follow the master",
        ),
        _ => {}
    }
    for (i, record) in s.records.iter().enumerate() {
        let rp = p.key("records").index(i);
        if let Err(e) = hostname(record.trim_end_matches('.')) {
            c.err(&rp, e);
        } else if let Some(zone) = provider.and_then(|pr| pr.zone.as_deref()) {
            let r = record.trim_end_matches('.');
            if r != zone && !r.ends_with(&format!(".{zone}")) {
                c.err(
                    &rp,
                    format!("{record} is outside the provider's zone {zone}"),
                );
            }
        }
    }
    let ttl = s.ttl.unwrap_or(60);
    if !(1..=86_400).contains(&ttl) {
        c.err(
            &p.key("ttl"),
            format!("ttl {ttl} is out of range (1-86400 seconds; 60 suits failover)"),
        );
    }
    let health = s
        .health
        .iter()
        .enumerate()
        .filter_map(|(i, h)| c.check(&p.key("health").index(i), http_url(h)))
        .collect();
    let after = c.duration(&p.key("after"), s.after.as_deref(), "60s");
    let max_lag_on_failover = s
        .max_lag_on_failover
        .as_deref()
        .map(|t| c.duration(&p.key("max_lag_on_failover"), Some(t), t));
    let witnesses = s
        .witnesses
        .iter()
        .enumerate()
        .filter_map(|(i, w)| c.check(&p.key("witnesses").index(i), parse_witness(w)))
        .collect();
    let books = [
        ("promote", &s.promote),
        ("demote", &s.demote),
        ("rejoin", &s.rejoin),
    ];
    let report = c.cron(&p.key("report"), s.report.as_deref());

    let mut sync: Vec<SyncJob> = Vec::new();
    for (i, job) in s.sync.iter().enumerate() {
        let jp = p.key("sync").index(i);
        c.name(&jp.key("name"), "sync job", &job.name);
        if sync.iter().any(|j| j.name == job.name) {
            c.err(
                &jp.key("name"),
                format!("another sync job of this site is named `{}`", job.name),
            );
        }
        let paths = sync_paths(c, &jp.key("path"), &job.path, node_names);
        let schedule = c.cron(&jp.key("schedule"), job.schedule.as_deref());
        if schedule.is_none() && job.schedule.is_none() && !job.watch {
            c.err(
                &jp,
                "give a schedule = \"0 3 * * *\", or watch = true, or both",
            );
        }
        for (k, pattern) in job.exclude.iter().enumerate() {
            if pattern.trim().is_empty() {
                c.err(
                    &jp.key("exclude").index(k),
                    "an empty exclude pattern matches nothing",
                );
            } else if let Err(e) = agent::sync::Excludes::new(std::slice::from_ref(pattern)) {
                c.err(&jp.key("exclude").index(k), e);
            }
        }
        let max_delete = c
            .check(
                &jp.key("max_delete"),
                parse_max_delete(job.max_delete.as_deref().unwrap_or("25%")),
            )
            .unwrap_or(MaxDelete::Count(0));
        sync.push(SyncJob {
            name: job.name.clone(),
            paths,
            schedule,
            watch: job.watch,
            exclude: job.exclude.clone(),
            max_delete,
            keep_setuid: job.keep_setuid,
        });
    }

    let probe_ip = nodes
        .iter()
        .flatten()
        .map(|n| n.tunnel_ip)
        .next()
        .unwrap_or(IpAddr::from([192, 0, 2, 1]));
    let mut databases: Vec<Database> = Vec::new();
    for (i, db) in s.database.iter().enumerate() {
        let dp = p.key("database").index(i);
        c.name(&dp.key("name"), "database", &db.name);
        if databases.iter().any(|d| d.name == db.name) {
            c.err(
                &dp.key("name"),
                format!("another database of this site is named `{}`", db.name),
            );
        }
        let table = db
            .heartbeat_table
            .clone()
            .unwrap_or_else(|| "orch_heartbeat".into());
        let ident_ok = table.len() <= 63
            && table
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && table
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !ident_ok {
            c.err(
                &dp.key("heartbeat_table"),
                format!("`{table}` is not a plain SQL table name (letters, digits, '_')"),
            );
        }
        let data_dirs = match &db.data_dir {
            Some(spec) => sync_paths(c, &dp.key("data_dir"), spec, node_names),
            None => BTreeMap::new(),
        };
        if !data_dirs.is_empty() && db.kind != DbKind::Postgres {
            c.err(&dp.key("data_dir"), "data_dir is for PostgreSQL databases");
        }
        let database = Database {
            data_dirs,
            name: db.name.clone(),
            kind: db.kind,
            url: db.url.clone(),
            password_file: c.secret_file(&dp.key("password_file"), db.password_file.as_deref()),
            max_lag: c.duration(&dp.key("max_lag"), db.max_lag.as_deref(), "60s"),
            interval: c.duration(&dp.key("interval"), db.interval.as_deref(), "60s"),
            heartbeat: db.heartbeat.unwrap_or(true),
            heartbeat_table: table,
        };
        if let Err(e) = check_db_url(&database, probe_ip) {
            c.err(&dp.key("url"), e);
        }
        databases.push(database);
    }
    // Every playbook the site names must exist and be valid for this site (its problems
    // are listed with the playbook's own file and position).
    for (key, list) in books {
        for (i, book) in list.iter().enumerate() {
            match super::playbook::find(&c.dir, book) {
                Err(found) => {
                    c.err(&p.key(key).index(i), found.summary());
                    c.extra.extend(found.diagnostics);
                }
                Ok(found) => {
                    let problems = found.check_for_site(name, &databases);
                    if !problems.is_empty() {
                        c.err(
                            &p.key(key).index(i),
                            format!(
                                "playbook `{book}` does not fit site {name}: {} problem(s), listed with its file",
                                problems.len()
                            ),
                        );
                        c.extra.extend(problems);
                    }
                }
            }
        }
    }

    Site {
        name: name.to_owned(),
        primary: s.primary.clone(),
        standby: s.standby.clone(),
        dns: s.dns.clone(),
        records: s
            .records
            .iter()
            .map(|r| r.trim_end_matches('.').to_owned())
            .collect(),
        ttl,
        health,
        failover: s.failover,
        after,
        max_lag_on_failover,
        witnesses,
        promote: s.promote.clone(),
        demote: s.demote.clone(),
        rejoin: s.rejoin.clone(),
        report,
        sync,
        databases,
    }
}

fn sync_paths(
    c: &mut Checker,
    p: &KeyPath,
    spec: &PathSpec,
    node_names: &[String],
) -> BTreeMap<String, PathBuf> {
    let mut paths = BTreeMap::new();
    let mut check = |c: &mut Checker, at: &KeyPath, node: &str, path: &str| {
        let pb = PathBuf::from(path);
        if !pb.is_absolute() {
            c.err(at, format!("`{path}` is not an absolute path"));
        } else if pb.parent().is_none() {
            c.err(at, "syncing / is refused: name the folder to replicate");
        } else if pb
            .components()
            .any(|comp| matches!(comp, std::path::Component::ParentDir))
        {
            c.err(
                at,
                format!("`{path}` contains `..`; write the path plainly"),
            );
        }
        paths.insert(node.to_owned(), pb);
    };
    match spec {
        PathSpec::Same(path) => {
            for node in node_names {
                check(c, p, node, path);
            }
        }
        PathSpec::PerNode(map) => {
            for (node, path) in map {
                if node_names.contains(node) {
                    check(c, &p.key(node), node, path);
                } else {
                    c.err(
                        &p.key(node),
                        unknown("node", node, "nodes", node_names.iter()),
                    );
                }
            }
            for node in node_names {
                if !map.contains_key(node) {
                    c.err(
                        p,
                        format!("no path for node {node}: give every node its path"),
                    );
                }
            }
        }
    }
    paths
}

/// `sites.SITE.sync[i].path`, where a sync path's problems are reported.
fn sync_path_key(site: &str, i: usize) -> KeyPath {
    KeyPath::root()
        .key("sites")
        .key(site)
        .key("sync")
        .index(i)
        .key("path")
}

/// A peer may write into sync paths; one job's tree inside another's would let a push
/// for one site write into another site's data.
fn check_sync_overlaps(c: &mut Checker, sites: &[Site]) {
    let mut all: Vec<(String, &Path, KeyPath)> = Vec::new();
    for site in sites {
        for (i, job) in site.sync.iter().enumerate() {
            for (node, path) in &job.paths {
                let at = sync_path_key(&site.name, i);
                all.push((node.clone(), path, at));
            }
        }
    }
    for (i, (node_a, a, at)) in all.iter().enumerate() {
        for (node_b, b, _) in &all[..i] {
            if node_a == node_b && (a.starts_with(b) || b.starts_with(a)) {
                c.err(
                    at,
                    format!(
                        "on node {node_a}, {} overlaps the sync path {} of another job",
                        a.display(),
                        b.display()
                    ),
                );
            }
        }
    }
}

/// A URL whose host is this machine.
fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// A sync path must not be, hold or lie inside what orch or the system itself needs: the
/// node's state dir, the config dir, its private key, or a system directory (none may be
/// inside `/etc`, `/usr`, `/boot`; `/`, `/var` or `/var/lib` themselves are refused, while
/// an application's data under `/var/lib/APP` is a normal thing to replicate).
fn check_sync_guards(c: &mut Checker, sites: &[Site], nodes: &[Option<Node>]) {
    const SYSTEM: &[&str] = &["/", "/etc", "/usr", "/boot", "/var/lib"];
    const NOTHING_INSIDE: &[&str] = &["/etc", "/usr", "/boot"];
    let config_dir = c.dir.clone();
    for site in sites {
        for (i, job) in site.sync.iter().enumerate() {
            for (node, path) in &job.paths {
                let at = sync_path_key(&site.name, i);
                let mut guarded: Vec<(String, PathBuf)> =
                    vec![("the config directory".into(), config_dir.clone())];
                if let Some(n) = nodes.iter().flatten().find(|n| &n.name == node) {
                    guarded.push((format!("{node}'s state_dir"), n.state_dir.clone()));
                    guarded.push((format!("{node}'s private key"), n.private_key_file.clone()));
                }
                for (what, g) in &guarded {
                    if path.starts_with(g) || g.starts_with(path) {
                        c.err(
                            &at,
                            format!(
                                "on node {node}, {} is, holds or lies inside {what} {}: a push would overwrite orch's own files; replicate another folder",
                                path.display(),
                                g.display()
                            ),
                        );
                    }
                }
                for sys in SYSTEM {
                    let sys = Path::new(sys);
                    let inside = NOTHING_INSIDE.iter().any(|d| path.starts_with(d));
                    if sys.starts_with(path) || inside {
                        c.err(
                            &at,
                            format!(
                                "on node {node}, {} is or holds a system directory ({}): the peer would write the system; replicate an application's folder instead",
                                path.display(),
                                if inside { path.display().to_string() } else { sys.display().to_string() }
                            ),
                        );
                        break;
                    }
                }
            }
        }
    }
}

fn parse_max_delete(text: &str) -> Result<MaxDelete, String> {
    let bad = || {
        format!(
            "`{text}` is not a limit; write a percentage like \"25%\" or a file count like \"500\""
        )
    };
    match text.trim().strip_suffix('%') {
        Some(pct) => match pct.trim().parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => Ok(MaxDelete::Percent(v)),
            _ => Err(bad()),
        },
        None => text
            .trim()
            .parse::<u64>()
            .map(MaxDelete::Count)
            .map_err(|_| bad()),
    }
}

fn check_db_url(db: &Database, probe_ip: IpAddr) -> Result<(), String> {
    let url = url::Url::parse(&db.url_for(probe_ip))
        .map_err(|e| format!("`{}` is not a URL ({e})", db.url))?;
    let schemes: &[&str] = match db.kind {
        DbKind::Postgres => &["postgres", "postgresql"],
        DbKind::Mysql => &["mysql", "mariadb"],
    };
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "scheme `{}` does not match kind; use {}://",
            url.scheme(),
            schemes[0]
        ));
    }
    if url.password().is_some() {
        return Err(
            "the URL holds a password; put it in password_file instead, so it stays out of logs"
                .into(),
        );
    }
    Ok(())
}

fn http_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!("`{text}` must be an http:// or https:// URL")),
    }
}

fn parse_witness(text: &str) -> Result<Witness, String> {
    if text.starts_with("http://") || text.starts_with("https://") {
        return http_url(text).map(Witness::Http);
    }
    let Some(rest) = text.strip_prefix("tcp:") else {
        return Err(format!(
            "`{text}`: a witness is written \"tcp:HOST:PORT\" (e.g. \"tcp:9.9.9.9:53\") or \"https://HOST/…\""
        ));
    };
    let ep = parse_endpoint(rest, None)?;
    Ok(Witness::Tcp {
        host: ep.host,
        port: ep.port,
    })
}

/// An sshd host key as `ssh-keygen` writes it (`TYPE BASE64 [comment]`), kept as
/// `TYPE BASE64`.
fn parse_host_key(text: &str) -> Result<String, String> {
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    ];
    let mut words = text.split_whitespace();
    let (Some(kind), Some(key)) = (words.next(), words.next()) else {
        return Err(format!(
            "`{text}` is not a host key: give the line of the peer's /etc/ssh/ssh_host_ed25519_key.pub (`orch ssh setup` prints it)"
        ));
    };
    if !TYPES.contains(&kind) {
        return Err(format!(
            "host key type `{kind}` is not one of {}",
            TYPES.join(", ")
        ));
    }
    use base64::Engine as _;
    let ok = key.len() <= 4096
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|raw| raw.len() > 4);
    if !ok {
        return Err(format!("the host key's base64 `{key}` does not decode"));
    }
    Ok(format!("{kind} {key}"))
}

fn parse_public_ip(text: &str) -> Result<PublicIp, String> {
    if text == "auto" {
        return Ok(PublicIp::Auto);
    }
    if let Some(name) = text.strip_prefix("interface:") {
        return if name.is_empty() || name.len() > 15 {
            Err(format!(
                "`{text}`: name the interface, e.g. \"interface:eth0\""
            ))
        } else {
            Ok(PublicIp::Interface(name.to_owned()))
        };
    }
    if let Some(u) = text.strip_prefix("url:") {
        return http_url(u).map(PublicIp::Url);
    }
    text.parse::<IpAddr>().map(PublicIp::Fixed).map_err(|_| {
        format!("`{text}` is not \"auto\", an address, \"interface:NAME\" or \"url:https://…\"")
    })
}

/// `host:port` or `[v6]:port`; `default_port` allows the port to be left out.
pub fn parse_endpoint(text: &str, default_port: Option<u16>) -> Result<Endpoint, String> {
    let bad = |why: &str| format!("`{text}` is not HOST:PORT ({why})");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        (host, after.strip_prefix(':'))
    } else if text.matches(':').count() > 1 {
        return Err(bad("write an IPv6 address as [2001:db8::1]:51820"));
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be 1-65535"))?,
        (None, Some(d)) => d,
        (None, None) => return Err(bad("the port is missing")),
    };
    if host.parse::<IpAddr>().is_err() {
        hostname(host).map_err(|e| bad(&e))?;
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

/// A DNS name: labels of letters, digits, '-' and '_', each 1-63 long.
fn hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a DNS name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_nodes_reserve_is_a_percentage_or_a_size() {
        use agent::sync::recv::Reserve;
        assert_eq!(parse_reserve("5%"), Ok(Reserve::Percent(5.0)));
        assert_eq!(parse_reserve("2GiB"), Ok(Reserve::Bytes(2 << 30)));
        assert_eq!(parse_reserve("500 MB"), Ok(Reserve::Bytes(500_000_000)));
        assert_eq!(parse_reserve("0"), Ok(Reserve::Bytes(0)));
        for bad in ["", "80%", "-1%", "2 GiBs", "x", "99999999999TiB"] {
            assert!(parse_reserve(bad).is_err(), "{bad}");
        }
        assert_eq!(Reserve::Auto.of(10 << 30), (10 << 30) / 20);
        assert_eq!(Reserve::Auto.of(1 << 40), 2 << 30);
        let loaded = check("").unwrap();
        assert_eq!(loaded.me().reserve, Reserve::Auto);
    }

    #[test]
    fn a_secret_is_read_only_from_its_own_file_owned_by_the_agent_or_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tsig.secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&file).unwrap(), "s3cret");
        assert_eq!(check_secret_mode(&file), Ok(()));
        // A symlink to it, even a good one, is not followed.
        let link = dir.path().join("link.secret");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for got in [
            read_secret_file(&link).map(|_| ()),
            check_secret_mode(&link),
        ] {
            let e = got.unwrap_err();
            assert!(e.contains("is a symlink"), "{e}");
        }
        // Owned by someone else: whoever owns it can change the secret.
        let me = rustix::process::geteuid().as_raw();
        if me != 0 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs this test as root (it gives a file to another user)"
            );
            eprintln!("SKIPPED: the owner part needs root (chown)");
            return;
        }
        std::os::unix::fs::lchown(&file, Some(65534), None).unwrap();
        for got in [
            read_secret_file(&file).map(|_| ()),
            check_secret_mode(&file),
        ] {
            let e = got.unwrap_err();
            assert!(e.contains("is owned by uid 65534"), "{e}");
        }
    }

    /// A valid two-node config plus `extra`, checked as node alice.
    fn check(extra: &str) -> Result<Loaded, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let alice = tunnel::PrivateKey::generate();
        let bob = tunnel::PrivateKey::generate();
        let key = dir.path().join("private.key");
        std::fs::write(&key, alice.to_base64()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "[cluster]\nname = \"t\"\nnetwork = \"198.51.100.0/24\"\n\n\
             [nodes.alice]\npublic_key = \"{}\"\ntunnel_ip = \"198.51.100.1\"\nendpoint = \"192.0.2.1:51820\"\n\n\
             [nodes.bob]\npublic_key = \"{}\"\ntunnel_ip = \"198.51.100.2\"\n\n{extra}",
            alice.public_key(),
            bob.public_key()
        );
        let path = dir.path().join("orch.toml");
        super::super::parse(&path, &text, &LoadOptions::default()).map_err(|e| match e {
            ConfigError::Invalid(d) => d.into_iter().map(|d| d.message).collect(),
            other => vec![other.to_string()],
        })
    }

    /// Garbage in, no panic: random text and mutations of a full config (every section)
    /// through the parser and the checks, 10 000 cases each; and the same for playbooks.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const FULL: &str = "[mail]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\n\
            from = \"orch@example.org\"\nto = [\"ops@example.org\"]\n\n\
            [dns.lab]\nkind = \"rfc2136\"\nserver = \"192.0.2.53:53\"\nzone = \"example.org\"\n\
            tsig_name = \"k\"\ntsig_algorithm = \"hmac-sha256\"\ntsig_secret_file = \"secret\"\n\n\
            [sites.w]\nprimary = \"alice\"\nstandby = \"bob\"\ndns = \"lab\"\nrecords = [\"www.example.org\"]\n\
            ttl = 60\nafter = \"60s\"\nwitnesses = [\"tcp:192.0.2.61:80\"]\npromote = [\"web-start\"]\n\
            report = \"30 4 * * *\"\n\n\
            [[sites.w.sync]]\nname = \"a\"\npath = { alice = \"/srv/a\", bob = \"/backup/a\" }\n\
            schedule = \"0 3 * * *\"\nexclude = [\"cache/\"]\nmax_delete = \"25%\"\n\n\
            [[sites.w.database]]\nname = \"db\"\nkind = \"postgres\"\nurl = \"postgres://orch@{node}/app\"\n";

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 10_000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn random_text_is_refused_without_panic(text in "\\PC{0,400}") {
                let _ = check(&text);
                let _ = crate::config::playbook::parse("p", Path::new("/p.toml"), &text);
            }

            #[test]
            fn mutated_configs_are_checked_without_panic(
                cut in any::<prop::sample::Index>(),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>()), 0..6),
            ) {
                let mut chars: Vec<char> = FULL.chars().collect();
                for (at, c) in flips {
                    let i = at.index(chars.len());
                    chars[i] = c;
                }
                let end = cut.index(chars.len() + 1);
                let text: String = chars[..end].iter().collect();
                let _ = check(&text);
            }

            #[test]
            fn mutated_playbooks_are_checked_without_panic(
                cut in any::<prop::sample::Index>(),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>()), 0..6),
            ) {
                let book = include_str!("../../../playbooks/postgres-rejoin.toml");
                let mut chars: Vec<char> = book.chars().collect();
                for (at, c) in flips {
                    let i = at.index(chars.len());
                    chars[i] = c;
                }
                let end = cut.index(chars.len() + 1);
                let text: String = chars[..end].iter().collect();
                let _ = crate::config::playbook::parse("p", Path::new("/p.toml"), &text);
            }
        }
    }

    fn problems(extra: &str) -> Vec<String> {
        check(extra).err().unwrap_or_default()
    }

    #[test]
    fn a_minimal_pair_is_valid_with_defaults() {
        let loaded = check("").unwrap();
        assert_eq!(loaded.me, "alice");
        assert_eq!(loaded.peer().name, "bob");
        let c = &loaded.config;
        assert_eq!(
            (c.cluster.listen_port, c.cluster.control_port),
            (51820, 7440)
        );
        assert_eq!(c.cluster.keepalive, Duration::from_secs(15));
        assert_eq!(loaded.me().interface, "orch0");
        assert_eq!(loaded.me().state_dir, PathBuf::from("/var/lib/orch"));
        assert_eq!(c.mail.transport, MailTransport::File);
    }

    #[test]
    fn sync_paths_per_node_and_their_overlaps() {
        let loaded = check(
            "[sites.w]\nprimary = \"alice\"\nstandby = \"bob\"\n\
             [[sites.w.sync]]\nname = \"a\"\npath = { alice = \"/srv/a\", bob = \"/backup/a\" }\nschedule = \"0 3 * * *\"\n",
        )
        .unwrap();
        let job = &loaded.config.sites[0].sync[0];
        assert_eq!(job.paths["bob"], PathBuf::from("/backup/a"));
        assert_eq!(job.max_delete, MaxDelete::Percent(25.0));

        let p = problems(
            "[sites.w]\nprimary = \"alice\"\nstandby = \"bob\"\n\
             [[sites.w.sync]]\nname = \"a\"\npath = \"/srv\"\nwatch = true\n\
             [[sites.w.sync]]\nname = \"b\"\npath = { alice = \"/srv/b\", carol = \"/x\" }\nwatch = true\n\
             [[sites.w.sync]]\nname = \"c\"\npath = \"relative\"\n",
        );
        let all = p.join("\n");
        assert!(all.contains("/srv/b overlaps the sync path /srv"), "{all}");
        assert!(all.contains("no node `carol`"), "{all}");
        assert!(all.contains("no path for node bob"), "{all}");
        assert!(all.contains("`relative` is not an absolute path"), "{all}");
        assert!(all.contains("give a schedule"), "{all}");
    }

    #[test]
    fn sync_paths_keep_off_orchs_own_files_and_the_system() {
        let site = |path: &str| {
            format!(
                "[sites.w]\nprimary = \"alice\"\nstandby = \"bob\"\n\
                 [[sites.w.sync]]\nname = \"a\"\npath = \"{path}\"\nwatch = true\n"
            )
        };
        for (path, what) in [
            ("/var/lib/orch", "state_dir"),
            ("/var/lib/orch/x", "state_dir"),
            ("/etc", "system directory"),
            ("/etc/nginx", "system directory"),
            ("/usr/local/www", "system directory"),
            ("/boot", "system directory"),
            ("/var", "system directory"),
            ("/var/lib", "system directory"),
        ] {
            let all = problems(&site(path)).join("\n");
            assert!(all.contains(what), "{path}: {all}");
        }
        // A sync path holding the config directory (`/tmp/.tmpXXXX` in these tests).
        let all = problems(&site(&std::env::temp_dir().display().to_string())).join("\n");
        assert!(all.contains("the config directory"), "{all}");
        for fine in ["/var/lib/nextcloud", "/srv/www", "/var/www/alice"] {
            assert!(
                problems(&site(fine)).is_empty(),
                "{fine}: {:?}",
                problems(&site(fine))
            );
        }
    }

    #[test]
    fn credentials_never_go_in_clear_but_to_loopback() {
        let mail = |host: &str, tls: &str| {
            format!(
                "[mail]\ntransport = \"smtp\"\nhost = \"{host}\"\ntls = \"{tls}\"\nusername = \"u\"\n\
                 password_file = \"secret\"\nfrom = \"orch@example.org\"\nto = [\"a@example.org\"]\n"
            )
        };
        let all = problems(&mail("smtp.example.org", "none")).join("\n");
        assert!(
            all.contains("mail.tls: tls = \"none\" would send the SMTP password in clear"),
            "{all}"
        );
        assert!(problems(&mail("127.0.0.1", "none")).is_empty());
        assert!(problems(&mail("smtp.example.org", "starttls")).is_empty());
        let notify = |url: &str| {
            format!("[notify]\nkind = \"ntfy\"\nurl = \"{url}\"\ntoken_file = \"secret\"\n")
        };
        let all = problems(&notify("http://ntfy.example.org/t")).join("\n");
        assert!(
            all.contains("plain http would send the token in clear"),
            "{all}"
        );
        assert!(problems(&notify("http://127.0.0.1:8080/t")).is_empty());
        assert!(problems(&notify("https://ntfy.example.org/t")).is_empty());
    }

    #[test]
    fn database_urls_keep_passwords_out() {
        let site = "[sites.w]\nprimary = \"alice\"\nstandby = \"bob\"\n[[sites.w.database]]\nname = \"d\"\nkind = \"postgres\"\n";
        let loaded = check(&format!("{site}url = \"postgres://orch@{{node}}/app\"\n")).unwrap();
        let db = &loaded.config.sites[0].databases[0];
        assert_eq!(
            db.url_for("198.51.100.2".parse().unwrap()),
            "postgres://orch@198.51.100.2/app"
        );
        assert_eq!(
            db.url_for("2001:db8::2".parse().unwrap()),
            "postgres://orch@[2001:db8::2]/app"
        );
        let p = problems(&format!("{site}url = \"postgres://orch:hunter2@{{node}}/app\"\nheartbeat_table = \"x; DROP TABLE y\"\n"));
        assert!(p.iter().any(|m| m.contains("holds a password")), "{p:?}");
        assert!(
            p.iter().any(|m| m.contains("not a plain SQL table name")),
            "{p:?}"
        );
        assert!(
            !p.join("").contains("hunter2"),
            "a secret must not be echoed: {p:?}"
        );
        let p = problems(&format!("{site}url = \"mysql://orch@{{node}}/app\"\n"));
        assert!(p.iter().any(|m| m.contains("does not match kind")), "{p:?}");
    }

    #[test]
    fn dns_keys_depend_on_the_kind() {
        let p = problems("[dns.d]\nkind = \"rfc2136\"\nserver = \"192.0.2.53\"\nzone = \"example.org\"\ntoken_file = \"secret\"\n");
        assert!(
            p.iter()
                .any(|m| m.contains("`token_file` does not apply to kind = \"rfc2136\"")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("needs `tsig_name`")), "{p:?}");
        assert!(
            p.iter().any(|m| m.contains("needs `tsig_secret_file`")),
            "{p:?}"
        );
        let loaded = check(
            "[dns.d]\nkind = \"rfc2136\"\nserver = \"192.0.2.53\"\nzone = \"example.org.\"\ntsig_name = \"k\"\ntsig_secret_file = \"secret\"\n\
             [sites.w]\nprimary = \"alice\"\nstandby = \"bob\"\ndns = \"d\"\nrecords = [\"www.example.org\"]\n",
        )
        .unwrap();
        assert_eq!(loaded.config.dns["d"].zone.as_deref(), Some("example.org"));
        let p = problems(
            "[dns.d]\nkind = \"duckdns\"\ntoken_file = \"missing\"\n\
             [sites.w]\nprimary = \"alice\"\nstandby = \"bob\"\ndns = \"d\"\nrecords = [\"www.example.net\"]\n",
        );
        assert!(
            p.iter().any(|m| m.contains("missing: No such file")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.contains("is a dynamic-DNS service")),
            "{p:?}"
        );
        let p = problems(
            "[dns.d]\nkind = \"cloudflare\"\ntoken_file = \"missing\"\nzone = \"example.org\"\n\
             api_url = \"http://192.0.2.1/client/v4\"\nnameservers = [\"ns1.example.org\", \"192.0.2.53:5353\", \"bad:port:x\"]\n",
        );
        assert!(
            p.iter().any(|m| m.contains("credentials in clear")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("nameservers[2]")), "{p:?}");
        assert_eq!(
            p.iter().filter(|m| m.contains("nameservers")).count(),
            1,
            "{p:?}"
        );
    }

    #[test]
    fn api_urls_must_not_leak_credentials() {
        assert!(check_api_url("https://api.cloudflare.com/client/v4").is_ok());
        assert!(check_api_url("http://127.0.0.1:8080/v5/livedns").is_ok());
        assert!(check_api_url("http://[::1]:8080").is_ok());
        assert!(check_api_url("http://203.0.113.5/api").is_err());
        assert!(check_api_url("https://user:pw@example.org/").is_err());
        assert!(check_api_url("https://example.org/?token=x").is_err());
        assert!(check_api_url("ftp://example.org/").is_err());
        assert_eq!(
            dyndns2_url("dynupdate.no-ip.com"),
            "https://dynupdate.no-ip.com"
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("[2001:db8::1]:51820", None).unwrap().host,
            "2001:db8::1"
        );
        assert_eq!(
            parse_endpoint("ns1.example.net", Some(53)).unwrap().port,
            53
        );
        assert!(parse_endpoint("2001:db8::1:51820", None).is_err());
        assert!(parse_endpoint("host:0", None).is_err());
        assert!(parse_endpoint("host", None).is_err());
        assert!(parse_endpoint("bad host:1", None).is_err());
    }

    #[test]
    fn network_and_addresses() {
        let p = problems("").len();
        assert_eq!(p, 0);
        let text_problem = |extra: &str| problems(extra).join("\n");
        // A third node, and a duplicate of alice's address.
        let all = text_problem("[nodes.carol]\npublic_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\ntunnel_ip = \"198.51.100.1\"\n");
        assert!(all.contains("exactly two nodes, this file has 3"), "{all}");
        assert!(all.contains("is also node alice's tunnel_ip"), "{all}");
    }
}
