//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), over UDP with a TCP retry when
//! the answer is truncated. A swap is one UPDATE whose prerequisite is "this RRset exists
//! with exactly these values" (RFC 2136 §2.4.2): the server applies it atomically or not
//! at all. Every change is then verified by a query.

use super::wire::{self, fqdn, rdata, record_type};
use super::{same_values, Change, DnsError, Kind, Provider, Swap};
use crate::config::DnsProvider;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{
    update_message, Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage as _,
};
use hickory_proto::rr::{DNSClass, Name, Record, RecordSet, RecordType};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Rfc2136 {
    server: SocketAddr,
    zone: Name,
    signer: Arc<TSigner>,
    key_name: String,
}

impl Rfc2136 {
    /// Builds the provider from its config; resolves the server name once.
    pub async fn new(p: &DnsProvider) -> Result<Rfc2136, DnsError> {
        let missing =
            |k: &str| DnsError::Config(format!("dns.{}: `{k}` is required for rfc2136", p.name));
        let server = p.server.as_deref().ok_or_else(|| missing("server"))?;
        let endpoint = crate::config::validate_endpoint(server)
            .or_else(|_| crate::config::validate_endpoint(&format!("{server}:53")))
            .map_err(DnsError::Config)?;
        let server = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                DnsError::Config(format!(
                    "dns.{}: cannot resolve server {}",
                    p.name, endpoint
                ))
            })?;
        let zone = fqdn(p.zone.as_deref().ok_or_else(|| missing("zone"))?)?;
        let key_name = p.tsig_name.clone().ok_or_else(|| missing("tsig_name"))?;
        let secret_file = p
            .tsig_secret_file
            .as_ref()
            .ok_or_else(|| missing("tsig_secret_file"))?;
        let secret = read_tsig_secret(secret_file)?;
        let algorithm = match p.tsig_algorithm.as_deref().unwrap_or("hmac-sha256") {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(DnsError::Config(format!(
                    "tsig_algorithm `{other}` is not supported"
                )))
            }
        };
        let signer = TSigner::new(secret, algorithm, fqdn(&key_name)?, 300)
            .map_err(|e| DnsError::Config(format!("TSIG key {key_name}: {e}")))?;
        Ok(Rfc2136 {
            server,
            zone,
            signer: Arc::new(signer),
            key_name,
        })
    }

    fn server_error(&self, message: String) -> DnsError {
        DnsError::Server {
            server: self.server.to_string(),
            message,
        }
    }

    /// Sends `message` signed, over UDP, and over TCP if the answer was truncated.
    async fn exchange(&self, message: Message) -> Result<Message, DnsError> {
        wire::exchange(self.server, message, Some(self.signer.clone()))
            .await
            .map_err(|e| self.classify(e))
    }

    /// Turns hickory's errors into messages that say what to fix.
    fn classify(&self, e: hickory_proto::ProtoError) -> DnsError {
        let text = e.to_string();
        if text.contains("tsig")
            || text.contains("TSIG")
            || text.contains("NotAuth")
            || text.contains("BADKEY")
            || text.contains("BADSIG")
        {
            return self.server_error(format!(
                "the server refused TSIG key `{}`: check tsig_name, tsig_algorithm and tsig_secret_file against the server's key (detail: {text})",
                self.key_name
            ));
        }
        DnsError::Transport {
            server: self.server.to_string(),
            source: e,
        }
    }

    fn check_rcode(&self, message: &Message, what: &str) -> Result<(), DnsError> {
        match message.response_code() {
            ResponseCode::NoError => Ok(()),
            ResponseCode::NotAuth => Err(self.server_error(format!(
                "{what}: NOTAUTH — the server does not accept TSIG key `{}` for zone {} (check the key and the zone)",
                self.key_name, self.zone
            ))),
            ResponseCode::Refused => Err(self.server_error(format!(
                "{what}: REFUSED — the server's update policy does not let key `{}` change this name",
                self.key_name
            ))),
            ResponseCode::NotZone => Err(self.server_error(format!("{what}: NOTZONE — the name is outside zone {}", self.zone))),
            code => Err(self.server_error(format!("{what}: {code}"))),
        }
    }

    fn rrset(
        &self,
        name: &Name,
        kind: Kind,
        values: &[String],
        ttl: u32,
    ) -> Result<RecordSet, DnsError> {
        let mut set = RecordSet::with_ttl(name.clone(), record_type(kind), ttl);
        for value in values {
            set.insert(
                Record::from_rdata(name.clone(), ttl, rdata(kind, value)?),
                0,
            );
        }
        Ok(set)
    }
}

impl Rfc2136 {
    /// Every change in one UPDATE (RFC 2136 §3.2: the server checks every prerequisite
    /// before it changes anything, and applies the updates atomically): each record must
    /// hold exactly its expected values (or not exist), then is replaced. A failed
    /// prerequisite is a conflict, reported with what each record holds.
    pub async fn swap_all(&self, changes: &[Change], ttl: u32) -> Result<Swap, DnsError> {
        let mut message = Message::new();
        message
            .set_id(wire::rand_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        let mut zone = Query::new();
        zone.set_name(self.zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        message.add_zone(zone);
        for c in changes {
            let name = fqdn(&c.name)?;
            let rtype = record_type(c.kind);
            if c.expected.is_empty() {
                // "RRset does not exist" (§2.4.3).
                let mut absent = Record::update0(name.clone(), 0, rtype);
                absent.set_dns_class(DNSClass::NONE);
                message.add_pre_requisite(absent.into_record_of_rdata());
            } else {
                // "RRset exists (value dependent)" (§2.4.2).
                let mut exists = self.rrset(&name, c.kind, &c.expected, 0)?;
                exists.set_ttl(0);
                message.add_pre_requisites(exists);
                // "Delete an RRset" (§2.5.2).
                let mut delete = Record::update0(name.clone(), 0, rtype);
                delete.set_dns_class(DNSClass::ANY);
                message.add_update(delete.into_record_of_rdata());
            }
            if !c.new.is_empty() {
                message.add_updates(self.rrset(&name, c.kind, &c.new, ttl)?);
            }
        }
        let answer = self.exchange(message).await?;
        match answer.response_code() {
            ResponseCode::NXRRSet
            | ResponseCode::YXRRSet
            | ResponseCode::YXDomain
            | ResponseCode::NXDomain => {
                let mut current = Vec::new();
                for c in changes {
                    for v in self.get(&c.name, c.kind).await? {
                        current.push(format!("{} {}: {v}", c.name, c.kind));
                    }
                }
                return Ok(Swap::Conflict { current });
            }
            _ => self.check_rcode(&answer, "update of the site's records")?,
        }
        for c in changes {
            let now = self.get(&c.name, c.kind).await?;
            if !same_values(&now, &c.new) {
                return Err(self.server_error(format!(
                    "update {} {} was accepted but the server now holds {now:?}, not {:?}",
                    c.name, c.kind, c.new
                )));
            }
        }
        Ok(Swap::Swapped)
    }
}

impl Provider for Rfc2136 {
    async fn get(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        let name = fqdn(name)?;
        let answer = self
            .exchange(wire::query_message(&name, record_type(kind), false))
            .await?;
        if answer.response_code() != ResponseCode::NXDomain {
            self.check_rcode(&answer, &format!("query {name} {kind}"))?;
        }
        wire::answer_values(&answer, &name, kind, self.server)
    }

    async fn compare_and_swap(
        &self,
        name: &str,
        kind: Kind,
        expected: &[String],
        new: &[String],
        ttl: u32,
    ) -> Result<Swap, DnsError> {
        let fq = fqdn(name)?;
        let new_set = self.rrset(&fq, kind, new, ttl)?;
        let mut message = if expected.is_empty() {
            update_message::create(new_set, self.zone.clone(), true)
        } else {
            update_message::compare_and_swap(
                self.rrset(&fq, kind, expected, ttl)?,
                new_set,
                self.zone.clone(),
                true,
            )
        };
        message.set_id(wire::rand_id());
        let answer = self.exchange(message).await?;
        match answer.response_code() {
            // The prerequisite failed: someone else holds the record.
            ResponseCode::NXRRSet
            | ResponseCode::YXRRSet
            | ResponseCode::YXDomain
            | ResponseCode::NXDomain => {
                return Ok(Swap::Conflict {
                    current: self.get(name, kind).await?,
                });
            }
            _ => self.check_rcode(&answer, &format!("update {fq} {kind}"))?,
        }
        let now = self.get(name, kind).await?;
        if !same_values(&now, new) {
            return Err(self.server_error(format!(
                "update {fq} {kind} was accepted but the server now holds {now:?}, not {new:?}"
            )));
        }
        Ok(Swap::Swapped)
    }
}

/// Reads a TSIG secret: the base64 key alone, or a BIND key file as `tsig-keygen` writes it.
fn read_tsig_secret(file: &std::path::Path) -> Result<Vec<u8>, DnsError> {
    use base64::Engine as _;
    crate::config::check_secret_mode(file).map_err(DnsError::Config)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| DnsError::Config(format!("{}: {e}", file.display())))?;
    let b64 = match text.split_once("secret") {
        Some((_, rest)) => rest.split('"').nth(1).unwrap_or_default().to_owned(),
        None => text.trim().to_owned(),
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| {
            DnsError::Config(format!(
                "{} does not hold a base64 TSIG secret",
                file.display()
            ))
        })
}
