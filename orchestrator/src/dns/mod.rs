//! DNS providers. The DNS record is the lock that decides who is master, so every change
//! that matters is a compare-and-swap: it happens only if the record still holds what we
//! expect, and a conflict reports what is there instead.

pub mod rfc2136;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;

/// The record types orch manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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

/// The name of a site's ownership record: `_orch.SITE.ZONE`, holding `master=NODE epoch=N`.
pub fn orch_record(site: &str, zone: &str) -> String {
    format!("_orch.{site}.{zone}")
}

/// Builds the provider a `[dns.NAME]` table describes.
pub async fn provider(p: &crate::config::DnsProvider) -> Result<rfc2136::Rfc2136, DnsError> {
    match p.kind {
        crate::config::DnsKind::Rfc2136 => rfc2136::Rfc2136::new(p).await,
        other => Err(DnsError::Config(format!(
            "dns.{}: kind = \"{}\" is not implemented yet (rfc2136 is)",
            p.name,
            serde_json::to_value(other)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ))),
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
