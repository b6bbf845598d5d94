//! systemd's notify protocol (`sd_notify(3)`), without libsystemd: one datagram per
//! message to the unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace). `READY=1` once the service serves, `WATCHDOG=1` at least every
//! half of `$WATCHDOG_USEC` while it is healthy, `STOPPING=1` when it stops. Outside
//! systemd (no `$NOTIFY_SOCKET`) there is no notifier and nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd's environment asks for, if any. The watchdog is this
    /// process's only when `$WATCHDOG_PID` is unset or names it.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let watchdog = watchdog(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier::new(path.as_encoded_bytes(), watchdog).map(Some)
    }

    /// A notifier for the socket `path` (`@` first: abstract) with a watchdog timeout.
    pub fn new(path: &[u8], watchdog: Option<Duration>) -> io::Result<Notifier> {
        let to = match path.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name)?
            }
            None if path.starts_with(b"/") => {
                use std::os::unix::ffi::OsStrExt as _;
                SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))?
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "NOTIFY_SOCKET is neither an absolute path nor @abstract",
                ))
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            to,
            watchdog,
        })
    }

    /// Sends one message, e.g. `READY=1` (never blocks: a datagram, or an error).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.set_nonblocking(true)?;
        self.socket
            .send_to_addr(state.as_bytes(), &self.to)
            .map(drop)
    }

    /// How often to send `WATCHDOG=1`: half the timeout, as `sd_watchdog_enabled(3)`
    /// advises. `None` without a watchdog.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|t| t / 2)
    }
}

/// The watchdog timeout from `$WATCHDOG_USEC` and `$WATCHDOG_PID` for process `pid`.
fn watchdog(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if for_pid.is_some_and(|p| p.parse::<u32>().ok() != Some(pid)) {
        return None;
    }
    let usec: u64 = usec?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_ours_only_when_systemd_says_so() {
        let d = Some(Duration::from_secs(30));
        assert_eq!(watchdog(Some("30000000"), None, 7), d);
        assert_eq!(watchdog(Some("30000000"), Some("7"), 7), d);
        assert_eq!(watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog(Some("0"), None, 7), None);
        assert_eq!(watchdog(Some("soon"), None, 7), None);
        assert_eq!(watchdog(None, None, 7), None);
    }

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str().as_encoded_bytes(), None).unwrap();
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        assert_eq!(n.watchdog_every(), None);

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("orch-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n =
            Notifier::new(format!("@{name}").as_bytes(), Some(Duration::from_secs(10))).unwrap();
        n.notify("WATCHDOG=1").unwrap();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(5)));

        assert!(Notifier::new(b"relative", None).is_err());
    }
}
