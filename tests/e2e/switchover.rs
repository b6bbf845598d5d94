//! `orch promote SITE`, the planned switchover, end to end in the failover lab (real
//! agents and tunnel, BIND holding the records and the lock, SMTP): the dry run changes
//! nothing; the switchover moves the site with the files pushed last; the switchback
//! returns it; a failing promote step leaves the old master serving; either agent
//! killed half-way leaves no node demoted or promoted for long; one switchover at a time
//! in the pair; a switchover held up does not hold another site's failover up.

use super::failover::{needs, needs_postgres, Case, Fo};
use orch_tests::dbserver::{self, Commit, Servers, Writer};
use orch_tests::fixture::write_secret;
use orch_tests::{eventually, orch};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const SITE: &str = "alice-web";
/// The `mark` promote playbook, failing on a node whose state dir holds `fail-promote`.
const FAILS_WHEN_ASKED: &str = "[[step]]\nname = \"mark\"\n\
    shell = \"test ! -e {state_dir}/fail-promote && echo {epoch} >> {state_dir}/promoted\"\n";
const WITHIN: Duration = Duration::from_secs(60);
/// The `mark` promote playbook, noting its start in `promoting`, then waiting while
/// `hold` is in the node's state dir (120 s at most), then noting its end in `promoted`.
const HOLDS: &str = "[[step]]\nname = \"mark\"\ntimeout = \"150s\"\n\
    shell = \"echo {epoch} >> {state_dir}/promoting; i=0; \
    while [ -e {state_dir}/hold ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; \
    echo {epoch} >> {state_dir}/promoted\"\n";

/// A switchover of the site to bob, held in his promote playbook ([`HOLDS`]) until the
/// returned `hold` file is removed: the lab, that file, and `orch promote`'s output to
/// come.
fn held_switchover(test: &str) -> (Fo, PathBuf, Receiver<Output>) {
    held_switchover_with(test, String::new())
}

/// [`held_switchover`] with `extra` config.
fn held_switchover_with(test: &str, extra: String) -> (Fo, PathBuf, Receiver<Output>) {
    let fo = Fo::new(
        test,
        Case {
            promote: HOLDS,
            extra,
            ..Case::default()
        },
    );
    let hold = fo.pair.bob.join("state/hold");
    std::fs::write(&hold, "").unwrap();
    let cli = promote_in_background(&fo, "bob", SITE);
    wait_noted(&fo, "bob", "promoting", "2");
    (fo, hold, cli)
}

/// Waits until the playbook writing `state/NAME` on `node` has noted its one run, at
/// `epoch`.
fn wait_noted(fo: &Fo, node: &str, name: &str, epoch: &str) {
    eventually(&format!("{node}'s playbook notes {name}"), WITHIN, || {
        let noted = fo.noted(node, name);
        (noted == [epoch])
            .then_some(())
            .ok_or_else(|| format!("{noted:?}\n{}", fo.logs()))
    });
}

/// `orch promote SITE` on `node`, run on a thread: its output arrives on the channel.
fn promote_in_background(fo: &Fo, node: &str, site: &str) -> Receiver<Output> {
    let config = fo.pair.config(node);
    let site = site.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(orch::run(&[
            "--config",
            config.to_str().unwrap(),
            "promote",
            &site,
        ]));
    });
    rx
}

/// `orch promote` on `node`: its exit code and its stdout + stderr.
pub(crate) fn promote(fo: &Fo, node: &str, args: &[&str]) -> (i32, String) {
    let mut argv = vec!["promote", SITE];
    argv.extend_from_slice(args);
    let out = fo.orch(node, &argv);
    let (stdout, stderr) = orch::text(&out);
    (orch::code(&out), format!("{stdout}{stderr}"))
}

/// `node`'s role and epoch of the site, from its status.
pub(crate) fn role(fo: &Fo, node: &str) -> (String, i64) {
    let site = fo.site(node).unwrap();
    (
        site["role"].as_str().unwrap_or_default().to_owned(),
        site["epoch"].as_i64().unwrap_or(-1),
    )
}

/// Both nodes agree: `master` holds the site at `epoch`, the lock and the record say so.
pub(crate) fn settled(fo: &Fo, master: &str, epoch: i64, www: &str) {
    fo.expect_lock(&format!("master={master} epoch={epoch}"))
        .unwrap_or_else(|e| panic!("{e}\n{}", fo.logs()));
    assert_eq!(fo.www(), www);
    let other = if master == "alice" { "bob" } else { "alice" };
    assert_eq!(role(fo, master), ("master".into(), epoch));
    eventually(&format!("{other} follows at epoch {epoch}"), WITHIN, || {
        let r = role(fo, other);
        (r == ("standby".to_owned(), epoch))
            .then_some(())
            .ok_or_else(|| format!("{r:?}"))
    });
}

#[test]
fn promote_switches_over_and_back_and_a_failed_step_is_undone() {
    let test = "promote_switches_over_and_back_and_a_failed_step_is_undone";
    if !needs(test) {
        return;
    }
    // The promote playbook fails on a node whose state dir holds `fail-promote`.
    let mut fo = Fo::new(
        test,
        Case {
            promote: FAILS_WHEN_ASKED,
            ..Case::default()
        },
    );
    let dir = fo.lab.dir().to_owned();

    // The dry run: every check and step, nothing changed.
    let (code, out) = promote(&fo, "bob", &["--dry-run"]);
    assert_eq!(code, 0, "{out}\n{}", fo.logs());
    for line in [
        "switchover of alice-web: alice → bob (epoch 1 → 2), dry run",
        "ok    tunnel up: ",
        "ok    peer agent answers: alice answers",
        "alice: demote playbook demoted valid, 1 step(s)",
        "alice: final push of www (dry run): 1 change(s) of 1 entries",
        "ok    DNS lock names the master: _orch.alice-web.example.org holds \"master=alice epoch=1\", records → 192.0.2.1",
        "ok    public address here: 192.0.2.2",
        "ok    free space here: www",
        "2. demote playbooks on alice, run by its agent: demoted",
        "5. DNS compare-and-swap: _orch.alice-web.example.org \"master=alice epoch=1\" → \"master=bob epoch=2\"",
        "record www.example.org A: [\"192.0.2.1\"] → [\"192.0.2.2\"]",
        "7. rejoin playbooks on alice, run by its agent: rejoined",
        "dry run: nothing was changed",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    settled(&fo, "alice", 1, "192.0.2.1");
    assert!(fo.noted("alice", "demoted").is_empty());
    assert!(fo.promoted("bob").is_empty());

    // The switchover: a file written just before reaches bob before bob serves.
    std::fs::write(dir.join("alice-www/last.html"), "written last\n").unwrap();
    let (code, out) = promote(&fo, "bob", &[]);
    assert_eq!(code, 0, "{out}\n{}", fo.logs());
    for line in [
        "1. final push: ok",
        "2. demote on alice: ok",
        "3. databases caught up: ok",
        "4. promote here: ok",
        "5. DNS: \"master=bob epoch=2\", records → 192.0.2.2: ok",
        "7. alice follows bob: ok",
        "switchover of alice-web done in",
        "automatic failover of alice-web is armed",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("bob-www/last.html")).unwrap(),
        "written last\n"
    );
    settled(&fo, "bob", 2, "192.0.2.2");
    assert_eq!(fo.noted("alice", "demoted"), ["1"], "demoted once");
    assert_eq!(fo.noted("alice", "rejoined"), ["2"], "rejoined once");
    assert_eq!(fo.promoted("bob"), ["2"]);
    let f = fo.failover("bob").unwrap();
    assert_eq!(f["armed"], true, "{f:#}");
    let text = fo.mail("[orch] SWITCHOVER alice-web: switchover of alice-web: alice → bob");
    assert!(text.contains("7. alice follows bob: ok"), "{text}");

    // The switchback, from alice: the same steps the other way.
    let (code, out) = promote(&fo, "alice", &[]);
    assert_eq!(code, 0, "{out}\n{}", fo.logs());
    settled(&fo, "alice", 3, "192.0.2.1");
    assert_eq!(fo.promoted("alice"), ["3"]);
    assert_eq!(fo.noted("bob", "demoted"), ["2"]);
    assert_eq!(fo.noted("bob", "rejoined"), ["3"]);

    // The peer's word alone does not make a master step down: asked to demote, then
    // to rejoin a lock bob never took, alice refuses to rejoin (the lock record names
    // her) and serves again when asked to undo.
    let tool = format!("{}/tools/handover.py", env!("CARGO_MANIFEST_DIR"));
    let out = fo.lab.run(
        &fo.bob,
        &[
            "/usr/bin/python3",
            &tool,
            "198.51.100.1:7440",
            "bob",
            SITE,
            "3",
            "demote",
            "rejoin:4",
            "undo",
        ],
    );
    let (stdout, stderr) = orch::text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let answers: Vec<&str> = stdout.lines().collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    assert!(answers[0].contains("\"ok\": true"), "{stdout}");
    assert!(
        answers[1].contains("\"ok\": false") && answers[1].contains("not stepping down"),
        "{stdout}"
    );
    assert!(answers[2].contains("\"ok\": true"), "{stdout}");
    settled(&fo, "alice", 3, "192.0.2.1");
    assert_eq!(fo.noted("alice", "demoted"), ["1", "3"]);
    assert_eq!(
        fo.promoted("alice"),
        ["3", "3"],
        "her promote ran again to undo"
    );

    // A promote step that fails on bob: the switchover stops before the DNS, alice
    // serves again (her promote playbooks ran to undo the demote), bob follows her.
    std::fs::write(fo.pair.bob.join("state/fail-promote"), "").unwrap();
    let (code, out) = promote(&fo, "bob", &[]);
    assert_eq!(code, 1, "{out}\n{}", fo.logs());
    for line in [
        "4. FAILED: promote playbook mark failed",
        "undo: alice's promote playbooks (it serves again)",
        "switchover of alice-web stopped at step 4",
        "The DNS was not changed.",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    settled(&fo, "alice", 3, "192.0.2.1");
    assert_eq!(fo.noted("alice", "demoted"), ["1", "3", "3"]);
    assert_eq!(
        fo.promoted("alice"),
        ["3", "3", "3"],
        "her promote ran again to undo"
    );
    // Alice is not fenced: her pushes go out again.
    let out = fo.orch("alice", &["push", SITE]);
    assert_eq!(orch::code(&out), 0, "{:?}\n{}", orch::text(&out), fo.logs());

    // Switchovers re-armed automatic failover: alice's server dies, bob takes over.
    std::fs::remove_file(fo.pair.bob.join("state/fail-promote")).unwrap();
    fo.kill_alice();
    eventually("bob fails the site over at epoch 4", WITHIN, || {
        fo.expect_lock("master=bob epoch=4")
            .map_err(|e| format!("{e}\n{}", fo.logs()))
    });
    assert_eq!(fo.www(), "192.0.2.2");
}

/// `orch promote` on bob, and bob's agent killed while his promote playbook runs (it
/// finishes on its own: bob's site is promoted, the DNS not swapped, alice demoted):
/// the agent started again undoes the switchover at once — alice serves again (her
/// promote playbook), bob follows her again (his demote and rejoin playbooks) — instead
/// of leaving alice down until her 20 minutes pass and bob promoted beside her. A
/// switchover afterwards goes through.
#[test]
fn a_switchover_cut_off_by_a_stop_of_the_agent_is_undone_when_it_starts() {
    let test = "a_switchover_cut_off_by_a_stop_of_the_agent_is_undone_when_it_starts";
    if !needs(test) {
        return;
    }
    let (mut fo, hold, cli) = held_switchover(test);
    assert_eq!(fo.noted("alice", "demoted"), ["1"], "alice demoted first");
    // While bob switches over, alice waits for him, past the time after which she
    // believes a peer that says it is not switching over (bob says he is).
    let end = Instant::now() + Duration::from_secs(40);
    while Instant::now() < end {
        let f = fo.failover("alice").unwrap();
        assert_eq!(f["state"], "handing-over", "{f:#}\n{}", fo.logs());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(fo.promoted("alice"), Vec::<String>::new());
    fo.lab
        .proc(fo.agents[1])
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .expect("bob's agent dies");
    let out = cli.recv_timeout(WITHIN).expect("orch promote ends");
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("the agent stopped answering before `orch promote alice-web` finished"),
        "{stdout}{stderr}"
    );
    // Bob's promote playbook finishes without its agent: the worst case.
    std::fs::remove_file(&hold).unwrap();
    eventually("bob's promote playbook ends", WITHIN, || {
        let done = fo.promoted("bob");
        (done == ["2"])
            .then_some(())
            .ok_or_else(|| format!("{done:?}"))
    });
    let f = fo.failover("alice").unwrap();
    assert_eq!(f["state"], "handing-over", "{f:#}");
    fo.expect_lock("master=alice epoch=1").unwrap();

    // Bob's agent starts while alice cannot be reached: it waits, and says so.
    super::failover::ip(&["-n", &fo.alice.netns, "link", "set", "eth0", "down"]);
    fo.spawn_agent("bob");
    let f = fo.wait_bob(
        "undoing-switchover",
        "was cut off before its DNS swap (this node's agent stopped): waiting for alice's agent to undo it",
        WITHIN,
    );
    assert!(
        f["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("`orch promote alice-web --force` takes the site"),
        "{f:#}"
    );
    assert_eq!(fo.noted("bob", "demoted"), Vec::<String>::new());
    let restarted = Instant::now();
    super::failover::ip(&["-n", &fo.alice.netns, "link", "set", "eth0", "up"]);
    eventually("alice serves again, undone", WITHIN, || {
        let f = fo.failover("alice")?;
        (f["state"] == "master" && fo.promoted("alice") == ["1"])
            .then_some(())
            .ok_or_else(|| format!("{f:#}\n{:?}", fo.promoted("alice")))
    });
    eventually("bob follows alice again", WITHIN, || {
        let noted = (fo.noted("bob", "demoted"), fo.noted("bob", "rejoined"));
        (noted == (vec!["1".to_owned()], vec!["1".to_owned()]))
            .then_some(())
            .ok_or_else(|| format!("{noted:?}\n{}", fo.logs()))
    });
    eprintln!(
        "undone {:?} after alice was reachable again",
        restarted.elapsed()
    );
    settled(&fo, "alice", 1, "192.0.2.1");
    assert_eq!(fo.promoted("bob"), ["2"], "bob's promote did not run again");
    let history = fo.history("bob");
    assert!(
        history.contains("was cut off before its DNS swap (this node's agent stopped): undone; alice serves it again, bob follows it again"),
        "{history}"
    );
    let text =
        fo.mail("[orch] SWITCHOVER alice-web: the switchover of alice-web from alice to bob");
    assert!(text.contains("bob: rejoined ok"), "{text}");
    // Alice is not fenced: her pushes go out again.
    let out = fo.orch("alice", &["push", SITE]);
    assert_eq!(orch::code(&out), 0, "{:?}\n{}", orch::text(&out), fo.logs());

    // Nothing is left half-way: a switchover now goes through.
    let (code, out) = promote(&fo, "bob", &[]);
    assert_eq!(code, 0, "{out}\n{}", fo.logs());
    settled(&fo, "bob", 2, "192.0.2.2");
    assert_eq!(fo.promoted("bob"), ["2", "2"]);
    assert_eq!(fo.noted("alice", "rejoined"), ["2"]);
}

/// Alice demoted for a switchover that then stopped without its undo reaching her (here
/// the demote asked by hand, as bob's agent would, and nothing after it): bob's agent,
/// answering, says it is not switching over, so she serves again half a minute after
/// the demote instead of 20 minutes.
#[test]
fn a_demoted_master_whose_peer_stopped_switching_serves_again() {
    let test = "a_demoted_master_whose_peer_stopped_switching_serves_again";
    if !needs(test) {
        return;
    }
    let fo = Fo::new(test, Case::default());
    let tool = format!("{}/tools/handover.py", env!("CARGO_MANIFEST_DIR"));
    let out = fo.lab.run(
        &fo.bob,
        &[
            "/usr/bin/python3",
            &tool,
            "198.51.100.1:7440",
            "bob",
            SITE,
            "1",
            "demote",
        ],
    );
    let (stdout, stderr) = orch::text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("\"ok\": true"), "{stdout}");
    let demoted = Instant::now();
    assert_eq!(fo.noted("alice", "demoted"), ["1"]);
    eventually("alice waits for bob, and says so", WITHIN, || {
        let f = fo.failover("alice")?;
        let summary = f["summary"].as_str().unwrap_or_default();
        (f["state"] == "handing-over"
            && summary.contains("or once bob says it is not switching over"))
        .then_some(())
        .ok_or_else(|| format!("{f:#}"))
    });
    eventually("alice serves again", Duration::from_secs(90), || {
        let f = fo.failover("alice")?;
        (f["state"] == "master" && fo.promoted("alice") == ["1"])
            .then_some(())
            .ok_or_else(|| format!("{f:#}\n{:?}", fo.promoted("alice")))
    });
    let took = demoted.elapsed();
    eprintln!("alice served again {took:?} after her demote");
    assert!(
        took >= Duration::from_secs(25),
        "served again {took:?} after the demote: before the quiet time\n{}",
        fo.logs()
    );
    let history = fo.history("alice");
    assert!(
        history.contains("bob is not switching over any more"),
        "{history}"
    );
    settled(&fo, "alice", 1, "192.0.2.1");
    let out = fo.orch("alice", &["push", SITE]);
    assert_eq!(orch::code(&out), 0, "{:?}\n{}", orch::text(&out), fo.logs());
}

/// Alice's agent killed while her demote playbook runs (it finishes on its own): bob's
/// `orch promote` notices within a minute, not at its 30-minute step timeout, and stops;
/// when alice's agent is back it hears that bob is not switching over and she serves
/// again (her promote playbook) at once, not 20 minutes after her demote.
#[test]
fn an_old_master_killed_during_its_demote_serves_again_when_back() {
    let test = "an_old_master_killed_during_its_demote_serves_again_when_back";
    if !needs(test) {
        return;
    }
    let mut fo = Fo::new(test, Case::default());
    // Alice's demote playbook notes its start, waits while `hold` is in her state dir
    // (120 s at most), then notes its end.
    let books = fo.pair.config("alice").parent().unwrap().join("playbooks");
    std::fs::write(
        books.join("demoted.toml"),
        "[[step]]\nname = \"note\"\ntimeout = \"150s\"\n\
         shell = \"echo {epoch} >> {state_dir}/demoting; i=0; \
         while [ -e {state_dir}/hold ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; \
         echo {epoch} >> {state_dir}/demoted\"\n",
    )
    .unwrap();
    let hold = fo.pair.alice.join("state/hold");
    std::fs::write(&hold, "").unwrap();
    let rx = promote_in_background(&fo, "bob", SITE);
    wait_noted(&fo, "alice", "demoting", "1");
    fo.lab
        .proc(fo.agents[0])
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .expect("alice's agent dies");
    let killed = Instant::now();
    std::fs::remove_file(&hold).unwrap();
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| {
            panic!(
                "orch promote still waits 120 s after alice's agent died\n{}",
                fo.logs()
            )
        });
    let (stdout, stderr) = orch::text(&out);
    eprintln!(
        "orch promote ended {:?} after alice's agent died",
        killed.elapsed()
    );
    assert_eq!(orch::code(&out), 1, "{stdout}{stderr}");
    for line in [
        "2. FAILED: the demote",
        "alice could not be asked to undo",
        "switchover of alice-web stopped at step 2",
        "The DNS was not changed.",
    ] {
        assert!(
            stdout.contains(line) || stderr.contains(line),
            "{line}\n{stdout}{stderr}"
        );
    }
    assert_eq!(
        fo.noted("alice", "demoted"),
        ["1"],
        "her demote finished alone"
    );
    fo.expect_lock("master=alice epoch=1").unwrap();

    let back = Instant::now();
    fo.spawn_agent("alice");
    eventually("alice serves again", WITHIN, || {
        let f = fo.failover("alice")?;
        (f["state"] == "master" && fo.promoted("alice") == ["1"])
            .then_some(())
            .ok_or_else(|| format!("{f:#}\n{:?}", fo.promoted("alice")))
    });
    eprintln!(
        "alice served again {:?} after her agent started",
        back.elapsed()
    );
    let history = fo.history("alice");
    assert!(
        history.contains("bob is not switching over any more"),
        "{history}"
    );
    settled(&fo, "alice", 1, "192.0.2.1");
    assert_eq!(
        fo.promoted("bob"),
        Vec::<String>::new(),
        "bob promoted nothing"
    );
}

/// One switchover at a time in the pair: while bob switches alice-web over (his promote
/// playbook held), alice's `orch promote bob-cloud` (the other site, bob's) is refused at
/// once by its pre-checks — each node's failover task answers the other's steps one at a
/// time, and the two switchovers would each wait for the other for their timeouts.
/// Afterwards it goes through.
#[test]
fn one_switchover_at_a_time_in_the_pair() {
    let test = "one_switchover_at_a_time_in_the_pair";
    if !needs(test) {
        return;
    }
    let (fo, hold, cli) = held_switchover(test);
    let asked = Instant::now();
    let out = promote_in_background(&fo, "alice", "bob-cloud")
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("alice's orch promote still waits after 30 s\n{}", fo.logs()));
    let (stdout, stderr) = orch::text(&out);
    eprintln!("refused in {:?}", asked.elapsed());
    assert_eq!(orch::code(&out), 1, "{stdout}{stderr}");
    let text = format!("{stdout}{stderr}");
    for line in [
        "FAIL  peer not switching over: bob is switching alice-web over to itself now: one switchover at a time in the pair",
        "pre-check(s) failed",
        "nothing was changed",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }

    std::fs::remove_file(&hold).unwrap();
    let out = cli.recv_timeout(WITHIN).expect("bob's orch promote ends");
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}\n{}", fo.logs());
    settled(&fo, "bob", 2, "192.0.2.2");
    // The check has nothing to say now: bob-cloud moves to alice.
    let config = fo.pair.config("alice");
    let out = orch::run(&["--config", config.to_str().unwrap(), "promote", "bob-cloud"]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{stdout}{stderr}\n{}", fo.logs());
    assert!(
        stdout.contains("ok    peer not switching over: bob is switching no site over"),
        "{stdout}"
    );
}

/// A second site of alice's, `alice-blog`, on the same web server, failing over on its own.
const BLOG: &str = "
[sites.alice-blog]
primary = \"alice\"
standby = \"bob\"
dns = \"lab\"
records = [\"blog.example.org\"]
ttl = 1
health = [\"http://blog.example.org:8080/\"]
witnesses = [\"tcp:192.0.2.61:80\", \"http://192.0.2.62/\"]
failover = \"auto\"
after = \"3s\"
";

/// `node`'s role and epoch of `site`, from its status.
fn role_of(fo: &Fo, node: &str, site: &str) -> Result<(String, i64), String> {
    let status = orch::status_json(&fo.pair.config(node))?;
    let s = status["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == site))
        .ok_or_else(|| format!("no {site} in {status:#}"))?;
    Ok((
        s["role"].as_str().unwrap_or_default().to_owned(),
        s["epoch"].as_i64().unwrap_or(-1),
    ))
}

/// Each site has a failover task of its own: while bob's switchover of alice-web waits in
/// his promote playbook, alice dies, and bob takes her other site over within its `after`
/// (a switchover of that one is refused meanwhile: one at a time on a node).
#[test]
fn a_held_switchover_does_not_hold_another_sites_failover() {
    let test = "a_held_switchover_does_not_hold_another_sites_failover";
    if !needs(test) {
        return;
    }
    let (mut fo, hold, cli) = held_switchover_with(test, BLOG.to_owned());
    eventually("alice publishes alice-blog's lock record", WITHIN, || {
        let txt = fo.bind.dig("_orch.alice-blog.example.org", "TXT");
        (txt == "\"master=alice epoch=1\"")
            .then_some(())
            .ok_or_else(|| format!("{txt}\n{}", fo.logs()))
    });
    // One switchover at a time on a node too (`orch promote` prints its lines).
    let out = fo.orch("bob", &["promote", "alice-blog"]);
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("another switchover is under way on bob"),
        "{stdout}{stderr}"
    );
    // …and it prints none of the other's lines (they went out while it waited).
    assert!(!stdout.contains("alice-web"), "{stdout}{stderr}");
    let killed = fo.kill_alice();
    eventually("bob takes alice-blog over", WITHIN, || {
        let role = role_of(&fo, "bob", "alice-blog")?;
        (role == ("master".to_owned(), 2))
            .then_some(())
            .ok_or_else(|| format!("{role:?}\n{}", fo.logs()))
    });
    eprintln!(
        "alice-blog taken over {:?} after alice died",
        killed.elapsed()
    );
    assert_eq!(fo.bind.dig("blog.example.org", "A"), "192.0.2.2");
    assert_eq!(
        fo.bind.dig("_orch.alice-blog.example.org", "TXT"),
        "\"master=bob epoch=2\""
    );
    // All the while alice-web's switchover waited in bob's promote playbook.
    assert!(fo.noted("bob", "promoted").is_empty(), "{}", fo.logs());
    assert!(cli.try_recv().is_err(), "bob's orch promote ended early");

    std::fs::remove_file(&hold).unwrap();
    // It goes through; alice, dead, cannot be asked to rejoin: said, exit 1.
    let out = cli.recv_timeout(WITHIN).expect("bob's orch promote ends");
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(orch::code(&out), 1, "{stdout}{stderr}\n{}", fo.logs());
    assert!(
        stdout.contains("bob is master at epoch 2, but alice did not rejoin"),
        "{stdout}{stderr}"
    );
    fo.expect_lock("master=bob epoch=2")
        .unwrap_or_else(|e| panic!("{e}\n{}", fo.logs()));
    assert_eq!(fo.www(), "192.0.2.2");
}

/// Waits until the writer has committed `more` rows past what it had.
fn writes_go_on(writer: &Writer, more: usize, fo: &Fo) {
    let had = writer.committed().len();
    eventually(&format!("{more} more rows committed"), WITHIN, || {
        let now = writer.committed().len();
        (now >= had + more)
            .then_some(())
            .ok_or_else(|| format!("{} rows after {had}\n{}", now, fo.logs()))
    });
}

/// Every committed row is in `rows` (the numbers a server holds), none twice.
fn none_lost(commits: &[Commit], rows: &str) {
    let held: BTreeSet<u64> = rows.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let lost: Vec<u64> = commits
        .iter()
        .map(|c| c.n)
        .filter(|n| !held.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} committed rows lost: {lost:?}",
        lost.len(),
        commits.len()
    );
    assert_eq!(rows.lines().count(), held.len(), "a row held twice");
}

/// One switchover of the site to `to` with the writer writing throughout: every row
/// committed so far is on the new master; the longest write gap.
fn switch(fo: &Fo, writer: &Writer, to: &str, epoch: i64, www: &str) -> (Duration, Duration) {
    writes_go_on(writer, 20, fo);
    let t = Instant::now();
    let (code, out) = promote(fo, to, &[]);
    let took = t.elapsed();
    assert_eq!(code, 0, "{out}\n{}", fo.logs());
    eprintln!("switchover to {to} took {took:?}:\n{out}");
    settled(fo, to, epoch, www);
    writes_go_on(writer, 20, fo);
    let commits = writer.committed();
    let during: Vec<Commit> = commits.iter().filter(|c| c.at >= t).cloned().collect();
    (Writer::longest_gap(&during), took)
}

#[test]
fn postgres_switchover_and_back_lose_no_committed_row() {
    let test = "postgres_switchover_and_back_lose_no_committed_row";
    if !needs_postgres(test) {
        return;
    }
    let (fo, servers, a_data, b_data) = postgres_pair(test);
    let (alice, bob) = (fo.alice.clone(), fo.bob.clone());

    // The dry run changes nothing: the stores, the DNS, the databases' roles.
    let before = (role(&fo, "alice"), role(&fo, "bob"), fo.www());
    let (code, out) = promote(&fo, "bob", &["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok    database: app replicating"), "{out}");
    assert!(
        out.contains("3. databases caught up to alice's final positions (within 120 s): app"),
        "{out}"
    );
    assert_eq!(before, (role(&fo, "alice"), role(&fo, "bob"), fo.www()));
    fo.expect_lock("master=alice epoch=1").unwrap();
    assert_eq!(
        servers.psql(&fo.lab, &bob, &b_data, "SELECT pg_is_in_recovery()"),
        "t"
    );

    let writer = Writer::start(vec![
        servers.psql_argv(&a_data, "app"),
        servers.psql_argv(&b_data, "app"),
    ]);
    let (gap, _) = switch(&fo, &writer, "bob", 2, "192.0.2.2");
    eprintln!("PostgreSQL switchover: longest write gap {gap:?}");
    // Every committed row is on bob; alice streams from bob.
    none_lost(
        &writer.committed(),
        &servers.psql_on(&fo.lab, &bob, &b_data, "app", "SELECT n FROM t"),
    );
    let streaming = "SELECT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')";
    assert_eq!(servers.psql(&fo.lab, &alice, &a_data, streaming), "t");
    // A clean switchover leaves nothing to rewind: no copy of alice's data was needed.
    let kept = fo.pair.alice.join("state/diverged").join(SITE);
    let copies: Vec<_> = std::fs::read_dir(&kept)
        .into_iter()
        .flatten()
        .flatten()
        .map(|stamp| stamp.path().join("pgdata-app"))
        .filter(|p| p.exists())
        .collect();
    assert!(
        copies.is_empty(),
        "alice's data was copied aside: {copies:?}"
    );

    // The switchback.
    let (gap, _) = switch(&fo, &writer, "alice", 3, "192.0.2.1");
    eprintln!("PostgreSQL switchback: longest write gap {gap:?}");
    let commits = writer.stop();
    none_lost(
        &commits,
        &servers.psql_on(&fo.lab, &alice, &a_data, "app", "SELECT n FROM t"),
    );
    assert_eq!(servers.psql(&fo.lab, &bob, &b_data, streaming), "t");
    let last = commits.last().unwrap().n.to_string();
    eventually("bob has every row", WITHIN, || {
        let got = servers.try_psql_on(&fo.lab, &bob, &b_data, "app", "SELECT max(n) FROM t")?;
        (got == last).then_some(()).ok_or(got)
    });

    // A promote step fails on bob after its database was promoted: alice's database is
    // started again and serves, bob's is stopped, rewound and follows her again.
    std::fs::write(fo.pair.bob.join("state/fail-promote"), "").unwrap();
    let (code, out) = promote(&fo, "bob", &[]);
    assert_eq!(code, 1, "{out}\n{}", fo.logs());
    for line in [
        "4. FAILED: promote playbook mark failed",
        "undo: alice's promote playbooks (it serves again)",
        "undo: demote and rejoin playbooks here (bob follows alice again)",
        "postgres-rejoin ok",
        "switchover of alice-web stopped at step 4",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    settled(&fo, "alice", 3, "192.0.2.1");
    let count = commits.len() + 1;
    servers.psql_on(
        &fo.lab,
        &alice,
        &a_data,
        "app",
        &format!("INSERT INTO t VALUES ({count}000000)"),
    );
    assert_eq!(servers.psql(&fo.lab, &bob, &b_data, streaming), "t");
    eventually("bob follows alice's writes again", WITHIN, || {
        let got = servers.try_psql_on(&fo.lab, &bob, &b_data, "app", "SELECT count(*) FROM t")?;
        (got == count.to_string()).then_some(()).ok_or(got)
    });
    drop(fo);
    drop(servers);
}

#[test]
fn mariadb_switchover_and_back_lose_no_committed_row() {
    let test = "mariadb_switchover_and_back_lose_no_committed_row";
    if !needs(test) || !orch_tests::prerequisites(test, true, dbserver::MARIADB_PROGRAMS) {
        return;
    }
    let (fo, servers, a_data, b_data) = mariadb_pair(test);
    let (alice, bob) = (fo.alice.clone(), fo.bob.clone());
    let rows = |host, dir| servers.mariadb(&fo.lab, host, dir, "SELECT n FROM app.t");
    let replicating = |host, dir| {
        let got = servers.mariadb(
            &fo.lab,
            host,
            dir,
            "SELECT @@read_only, (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Slave_IO')",
        );
        assert_eq!(got, "1\t1", "read-only and replicating");
    };

    // The dry run changes nothing.
    let (code, out) = promote(&fo, "bob", &["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    eprintln!("{out}");
    assert!(out.contains("ok    database: app replicating"), "{out}");
    fo.expect_lock("master=alice epoch=1").unwrap();
    assert_eq!(role(&fo, "bob"), ("standby".into(), 1));
    replicating(&bob, &b_data);

    let writer = Writer::start(vec![
        servers.mariadb_argv(&a_data, "app", "app", APP_PW),
        servers.mariadb_argv(&b_data, "app", "app", APP_PW),
    ]);
    let (gap, _) = switch(&fo, &writer, "bob", 2, "192.0.2.2");
    eprintln!("MariaDB switchover: longest write gap {gap:?}");
    none_lost(&writer.committed(), &rows(&bob, &b_data));
    replicating(&alice, &a_data);

    let (gap, _) = switch(&fo, &writer, "alice", 3, "192.0.2.1");
    eprintln!("MariaDB switchback: longest write gap {gap:?}");
    let commits = writer.stop();
    none_lost(&commits, &rows(&alice, &a_data));
    replicating(&bob, &b_data);
    let last = commits.last().unwrap().n.to_string();
    eventually("bob has every row", WITHIN, || {
        let got = servers.mariadb(&fo.lab, &bob, &b_data, "SELECT MAX(n) FROM app.t");
        (got == last).then_some(()).ok_or(got)
    });
    drop(fo);
    drop(servers);
}

/// A pair in the failover lab whose site has a PostgreSQL database: alice's primary
/// streaming to bob's standby through the tunnel, table `t (n)` in database `app`, bob's
/// check healthy. The site's promote list ends with [`FAILS_WHEN_ASKED`]. Returns the
/// pair, the servers and the two data folders.
pub(crate) fn postgres_pair(test: &str) -> (Fo, Servers, PathBuf, PathBuf) {
    const ORCH_PW: &str = "orch-db-pw-5e1f";
    const REPL_PW: &str = "repl-pw-77a0";
    let mut servers = Servers::new();
    let (a_data, b_data) = (servers.dir().join("pg-alice"), servers.dir().join("pg-bob"));
    let password = servers.dir().join("db.pass");
    write_secret(&password, ORCH_PW);
    let mut fo = Fo::new(
        test,
        Case {
            // `mark` after the database's promote: it fails where `fail-promote` is.
            promote: FAILS_WHEN_ASKED,
            lists: "promote = [\"postgres-promote\", \"mark\"]\ndemote = [\"postgres-demote\"]\n\
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
    servers.postgres_primary(&mut fo.lab, &alice, "198.51.100.1", ORCH_PW, REPL_PW);
    servers.postgres_standby(&mut fo.lab, &bob, "198.51.100.1", "198.51.100.2", REPL_PW);
    let dir = fo.lab.dir().to_owned();
    dbserver::systemctl_for_postgres(&dir.join("alice-bin"), &a_data);
    dbserver::systemctl_for_postgres(&dir.join("bob-bin"), &b_data);
    servers.psql_on(
        &fo.lab,
        &alice,
        &a_data,
        "app",
        "CREATE TABLE t (n bigint PRIMARY KEY)",
    );
    db_healthy(&fo);

    (fo, servers, a_data, b_data)
}

/// The application's MariaDB user: read_only stops it (orch's own user, with SUPER, may
/// write regardless).
const APP_PW: &str = "app-pw-13f7";

/// A pair in the failover lab whose site has a MariaDB database: alice's primary
/// replicating to bob's read-only replica by GTID through the tunnel, table `app.t (n)`
/// and user `app`, bob's check healthy. Returns the pair, the servers and the two data
/// folders.
fn mariadb_pair(test: &str) -> (Fo, Servers, PathBuf, PathBuf) {
    const ORCH_PW: &str = "orch-db-pw-c41d";
    const REPL_PW: &str = "repl-pw-9b0e";
    let mut servers = Servers::new();
    let password = servers.dir().join("db.pass");
    write_secret(&password, ORCH_PW);
    let mut fo = Fo::new(
        test,
        Case {
            lists: "promote = [\"mariadb-promote\"]\ndemote = [\"mariadb-demote\"]\n\
                    rejoin = [\"mariadb-rejoin\"]\n",
            extra: format!(
                "\n[[sites.alice-web.database]]\nname = \"app\"\nkind = \"mysql\"\n\
                 url = \"mysql://orch@{{node}}:3306/app\"\npassword_file = \"{}\"\n\
                 interval = \"2s\"\nheartbeat = false\n",
                password.display(),
            ),
            ..Case::default()
        },
    );
    let (alice, bob) = (fo.alice.clone(), fo.bob.clone());
    let a_data = servers.mariadb_primary(&mut fo.lab, &alice, "198.51.100.1", ORCH_PW, REPL_PW);
    let b_data =
        servers.mariadb_replica(&mut fo.lab, &bob, "198.51.100.1", "198.51.100.2", REPL_PW);
    servers.mariadb(
        &fo.lab,
        &alice,
        &a_data,
        &format!(
            "CREATE TABLE app.t (n BIGINT PRIMARY KEY); \
             CREATE USER 'app'@'localhost' IDENTIFIED BY '{APP_PW}'; \
             GRANT SELECT, INSERT ON app.* TO 'app'@'localhost';"
        ),
    );
    db_healthy(&fo);
    (fo, servers, a_data, b_data)
}

/// Bob's check of the site's database is healthy.
fn db_healthy(fo: &Fo) {
    db_verdict(fo, "healthy");
}

/// Waits until bob's check of the site's database has the verdict `want`.
pub(crate) fn db_verdict(fo: &Fo, want: &str) {
    eventually(
        &format!("bob's check of the database is {want}"),
        WITHIN,
        || {
            let s = orch::status_json(&fo.pair.config("bob"))?;
            let db = &s["databases"][0];
            (db["verdict"] == want)
                .then_some(())
                .ok_or_else(|| format!("{db:#}"))
        },
    );
}

/// `bench/failover`, the switchover part: on PostgreSQL and on MariaDB, a writer commits
/// numbered rows while the site switches over RUNS times (default 3, alternately to bob
/// and back); per run the longest gap between two commits and the whole `orch promote`.
/// No committed row may be lost. Prints a markdown table.
#[test]
#[ignore = "a benchmark: bench/failover runs it"]
fn bench_switchover() {
    let test = "bench_switchover";
    let programs = dbserver::pg_programs();
    let mut needed: Vec<&str> = programs.iter().map(String::as_str).collect();
    needed.extend_from_slice(dbserver::MARIADB_PROGRAMS);
    if !needs(test) || !orch_tests::prerequisites(test, true, &needed) {
        return;
    }
    let runs: i64 = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut table = Vec::new();
    for engine in ["PostgreSQL", "MariaDB"] {
        let (fo, servers, a_data, b_data) = if engine == "PostgreSQL" {
            postgres_pair(test)
        } else {
            mariadb_pair(test)
        };
        let argv = |dir: &PathBuf| {
            if engine == "PostgreSQL" {
                servers.psql_argv(dir, "app")
            } else {
                servers.mariadb_argv(dir, "app", "app", APP_PW)
            }
        };
        let writer = Writer::start(vec![argv(&a_data), argv(&b_data)]);
        for run in 0..runs {
            let (to, www) = if run % 2 == 0 {
                ("bob", "192.0.2.2")
            } else {
                ("alice", "192.0.2.1")
            };
            let (gap, took) = switch(&fo, &writer, to, run + 2, www);
            table.push((engine, run + 1, to, gap, took));
        }
        let commits = writer.stop();
        let (host, dir) = if runs % 2 == 1 {
            (&fo.bob, &b_data)
        } else {
            (&fo.alice, &a_data)
        };
        let rows = if engine == "PostgreSQL" {
            servers.psql_on(&fo.lab, host, dir, "app", "SELECT n FROM t")
        } else {
            servers.mariadb(&fo.lab, host, dir, "SELECT n FROM app.t")
        };
        none_lost(&commits, &rows);
        eprintln!("{engine}: {} rows committed, none lost", commits.len());
        drop(fo);
        drop(servers);
    }
    println!("| database | run | to | write gap | `orch promote` | target (gap ≤ 10 s) |");
    println!("|---|---|---|---|---|---|");
    for (engine, run, to, gap, took) in &table {
        println!(
            "| {engine} | {run} | {to} | {:.2} s | {:.2} s | {} |",
            gap.as_secs_f64(),
            took.as_secs_f64(),
            if gap.as_secs_f64() <= 10.0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
}

/// A site without DNS (`bob-cloud` in the plain pair: a sync job, no records): the
/// switchover moves the roles only, on both nodes, and the pushes follow.
#[test]
fn a_site_without_dns_switches_over_its_roles() {
    let test = "a_site_without_dns_switches_over_its_roles";
    if !orch_tests::prerequisites(test, true, &["ip", "ping"]) {
        return;
    }
    let mut lab = orch_tests::lab::Lab::new(test);
    let dir = lab.dir().to_owned();
    let (a_www, b_www) = (dir.join("alice-files"), dir.join("bob-files"));
    let pair = orch_tests::fixture::Pair::new(
        &dir,
        &format!(
            "\n[[sites.bob-cloud.sync]]\nname = \"files\"\nschedule = \"0 3 * * *\"\n\
             path = {{ alice = \"{}\", bob = \"{}\" }}\n",
            a_www.display(),
            b_www.display()
        ),
    );
    std::fs::create_dir_all(&a_www).unwrap();
    std::fs::create_dir_all(&b_www).unwrap();
    std::fs::write(b_www.join("notes.txt"), "bob's notes\n").unwrap();
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    pair.spawn_agents(&mut lab, &[alice.clone(), bob.clone()]);
    eventually("the tunnel comes up", WITHIN, || {
        lab.ping(&alice, "198.51.100.2")
    });
    let run = |node: &str, args: &[&str]| {
        let config = pair.config(node);
        let mut argv = vec!["--config", config.to_str().unwrap()];
        argv.extend_from_slice(args);
        let out = orch::run(&argv);
        let (stdout, stderr) = orch::text(&out);
        (orch::code(&out), format!("{stdout}{stderr}"))
    };
    let site_role = |node: &str| {
        let s = orch::status_json(&pair.config(node)).unwrap();
        let site = s["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "bob-cloud")
            .unwrap()
            .clone();
        (
            site["role"].as_str().unwrap().to_owned(),
            site["epoch"].as_i64().unwrap(),
        )
    };
    eventually("alice's agent answers bob's", WITHIN, || {
        let (code, out) = run("alice", &["promote", "bob-cloud", "--dry-run"]);
        (code == 0).then_some(()).ok_or(out)
    });
    let (code, out) = run("alice", &["promote", "bob-cloud"]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "ok    DNS: none configured for bob-cloud (no dns or records): only the roles move",
        "1. final push: ok",
        "5. no DNS configured: nothing to swap",
        "6. epoch 2 here: ok; alice is master of bob-cloud",
        "7. bob follows alice: ok",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    // The file pushed last is on alice; both stores agree; alice's pushes now go to bob.
    assert_eq!(
        std::fs::read_to_string(a_www.join("notes.txt")).unwrap(),
        "bob's notes\n"
    );
    assert_eq!(site_role("alice"), ("master".into(), 2));
    eventually("bob follows at epoch 2", WITHIN, || {
        let r = site_role("bob");
        (r == ("standby".to_owned(), 2))
            .then_some(())
            .ok_or_else(|| format!("{r:?}"))
    });
    std::fs::write(a_www.join("later.txt"), "alice's, later\n").unwrap();
    let (code, out) = run("alice", &["push", "bob-cloud"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(b_www.join("later.txt")).unwrap(),
        "alice's, later\n"
    );
    let (code, out) = run("bob", &["push", "bob-cloud"]);
    assert_eq!(code, 1, "bob is not master any more: {out}");
}
