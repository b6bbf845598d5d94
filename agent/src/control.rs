//! The local control socket: how `orch status` and friends talk to the running agent.
//!
//! Wire format: one JSON object per line, at most [`MAX_FRAME`] bytes. A request is
//! `{"v":1,"request":…}`; the answer is `{"v":1,"reply":{"ok":…}}` or
//! `{"v":1,"reply":{"error":"…"}}`. The meaning of `request` and `ok` belongs to the
//! caller (the orchestrator); this module only carries them. The socket is created 0600
//! inside the state directory (0700), so only its owner can ask anything.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The version of the framing and envelope. Bump it when either changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest line either side accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// How long a connected client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no agent answers at {path}")]
    Unreachable { path: PathBuf, source: io::Error },
    #[error("an agent is already running on {0} (stop it first, or use another state_dir)")]
    AlreadyRunning(PathBuf),
    #[error("control socket {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the agent gave no answer within {0:?}")]
    Timeout(Duration),
    #[error("malformed control message: {0}")]
    Protocol(String),
    #[error("the agent refused the request: {0}")]
    Refused(String),
}

#[derive(Serialize, Deserialize)]
struct RequestFrame<R> {
    v: u32,
    request: R,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply<T> {
    Ok(T),
    Error(String),
}

#[derive(Serialize, Deserialize)]
struct ReplyFrame<T> {
    v: u32,
    reply: Reply<T>,
}

/// Answers requests arriving on the control socket.
pub trait Handler: Send + Sync + 'static {
    type Request: DeserializeOwned + Send;
    type Response: Serialize + Send;
    /// An `Err` is shown to the user as the agent's refusal.
    fn handle(
        &self,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Response, String>> + Send;
}

/// Binds the socket at `path`, refusing when a live agent already answers there and
/// replacing a stale socket file left by a crash.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::AlreadyRunning(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    Ok(listener)
}

/// Serves requests until `stop` fires, then removes the socket file.
pub async fn serve<H: Handler>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = Arc::clone(&handler);
                    let stop = stop.clone();
                    connections.spawn(async move {
                        tokio::select! {
                            () = stop.cancelled() => {}
                            result = serve_one(stream, handler.as_ref()) => {
                                if let Err(error) = result {
                                    tracing::debug!(error = crate::error_chain(&error), "Control connection ended with an error");
                                }
                            }
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "Accepting on the control socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    connections.close();
    connections.wait().await;
    if let Err(error) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), %error, "Could not remove the control socket");
    }
}

async fn serve_one<H: Handler>(stream: UnixStream, handler: &H) -> Result<(), ControlError> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let line = match tokio::time::timeout(READ_TIMEOUT, read_frame(&mut reader)).await {
        Ok(line) => line?,
        Err(_) => return Err(ControlError::Timeout(READ_TIMEOUT)),
    };
    let Some(line) = line else { return Ok(()) };
    let reply = match decode_request::<H::Request>(&line) {
        Ok(request) => match handler.handle(request).await {
            Ok(response) => Reply::Ok(response),
            Err(message) => Reply::Error(message),
        },
        Err(message) => Reply::Error(message),
    };
    let mut out = serde_json::to_vec(&ReplyFrame {
        v: PROTOCOL_VERSION,
        reply,
    })
    .map_err(|e| ControlError::Protocol(e.to_string()))?;
    out.push(b'\n');
    write
        .write_all(&out)
        .await
        .map_err(|source| ControlError::Io {
            path: PathBuf::from("<client>"),
            source,
        })
}

/// Checks the envelope version before looking at the request, so that an old agent
/// tells a newer CLI what is wrong instead of failing on an unknown request shape.
fn decode_request<R: DeserializeOwned>(line: &[u8]) -> Result<R, String> {
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let version: Version =
        serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    if version.v != PROTOCOL_VERSION {
        return Err(format!(
            "control protocol version {} is not supported; this agent speaks {} \
             (restart the agent after upgrading orch)",
            version.v, PROTOCOL_VERSION
        ));
    }
    serde_json::from_slice::<RequestFrame<R>>(line)
        .map(|frame| frame.request)
        .map_err(|e| {
            format!("unknown or malformed request ({e}); is the agent older than this orch?")
        })
}

/// Reads one line of at most [`MAX_FRAME`] bytes; `None` at a clean end of stream.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Vec<u8>>, ControlError> {
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_FRAME).unwrap_or(u64::MAX) + 1;
    let n = reader
        .take(limit)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|source| ControlError::Io {
            path: PathBuf::from("<peer>"),
            source,
        })?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(ControlError::Protocol(if line.len() > MAX_FRAME {
            format!("a message is longer than {MAX_FRAME} bytes")
        } else {
            "the message ended before its newline".to_string()
        }));
    }
    line.pop();
    Ok(Some(line))
}

/// Sends one request to the agent at `path` and waits up to `timeout` for its answer.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    path: &Path,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Unreachable {
            path: path.to_owned(),
            source,
        })?;
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut out = serde_json::to_vec(&RequestFrame {
            v: PROTOCOL_VERSION,
            request,
        })
        .map_err(|e| ControlError::Protocol(e.to_string()))?;
        out.push(b'\n');
        let io_err = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        write.write_all(&out).await.map_err(io_err)?;
        let mut reader = BufReader::new(read);
        let line = read_frame(&mut reader).await?.ok_or_else(|| {
            ControlError::Protocol("the agent closed the connection without answering".into())
        })?;
        let frame: ReplyFrame<Resp> = serde_json::from_slice(&line)
            .map_err(|e| ControlError::Protocol(format!("unreadable answer: {e}")))?;
        match frame.reply {
            Reply::Ok(response) => Ok(response),
            Reply::Error(message) => Err(ControlError::Refused(message)),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControlError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Ask {
        Echo(String),
        Fail,
    }

    struct Echo;
    impl Handler for Echo {
        type Request = Ask;
        type Response = String;
        async fn handle(&self, request: Ask) -> Result<String, String> {
            match request {
                Ask::Echo(s) => Ok(s),
                Ask::Fail => Err("no".into()),
            }
        }
    }

    /// Garbage in, no panic: random and mutated lines through the frame reader and the
    /// request decoder, 10 000 cases each.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn read_all(bytes: &[u8]) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut input = bytes;
                for _ in 0..16 {
                    match read_frame(&mut input).await {
                        Ok(Some(line)) => {
                            assert!(line.len() <= MAX_FRAME);
                            let _ = decode_request::<Ask>(&line);
                            let _ = decode_request::<serde_json::Value>(&line);
                        }
                        _ => break,
                    }
                }
            });
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 10_000,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn random_lines_are_refused_without_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            ) {
                read_all(&bytes);
            }

            #[test]
            fn mutated_requests_are_refused_without_panic(
                cut in any::<prop::sample::Index>(),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            ) {
                let mut b = serde_json::to_vec(&RequestFrame { v: PROTOCOL_VERSION, request: Ask::Echo("hi".into()) }).unwrap();
                b.push(b'\n');
                b.extend_from_slice(b"{\"v\":1,\"request\":\"fail\"}\n");
                for (at, x) in flips {
                    let i = at.index(b.len());
                    b[i] ^= x;
                }
                let end = cut.index(b.len() + 1);
                read_all(&b[..end]);
            }
        }
    }

    async fn start(dir: &Path) -> (PathBuf, CancellationToken, tokio::task::JoinHandle<()>) {
        let path = dir.join("orch.sock");
        let listener = bind(&path).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, path.clone(), Arc::new(Echo), stop.clone()));
        (path, stop, task)
    }

    #[tokio::test]
    async fn round_trip_error_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let (path, stop, task) = start(dir.path()).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let got: String = call(&path, &Ask::Echo("hi".into()), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, "hi");
        let err = call::<_, String>(&path, &Ask::Fail, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ControlError::Refused(ref m) if m == "no"),
            "{err}"
        );

        assert!(matches!(bind(&path), Err(ControlError::AlreadyRunning(_))));
        stop.cancel();
        task.await.unwrap();
        assert!(!path.exists(), "the socket file is removed at shutdown");
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orch.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        bind(&path).unwrap();
    }

    #[tokio::test]
    async fn wrong_version_and_oversized_frames_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, stop, task) = start(dir.path()).await;

        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"v\":99,\"request\":\"fail\"}\n")
            .await
            .unwrap();
        let mut answer = String::new();
        BufReader::new(&mut s).read_line(&mut answer).await.unwrap();
        assert!(answer.contains("version 99 is not supported"), "{answer}");

        let mut s = UnixStream::connect(&path).await.unwrap();
        let big = vec![b'x'; MAX_FRAME + 10];
        // The server stops reading after MAX_FRAME + 1 bytes and hangs up without answering.
        let _ = s.write_all(&big).await;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        assert!(answer.is_empty());

        // The server is still healthy afterwards.
        let got: String = call(&path, &Ask::Echo("ok".into()), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, "ok");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn no_agent_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let err = call::<_, String>(
            &dir.path().join("none.sock"),
            &Ask::Fail,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ControlError::Unreachable { .. }));
    }
}
