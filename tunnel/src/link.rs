//! The sans-IO core of the tunnel: one WireGuard peer, its endpoint and its timers.
//!
//! [`Link`] wraps `boringtun::noise::Tunn` (which does the cryptography and the
//! protocol's own timers) and adds what a pair of home servers with dynamic addresses
//! needs on top, all driven by the `now` the caller passes in:
//! - a handshake as soon as the link starts, not one keepalive later;
//! - *suspect* when nothing authenticated arrived for 2 × keepalive: the peer's endpoint
//!   name is re-resolved every 15 s, and a changed address gets a handshake at once;
//! - re-initiation with backoff while suspect, because `Tunn` falls silent for good
//!   after 90 s of failed handshakes (`ConnectionExpired`);
//! - roaming: the endpoint follows the source of packets that prove a live session
//!   (data, keepalives, handshake responses) — not of initiations, which can be
//!   delivered late by whoever captured them;
//! - cryptokey routing: a decrypted packet must come from the peer's tunnel address,
//!   and only packets for that address are sent.
//!
//! It performs no I/O: the caller feeds it datagrams, TUN packets, timeouts and commands
//! ([`Link::reresolve_now`], [`Link::handshake_now`]), and drains
//! [`Link::poll_transmit`], [`Link::poll_resolve`] and [`Link::poll_timeout`].

// The link never reads a clock: every `now` comes from its caller (the device passes
// tokio's, converted), so std's type here decides nothing on its own (see clippy.toml).
#![allow(clippy::disallowed_types)]

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// WireGuard adds at most this much to a packet; `Tunn` also wants at least 148 bytes.
pub const OVERHEAD: usize = 32;
/// The largest datagram or packet the link handles.
pub const MAX_PACKET: usize = 65_535;
/// How often `Tunn::update_timers` must run.
const TICK: Duration = Duration::from_millis(250);
/// How often the endpoint name is re-resolved while the link is suspect.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(15);
/// Re-initiation backoff while suspect or never connected: from the first to the last
/// value, doubling. (`Tunn` alone retries every 5 s, and not at all after 90 s.)
const REINIT_FIRST: Duration = Duration::from_secs(1);
const REINIT_MAX: Duration = Duration::from_secs(10);

/// What the link is configured with.
#[derive(Clone)]
pub struct LinkConfig {
    pub private_key: crate::PrivateKey,
    pub peer_public_key: crate::PublicKey,
    /// The peer's address inside the tunnel: the only source accepted from it.
    pub peer_tunnel_ip: IpAddr,
    /// This node's address inside the tunnel: the only destination accepted from the
    /// peer (the peer must not route through us into our LAN).
    pub own_tunnel_ip: IpAddr,
    pub keepalive: Duration,
    /// The peer's configured endpoint: a name (re-resolved) or an address, and a port.
    pub peer_endpoint: Option<(String, u16)>,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// Counters and times for `orch status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub endpoint: Option<SocketAddr>,
    /// Time since the last completed handshake, as `Tunn` counts it.
    pub since_handshake: Option<Duration>,
    /// Time since the last authenticated datagram from the peer.
    pub since_authenticated_rx: Option<Duration>,
    pub suspect: bool,
    /// Plaintext bytes through the tunnel.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub handshakes: u64,
    pub roams: u64,
    /// Datagrams that did not authenticate, and inner packets refused by routing (a
    /// source other than the peer's tunnel address, a destination other than ours).
    pub rejected: u64,
}

pub struct Link {
    tunn: Tunn,
    config: LinkConfig,
    endpoint: Option<SocketAddr>,
    started: Instant,
    last_authenticated: Option<Instant>,
    next_tick: Instant,
    next_resolve: Instant,
    next_reinit: Option<Instant>,
    reinit_backoff: Duration,
    resolve_requested: bool,
    transmits: VecDeque<Transmit>,
    stats: LinkStats,
    scratch: Vec<u8>,
}

impl Link {
    /// A link that starts handshaking at once if it knows where the peer is.
    pub fn new(config: LinkConfig, now: Instant, index: u32) -> Link {
        let keepalive = u16::try_from(config.keepalive.as_secs())
            .unwrap_or(u16::MAX)
            .max(1);
        let tunn = Tunn::new(
            config.private_key.secret().clone(),
            boringtun::x25519::PublicKey::from(*config.peer_public_key.as_bytes()),
            None,
            Some(keepalive),
            index & 0x00ff_ffff,
            None,
        );
        let endpoint = config.peer_endpoint.as_ref().and_then(|(host, port)| {
            host.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, *port))
        });
        let needs_name = config.peer_endpoint.is_some() && endpoint.is_none();
        let mut link = Link {
            tunn,
            config,
            endpoint,
            started: now,
            last_authenticated: None,
            next_tick: now,
            next_resolve: now + RESOLVE_EVERY,
            next_reinit: None,
            reinit_backoff: REINIT_FIRST,
            resolve_requested: needs_name,
            transmits: VecDeque::new(),
            stats: LinkStats::default(),
            scratch: vec![0; MAX_PACKET],
        };
        link.initiate(true);
        link
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// True when nothing authenticated arrived for 2 × keepalive (or ever, after that long).
    pub fn is_suspect(&self, now: Instant) -> bool {
        let since = self.last_authenticated.unwrap_or(self.started);
        now.saturating_duration_since(since) >= self.config.keepalive * 2
    }

    /// Sends a handshake initiation to the current endpoint, if there is one.
    fn initiate(&mut self, force: bool) {
        let Some(to) = self.endpoint else { return };
        match self
            .tunn
            .format_handshake_initiation(&mut self.scratch, force)
        {
            TunnResult::WriteToNetwork(packet) => {
                self.transmits.push_back(Transmit {
                    to,
                    payload: packet.to_vec(),
                });
            }
            TunnResult::Err(e) => tracing::debug!(error = ?e, "Cannot start a handshake"),
            _ => {}
        }
    }

    /// A packet read from the TUN device. Returns the datagram to send, if any (written
    /// into `out`, which must hold `packet.len() + OVERHEAD` and at least 148 bytes).
    pub fn handle_tun_packet<'o>(
        &mut self,
        packet: &[u8],
        out: &'o mut [u8],
    ) -> Option<(SocketAddr, &'o [u8])> {
        if Tunn::dst_address(packet) != Some(self.config.peer_tunnel_ip) {
            // Only the peer lives on the other side; anything else has nowhere to go.
            return None;
        }
        let to = self.endpoint?;
        if out.len() < packet.len() + OVERHEAD || out.len() < 148 {
            return None;
        }
        match self.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(datagram) => Some((to, datagram)),
            TunnResult::Err(e) => {
                tracing::debug!(error = ?e, "Encapsulation failed");
                None
            }
            _ => None,
        }
    }

    /// A datagram from the network. Returns a packet for the TUN device, if any (written
    /// into `out`). Replies (handshake responses, queued packets) go to `poll_transmit`.
    pub fn handle_datagram<'o>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &'o mut [u8],
    ) -> Option<&'o [u8]> {
        // `Tunn::decapsulate` reads an empty datagram as "flush your queue" and answers
        // `Done`; nothing shorter than a keepalive (the smallest message) is WireGuard.
        if datagram.len() < MIN_MESSAGE {
            self.stats.rejected += 1;
            return None;
        }
        let kind = datagram[0];
        let (authenticated, tun_len) = match self.tunn.decapsulate(Some(from.ip()), datagram, out) {
            TunnResult::Done => (kind != COOKIE_REPLY, None),
            TunnResult::WriteToNetwork(reply) => {
                // Answered where it came from: a handshake response to an initiation, or
                // a cookie reply from the rate limiter to an unverified packet.
                let authenticated = reply.first() != Some(&COOKIE_REPLY);
                let reply = reply.to_vec();
                self.transmits.push_back(Transmit {
                    to: from,
                    payload: reply,
                });
                if authenticated && kind == HANDSHAKE_RESPONSE {
                    // Our handshake completed: send what waited for it.
                    self.flush_queued(from);
                }
                (authenticated, None)
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                (true, Some((packet.len(), IpAddr::V4(src))))
            }
            TunnResult::WriteToTunnelV6(packet, src) => {
                (true, Some((packet.len(), IpAddr::V6(src))))
            }
            TunnResult::Err(e) => {
                self.stats.rejected += 1;
                tracing::trace!(error = ?e, %from, "Datagram refused");
                return None;
            }
        };
        if !authenticated {
            return None;
        }
        if matches!(kind, HANDSHAKE_INIT | HANDSHAKE_RESPONSE) {
            self.stats.handshakes += 1;
        }
        // An initiation proves the peer's key, but not that it is current: one that never
        // reached us can be delivered later by whoever captured it. Only data (counters
        // stop replays) and responses (bound to our own handshake) prove a live session,
        // so only they move the endpoint and count as signs of life. The real peer sends
        // data right after our response, from wherever it really is.
        if kind != HANDSHAKE_INIT {
            self.authenticated_from(now, from, kind);
        }
        let (len, src) = tun_len?;
        if src != self.config.peer_tunnel_ip {
            // The peer may only speak as its own tunnel address.
            self.stats.rejected += 1;
            tracing::debug!(%src, "Packet from the peer with a foreign source address dropped");
            return None;
        }
        let dst = Tunn::dst_address(&out[..len]);
        if dst != Some(self.config.own_tunnel_ip) {
            // Only for us: with forwarding on (a Docker host) it could reach our LAN.
            self.stats.rejected += 1;
            tracing::debug!(?dst, "Packet from the peer for another destination dropped");
            return None;
        }
        Some(&out[..len])
    }

    /// After a handshake, `Tunn` may hold packets queued while it had no session.
    fn flush_queued(&mut self, to: SocketAddr) {
        while let TunnResult::WriteToNetwork(packet) =
            self.tunn.decapsulate(None, &[], &mut self.scratch)
        {
            self.transmits.push_back(Transmit {
                to,
                payload: packet.to_vec(),
            });
        }
    }

    fn authenticated_from(&mut self, now: Instant, from: SocketAddr, kind: u8) {
        self.last_authenticated = Some(now);
        self.next_reinit = None;
        self.reinit_backoff = REINIT_FIRST;
        if self.endpoint != Some(from) {
            if self.endpoint.is_some() {
                self.stats.roams += 1;
                tracing::info!(old = ?self.endpoint, new = %from, packet_type = kind, "Peer roamed");
            }
            self.endpoint = Some(from);
        }
    }

    /// Runs the timers; call at [`Link::poll_timeout`] (earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            match self.tunn.update_timers(&mut self.scratch) {
                TunnResult::WriteToNetwork(packet) => {
                    if let Some(to) = self.endpoint {
                        self.transmits.push_back(Transmit {
                            to,
                            payload: packet.to_vec(),
                        });
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    // Silent forever unless we act: the suspect logic below re-initiates.
                }
                TunnResult::Err(e) => tracing::trace!(error = ?e, "Timer error"),
                _ => {}
            }
        }
        let suspect = self.is_suspect(now);
        if suspect && self.config.peer_endpoint.is_some() && now >= self.next_resolve {
            self.next_resolve = now + RESOLVE_EVERY;
            self.resolve_requested = true;
        }
        // Never connected yet (the peer may have started after our first initiation
        // was lost), or silent: keep initiating, with backoff.
        if !suspect && self.last_authenticated.is_some() {
            return;
        }
        match self.next_reinit {
            None => self.next_reinit = Some(now + self.reinit_backoff),
            Some(at) if now >= at => {
                self.initiate(true);
                self.reinit_backoff = (self.reinit_backoff * 2).min(REINIT_MAX);
                self.next_reinit = Some(now + self.reinit_backoff);
            }
            Some(_) => {}
        }
    }

    /// The result of resolving the peer's endpoint name. A new address gets a handshake
    /// at once; if the current address is among the answers, nothing changes.
    pub fn handle_resolved(&mut self, addrs: &[IpAddr]) {
        let Some((_, port)) = self.config.peer_endpoint else {
            return;
        };
        if addrs.is_empty() || self.endpoint.is_some_and(|e| addrs.contains(&e.ip())) {
            return;
        }
        let new = SocketAddr::new(addrs[0], port);
        tracing::info!(old = ?self.endpoint, %new, "Peer endpoint re-resolved to a new address");
        self.endpoint = Some(new);
        self.initiate(true);
    }

    /// Asked from outside (the old master learnt its peer's address may have changed):
    /// resolve the peer's endpoint name at the next [`Link::poll_resolve`], whether or not
    /// the link is suspect. Returns false when the endpoint is a fixed address or unset,
    /// so there is nothing to resolve.
    pub fn reresolve_now(&mut self, now: Instant) -> bool {
        let Some((host, _)) = &self.config.peer_endpoint else {
            return false;
        };
        if host.parse::<IpAddr>().is_ok() {
            return false;
        }
        self.resolve_requested = true;
        self.next_resolve = now + RESOLVE_EVERY;
        true
    }

    /// Asked from outside (this node's own address changed, or the pair must heal now):
    /// send a handshake initiation to the current endpoint at once, and restart the
    /// re-initiation backoff from its shortest step. Returns false when there is no
    /// endpoint to send it to yet.
    pub fn handshake_now(&mut self, now: Instant) -> bool {
        if self.endpoint.is_none() {
            return false;
        }
        self.initiate(true);
        self.reinit_backoff = REINIT_FIRST;
        if self.next_reinit.is_some() {
            self.next_reinit = Some(now + self.reinit_backoff);
        }
        true
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The endpoint name to resolve now, if one is due.
    pub fn poll_resolve(&mut self) -> Option<(String, u16)> {
        if std::mem::take(&mut self.resolve_requested) {
            self.config.peer_endpoint.clone()
        } else {
            None
        }
    }

    /// When `handle_timeout` should next run.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_tick;
        if let Some(reinit) = self.next_reinit {
            at = at.min(reinit);
        }
        at
    }

    /// Completed handshakes so far (a new one is a new session: worth publishing at once).
    pub fn handshakes(&self) -> u64 {
        self.stats.handshakes
    }

    pub fn stats(&self, now: Instant) -> LinkStats {
        let (since_handshake, tx, rx, _, _) = self.tunn.stats();
        LinkStats {
            endpoint: self.endpoint,
            since_handshake,
            since_authenticated_rx: self
                .last_authenticated
                .map(|t| now.saturating_duration_since(t)),
            suspect: self.is_suspect(now),
            rx_bytes: rx as u64,
            tx_bytes: tx as u64,
            ..self.stats.clone()
        }
    }
}

/// A keepalive: 16 bytes of header and a 16-byte tag; every other message is longer.
const MIN_MESSAGE: usize = 32;
const HANDSHAKE_INIT: u8 = 1;
const HANDSHAKE_RESPONSE: u8 = 2;
const COOKIE_REPLY: u8 = 3;

#[cfg(test)]
mod tests;
