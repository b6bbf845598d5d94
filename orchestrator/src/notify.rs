//! Webhooks for alerts (`[notify]`): the shapes ntfy, gotify and a generic JSON receiver
//! document, posted with a per-request timeout.

use crate::config::NotifyKind;
use std::time::Duration;

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What an alert message announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Alert,
    Resolved,
    Failover,
    Recovered,
    /// A planned switchover (`orch promote`) ended, done or stopped.
    Switchover,
}

impl Event {
    /// The word subjects and webhooks use: "ALERT", "RESOLVED", "FAILOVER", "RECOVERED",
    /// "SWITCHOVER".
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Alert => "ALERT",
            Event::Resolved => "RESOLVED",
            Event::Failover => "FAILOVER",
            Event::Recovered => "RECOVERED",
            Event::Switchover => "SWITCHOVER",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("token_file: {0}")]
    Token(String),
    #[error("{0} cannot take a path")]
    Url(String),
    #[error("{host}: {reason}")]
    Send { host: String, reason: String },
    #[error("{host} answered {status}: {body}")]
    Status {
        host: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

/// Unix milliseconds as RFC 3339 in UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// One alert as the webhook gets it.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
    pub subject: &'a str,
    pub text: &'a str,
    pub what: Event,
    pub site: Option<&'a str>,
    pub node: &'a str,
    pub cluster: &'a str,
    pub at: i64,
}

/// The HTTP client for webhooks: it never follows a redirect (a token sent to the
/// configured host must not travel on to another one; a 3xx is a failed delivery).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// Posts to the `[notify]` webhook as its kind documents: ntfy (the message as the body,
/// `Title`/`Priority`/`Tags` headers, bearer token), gotify (`POST /message` with a JSON
/// body, `X-Gotify-Key`), or a generic JSON body (bearer token when given).
pub async fn post(
    http: &reqwest::Client,
    notify: &crate::config::Notify,
    hook: &Webhook<'_>,
) -> Result<(), WebhookError> {
    let token = match &notify.token_file {
        Some(f) => Some(crate::config::read_secret_file(f).map_err(WebhookError::Token)?),
        None => None,
    };
    let resolved = hook.what == Event::Resolved;
    // A header value: one line, bounded (the subject may quote the peer).
    let title = agent::inert(hook.subject.trim_start_matches("[orch] "), 250);
    let request = match notify.kind {
        NotifyKind::Ntfy => {
            let mut r = http
                .post(notify.url.clone())
                .header("Title", title.as_str())
                .header("Priority", if resolved { "default" } else { "high" })
                .header(
                    "Tags",
                    if resolved {
                        "white_check_mark"
                    } else {
                        "warning"
                    },
                )
                .body(hook.text.to_owned());
            if let Some(t) = &token {
                r = r.bearer_auth(t);
            }
            r
        }
        NotifyKind::Gotify => {
            let mut url = notify.url.clone();
            url.path_segments_mut()
                .map_err(|()| WebhookError::Url(notify.url.to_string()))?
                .pop_if_empty()
                .push("message");
            let mut r = http.post(url).json(&serde_json::json!({
                "title": title,
                "message": hook.text,
                "priority": if resolved { 4 } else { 8 },
            }));
            if let Some(t) = &token {
                r = r.header("X-Gotify-Key", t.as_str());
            }
            r
        }
        NotifyKind::Json => {
            let mut r = http.post(notify.url.clone()).json(&serde_json::json!({
                "event": hook.what.as_str().to_lowercase(),
                "subject": hook.subject,
                "text": hook.text,
                "site": hook.site,
                "node": hook.node,
                "cluster": hook.cluster,
                "at": rfc3339(hook.at),
            }));
            if let Some(t) = &token {
                r = r.bearer_auth(t);
            }
            r
        }
    };
    let host = notify.url.host_str().unwrap_or_default().to_owned();
    let response =
        request
            .timeout(WEBHOOK_TIMEOUT)
            .send()
            .await
            .map_err(|e| WebhookError::Send {
                host: host.clone(),
                reason: e.without_url().to_string(),
            })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(WebhookError::Status {
        host,
        status,
        body: body.chars().take(200).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A webhook that answers with a redirect to a second server: the second one never
    /// hears from orch (with the token), and the delivery counts as failed.
    #[tokio::test]
    async fn a_webhook_redirect_is_not_followed() {
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere_addr = elsewhere.local_addr().unwrap();
        let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_addr = hook.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = hook.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{elsewhere_addr}/stolen\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = reached.clone();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = elsewhere.accept().await {
                r.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
        });
        let notify = crate::config::Notify {
            kind: crate::config::NotifyKind::Json,
            url: format!("http://{hook_addr}/hook").parse().unwrap(),
            token_file: None,
        };
        let hook = Webhook {
            subject: "[orch] ALERT s: x",
            text: "x",
            what: Event::Alert,
            site: Some("s"),
            node: "alice",
            cluster: "lab",
            at: 0,
        };
        let got = post(&client(), &notify, &hook).await;
        assert!(
            matches!(got, Err(WebhookError::Status { status, .. }) if status.as_u16() == 307),
            "{got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !reached.load(std::sync::atomic::Ordering::SeqCst),
            "the redirect was followed"
        );
    }

    #[test]
    fn an_ntfy_title_is_one_bounded_line() {
        let title = agent::inert("ALERT s: refused: \r\nX-Evil: 1\u{1b}[2J", 250);
        assert!(!title.chars().any(char::is_control), "{title}");
        assert!(reqwest::header::HeaderValue::from_str(&title).is_ok());
    }
}
