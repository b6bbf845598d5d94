//! Pushes end to end over the real tunnel: every kind of entry round-trips exactly; a
//! kill -9 of either agent mid-push never shows a half-written file and the next push
//! completes the replica with no temp file left; a hostile sender speaking the protocol
//! writes nothing outside the target; the max_delete, empty-source, missing-source and
//! other-filesystem guards refuse; diverged data is kept after a role change.

use orch_tests::fixture::Pair;
use orch_tests::lab::{Host, Lab};
use orch_tests::{eventually, orch, prerequisites};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

fn orch_in(lab: &Lab, host: &Host, config: &Path, args: &[&str]) -> Output {
    let mut argv = vec![
        orch::bin().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    argv.extend_from_slice(args);
    lab.run(host, &argv)
}

/// An independent description of a tree: per path its kind, mode, owner, mtime (ns),
/// size, content digest or link target, and hard-link group (the first path of its inode).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn visit(root: &Path, rel: &str, out: &mut Vec<(String, std::fs::Metadata)>) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = std::fs::symlink_metadata(root.join(&path)).unwrap();
            if m.is_dir() {
                visit(root, &path, out);
            }
            out.push((path, m));
        }
    }
    let mut all = Vec::new();
    visit(root, "", &mut all);
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut first: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (path, m) in all {
        let what = if m.file_type().is_symlink() {
            format!(
                "-> {}",
                std::fs::read_link(root.join(&path)).unwrap().display()
            )
        } else if m.is_file() {
            let data = std::fs::read(root.join(&path)).unwrap();
            let mut h: u64 = 0xcbf29ce484222325;
            for b in &data {
                h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
            }
            let group = if m.nlink() > 1 {
                first.entry(m.ino()).or_insert_with(|| path.clone()).clone()
            } else {
                String::new()
            };
            format!("{} bytes {h:x} {group}", data.len())
        } else {
            "dir".into()
        };
        let mode = if m.file_type().is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.insert(
            path,
            format!(
                "{mode:o} {}:{} {}.{} {what}",
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            ),
        );
    }
    out
}

/// Asserts two snapshots are equal, naming only the entries that differ.
#[track_caller]
fn assert_same(got: &BTreeMap<String, String>, want: &BTreeMap<String, String>, what: &str) {
    let mut diff = Vec::new();
    for k in got
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if got.get(k) != want.get(k) {
            diff.push(format!("{k}: got {:?}, want {:?}", got.get(k), want.get(k)));
        }
    }
    assert!(
        diff.is_empty(),
        "{what}: {} entries differ:\n{}",
        diff.len(),
        diff.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn temps(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(".orch-tmp-") {
                found.push(p.display().to_string());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                found.extend(temps(&p));
            }
        }
    }
    found
}

fn random(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b
}

fn set_mtime(p: &Path, secs: u64, nanos: u32) {
    let t = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A tree with every kind of entry push must carry.
fn every_kind(r: &Path) {
    std::fs::create_dir_all(r.join("site/empty")).unwrap();
    std::fs::create_dir_all(r.join("private")).unwrap();
    std::fs::write(r.join("site/index.html"), b"<h1>hello</h1>\n").unwrap();
    std::fs::write(r.join("site/empty-file"), b"").unwrap();
    std::fs::write(r.join("site/big.bin"), random(3 << 20)).unwrap();
    std::fs::write(r.join("private/secret"), b"s3cret").unwrap();
    std::fs::write(r.join("skip.tmp"), b"excluded").unwrap();
    std::fs::hard_link(r.join("site/index.html"), r.join("index-link")).unwrap();
    std::os::unix::fs::symlink("../site/index.html", r.join("private/rel-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", r.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("nowhere", r.join("dangling")).unwrap();
    std::fs::set_permissions(r.join("private"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    std::fs::set_permissions(
        r.join("private/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::lchown(r.join("private/secret"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(r.join("abs-link"), Some(4321), Some(8765)).unwrap();
    set_mtime(&r.join("site/empty-file"), 1_600_000_000, 123_456_789);
}

struct Setup {
    lab: Lab,
    pair: Pair,
    alice: Host,
    bob: Host,
    agents: [usize; 2],
    src: PathBuf,
    dst: PathBuf,
}

fn setup(test: &str, job_extra: &str) -> Option<Setup> {
    if !prerequisites(test, true, &["ip", PYTHON]) {
        return None;
    }
    let mut lab = Lab::new(test);
    let dir = lab.dir().to_owned();
    let (src, dst) = (dir.join("alice-www"), dir.join("bob-www"));
    std::fs::create_dir_all(&src).unwrap();
    let pair = Pair::new(
        &dir,
        &format!(
            r#"
[[sites.alice-web.sync]]
name = "www"
schedule = "0 3 * * *"
path = {{ alice = "{a}", bob = "{b}" }}
exclude = ["*.tmp"]
{job_extra}
"#,
            a = src.display(),
            b = dst.display(),
        ),
    );
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    let agents = pair.spawn_agents(&mut lab, &[alice.clone(), bob.clone()]);
    let s = Setup {
        lab,
        pair,
        alice,
        bob,
        agents,
        src,
        dst,
    };
    s.both_up();
    Some(s)
}

impl Setup {
    fn both_up(&self) {
        eventually(
            "both agents see the tunnel and each other",
            Duration::from_secs(40),
            || {
                for conf in [self.pair.config("alice"), self.pair.config("bob")] {
                    let s = orch::status_json(&conf)?;
                    if s["tunnel"]["up"] != true || s["peer"]["reachable"] != true {
                        return Err(format!(
                            "{:#}\n{:#}\nalice: {}\nbob: {}",
                            s["tunnel"],
                            s["peer"],
                            self.lab.log("agent-alice"),
                            self.lab.log("agent-bob")
                        ));
                    }
                }
                Ok(())
            },
        );
    }

    fn push(&self, args: &[&str]) -> (i32, String) {
        let mut argv = vec!["push", "alice-web"];
        argv.extend_from_slice(args);
        let out = orch_in(&self.lab, &self.alice, &self.pair.config("alice"), &argv);
        let (o, e) = orch::text(&out);
        (orch::code(&out), format!("{o}{e}"))
    }

    fn push_ok(&self, args: &[&str]) -> String {
        let (code, out) = self.push(args);
        assert_eq!(
            code,
            0,
            "orch push {args:?}:\n{out}\nbob: {}",
            self.lab.log("agent-bob")
        );
        out
    }

    fn restart(&mut self, node: &str) {
        let (i, host) = if node == "alice" {
            (0, self.alice.clone())
        } else {
            (1, self.bob.clone())
        };
        self.agents[i] = self.pair.spawn_agent(&mut self.lab, &host, node);
        self.both_up();
    }
}

#[test]
fn pushes_replicate_every_kind_and_survive_kill_9_of_either_agent() {
    let Some(mut s) = setup(
        "pushes_replicate_every_kind_and_survive_kill_9_of_either_agent",
        "",
    ) else {
        return;
    };
    every_kind(&s.src);

    // A dry run lists and changes nothing.
    let out = s.push_ok(&["--dry-run"]);
    assert!(
        out.contains("+ site/big.bin (3.1 MB)") || out.contains("+ site/big.bin ("),
        "{out}"
    );
    assert!(out.contains("dry run:"), "{out}");
    assert!(
        !s.dst.exists() || snapshot(&s.dst).is_empty(),
        "a dry run wrote something"
    );

    let out = s.push_ok(&[]);
    assert!(out.contains("alice-web/www: ok:"), "{out}");
    let mut want = snapshot(&s.src);
    want.remove("skip.tmp");
    assert_same(
        &snapshot(&s.dst),
        &want,
        "the replica equals the source (bar excludes)",
    );

    // A second push changes nothing and sends almost nothing.
    let out = s.push_ok(&[]);
    assert!(out.contains(" 0 changed, "), "{out}");
    let status = orch::status_json(&s.pair.config("alice")).unwrap();
    let runs = &status["sites"][0]["pushes"];
    assert_eq!(runs[0]["job"], "www", "{status:#}");
    assert!(runs[0]["bytes_sent"].as_i64().unwrap() < 2000, "{runs:#}");
    let history = orch_in(
        &s.lab,
        &s.alice,
        &s.pair.config("alice"),
        &["history", "alice-web"],
    );
    assert!(
        orch::text(&history).0.contains("push alice-web/www: ok"),
        "{:?}",
        orch::text(&history)
    );

    // Kill -9 either agent mid-push: no half file is ever visible, and the next push
    // completes the replica with no temp file left.
    for (round, victim) in ["bob", "alice"].into_iter().enumerate() {
        let data = s.src.join(format!("data{round}"));
        std::fs::create_dir_all(&data).unwrap();
        for i in 0..1500 {
            std::fs::write(data.join(format!("f{i:04}")), random(40_000 + i * 7)).unwrap();
        }
        let mut cmd = std::process::Command::new(orch::bin());
        cmd.arg("--config")
            .arg(s.pair.config("alice"))
            .args(["push", "alice-web"]);
        let pusher = s.lab.spawn(&s.alice, &format!("push-{victim}"), cmd);
        // Watch the replica: every file visible under its own name is whole.
        let replica = s.dst.join(format!("data{round}"));
        let start = Instant::now();
        let mut half = Vec::new();
        let mut seen = 0;
        while start.elapsed() < Duration::from_secs(60) {
            let names: Vec<_> = std::fs::read_dir(&replica)
                .map(|rd| rd.flatten().collect())
                .unwrap_or_default();
            for e in &names {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".orch-tmp-") {
                    continue;
                }
                let got = std::fs::read(e.path()).unwrap_or_default();
                let want = std::fs::read(data.join(&name)).unwrap();
                if got != want && e.path().exists() {
                    half.push(name);
                }
            }
            seen = names.len();
            if seen > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            seen > 0,
            "the push never reached bob: {}",
            s.lab.log(&format!("push-{victim}"))
        );
        let index = if victim == "alice" {
            s.agents[0]
        } else {
            s.agents[1]
        };
        s.lab
            .proc(index)
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
            .unwrap();
        let partial = std::fs::read_dir(&replica)
            .map(|rd| rd.count())
            .unwrap_or(0);
        assert!(half.is_empty(), "half-written files visible: {half:?}");
        // The dead agent took its end of the tunnel along: the survivor notices through
        // TCP keepalive and user timeout (or a reset once the tunnel is back).
        s.restart(victim);
        let lab = &mut s.lab;
        let exit = eventually(
            "the interrupted orch push ends",
            Duration::from_secs(60),
            || {
                lab.proc(pusher)
                    .try_wait()
                    .ok_or_else(|| "still running".to_string())
            },
        );
        assert!(
            !exit.success(),
            "the push finished before {victim} was killed: not a mid-push kill"
        );
        let out = s.push_ok(&[]);
        assert!(out.contains("alice-web/www: ok:"), "{out}");
        let mut want = snapshot(&s.src);
        want.remove("skip.tmp");
        assert_same(
            &snapshot(&s.dst),
            &want,
            &format!("after kill -9 of {victim} ({partial} entries were there)"),
        );
        assert_eq!(temps(&s.dst), Vec::<String>::new(), "temp files left");
    }
    progress_on_a_terminal(&s);
}

/// `orch push` on a terminal draws a progress bar, then prints its summary.
fn progress_on_a_terminal(s: &Setup) {
    let data = s.src.join("data-tty");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..1500 {
        std::fs::write(data.join(format!("f{i:04}")), random(40_000 + i * 3)).unwrap();
    }
    let cmd = format!(
        "{} --config {} push alice-web",
        orch::bin().display(),
        s.pair.config("alice").display()
    );
    // script(1) gives the command a pseudo-terminal and copies what it shows.
    let out = s.lab.run(&s.alice, &["script", "-qec", &cmd, "/dev/null"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("alice-web/www [") && shown.contains(" steps, "),
        "no progress bar: {shown}"
    );
    assert!(shown.contains("alice-web/www: ok: "), "no summary: {shown}");
}

/// A hostile sender on alice's tunnel address, speaking the protocol (tools/hostilepush.py).
#[test]
fn a_hostile_sender_writes_nothing_outside_the_target() {
    // bob-cloud gets a job too, so that "not the master" is what refuses it.
    let extra = format!(
        "max_delete = \"10\"\n\n[[sites.bob-cloud.sync]]\nname = \"www\"\nschedule = \"0 3 * * *\"\npath = \"{}\"\n",
        std::env::temp_dir().join("orch-never-used").display()
    );
    let Some(s) = setup("a_hostile_sender_writes_nothing_outside_the_target", &extra) else {
        return;
    };
    std::fs::write(s.src.join("f"), b"x").unwrap();
    s.push_ok(&[]);
    let outside = s.lab.dir().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let tool = format!("{}/tools/hostilepush.py", env!("CARGO_MANIFEST_DIR"));
    let out = s.lab.run(
        &s.alice,
        &[
            PYTHON,
            &tool,
            "198.51.100.2:7440",
            outside.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = orch::text(&out);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\nbob: {}",
        s.lab.log("agent-bob")
    );
    for want in [
        "dotdot: refused",
        "absolute: refused",
        "nul: refused",
        "through-symlink: not written",
        "oversized: refused",
        "not-master: refused",
        "stale-epoch: refused",
        "unknown-job: refused",
    ] {
        assert!(stdout.contains(want), "{want}\n{stdout}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
    assert!(!s.lab.dir().join("pwned").exists());
    // The real master still pushes.
    s.push_ok(&[]);
    assert_eq!(std::fs::read(s.dst.join("f")).unwrap(), b"x");
}

/// A mount inside the agent (pid)'s mount namespace, unmounted on drop.
struct Mount(String, PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nsenter")
            .args(["-t", &self.0, "-m", "umount", "-l"])
            .arg(&self.1)
            .status();
    }
}

#[test]
fn guards_refuse_and_diverged_data_is_kept_after_a_role_change() {
    let Some(mut s) = setup(
        "guards_refuse_and_diverged_data_is_kept_after_a_role_change",
        "max_delete = \"25%\"",
    ) else {
        return;
    };
    for i in 0..8 {
        std::fs::write(s.src.join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    s.push_ok(&[]);
    let before = snapshot(&s.dst);

    // max_delete: 3 of 8 is over 25%.
    for i in 0..3 {
        std::fs::remove_file(s.src.join(format!("f{i}"))).unwrap();
    }
    let (code, out) = s.push(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused") && out.contains("would delete 3 entries"),
        "{out}"
    );
    assert_same(
        &snapshot(&s.dst),
        &before,
        "a refused push changed the replica",
    );
    let status = orch::status_json(&s.pair.config("alice")).unwrap();
    assert_eq!(
        status["sites"][0]["pushes"][0]["outcome"], "fail",
        "{status:#}"
    );
    s.push_ok(&["--force"]);
    assert!(!s.dst.join("f0").exists());
    let before = snapshot(&s.dst);

    // The source emptied (an unmounted disk leaves an empty mount point).
    let aside = s.lab.dir().join("aside");
    std::fs::rename(&s.src, &aside).unwrap();
    std::fs::create_dir(&s.src).unwrap();
    let (code, out) = s.push(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the source is empty"), "{out}");
    // The source missing altogether.
    std::fs::remove_dir(&s.src).unwrap();
    let (code, out) = s.push(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot be read"), "{out}");
    // Another filesystem mounted there, with the same files. `ip netns exec` gave the
    // agent a mount namespace of its own: mount inside it.
    std::fs::create_dir(&s.src).unwrap();
    let pid = s.lab.proc(s.agents[0]).pid().to_string();
    let in_agent = |cmd: &str| {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &pid, "-m", "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (src, aside_s) = (s.src.display().to_string(), aside.display().to_string());
    in_agent(&format!(
        "mount -t tmpfs tmpfs '{src}' && cp -a '{aside_s}/.' '{src}/'"
    ));
    let mount = Mount(pid.clone(), s.src.clone());
    let (code, out) = s.push(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("another filesystem"), "{out}");
    drop(mount);
    std::fs::remove_dir(&s.src).unwrap();
    std::fs::rename(&aside, &s.src).unwrap();
    assert_same(
        &snapshot(&s.dst),
        &before,
        "no guard let the replica change",
    );
    s.push_ok(&[]);

    // A role change: bob becomes master of alice-web under epoch 2 (as a failover
    // records it in both state stores). Alice's copy held edits bob never saw.
    std::fs::write(s.src.join("f5"), "edited on alice after the last push").unwrap();
    std::fs::write(s.src.join("only-on-alice"), "new on alice").unwrap();
    std::fs::write(s.dst.join("new-on-bob"), "bob's new file").unwrap();
    for (i, node) in [(0usize, "alice"), (1, "bob")] {
        s.lab
            .proc(s.agents[i])
            .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
            .unwrap();
        let dir = if node == "alice" {
            &s.pair.alice
        } else {
            &s.pair.bob
        };
        let db = dir.join("state/state.db");
        let sql = "UPDATE site_state SET master = 'bob', epoch = 2 WHERE site = 'alice-web'";
        let out = std::process::Command::new(PYTHON)
            .args(["-c", &format!("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"{sql}\"); c.commit()")])
            .arg(&db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.agents[0] = s.pair.spawn_agent(&mut s.lab, &s.alice.clone(), "alice");
    s.agents[1] = s.pair.spawn_agent(&mut s.lab, &s.bob.clone(), "bob");
    s.both_up();
    let (code, out) = s.push(&[]);
    assert_eq!(code, 1, "alice is no longer master: {out}");
    assert!(out.contains("is not the master"), "{out}");
    let out = orch_in(
        &s.lab,
        &s.bob,
        &s.pair.config("bob"),
        &["push", "alice-web"],
    );
    let (stdout, stderr) = orch::text(&out);
    assert_eq!(
        orch::code(&out),
        0,
        "{stdout}{stderr}\nalice: {}",
        s.lab.log("agent-alice")
    );
    assert!(stdout.contains("2 diverged kept"), "{stdout}");
    let kept = s.pair.alice.join("state/diverged/alice-web");
    let stamp = std::fs::read_dir(&kept)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read_to_string(stamp.join("f5")).unwrap(),
        "edited on alice after the last push"
    );
    assert_eq!(
        std::fs::read_to_string(stamp.join("only-on-alice")).unwrap(),
        "new on alice"
    );
    assert_eq!(
        std::fs::read_to_string(s.src.join("new-on-bob")).unwrap(),
        "bob's new file"
    );
    assert_same(
        &snapshot(&s.src),
        &snapshot(&s.dst),
        "alice now holds bob's copy",
    );
    let status = orch::status_json(&s.pair.config("bob")).unwrap();
    assert_eq!(status["sites"][0]["pushes"][0]["diverged"], 2, "{status:#}");
    // The next push diverges nothing.
    std::fs::write(s.dst.join("later"), "x").unwrap();
    let out = orch_in(
        &s.lab,
        &s.bob,
        &s.pair.config("bob"),
        &["push", "alice-web"],
    );
    assert!(
        !orch::text(&out).0.contains("diverged"),
        "{:?}",
        orch::text(&out)
    );
}

#[test]
fn a_watched_tree_is_pushed_on_change() {
    let Some(s) = setup("a_watched_tree_is_pushed_on_change", "watch = true") else {
        return;
    };
    std::fs::create_dir_all(s.src.join("new/dir")).unwrap();
    for i in 0..6 {
        std::fs::write(s.src.join(format!("new/other{i}")), b"x").unwrap();
    }
    std::fs::write(s.src.join("new/dir/page.html"), b"fresh").unwrap();
    eventually(
        "the change reaches bob",
        Duration::from_secs(20),
        || match std::fs::read(s.dst.join("new/dir/page.html")) {
            Ok(b) if b == b"fresh" => Ok(()),
            other => Err(format!("{other:?}\nalice: {}", s.lab.log("agent-alice"))),
        },
    );
    // A deletion follows too (1 of 8 entries: within max_delete).
    std::fs::remove_file(s.src.join("new/dir/page.html")).unwrap();
    eventually("the deletion reaches bob", Duration::from_secs(20), || {
        if s.dst.join("new/dir/page.html").exists() {
            Err("still there".into())
        } else {
            Ok(())
        }
    });
    let status = orch::status_json(&s.pair.config("alice")).unwrap();
    assert_eq!(
        status["sites"][0]["pushes"][0]["outcome"], "ok",
        "{status:#}"
    );
}

/// Both agents under a hard limit of 1024 open files (a small VPS, or a unit without
/// `LimitNOFILE`): a push of 1 200 directories of one file each still succeeds.
#[test]
fn a_push_of_many_directories_fits_in_1024_open_files() {
    let test = "a_push_of_many_directories_fits_in_1024_open_files";
    if !prerequisites(test, true, &["ip", "prlimit", PYTHON]) {
        return;
    }
    let mut lab = Lab::new(test);
    let dir = lab.dir().to_owned();
    let (src, dst) = (dir.join("alice-www"), dir.join("bob-www"));
    for i in 0..1200 {
        let d = src.join(format!("d{i:04}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("index.html"), format!("page {i}\n")).unwrap();
    }
    let pair = Pair::new(
        &dir,
        &format!(
            "\n[[sites.alice-web.sync]]\nname = \"www\"\nschedule = \"0 3 * * *\"\n\
             path = {{ alice = \"{}\", bob = \"{}\" }}\n",
            src.display(),
            dst.display()
        ),
    );
    let alice = lab.host("alice", &["192.0.2.1/24"]);
    let bob = lab.host("bob", &["192.0.2.2/24"]);
    for (host, node) in [(&alice, "alice"), (&bob, "bob")] {
        let mut cmd = std::process::Command::new("prlimit");
        cmd.arg("--nofile=1024:1024")
            .arg("--")
            .arg(orch::bin())
            .arg("--config")
            .arg(pair.config(node))
            .arg("agent");
        lab.spawn(host, &format!("agent-{node}"), cmd);
    }
    eventually("the agents see each other", Duration::from_secs(40), || {
        let s = orch::status_json(&pair.config("alice"))?;
        (s["peer"]["reachable"] == true)
            .then_some(())
            .ok_or_else(|| format!("{:#}", s["peer"]))
    });
    let out = orch_in(&lab, &alice, &pair.config("alice"), &["push", "alice-web"]);
    let (o, e) = orch::text(&out);
    assert_eq!(orch::code(&out), 0, "{o}{e}\nbob: {}", lab.log("agent-bob"));
    let held = (0..1200)
        .filter(|i| dst.join(format!("d{i:04}/index.html")).exists())
        .count();
    assert_eq!(held, 1200);
}

/// A hostile sender trying to make the receiver hold much (tools/hostilepush.py memory):
/// a delta of millions of tiny chunks is refused, 10 000 failures with 20 KiB reasons
/// (200 MB) are kept a few hundred bytes each; the receiving agent's peak RSS stays under
/// 200 MB.
#[test]
fn a_hostile_sender_cannot_fill_the_receivers_memory() {
    let Some(s) = setup("a_hostile_sender_cannot_fill_the_receivers_memory", "") else {
        return;
    };
    std::fs::write(s.src.join("f"), b"x").unwrap();
    s.push_ok(&[]);
    let tool = format!("{}/tools/hostilepush.py", env!("CARGO_MANIFEST_DIR"));
    let out = s.lab.run(
        &s.alice,
        &[PYTHON, &tool, "198.51.100.2:7440", "/nonexistent", "memory"],
    );
    let (stdout, stderr) = orch::text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("huge-delta: refused") && stdout.contains("delta parameters out of bounds"),
        "{stdout}"
    );
    assert!(stdout.contains("long-failures: answered"), "{stdout}");
    // The reasons reached the log cut and escaped.
    let log = s.lab.log("agent-bob");
    let failures = log.matches("Push: a file was not written").count();
    assert!(failures >= 10_000, "{failures} failures logged");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2000, "a log line of {longest} bytes");
    let status = orch::status_json(&s.pair.config("bob")).unwrap();
    let pid = status["agent"]["pid"].as_u64().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb: u64 = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!("bob's agent peak RSS: {} MB", peak_kb / 1024);
    assert!(peak_kb < 200 * 1024, "peak RSS {} MB", peak_kb / 1024);
}
