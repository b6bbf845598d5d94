//! deSEC (`Authorization: Token …`). An RRset is read at `rrsets/{subname}/{type}/` (`@`
//! for the apex) and written with the bulk `PUT rrsets/`, which creates, replaces, or —
//! with no records — deletes it. TXT contents are quoted. deSEC's minimum TTL is 3600 s
//! unless the account was granted less; its error says so.
//! Docs: <https://desec.readthedocs.io/en/latest/dns/rrsets.html>.

use super::http::{from_api, read_secret, relative, secret_header, to_api, Api};
use super::{DnsError, Kind};
use crate::config::DnsProvider;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

pub const DEFAULT_API: &str = "https://desec.io/api/v1";

pub struct Desec {
    api: Api,
    token: String,
    zone: String,
}

#[derive(Deserialize)]
struct Rrset {
    records: Vec<String>,
}

impl Desec {
    pub fn new(p: &DnsProvider) -> Result<Desec, DnsError> {
        Ok(Desec {
            api: Api::new("deSEC", p.api_url.as_deref(), DEFAULT_API)?,
            token: read_secret(&p.name, "token_file", p.token_file.as_deref())?,
            zone: p
                .zone
                .clone()
                .ok_or_else(|| DnsError::Config(format!("dns.{}: `zone` is required", p.name)))?,
        })
    }

    fn failure(&self, status: StatusCode, text: &str) -> DnsError {
        let said = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => flatten(&v),
            Err(_) => super::http::snippet(text),
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                " — check token_file (a deSEC token allowed to manage this domain)".to_owned()
            }
            StatusCode::TOO_MANY_REQUESTS => {
                " — deSEC limits writes per domain; orch retries later".to_owned()
            }
            _ => String::new(),
        };
        self.api.error(format!("HTTP {status}: {said}{hint}"))
    }

    pub async fn read(&self, name: &str, kind: Kind) -> Result<Vec<String>, DnsError> {
        let sub = relative(name, &self.zone)?;
        let sub = if sub.is_empty() { "@".to_owned() } else { sub };
        let url = self
            .api
            .url(&format!("/domains/{}/rrsets/{sub}/{kind}/", self.zone))?;
        let request = self.api.request(Method::GET, url).header(
            "Authorization",
            secret_header(&format!("Token {}", self.token))?,
        );
        let (status, text) = self.api.send(request).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(self.failure(status, &text));
        }
        let set: Rrset =
            serde_json::from_str(&text).map_err(|_| self.api.unexpected(status, &text))?;
        Ok(set.records.iter().map(|v| from_api(kind, v)).collect())
    }

    pub async fn write(
        &self,
        name: &str,
        kind: Kind,
        values: &[String],
        ttl: u32,
    ) -> Result<(), DnsError> {
        let sub = relative(name, &self.zone)?;
        let records: Vec<String> = values.iter().map(|v| to_api(kind, v)).collect();
        let url = self.api.url(&format!("/domains/{}/rrsets/", self.zone))?;
        let mut request = self
            .api
            .request(Method::PUT, url)
            .json(&serde_json::json!([{ "subname": sub, "type": kind.to_string(), "ttl": ttl, "records": records }]));
        request = request.header(
            "Authorization",
            secret_header(&format!("Token {}", self.token))?,
        );
        let (status, text) = self.api.send(request).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(self.failure(status, &text))
        }
    }
}

/// deSEC's errors: `{"detail": "..."}`, or per field (`{"ttl": ["..."]}`), or a list of
/// those for a bulk request. One line, field names kept.
fn flatten(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(flatten)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                if k == "detail" || k == "non_field_errors" {
                    flatten(v)
                } else {
                    format!("{k}: {}", flatten(v))
                }
            })
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_flattened_with_their_fields() {
        let v: serde_json::Value = serde_json::from_str(
            r#"[{"ttl": ["Ensure this value is greater than or equal to 3600."]}, {}]"#,
        )
        .unwrap();
        assert_eq!(
            flatten(&v),
            "ttl: Ensure this value is greater than or equal to 3600."
        );
        let v: serde_json::Value = serde_json::from_str(r#"{"detail": "Invalid token."}"#).unwrap();
        assert_eq!(flatten(&v), "Invalid token.");
    }
}
