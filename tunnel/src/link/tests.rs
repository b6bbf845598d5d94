//! Two links with real WireGuard handshakes over an in-memory network; the link's own
//! timers run on injected time.

use super::*;
use crate::PrivateKey;

const A_TUN: [u8; 4] = [198, 51, 100, 1];
const B_TUN: [u8; 4] = [198, 51, 100, 2];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A minimal IPv4 packet (20-byte header, correct total length) carrying `payload`.
fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap();
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

struct Pair {
    a: Link,
    b: Link,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    now: Instant,
    /// TUN packets each side delivered.
    a_tun: Vec<Vec<u8>>,
    b_tun: Vec<Vec<u8>>,
    /// Every datagram A sent, as B saw it (for replays).
    seen_by_b: Vec<Vec<u8>>,
}

fn pair(b_endpoint_of_a: Option<(String, u16)>) -> Pair {
    let now = Instant::now();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let a = Link::new(
        LinkConfig {
            private_key: ka.clone(),
            peer_public_key: kb.public_key(),
            peer_tunnel_ip: IpAddr::from(B_TUN),
            own_tunnel_ip: IpAddr::from(A_TUN),
            keepalive: Duration::from_secs(5),
            peer_endpoint: Some(("192.0.2.2".into(), 51820)),
        },
        now,
        1,
    );
    let b = Link::new(
        LinkConfig {
            private_key: kb,
            peer_public_key: ka.public_key(),
            peer_tunnel_ip: IpAddr::from(A_TUN),
            own_tunnel_ip: IpAddr::from(B_TUN),
            keepalive: Duration::from_secs(5),
            peer_endpoint: b_endpoint_of_a,
        },
        now,
        2,
    );
    Pair {
        a,
        b,
        a_addr: addr("192.0.2.1:51820"),
        b_addr: addr("192.0.2.2:51820"),
        now,
        a_tun: vec![],
        b_tun: vec![],
        seen_by_b: vec![],
    }
}

impl Pair {
    /// Delivers queued datagrams both ways until none are left (bounded).
    fn pump(&mut self) {
        let mut out = vec![0u8; MAX_PACKET];
        for _ in 0..20 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                if t.to == self.b_addr {
                    self.seen_by_b.push(t.payload.clone());
                    if let Some(p) =
                        self.b
                            .handle_datagram(self.now, self.a_addr, &t.payload, &mut out)
                    {
                        self.b_tun.push(p.to_vec());
                    }
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                if t.to == self.a_addr {
                    if let Some(p) =
                        self.a
                            .handle_datagram(self.now, self.b_addr, &t.payload, &mut out)
                    {
                        self.a_tun.push(p.to_vec());
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn send_from_a(&mut self, packet: &[u8]) {
        let mut out = vec![0u8; MAX_PACKET];
        if let Some((to, d)) = self.a.handle_tun_packet(packet, &mut out) {
            self.a.transmits.push_back(Transmit {
                to,
                payload: d.to_vec(),
            });
        }
        self.pump();
    }

    fn send_from_b(&mut self, packet: &[u8]) {
        let mut out = vec![0u8; MAX_PACKET];
        if let Some((to, d)) = self.b.handle_tun_packet(packet, &mut out) {
            self.b.transmits.push_back(Transmit {
                to,
                payload: d.to_vec(),
            });
        }
        self.pump();
    }
}

#[test]
fn handshake_at_start_then_data_both_ways() {
    let mut p = pair(None);
    p.pump();
    assert_eq!(
        p.b.endpoint(),
        Some(p.a_addr),
        "B learns A's address from the handshake"
    );
    let hello = ipv4(A_TUN, B_TUN, b"hello");
    p.send_from_a(&hello);
    assert_eq!(p.b_tun, [hello]);
    let back = ipv4(B_TUN, A_TUN, b"back");
    p.send_from_b(&back);
    assert_eq!(p.a_tun, [back]);
    assert!(p.a.stats(p.now).handshakes >= 1 && p.b.stats(p.now).handshakes >= 1);
    assert_eq!(p.b.stats(p.now).rx_bytes, 25);
}

#[test]
fn cryptokey_routing_both_ways() {
    let mut p = pair(None);
    p.pump();
    // A (compromised, say) claims another source address: B drops it.
    p.send_from_a(&ipv4([198, 51, 100, 9], B_TUN, b"spoofed"));
    assert!(p.b_tun.is_empty());
    assert_eq!(p.b.stats(p.now).rejected, 1);
    // Packets for anyone but the peer are not sent at all.
    let mut out = vec![0u8; MAX_PACKET];
    assert!(p
        .a
        .handle_tun_packet(&ipv4(A_TUN, [203, 0, 113, 7], b"x"), &mut out)
        .is_none());
}

#[test]
fn a_packet_for_anyone_but_us_is_dropped_and_counted() {
    let mut p = pair(None);
    p.pump();
    // A hostile peer encrypts, with its real key, a packet for a host in B's LAN (it
    // would be forwarded on a host with ip_forward=1) and one for B's own address.
    for (dst, payload) in [
        ([192, 0, 2, 77], &b"into the LAN"[..]),
        (B_TUN, &b"for B"[..]),
    ] {
        let packet = ipv4(A_TUN, dst, payload);
        let mut out = vec![0u8; MAX_PACKET];
        if let TunnResult::WriteToNetwork(d) = p.a.tunn.encapsulate(&packet, &mut out) {
            let d = d.to_vec();
            p.a.transmits.push_back(Transmit {
                to: p.b_addr,
                payload: d,
            });
        }
        p.pump();
    }
    assert_eq!(
        p.b_tun,
        [ipv4(A_TUN, B_TUN, b"for B")],
        "only B's own packet is delivered"
    );
    assert_eq!(p.b.stats(p.now).rejected, 1);
}

#[test]
fn garbage_and_replays_neither_deliver_nor_move_the_endpoint() {
    let mut p = pair(None);
    p.pump();
    p.send_from_a(&ipv4(A_TUN, B_TUN, b"once"));
    assert_eq!(p.b_tun.len(), 1);
    let attacker = addr("203.0.113.66:4444");
    let mut out = vec![0u8; MAX_PACKET];
    let mut junk = vec![0u8; 200];
    let captured = p.seen_by_b.clone();
    for i in 0..50u8 {
        junk.iter_mut()
            .enumerate()
            .for_each(|(k, b)| *b = i.wrapping_mul(31).wrapping_add(k as u8));
        for kind in [1u8, 2, 3, 4] {
            junk[0] = kind;
            assert!(p
                .b
                .handle_datagram(p.now, attacker, &junk, &mut out)
                .is_none());
            assert!(p
                .b
                .handle_datagram(p.now, attacker, &junk[..kind as usize * 10], &mut out)
                .is_none());
        }
    }
    // An empty datagram asks `Tunn` to flush its queue: it must not pass for the peer.
    assert!(p
        .b
        .handle_datagram(p.now, attacker, &[], &mut out)
        .is_none());
    for d in &captured {
        assert!(
            p.b.handle_datagram(p.now, attacker, d, &mut out).is_none(),
            "a replay delivered something"
        );
    }
    assert_eq!(p.b_tun.len(), 1);
    assert_eq!(
        p.b.endpoint(),
        Some(p.a_addr),
        "the endpoint did not follow the attacker"
    );
    assert_eq!(p.b.stats(p.now).roams, 0);
    assert!(p.b.stats(p.now).rejected >= 400);
    // The tunnel still works.
    p.send_from_a(&ipv4(A_TUN, B_TUN, b"still up"));
    assert_eq!(p.b_tun.len(), 2);
}

#[test]
fn the_endpoint_roams_to_the_source_of_authenticated_packets() {
    let mut p = pair(None);
    p.pump();
    p.a_addr = addr("203.0.113.10:40000"); // A's ISP gave it a new address
    p.send_from_a(&ipv4(A_TUN, B_TUN, b"from my new address"));
    assert_eq!(p.b.endpoint(), Some(p.a_addr));
    assert_eq!(p.b.stats(p.now).roams, 1);
    p.send_from_b(&ipv4(B_TUN, A_TUN, b"found you"));
    assert_eq!(p.a_tun.len(), 1);
}

#[test]
fn a_name_is_resolved_at_start_and_every_15s_while_suspect() {
    let mut p = pair(Some(("alice.dyn.example.org".into(), 51820)));
    assert_eq!(
        p.b.poll_resolve(),
        Some(("alice.dyn.example.org".into(), 51820))
    );
    assert_eq!(p.b.poll_resolve(), None);
    p.b.handle_resolved(&["192.0.2.1".parse().unwrap()]);
    assert_eq!(p.b.endpoint(), Some(p.a_addr));
    p.pump();

    // Healthy traffic: never suspect, no resolution.
    let start = p.now;
    let mut resolves = 0;
    for s in 0..60 {
        p.now = start + Duration::from_secs(s);
        p.send_from_a(&ipv4(A_TUN, B_TUN, b"keepalive-ish"));
        p.b.handle_timeout(p.now);
        resolves += usize::from(p.b.poll_resolve().is_some());
        assert!(!p.b.is_suspect(p.now));
    }
    assert_eq!(resolves, 0);

    // Silence: suspect after 2 x keepalive (10 s), then a resolution every 15 s.
    let silent_from = p.now;
    let mut at = Vec::new();
    for ms in (0..=70_000).step_by(250) {
        p.now = silent_from + Duration::from_millis(ms);
        p.b.handle_timeout(p.now);
        if p.b.poll_resolve().is_some() {
            at.push(ms / 1000);
        }
        while p.b.poll_transmit().is_some() {}
    }
    assert!(p.b.is_suspect(p.now));
    assert_eq!(
        at,
        [10, 25, 40, 55, 70],
        "resolutions (s after the last packet)"
    );
}

#[test]
fn a_changed_address_gets_a_handshake_at_once() {
    let mut p = pair(Some(("alice.dyn.example.org".into(), 51820)));
    p.b.handle_resolved(&["192.0.2.1".parse().unwrap()]);
    p.pump();
    while p.b.poll_transmit().is_some() {}
    p.b.handle_resolved(&["192.0.2.1".parse().unwrap(), "203.0.113.5".parse().unwrap()]);
    assert!(
        p.b.poll_transmit().is_none(),
        "the current address is still among the answers"
    );
    p.b.handle_resolved(&["203.0.113.5".parse().unwrap()]);
    let t = p.b.poll_transmit().expect("a handshake initiation");
    assert_eq!(t.to, addr("203.0.113.5:51820"));
    assert_eq!(t.payload[0], HANDSHAKE_INIT);
}

#[test]
fn a_silent_peer_gets_initiations_with_backoff_forever() {
    let mut p = pair(None);
    p.pump();
    let start = p.now;
    let mut inits = Vec::new();
    for ms in (0..=600_000).step_by(250) {
        p.now = start + Duration::from_millis(ms);
        p.a.handle_timeout(p.now);
        while let Some(t) = p.a.poll_transmit() {
            if t.payload[0] == HANDSHAKE_INIT {
                inits.push(ms);
            }
        }
    }
    // Suspect at 10 s; then 2, 4, 8 s, then every 10 s until the end: never silent.
    assert!(
        inits.len() >= 55 && inits.len() <= 65,
        "{} initiations",
        inits.len()
    );
    assert!(*inits.last().unwrap() >= 590_000, "still trying at the end");
    let gaps: Vec<u64> = inits.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g <= 10_000), "gaps {gaps:?}");
    // And when the peer answers again, the link heals and the backoff resets.
    p.pump();
    p.send_from_a(&ipv4(A_TUN, B_TUN, b"back"));
    assert_eq!(
        p.b_tun.last().map(Vec::as_slice),
        Some(ipv4(A_TUN, B_TUN, b"back").as_slice())
    );
}

#[test]
fn a_lost_first_initiation_is_retried_after_one_second() {
    let mut p = pair(None);
    // The peer was not up yet: A's first initiation is lost.
    let first = p.a.poll_transmit().expect("an initiation at start");
    assert_eq!(first.payload[0], HANDSHAKE_INIT);
    let start = p.now;
    let mut retried_at = None;
    for ms in (0..=3_000).step_by(250) {
        p.now = start + Duration::from_millis(ms);
        p.a.handle_timeout(p.now);
        if let Some(t) = p.a.poll_transmit() {
            assert_eq!(t.payload[0], HANDSHAKE_INIT);
            retried_at = Some(ms);
            p.a.transmits.push_front(t); // this one reaches B
            break;
        }
    }
    assert!(
        retried_at.is_some_and(|ms| ms <= 1_250),
        "retried at {retried_at:?} ms"
    );
    p.pump();
    p.send_from_a(&ipv4(A_TUN, B_TUN, b"hello"));
    assert_eq!(p.b_tun.len(), 1);
}

#[test]
fn an_undelivered_initiation_replayed_later_gets_an_answer_but_moves_nothing() {
    let mut p = pair(None);
    p.pump();
    // An initiation of A's that never reached B (lost, or held back by an attacker).
    p.a.initiate(true);
    let held = p.a.poll_transmit().expect("an initiation").payload;
    assert_eq!(held[0], HANDSHAKE_INIT);
    let attacker = addr("203.0.113.66:4444");
    let mut out = vec![0u8; MAX_PACKET];
    let before = p.b.stats(p.now);
    p.now += Duration::from_secs(1);
    assert!(p
        .b
        .handle_datagram(p.now, attacker, &held, &mut out)
        .is_none());
    let reply =
        p.b.poll_transmit()
            .expect("B answers where the initiation came from");
    assert_eq!((reply.to, reply.payload[0]), (attacker, HANDSHAKE_RESPONSE));
    let after = p.b.stats(p.now);
    assert_eq!(
        p.b.endpoint(),
        Some(p.a_addr),
        "the endpoint stays with the confirmed peer"
    );
    assert_eq!(after.roams, 0);
    assert_eq!(
        after.since_authenticated_rx,
        before
            .since_authenticated_rx
            .map(|d| d + Duration::from_secs(1)),
        "not counted as a sign of life"
    );

    // A genuine move: A initiates from a new address and confirms with data.
    p.a_addr = addr("203.0.113.10:40000");
    p.a.initiate(true);
    p.pump();
    p.send_from_a(&ipv4(A_TUN, B_TUN, b"moved"));
    assert_eq!(p.b.endpoint(), Some(p.a_addr));
    assert_eq!(p.b.stats(p.now).roams, 1);
}

#[test]
fn reresolve_now_asks_for_the_name_even_when_the_link_is_healthy() {
    let mut p = pair(Some(("alice.dyn.example.org".into(), 51820)));
    assert!(
        p.b.poll_resolve().is_some(),
        "the name is resolved at start"
    );
    p.b.handle_resolved(&["192.0.2.1".parse().unwrap()]);
    p.pump();
    p.send_from_a(&ipv4(A_TUN, B_TUN, b"alive"));
    assert!(!p.b.is_suspect(p.now));
    assert_eq!(p.b.poll_resolve(), None, "healthy: nothing due");

    assert!(p.b.reresolve_now(p.now));
    assert_eq!(
        p.b.poll_resolve(),
        Some(("alice.dyn.example.org".into(), 51820))
    );
    assert_eq!(p.b.poll_resolve(), None, "asked once, resolved once");
    // The answer names a new address: a handshake goes there at once.
    p.b.handle_resolved(&["203.0.113.7".parse().unwrap()]);
    let t = p.b.poll_transmit().expect("a handshake initiation");
    assert_eq!(
        (t.to, t.payload[0]),
        (addr("203.0.113.7:51820"), HANDSHAKE_INIT)
    );

    // A fixed address, or no endpoint at all, has nothing to resolve.
    assert!(!p.a.reresolve_now(p.now));
    assert_eq!(p.a.poll_resolve(), None);
    let mut q = pair(None);
    assert!(!q.b.reresolve_now(q.now));
}

#[test]
fn handshake_now_initiates_at_once_and_restarts_the_backoff() {
    let mut p = pair(None);
    p.pump();
    // Silence long enough for the backoff to reach its longest step.
    let start = p.now;
    for ms in (0..=60_000).step_by(250) {
        p.now = start + Duration::from_millis(ms);
        p.a.handle_timeout(p.now);
        while p.a.poll_transmit().is_some() {}
    }
    assert_eq!(p.a.reinit_backoff, REINIT_MAX);

    assert!(p.a.handshake_now(p.now));
    let t = p.a.poll_transmit().expect("an initiation at once");
    assert_eq!((t.to, t.payload[0]), (p.b_addr, HANDSHAKE_INIT));
    assert!(p.a.poll_transmit().is_none(), "one initiation per command");
    // The next retry comes after the shortest step again, not after ten seconds.
    let asked = p.now;
    let mut next = None;
    for ms in (250..=REINIT_MAX.as_millis() as u64).step_by(250) {
        p.now = asked + Duration::from_millis(ms);
        p.a.handle_timeout(p.now);
        if let Some(retry) =
            p.a.poll_transmit()
                .filter(|t| t.payload[0] == HANDSHAKE_INIT)
        {
            next = Some((ms, retry));
            break;
        }
    }
    drop(t);
    let (ms, retry) = next.expect("a retry within the longest step");
    assert!(
        ms <= REINIT_FIRST.as_millis() as u64 + 250,
        "retried after {ms} ms"
    );
    // Delivered, it completes a handshake: data flows again.
    p.a.transmits.push_front(retry);
    p.pump();
    p.send_from_a(&ipv4(A_TUN, B_TUN, b"healed"));
    assert_eq!(
        p.b_tun.last().map(Vec::as_slice),
        Some(ipv4(A_TUN, B_TUN, b"healed").as_slice())
    );

    // No endpoint known yet: nothing to send.
    let mut q = pair(None);
    while q.b.poll_transmit().is_some() {}
    assert!(!q.b.handshake_now(q.now));
    assert!(q.b.poll_transmit().is_none());
}
