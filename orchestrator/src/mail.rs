//! Mail: messages are composed (text, and HTML when there is one), queued in the state
//! store's outbox first, then sent with retry and backoff by the agent, so that a message
//! survives a mail server or the whole node being down. Transports (`[mail] transport`):
//! `smtp` (STARTTLS, TLS or plain; optional auth and CA file), `sendmail`, and `file` (the
//! default: `.eml` files in `<state_dir>/outbox`).

use crate::config::{Mail, MailTls, MailTransport};
use agent::state::{NewMail, QueuedMail, Store};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{
    address::Envelope, AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message,
    Tokio1Executor,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry after 30 s, doubling, at most an hour apart.
const FIRST_RETRY: Duration = Duration::from_secs(30);
const LONGEST_RETRY: Duration = Duration::from_secs(3600);

enum Transport {
    File(PathBuf),
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        server: String,
    },
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    to: Vec<Mailbox>,
}

/// At most this many messages from the peer wait in this node's outbox, and at most
/// this many are taken from it in an hour: a relay, not an open one.
pub const RELAY_PENDING: i64 = 100;
pub const RELAY_PER_HOUR: i64 = 60;

/// Whether a message the peer hands over may be relayed: its `From` must be this
/// cluster's `mail.from` (the peer writes with the same config), and the peer within its
/// caps (`pending`: its messages waiting here; `last_hour`: taken in the last hour).
pub fn relay_allowed(
    message: &[u8],
    from: &str,
    pending: i64,
    last_hour: i64,
) -> Result<(), String> {
    if pending >= RELAY_PENDING {
        return Err(format!(
            "{pending} of the peer's messages wait here already (at most {RELAY_PENDING})"
        ));
    }
    if last_hour >= RELAY_PER_HOUR {
        return Err(format!(
            "{last_hour} messages taken from the peer in the last hour (at most {RELAY_PER_HOUR})"
        ));
    }
    let want = mailbox(from)?;
    let got = header_from(message).ok_or("the message has no From header")?;
    let got = address_in(&got);
    if !got.eq_ignore_ascii_case(want.email.as_ref()) {
        return Err(format!(
            "its From is `{}`, not this cluster's mail.from `{}`",
            agent::inert(got, 100),
            want.email
        ));
    }
    Ok(())
}

/// The value of the message's `From` header (unfolded), from its header block only.
fn header_from(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next()?.split("\n\n").next()?;
    let mut value: Option<String> = None;
    let mut found = None;
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some(v) = value.take() {
            if found.is_some() {
                return None; // two From headers: not one sender
            }
            found = Some(v);
        }
        if let Some((name, rest)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("from") {
                value = Some(rest.trim().to_owned());
            }
        }
    }
    if let Some(v) = value {
        if found.is_some() {
            return None;
        }
        found = Some(v);
    }
    found
}

/// The address of a `From` value: inside `<…>` when there is one.
fn address_in(value: &str) -> &str {
    match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].trim(),
        _ => value.trim(),
    }
}

fn mailbox(text: &str) -> Result<Mailbox, String> {
    text.parse()
        .map_err(|e| format!("`{text}` is not a mail address: {e}"))
}

impl Mailer {
    /// The mailer `[mail]` describes (by default `.eml` files in `<state_dir>/outbox`).
    pub fn new(m: &Mail, state_dir: &Path) -> Result<Mailer, String> {
        let outbox = state_dir.join("outbox");
        let from = mailbox(m.from.as_deref().unwrap_or("orch@localhost"))?;
        let to = if m.to.is_empty() {
            vec![mailbox("root@localhost")?]
        } else {
            m.to.iter().map(|t| mailbox(t)).collect::<Result<_, _>>()?
        };
        let transport = match m.transport {
            MailTransport::File => Transport::File(outbox),
            MailTransport::Sendmail => Transport::Sendmail(AsyncSendmailTransport::new()),
            MailTransport::Smtp => {
                let host = m
                    .host
                    .clone()
                    .ok_or("mail.host is required for transport = \"smtp\"")?;
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                    .port(m.port)
                    .timeout(Some(SMTP_TIMEOUT));
                if m.tls != MailTls::None {
                    let mut params = TlsParameters::builder(host.clone());
                    if let Some(ca) = &m.ca_file {
                        let pem = std::fs::read(ca)
                            .map_err(|e| format!("mail.ca_file {}: {e}", ca.display()))?;
                        let cert = Certificate::from_pem(&pem).map_err(|e| {
                            format!("mail.ca_file {}: not a PEM certificate: {e}", ca.display())
                        })?;
                        params = params.add_root_certificate(cert);
                    }
                    let params = params
                        .build_rustls()
                        .map_err(|e| format!("mail TLS settings: {e}"))?;
                    builder = builder.tls(match m.tls {
                        MailTls::Tls => Tls::Wrapper(params),
                        _ => Tls::Required(params),
                    });
                }
                if let (Some(user), Some(file)) = (&m.username, &m.password_file) {
                    let password = crate::config::read_secret_file(file)
                        .map_err(|e| format!("mail.password_file: {e}"))?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                Transport::Smtp {
                    transport: builder.build(),
                    server: format!("{host}:{}", m.port),
                }
            }
        };
        Ok(Mailer {
            transport,
            from,
            to,
        })
    }

    /// A complete message: `text`, and `html` as the alternative when given.
    pub fn compose(
        &self,
        message_id: &str,
        subject: &str,
        text: &str,
        html: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{message_id}>")))
            .date_now();
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = match html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                text.to_owned(),
                html.to_owned(),
            )),
            None => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(text.to_owned()),
            ),
        }
        .map_err(|e| format!("composing the message: {e}"))?;
        Ok(message.formatted())
    }

    fn envelope(&self) -> Result<Envelope, String> {
        Envelope::new(
            Some(self.from.email.clone()),
            self.to.iter().map(|m| m.email.clone()).collect(),
        )
        .map_err(|e| format!("mail envelope: {e}"))
    }

    /// Hands one message to the transport.
    pub async fn send(&self, message_id: &str, message: &[u8]) -> Result<(), String> {
        match &self.transport {
            Transport::File(dir) => write_eml(dir, message_id, message),
            Transport::Smtp { transport, server } => transport
                .send_raw(&self.envelope()?, message)
                .await
                .map(|_| ())
                .map_err(|e| format!("SMTP server {server}: {e}")),
            Transport::Sendmail(t) => t
                .send_raw(&self.envelope()?, message)
                .await
                .map_err(|e| format!("sendmail: {e}")),
        }
    }
}

/// Writes `<dir>/<id>.eml` whole or not at all (temp file, fsync, rename).
fn write_eml(dir: &Path, message_id: &str, message: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name: String = message_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{}.eml", name.trim_matches('_')));
    let tmp = path.with_extension("eml.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(message)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A new, unique Message-ID (without angle brackets) for a message written by `origin`.
pub fn new_message_id(origin: &str) -> String {
    let mut b = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}.{hex}@{origin}.orch",
        agent::unix_millis(std::time::SystemTime::now())
    )
}

/// When to try again after `attempts` failed ones.
pub fn backoff(attempts: i64) -> Duration {
    let exp = attempts.clamp(0, 20) as u32;
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(exp))
        .min(LONGEST_RETRY)
}

/// Queues a message; it is sent by [`deliver_due`]. Returns false when a message with this
/// id is already queued (a retried report, a relayed one).
pub async fn queue(
    store: &Store,
    origin: &str,
    site: Option<&str>,
    message_id: &str,
    subject: &str,
    message: &[u8],
    now: i64,
) -> Result<bool, agent::state::StoreError> {
    store
        .outbox_enqueue(&NewMail {
            message_id,
            created_at: now,
            origin,
            site,
            subject,
            message,
        })
        .await
}

/// What one delivery round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub sent: usize,
    /// Messages the peer's agent took over.
    pub handed_off: usize,
    pub failed: Vec<String>,
}

/// Where and when undeliverable messages go to the peer's agent.
#[derive(Debug, Clone)]
pub struct HandOff {
    pub addr: std::net::SocketAddr,
    pub me: String,
    pub peer: String,
    /// A message of ours this old that is still not sent is offered to the peer.
    pub after: Duration,
}

const OFFER_TIMEOUT: Duration = Duration::from_secs(15);

/// What an offer to the peer came to.
enum Offer {
    Taken,
    /// Certainly not stored by the peer (could not connect, or it refused).
    NotTaken(String),
    /// Unknown whether the peer stored it: offer again, never send here.
    Unsure(String),
}

async fn offer(h: &HandOff, mail: &QueuedMail) -> Offer {
    use agent::peer::{self, HandedMail, PeerError, Request, Response};
    use base64::Engine as _;
    let request = Request::Mail(HandedMail {
        message_id: mail.message_id.clone(),
        created_at: mail.created_at,
        origin: mail.origin.clone(),
        site: mail.site.clone(),
        subject: mail.subject.clone(),
        message: base64::engine::general_purpose::STANDARD.encode(&mail.message),
    });
    match peer::call(h.addr, &h.me, &h.peer, &request, OFFER_TIMEOUT).await {
        Ok(Response::MailAccepted { .. }) => Offer::Taken,
        Ok(other) => Offer::Unsure(format!("unexpected answer {other:?}")),
        Err(e @ (PeerError::Connect(..) | PeerError::Refused(_))) => {
            Offer::NotTaken(agent::error_chain(&e))
        }
        Err(e) => Offer::Unsure(agent::error_chain(&e)),
    }
}

/// Sends every message that is due; failures are kept for a later try with backoff. A
/// message of ours that could not be sent for `hand_off.after` is offered to the peer's
/// agent; once offered, only the peer sends it (it keeps message ids, so offering again
/// is harmless), so a message is never sent by both.
pub async fn deliver_due(
    store: &Store,
    mailer: &Mailer,
    hand_off: Option<&HandOff>,
    now: i64,
) -> Result<Round, String> {
    let err = |e: agent::state::StoreError| agent::error_chain(&e);
    let due: Vec<QueuedMail> = store.outbox_due(now, 50).await.map_err(err)?;
    let mut round = Round::default();
    for mail in due {
        let ours = hand_off.filter(|h| h.me == mail.origin);
        let error = if mail.offered_at.is_none() {
            match mailer.send(&mail.message_id, &mail.message).await {
                Ok(()) => {
                    store.outbox_done(mail.id, false, now).await.map_err(err)?;
                    tracing::info!(subject = %mail.subject, "Mail sent");
                    round.sent += 1;
                    continue;
                }
                Err(error) => error,
            }
        } else {
            mail.last_error.clone().unwrap_or_default()
        };
        let hand_off_at = ours.map(|h| mail.created_at + h.after.as_millis() as i64);
        let error = match (ours, hand_off_at) {
            (Some(h), Some(at)) if at <= now => {
                store.outbox_offered(mail.id, now).await.map_err(err)?;
                match offer(h, &mail).await {
                    Offer::Taken => {
                        store.outbox_done(mail.id, true, now).await.map_err(err)?;
                        tracing::info!(subject = %mail.subject, peer = %h.peer, %error, "Mail handed to the peer's agent to send");
                        round.handed_off += 1;
                        continue;
                    }
                    Offer::NotTaken(why) => {
                        store.outbox_offer_failed(mail.id).await.map_err(err)?;
                        format!("{error}; the peer's agent did not take it either: {why}")
                    }
                    Offer::Unsure(why) => {
                        format!("{error}; handing it to the peer's agent: {why} (offered again next time)")
                    }
                }
            }
            _ => error,
        };
        let mut next = now + backoff(mail.attempts).as_millis() as i64;
        if let Some(at) = hand_off_at {
            // Try the peer as soon as it is time, and then every half minute: an offer is
            // cheap, and the peer's agent may be back any moment.
            next = next.min(at.max(now + FIRST_RETRY.as_millis() as i64));
        }
        store
            .outbox_retry_later(mail.id, &error, next)
            .await
            .map_err(err)?;
        tracing::warn!(subject = %mail.subject, %error, retry_in = %humantime::format_duration(Duration::from_millis((next - now).max(0) as u64)), "Mail not sent");
        round.failed.push(error);
    }
    Ok(round)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_relayed_message_keeps_our_from_and_the_caps() {
        let msg = |from: &str| {
            format!("From: {from}\r\nTo: ops@example.org\r\nSubject: x\r\n\r\nFrom: body@evil.example\r\n")
                .into_bytes()
        };
        let ours = "orch@example.org";
        assert_eq!(
            relay_allowed(&msg("orch <orch@example.org>"), ours, 0, 0),
            Ok(())
        );
        assert_eq!(relay_allowed(&msg("ORCH@example.org"), ours, 0, 0), Ok(()));
        // Folded over two lines.
        let folded = b"From: \"orch\"\r\n <orch@example.org>\r\nSubject: x\r\n\r\nhi".to_vec();
        assert_eq!(relay_allowed(&folded, ours, 0, 0), Ok(()));
        for bad in [
            msg("Your Bank <security@bank.example>"),
            b"Subject: no sender\r\n\r\nFrom: orch@example.org".to_vec(),
            b"From: orch@example.org\r\nFrom: x@evil.example\r\n\r\n".to_vec(),
        ] {
            assert!(
                relay_allowed(&bad, ours, 0, 0).is_err(),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
        let e = relay_allowed(&msg(ours), ours, RELAY_PENDING, 0).unwrap_err();
        assert!(e.contains("wait here already"), "{e}");
        let e = relay_allowed(&msg(ours), ours, 0, RELAY_PER_HOUR).unwrap_err();
        assert!(e.contains("in the last hour"), "{e}");
        assert_eq!(
            relay_allowed(&msg(ours), ours, RELAY_PENDING - 1, RELAY_PER_HOUR - 1),
            Ok(())
        );
    }

    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(0), Duration::from_secs(30));
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(7), Duration::from_secs(3600));
        assert_eq!(backoff(1000), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn the_file_transport_writes_whole_messages_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).await.unwrap();
        let file = Mail {
            transport: MailTransport::File,
            host: None,
            port: 25,
            tls: MailTls::Starttls,
            ca_file: None,
            username: None,
            password_file: None,
            from: None,
            to: vec![],
            ..Mail::file()
        };
        let mailer = Mailer::new(&file, &dir.path().join("state")).unwrap();
        let id = new_message_id("alice");
        let message = mailer
            .compose(&id, "[orch] test", "plain text", Some("<p>html</p>"))
            .unwrap();
        let text = String::from_utf8_lossy(&message);
        assert!(text.contains("Subject: [orch] test"), "{text}");
        assert!(text.contains(&format!("Message-ID: <{id}>")), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(
            queue(&store, "alice", None, &id, "[orch] test", &message, 1)
                .await
                .unwrap()
        );
        assert!(
            !queue(&store, "alice", None, &id, "[orch] test", &message, 2)
                .await
                .unwrap(),
            "the same message is queued once"
        );
        let round = deliver_due(&store, &mailer, None, 10).await.unwrap();
        assert_eq!(
            round,
            Round {
                sent: 1,
                ..Round::default()
            }
        );
        assert_eq!(
            deliver_due(&store, &mailer, None, 20).await.unwrap(),
            Round::default()
        );
        let files: Vec<_> = std::fs::read_dir(dir.path().join("state/outbox"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].extension().unwrap(), "eml");
        assert_eq!(std::fs::read(&files[0]).unwrap(), message);
    }
}
