//! `orch init`, `orch pubkey`, `orch config check`, `orch completions`.

use orch_tests::fixture::{write_secret, Pair};
use orch_tests::{orch, prerequisites};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn check(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["config", "check"]);
    let out = orch::run(&args);
    let (stdout, stderr) = orch::text(&out);
    (orch::code(&out), stdout, stderr)
}

#[test]
fn the_design_example_passes_with_its_key_and_secret_files() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc/orch");
    std::fs::create_dir_all(&etc).unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/orch.example.toml"),
    )
    .unwrap();
    let config = etc.join("orch.toml");
    std::fs::write(
        &config,
        example.replace("/etc/orch/", &format!("{}/", etc.display())),
    )
    .unwrap();
    for secret in ["smtp.pass", "tsig.secret", "db.pass", "ntfy.token"] {
        write_secret(&etc.join(secret), "s3cret");
    }

    // `orch init` beside an existing config writes only the key.
    let before = std::fs::read_to_string(&config).unwrap();
    let out = orch::run(&[
        "--config",
        config.to_str().unwrap(),
        "init",
        "--node",
        "alice",
    ]);
    let (public, err) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        before,
        "init must not touch an existing config"
    );
    let public = public.trim();
    let start = before.find("[nodes.alice]\npublic_key = \"").unwrap()
        + "[nodes.alice]\npublic_key = \"".len();
    let end = start + before[start..].find('"').unwrap();
    std::fs::write(
        &config,
        format!("{}{public}{}", &before[..start], &before[end..]),
    )
    .unwrap();

    let (code, stdout, stderr) = check(&config, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(": ok: cluster home, this node is alice (peer bob)"),
        "{stdout}"
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let config = pair.config("alice");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "keepalive = \"5s\"\n",
        "keepalive = \"5s\"\ncolour = \"blue\"\n",
    );
    std::fs::write(&config, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("colour")).unwrap() + 1;

    let (code, _, stderr) = check(&config, &[]);
    assert_eq!(code, 2, "{stderr}");
    let want = format!("{}:{line}:1: unknown field `colour`", config.display());
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
}

#[test]
fn five_semantic_problems_are_all_reported_in_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let config = pair.config("alice");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("keepalive = \"5s\"", "keepalive = \"soon\"")
        .replace(
            "tunnel_ip = \"198.51.100.2\"",
            "tunnel_ip = \"203.0.113.2\"",
        )
        .replacen("standby = \"bob\"", "standby = \"carol\"", 1)
        .replace("report = \"30 4 * * *\"", "report = \"61 4 * * *\"")
        .replace(&pair.bob_key.public_key().to_string(), "not-a-key");
    std::fs::write(&config, &text).unwrap();

    let (code, _, stderr) = check(&config, &[]);
    assert_eq!(code, 2, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        ("cluster.keepalive", "`soon` is not a duration"),
        (
            "nodes.bob.public_key",
            "`not-a-key` is not a WireGuard public key",
        ),
        (
            "nodes.bob.tunnel_ip",
            "203.0.113.2 is outside cluster.network 198.51.100.0/24",
        ),
        ("sites.alice-web.standby", "no node `carol`"),
        (
            "sites.alice-web.report",
            "`61 4 * * *` is not a cron schedule",
        ),
    ];
    for (key, message) in expected {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("no problem reported for {key}:\n{stderr}"));
        let prefix = format!("{}:", config.display());
        let location: Vec<&str> = line.strip_prefix(&prefix).unwrap().splitn(3, ':').collect();
        let row: usize = location[0].parse().unwrap();
        assert!(location[1].parse::<usize>().is_ok(), "no column in {line}");
        // The reported line holds the offending key.
        assert!(
            text.lines()
                .nth(row - 1)
                .unwrap()
                .starts_with(key.rsplit('.').next().unwrap()),
            "{line} does not point at the `{key}` line"
        );
        assert!(line.contains(message), "{line} lacks {message:?}");
    }
    assert!(stderr.contains("5 problems found"), "{stderr}");
}

#[test]
fn init_writes_a_key_that_wg_agrees_with_and_never_replaces_it() {
    if !prerequisites("init_writes_a_key_that_wg_agrees_with", false, &["wg"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("orch/orch.toml");
    let c = config.to_str().unwrap();
    let out = orch::run(&[
        "--config",
        c,
        "init",
        "--node",
        "alice",
        "--tunnel-ip",
        "198.51.100.1",
        "--endpoint",
        "192.0.2.1:51820",
    ]);
    let (public, err) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{err}");
    let key_file = tmp.path().join("orch/private.key");
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let wg = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::fs::File::open(&key_file).unwrap())
        .output()
        .unwrap();
    assert!(wg.status.success());
    assert_eq!(String::from_utf8_lossy(&wg.stdout).trim(), public.trim());

    let out = orch::run(&["--config", c, "pubkey"]);
    assert_eq!(orch::text(&out).0, public);

    let key_before = std::fs::read(&key_file).unwrap();
    let out = orch::run(&["--config", c, "init", "--node", "alice"]);
    assert_eq!(orch::code(&out), 0);
    assert_eq!(orch::text(&out).0, public, "a second init keeps the key");
    assert_eq!(std::fs::read(&key_file).unwrap(), key_before);

    // The starter config is one node short, and says so.
    let (code, _, stderr) = check(&config, &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("a cluster has exactly two nodes, this file has 1 (alice)"),
        "{stderr}"
    );
}

#[test]
fn a_group_readable_private_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let key = pair.alice.join("private.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, stderr) = check(&pair.config("alice"), &["--node", "alice"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("has mode 0640") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[test]
fn the_wrong_node_name_is_caught_by_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let (code, _, stderr) = check(&pair.config("alice"), &["--node", "bob"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("nodes.bob.public_key: does not match this node's private key"),
        "{stderr}"
    );
    // Without --node the key decides.
    let (code, stdout, stderr) = check(&pair.config("bob"), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("this node is bob"), "{stdout}");
}

#[test]
fn a_missing_config_says_how_to_make_one() {
    let out = orch::run(&["--config", "/nonexistent/orch.toml", "config", "check"]);
    assert_eq!(orch::code(&out), 2);
    assert!(orch::text(&out).1.contains("orch init --node NAME"));
}

#[test]
fn completions_are_printed() {
    let out = orch::run(&["completions", "bash"]);
    assert_eq!(orch::code(&out), 0);
    assert!(orch::text(&out).0.contains("_orch()"));
}
