//! `orch promote SITE`, the planned switchover, end to end in the failover lab (real
//! agents and tunnel, BIND holding the records and the lock, SMTP): the dry run changes
//! nothing; the switchover moves the site with the files pushed last; the switchback
//! returns it; a failing promote step leaves the old master serving.

use super::failover::{needs, Case, Fo};
use orch_tests::{eventually, orch};
use std::time::Duration;

const SITE: &str = "alice-web";
const WITHIN: Duration = Duration::from_secs(60);

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
    let fo = Fo::new(
        test,
        Case {
            promote: "[[step]]\nname = \"mark\"\n\
                      shell = \"test ! -e {state_dir}/fail-promote && echo {epoch} >> {state_dir}/promoted\"\n",
            ..Case::default()
        },
    );
    let dir = fo.lab.dir().to_owned();

    // The dry run: every check and step, nothing changed.
    let (code, out) = promote(&fo, "bob", &["--dry-run"]);
    assert_eq!(code, 0, "{out}\n{}", fo.logs());
    for line in [
        "switchover of alice-web: alice → bob (epoch 1 → 2), dry run",
        "ok    tunnel up: last handshake",
        "ok    peer agent answers: alice answers",
        "alice: demote playbook demoted valid, 1 step(s)",
        "alice: final push (dry run) of www:",
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
    assert_eq!(fo.noted("alice", "demoted"), ["1", "3"]);
    assert_eq!(
        fo.promoted("alice"),
        ["3", "3"],
        "her promote ran again to undo"
    );
    // Alice is not fenced: her pushes go out again.
    let out = fo.orch("alice", &["push", SITE]);
    assert_eq!(orch::code(&out), 0, "{:?}\n{}", orch::text(&out), fo.logs());
}
