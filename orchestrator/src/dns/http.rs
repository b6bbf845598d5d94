//! What the HTTP providers share: a client with timeouts, base URLs that tests (or a
//! provider's sandbox) can override, bounded answers, secrets read from files, and errors
//! that never carry a URL (DuckDNS puts its token in the query string).

use super::DnsError;
use reqwest::{Method, RequestBuilder, StatusCode};
use std::path::Path;
use std::time::Duration;
use url::Url;

const TIMEOUT: Duration = Duration::from_secs(20);
/// No provider answers a record query with more than this.
const MAX_BODY: usize = 1 << 20;

pub struct Api {
    client: reqwest::Client,
    /// The provider's name in messages ("Cloudflare").
    pub provider: &'static str,
    base: String,
}

impl Api {
    /// `configured` (`api_url`) overrides `default`; plain http only to a loopback
    /// address (the config check says the same).
    pub fn new(
        provider: &'static str,
        configured: Option<&str>,
        default: &str,
    ) -> Result<Api, DnsError> {
        let base = configured
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_owned();
        crate::config::check_api_url(&base).map_err(DnsError::Config)?;
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("orch - agent - ", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DnsError::Config(format!("{provider}: HTTP client: {e}")))?;
        Ok(Api {
            client,
            provider,
            base,
        })
    }

    /// The base URL followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> Result<Url, DnsError> {
        Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| self.error(format!("bad URL for {path}: {e}")))
    }

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Sends the request and returns the status and the body (at most 1 MiB).
    pub async fn send(&self, request: RequestBuilder) -> Result<(StatusCode, String), DnsError> {
        let mut response = request.send().await.map_err(|e| {
            self.error(format!(
                "request failed: {}",
                agent::error_chain(&e.without_url())
            ))
        })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            self.error(format!(
                "reading the answer: {}",
                agent::error_chain(&e.without_url())
            ))
        })? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(self.error(format!("answer larger than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub fn error(&self, message: String) -> DnsError {
        DnsError::Api {
            provider: self.provider.to_owned(),
            message,
        }
    }

    /// An answer that is not what the API documents.
    pub fn unexpected(&self, status: StatusCode, body: &str) -> DnsError {
        self.error(format!(
            "unexpected answer (HTTP {status}): {}",
            snippet(body)
        ))
    }
}

/// A header value holding a secret: marked sensitive, so that no debug output of a
/// request shows it.
pub fn secret_header(value: &str) -> Result<reqwest::header::HeaderValue, DnsError> {
    let mut header = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        DnsError::Config("a secret holds characters not allowed in an HTTP header".into())
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// The start of a body, on one line, for messages.
pub fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// A secret from its file (the config check already required mode 0600): trimmed, not
/// empty, one line.
pub fn read_secret(name: &str, key: &str, file: Option<&Path>) -> Result<String, DnsError> {
    let file = file.ok_or_else(|| DnsError::Config(format!("dns.{name}: `{key}` is required")))?;
    let text = crate::config::read_secret_file(file).map_err(DnsError::Config)?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains('\n') {
        return Err(DnsError::Config(format!(
            "{} must hold the secret alone, on one line",
            file.display()
        )));
    }
    Ok(secret.to_owned())
}

/// `name` relative to `zone`: "" for the apex.
pub fn relative(name: &str, zone: &str) -> Result<String, DnsError> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    if name == zone {
        return Ok(String::new());
    }
    match name.strip_suffix(&format!(".{zone}")) {
        Some(sub) if !sub.is_empty() => Ok(sub.to_owned()),
        _ => Err(DnsError::Config(format!(
            "{name} is not inside zone {zone}"
        ))),
    }
}

/// Splits records that exist (each with its value) against the values wanted: the values
/// no record holds yet, and the records that hold a value not wanted (to overwrite with
/// a missing value, or delete). Records already right are left alone.
pub fn reconcile<R>(existing: Vec<(R, String)>, values: &[String]) -> (Vec<String>, Vec<R>) {
    let mut missing: Vec<String> = values.to_vec();
    let mut stale = Vec::new();
    for (record, value) in existing {
        match missing
            .iter()
            .position(|w| super::same_values(std::slice::from_ref(w), std::slice::from_ref(&value)))
        {
            Some(i) => {
                missing.remove(i);
            }
            None => stale.push(record),
        }
    }
    (missing, stale)
}

/// A value as the APIs write it: TXT in zone-file form (quoted), addresses as they are.
pub fn to_api(kind: super::Kind, value: &str) -> String {
    match kind {
        super::Kind::Txt => quote_txt(value),
        _ => value.to_owned(),
    }
}

/// A value as orch compares it: TXT without its quotes, addresses as they are.
pub fn from_api(kind: super::Kind, value: &str) -> String {
    match kind {
        super::Kind::Txt => unquote_txt(value),
        _ => value.to_owned(),
    }
}

/// A TXT value in zone-file form, as most APIs want it: `"text"`.
pub fn quote_txt(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Undoes [`quote_txt`]; also joins `"a" "b"` (a long value split in strings). Text
/// without quotes is returned as it is.
pub fn unquote_txt(value: &str) -> String {
    let value = value.trim();
    if !value.starts_with('"') {
        return value.to_owned();
    }
    let mut out = String::new();
    let mut inside = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, inside) {
            ('"', _) => inside = !inside,
            ('\\', true) => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            (c, true) => out.push(c),
            (_, false) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_values_round_trip_through_quotes() {
        for v in ["master=alice epoch=3", "with \"quotes\" and \\", ""] {
            assert_eq!(unquote_txt(&quote_txt(v)), v);
        }
        assert_eq!(unquote_txt("\"ab\" \"cd\""), "abcd");
        assert_eq!(unquote_txt("plain"), "plain");
    }

    #[test]
    fn names_are_made_relative_to_their_zone() {
        assert_eq!(relative("www.Example.org.", "example.org").unwrap(), "www");
        assert_eq!(relative("example.org", "example.org.").unwrap(), "");
        assert_eq!(
            relative("_orch.site.example.org", "example.org").unwrap(),
            "_orch.site"
        );
        assert!(relative("www.example.net", "example.org").is_err());
        assert!(relative("badexample.org", "example.org").is_err());
    }

    #[test]
    fn reconcile_keeps_what_is_right_and_reuses_the_rest() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let existing = vec![(1, "192.0.2.1".to_owned()), (2, "192.0.2.2".to_owned())];
        let (missing, stale) = reconcile(existing.clone(), &v(&["192.0.2.2", "192.0.2.3"]));
        assert_eq!((missing, stale), (v(&["192.0.2.3"]), vec![1]));
        let (missing, stale) = reconcile(existing.clone(), &v(&[]));
        assert_eq!((missing, stale), (v(&[]), vec![1, 2]));
        let (missing, stale) = reconcile(existing, &v(&["192.0.2.1", "192.0.2.2"]));
        assert!(missing.is_empty() && stale.is_empty());
    }

    #[test]
    fn snippets_are_short_and_on_one_line() {
        assert_eq!(snippet("a\n  b"), "a b");
        assert_eq!(snippet(&"x".repeat(500)).chars().count(), 301);
    }
}
