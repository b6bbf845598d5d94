//! Cloudflare (API v4) with an API token (`Authorization: Bearer`). Each value of a name
//! is its own record with an id; the zone id is looked up once by the zone's name.
//! Docs: <https://developers.cloudflare.com/api/resources/dns/subresources/records/>.

use super::http::{from_api, read_secret, reconcile, to_api, Api};
use super::{DnsError, Kind};
use crate::config::DnsProvider;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::OnceCell;

pub const DEFAULT_API: &str = "https://api.cloudflare.com/client/v4";

pub struct Cloudflare {
    api: Api,
    token: String,
    zone: String,
    zone_id: OnceCell<String>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<Message>,
    result: Option<T>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_chain: Vec<Message>,
}

#[derive(Deserialize)]
struct Zone {
    id: String,
}

#[derive(Deserialize)]
struct Record {
    id: String,
    #[serde(rename = "type")]
    rtype: String,
    name: String,
    content: String,
}

impl Cloudflare {
    pub fn new(p: &DnsProvider) -> Result<Cloudflare, DnsError> {
        Ok(Cloudflare {
            api: Api::new("Cloudflare", p.api_url.as_deref(), DEFAULT_API)?,
            token: read_secret(&p.name, "token_file", p.token_file.as_deref())?,
            zone: p
                .zone
                .clone()
                .ok_or_else(|| DnsError::Config(format!("dns.{}: `zone` is required", p.name)))?,
            zone_id: OnceCell::new(),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: url::Url,
        body: Option<serde_json::Value>,
    ) -> Result<T, DnsError> {
        let mut request = self.api.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, text) = self.api.send(request).await?;
        let envelope: Envelope<T> =
            serde_json::from_str(&text).map_err(|_| self.api.unexpected(status, &text))?;
        if !status.is_success() || !envelope.success {
            let mut said: Vec<String> = Vec::new();
            for m in &envelope.errors {
                said.push(format!("{} (code {})", m.message, m.code));
                said.extend(
                    m.error_chain
                        .iter()
                        .map(|c| format!("{} (code {})", c.message, c.code)),
                );
            }
            let hint = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                    " — check token_file: the API token must be valid and have Zone.DNS Edit permission on {}",
                    self.zone
                ),
                _ => String::new(),
            };
            return Err(self.api.error(format!(
                "HTTP {status}: {}{hint}",
                if said.is_empty() {
                    "request refused".to_owned()
                } else {
                    said.join("; ")
                }
            )));
        }
        envelope
            .result
            .ok_or_else(|| self.api.unexpected(status, &text))
    }

    async fn zone_id(&self) -> Result<&str, DnsError> {
        self.zone_id
            .get_or_try_init(|| async {
                let mut url = self.api.url("/zones")?;
                url.query_pairs_mut().append_pair("name", &self.zone);
                let zones: Vec<Zone> = self.call(Method::GET, url, None).await?;
                zones.into_iter().next().map(|z| z.id).ok_or_else(|| {
                    self.api.error(format!(
                        "zone {} is not visible to this API token (it needs Zone.Zone Read and Zone.DNS Edit on it)",
                        self.zone
                    ))
                })
            })
            .await
            .map(String::as_str)
    }

    async fn records(&self, name: &str, kind: Kind) -> Result<Vec<Record>, DnsError> {
        let zone = self.zone_id().await?;
        let mut url = self.api.url(&format!("/zones/{zone}/dns_records"))?;
        url.query_pairs_mut()
            .append_pair("type", &kind.to_string())
            .append_pair("name", name)
            .append_pair("per_page", "100");
        let records: Vec<Record> = self.call(Method::GET, url, None).await?;
        Ok(records
            .into_iter()
            .filter(|r| {
                r.rtype == kind.to_string()
                    && r.name.eq_ignore_ascii_case(name.trim_end_matches('.'))
            })
            .collect())
    }

    pub async fn read(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        Ok(self
            .records(name, kind)
            .await?
            .into_iter()
            .map(|r| from_api(kind, &r.content))
            .collect())
    }

    /// Makes the name hold exactly `values`: records already right are kept, others are
    /// overwritten, then the rest created or deleted.
    pub async fn write(
        &self,
        name: &str,
        kind: Kind,
        values: &[String],
        ttl: u32,
    ) -> Result<(), DnsError> {
        let zone = self.zone_id().await?.to_owned();
        let existing = self.records(name, kind).await?;
        let (missing, mut stale) = reconcile(
            existing
                .into_iter()
                .map(|r| {
                    let v = from_api(kind, &r.content);
                    (r, v)
                })
                .collect(),
            values,
        );
        let body = |value: &str| {
            serde_json::json!({
                "type": kind.to_string(),
                "name": name.trim_end_matches('.'),
                "content": to_api(kind, value),
                "ttl": ttl,
                "proxied": false,
            })
        };
        for value in &missing {
            match stale.pop() {
                Some(old) => {
                    let url = self
                        .api
                        .url(&format!("/zones/{zone}/dns_records/{}", old.id))?;
                    let _: serde_json::Value =
                        self.call(Method::PUT, url, Some(body(value))).await?;
                }
                None => {
                    let url = self.api.url(&format!("/zones/{zone}/dns_records"))?;
                    let _: serde_json::Value =
                        self.call(Method::POST, url, Some(body(value))).await?;
                }
            }
        }
        for old in stale {
            let url = self
                .api
                .url(&format!("/zones/{zone}/dns_records/{}", old.id))?;
            let _: serde_json::Value = self.call(Method::DELETE, url, None).await?;
        }
        Ok(())
    }
}
