//! The commented starter config that `orch init` writes.

use std::net::IpAddr;

pub fn node_section(
    node: &str,
    public_key: &str,
    tunnel_ip: IpAddr,
    endpoint: Option<&str>,
) -> String {
    let endpoint = match endpoint {
        Some(ep) => format!("endpoint = \"{ep}\""),
        None => "# endpoint = \"HOST:PORT\"     # where the peer reaches this node, e.g. a dynamic DNS name".into(),
    };
    format!(
        "[nodes.{node}]\npublic_key = \"{public_key}\"\ntunnel_ip = \"{tunnel_ip}\"\n{endpoint}\n"
    )
}

pub fn config(node: &str, section: &str, tunnel_ip: IpAddr) -> String {
    let network = match tunnel_ip {
        IpAddr::V4(a) => ipnet::Ipv4Net::new(a, 24)
            .map(|n| n.trunc().to_string())
            .unwrap_or_default(),
        IpAddr::V6(a) => ipnet::Ipv6Net::new(a, 64)
            .map(|n| n.trunc().to_string())
            .unwrap_or_default(),
    };
    format!(
        r#"# orch configuration, written by `orch init --node {node}`.
# The same file goes on both nodes; `orch config check` validates it on each.
# Every key is described in the README's configuration section.

[cluster]
name = "home"
network = "{network}"        # the tunnel's private network; both tunnel_ip lie inside
listen_port = 51820
keepalive = "15s"
control_port = 7440

{section}public_ip = "auto"
# ssh = {{ user = "orch", port = 22 }}

# The peer: run `orch init --node NAME` on it and paste its section here.
# [nodes.bob]
# public_key = "…"
# tunnel_ip = "…"
# endpoint = "bob.dyn.example.org:51820"

# [mail]
# transport = "smtp"
# host = "smtp.example.org"
# from = "orch@example.org"
# to = ["you@example.org"]

# [sites.my-web]
# primary = "{node}"
# standby = "bob"
# report = "30 4 * * *"
#
# [[sites.my-web.sync]]
# name = "www"
# path = "/var/www/my-web"
# schedule = "0 3 * * *"
"#
    )
}
