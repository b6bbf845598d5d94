//! Alerts: something broke (a push failed, replication lags or broke, the tunnel has been
//! down for `tunnel_alert_after`, a failover happened). An alert is mailed at once
//! through the outbox and posted to the `[notify]` webhook; while it lasts it is mailed
//! again at most once an hour; when it clears, one "resolved" mail follows. The state of
//! each alert is in the state store, so a restart neither repeats nor forgets one.
//!
//! Who alerts: a site's problems (pushes, databases) are alerted by the node that is the
//! site's master; the tunnel by each node about its own view; failover, recovery and
//! fencing by the node that acts ([`Alerter::failover`], [`Alerter::recovered`],
//! [`Alerter::fenced`]).

use crate::cluster::peer::tunnel_up;
use crate::config::Loaded;
use crate::mail::Mailer;
use crate::notify::{rfc3339, Event, Webhook};
use agent::state::{AlertState, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tunnel::link::LinkStats;

/// The same alert is mailed at most this often.
pub const REPEAT: Duration = Duration::from_secs(3600);

/// What a change of an alert's state calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    Nothing,
    Alert,
    /// Still on, an hour after the last mail.
    Reminder,
    Resolved,
}

/// The alert `key` is on (again) at `now`.
pub fn on_raise(
    before: Option<&AlertState>,
    key: &str,
    site: Option<&str>,
    summary: &str,
    now: i64,
) -> (AlertState, Send) {
    let repeat = REPEAT.as_millis() as i64;
    let mut a = before.cloned().unwrap_or(AlertState {
        key: key.to_owned(),
        site: site.map(str::to_owned),
        active: false,
        summary: String::new(),
        since: now,
        notified: false,
        last_sent_at: 0,
    });
    a.summary = summary.to_owned();
    if a.active {
        return (a, Send::Nothing);
    }
    a.active = true;
    a.since = now;
    // A flapping problem is mailed at most hourly; the reminder picks it up later.
    if a.last_sent_at != 0 && now - a.last_sent_at < repeat {
        a.notified = false;
        return (a, Send::Nothing);
    }
    a.notified = true;
    a.last_sent_at = now;
    (a, Send::Alert)
}

/// The alert `key` is off at `now`.
pub fn on_clear(before: Option<&AlertState>) -> (Option<AlertState>, Send) {
    match before {
        Some(a) if a.active => {
            let mut a = a.clone();
            a.active = false;
            let send = if a.notified {
                Send::Resolved
            } else {
                Send::Nothing
            };
            a.notified = false;
            (Some(a), send)
        }
        _ => (None, Send::Nothing),
    }
}

/// An hour after its last mail, an alert that is still on is mailed again.
pub fn on_tick(a: &AlertState, now: i64) -> Option<(AlertState, Send)> {
    if !a.active || now - a.last_sent_at < REPEAT.as_millis() as i64 {
        return None;
    }
    let mut a = a.clone();
    let send = if a.notified {
        Send::Reminder
    } else {
        Send::Alert
    };
    a.notified = true;
    a.last_sent_at = now;
    Some((a, send))
}

/// Sends alerts: mail through the outbox, and the webhook when configured.
#[derive(Clone)]
pub struct Alerter {
    loaded: Arc<Loaded>,
    store: Store,
    mailer: Arc<Mailer>,
    http: reqwest::Client,
}

impl Alerter {
    pub fn new(loaded: Arc<Loaded>, store: Store, mailer: Arc<Mailer>) -> Alerter {
        // `post` bounds each request with its own timeout.
        Alerter {
            loaded,
            store,
            mailer,
            http: crate::notify::client(),
        }
    }

    fn now() -> i64 {
        agent::unix_millis(std::time::SystemTime::now())
    }

    /// The problem `key` is on: mailed now unless it already was within the hour.
    pub async fn raise(&self, key: &str, site: Option<&str>, summary: &str) {
        let now = Self::now();
        let before = self.store.alert(key).await.ok().flatten();
        let (after, send) = on_raise(before.as_ref(), key, site, summary, now);
        self.apply(&after, send, now).await;
    }

    /// The problem `key` is over: a "resolved" mail if it was alerted.
    pub async fn clear(&self, key: &str) {
        let now = Self::now();
        let before = self.store.alert(key).await.ok().flatten();
        if let (Some(after), send) = on_clear(before.as_ref()) {
            self.apply(&after, send, now).await;
        }
    }

    /// The problem `key` gave way to a worse one: off, without a "resolved" mail.
    pub async fn supersede(&self, key: &str) {
        if let Some(mut a) = self.store.alert(key).await.ok().flatten() {
            if a.active {
                a.active = false;
                a.notified = false;
                if let Err(e) = self.store.put_alert(&a).await {
                    tracing::warn!(error = agent::error_chain(&e), %key, "Alert state not kept");
                }
            }
        }
    }

    /// Reminds of alerts that are still on (called every minute or so).
    pub async fn tick(&self) {
        let now = Self::now();
        for a in self.store.active_alerts().await.unwrap_or_default() {
            if let Some((after, send)) = on_tick(&a, now) {
                self.apply(&after, send, now).await;
            }
        }
    }

    /// For the failover work: this node took over `site`.
    pub async fn failover(&self, site: &str, detail: &str) {
        self.notice(site, Event::Failover, detail).await;
    }

    /// For the failover work: the old master of `site` came back and stepped down.
    pub async fn recovered(&self, site: &str, detail: &str) {
        self.notice(site, Event::Recovered, detail).await;
    }

    /// For the failover work: this node fenced itself for `site` (`false`: it no longer is).
    pub async fn fenced(&self, site: &str, on: bool, detail: &str) {
        let key = format!("fenced:{site}");
        if on {
            self.raise(&key, Some(site), detail).await;
        } else {
            self.clear(&key).await;
        }
    }

    /// A one-off event, mailed and posted at once.
    pub async fn notice(&self, site: &str, what: Event, detail: &str) {
        let subject = format!("[orch] {} {site}: {}", what.as_str(), first_line(detail));
        let text = format!(
            "{} of site {site}, reported by {} (cluster {}) at {}.\n\n{detail}\n",
            what.as_str(),
            self.loaded.me,
            self.loaded.config.cluster.name,
            rfc3339(Self::now()),
        );
        self.deliver(Some(site), &subject, &text, what).await;
    }

    async fn apply(&self, a: &AlertState, send: Send, now: i64) {
        if let Err(e) = self.store.put_alert(a).await {
            tracing::warn!(error = agent::error_chain(&e), key = %a.key, "Alert state not kept");
        }
        let who = a.site.as_deref().unwrap_or(&self.loaded.me);
        let (subject, text, what) = match send {
            Send::Nothing => return,
            Send::Alert => (
                format!("[orch] ALERT {who}: {}", a.summary),
                format!(
                    "{}\n\nNoticed by {} at {}. You will be reminded at most once an hour while \
                     it lasts, and told when it is resolved.\n",
                    a.summary,
                    self.loaded.me,
                    rfc3339(a.since)
                ),
                Event::Alert,
            ),
            Send::Reminder => (
                format!("[orch] STILL {who}: {}", a.summary),
                format!(
                    "{}\n\nStill so since {} ({} ago), as seen by {}.\n",
                    a.summary,
                    rfc3339(a.since),
                    crate::units::duration_ms(now - a.since),
                    self.loaded.me
                ),
                Event::Alert,
            ),
            Send::Resolved => (
                format!("[orch] RESOLVED {who}: {}", a.summary),
                format!(
                    "Resolved at {} after {}: {}\n\nSeen by {}.\n",
                    rfc3339(now),
                    crate::units::duration_ms(now - a.since),
                    a.summary,
                    self.loaded.me
                ),
                Event::Resolved,
            ),
        };
        self.deliver(a.site.as_deref(), &subject, &text, what).await;
    }

    /// Queues the mail (sent by the mail task) and posts the webhook.
    async fn deliver(&self, site: Option<&str>, subject: &str, text: &str, what: Event) {
        let now = Self::now();
        let id = crate::mail::new_message_id(&self.loaded.me);
        let outcome = if what == Event::Resolved {
            agent::state::Outcome::Ok
        } else {
            agent::state::Outcome::Fail
        };
        let event = agent::state::NewEvent {
            at: now,
            site,
            kind: agent::state::EventKind::Alert,
            outcome,
            summary: subject.trim_start_matches("[orch] "),
            detail: None,
        };
        if let Err(e) = self.store.record(&event).await {
            tracing::warn!(error = agent::error_chain(&e), "Alert not recorded");
        }
        match self.mailer.compose(&id, subject, text, None) {
            Ok(message) => {
                if let Err(e) = crate::mail::queue(
                    &self.store,
                    &self.loaded.me,
                    site,
                    &id,
                    subject,
                    &message,
                    now,
                )
                .await
                {
                    tracing::error!(error = agent::error_chain(&e), %subject, "Alert mail not queued");
                }
            }
            Err(e) => tracing::error!(error = %e, %subject, "Alert mail not composed"),
        }
        tracing::warn!(%subject, "Alert");
        if let Some(notify) = &self.loaded.config.notify {
            let hook = Webhook {
                subject,
                text,
                what,
                site,
                node: &self.loaded.me,
                cluster: &self.loaded.config.cluster.name,
                at: now,
            };
            if let Err(e) = crate::notify::post(&self.http, notify, &hook).await {
                tracing::warn!(error = %e, kind = ?notify.kind, "Webhook not delivered");
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

const WATCH_EVERY: Duration = Duration::from_secs(10);

/// The agent's task: alerts the tunnel down after `tunnel_alert_after`, resolves it when it
/// is back, and sends hourly reminders of alerts that last.
pub async fn run(
    alerter: Alerter,
    tunnel: watch::Receiver<LinkStats>,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let after = alerter.loaded.config.mail.tunnel_alert_after;
    let peer = alerter.loaded.peer().name.clone();
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let up = tunnel_up(&tunnel.borrow());
        if up {
            if down_since.take().is_some() {
                alerter.clear("tunnel").await;
            }
        } else {
            let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= after {
                alerter
                    .raise(
                        "tunnel",
                        None,
                        &format!(
                            "the tunnel to {peer} has been down for more than {}",
                            humantime::format_duration(after)
                        ),
                    )
                    .await;
            }
        }
        alerter.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn an_alert_mails_once_then_hourly_then_resolves_once() {
        let (a, send) = on_raise(None, "db:web:app", Some("web"), "lagging", 1_000);
        assert_eq!(send, Send::Alert);
        assert!(a.active && a.notified);
        // Raised again while on: nothing new.
        let (a, send) = on_raise(Some(&a), "db:web:app", Some("web"), "broken", 2_000);
        assert_eq!(send, Send::Nothing);
        assert_eq!(a.summary, "broken");
        assert_eq!(on_tick(&a, 1_000 + H - 1), None);
        let (a, send) = on_tick(&a, 1_000 + H).unwrap();
        assert_eq!(send, Send::Reminder);
        let (a, send) = on_clear(Some(&a));
        assert_eq!(send, Send::Resolved);
        let a = a.unwrap();
        assert!(!a.active);
        assert_eq!(on_clear(Some(&a)).1, Send::Nothing, "resolved once");
        assert_eq!(on_tick(&a, 10 * H), None);
    }

    #[test]
    fn a_flapping_problem_mails_at_most_hourly_and_resolves_only_what_was_mailed() {
        const T: i64 = 1_700_000_000_000;
        let (a, _) = on_raise(None, "k", None, "down", T);
        let (a, send) = on_clear(Some(&a));
        assert_eq!(send, Send::Resolved);
        // Back within the hour: no second alert mail now…
        let (a, send) = on_raise(a.as_ref(), "k", None, "down", T + 10 * 60_000);
        assert_eq!(send, Send::Nothing);
        assert!(a.active && !a.notified);
        // …and if it clears before the hour, no resolved mail either.
        let (b, send) = on_clear(Some(&a));
        assert_eq!(send, Send::Nothing);
        assert!(!b.unwrap().active);
        // If it lasts, the hour's tick sends it as an alert.
        assert_eq!(on_tick(&a, T + H - 1), None);
        let (a, send) = on_tick(&a, T + H).unwrap();
        assert_eq!(send, Send::Alert);
        assert_eq!(on_clear(Some(&a)).1, Send::Resolved);
    }

    #[test]
    fn a_new_episode_after_the_hour_mails_at_once() {
        let (a, _) = on_raise(None, "k", None, "down", 5 * H);
        let (a, _) = on_clear(Some(&a));
        let (_, send) = on_raise(a.as_ref(), "k", None, "down", 6 * H + 1);
        assert_eq!(send, Send::Alert);
    }
}
