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
    let title = hook.subject.trim_start_matches("[orch] ");
    let request = match notify.kind {
        NotifyKind::Ntfy => {
            let mut r = http
                .post(notify.url.clone())
                .header("Title", title)
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
