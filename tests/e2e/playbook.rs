//! Playbooks against real servers: an OpenSSH server in the peer's host for peer steps
//! (its forced command runs the peer's own copy of a step its own config names), and the
//! shipped PostgreSQL and MariaDB promote / demote / rejoin playbooks on real replication
//! through the tunnel.
//!
//! systemd does not run in a lab namespace, so the shipped playbooks' `systemctl stop|start
//! postgresql` steps meet a stand-in on the PATH of the `orch` processes (`bin/systemctl`
//! in the host's folder) that does what the Debian unit does: `pg_ctl stop -m fast` and
//! `pg_ctl start` of that host's real server. Everything else is the real thing.

use orch_tests::dbserver::{self, Servers};
use orch_tests::fixture::{write_secret, Pair};
use orch_tests::lab::{Host, Lab};
use orch_tests::sshd::Sshd;
use orch_tests::{eventually, orch, prerequisites};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ORCH_PW: &str = "orch-db-pw-4f1c";
const REPL_PW: &str = "repl-pw-77aa";

/// Puts `lists` (TOML lines) into `[sites.alice-web]` of a node's config.
fn site_lists(config: &Path, lists: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let anchor = "standby = \"bob\"\nreport = \"30 4 * * *\"\n";
    assert!(text.contains(anchor), "{text}");
    std::fs::write(config, text.replace(anchor, &format!("{anchor}{lists}\n"))).unwrap();
}

/// `orch ARGS` in `host` with `config`, with `path` first on PATH: exit code and output.
fn orch_in(
    lab: &Lab,
    host: &Host,
    config: &Path,
    path: Option<&Path>,
    args: &[&str],
) -> (i32, String) {
    let mut cmd = lab.command(host, orch::bin());
    cmd.arg("--config").arg(config).args(args);
    if let Some(p) = path {
        cmd.env(
            "PATH",
            format!(
                "{}:{}",
                p.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = orch::text(&out);
    (orch::code(&out), format!("{stdout}{stderr}"))
}

fn write_playbook(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join("playbooks")).unwrap();
    std::fs::write(dir.join("playbooks").join(format!("{name}.toml")), text).unwrap();
}

#[test]
fn peer_steps_run_the_peers_own_copy_over_ssh_and_only_what_its_config_names() {
    if !prerequisites(
        "peer_steps_run_the_peers_own_copy_over_ssh_and_only_what_its_config_names",
        true,
        &["ip", "ping", "/usr/sbin/sshd", "ssh", "ssh-keygen"],
    ) {
        return;
    }
    let mut lab = Lab::new("playbook-ssh");
    let sshd = Sshd::prepare(&lab.dir().join("sshd-bob"));
    let extra = format!(
        "\n[nodes.bob.ssh]\nuser = \"root\"\nhost_key = \"{}\"\n\n[nodes.alice.ssh]\nuser = \"root\"\n",
        sshd.host_key
    );
    let pair = Pair::new(lab.dir(), &extra);
    let lists = "demote = [\"web-stop\", \"probe\"]";
    site_lists(
        &pair.config("alice"),
        &format!("{lists}\nrejoin = [\"rogue\"]"),
    );
    site_lists(&pair.config("bob"), lists);
    // alice's copy says what to ask for; bob's own copy says what bob runs.
    let alice_probe = "[[step]]\nname = \"hello\"\non = \"peer\"\nrun = [\"echo\", \"alice's copy ran\"]\n\n\
                       [[step]]\nname = \"slow\"\non = \"peer\"\non_failure = \"continue\"\nrun = [\"true\"]\n\n\
                       [[step]]\nname = \"local\"\nrun = [\"echo\", \"{node} here, peer {peer} at {peer.tunnel_ip}\"]\n";
    let bob_probe = "[[step]]\nname = \"hello\"\non = \"peer\"\nrun = [\"sh\", \"-c\", \"echo bob ran its own copy as {node} for {peer}, epoch {epoch}\"]\n\n\
                     [[step]]\nname = \"slow\"\non = \"peer\"\ntimeout = \"2s\"\nshell = \"sleep 300 & echo $! > {state_dir}/slow.pid; wait\"\n\n\
                     [[step]]\nname = \"local\"\nrun = [\"echo\", \"bob's local step\"]\n";
    write_playbook(&pair.alice, "probe", alice_probe);
    write_playbook(&pair.bob, "probe", bob_probe);
    let rogue =
        "[[step]]\nname = \"hello\"\non = \"peer\"\nrun = [\"echo\", \"should never run\"]\n";
    write_playbook(&pair.alice, "rogue", rogue);
    write_playbook(&pair.bob, "rogue", rogue);

    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    pair.spawn_agents(&mut lab, &[alice.clone(), bob.clone()]);
    eventually("the tunnel comes up", Duration::from_secs(20), || {
        lab.ping(&alice, "198.51.100.2")
    });
    sshd.start(
        &mut lab,
        &bob,
        "198.51.100.2",
        &std::env::var("PATH").unwrap_or_default(),
    );

    // `orch ssh setup` on alice: its key, and the line for bob's authorized_keys.
    let (a_conf, b_conf) = (pair.config("alice"), pair.config("bob"));
    let (code, out) = orch_in(
        &lab,
        &alice,
        &a_conf,
        None,
        &["ssh", "setup", "--host-key", "/nonexistent"],
    );
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("restrict,from=\"198.51.100.1\",command="))
        .unwrap_or_else(|| panic!("no authorized_keys line in {out}"))
        .to_owned();
    // Bob's config lives in another folder here (on real hosts both are /etc/orch/orch.toml).
    let line = line.replace(a_conf.to_str().unwrap(), b_conf.to_str().unwrap());
    std::fs::write(&sshd.authorized_keys, format!("{line}\n")).unwrap();

    // The dry run shows every step with its variables filled in.
    let (code, out) = orch_in(
        &lab,
        &alice,
        &a_conf,
        None,
        &[
            "playbook",
            "run",
            "probe",
            "--site",
            "alice-web",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("alice here, peer bob at 198.51.100.2"),
        "{out}"
    );
    assert!(out.contains("[run on bob]"), "{out}");

    let (code, out) = orch_in(
        &lab,
        &alice,
        &a_conf,
        None,
        &["playbook", "run", "probe", "--site", "alice-web"],
    );
    assert_eq!(code, 0, "{out}\nsshd: {}", lab.log("sshd-bob"));
    assert!(
        out.contains("bob ran its own copy as bob for alice, epoch 1"),
        "the peer runs its own copy, from its point of view: {out}"
    );
    assert!(!out.contains("alice's copy ran"), "{out}");
    // bob's "slow" overran its own 2 s timeout: killed with its child; alice continued.
    assert!(out.contains("(continuing)"), "{out}");
    let pid: i32 = std::fs::read_to_string(pair.bob.join("state/slow.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(
        "the slow step's child is gone",
        Duration::from_secs(10),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty()
                || stat
                    .split(')')
                    .nth(1)
                    .is_some_and(|s| s.trim_start().starts_with('Z'))
            {
                Ok(())
            } else {
                Err(stat)
            }
        },
    );
    assert!(
        out.contains("alice here, peer bob"),
        "the local step ran here: {out}"
    );
    // Both sides recorded it.
    let (_, history) = orch_in(
        &lab,
        &bob,
        &b_conf,
        None,
        &["history", "alice-web", "--json"],
    );
    assert!(
        history.contains("playbook probe step `hello` run for alice"),
        "{history}"
    );
    let (_, history) = orch_in(
        &lab,
        &alice,
        &a_conf,
        None,
        &["history", "alice-web", "--json"],
    );
    assert!(
        history.contains("playbook probe step `hello` on bob"),
        "{history}"
    );

    // A playbook bob's own config does not name is refused there, whatever alice asks.
    let (code, out) = orch_in(
        &lab,
        &alice,
        &a_conf,
        None,
        &["playbook", "run", "rogue", "--site", "alice-web"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused by bob"), "{out}");
    assert!(out.contains("does not name playbook `rogue`"), "{out}");
    assert!(!out.contains("should never run"), "{out}");

    // A command line sent by hand is not a step request: the forced command refuses it.
    let key = pair.alice.join("ssh/id_ed25519");
    let known = pair.alice.join("state/ssh/known_hosts");
    let out = lab.run(
        &alice,
        &[
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            key.to_str().unwrap(),
            "-o",
            "BatchMode=yes",
            "-o",
            &format!("UserKnownHostsFile={}", known.display()),
            "-o",
            "StrictHostKeyChecking=yes",
            "root@198.51.100.2",
            "touch /tmp/orch-pwned",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a step request"));

    // A host that shows another key is refused (strict checking, pinned key).
    let wrong = pair.alice.join("wrong.toml");
    let other = orch_tests::sshd::keygen(&lab.dir().join("other_host_key"));
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&a_conf)
            .unwrap()
            .replace(&sshd.host_key, &other),
    )
    .unwrap();
    let (code, out) = orch_in(
        &lab,
        &alice,
        &wrong,
        None,
        &["playbook", "run", "probe", "--site", "alice-web"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no SSH session to the peer"), "{out}");
    assert!(out.to_lowercase().contains("host key"), "{out}");
    assert!(!out.contains("bob ran its own copy"), "{out}");
}

/// A `systemctl` stand-in in `bin` (see the file's top): `systemctl ACTION UNIT` runs the
/// command given for `(ACTION, UNIT)`; anything else fails.
fn systemctl_stand_in(bin: &Path, what: &str, units: &[(&str, String)]) {
    std::fs::create_dir_all(bin).unwrap();
    let cases: String = units
        .iter()
        .map(|(action_unit, command)| format!("'{action_unit}') exec {command} ;;\n"))
        .collect();
    let script = format!(
        "#!/bin/sh\n# lab stand-in for systemd: the Debian unit's start/stop of this host's {what}\n\
         case \"$1 $2\" in\n{cases}*) echo \"systemctl stand-in: $*\" >&2; exit 1 ;;\nesac\n"
    );
    let path = bin.join("systemctl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn postgres_promote_demote_and_rejoin_with_pg_rewind_keep_the_old_data() {
    let programs = dbserver::pg_programs();
    let mut needed: Vec<&str> = programs.iter().map(String::as_str).collect();
    needed.extend(["ip", "ping"]);
    if !prerequisites(
        "postgres_promote_demote_and_rejoin_with_pg_rewind_keep_the_old_data",
        true,
        &needed,
    ) {
        return;
    }
    let mut lab = Lab::new("playbook-pg");
    let mut servers = Servers::new();
    let (a_data, b_data) = (servers.dir().join("pg-alice"), servers.dir().join("pg-bob"));
    let site = format!(
        "\n[[sites.alice-web.database]]\nname = \"app\"\nkind = \"postgres\"\n\
         url = \"postgres://orch@{{node}}:5432/app\"\npassword_file = \"db.pass\"\n\
         data_dir = {{ alice = \"{}\", bob = \"{}\" }}\n",
        a_data.display(),
        b_data.display()
    );
    let pair = Pair::new(lab.dir(), &site);
    for (dir, node) in [(&pair.alice, "alice"), (&pair.bob, "bob")] {
        write_secret(&dir.join("db.pass"), ORCH_PW);
        site_lists(
            &pair.config(node),
            "promote = [\"postgres-promote\"]\ndemote = [\"postgres-demote\"]\nrejoin = [\"postgres-rejoin\"]",
        );
    }
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    pair.spawn_agents(&mut lab, &[alice.clone(), bob.clone()]);
    eventually("the tunnel comes up", Duration::from_secs(20), || {
        lab.ping(&alice, "198.51.100.2")
    });
    let pg_alice = servers.postgres_primary(&mut lab, &alice, "198.51.100.1", ORCH_PW, REPL_PW);
    let pg_bob = servers.postgres_standby(&mut lab, &bob, "198.51.100.1", "198.51.100.2", REPL_PW);
    assert_eq!((&pg_alice, &pg_bob), (&a_data, &b_data));
    let (a_bin, b_bin) = (lab.dir().join("alice-bin"), lab.dir().join("bob-bin"));
    dbserver::systemctl_for_postgres(&a_bin, &a_data);
    dbserver::systemctl_for_postgres(&b_bin, &b_data);
    let (a_conf, b_conf) = (pair.config("alice"), pair.config("bob"));
    servers.psql_on(
        &lab,
        &alice,
        &a_data,
        "app",
        "CREATE TABLE t (x text); INSERT INTO t VALUES ('before')",
    );
    eventually("the row reaches bob", Duration::from_secs(30), || {
        let got = servers.try_psql_on(&lab, &bob, &b_data, "app", "SELECT count(*) FROM t")?;
        if got == "1" {
            Ok(())
        } else {
            Err(got)
        }
    });

    let run = |host: &Host, conf: &Path, bin: &Path, book: &str| {
        orch_in(
            &lab,
            host,
            conf,
            Some(bin),
            &["playbook", "run", book, "--site", "alice-web"],
        )
    };
    let (code, out) = orch_in(
        &lab,
        &bob,
        &b_conf,
        Some(&b_bin),
        &[
            "playbook",
            "run",
            "postgres-promote",
            "--site",
            "alice-web",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sql: SELECT pg_promote"), "{out}");
    assert_eq!(
        servers.psql(&lab, &bob, &b_data, "SELECT pg_is_in_recovery()"),
        "t",
        "the dry run changed nothing"
    );
    let (code, out) = run(&bob, &b_conf, &b_bin, "postgres-promote");
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        servers.psql(&lab, &bob, &b_data, "SELECT pg_is_in_recovery()"),
        "f"
    );
    // The split: both write.
    servers.psql_on(
        &lab,
        &bob,
        &b_data,
        "app",
        "INSERT INTO t VALUES ('bob after the split')",
    );
    servers.psql_on(
        &lab,
        &alice,
        &a_data,
        "app",
        "INSERT INTO t VALUES ('alice after the split')",
    );

    let (code, out) = run(&alice, &a_conf, &a_bin, "postgres-demote");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&alice, &a_conf, &a_bin, "postgres-rejoin");
    assert_eq!(
        code,
        0,
        "{out}\n{}",
        std::fs::read_to_string(a_data.join("startup.log")).unwrap_or_default()
    );
    assert!(out.contains("pg_rewind"), "{out}");
    assert_eq!(
        servers.psql(&lab, &alice, &a_data, "SELECT pg_is_in_recovery()"),
        "t"
    );

    // alice follows bob: bob's rows arrive, alice's divergent row is gone from the replica…
    servers.psql_on(
        &lab,
        &bob,
        &b_data,
        "app",
        "INSERT INTO t VALUES ('bob later')",
    );
    eventually("bob's rows reach alice", Duration::from_secs(30), || {
        let got = servers.try_psql_on(
            &lab,
            &alice,
            &a_data,
            "app",
            "SELECT string_agg(x, ',' ORDER BY x) FROM t",
        )?;
        if got == "before,bob after the split,bob later" {
            Ok(())
        } else {
            Err(got)
        }
    });
    // …and kept aside in the old data directory, never silently dropped.
    let kept = pair.alice.join("state/diverged/alice-web");
    let stamp = std::fs::read_dir(&kept)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let old = stamp.join("pgdata-app");
    assert!(old.join("PG_VERSION").is_file(), "{}", old.display());
    assert!(
        !old.join("standby.signal").exists(),
        "the copy is the old primary's"
    );
    let (_, history) = orch_in(
        &lab,
        &alice,
        &a_conf,
        None,
        &["history", "alice-web", "--json"],
    );
    assert!(
        history.contains("playbook postgres-rejoin step `follow the peer`"),
        "{history}"
    );

    // `orch check` warns of a server pg_rewind could not rewind.
    let (_, out) = orch_in(
        &lab,
        &alice,
        &a_conf,
        None,
        &["check", "alice-web", "--json"],
    );
    assert!(!out.contains("neither wal_log_hints"), "{out}");
    servers.psql(&lab, &bob, &b_data, "ALTER SYSTEM SET wal_log_hints = off");
    for action in ["stop", "start"] {
        let out = lab.run(
            &bob,
            &[
                b_bin.join("systemctl").to_str().unwrap(),
                action,
                "postgresql",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_, out) = orch_in(&lab, &alice, &a_conf, None, &["check", "alice-web"]);
    assert!(
        out.contains(
            "warning: database app on bob: neither wal_log_hints nor data checksums are on"
        ),
        "{out}"
    );
    drop(servers);
}

#[test]
fn mariadb_promote_demote_and_rejoin_by_gtid_refuse_errant_transactions() {
    let mut needed: Vec<&str> = dbserver::MARIADB_PROGRAMS.to_vec();
    needed.extend(["ip", "ping"]);
    if !prerequisites(
        "mariadb_promote_demote_and_rejoin_by_gtid_refuse_errant_transactions",
        true,
        &needed,
    ) {
        return;
    }
    let mut lab = Lab::new("playbook-maria");
    let site = "\n[[sites.alice-web.database]]\nname = \"app\"\nkind = \"mysql\"\n\
                url = \"mysql://orch@{node}:3306/app\"\npassword_file = \"db.pass\"\n";
    let pair = Pair::new(lab.dir(), site);
    for (dir, node) in [(&pair.alice, "alice"), (&pair.bob, "bob")] {
        write_secret(&dir.join("db.pass"), ORCH_PW);
        site_lists(
            &pair.config(node),
            "promote = [\"mariadb-promote\"]\ndemote = [\"mariadb-demote\"]\nrejoin = [\"mariadb-rejoin\"]",
        );
    }
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    pair.spawn_agents(&mut lab, &[alice.clone(), bob.clone()]);
    eventually("the tunnel comes up", Duration::from_secs(20), || {
        lab.ping(&alice, "198.51.100.2")
    });
    let mut servers = Servers::new();
    let m_alice = servers.mariadb_primary(&mut lab, &alice, "198.51.100.1", ORCH_PW, REPL_PW);
    let m_bob = servers.mariadb_replica(&mut lab, &bob, "198.51.100.1", "198.51.100.2", REPL_PW);
    let (a_conf, b_conf) = (pair.config("alice"), pair.config("bob"));
    servers.mariadb(
        &lab,
        &alice,
        &m_alice,
        "CREATE TABLE app.t (x varchar(40)); INSERT INTO app.t VALUES ('before')",
    );
    eventually("the row reaches bob", Duration::from_secs(30), || {
        let got = servers.try_mariadb(&lab, &bob, &m_bob, "SELECT count(*) FROM app.t")?;
        if got.trim().ends_with('1') {
            Ok(())
        } else {
            Err(got)
        }
    });
    let run = |host: &Host, conf: &PathBuf, book: &str| {
        orch_in(
            &lab,
            host,
            conf,
            None,
            &["playbook", "run", book, "--site", "alice-web"],
        )
    };
    let (code, out) = run(&bob, &b_conf, "mariadb-promote");
    assert_eq!(code, 0, "{out}");
    servers.mariadb(
        &lab,
        &bob,
        &m_bob,
        "INSERT INTO app.t VALUES ('bob after the split')",
    );
    let (code, out) = run(&alice, &a_conf, "mariadb-demote");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&alice, &a_conf, "mariadb-rejoin");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replicates from bob"), "{out}");
    servers.mariadb(&lab, &bob, &m_bob, "INSERT INTO app.t VALUES ('bob later')");
    eventually("bob's rows reach alice", Duration::from_secs(30), || {
        let got = servers.try_mariadb(
            &lab,
            &alice,
            &m_alice,
            "SELECT GROUP_CONCAT(x ORDER BY x) FROM app.t",
        )?;
        if got.contains("before,bob after the split,bob later") {
            Ok(())
        } else {
            Err(got)
        }
    });

    // An errant transaction on alice (written while it was cut off): rejoin refuses,
    // naming it.
    servers.mariadb(
        &lab,
        &alice,
        &m_alice,
        "STOP SLAVE; SET GLOBAL read_only = OFF; INSERT INTO app.t VALUES ('alice alone')",
    );
    let gtid = servers.mariadb(&lab, &alice, &m_alice, "SELECT @@global.gtid_binlog_state");
    let (code, out) = run(&alice, &a_conf, "mariadb-rejoin");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("transactions the new master bob lacks: 0-1-"),
        "{out}\n(state {gtid})"
    );
    drop(servers);
}

#[test]
fn playbook_check_reports_every_problem_with_its_place_and_config_check_includes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = Pair::new(tmp.path(), "");
    let config = pair.config("alice");
    site_lists(&config, "demote = [\"broken\", \"postgres-demote\"]");
    write_playbook(
        &pair.alice,
        "broken",
        "[[step]]\nname = \"a\"\nrun = [\"echo\", \"{site\"]\ntimeout = \"soon\"\n\n\
         [[step]]\nname = \"b\"\nrun = [\"true\"]\nshell = \"true\"\ncolour = \"red\"\n",
    );
    let file = pair.alice.join("playbooks/broken.toml");
    let f = file.display().to_string();
    let out = orch::run(&[
        "--config",
        config.to_str().unwrap(),
        "playbook",
        "check",
        "broken",
    ]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 2, "{stdout}{stderr}");
    for want in [
        format!("{f}:3:7: step[0].run: `{{` without `}}`"),
        format!("{f}:4:11: step[0].timeout: `soon` is not a duration"),
        format!("{f}:9:9: step[1].shell: a step has exactly one of"),
        format!("{f}:10:10: step[1].colour: unknown key `colour`"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    // The config check lists them too, and the shipped postgres-demote does not fit a
    // site without a PostgreSQL database.
    let out = orch::run(&["--config", config.to_str().unwrap(), "config", "check"]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("sites.alice-web.demote[0]: playbook `broken` has 4 problem(s)"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{f}:4:11:")), "{stderr}");
    assert!(
        stderr.contains("<shipped>/postgres-demote.toml:8:10: step `checkpoint`: the site has no postgres database (site alice-web)"),
        "{stderr}"
    );
    // A good playbook passes (in a config whose playbooks fit its sites).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[\"broken\", \"postgres-demote\"]", "[\"broken\"]"),
    )
    .unwrap();
    std::fs::write(
        &file,
        "[[step]]\nname = \"a\"\nrun = [\"echo\", \"{site}\"]\n",
    )
    .unwrap();
    let out = orch::run(&[
        "--config",
        config.to_str().unwrap(),
        "playbook",
        "check",
        "broken",
    ]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("1 playbook(s) ok: broken"), "{stdout}");
}

fn systemctl_for_nginx(bin: &Path, conf: &Path) {
    let c = conf.display();
    systemctl_stand_in(
        bin,
        "nginx",
        &[
            ("start nginx", format!("nginx -c {c}")),
            ("stop nginx", format!("nginx -c {c} -s stop")),
        ],
    );
}

#[test]
fn web_start_and_web_stop_serve_and_stop_a_real_nginx() {
    if !prerequisites(
        "web_start_and_web_stop_serve_and_stop_a_real_nginx",
        true,
        &["ip", "nginx"],
    ) {
        return;
    }
    let mut lab = Lab::new("playbook-web");
    let pair = Pair::new(lab.dir(), "");
    let config = pair.config("alice");
    site_lists(
        &config,
        "promote = [\"web-start\"]\ndemote = [\"web-stop\"]",
    );
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let web = lab.dir().join("nginx");
    std::fs::create_dir_all(&web).unwrap();
    let conf = web.join("nginx.conf");
    let d = web.display();
    std::fs::write(
        &conf,
        format!(
            "daemon on;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:80; location / {{ return 200 \"served\"; }} }}\n}}\n"
        ),
    )
    .unwrap();
    let bin = lab.dir().join("alice-bin");
    systemctl_for_nginx(&bin, &conf);
    // nginx daemonizes: stopped by its pid even when the test fails halfway.
    struct Stop(PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let pid = std::fs::read_to_string(&self.0)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                // SAFETY: kill has no memory preconditions.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
    }
    let _stop = Stop(web.join("nginx.pid"));
    let up = |lab: &Lab| {
        lab.run(&alice, &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/80"])
            .status
            .success()
    };
    assert!(!up(&lab), "nothing listens before");
    let (code, out) = orch_in(
        &lab,
        &alice,
        &config,
        Some(&bin),
        &["playbook", "run", "web-start", "--site", "alice-web"],
    );
    assert_eq!(
        code,
        0,
        "{out}\n{}",
        std::fs::read_to_string(web.join("error.log")).unwrap_or_default()
    );
    assert!(out.contains("answers [wait] … passed"), "{out}");
    assert!(up(&lab), "nginx serves after web-start");
    let (code, out) = orch_in(
        &lab,
        &alice,
        &config,
        Some(&bin),
        &["playbook", "run", "web-stop", "--site", "alice-web"],
    );
    assert_eq!(code, 0, "{out}");
    eventually(
        "nginx is gone after web-stop",
        Duration::from_secs(10),
        || {
            if up(&lab) {
                Err("still listening".into())
            } else {
                Ok(())
            }
        },
    );
}
