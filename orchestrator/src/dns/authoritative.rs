//! What a zone's authoritative servers publish. HTTP providers change records through an
//! API; only the authoritative servers say what the world will actually be told, so every
//! change is verified there, and update-only services (DuckDNS, dyndns2) are read there.
//!
//! The servers are the configured `nameservers`, or found the way a resolver would: the
//! zone that holds a name (the owner of the SOA in the answer), its NS records, their
//! addresses — asked of the system's resolvers (`/etc/resolv.conf`).

use super::wire::{self, fqdn};
use super::{same_values, DnsError, Kind};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a change may take to reach every authoritative server.
pub const PROPAGATION: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_secs(1);

pub struct Authoritative {
    /// `host[:port]` as configured; empty: discover.
    configured: Vec<String>,
    /// Where discovery asks; the system's resolvers unless set (tests).
    resolvers: Vec<SocketAddr>,
    /// The port of discovered servers (53; tests use another).
    port: u16,
    /// Discovered or resolved servers, per zone.
    cache: Mutex<Vec<(Name, Vec<SocketAddr>)>>,
    pub propagation: Duration,
}

impl Authoritative {
    pub fn new(configured: &[String]) -> Authoritative {
        Authoritative {
            configured: configured.to_vec(),
            resolvers: Vec::new(),
            port: 53,
            cache: Mutex::new(Vec::new()),
            propagation: PROPAGATION,
        }
    }

    /// Discovers through `resolvers` instead of the system's, and expects the
    /// authoritative servers on `port`.
    pub fn with_resolvers(resolvers: Vec<SocketAddr>, port: u16) -> Authoritative {
        Authoritative {
            resolvers,
            port,
            ..Authoritative::new(&[])
        }
    }

    /// The authoritative servers of the zone holding `name`.
    pub async fn servers(&self, name: &str) -> Result<Vec<SocketAddr>, DnsError> {
        let name = fqdn(name)?;
        let mut cache = self.cache.lock().await;
        if let Some((_, servers)) = cache.iter().find(|(zone, _)| zone.zone_of(&name)) {
            return Ok(servers.clone());
        }
        let (zone, servers) = if self.configured.is_empty() {
            self.discover(&name).await?
        } else {
            (Name::root(), self.resolve_configured().await?)
        };
        cache.push((zone, servers.clone()));
        Ok(servers)
    }

    async fn resolve_configured(&self) -> Result<Vec<SocketAddr>, DnsError> {
        let mut out = Vec::new();
        for server in &self.configured {
            let endpoint = crate::config::validate_endpoint(server)
                .or_else(|_| crate::config::validate_endpoint(&format!("{server}:53")))
                .map_err(DnsError::Config)?;
            let addrs = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| {
                    DnsError::Config(format!("cannot resolve nameserver {server}: {e}"))
                })?;
            out.extend(addrs);
        }
        out.dedup();
        Ok(out)
    }

    fn resolvers(&self) -> Result<Vec<SocketAddr>, DnsError> {
        if !self.resolvers.is_empty() {
            return Ok(self.resolvers.clone());
        }
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let found: Vec<SocketAddr> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|v| v.trim().split('%').next()?.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        if found.is_empty() {
            return Err(DnsError::Config(
                "no nameserver in /etc/resolv.conf to find the zone's authoritative servers; set `nameservers` in the [dns] table".into(),
            ));
        }
        Ok(found)
    }

    /// Asks each resolver in turn; the first answer counts.
    async fn ask(
        &self,
        name: &Name,
        rtype: RecordType,
    ) -> Result<hickory_proto::op::Message, DnsError> {
        let mut last = None;
        for resolver in self.resolvers()? {
            match wire::exchange(resolver, wire::query_message(name, rtype, true), None).await {
                Ok(answer) => return Ok(answer),
                Err(source) => {
                    last = Some(DnsError::Transport {
                        server: resolver.to_string(),
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| DnsError::Config("no resolver".into())))
    }

    async fn discover(&self, name: &Name) -> Result<(Name, Vec<SocketAddr>), DnsError> {
        // The zone: the SOA's owner, in the answer (the name is an apex) or the authority
        // section (it is not, or it does not exist).
        let soa = self.ask(name, RecordType::SOA).await?;
        let zone = soa
            .answers()
            .iter()
            .chain(soa.name_servers())
            .find(|r| r.record_type() == RecordType::SOA)
            .map(|r| r.name().clone())
            .ok_or_else(|| {
                DnsError::Config(format!(
                    "cannot find the zone of {name}: the resolver's answer has no SOA ({})",
                    soa.response_code()
                ))
            })?;
        let ns = self.ask(&zone, RecordType::NS).await?;
        let hosts: Vec<Name> = ns
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::NS(ns) => Some(ns.0.clone()),
                _ => None,
            })
            .collect();
        let mut servers = Vec::new();
        for host in &hosts {
            for rtype in [RecordType::A, RecordType::AAAA] {
                let answer = self.ask(host, rtype).await?;
                servers.extend(answer.answers().iter().filter_map(|r| match r.data() {
                    RData::A(a) => Some(SocketAddr::new(IpAddr::V4(a.0), self.port)),
                    RData::AAAA(a) => Some(SocketAddr::new(IpAddr::V6(a.0), self.port)),
                    _ => None,
                }));
            }
        }
        servers.sort();
        servers.dedup();
        if servers.is_empty() {
            return Err(DnsError::Config(format!(
                "zone {zone} has no reachable nameserver addresses (NS: {hosts:?}); set `nameservers` in the [dns] table"
            )));
        }
        Ok((zone, servers))
    }

    /// What the first server that answers publishes for `name`.
    pub async fn get(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        let mut last = None;
        for server in self.servers(name).await? {
            match wire::query(server, name, kind, false).await {
                Ok(values) => return Ok(values),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| DnsError::Config(format!("no nameserver for {name}"))))
    }

    /// Waits until every authoritative server that answers publishes `values` (and at least
    /// one answers), up to `self.propagation`.
    pub async fn wait_for(
        &self,
        name: &str,
        kind: Kind,
        values: &[String],
    ) -> Result<(), DnsError> {
        let servers = self.servers(name).await?;
        let deadline = Instant::now() + self.propagation;
        loop {
            let mut behind = Vec::new();
            let mut answered = 0;
            for server in &servers {
                match wire::query(*server, name, kind, false).await {
                    Ok(now) if same_values(&now, values) => answered += 1,
                    Ok(now) => {
                        answered += 1;
                        behind.push(format!("{server} still has {now:?}"));
                    }
                    Err(DnsError::Server { message, .. }) => {
                        behind.push(format!("{server}: {message}"))
                    }
                    // Unreachable: the others decide.
                    Err(_) => {}
                }
            }
            if answered > 0 && behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why = if answered == 0 {
                    format!("none of {servers:?} answered")
                } else {
                    behind.join("; ")
                };
                return Err(DnsError::Unverified {
                    name: name.to_owned(),
                    kind,
                    waited: self.propagation,
                    why,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
