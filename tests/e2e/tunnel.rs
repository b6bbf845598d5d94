//! The tunnel against independent implementations and hostile networks.

use orch_tests::fixture::Pair;
use orch_tests::lab::{Host, Lab};
use orch_tests::wg::{self, WgEnd};
use orch_tests::{eventually, orch, prerequisites};
use std::time::Duration;

#[test]
fn orch_and_wireguard_go_carry_traffic_both_ways() {
    if !prerequisites(
        "orch_and_wireguard_go_carry_traffic_both_ways",
        true,
        &["ip", "ping", "wg", "wireguard-go"],
    ) {
        return;
    }
    let mut lab = Lab::new("wg-interop");
    let pair = Pair::new(lab.dir(), "");
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    // The responder first, as a real deployment would have it running already.
    let (key, peer) = (
        pair.bob_key.to_base64(),
        pair.alice_key.public_key().to_string(),
    );
    let end = WgEnd {
        private_key: &key,
        peer: &peer,
        endpoint: "192.0.2.1:51820",
        peer_ip: "198.51.100.1",
        address: "198.51.100.2/24",
        keepalive: 5,
    };
    let (wg, _) = wg::start(&mut lab, &bob, &end);
    let mut cmd = std::process::Command::new(orch::bin());
    cmd.arg("--config").arg(pair.config("alice")).arg("agent");
    lab.spawn(&alice, "agent-alice", cmd); // bob is wireguard-go

    eventually("orch pings wireguard-go", Duration::from_secs(15), || {
        lab.ping(&alice, "198.51.100.2")
    });
    eventually("wireguard-go pings orch", Duration::from_secs(5), || {
        lab.ping(&bob, "198.51.100.1")
    });
    let out = lab.run(&bob, &["wg", "show", &wg, "latest-handshakes"]);
    let handshake: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(handshake > 0, "wireguard-go records a handshake with orch");
    let status = eventually("orch reports the tunnel up", Duration::from_secs(5), || {
        let s = orch::status_json(&pair.config("alice"))?;
        if s["tunnel"]["up"] == true {
            Ok(s)
        } else {
            Err(s["tunnel"].to_string())
        }
    });
    assert_eq!(
        status["tunnel"]["endpoint"],
        "192.0.2.2:51820",
        "{}",
        lab.log("agent-alice")
    );
}

/// Starts both agents of `pair` in `hosts` (alice, bob); returns when they ping each other.
fn start_agents(lab: &mut Lab, pair: &Pair, hosts: &[Host; 2]) -> [usize; 2] {
    let agents = pair.spawn_agents(lab, hosts);
    eventually("the tunnel comes up", Duration::from_secs(10), || {
        lab.ping(&hosts[0], "198.51.100.2")
    });
    agents
}

fn tunnel_status(pair: &Pair, node: &str) -> Result<serde_json::Value, String> {
    orch::status_json(&pair.config(node)).map(|s| s["tunnel"].clone())
}

#[test]
fn one_side_changing_address_heals_without_restart() {
    if !prerequisites(
        "one_side_changing_address_heals_without_restart",
        true,
        &["ip", "ping"],
    ) {
        return;
    }
    let mut lab = Lab::new("roam-one");
    let pair = Pair::new(lab.dir(), "");
    let hosts = [
        lab.host("alice", &["192.0.2.1/24"]),
        lab.host("bob", &["192.0.2.2/24"]),
    ];
    start_agents(&mut lab, &pair, &hosts);

    // Alice's ISP hands out a new address; nobody restarts anything.
    // (Old address first: deleting a primary address also deletes its secondaries.)
    lab.must(
        &hosts[0],
        &["ip", "addr", "del", "192.0.2.1/24", "dev", "eth0"],
    );
    lab.must(
        &hosts[0],
        &["ip", "addr", "add", "192.0.2.11/24", "dev", "eth0"],
    );
    let changed = std::time::Instant::now();
    // 3 x keepalive (5 s in the fixture).
    eventually("bob reaches alice again", Duration::from_secs(15), || {
        lab.ping(&hosts[1], "198.51.100.1")
    });
    eprintln!("healed {:?} after the address change", changed.elapsed());
    let t = eventually(
        "bob's status shows the roam",
        Duration::from_secs(5),
        || {
            let t = tunnel_status(&pair, "bob")?;
            if t["endpoint"] == "192.0.2.11:51820" {
                Ok(t)
            } else {
                Err(t.to_string())
            }
        },
    );
    assert!(t["roams"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(t["up"], true);
}

#[test]
fn a_peer_gone_for_more_than_three_minutes_is_back_promptly() {
    if !prerequisites(
        "a_peer_gone_for_more_than_three_minutes_is_back_promptly",
        true,
        &["ip", "ping"],
    ) {
        return;
    }
    let mut lab = Lab::new("expiry");
    let pair = Pair::new(lab.dir(), "");
    let hosts = [
        lab.host("alice", &["192.0.2.1/24"]),
        lab.host("bob", &["192.0.2.2/24"]),
    ];
    start_agents(&mut lab, &pair, &hosts);

    // Bob's line goes dead for longer than WireGuard's 90 s of handshake attempts and
    // its 180 s session lifetime: boringtun's `Tunn` expires on both sides.
    lab.must(&hosts[1], &["ip", "link", "set", "eth0", "down"]);
    let down = std::time::Instant::now();
    eventually(
        "alice sees the tunnel down",
        Duration::from_secs(20),
        || {
            let t = tunnel_status(&pair, "alice")?;
            if t["suspect"] == true {
                Ok(())
            } else {
                Err(t.to_string())
            }
        },
    );
    std::thread::sleep(Duration::from_secs(190).saturating_sub(down.elapsed())); // the outage itself
    lab.must(&hosts[1], &["ip", "link", "set", "eth0", "up"]);
    let back = std::time::Instant::now();
    // 2 x keepalive (5 s) + 15 s.
    eventually("the tunnel is back", Duration::from_secs(25), || {
        lab.ping(&hosts[0], "198.51.100.2")
    });
    eventually(
        "both ways",
        Duration::from_secs(25).saturating_sub(back.elapsed()),
        || lab.ping(&hosts[1], "198.51.100.1"),
    );
    eprintln!("back {:?} after the peer returned", back.elapsed());
}

#[test]
fn hostile_datagrams_change_nothing() {
    if !prerequisites(
        "hostile_datagrams_change_nothing",
        true,
        &["ip", "ping", "/usr/bin/python3"],
    ) {
        return;
    }
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/wgfuzz.py");
    let mut lab = Lab::new("hostile");
    let pair = Pair::new(lab.dir(), "");
    let hosts = [
        lab.host("alice", &["192.0.2.1/24"]),
        lab.host("bob", &["192.0.2.2/24"]),
    ];
    let mallory = lab.host("mallory", &["192.0.2.66/24"]);

    // Record what alice sends bob (handshakes, keepalives, data) to replay it later.
    let capture = lab.dir().join("capture.hex");
    let mut sniff = std::process::Command::new("/usr/bin/python3");
    sniff
        .arg(&tool)
        .args(["sniff", "eth0", "51820"])
        .arg(&capture)
        .arg("4");
    let sniffer = lab.spawn(&hosts[1], "sniffer", sniff);
    std::thread::sleep(Duration::from_millis(300)); // let the sniffer bind before traffic starts
    start_agents(&mut lab, &pair, &hosts);
    for _ in 0..5 {
        lab.ping(&hosts[0], "198.51.100.2").unwrap();
    }
    eventually("the capture is written", Duration::from_secs(10), || {
        lab.proc(sniffer)
            .try_wait()
            .map(|_| ())
            .ok_or_else(|| "sniffing".to_string())
    });
    let captured = std::fs::read_to_string(&capture).unwrap();
    let kinds: Vec<&str> = captured.lines().map(|l| &l[..2]).collect();
    assert!(
        kinds.contains(&"01") && kinds.contains(&"04"),
        "captured a handshake and data: {kinds:?}"
    );

    let log_before = lab.log("agent-bob").lines().count();
    let before = tunnel_status(&pair, "bob").unwrap();
    let out = lab.run(
        &mallory,
        &[
            "/usr/bin/python3",
            tool.to_str().unwrap(),
            "attack",
            "192.0.2.2",
            "51820",
            capture.to_str().unwrap(),
            "7",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();

    // Still up, both ways; the endpoint did not follow the attacker; nothing crashed.
    lab.ping(&hosts[0], "198.51.100.2").unwrap();
    lab.ping(&hosts[1], "198.51.100.1").unwrap();
    let after = eventually(
        "bob counts the rejected datagrams",
        Duration::from_secs(5),
        || {
            let t = tunnel_status(&pair, "bob")?;
            let rejected =
                t["rejected"].as_u64().unwrap_or(0) - before["rejected"].as_u64().unwrap_or(0);
            if rejected * 2 >= sent {
                Ok(t)
            } else {
                Err(format!("{rejected} of {sent} rejected: {t}"))
            }
        },
    );
    assert_eq!(after["endpoint"], "192.0.2.1:51820");
    assert_eq!(after["up"], true);
    assert_eq!(after["roams"], before["roams"], "{}", lab.log("agent-bob"));
    let log = lab.log("agent-bob");
    let new_lines = log.lines().count() - log_before;
    assert!(
        new_lines <= 5,
        "{new_lines} log lines for {sent} hostile datagrams:\n{log}"
    );
}

#[test]
fn a_hundred_megabytes_cross_the_tunnel_intact() {
    if !prerequisites(
        "a_hundred_megabytes_cross_the_tunnel_intact",
        true,
        &["ip", "ping", "/usr/bin/python3"],
    ) {
        return;
    }
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/tcpcheck.py");
    let mut lab = Lab::new("bulk");
    let pair = Pair::new(lab.dir(), "");
    let hosts = [
        lab.host("alice", &["192.0.2.1/24"]),
        lab.host("bob", &["192.0.2.2/24"]),
    ];
    start_agents(&mut lab, &pair, &hosts);

    let mut serve = std::process::Command::new("/usr/bin/python3");
    serve
        .arg(&tool)
        .args(["serve", "198.51.100.2", "9000", "120"]);
    let server = lab.spawn(&hosts[1], "tcp-server", serve);
    eventually("the receiver listens", Duration::from_secs(10), || {
        if lab.log("tcp-server").contains("listening") {
            Ok(())
        } else {
            Err(lab.log("tcp-server"))
        }
    });
    let started = std::time::Instant::now();
    let out = lab.run(
        &hosts[0],
        &[
            "/usr/bin/python3",
            tool.to_str().unwrap(),
            "send",
            "198.51.100.2",
            "9000",
            "100",
            "42",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elapsed = started.elapsed();
    let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eventually("the receiver finishes", Duration::from_secs(30), || {
        lab.proc(server)
            .try_wait()
            .map(|_| ())
            .ok_or_else(|| "reading".to_string())
    });
    let received = lab
        .log("tcp-server")
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert_eq!(received, sent, "bytes and SHA-256 at both ends");
    assert!(sent.starts_with("104857600 "), "{sent}");
    eprintln!(
        "100 MiB in {elapsed:?} ({:.0} Mbit/s, debug build)",
        838.86 / elapsed.as_secs_f64()
    );
}

#[test]
fn both_sides_changing_address_heal_through_dns() {
    if !prerequisites(
        "both_sides_changing_address_heal_through_dns",
        true,
        &["ip", "ping", "named", "nsupdate", "dig", "tsig-keygen"],
    ) {
        return;
    }
    let mut lab = Lab::new("roam-both");
    let dns = lab.host("dns", &["192.0.2.53/24"]);
    let bind = orch_tests::bind::Bind::start(
        &mut lab,
        &dns,
        "example.org",
        &[("alice", "192.0.2.1"), ("bob", "192.0.2.2")],
    );
    let pair = Pair::new(lab.dir(), "");
    for node in ["alice", "bob"] {
        let config = pair.config(node);
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(
                "endpoint = \"192.0.2.1:51820\"",
                "endpoint = \"alice.example.org:51820\"",
            )
            .replace(
                "endpoint = \"192.0.2.2:51820\"",
                "endpoint = \"bob.example.org:51820\"",
            );
        std::fs::write(&config, text).unwrap();
    }
    let hosts = [
        lab.host("alice", &["192.0.2.1/24"]),
        lab.host("bob", &["192.0.2.2/24"]),
    ];
    hosts.iter().for_each(|h| bind.serve(h));
    start_agents(&mut lab, &pair, &hosts);

    // Both ISPs renumber at once; each node's dynamic DNS name follows (here by nsupdate,
    // as the node's own ddns will do). Neither side can reach the other's old address.
    for (host, name, old, new) in [
        (&hosts[0], "alice", "192.0.2.1/24", "192.0.2.21/24"),
        (&hosts[1], "bob", "192.0.2.2/24", "192.0.2.22/24"),
    ] {
        lab.must(host, &["ip", "addr", "del", old, "dev", "eth0"]);
        lab.must(host, &["ip", "addr", "add", new, "dev", "eth0"]);
        bind.set_a(name, new.split('/').next().unwrap());
    }
    let changed = std::time::Instant::now();
    eventually(
        "the pair heals by re-resolving",
        Duration::from_secs(60),
        || lab.ping(&hosts[0], "198.51.100.2"),
    );
    eventually(
        "both ways",
        Duration::from_secs(60).saturating_sub(changed.elapsed()),
        || lab.ping(&hosts[1], "198.51.100.1"),
    );
    eprintln!(
        "healed {:?} after both addresses changed",
        changed.elapsed()
    );
    let t = eventually(
        "alice sees bob's new address",
        Duration::from_secs(5),
        || {
            let t = tunnel_status(&pair, "alice")?;
            if t["endpoint"] == "192.0.2.22:51820" {
                Ok(t)
            } else {
                Err(t.to_string())
            }
        },
    );
    assert_eq!(t["up"], true);
}

#[test]
fn the_tunnel_runs_over_ipv6() {
    if !prerequisites("the_tunnel_runs_over_ipv6", true, &["ip", "ping"]) {
        return;
    }
    let mut lab = Lab::new("ipv6");
    let pair = Pair::new(lab.dir(), "");
    for node in ["alice", "bob"] {
        let config = pair.config(node);
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("\"192.0.2.1:51820\"", "\"[2001:db8::1]:51820\"")
            .replace("\"192.0.2.2:51820\"", "\"[2001:db8::2]:51820\"");
        std::fs::write(&config, text).unwrap();
    }
    let hosts = [
        lab.host("alice", &["2001:db8::1/64"]),
        lab.host("bob", &["2001:db8::2/64"]),
    ];
    start_agents(&mut lab, &pair, &hosts);
    eventually("bob pings alice", Duration::from_secs(10), || {
        lab.ping(&hosts[1], "198.51.100.1")
    });
    let t = tunnel_status(&pair, "alice").unwrap();
    assert_eq!(t["endpoint"], "[2001:db8::2]:51820");
}
