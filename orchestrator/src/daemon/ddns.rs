//! Dynamic DNS for a node's own name (`[nodes.NAME.ddns]`): keep the name at the node's
//! public address, so that the peer can find it again after the ISP renumbers it.
//!
//! The address comes from `public_ip`: `"auto"` uses what the peer reports seeing in its
//! heartbeats (the truth as the internet sees it, through NAT), else the source address
//! of the default route; a fixed address is used as is; `interface:NAME` takes that
//! interface's public address; `url:` asks a what-is-my-IP web service (once per check). The name is checked against the
//! authoritative server every 60 s and as soon as the address changes, and updated at most
//! once per 30 s.

use crate::cluster::peer::PeerView;
use crate::config::{Loaded, PublicIp};
use crate::dns::DnsError;
use crate::dns::{Kind, Provider as _};
use agent::state::{NewEvent, Outcome, Store};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const CHECK_EVERY: Duration = Duration::from_secs(60);
pub const MIN_UPDATE_GAP: Duration = Duration::from_secs(30);
const TTL: u32 = 60;

/// This node's public address now, if it can be told without asking a web service (see
/// [`fetch_address`] for `url:`).
pub fn public_ip(source: &PublicIp, view: &PeerView) -> Result<IpAddr, String> {
    match source {
        PublicIp::Fixed(ip) => Ok(*ip),
        PublicIp::Auto => match view.heartbeat.as_ref().and_then(|h| h.observed_endpoint) {
            // What the peer says it sees is its word only: an address nobody could reach
            // us at is not published (the default route's address is, with a word why).
            Some(seen) => match publishable(seen.ip().to_canonical()) {
                Ok(ip) => Ok(ip),
                Err(why) => {
                    tracing::warn!(%why, "Not publishing the address the peer reports; using the default route's");
                    default_route_address()
                }
            },
            None => default_route_address(),
        },
        PublicIp::Interface(name) => {
            let all =
                if_addrs::get_if_addrs().map_err(|e| format!("listing network interfaces: {e}"))?;
            let pairs: Vec<(String, IpAddr)> =
                all.into_iter().map(|i| (i.name.clone(), i.ip())).collect();
            pick_interface_address(name, &pairs)
        }
        PublicIp::Url(url) => Err(format!("{url} must be fetched")),
    }
}

/// `ip` if the internet could reach a node at it: not loopback, unspecified, private,
/// link-local, shared (CGNAT 100.64/10), multicast or broadcast; IPv6 not unique-local.
pub fn publishable(ip: IpAddr) -> Result<IpAddr, String> {
    let bad = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_loopback() {
                Some("a loopback address")
            } else if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                Some("not a host address")
            } else if a.is_private() {
                Some("a private address")
            } else if a.is_link_local() {
                Some("a link-local address")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("a carrier-grade NAT address (100.64.0.0/10)")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if a.is_loopback() || a.is_unspecified() || a.is_multicast() {
                Some("not a public host address")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("a unique-local address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else {
                None
            }
        }
    };
    match bad {
        Some(why) => Err(format!("{ip} is {why}")),
        None => Ok(ip),
    }
}

/// The address of interface `name` to publish: its first IPv4 address that is not
/// loopback or link-local, else its first global IPv6 address (not loopback, link-local
/// or unique-local).
pub fn pick_interface_address(name: &str, all: &[(String, IpAddr)]) -> Result<IpAddr, String> {
    let mine: Vec<IpAddr> = all
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, ip)| *ip)
        .collect();
    if mine.is_empty() {
        let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        names.dedup();
        return Err(format!(
            "interface {name} does not exist or has no address (interfaces: {})",
            names.join(", ")
        ));
    }
    let v4 = mine.iter().find(|ip| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(_) => false,
    });
    let v6 = mine.iter().find(|ip| match ip {
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !v6.is_loopback()
                && !v6.is_unspecified()
                && (first & 0xffc0) != 0xfe80
                && (first & 0xfe00) != 0xfc00
        }
        IpAddr::V4(_) => false,
    });
    v4.or(v6).copied().ok_or_else(|| {
        format!("interface {name} has no usable address (only loopback, link-local or unique-local ones)")
    })
}

/// Asks a what-is-my-IP web service (`public_ip = "url:..."`): the answer must be an
/// address alone (surrounding white space allowed), as api.ipify.org, icanhazip.com or
/// ifconfig.me/ip give.
pub async fn fetch_address(client: &reqwest::Client, url: &url::Url) -> Result<IpAddr, String> {
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| format!("{url}: {}", agent::error_chain(&e.without_url())))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("{url}: {}", agent::error_chain(&e.without_url())))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > 256 {
            return Err(format!("{url}: the answer is longer than an address"));
        }
    }
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    text.trim()
        .parse()
        .map_err(|_| format!("{url} answered `{}`, not an address", text.trim()))
}

/// The source address the kernel picks for the default route. `connect` on a UDP socket
/// sends nothing; the probe addresses are documentation addresses that only a default
/// route covers.
fn default_route_address() -> Result<IpAddr, String> {
    for probe in [
        SocketAddr::from(([203, 0, 113, 1], 9)),
        SocketAddr::from((std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9)),
    ] {
        let bind: SocketAddr = if probe.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        if let Ok(socket) = UdpSocket::bind(bind) {
            if socket.connect(probe).is_ok() {
                if let Ok(local) = socket.local_addr() {
                    return Ok(local.ip());
                }
            }
        }
    }
    Err("no default route, and the peer has not reported our address yet".into())
}

/// Why the dynamic DNS task cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DdnsError {
    #[error("ddns: no [dns.{0}]")]
    NoProvider(String),
    #[error("ddns")]
    Provider(#[source] DnsError),
    #[error("ddns: HTTP client")]
    Http(#[source] reqwest::Error),
}

/// Keeps this node's name current until `stop`; `now` asks for a check at once (the old
/// master back after a failover re-points its name without waiting).
pub async fn run(
    loaded: std::sync::Arc<Loaded>,
    store: Store,
    mut view: watch::Receiver<PeerView>,
    now: std::sync::Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) -> Result<(), DdnsError> {
    let me = loaded.me();
    let Some(ddns) = me.ddns.clone() else {
        return Ok(());
    };
    let provider_config = loaded
        .config
        .dns
        .get(&ddns.provider)
        .cloned()
        .ok_or_else(|| DdnsError::NoProvider(ddns.provider.clone()))?;
    let provider = crate::dns::provider(&provider_config)
        .await
        .map_err(DdnsError::Provider)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("orch/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(DdnsError::Http)?;
    let mut fetched: Option<(Result<IpAddr, String>, Instant)> = None;
    let mut verified: Option<(IpAddr, Instant)> = None;
    let mut last_update: Option<Instant> = None;
    let mut last_problem: Option<String> = None;
    loop {
        let ip = match &me.public_ip {
            // A web service is asked at most once per check period.
            PublicIp::Url(url) => match &fetched {
                Some((ip, at)) if at.elapsed() < CHECK_EVERY => ip.clone(),
                _ => {
                    let ip = fetch_address(&http, url).await;
                    fetched = Some((ip.clone(), Instant::now()));
                    ip
                }
            },
            source => public_ip(source, &view.borrow()),
        };
        let due = match (&ip, verified) {
            (Ok(ip), Some((v, at))) => *ip != v || at.elapsed() >= CHECK_EVERY,
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        match ip {
            Err(problem) if last_problem.as_ref() != Some(&problem) => {
                tracing::debug!(%problem, "Public address unknown for now");
                last_problem = Some(problem);
            }
            Ok(ip) if due && last_update.is_none_or(|t| t.elapsed() >= MIN_UPDATE_GAP) => {
                let kind = Kind::for_ip(ip);
                match provider.get(&ddns.name, kind).await {
                    Ok(current) if crate::dns::same_values(&current, &[ip.to_string()]) => {
                        verified = Some((ip, Instant::now()))
                    }
                    Ok(current) => {
                        match provider.set(&ddns.name, kind, &[ip.to_string()], TTL).await {
                            Ok(()) => {
                                tracing::info!(name = %ddns.name, old = ?current, new = %ip, "Dynamic DNS updated");
                                record(
                                    &store,
                                    &format!("{} {kind} {} -> {ip}", ddns.name, current.join(",")),
                                )
                                .await;
                                verified = Some((ip, Instant::now()));
                                last_update = Some(Instant::now());
                            }
                            Err(error) => {
                                tracing::warn!(name = %ddns.name, error = agent::error_chain(&error), "Dynamic DNS update failed")
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(name = %ddns.name, error = agent::error_chain(&error), "Dynamic DNS check failed")
                    }
                }
            }
            _ => {}
        }
        let wait = match last_update {
            Some(t) if t.elapsed() < MIN_UPDATE_GAP => MIN_UPDATE_GAP - t.elapsed(),
            _ => CHECK_EVERY,
        };
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
            changed = view.changed() => if changed.is_err() { return Ok(()) },
            () = now.notified() => {
                verified = None;
                last_update = None;
            }
        }
    }
}

async fn record(store: &Store, summary: &str) {
    let event = NewEvent {
        at: agent::unix_millis(std::time::SystemTime::now()),
        site: None,
        kind: agent::state::EventKind::Ddns,
        outcome: Outcome::Info,
        summary,
        detail: None,
    };
    if let Err(error) = store.record(&event).await {
        tracing::warn!(
            error = agent::error_chain(&error),
            "Could not record the dynamic DNS change"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent::peer::Heartbeat;

    #[test]
    fn auto_prefers_what_the_peer_sees() {
        let view = PeerView {
            heartbeat: Some(Heartbeat {
                observed_endpoint: Some("[::ffff:192.0.2.21]:51820".parse().unwrap()),
                ..Heartbeat::default()
            }),
            ..PeerView::default()
        };
        assert_eq!(
            public_ip(&PublicIp::Auto, &view).unwrap(),
            "192.0.2.21".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            public_ip(&PublicIp::Fixed("203.0.113.9".parse().unwrap()), &view).unwrap(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert!(
            public_ip(&PublicIp::Interface("nonexistent0".into()), &view)
                .unwrap_err()
                .contains("interface nonexistent0 does not exist")
        );
    }

    #[test]
    fn the_peers_word_is_not_published_when_nobody_could_reach_it() {
        let seen = |addr: &str| PeerView {
            heartbeat: Some(Heartbeat {
                observed_endpoint: Some(addr.parse().unwrap()),
                ..Heartbeat::default()
            }),
            ..PeerView::default()
        };
        for bad in [
            "127.0.0.1:1",
            "0.0.0.0:1",
            "10.1.2.3:1",
            "172.16.0.1:1",
            "192.168.1.1:1",
            "169.254.1.1:1",
            "100.64.0.1:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "[::1]:1",
            "[fd00::1]:1",
            "[fe80::1]:1",
            "[ff02::1]:1",
            "[::ffff:10.0.0.1]:1",
        ] {
            let got = public_ip(&PublicIp::Auto, &seen(bad));
            let ip: std::net::SocketAddr = bad.parse().unwrap();
            assert!(
                got.as_ref().map_or(true, |g| *g != ip.ip().to_canonical()),
                "{bad} was taken from the peer: {got:?}"
            );
            assert!(publishable(ip.ip().to_canonical()).is_err(), "{bad}");
        }
        for good in [
            "192.0.2.21:1",
            "203.0.113.9:1",
            "[2001:db8::5]:1",
            "[::ffff:198.51.100.7]:1",
        ] {
            let ip: std::net::SocketAddr = good.parse().unwrap();
            assert_eq!(
                public_ip(&PublicIp::Auto, &seen(good)).unwrap(),
                ip.ip().to_canonical(),
                "{good}"
            );
        }
    }

    #[test]
    fn an_interface_publishes_its_first_public_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let all = vec![
            ("lo".to_owned(), ip("127.0.0.1")),
            ("eth0".to_owned(), ip("fe80::1")),
            ("eth0".to_owned(), ip("fd00::1")),
            ("eth0".to_owned(), ip("2001:db8::5")),
            ("eth0".to_owned(), ip("169.254.3.3")),
            ("eth0".to_owned(), ip("192.0.2.7")),
            ("wan".to_owned(), ip("fe80::2")),
            ("wan".to_owned(), ip("2001:db8::9")),
        ];
        assert_eq!(
            pick_interface_address("eth0", &all).unwrap(),
            ip("192.0.2.7")
        );
        assert_eq!(
            pick_interface_address("wan", &all).unwrap(),
            ip("2001:db8::9")
        );
        assert!(pick_interface_address("lo", &all)
            .unwrap_err()
            .contains("no usable address"));
        let missing = pick_interface_address("ppp0", &all).unwrap_err();
        assert!(missing.contains("interfaces: eth0, lo, wan"), "{missing}");
    }

    /// Serves one HTTP answer with `body` on loopback; returns its URL.
    fn serve_once(body: &'static str) -> url::Url {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://127.0.0.1:{port}/ip").parse().unwrap()
    }

    #[tokio::test]
    async fn a_web_service_gives_the_address() {
        let client = reqwest::Client::new();
        let got = fetch_address(&client, &serve_once("203.0.113.7\n"))
            .await
            .unwrap();
        assert_eq!(got, "203.0.113.7".parse::<IpAddr>().unwrap());
        let got = fetch_address(&client, &serve_once("2001:db8::7"))
            .await
            .unwrap();
        assert_eq!(got, "2001:db8::7".parse::<IpAddr>().unwrap());
        let bad = fetch_address(&client, &serve_once("<html>hello</html>"))
            .await
            .unwrap_err();
        assert!(bad.contains("not an address"), "{bad}");
    }
}
