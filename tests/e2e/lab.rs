//! The lab harness itself, and the agents running inside lab hosts.

use orch_tests::fixture::Pair;
use orch_tests::lab::{assert_lab_address, namespace_exists, Lab};
use orch_tests::{eventually, orch, prerequisites};
use std::time::Duration;

#[test]
fn lab_hosts_reach_each_other_through_the_switch() {
    if !prerequisites(
        "lab_hosts_reach_each_other_through_the_switch",
        true,
        &["ip", "ping"],
    ) {
        return;
    }
    let mut lab = Lab::new("smoke");
    let alice = lab.host("alice", &["192.0.2.1/24", "2001:db8::1/64"]);
    let bob = lab.host("bob", &["192.0.2.2/24", "2001:db8::2/64"]);
    for (from, to) in [
        (&alice, "192.0.2.2"),
        (&bob, "192.0.2.1"),
        (&alice, "2001:db8::2"),
        (&bob, "2001:db8::1"),
    ] {
        eventually(
            &format!("{} pings {to}", from.name),
            Duration::from_secs(10),
            || lab.ping(from, to),
        );
    }
    // A host outside the lab's ranges is unreachable: the namespaces have no other route.
    assert!(lab.ping(&alice, "203.0.113.9").is_err());
}

#[test]
fn the_lab_is_removed_even_when_a_test_panics() {
    if !prerequisites(
        "the_lab_is_removed_even_when_a_test_panics",
        true,
        &["ip", "sleep"],
    ) {
        return;
    }
    let seen = std::sync::Mutex::new((Vec::new(), 0u32));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new("panics");
        let host = lab.host("h", &["203.0.113.1/24"]);
        let mut sleep = std::process::Command::new("sleep");
        sleep.arg("600");
        let i = lab.spawn(&host, "sleep", sleep);
        let pid = lab.proc(i).pid();
        *seen.lock().unwrap() = (lab.namespaces(), pid);
        panic!("a failing test");
    }));
    assert!(result.is_err());
    let (namespaces, pid) = seen.into_inner().unwrap();
    assert_eq!(namespaces.len(), 2);
    for ns in namespaces {
        assert!(!namespace_exists(&ns), "{ns} left behind");
    }
    assert!(
        pid != 0 && !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} left running"
    );
}

#[test]
fn the_lab_refuses_addresses_outside_the_documentation_ranges() {
    for ok in [
        "127.0.0.1",
        "192.0.2.7/24",
        "198.51.100.1",
        "203.0.113.254/24",
        "2001:db8::5/64",
    ] {
        assert_lab_address(ok);
    }
    // Built at run time so that no such literal sits in the test tree.
    for bad in [
        format!("{}.1.2.3/8", 10),
        format!("{}.{}.0.1/16", 192, 168),
        "8.8.8.8".to_string(),
        "2001:4860::1".to_string(),
    ] {
        assert!(
            std::panic::catch_unwind(|| assert_lab_address(&bad)).is_err(),
            "{bad} accepted"
        );
    }
}

#[test]
fn two_agents_ping_each_other_through_the_tunnel() {
    if !prerequisites(
        "two_agents_ping_each_other_through_the_tunnel",
        true,
        &["ip", "ping"],
    ) {
        return;
    }
    let mut lab = Lab::new("two-agents");
    let pair = Pair::new(lab.dir(), "");
    let hosts = [
        lab.host("alice", &["192.0.2.1/24"]),
        lab.host("bob", &["192.0.2.2/24"]),
    ];
    orch::bin(); // may build it: not part of the agents' 10 s
    let started = std::time::Instant::now();
    let agents = pair.spawn_agents(&mut lab, &hosts);
    for (from, to) in [(&hosts[0], "198.51.100.2"), (&hosts[1], "198.51.100.1")] {
        let left = Duration::from_secs(10).saturating_sub(started.elapsed());
        eventually(
            &format!("{} pings {to} through the tunnel", from.name),
            left,
            || lab.ping(from, to),
        );
    }
    eprintln!(
        "both pings answered {:?} after the agents started",
        started.elapsed()
    );
    for (node, peer, peer_underlay) in [
        ("alice", "bob", "192.0.2.2:51820"),
        ("bob", "alice", "192.0.2.1:51820"),
    ] {
        let config = pair.config(node);
        let status: serde_json::Value = eventually(
            &format!("{node}'s agent reports the tunnel up"),
            Duration::from_secs(5),
            || {
                let s = orch::status_json(&config)?;
                // Stats are published twice a second: wait for a snapshot after the pings.
                let counted = s["tunnel"]["rx_bytes"].as_u64().unwrap_or(0) > 0;
                if s["tunnel"]["up"] == true && counted {
                    Ok(s)
                } else {
                    Err(s["tunnel"].to_string())
                }
            },
        );
        assert_eq!(status["node"], node);
        assert_eq!(status["tunnel"]["endpoint"], peer_underlay);
        // Peer RPC over the tunnel: the peer's heartbeat, and our address as it sees us.
        let status: serde_json::Value = eventually(
            &format!("{node} hears {peer}'s heartbeat"),
            Duration::from_secs(15),
            || {
                let s = orch::status_json(&config)?;
                if s["peer"]["reachable"] == true {
                    Ok(s)
                } else {
                    Err(s["peer"].to_string())
                }
            },
        );
        let own_underlay = if node == "alice" {
            "192.0.2.1:51820"
        } else {
            "192.0.2.2:51820"
        };
        assert_eq!(status["peer"]["our_public_endpoint"], own_underlay);
        let peer_sites: Vec<(String, i64)> = status["peer"]["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["epoch"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            peer_sites,
            [("alice-web".to_string(), 1), ("bob-cloud".to_string(), 1)]
        );
        assert!(status["sites"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["peer"] == peer));
    }
    // Peer RPC answers only the peer's tunnel address: alice's own address gets a
    // connection closed without a word (the peer would first receive a hello).
    let probe = "exec 3<>/dev/tcp/198.51.100.1/7440 && timeout 3 cat <&3 | wc -c";
    let out = lab.run(&hosts[0], &["bash", "-c", probe]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in agents {
        let status = lab
            .proc(i)
            .signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "{status:?}\n{}",
            lab.log("agent-alice")
        );
    }
}
