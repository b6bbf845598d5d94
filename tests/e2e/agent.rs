//! `orch agent`, `orch status`, `orch history`: the daemon and its control socket. The
//! agent owns a TUN device and a UDP port, so each test runs it in its own lab host.

use orch_tests::fixture::Pair;
use orch_tests::lab::{Host, Lab};
use orch_tests::{eventually, orch, prerequisites};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A lab with host `node` (192.0.2.1 alice, 192.0.2.2 bob) and a config pair in it.
fn lab_for(test: &str, node: &str) -> (Lab, Pair, Host) {
    let mut lab = Lab::new(test);
    let pair = Pair::new(lab.dir(), "");
    let addr = if node == "alice" {
        "192.0.2.1/24"
    } else {
        "192.0.2.2/24"
    };
    let host = lab.host(node, &[addr]);
    (lab, pair, host)
}

fn start_agent(lab: &mut Lab, host: &Host, config: &Path) -> usize {
    let mut cmd = std::process::Command::new(orch::bin());
    cmd.arg("--config").arg(config).arg("agent");
    lab.spawn(host, "agent", cmd)
}

#[test]
fn agent_serves_status_and_stops_cleanly_on_sigterm() {
    if !prerequisites(
        "agent_serves_status_and_stops_cleanly_on_sigterm",
        true,
        &["ip"],
    ) {
        return;
    }
    let (mut lab, pair, host) = lab_for("agent-status", "alice");
    let config = pair.config("alice");
    let agent = start_agent(&mut lab, &host, &config);

    let status = eventually("the agent answers", Duration::from_secs(20), || {
        orch::status_json(&config)
    });
    assert_eq!(status["schema"], 1);
    assert_eq!(status["node"], "alice", "the node is found by its key");
    assert_eq!(status["cluster"], "lab");
    assert_eq!(status["agent"]["pid"], lab.proc(agent).pid());
    assert_eq!(status["tunnel"]["interface"], "orch0");
    assert_eq!(status["tunnel"]["address"], "198.51.100.1");
    assert_eq!(status["tunnel"]["peer"], "bob");
    assert_eq!(status["tunnel"]["up"], false, "bob is not running");
    let sites: Vec<(String, String, i64)> = status["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["role"].as_str().unwrap().into(),
                s["epoch"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sites,
        [
            ("alice-web".into(), "master".into(), 1),
            ("bob-cloud".into(), "standby".into(), 1)
        ]
    );

    let socket = pair.alice.join("state/orch.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(pair.alice.join("state"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    let out = orch::run(&["--config", config.to_str().unwrap(), "status"]);
    let (human, _) = orch::text(&out);
    assert!(
        human.contains("node alice (cluster lab)") && human.contains("bob-cloud  standby  bob"),
        "{human}"
    );
    assert!(
        human.contains("tunnel orch0 198.51.100.1 → bob 198.51.100.2"),
        "{human}"
    );

    // A second agent on the same state directory refuses to start.
    let second = lab.run(
        &host,
        &[
            orch::bin().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "agent",
        ],
    );
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    let asked = Instant::now();
    let exit = lab
        .proc(agent)
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
    let exit =
        exit.unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", lab.log("agent")));
    assert!(exit.success(), "exit {exit:?}\n{}", lab.log("agent"));
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(!socket.exists(), "the socket is removed on exit");
    let links = lab.run(&host, &["ip", "link", "show", "orch0"]);
    assert!(!links.status.success(), "the TUN device is removed on exit");

    let out = orch::run(&["--config", config.to_str().unwrap(), "status"]);
    assert_eq!(orch::code(&out), 3);
    assert!(orch::text(&out)
        .1
        .contains("the agent of node alice is not running"));

    let out = orch::run(&["--config", config.to_str().unwrap(), "history"]);
    let (history, err) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{err}");
    let summaries: Vec<&str> = history.lines().collect();
    assert_eq!(summaries.len(), 2, "{history}");
    assert!(
        summaries[0].contains("agent started") && summaries[1].contains("agent stopped"),
        "{history}"
    );
}

#[test]
fn sigint_stops_the_agent_too() {
    if !prerequisites("sigint_stops_the_agent_too", true, &["ip"]) {
        return;
    }
    let (mut lab, pair, host) = lab_for("agent-sigint", "bob");
    let config = pair.config("bob");
    let agent = start_agent(&mut lab, &host, &config);
    eventually("the agent answers", Duration::from_secs(20), || {
        orch::status_json(&config)
    });
    let exit = lab
        .proc(agent)
        .signal_and_wait(libc::SIGINT, Duration::from_secs(5))
        .expect("stopped within 5 s");
    assert!(exit.success(), "exit {exit:?}");
}

#[test]
fn status_without_an_agent_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let out = orch::run(&[
        "--config",
        pair.config("bob").to_str().unwrap(),
        "status",
        "--json",
    ]);
    assert_eq!(orch::code(&out), 3);
    let (stdout, stderr) = orch::text(&out);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("not running") && stderr.contains("orch agent"),
        "{stderr}"
    );
}

#[test]
fn history_of_a_node_that_never_ran_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let out = orch::run(&["--config", pair.config("bob").to_str().unwrap(), "history"]);
    assert_eq!(orch::code(&out), 1);
    assert!(
        orch::text(&out)
            .1
            .contains("has `orch agent` run on this node"),
        "{}",
        orch::text(&out).1
    );
    let out = orch::run(&[
        "--config",
        pair.config("bob").to_str().unwrap(),
        "history",
        "no-such-site",
    ]);
    assert_eq!(orch::code(&out), 2);
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): `READY=1` once the control socket and
/// the tunnel are up (status answers at once), `WATCHDOG=1` every half of
/// `WATCHDOG_USEC` while healthy, `STOPPING=1` on SIGTERM. The test is systemd's end of
/// `$NOTIFY_SOCKET`.
#[test]
fn agent_notifies_systemd_ready_watchdog_and_stopping() {
    let test = "agent_notifies_systemd_ready_watchdog_and_stopping";
    if !prerequisites(test, true, &["ip"]) {
        return;
    }
    let (mut lab, pair, host) = lab_for("agent-notify", "alice");
    let config = pair.config("alice");
    let path = lab.dir().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = std::process::Command::new(orch::bin());
    cmd.arg("--config")
        .arg(&config)
        .arg("agent")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "2000000");
    let started = Instant::now();
    let agent = lab.spawn(&host, "agent", cmd);
    let mut buf = [0u8; 256];
    let mut next = |what: &str| -> String {
        let n = systemd
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {what} from the agent: {e}\n{}", lab_log(&path)));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next("READY=1"), "READY=1");
    // Ready means serving: no waiting here.
    let status = orch::status_json(&config).expect("the agent answers once it said ready");
    assert_eq!(status["node"], "alice");
    eprintln!("ready {:?} after start", started.elapsed());
    // Every second (half of 2 s) while healthy.
    let first = Instant::now();
    for i in 0..3 {
        assert_eq!(next(&format!("watchdog ping {i}")), "WATCHDOG=1");
    }
    let took = first.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "three pings 1 s apart took {took:?}"
    );
    lab.proc(agent)
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .expect("the agent stops on SIGTERM");
    let mut rest = Vec::new();
    systemd.set_nonblocking(true).unwrap();
    while let Ok(n) = systemd.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
}

fn lab_log(socket: &Path) -> String {
    std::fs::read_to_string(socket.with_file_name("agent.log")).unwrap_or_default()
}
