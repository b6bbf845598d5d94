//! DNS providers. The DNS record is the lock that decides who is master, so every change
//! that matters is a compare-and-swap: it happens only if the record still holds what we
//! expect, and a conflict reports what is there instead.

pub mod authoritative;
pub mod cloudflare;
pub mod command;
pub mod desec;
pub mod dynupdate;
pub mod gandi;
pub mod http;
pub mod managed;
pub mod ovh;
pub mod rfc2136;
pub mod wire;

use std::time::Duration;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;

/// The record types orch manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    A,
    Aaaa,
    Txt,
}

impl Kind {
    /// The address record type for `ip`.
    pub fn for_ip(ip: IpAddr) -> Kind {
        if ip.is_ipv4() {
            Kind::A
        } else {
            Kind::Aaaa
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::A => "A",
            Kind::Aaaa => "AAAA",
            Kind::Txt => "TXT",
        })
    }
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    Swapped,
    /// The record did not hold the expected values; nothing was changed.
    Conflict {
        current: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{0}")]
    Config(String),
    #[error("DNS server {server}: {message}")]
    Server { server: String, message: String },
    #[error("DNS server {server} did not answer")]
    Transport {
        server: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("`{value}` is not a valid {kind} value")]
    Value { kind: Kind, value: String },
    #[error("{provider}: {message}")]
    Api { provider: String, message: String },
    #[error("{name} {kind} was changed at the provider but after {} the authoritative servers do not all show it: {why}", humantime::format_duration(*.waited))]
    Unverified {
        name: String,
        kind: Kind,
        waited: Duration,
        why: String,
    },
}

/// What failover and dynamic DNS need from a DNS provider. Values are text: an address
/// for A/AAAA, the string for TXT; their order does not matter.
pub trait Provider: Send + Sync {
    fn get(
        &self,
        name: &str,
        kind: Kind,
    ) -> impl Future<Output = Result<Vec<String>, DnsError>> + Send;

    /// Replaces the record's values with `new` only if they are exactly `expected` now
    /// (`expected` empty: only if the record does not exist).
    fn compare_and_swap(
        &self,
        name: &str,
        kind: Kind,
        expected: &[String],
        new: &[String],
        ttl: u32,
    ) -> impl Future<Output = Result<Swap, DnsError>> + Send;

    /// Makes the record hold `values` whatever it held (dynamic DNS of a node's own name).
    fn set(
        &self,
        name: &str,
        kind: Kind,
        values: &[String],
        ttl: u32,
    ) -> impl Future<Output = Result<(), DnsError>> + Send
    where
        Self: Sized,
    {
        async move {
            // Read, then swap from what was read: a concurrent change shows as a conflict,
            // and is retried a few times.
            for _ in 0..3 {
                let current = self.get(name, kind).await?;
                if same_values(&current, values) {
                    return Ok(());
                }
                if self
                    .compare_and_swap(name, kind, &current, values, ttl)
                    .await?
                    == Swap::Swapped
                {
                    return Ok(());
                }
            }
            Err(DnsError::Config(format!(
                "{name} {kind} kept changing while being set"
            )))
        }
    }
}

/// One record's part of a swap of several: from `expected` (empty: the record must not
/// exist) to `new` (empty: the record is deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub kind: Kind,
    pub expected: Vec<String>,
    pub new: Vec<String>,
}

/// Swaps every record of `changes` with compare-and-swap, one after the other, stopping
/// at the first conflict (for providers without a transaction: put the lock record
/// first, so that nothing else changes unless it was won).
pub async fn swap_in_order(
    p: &impl Provider,
    changes: &[Change],
    ttl: u32,
) -> Result<Swap, DnsError> {
    for c in changes {
        if c.expected.is_empty() && c.new.is_empty() {
            continue;
        }
        if let Swap::Conflict { current } = p
            .compare_and_swap(&c.name, c.kind, &c.expected, &c.new, ttl)
            .await?
        {
            return Ok(Swap::Conflict {
                current: current
                    .into_iter()
                    .map(|v| format!("{} {}: {v}", c.name, c.kind))
                    .collect(),
            });
        }
    }
    Ok(Swap::Swapped)
}

/// The name of a site's ownership record: `_orch.SITE.ZONE`, holding `master=NODE epoch=N`.
pub fn orch_record(site: &str, zone: &str) -> String {
    format!("_orch.{site}.{zone}")
}

/// Any configured provider.
pub enum AnyProvider {
    Rfc2136(rfc2136::Rfc2136),
    Managed(managed::Managed),
}

impl AnyProvider {
    /// Every change or none: one UPDATE with a prerequisite per record on RFC 2136; on the
    /// API providers one compare-and-swap after the other, in order (see
    /// [`swap_in_order`]).
    pub async fn swap_all(&self, changes: &[Change], ttl: u32) -> Result<Swap, DnsError> {
        match self {
            AnyProvider::Rfc2136(p) => p.swap_all(changes, ttl).await,
            AnyProvider::Managed(p) => swap_in_order(p, changes, ttl).await,
        }
    }

    /// What the zone's authoritative servers publish (for `orch dns show`): for RFC 2136
    /// the primary server is one; for the others they are asked directly, not the API.
    pub async fn published(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        match self {
            AnyProvider::Rfc2136(p) => p.get(name, kind).await,
            AnyProvider::Managed(p) => p.published(name, kind).await,
        }
    }
}

impl Provider for AnyProvider {
    async fn get(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        match self {
            AnyProvider::Rfc2136(p) => p.get(name, kind).await,
            AnyProvider::Managed(p) => p.get(name, kind).await,
        }
    }

    async fn compare_and_swap(
        &self,
        name: &str,
        kind: Kind,
        expected: &[String],
        new: &[String],
        ttl: u32,
    ) -> Result<Swap, DnsError> {
        match self {
            AnyProvider::Rfc2136(p) => p.compare_and_swap(name, kind, expected, new, ttl).await,
            AnyProvider::Managed(p) => p.compare_and_swap(name, kind, expected, new, ttl).await,
        }
    }
}

/// Builds the provider a `[dns.NAME]` table describes.
pub async fn provider(p: &crate::config::DnsProvider) -> Result<AnyProvider, DnsError> {
    match p.kind {
        crate::config::DnsKind::Rfc2136 => {
            Ok(AnyProvider::Rfc2136(rfc2136::Rfc2136::new(p).await?))
        }
        _ => Ok(AnyProvider::Managed(managed::Managed::new(p)?)),
    }
}

/// Compares value sets, ignoring order, duplicates and how an address is written.
pub fn same_values(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| {
        let mut out: Vec<String> = v
            .iter()
            .map(|s| {
                s.parse::<IpAddr>()
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|_| s.clone())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    };
    norm(a) == norm(b)
}

/// One record as the authoritative servers serve it.
pub type Published = (String, Kind, Vec<String>);

/// What `site`'s records (A and AAAA) and its `_orch` TXT record hold at the
/// authoritative servers; `None` when the site has no DNS provider.
pub async fn site_view(
    config: &crate::config::Config,
    site: &crate::config::Site,
) -> Option<Result<Vec<Published>, DnsError>> {
    let configured = config.dns.get(site.dns.as_ref()?)?;
    let zone = configured.zone.clone().unwrap_or_default();
    let mut queries: Vec<(String, Kind)> = Vec::new();
    for record in &site.records {
        queries.push((record.clone(), Kind::A));
        queries.push((record.clone(), Kind::Aaaa));
    }
    queries.push((orch_record(&site.name, &zone), Kind::Txt));
    Some(
        async {
            let dns = provider(configured).await?;
            let mut rows = Vec::new();
            for (name, kind) in queries {
                let values = dns.published(&name, kind).await?;
                rows.push((name, kind, values));
            }
            Ok(rows)
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_sets_compare_without_order() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(same_values(
            &v(&["192.0.2.1", "192.0.2.2"]),
            &v(&["192.0.2.2", "192.0.2.1"])
        ));
        assert!(same_values(&v(&["2001:db8::1"]), &v(&["2001:0db8:0::1"])));
        assert!(!same_values(&v(&["192.0.2.1"]), &v(&[])));
    }
}
