//! Dynamic DNS for a node's own name (`[nodes.NAME.ddns]`): keep the name at the node's
//! public address, so that the peer can find it again after the ISP renumbers it.
//!
//! The address comes from `public_ip`: `"auto"` uses what the peer reports seeing in its
//! heartbeats (the truth as the internet sees it, through NAT), else the source address
//! of the default route; a fixed address is used as is. The name is checked against the
//! authoritative server every 60 s and as soon as the address changes, and updated at most
//! once per 30 s.

use crate::config::{Loaded, PublicIp};
use crate::dns::{Kind, Provider as _};
use crate::peering::PeerView;
use agent::state::{NewEvent, Outcome, Store};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub const CHECK_EVERY: Duration = Duration::from_secs(60);
pub const MIN_UPDATE_GAP: Duration = Duration::from_secs(30);
const TTL: u32 = 60;

/// This node's public address now, if it can be told.
pub fn public_ip(source: &PublicIp, view: &PeerView) -> Result<IpAddr, String> {
    match source {
        PublicIp::Fixed(ip) => Ok(*ip),
        PublicIp::Auto => match view.heartbeat.as_ref().and_then(|h| h.observed_endpoint) {
            Some(seen) => Ok(seen.ip().to_canonical()),
            None => default_route_address(),
        },
        PublicIp::Interface(name) => Err(format!(
            "public_ip = \"interface:{name}\" is not implemented yet"
        )),
        PublicIp::Url(url) => Err(format!("public_ip = \"url:{url}\" is not implemented yet")),
    }
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

/// Keeps this node's name current until `stop`.
pub async fn run(
    loaded: std::sync::Arc<Loaded>,
    store: Store,
    mut view: watch::Receiver<PeerView>,
    stop: CancellationToken,
) -> Result<(), String> {
    let me = loaded.me();
    let Some(ddns) = me.ddns.clone() else {
        return Ok(());
    };
    let provider_config = loaded
        .config
        .dns
        .get(&ddns.provider)
        .cloned()
        .ok_or_else(|| format!("no [dns.{}]", ddns.provider))?;
    let provider = crate::dns::provider(&provider_config)
        .await
        .map_err(|e| format!("ddns: {e}"))?;
    let mut verified: Option<(IpAddr, Instant)> = None;
    let mut last_update: Option<Instant> = None;
    let mut last_problem: Option<String> = None;
    loop {
        let ip = public_ip(&me.public_ip, &view.borrow());
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
        }
    }
}

async fn record(store: &Store, summary: &str) {
    let event = NewEvent {
        at: agent::unix_millis(std::time::SystemTime::now()),
        site: None,
        kind: "ddns",
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
        assert!(public_ip(&PublicIp::Interface("eth0".into()), &view)
            .unwrap_err()
            .contains("not implemented"));
    }
}
