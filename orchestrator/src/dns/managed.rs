//! The providers reached through an HTTP API or a program. Their APIs have no atomic
//! compare-and-swap, so a swap is read–check–write: read the record through the API (or
//! the authoritative servers for update-only services), give up with a conflict unless it
//! holds what is expected, write, then wait until the zone's authoritative servers serve
//! the new values. The window between the read and the write is as short as two API calls.

use super::authoritative::Authoritative;
use super::cloudflare::Cloudflare;
use super::command::Command;
use super::desec::Desec;
use super::dynupdate::{DuckDns, Dyndns2};
use super::gandi::Gandi;
use super::ovh::Ovh;
use super::{same_values, DnsError, Kind, Provider, Swap};
use crate::config::{DnsKind, DnsProvider};

enum Backend {
    Cloudflare(Cloudflare),
    Ovh(Ovh),
    Gandi(Gandi),
    Desec(Desec),
    DuckDns(DuckDns),
    Dyndns2(Dyndns2),
    Command(Command),
}

pub struct Managed {
    backend: Backend,
    pub authoritative: Authoritative,
    /// Whether changes are verified at the authoritative servers (a command provider
    /// without `zone` or `nameservers` vouches for its own changes).
    verify: bool,
}

impl Managed {
    pub fn new(p: &DnsProvider) -> Result<Managed, DnsError> {
        let backend = match p.kind {
            DnsKind::Cloudflare => Backend::Cloudflare(Cloudflare::new(p)?),
            DnsKind::Ovh => Backend::Ovh(Ovh::new(p)?),
            DnsKind::Gandi => Backend::Gandi(Gandi::new(p)?),
            DnsKind::Desec => Backend::Desec(Desec::new(p)?),
            DnsKind::Duckdns => Backend::DuckDns(DuckDns::new(p)?),
            DnsKind::Dyndns2 => Backend::Dyndns2(Dyndns2::new(p)?),
            DnsKind::Command => Backend::Command(Command::new(p)?),
            DnsKind::Rfc2136 => {
                return Err(DnsError::Config(
                    "rfc2136 is not an API provider".to_owned(),
                ))
            }
        };
        let verify = !matches!(backend, Backend::Command(_))
            || p.zone.is_some()
            || !p.nameservers.is_empty();
        Ok(Managed {
            backend,
            authoritative: Authoritative::new(&p.nameservers),
            verify,
        })
    }

    /// Lets a test (or a slow provider) wait less or more for propagation.
    pub fn set_propagation(&mut self, wait: std::time::Duration) {
        self.authoritative.propagation = wait;
    }

    /// What the authoritative servers publish.
    pub async fn published(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        match &self.backend {
            Backend::Command(c) if !self.verify => c.get(name, kind).await,
            _ => self.authoritative.get(name, kind).await,
        }
    }

    async fn write(
        &self,
        name: &str,
        kind: Kind,
        values: &[String],
        ttl: u32,
    ) -> Result<(), DnsError> {
        match &self.backend {
            Backend::Cloudflare(b) => b.write(name, kind, values, ttl).await,
            Backend::Ovh(b) => b.write(name, kind, values, ttl).await,
            Backend::Gandi(b) => b.write(name, kind, values, ttl).await,
            Backend::Desec(b) => b.write(name, kind, values, ttl).await,
            Backend::DuckDns(b) => b.write(name, kind, values).await,
            Backend::Dyndns2(b) => b.write(name, kind, values).await,
            Backend::Command(_) => Err(DnsError::Config(
                "a command provider swaps by itself".into(),
            )),
        }
    }
}

impl Provider for Managed {
    async fn get(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        match &self.backend {
            Backend::Cloudflare(b) => b.read(name, kind).await,
            Backend::Ovh(b) => b.read(name, kind).await,
            Backend::Gandi(b) => b.read(name, kind).await,
            Backend::Desec(b) => b.read(name, kind).await,
            Backend::Command(c) => c.get(name, kind).await,
            Backend::DuckDns(_) | Backend::Dyndns2(_) => self.authoritative.get(name, kind).await,
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
        if let Backend::Command(c) = &self.backend {
            let outcome = c.swap(name, kind, expected, new, ttl).await?;
            if outcome == Swap::Swapped && self.verify {
                self.authoritative.wait_for(name, kind, new).await?;
            }
            return Ok(outcome);
        }
        let current = self.get(name, kind).await?;
        if !same_values(&current, expected) {
            return Ok(Swap::Conflict { current });
        }
        if !same_values(&current, new) {
            self.write(name, kind, new, ttl).await?;
        }
        self.authoritative.wait_for(name, kind, new).await?;
        Ok(Swap::Swapped)
    }
}
