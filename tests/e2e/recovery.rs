//! The old master comes back after a failover, in the failover lab (`failover.rs`): it
//! learns it was replaced, demotes, rejoins, re-points its name and the tunnel, and the
//! pushes go the other way, keeping what it wrote meanwhile; or it can reach nobody and
//! stays fenced until it can.

use super::failover::{assert_failed_over_to_bob, ip, needs, Case, Fo};
use orch_tests::{eventually, orch};
use std::time::{Duration, Instant};

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
    let renumber = "ip addr del 192.0.2.1/24 dev eth0 && ip addr add 192.0.2.21/24 dev eth0 \
                    && ip link set eth0 up";
    assert!(fo
        .lab
        .run(&fo.alice, &["sh", "-c", renumber])
        .status
        .success());
    let back = Instant::now();
    let (lab, pair, alice) = (&mut fo.lab, &fo.pair, &fo.alice);
    fo.agents[0] = pair.spawn_agent(lab, alice, "alice");

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
    let kept = find(
        &fo.pair.alice.join("state/diverged").join(SITE),
        "index.html",
    )
    .unwrap_or_else(|| panic!("alice's edit is not in diverged/: {stdout}"));
    assert_eq!(
        std::fs::read_to_string(kept).unwrap(),
        "written on alice after the split\n"
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
    let (lab, pair, alice) = (&mut fo.lab, &fo.pair, &fo.alice);
    fo.agents[0] = pair.spawn_agent(lab, alice, "alice");
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

/// The first file called `name` under `dir`.
fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == name) {
                return Some(p);
            }
        }
    }
    None
}
