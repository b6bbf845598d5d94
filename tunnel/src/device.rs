//! The tunnel's I/O shell: a TUN device, a UDP socket and one [`Link`], driven by one
//! tokio task. All decisions are the link's; this file only moves bytes and time.

use crate::link::{Link, LinkConfig, LinkStats, MAX_PACKET, OVERHEAD};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// MTU of the tunnel interface: 1500 minus the IPv6, UDP and WireGuard headers.
pub const MTU: u16 = 1420;
/// A name lookup that takes longer than this is abandoned (and retried 15 s later).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct TunnelConfig {
    pub link: LinkConfig,
    /// TUN device name, e.g. `orch0`.
    pub interface: String,
    /// This node's tunnel address and the overlay's prefix length.
    pub address: IpAddr,
    pub prefix: u8,
    pub listen_port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("creating TUN device {name} (needs root or CAP_NET_ADMIN, and /dev/net/tun)")]
    Tun { name: String, source: io::Error },
    #[error("binding UDP port {port} (is another WireGuard or orch using it?)")]
    Udp { port: u16, source: io::Error },
    #[error("starting the tunnel thread")]
    Runtime(#[source] io::Error),
}

/// What the agent can tell the running tunnel (the link decides what it means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Resolve the peer's endpoint name now ([`Link::reresolve_now`]).
    Reresolve,
    /// Send a handshake initiation now ([`Link::handshake_now`]).
    Handshake,
}

/// The agent's handle on the running tunnel: its stats, and commands to it.
#[derive(Clone)]
pub struct TunnelHandle {
    stats: watch::Receiver<LinkStats>,
    commands: mpsc::Sender<Command>,
}

impl TunnelHandle {
    /// The latest stats (published every 500 ms).
    pub fn stats(&self) -> LinkStats {
        self.stats.borrow().clone()
    }

    /// A receiver of the stats, for a task that watches them.
    pub fn subscribe(&self) -> watch::Receiver<LinkStats> {
        self.stats.clone()
    }

    /// Sends `command` to the tunnel; false when the tunnel has stopped or is too busy
    /// to take it (a command repeated before the last was handled changes nothing).
    pub fn command(&self, command: Command) -> bool {
        self.commands.try_send(command).is_ok()
    }
}

/// Runs the tunnel on a thread of its own with a single-threaded runtime: every packet
/// crosses one epoll wake-up on one thread, with no hand-off between worker threads,
/// which is what keeps the added round-trip time low. Returns once the device and socket
/// exist (or could not be made); the thread ends after `stop` fires.
pub async fn spawn(
    config: TunnelConfig,
    stop: CancellationToken,
) -> Result<(TunnelThread, TunnelHandle), TunnelError> {
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let name = format!("tunnel-{}", config.interface);
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(source) => {
                let _ = opened_tx.send(Err(TunnelError::Runtime(source)));
                return;
            }
        };
        let result = runtime.block_on(async move {
            // Made here, so that they register with this thread's reactor.
            let (tunnel, handle) = match open(config) {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return Ok(());
                }
            };
            let _ = opened_tx.send(Ok(handle));
            tunnel.run(stop).await
        });
        let _ = done_tx.send(result);
    });
    if let Err(source) = thread {
        return Err(TunnelError::Runtime(source));
    }
    match opened_rx.await {
        Ok(Ok(handle)) => Ok((TunnelThread { done: done_rx }, handle)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(TunnelError::Runtime(io::Error::other(
            "the tunnel thread ended while starting",
        ))),
    }
}

/// The running tunnel thread.
pub struct TunnelThread {
    done: tokio::sync::oneshot::Receiver<io::Result<()>>,
}

impl TunnelThread {
    /// Waits until the tunnel thread has stopped (and removed its device).
    pub async fn wait(self) -> io::Result<()> {
        self.done
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the tunnel thread panicked")))
    }
}

/// Creates the device and socket; returns the tunnel to run, and the handle on it.
pub fn open(config: TunnelConfig) -> Result<(Tunnel, TunnelHandle), TunnelError> {
    let tun = tun_device(&config).map_err(|source| TunnelError::Tun {
        name: config.interface.clone(),
        source,
    })?;
    let udp = udp_socket(config.listen_port).map_err(|source| TunnelError::Udp {
        port: config.listen_port,
        source,
    })?;
    let (stats_tx, stats_rx) = watch::channel(LinkStats::default());
    let (commands_tx, commands_rx) = mpsc::channel(8);
    Ok((
        Tunnel {
            config,
            tun,
            udp,
            stats: stats_tx,
            commands: commands_rx,
        },
        TunnelHandle {
            stats: stats_rx,
            commands: commands_tx,
        },
    ))
}

fn tun_device(config: &TunnelConfig) -> io::Result<tun_rs::AsyncDevice> {
    let builder = tun_rs::DeviceBuilder::new()
        .name(config.interface.clone())
        .mtu(MTU);
    let builder = match config.address {
        IpAddr::V4(a) => builder.ipv4(a, config.prefix, None),
        IpAddr::V6(a) => builder.ipv6(a, config.prefix),
    };
    builder.build_async()
}

/// One socket for both families where the host has IPv6; IPv4 alone otherwise.
fn udp_socket(port: u16) -> io::Result<UdpSocket> {
    let socket = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
        Ok(s) => {
            s.set_only_v6(false)?;
            s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
            s
        }
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
            s
        }
    };
    // Room for bursts at line rate; the kernel caps these at its own maximum.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// IPv4 peers arrive on the dual-stack socket as `::ffff:a.b.c.d`; the link sees `a.b.c.d`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

pub struct Tunnel {
    config: TunnelConfig,
    tun: tun_rs::AsyncDevice,
    udp: UdpSocket,
    stats: watch::Sender<LinkStats>,
    commands: mpsc::Receiver<Command>,
}

impl Tunnel {
    /// Runs until `stop` fires; the TUN device is removed when this returns.
    pub async fn run(self, stop: CancellationToken) -> io::Result<()> {
        let Tunnel {
            config,
            tun,
            udp,
            stats,
            mut commands,
        } = self;
        let v6_socket = udp.local_addr()?.is_ipv6();
        let target = |to: SocketAddr| match (to.ip(), v6_socket) {
            (IpAddr::V4(a), true) => SocketAddr::new(IpAddr::V6(a.to_ipv6_mapped()), to.port()),
            _ => to,
        };
        let index = rand_index();
        let mut link = Link::new(config.link.clone(), Instant::now().into_std(), index);
        let (resolved_tx, mut resolved_rx) = mpsc::channel::<Vec<IpAddr>>(4);
        let mut tun_buf = vec![0u8; MAX_PACKET];
        let mut udp_buf = vec![0u8; MAX_PACKET];
        let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
        let mut next_stats = Instant::now();
        tracing::info!(interface = %config.interface, address = %config.address, port = config.listen_port, "Tunnel up");
        // One timer, moved only when the deadline changes: not a new one per packet.
        let timer = tokio::time::sleep_until(next_stats);
        tokio::pin!(timer);
        let (mut published_up, mut published_handshakes) = (false, 0);

        loop {
            let wake = Instant::from_std(link.poll_timeout()).min(next_stats);
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                () = stop.cancelled() => break,
                read = tun.recv(&mut tun_buf) => {
                    let n = read?;
                    if let Some((to, datagram)) = link.handle_tun_packet(&tun_buf[..n], &mut out) {
                        send(&udp, target(to), datagram).await;
                    }
                }
                received = udp.recv_from(&mut udp_buf) => {
                    match received {
                        Ok((n, from)) => {
                            let now = Instant::now().into_std();
                            if let Some(packet) = link.handle_datagram(now, canonical(from), &udp_buf[..n], &mut out) {
                                if let Err(error) = tun.send(packet).await {
                                    tracing::debug!(%error, "Writing to the TUN device failed");
                                }
                            }
                            // A session that starts (or a new handshake) is published at
                            // once, not up to 500 ms later: whoever asks right after the
                            // first handshake sees the tunnel up. (The responder's session
                            // starts with the initiator's first data, after the handshake.)
                            if !published_up || link.handshakes() != published_handshakes {
                                let now_stats = link.stats(now);
                                if now_stats.since_handshake.is_some() {
                                    (published_up, published_handshakes) = (true, now_stats.handshakes);
                                    stats.send_replace(now_stats);
                                }
                            }
                        }
                        // ICMP errors (port unreachable while the peer is down) surface here.
                        Err(error) => tracing::trace!(%error, "UDP receive error"),
                    }
                }
                Some(addrs) = resolved_rx.recv() => link.handle_resolved(&addrs),
                Some(command) = commands.recv() => {
                    let now = Instant::now().into_std();
                    let done = match command {
                        Command::Reresolve => link.reresolve_now(now),
                        Command::Handshake => link.handshake_now(now),
                    };
                    tracing::debug!(?command, done, "Tunnel command");
                }
                () = &mut timer => {
                    let now = Instant::now();
                    link.handle_timeout(now.into_std());
                    if now >= next_stats {
                        next_stats = now + Duration::from_millis(500);
                        let now_stats = link.stats(now.into_std());
                        (published_up, published_handshakes) =
                            (now_stats.since_handshake.is_some(), now_stats.handshakes);
                        stats.send_replace(now_stats);
                    }
                }
            }
            while let Some(t) = link.poll_transmit() {
                send(&udp, target(t.to), &t.payload).await;
            }
            if let Some((host, port)) = link.poll_resolve() {
                spawn_resolve(host, port, resolved_tx.clone(), stop.clone());
            }
        }
        tracing::info!(interface = %config.interface, "Tunnel down");
        Ok(())
    }
}

async fn send(udp: &UdpSocket, to: SocketAddr, datagram: &[u8]) {
    if let Err(error) = udp.send_to(datagram, to).await {
        // Unreachable networks while an address changes are expected; the link retries.
        tracing::trace!(%error, %to, "UDP send failed");
    }
}

fn spawn_resolve(host: String, port: u16, tx: mpsc::Sender<Vec<IpAddr>>, stop: CancellationToken) {
    tokio::spawn(async move {
        let lookup = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((host.as_str(), port)),
        );
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = lookup => r,
        };
        match result {
            Ok(Ok(addrs)) => {
                let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                tracing::debug!(%host, ?addrs, "Resolved the peer's endpoint");
                let _ = tx.try_send(addrs);
            }
            Ok(Err(error)) => tracing::warn!(%host, %error, "Cannot resolve the peer's endpoint"),
            Err(_) => tracing::warn!(%host, "Resolving the peer's endpoint timed out"),
        }
    });
}

/// A random session index for `Tunn` (24 bits are used).
fn rand_index() -> u32 {
    let mut b = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    u32::from_le_bytes(b)
}
