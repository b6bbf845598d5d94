//! `orch agent`, `orch status`, `orch history`: the daemon and its control socket.

use orch_tests::fixture::Pair;
use orch_tests::process::Proc;
use orch_tests::{eventually, orch};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn start_agent(config: &Path, log: &Path) -> Proc {
    Proc::spawn(
        "agent",
        &mut orch::command(&["--config", config.to_str().unwrap(), "agent"]),
        log,
    )
}

fn status_json(config: &Path) -> Result<serde_json::Value, String> {
    let out = orch::run(&["--config", config.to_str().unwrap(), "status", "--json"]);
    let (stdout, stderr) = orch::text(&out);
    if orch::code(&out) != 0 {
        return Err(stderr);
    }
    serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
}

#[test]
fn agent_serves_status_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let config = pair.config("alice");
    let log = tmp.path().join("agent.log");
    let mut agent = start_agent(&config, &log);

    let status = eventually("the agent answers", Duration::from_secs(20), || {
        status_json(&config)
    });
    assert_eq!(status["schema"], 1);
    assert_eq!(status["node"], "alice", "the node is found by its key");
    assert_eq!(status["cluster"], "lab");
    assert_eq!(status["agent"]["pid"], agent.pid());
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

    // A second agent on the same state directory refuses to start.
    let out = orch::run(&["--config", config.to_str().unwrap(), "agent"]);
    assert_eq!(orch::code(&out), 1);
    assert!(
        orch::text(&out).1.contains("already running"),
        "{}",
        orch::text(&out).1
    );

    let asked = Instant::now();
    let exit = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "still running 5 s after SIGTERM:\n{}",
            std::fs::read_to_string(&log).unwrap()
        )
    });
    assert!(exit.success(), "exit {exit:?}");
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(!socket.exists(), "the socket is removed on exit");

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
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let config = pair.config("bob");
    let mut agent = start_agent(&config, &tmp.path().join("agent.log"));
    eventually("the agent answers", Duration::from_secs(20), || {
        status_json(&config)
    });
    let exit = agent
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
