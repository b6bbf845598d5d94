//! The old master comes back after a failover, in the failover lab (`failover.rs`): it
//! learns it was replaced, demotes, rejoins, re-points its name and the tunnel, and the
//! pushes go the other way, keeping what it wrote meanwhile; or it can reach nobody and
//! stays fenced until it can. And a standby whose database stopped replicating does not
//! take over.

use super::failover::{assert_failed_over_to_bob, ip, needs, needs_postgres, Case, Fo};
use super::switchover::{db_verdict, postgres_pair};
use orch_tests::dbserver::{self, Servers};
use orch_tests::fixture::{find_file, write_secret};
use orch_tests::{eventually, orch};
use std::time::Duration;

const SITE: &str = "alice-web";
const WITHIN: Duration = Duration::from_secs(40);

/// Alice's site role as her agent reports it: (role, epoch).
fn alice_role(fo: &Fo) -> Result<(String, i64), String> {
    let site = fo.site("alice")?;
    Ok((
        site["role"].as_str().unwrap_or_default().to_owned(),
        site["epoch"].as_i64().unwrap_or_default(),
    ))
}

/// Waits until alice has rejoined as standby of bob at epoch 2 (her role, and the event in
/// her history: the state line moves on to watching bob at the next tick).
fn wait_rejoined(fo: &Fo) {
    eventually("alice rejoined as standby of bob", WITHIN, || {
        let role = alice_role(fo)?;
        let history = fo.history("alice");
        if role == ("standby".to_owned(), 2)
            && history.contains("alice rejoined alice-web as standby of bob at epoch 2")
        {
            Ok(())
        } else {
            Err(format!("{role:?}\n{history}\n{}", fo.logs()))
        }
    });
    let f = fo.failover("alice").unwrap();
    assert_eq!(f["armed"], false, "{f:#}");
}

fn wait_alice_state(fo: &Fo, state: &str, words: &str) -> serde_json::Value {
    eventually(
        &format!("alice's failover state is {state} ({words})"),
        WITHIN,
        || {
            let f = fo.failover("alice")?;
            if f["state"] == state && f["summary"].as_str().unwrap_or("").contains(words) {
                Ok(f)
            } else {
                Err(format!("{f:#}\n{}", fo.logs()))
            }
        },
    )
}

#[test]
fn the_old_master_returns_with_a_new_address_and_follows_the_new_one() {
    let test = "the_old_master_returns_with_a_new_address_and_follows_the_new_one";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    let dir = fo.lab.dir().to_owned();
    eventually("alice's name is published", WITHIN, || {
        let a = fo.bind.dig("alice.example.org", "A");
        (a == "192.0.2.1").then_some(()).ok_or(a)
    });
    // Bob holds a copy of alice's site.
    let out = fo.orch("alice", &["push", SITE]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("bob-www/index.html")).unwrap(),
        "alice's page\n"
    );

    let killed = fo.kill_alice();
    assert_failed_over_to_bob(&fo, killed);
    // Alice wrote to her copy before she went down for good: kept, never lost.
    std::fs::write(
        dir.join("alice-www/index.html"),
        "written on alice after the split\n",
    )
    .unwrap();
    // She comes back with a new address.
    let back = fo.return_alice("192.0.2.21");

    // The tunnel heals within two keepalives (5 s in the lab) of her return.
    eventually("the tunnel heals", Duration::from_secs(10), || {
        fo.lab.ping(&fo.alice, "198.51.100.2")
    });
    eprintln!("tunnel healed {:?} after alice's return", back.elapsed());

    wait_rejoined(&fo);
    assert_eq!(fo.noted("alice", "demoted"), ["2"], "demote ran once");
    assert_eq!(
        fo.noted("alice", "rejoined"),
        ["2"],
        "rejoin ran once, after demote"
    );
    assert!(fo.promoted("alice").is_empty());
    // The site stays on bob; alice's own name follows her new address.
    fo.expect_lock("master=bob epoch=2").unwrap();
    assert_eq!(fo.www(), "192.0.2.2");
    eventually("alice's name follows her", WITHIN, || {
        let a = fo.bind.dig("alice.example.org", "A");
        (a == "192.0.2.21").then_some(()).ok_or(a)
    });
    let history = fo.history("alice");
    assert!(
        history.contains("alice-web was failed over to bob at epoch 2"),
        "{history}"
    );
    assert!(
        history.contains("alice rejoined alice-web as standby of bob at epoch 2"),
        "{history}"
    );
    // Alice no longer pushes; bob does, and alice's own edit is kept aside.
    let out = fo.orch("alice", &["push", SITE]);
    assert_eq!(orch::code(&out), 1, "{:?}", orch::text(&out));
    let out = fo.orch("bob", &["push", SITE]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("alice-www/index.html")).unwrap(),
        "alice's page\n",
        "bob's copy wins on alice"
    );
    let kept = find_file(
        &fo.pair.alice.join("state/diverged").join(SITE),
        "index.html",
    )
    .unwrap_or_else(|| panic!("alice's edit is not in diverged/: {stdout}"));
    assert_eq!(
        std::fs::read_to_string(kept).unwrap(),
        "written on alice after the split\n"
    );
    // Both disarmed by the failover; `orch ack` on alice, the standby, re-arms bob too.
    assert_eq!(fo.failover("bob").unwrap()["armed"], false);
    let out = fo.orch("alice", &["ack", SITE]);
    assert_eq!(orch::code(&out), 0, "{:?}", orch::text(&out));
    eventually("bob follows alice's ack", WITHIN, || {
        let f = fo.failover("bob")?;
        (f["armed"] == true)
            .then_some(())
            .ok_or_else(|| format!("{f:#}"))
    });
    assert!(
        fo.history("bob").contains("re-armed: it is armed on alice"),
        "{}",
        fo.history("bob")
    );
}

#[test]
fn an_old_master_that_reaches_nobody_stays_fenced_until_it_does() {
    let test = "an_old_master_that_reaches_nobody_stays_fenced_until_it_does";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    let killed = fo.kill_alice();
    assert_failed_over_to_bob(&fo, killed);
    // Alice comes back, but neither bob nor the DNS server can be reached from her host.
    for dest in ["192.0.2.2/32", "192.0.2.53/32"] {
        ip(&["-n", &fo.alice.netns, "route", "add", "blackhole", dest]);
    }
    ip(&["-n", &fo.alice.netns, "link", "set", "eth0", "up"]);
    fo.spawn_agent("alice");
    wait_alice_state(
        &fo,
        "fenced",
        "fenced: cannot tell whether alice-web was failed over (peer and DNS unreachable since",
    );
    // She claims nothing, and stops nothing on her own.
    let out = fo.orch("alice", &["push", SITE]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 1, "{stdout}{stderr}");
    assert!(stderr.contains("fenced"), "{stderr}");
    assert_eq!(alice_role(&fo).unwrap(), ("master".to_owned(), 1));
    assert!(fo.noted("alice", "demoted").is_empty());
    let out = fo.orch("alice", &["status"]);
    assert!(
        orch::text(&out)
            .0
            .contains("failover alice-web: fenced: cannot tell whether alice-web was failed over"),
        "{:?}",
        orch::text(&out)
    );
    // The network returns: she learns, demotes and rejoins.
    for dest in ["192.0.2.2/32", "192.0.2.53/32"] {
        ip(&["-n", &fo.alice.netns, "route", "del", "blackhole", dest]);
    }
    wait_rejoined(&fo);
    assert_eq!(fo.noted("alice", "demoted"), ["2"]);
    fo.expect_lock("master=bob epoch=2").unwrap();
}

#[test]
fn a_master_cut_off_while_running_steps_down_when_back() {
    let test = "a_master_cut_off_while_running_steps_down_when_back";
    if !needs(test) {
        return;
    }
    let fo = Fo::new(test, Case::default());
    let out = fo.orch("alice", &["push", SITE]);
    assert_eq!(orch::code(&out), 0, "{:?}", orch::text(&out));
    // Alice's uplink goes down; her agent and her web server go on running.
    let cut = std::time::Instant::now();
    ip(&["-n", &fo.alice.netns, "link", "set", "eth0", "down"]);
    assert_failed_over_to_bob(&fo, cut);
    // Cut off, she cannot tell: she claims nothing (no push), and stops nothing.
    wait_alice_state(
        &fo,
        "fenced",
        "fenced: cannot tell whether alice-web was failed over",
    );
    let out = fo.orch("alice", &["push", SITE]);
    assert_eq!(orch::code(&out), 1, "{:?}", orch::text(&out));
    assert_eq!(alice_role(&fo).unwrap(), ("master".to_owned(), 1));
    // Her link comes back with a new address: the running agent learns it was replaced
    // and steps down, without moving the records to itself; its own name follows it.
    let renumber = "ip addr del 192.0.2.1/24 dev eth0 && ip addr add 192.0.2.31/24 dev eth0 \
                    && ip link set eth0 up";
    fo.lab.must(&fo.alice, &["sh", "-c", renumber]);
    wait_rejoined(&fo);
    eventually("alice's name follows her", WITHIN, || {
        let a = fo.bind.dig("alice.example.org", "A");
        (a == "192.0.2.31").then_some(()).ok_or(a)
    });
    assert_eq!(fo.noted("alice", "demoted"), ["2"]);
    assert_eq!(fo.noted("alice", "rejoined"), ["2"]);
    fo.expect_lock("master=bob epoch=2").unwrap();
    assert_eq!(fo.www(), "192.0.2.2");
    assert!(fo.promoted("alice").is_empty());
    let out = fo.orch("bob", &["push", SITE]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}");
    // And it stays so.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        fo.expect_lock("master=bob epoch=2").unwrap();
        assert_eq!(fo.www(), "192.0.2.2", "{}", fo.logs());
    }
}

#[test]
fn an_ack_on_the_new_master_rearms_the_old_one_when_back() {
    let test = "an_ack_on_the_new_master_rearms_the_old_one_when_back";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    let out = fo.orch("alice", &["push", SITE]);
    assert_eq!(orch::code(&out), 0, "{:?}", orch::text(&out));
    let killed = fo.kill_alice();
    assert_failed_over_to_bob(&fo, killed);
    // Bob's operator re-arms the site while alice is still down.
    let out = fo.orch("bob", &["ack", SITE]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("re-armed"), "{stdout}");
    // Alice comes back: she rejoins as bob's standby, and follows his ack.
    fo.return_alice("192.0.2.21");
    let f = eventually("alice rejoined and armed", WITHIN, || {
        let role = alice_role(&fo)?;
        let f = fo.failover("alice")?;
        if role == ("standby".to_owned(), 2) && f["armed"] == true {
            Ok(f)
        } else {
            Err(format!("{role:?} {f:#}\n{}", fo.logs()))
        }
    });
    assert!(
        !f["summary"].as_str().unwrap_or("").contains("disarmed"),
        "{f:#}"
    );
    assert!(
        fo.history("alice").contains("re-armed: it is armed on bob"),
        "{}",
        fo.history("alice")
    );
    // So when bob dies in turn, alice takes the site back on her own.
    let killed = fo.kill_bob();
    eventually("the lock names alice at epoch 3", WITHIN, || {
        fo.expect_lock("master=alice epoch=3")
            .map_err(|e| format!("{e}\n{}", fo.logs()))
    });
    eprintln!("alice took the site back in {:?}", killed.elapsed());
    assert_eq!(fo.www(), "192.0.2.21");
    assert_eq!(fo.promoted("alice"), ["3"]);
    assert_eq!(alice_role(&fo).unwrap(), ("master".to_owned(), 3));
}

/// Whether any file under `dir` holds `needle`.
fn holds_bytes(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                return true;
            }
        }
    }
    false
}

/// No automatic failover onto a standby whose database stopped replicating: its last
/// check that reached the master said so, alice is then lost, bob holds, alerts with what
/// to do, and the lock, the records and his database stay as they were.
#[test]
fn a_standby_whose_replication_broke_does_not_take_over() {
    let test = "a_standby_whose_replication_broke_does_not_take_over";
    if !needs_postgres(test) {
        return;
    }
    let (mut fo, servers, _, b_data) = postgres_pair(test);
    let bob = fo.bob.clone();
    // Replication breaks while alice is up: bob's server no longer knows where its
    // primary is (its WAL receiver stops).
    servers.psql_on(
        &fo.lab,
        &bob,
        &b_data,
        "app",
        "ALTER SYSTEM SET primary_conninfo = ''",
    );
    servers.psql_on(&fo.lab, &bob, &b_data, "app", "SELECT pg_reload_conf()");
    db_verdict(&fo, "broken");

    fo.kill_alice();
    fo.wait_bob("holding", "failing over now would lose data", WITHIN);
    fo.stays_put("192.0.2.1", Duration::from_secs(8));
    let text =
        fo.mail("[orch] ALERT alice-web: alice looks lost, but failing over now would lose data");
    assert!(text.contains("orch promote alice-web --force"), "{text}");
    let got = servers.psql_on(&fo.lab, &bob, &b_data, "app", "SELECT pg_is_in_recovery()");
    assert_eq!(got, "t", "bob's database was promoted");
    drop(fo);
    drop(servers);
}

#[test]
fn postgres_follows_the_new_master_after_an_automatic_failover() {
    let test = "postgres_follows_the_new_master_after_an_automatic_failover";
    if !needs_postgres(test) {
        return;
    }
    const ORCH_PW: &str = "orch-db-pw-91ab";
    const REPL_PW: &str = "repl-pw-3c5d";
    let mut servers = Servers::new();
    let (a_data, b_data) = (servers.dir().join("pg-alice"), servers.dir().join("pg-bob"));
    // The agents check the password file at start: it exists before them.
    let password = servers.dir().join("db.pass");
    write_secret(&password, ORCH_PW);
    let mut fo = Fo::new(
        test,
        Case {
            lists: "promote = [\"postgres-promote\"]\ndemote = [\"postgres-demote\"]\n\
                    rejoin = [\"postgres-rejoin\"]\n",
            extra: format!(
                "\n[[sites.alice-web.database]]\nname = \"app\"\nkind = \"postgres\"\n\
                 url = \"postgres://orch@{{node}}:5432/app\"\npassword_file = \"{}\"\n\
                 interval = \"2s\"\nheartbeat = false\n\
                 data_dir = {{ alice = \"{}\", bob = \"{}\" }}\n",
                password.display(),
                a_data.display(),
                b_data.display()
            ),
            bin: true,
            ..Case::default()
        },
    );
    let (alice, bob) = (fo.alice.clone(), fo.bob.clone());
    let pg_alice = servers.postgres_primary(&mut fo.lab, &alice, "198.51.100.1", ORCH_PW, REPL_PW);
    let pg_bob =
        servers.postgres_standby(&mut fo.lab, &bob, "198.51.100.1", "198.51.100.2", REPL_PW);
    assert_eq!((&pg_alice, &pg_bob), (&a_data, &b_data));
    let dir = fo.lab.dir().to_owned();
    dbserver::systemctl_for_postgres(&dir.join("alice-bin"), &a_data);
    dbserver::systemctl_for_postgres(&dir.join("bob-bin"), &b_data);
    servers.psql_on(
        &fo.lab,
        &alice,
        &a_data,
        "app",
        "CREATE TABLE t (x text); INSERT INTO t VALUES ('before')",
    );
    // Bob's checks see the replication healthy: its data is safe to take over with.
    eventually("bob's check of the database is healthy", WITHIN, || {
        let s = orch::status_json(&fo.pair.config("bob"))?;
        let db = &s["databases"][0];
        if db["verdict"] == "healthy" {
            Ok(())
        } else {
            Err(format!("{db:#}"))
        }
    });
    eventually("the row reaches bob", WITHIN, || {
        let got = servers.try_psql_on(&fo.lab, &bob, &b_data, "app", "SELECT count(*) FROM t")?;
        (got == "1").then_some(()).ok_or(got)
    });

    // Alice's server is lost (her database keeps running, cut off with her).
    let killed = fo.kill_alice();
    eventually("the lock names bob at epoch 2", WITHIN, || {
        fo.expect_lock("master=bob epoch=2")
            .map_err(|e| format!("{e}\n{}", fo.logs()))
    });
    eprintln!("failed over in {:?}", killed.elapsed());
    eventually("bob's database is promoted", WITHIN, || {
        let got =
            servers.try_psql_on(&fo.lab, &bob, &b_data, "app", "SELECT pg_is_in_recovery()")?;
        (got == "f").then_some(()).ok_or(got)
    });
    servers.psql_on(
        &fo.lab,
        &bob,
        &b_data,
        "app",
        "INSERT INTO t VALUES ('bob after the failover')",
    );
    // Meanwhile something still wrote on alice's side of the split.
    servers.psql_on(
        &fo.lab,
        &alice,
        &a_data,
        "app",
        "INSERT INTO t VALUES ('alice-during-the-split'); CHECKPOINT",
    );

    // Alice comes back: demote, rejoin (pg_rewind from bob, her old data kept aside).
    ip(&["-n", &alice.netns, "link", "set", "eth0", "up"]);
    fo.spawn_agent("alice");
    wait_rejoined(&fo);
    assert_eq!(
        servers.psql(&fo.lab, &alice, &a_data, "SELECT pg_is_in_recovery()"),
        "t"
    );
    servers.psql_on(
        &fo.lab,
        &bob,
        &b_data,
        "app",
        "INSERT INTO t VALUES ('bob later')",
    );
    eventually("bob's rows reach alice", WITHIN, || {
        let got = servers.try_psql_on(
            &fo.lab,
            &alice,
            &a_data,
            "app",
            "SELECT string_agg(x, ',' ORDER BY x) FROM t",
        )?;
        (got == "before,bob after the failover,bob later")
            .then_some(())
            .ok_or(got)
    });
    // The row alice wrote during the split is not in the replica, but it is not gone:
    // her old data directory is kept in diverged/.
    let kept = fo.pair.alice.join("state/diverged").join(SITE);
    assert!(
        find_file(&kept, "PG_VERSION").is_some(),
        "no kept data directory under {}",
        kept.display()
    );
    assert!(
        holds_bytes(&kept, b"alice-during-the-split"),
        "the split's row is in {}",
        kept.display()
    );
    let history = fo.history("alice");
    assert!(
        history.contains("playbook postgres-rejoin step `follow the peer`"),
        "{history}"
    );
    drop(fo);
    drop(servers);
}
