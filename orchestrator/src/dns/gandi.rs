//! Gandi LiveDNS (API v5) with a personal access token (`Authorization: Bearer`). Records
//! are whole sets addressed by name and type: read one, replace it (PUT), delete it.
//! Docs: <https://api.gandi.net/docs/livedns/>.

use super::http::{from_api, read_secret, relative, to_api, Api};
use super::{DnsError, Kind};
use crate::config::DnsProvider;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

pub const DEFAULT_API: &str = "https://api.gandi.net/v5/livedns";

pub struct Gandi {
    api: Api,
    token: String,
    zone: String,
}

#[derive(Deserialize)]
struct Rrset {
    rrset_values: Vec<String>,
}

#[derive(Deserialize)]
struct GandiError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    cause: String,
    #[serde(default)]
    errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct FieldError {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

impl Gandi {
    pub fn new(p: &DnsProvider) -> Result<Gandi, DnsError> {
        Ok(Gandi {
            api: Api::new("Gandi", p.api_url.as_deref(), DEFAULT_API)?,
            token: read_secret(&p.name, "token_file", p.token_file.as_deref())?,
            zone: p
                .zone
                .clone()
                .ok_or_else(|| DnsError::Config(format!("dns.{}: `zone` is required", p.name)))?,
        })
    }

    fn url(&self, name: &str, kind: Kind) -> Result<url::Url, DnsError> {
        let sub = relative(name, &self.zone)?;
        let sub = if sub.is_empty() { "@".to_owned() } else { sub };
        self.api
            .url(&format!("/domains/{}/records/{sub}/{kind}", self.zone))
    }

    fn failure(&self, status: StatusCode, text: &str) -> DnsError {
        let said = match serde_json::from_str::<GandiError>(text) {
            Ok(e) => {
                let mut said = match (e.cause.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{}: {}", e.cause, e.message),
                    (true, false) => e.message,
                    _ => e.cause,
                };
                for f in e.errors {
                    said.push_str(&format!("; {}: {}", f.name, f.description));
                }
                said
            }
            Err(_) => super::http::snippet(text),
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                " — check token_file: a personal access token with \"Manage domain name technical configurations\" on {}",
                self.zone
            ),
            _ => String::new(),
        };
        self.api.error(format!("HTTP {status}: {said}{hint}"))
    }

    pub async fn read(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        let request = self
            .api
            .request(Method::GET, self.url(name, kind)?)
            .bearer_auth(&self.token);
        let (status, text) = self.api.send(request).await?;
        if status == StatusCode::NOT_FOUND {
            // No such record. (An unknown domain shows when writing.)
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(self.failure(status, &text));
        }
        let set: Rrset =
            serde_json::from_str(&text).map_err(|_| self.api.unexpected(status, &text))?;
        Ok(set.rrset_values.iter().map(|v| from_api(kind, v)).collect())
    }

    pub async fn write(
        &self,
        name: &str,
        kind: Kind,
        values: &[String],
        ttl: u32,
    ) -> Result<(), DnsError> {
        let url = self.url(name, kind)?;
        let request = if values.is_empty() {
            self.api.request(Method::DELETE, url)
        } else {
            let values: Vec<String> = values.iter().map(|v| to_api(kind, v)).collect();
            self.api
                .request(Method::PUT, url)
                .json(&serde_json::json!({ "rrset_values": values, "rrset_ttl": ttl }))
        };
        let (status, text) = self.api.send(request.bearer_auth(&self.token)).await?;
        if status.is_success() || (values.is_empty() && status == StatusCode::NOT_FOUND) {
            Ok(())
        } else {
            Err(self.failure(status, &text))
        }
    }
}
