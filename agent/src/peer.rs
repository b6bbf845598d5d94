//! Peer RPC: the agents talk over the tunnel on `tunnel_ip:control_port`.
//!
//! Only the peer's tunnel address may connect (WireGuard's cryptokey routing makes that
//! source authentic). A connection opens with a hello in each direction carrying the
//! protocol version and node name; then one request and its response per frame. A frame
//! is a 4-byte big-endian length and that many bytes of JSON, at most [`MAX_FRAME`];
//! every count and string inside is bounded as well. The peer is another person's
//! machine: nothing it sends is trusted beyond what the config allows.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub const PROTOCOL_VERSION: u32 = 1;
pub const MAX_FRAME: usize = 1 << 20;
/// At most this many sites in a heartbeat, and this long a name.
pub const MAX_SITES: usize = 256;
pub const MAX_NAME: usize = 63;
/// A connection that says nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// At most this many connections are served at once, pushes aside.
const MAX_CONNECTIONS: usize = 8;
/// At most this many pushes are received at once. A push gives its connection slot back
/// when it starts: however long pushes last (or a peer makes them last), requests are
/// always served.
const MAX_PUSHES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connecting to the peer agent at {0}")]
    Connect(SocketAddr, #[source] io::Error),
    #[error("peer connection")]
    Io(#[from] io::Error),
    #[error("the peer agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("a frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    Oversized(usize),
    #[error("malformed message from the peer: {0}")]
    Malformed(String),
    #[error("the peer speaks protocol {0}, this agent {PROTOCOL_VERSION}: upgrade the older one")]
    Version(u32),
    #[error("the peer says it is `{got}`, the config says `{want}`")]
    WrongNode { got: String, want: String },
    #[error("the peer refused: {0}")]
    Refused(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub protocol: u32,
    pub node: String,
}

/// What one agent tells the other at each heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub node: String,
    /// Per site: who the sender believes is master, under which epoch.
    pub sites: BTreeMap<String, SiteClaim>,
    /// The UDP address the sender's tunnel sees the receiver's packets come from: the
    /// receiver's public endpoint as the internet sees it.
    pub observed_endpoint: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteClaim {
    pub master: String,
    pub epoch: i64,
    /// The sender is taking the site over in a planned switchover (`orch promote`), from
    /// just before it asks the master to demote until the switchover has ended either
    /// way: a master handing the site over waits for it while this holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub switching: bool,
    /// Automatic failover of the site is armed on the sender (as its state store holds
    /// it): a node disarmed by a failover follows its peer's `orch ack` when both hold the
    /// same master and epoch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub armed: bool,
}

impl Heartbeat {
    /// Refuses a heartbeat whose counts or names are out of bounds.
    pub fn check(&self) -> Result<(), String> {
        if self.sites.len() > MAX_SITES {
            return Err(format!(
                "{} sites in a heartbeat (limit {MAX_SITES})",
                self.sites.len()
            ));
        }
        let names = std::iter::once(&self.node)
            .chain(self.sites.keys())
            .chain(self.sites.values().map(|c| &c.master));
        for name in names {
            check_name(name)?;
        }
        if self.sites.values().any(|c| c.epoch < 0) {
            return Err("a negative epoch".into());
        }
        Ok(())
    }
}

/// A node or site name from the peer: what a config may name (1 to [`MAX_NAME`]
/// letters, digits, `-`, `_`, `.`), so that it is inert wherever it is shown.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "a name of {} bytes (1 to {MAX_NAME} allowed)",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("a name with characters other than letters, digits, -, _ and .".into());
    }
    Ok(())
}

/// The largest message the peer may hand over for sending (decoded).
pub const MAX_MAIL: usize = 512 * 1024;
/// RFC 5322 line limit, the most a subject may hold.
pub const MAX_SUBJECT: usize = 998;
pub const MAX_MESSAGE_ID: usize = 255;
/// At most this many sync targets in a space answer, and this long a path.
pub const MAX_TARGETS: usize = 256;
pub const MAX_PATH: usize = 4096;

/// A queued mail the sender could not deliver, handed over for the receiver to send.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandedMail {
    pub message_id: String,
    pub created_at: i64,
    /// The node that wrote the message (must be the sender).
    pub origin: String,
    pub site: Option<String>,
    pub subject: String,
    /// The whole RFC 5322 message, base64.
    pub message: String,
}

impl HandedMail {
    /// Checks every bound and decodes the message.
    pub fn check(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        let id_ok = !self.message_id.is_empty()
            && self.message_id.len() <= MAX_MESSAGE_ID
            && self
                .message_id
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
        if !id_ok {
            return Err("a message id must be 1 to 255 printable characters without <>".into());
        }
        check_name(&self.origin).map_err(|e| format!("origin: {e}"))?;
        if let Some(site) = &self.site {
            check_name(site).map_err(|e| format!("site: {e}"))?;
        }
        if self.subject.len() > MAX_SUBJECT {
            return Err(format!(
                "a subject of {} bytes (limit {MAX_SUBJECT})",
                self.subject.len()
            ));
        }
        if self.message.len() > MAX_MAIL.div_ceil(3) * 4 {
            return Err(format!("a message over {MAX_MAIL} bytes"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.message)
            .map_err(|e| format!("message not base64: {e}"))?;
        if bytes.is_empty() || bytes.len() > MAX_MAIL {
            return Err(format!(
                "a message of {} bytes (1 to {MAX_MAIL})",
                bytes.len()
            ));
        }
        Ok(bytes)
    }
}

/// At most this many lines in a handover answer, this long each, and this many
/// database positions of this length.
pub const MAX_LINES: usize = 256;
pub const MAX_LINE: usize = 2000;
pub const MAX_POSITIONS: usize = 64;
pub const MAX_POSITION: usize = 4096;

/// A step of a planned switchover (`orch promote SITE` on the site's standby), asked of
/// the site's master. The master answers only while it is master of `site` at `epoch`
/// (the asker's view), and runs its **own** playbooks from its own config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Handover {
    pub site: String,
    /// The epoch under which the asker believes the receiver is master.
    pub epoch: i64,
    pub step: HandoverStep,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HandoverStep {
    /// Could it hand over: its playbooks valid, each job's final push as a dry run.
    Check,
    /// The final push of every job of the site to the asker.
    Push,
    /// Stop serving: the demote playbooks, pushes refused, then each database's final
    /// replication position.
    Demote,
    /// The switchover stopped before the DNS swap: serve again (the promote playbooks).
    Undo,
    /// The asker holds the DNS lock at `to_epoch`: record it as master, run the rejoin
    /// playbooks.
    Rejoin { to_epoch: i64 },
}

/// What a handover step did, in lines; `ok` false when it failed (the lines say how).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandoverReply {
    pub ok: bool,
    pub lines: Vec<String>,
    /// Database name → its final position (a WAL LSN, or a GTID position): after
    /// [`HandoverStep::Demote`].
    pub positions: BTreeMap<String, String>,
}

impl Handover {
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.site).map_err(|e| format!("site: {e}"))?;
        let to = match self.step {
            HandoverStep::Rejoin { to_epoch } => to_epoch,
            _ => self.epoch,
        };
        if self.epoch < 0 || to < 0 {
            return Err("a negative epoch".into());
        }
        Ok(())
    }
}

impl HandoverReply {
    /// Refuses an answer whose counts or lengths are out of bounds, or a position that
    /// is not one (a WAL LSN or a GTID position: hex digits and `/-:,`).
    pub fn check(&self) -> Result<(), String> {
        if self.lines.len() > MAX_LINES || self.lines.iter().any(|l| l.len() > MAX_LINE) {
            return Err(format!(
                "more than {MAX_LINES} lines, or one over {MAX_LINE} bytes"
            ));
        }
        if self.positions.len() > MAX_POSITIONS {
            return Err(format!("more than {MAX_POSITIONS} positions"));
        }
        for (name, pos) in &self.positions {
            let ok = !name.is_empty()
                && name.len() <= MAX_NAME
                && pos.len() <= MAX_POSITION
                && pos.chars().all(|c| {
                    c.is_ascii_hexdigit() || matches!(c, '/' | '-' | ':' | ',' | ' ' | '\n')
                });
            if !ok {
                return Err("a database name or position out of bounds".into());
            }
        }
        Ok(())
    }
}

/// Free space under one of the receiver's own sync targets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetSpace {
    pub job: String,
    pub path: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Heartbeat(Heartbeat),
    /// Take this mail and send it (the sender could not for a while).
    Mail(HandedMail),
    /// Free space where you keep this site's copies (paths from your own config).
    Space {
        site: String,
    },
    /// Receive a push: after this request the connection speaks the push protocol
    /// ([`crate::sync::wire`]) until the push ends.
    Push(crate::sync::wire::Open),
    /// A step of a planned switchover of one of my sites to the peer.
    Handover(Handover),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Heartbeat(Heartbeat),
    /// The mail is in the receiver's outbox (`new` false: it already had it).
    MailAccepted {
        new: bool,
    },
    Space(Vec<TargetSpace>),
    Handover(HandoverReply),
    Error(String),
}

/// Checks a space answer's bounds.
pub fn check_space(spaces: &[TargetSpace]) -> Result<(), String> {
    if spaces.len() > MAX_TARGETS {
        return Err(format!("{} targets (limit {MAX_TARGETS})", spaces.len()));
    }
    if spaces.iter().any(|s| {
        check_name(&s.job).is_err()
            || s.path.len() > MAX_PATH
            || s.path.chars().any(char::is_control)
    }) {
        return Err("a job name or path out of bounds".into());
    }
    Ok(())
}

/// Answers the peer's requests.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send;

    /// Serves a push on `stream` (the connection belongs to the push from now on).
    fn push(
        &self,
        open: crate::sync::wire::Open,
        stream: TcpStream,
    ) -> impl Future<Output = ()> + Send;
}

async fn write_frame<T: Serialize>(stream: &mut TcpStream, message: &T) -> Result<(), PeerError> {
    let body = serde_json::to_vec(message).map_err(|e| PeerError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(PeerError::Oversized(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| PeerError::Oversized(body.len()))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&body).await?;
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream before a frame starts.
async fn read_frame<T: serde::de::DeserializeOwned, R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<Option<T>, PeerError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(PeerError::Oversized(len));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| PeerError::Malformed(e.to_string()))
}

async fn hello(stream: &mut TcpStream, me: &str, peer: &str) -> Result<(), PeerError> {
    write_frame(
        stream,
        &Hello {
            protocol: PROTOCOL_VERSION,
            node: me.to_owned(),
        },
    )
    .await?;
    let theirs: Hello = read_frame(stream)
        .await?
        .ok_or_else(|| PeerError::Malformed("closed before hello".into()))?;
    if theirs.protocol != PROTOCOL_VERSION {
        return Err(PeerError::Version(theirs.protocol));
    }
    if theirs.node != peer {
        return Err(PeerError::WrongNode {
            got: theirs.node,
            want: peer.to_owned(),
        });
    }
    Ok(())
}

/// Serves the peer until `stop` fires. Connections from any address but `peer_ip` are
/// closed at once, unanswered.
pub async fn serve<H: PeerHandler>(
    listener: TcpListener,
    me: String,
    peer: String,
    peer_ip: IpAddr,
    handler: Arc<H>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let push_slots = Arc::new(Semaphore::new(MAX_PUSHES));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (mut stream, from) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "Accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Frames go out as a length and a body: without this, Nagle's algorithm holds the
        // body for the peer's delayed ACK (40 ms) on every exchange.
        let _ = stream.set_nodelay(true);
        if from.ip().to_canonical() != peer_ip {
            tracing::debug!(%from, "Peer RPC connection from a foreign address refused");
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%from, "Too many peer connections; refused");
            continue;
        };
        let (handler, me, peer, stop) =
            (Arc::clone(&handler), me.clone(), peer.clone(), stop.clone());
        let push_slots = Arc::clone(&push_slots);
        tracker.spawn(async move {
            let mut permit = Some(permit);
            let served = async move {
                tokio::time::timeout(IDLE, hello(&mut stream, &me, &peer))
                    .await
                    .map_err(|_| PeerError::Timeout(IDLE))??;
                loop {
                    let request =
                        match tokio::time::timeout(IDLE, read_frame::<Request, _>(&mut stream))
                            .await
                        {
                            Err(_) => return Err(PeerError::Timeout(IDLE)),
                            Ok(Ok(None)) => return Ok(()),
                            Ok(Ok(Some(r))) => r,
                            Ok(Err(PeerError::Malformed(e))) => {
                                let _ = write_frame(
                                    &mut stream,
                                    &Response::Error(format!("malformed request: {e}")),
                                )
                                .await;
                                return Err(PeerError::Malformed(e));
                            }
                            Ok(Err(e)) => return Err(e),
                        };
                    if let Request::Push(open) = request {
                        let Ok(_push) = push_slots.try_acquire_owned() else {
                            let refusal = format!("{MAX_PUSHES} pushes are being received already");
                            let _ = write_frame(&mut stream, &Response::Error(refusal)).await;
                            return Ok(());
                        };
                        permit.take();
                        handler.push(open, stream).await;
                        return Ok(());
                    }
                    let response = handler.handle(request).await;
                    write_frame(&mut stream, &response).await?;
                }
            };
            tokio::select! {
                () = stop.cancelled() => {}
                result = served => if let Err(error) = result {
                    tracing::debug!(error = crate::error_chain(&error), "Peer connection ended");
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Connects to the peer agent and opens a push: the returned connection speaks the push
/// protocol.
pub async fn open_push(
    addr: SocketAddr,
    me: &str,
    peer: &str,
    open: &crate::sync::wire::Open,
    timeout: Duration,
) -> Result<TcpStream, PeerError> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| PeerError::Connect(addr, e))?;
        stream.set_nodelay(true)?;
        hello(&mut stream, me, peer).await?;
        write_frame(&mut stream, &Request::Push(open.clone())).await?;
        Ok(stream)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| PeerError::Timeout(timeout))?
}

/// How long a connection to the peer's agent may take to open: over a live tunnel it
/// takes milliseconds (a handshake first, after a quiet spell); a dead peer never
/// answers (its end of the tunnel died with its agent) and the kernel would retry for
/// two minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects to the peer agent and makes one request. A request may run for minutes (a
/// switchover's steps run the peer's playbooks), but a peer that dies meanwhile is
/// noticed within about 30 s, not at `timeout` ([`crate::sync::notice_dead_peer`]).
pub async fn call(
    addr: SocketAddr,
    me: &str,
    peer: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Response, PeerError> {
    let exchange = async {
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ))
            })
            .map_err(|e| PeerError::Connect(addr, e))?;
        stream.set_nodelay(true)?;
        crate::sync::notice_dead_peer(socket2::SockRef::from(&stream))?;
        hello(&mut stream, me, peer).await?;
        write_frame(&mut stream, request).await?;
        match read_frame::<Response, _>(&mut stream).await? {
            Some(Response::Error(message)) => {
                Err(PeerError::Refused(crate::inert(&message, crate::PEER_TEXT)))
            }
            Some(response) => Ok(response),
            None => Err(PeerError::Malformed("closed without an answer".into())),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| PeerError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handover_answer_is_bounded_and_its_positions_are_positions() {
        let good = HandoverReply {
            ok: true,
            lines: vec!["alice: web-stop ok (0.1 s)".into()],
            positions: BTreeMap::from([
                ("pg".to_owned(), "0/3023BA8".to_owned()),
                ("my".to_owned(), "0-1-42,1-2-7".to_owned()),
                (
                    "mysql".to_owned(),
                    "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,\nAA:7".to_owned(),
                ),
            ]),
        };
        assert_eq!(good.check(), Ok(()));
        let bad = |f: &dyn Fn(&mut HandoverReply)| {
            let mut r = good.clone();
            f(&mut r);
            r.check().is_err()
        };
        assert!(bad(&|r| r.lines = vec![String::new(); MAX_LINES + 1]));
        assert!(bad(&|r| r.lines = vec!["x".repeat(MAX_LINE + 1)]));
        // A position is put into a statement by the asker: nothing but its alphabet.
        assert!(bad(&|r| {
            r.positions
                .insert("pg".into(), "0/1'; DROP TABLE t; --".into());
        }));
        assert!(bad(&|r| {
            r.positions
                .insert("pg".into(), "1".repeat(MAX_POSITION + 1));
        }));
        assert!(bad(&|r| {
            r.positions.insert(String::new(), "0/1".into());
        }));
        assert!(bad(&|r| {
            for i in 0..=MAX_POSITIONS {
                r.positions.insert(format!("db{i}"), "0/1".into());
            }
        }));
        let step = |epoch, step| Handover {
            site: "alice-web".into(),
            epoch,
            step,
        };
        assert_eq!(step(1, HandoverStep::Demote).check(), Ok(()));
        assert!(step(-1, HandoverStep::Check).check().is_err());
        assert!(step(1, HandoverStep::Rejoin { to_epoch: -2 })
            .check()
            .is_err());
        assert!(Handover {
            site: "s".repeat(MAX_NAME + 1),
            ..step(1, HandoverStep::Undo)
        }
        .check()
        .is_err());
    }

    struct Echo;
    impl PeerHandler for Echo {
        async fn handle(&self, request: Request) -> Response {
            match request {
                Request::Heartbeat(mut h) => {
                    h.node = "bob".into();
                    Response::Heartbeat(h)
                }
                _ => Response::Error("not here".into()),
            }
        }
        async fn push(&self, _open: crate::sync::wire::Open, _stream: TcpStream) {}
    }

    async fn start(peer_ip: &str) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            "bob".into(),
            "alice".into(),
            peer_ip.parse().unwrap(),
            Arc::new(Echo),
            stop.clone(),
        ));
        (addr, stop)
    }

    /// A heartbeat sent as node `me` to a server that should be `peer`.
    async fn beat_as(addr: SocketAddr, me: &str, peer: &str) -> Result<Response, PeerError> {
        call(
            addr,
            me,
            peer,
            &Request::Heartbeat(beat()),
            Duration::from_secs(5),
        )
        .await
    }

    fn beat() -> Heartbeat {
        let mut sites = BTreeMap::new();
        sites.insert(
            "web".to_string(),
            SiteClaim {
                master: "alice".into(),
                epoch: 3,
                switching: false,
                armed: false,
            },
        );
        Heartbeat {
            node: "alice".into(),
            sites,
            observed_endpoint: None,
        }
    }

    /// Garbage in, no panic: random and mutated frames through the frame reader, every
    /// request and answer decoded and checked, 10 000 cases each.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 10_000,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn frame(message: &impl Serialize) -> Vec<u8> {
            let body = serde_json::to_vec(message).unwrap();
            let mut b = (body.len() as u32).to_be_bytes().to_vec();
            b.extend(body);
            b
        }

        /// Frames of every kind of request and answer, to be cut and mutated.
        fn valid() -> Vec<u8> {
            let mut b = frame(&Request::Heartbeat(beat()));
            b.extend(frame(&Request::Handover(Handover {
                site: "web".into(),
                epoch: 3,
                step: HandoverStep::Rejoin { to_epoch: 4 },
            })));
            b.extend(frame(&Request::Space { site: "web".into() }));
            b.extend(frame(&Response::Handover(HandoverReply {
                ok: true,
                lines: vec!["x".into()],
                positions: BTreeMap::from([("db".into(), "0/1".into())]),
            })));
            b.extend(frame(&Response::Space(vec![TargetSpace {
                job: "j".into(),
                path: "/p".into(),
                free_bytes: 1,
                total_bytes: 2,
            }])));
            b
        }

        /// Reads every frame as a request and as an answer, checking what parses.
        fn read_all(bytes: &[u8]) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                for as_request in [true, false] {
                    let mut input = bytes;
                    for _ in 0..16 {
                        if as_request {
                            match read_frame::<Request, _>(&mut input).await {
                                Ok(Some(r)) => check_request(&r),
                                _ => break,
                            }
                        } else {
                            match read_frame::<Response, _>(&mut input).await {
                                Ok(Some(r)) => check_response(&r),
                                _ => break,
                            }
                        }
                    }
                }
            });
        }

        fn check_request(r: &Request) {
            match r {
                Request::Heartbeat(h) => {
                    let _ = h.check();
                }
                Request::Mail(m) => {
                    let _ = m.check();
                }
                Request::Handover(h) => {
                    let _ = h.check();
                }
                Request::Space { .. } | Request::Push(_) => {}
            }
        }

        fn check_response(r: &Response) {
            match r {
                Response::Heartbeat(h) => {
                    let _ = h.check();
                }
                Response::Handover(h) => {
                    let _ = h.check();
                }
                Response::Space(s) => {
                    let _ = check_space(s);
                }
                Response::MailAccepted { .. } | Response::Error(_) => {}
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn random_frames_are_refused_without_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            ) {
                read_all(&bytes);
            }

            #[test]
            fn mutated_frames_are_refused_without_panic(
                cut in any::<prop::sample::Index>(),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            ) {
                let mut b = valid();
                for (at, x) in flips {
                    let i = at.index(b.len());
                    b[i] ^= x;
                }
                let end = cut.index(b.len() + 1);
                read_all(&b[..end]);
            }
        }
    }

    #[test]
    fn names_from_the_peer_are_config_names() {
        let mut h = beat();
        assert_eq!(h.check(), Ok(()));
        h.sites.insert(
            "web\u{1b}[2J".into(),
            SiteClaim {
                master: "alice".into(),
                epoch: 1,
                switching: false,
                armed: false,
            },
        );
        assert!(h.check().is_err());
        let mut h = beat();
        h.node = "alice\r\nInjected: yes".into();
        assert!(h.check().is_err());
        let space = |job: &str, path: &str| TargetSpace {
            job: job.into(),
            path: path.into(),
            free_bytes: 0,
            total_bytes: 0,
        };
        assert_eq!(check_space(&[space("www", "/srv/www")]), Ok(()));
        assert!(check_space(&[space("www", "/srv/\u{1b}]0;x\u{7}")]).is_err());
        assert!(check_space(&[space("w w", "/srv")]).is_err());
        assert!(Handover {
            site: "web\n".into(),
            epoch: 1,
            step: HandoverStep::Check
        }
        .check()
        .is_err());
    }

    /// Pushes that never end (a slow or hostile sender) do not take the slots of the
    /// requests: a heartbeat is answered while more pushes than slots hang.
    #[tokio::test]
    async fn hanging_pushes_leave_room_for_requests() {
        struct Hang(CancellationToken);
        impl PeerHandler for Hang {
            async fn handle(&self, request: Request) -> Response {
                Echo.handle(request).await
            }
            async fn push(&self, _open: crate::sync::wire::Open, _stream: TcpStream) {
                self.0.cancelled().await;
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            "bob".into(),
            "alice".into(),
            "127.0.0.1".parse().unwrap(),
            Arc::new(Hang(stop.clone())),
            stop.clone(),
        ));
        let open = crate::sync::wire::Open {
            protocol: crate::sync::wire::SYNC_PROTOCOL,
            site: "web".into(),
            job: "www".into(),
            epoch: 1,
            generation: None,
            dry_run: false,
            force: false,
            root_meta: None,
        };
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 2 {
            let s = open_push(addr, "alice", "bob", &open, Duration::from_secs(5))
                .await
                .unwrap();
            held.push(s);
        }
        // Let the server take them all in before the heartbeat.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = beat_as(addr, "alice", "bob").await;
        assert!(matches!(got, Ok(Response::Heartbeat(_))), "{got:?}");
        stop.cancel();
    }

    /// A peer whose refusal is 10 KB of escape sequences and line breaks.
    struct Hostile;
    impl PeerHandler for Hostile {
        async fn handle(&self, _request: Request) -> Response {
            Response::Error(format!(
                "\u{1b}[2J\u{1b}]0;owned\u{7}\r\n{}",
                "x".repeat(10_000)
            ))
        }
        async fn push(&self, _open: crate::sync::wire::Open, _stream: TcpStream) {}
    }

    #[tokio::test]
    async fn a_refusal_from_the_peer_arrives_inert_and_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            "bob".into(),
            "alice".into(),
            "127.0.0.1".parse().unwrap(),
            Arc::new(Hostile),
            stop.clone(),
        ));
        let got = beat_as(addr, "alice", "bob").await;
        let Err(PeerError::Refused(text)) = got else {
            panic!("{got:?}")
        };
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.len() <= crate::PEER_TEXT + 3, "{} bytes", text.len());
        assert!(text.starts_with("\\u{1b}[2J"), "{text:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn heartbeat_round_trip() {
        let (addr, stop) = start("127.0.0.1").await;
        let got = beat_as(addr, "alice", "bob").await.unwrap();
        let Response::Heartbeat(h) = got else {
            panic!("{got:?}")
        };
        assert_eq!(h.node, "bob");
        assert_eq!(h.sites["web"].epoch, 3);
        stop.cancel();
    }

    #[tokio::test]
    async fn only_the_peer_address_is_served() {
        let (addr, stop) = start("127.0.0.2").await;
        let err = beat_as(addr, "alice", "bob").await.unwrap_err();
        assert!(
            matches!(err, PeerError::Malformed(_) | PeerError::Io(_)),
            "{err}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn the_wrong_node_and_oversized_frames_are_refused() {
        let (addr, stop) = start("127.0.0.1").await;
        let err = beat_as(addr, "mallory", "bob").await.unwrap_err();
        assert!(
            matches!(err, PeerError::Malformed(_) | PeerError::Io(_)),
            "the server hangs up on a stranger: {err}"
        );
        let err = beat_as(addr, "alice", "carol").await.unwrap_err();
        assert!(matches!(err, PeerError::WrongNode { .. }), "{err}");

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .unwrap();
        // The server's own hello, then nothing: the oversized frame closes the connection.
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(buf.len(), 4 + len, "only the hello came back");
        let hello: Hello = serde_json::from_slice(&buf[4..]).unwrap();
        assert_eq!(
            hello,
            Hello {
                protocol: PROTOCOL_VERSION,
                node: "bob".into()
            }
        );
        stop.cancel();
    }

    #[test]
    fn handed_mail_bounds() {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let good = HandedMail {
            message_id: "1.ab@alice.orch".into(),
            created_at: 1,
            origin: "alice".into(),
            site: Some("web".into()),
            subject: "[orch] hi".into(),
            message: b64(b"Subject: hi\r\n\r\nbody"),
        };
        assert_eq!(good.check().unwrap(), b"Subject: hi\r\n\r\nbody");
        let bad = |f: &dyn Fn(&mut HandedMail)| {
            let mut m = good.clone();
            f(&mut m);
            m.check().unwrap_err()
        };
        assert!(bad(&|m| m.message_id = "a b".into()).contains("message id"));
        assert!(bad(&|m| m.message_id = "<x>".into()).contains("message id"));
        assert!(bad(&|m| m.message_id = "x".repeat(256)).contains("message id"));
        assert!(bad(&|m| m.subject = "s".repeat(999)).contains("subject"));
        assert!(bad(&|m| m.message = b64(&vec![b'x'; MAX_MAIL + 1])).contains("524289 bytes"));
        assert!(bad(&|m| m.message = "A".repeat(800_000)).contains("over"));
        assert!(bad(&|m| m.message = "***".into()).contains("base64"));
        assert!(bad(&|m| m.message = String::new()).contains("0 bytes"));
        assert!(bad(&|m| m.origin = "o".repeat(64)).contains("origin"));
    }

    #[test]
    fn heartbeat_bounds() {
        let mut h = beat();
        assert!(h.check().is_ok());
        h.node = "x".repeat(64);
        assert!(h.check().is_err());
        let mut h = beat();
        for i in 0..=MAX_SITES {
            h.sites.insert(
                format!("s{i}"),
                SiteClaim {
                    master: "a".into(),
                    epoch: 1,
                    switching: false,
                    armed: false,
                },
            );
        }
        assert!(h.check().unwrap_err().contains("sites"));
    }
}
