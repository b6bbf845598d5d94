//! OVHcloud API with an application key, application secret and consumer key. Every call
//! carries OVH's signature: `"$1$" + SHA1_HEX(AS+"+"+CK+"+"+METHOD+"+"+URL+"+"+BODY+"+"+TS)`,
//! where TS is the API's clock (`GET /auth/time`, fetched once; the offset to ours is kept).
//! Changes to a zone take effect only after `POST /domain/zone/{zone}/refresh`.
//! Docs: <https://help.ovhcloud.com/csm/en-api-getting-started-ovhcloud-api>.

use super::http::{from_api, read_secret, reconcile, relative, secret_header, to_api, Api};
use super::{DnsError, Kind};
use crate::config::DnsProvider;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha1::{Digest, Sha1};
use tokio::sync::OnceCell;

pub struct Ovh {
    api: Api,
    application_key: String,
    application_secret: String,
    consumer_key: String,
    zone: String,
    /// The API's clock minus ours, in seconds.
    clock_offset: OnceCell<i64>,
}

#[derive(Deserialize)]
struct Record {
    id: u64,
    target: String,
}

#[derive(Deserialize)]
struct OvhError {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
    #[serde(default)]
    class: Option<String>,
}

/// The API's base URL for an `endpoint` name.
pub fn endpoint_url(endpoint: Option<&str>) -> &'static str {
    match endpoint {
        Some("ovh-ca") => "https://ca.api.ovh.com/1.0",
        Some("ovh-us") => "https://api.us.ovhcloud.com/1.0",
        _ => "https://eu.api.ovh.com/1.0",
    }
}

/// OVH's request signature.
pub fn signature(
    application_secret: &str,
    consumer_key: &str,
    method: &str,
    url: &str,
    body: &str,
    timestamp: i64,
) -> String {
    let mut sha = Sha1::new();
    sha.update(format!(
        "{application_secret}+{consumer_key}+{method}+{url}+{body}+{timestamp}"
    ));
    let digest = sha.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("$1${hex}")
}

impl Ovh {
    pub fn new(p: &DnsProvider) -> Result<Ovh, DnsError> {
        Ok(Ovh {
            api: Api::new(
                "OVH",
                p.api_url.as_deref(),
                endpoint_url(p.endpoint.as_deref()),
            )?,
            application_key: p.application_key.clone().ok_or_else(|| {
                DnsError::Config(format!("dns.{}: `application_key` is required", p.name))
            })?,
            application_secret: read_secret(
                &p.name,
                "application_secret_file",
                p.application_secret_file.as_deref(),
            )?,
            consumer_key: read_secret(
                &p.name,
                "consumer_key_file",
                p.consumer_key_file.as_deref(),
            )?,
            zone: p
                .zone
                .clone()
                .ok_or_else(|| DnsError::Config(format!("dns.{}: `zone` is required", p.name)))?,
            clock_offset: OnceCell::new(),
        })
    }

    async fn clock_offset(&self) -> Result<i64, DnsError> {
        self.clock_offset
            .get_or_try_init(|| async {
                let url = self.api.url("/auth/time")?;
                let (status, text) = self.api.send(self.api.request(Method::GET, url)).await?;
                let server: i64 = text
                    .trim()
                    .parse()
                    .map_err(|_| self.api.unexpected(status, &text))?;
                Ok(server - now())
            })
            .await
            .copied()
    }

    /// One signed call; the answer's JSON (null for calls that return nothing).
    async fn call(
        &self,
        method: Method,
        url: url::Url,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, DnsError> {
        let body = match body {
            Some(b) => serde_json::to_string(&b).map_err(|e| self.api.error(e.to_string()))?,
            None => String::new(),
        };
        let timestamp = now() + self.clock_offset().await?;
        let sig = signature(
            &self.application_secret,
            &self.consumer_key,
            method.as_str(),
            url.as_str(),
            &body,
            timestamp,
        );
        let mut request = self
            .api
            .request(method, url)
            .header("X-Ovh-Application", &self.application_key)
            .header("X-Ovh-Timestamp", timestamp.to_string())
            .header("X-Ovh-Signature", sig)
            .header("X-Ovh-Consumer", secret_header(&self.consumer_key)?);
        if !body.is_empty() {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let (status, text) = self.api.send(request).await?;
        if !status.is_success() {
            let said = serde_json::from_str::<OvhError>(&text)
                .ok()
                .map(|e| {
                    let code = e.error_code.or(e.class).unwrap_or_default();
                    if code.is_empty() {
                        e.message
                    } else {
                        format!("{} ({code})", e.message)
                    }
                })
                .unwrap_or_else(|| super::http::snippet(&text));
            let hint = match status {
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    " — check application_key, application_secret_file and consumer_key_file (the consumer key needs GET/POST/PUT/DELETE on /domain/zone/*)"
                }
                _ => "",
            };
            return Err(self.api.error(format!("HTTP {status}: {said}{hint}")));
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).map_err(|_| self.api.unexpected(status, &text))
    }

    async fn records(&self, name: &str, kind: Kind) -> Result<Vec<Record>, DnsError> {
        let sub = relative(name, &self.zone)?;
        let mut url = self
            .api
            .url(&format!("/domain/zone/{}/record", self.zone))?;
        url.query_pairs_mut()
            .append_pair("fieldType", &kind.to_string())
            .append_pair("subDomain", &sub);
        let ids: Vec<u64> = serde_json::from_value(self.call(Method::GET, url, None).await?)
            .map_err(|e| self.api.error(format!("record list: {e}")))?;
        if ids.len() > 100 {
            return Err(self.api.error(format!(
                "{name} {kind} has {} records; refusing to manage that many",
                ids.len()
            )));
        }
        let mut out = Vec::new();
        for id in ids {
            let url = self
                .api
                .url(&format!("/domain/zone/{}/record/{id}", self.zone))?;
            let record: Record = serde_json::from_value(self.call(Method::GET, url, None).await?)
                .map_err(|e| self.api.error(format!("record {id}: {e}")))?;
            out.push(record);
        }
        Ok(out)
    }

    pub async fn read(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        Ok(self
            .records(name, kind)
            .await?
            .into_iter()
            .map(|r| from_api(kind, &r.target))
            .collect())
    }

    pub async fn write(
        &self,
        name: &str,
        kind: Kind,
        values: &[String],
        ttl: u32,
    ) -> Result<(), DnsError> {
        let sub = relative(name, &self.zone)?;
        let existing = self
            .records(name, kind)
            .await?
            .into_iter()
            .map(|r| {
                let v = from_api(kind, &r.target);
                (r.id, v)
            })
            .collect();
        let (missing, mut stale) = reconcile(existing, values);
        let target = |v: &str| to_api(kind, v);
        for value in &missing {
            match stale.pop() {
                Some(id) => {
                    let url = self
                        .api
                        .url(&format!("/domain/zone/{}/record/{id}", self.zone))?;
                    self.call(
                        Method::PUT,
                        url,
                        Some(serde_json::json!({ "subDomain": sub, "target": target(value), "ttl": ttl })),
                    )
                    .await?;
                }
                None => {
                    let url = self
                        .api
                        .url(&format!("/domain/zone/{}/record", self.zone))?;
                    self.call(
                        Method::POST,
                        url,
                        Some(serde_json::json!({
                            "fieldType": kind.to_string(),
                            "subDomain": sub,
                            "target": target(value),
                            "ttl": ttl,
                        })),
                    )
                    .await?;
                }
            }
        }
        for id in stale {
            let url = self
                .api
                .url(&format!("/domain/zone/{}/record/{id}", self.zone))?;
            self.call(Method::DELETE, url, None).await?;
        }
        // Nothing is served until the zone is refreshed.
        let url = self
            .api
            .url(&format!("/domain/zone/{}/refresh", self.zone))?;
        self.call(Method::POST, url, None).await?;
        Ok(())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_computed_as_ovh_documents() {
        // SHA-1 of "AS+CK+GET+https://eu.api.ovh.com/1.0/auth/currentCredential++1366560945",
        // computed independently (Python's hashlib).
        let sig = signature(
            "AS",
            "CK",
            "GET",
            "https://eu.api.ovh.com/1.0/auth/currentCredential",
            "",
            1_366_560_945,
        );
        assert_eq!(sig, "$1$7967d7352ac7d0636a1ecf092bfaea17512e3928");
    }
}
