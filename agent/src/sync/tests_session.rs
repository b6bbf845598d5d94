//! Whole push sessions on loopback: the real sender against the real receiver, between
//! two temp directories.

use super::plan::Limit;
use super::recv::{self, Target};
use super::send::{self, Progress, Source};
use super::wire::{self, Open, ToReceiver};
use super::*;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

struct Pair {
    _t: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
    state: std::path::PathBuf,
    sent: Option<Manifest>,
    recv: Arc<Mutex<Option<Manifest>>>,
    diverge: bool,
    keep_setuid: bool,
}

impl Pair {
    fn new() -> Pair {
        let t = tempfile::tempdir().unwrap();
        let (src, dst, state) = (
            t.path().join("src"),
            t.path().join("dst"),
            t.path().join("state"),
        );
        fs::create_dir_all(&src).unwrap();
        Pair {
            _t: t,
            src,
            dst,
            state,
            sent: None,
            recv: Arc::new(Mutex::new(None)),
            diverge: false,
            keep_setuid: false,
        }
    }

    fn push_with(
        &mut self,
        force: bool,
        dry_run: bool,
        excludes: &[&str],
    ) -> (send::Sent, recv::Received) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Open {
            protocol: wire::SYNC_PROTOCOL,
            site: "s".into(),
            job: "j".into(),
            epoch: 1,
            generation: self.sent.as_ref().map(|m| m.generation.clone()),
            dry_run,
            force,
            root_meta: super::walk::root_meta(&self.src).ok(),
        };
        let target = Target {
            root: self.dst.clone(),
            diverged_base: self.state.join("diverged/s"),
            manifest: self.recv.lock().unwrap().clone().map(Arc::new),
            epoch: 1,
            diverge: self.diverge,
            keep_setuid: self.keep_setuid,
            // The receiver holds the job to the same rules as the sender (one config).
            max_delete: Limit::Percent(50.0),
            exclude: excludes.iter().map(|s| s.to_string()).collect(),
            reserve: recv::Reserve::Bytes(0),
            state_dir: None,
            idle: std::time::Duration::from_secs(60),
            stop: Arc::default(),
        };
        let keep = Arc::clone(&self.recv);
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            recv::receive(stream, &open, &target, &mut |m| {
                *keep.lock().unwrap() = Some(m);
                Ok(())
            })
        });
        let stream = TcpStream::connect(addr).unwrap();
        let x = Excludes::new(&excludes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let source = Source {
            root: &self.src,
            excludes: &x,
            manifest: self.sent.as_ref(),
            max_delete: Limit::Percent(50.0),
            force,
            dry_run,
        };
        let sent = send::push(stream, &source, &Progress::default());
        let received = server.join().unwrap();
        let sent = sent.unwrap();
        if let Some(m) = &sent.manifest {
            self.sent = Some(m.clone());
        }
        if sent.refused.is_some() || dry_run {
            return (sent, recv::Received::default());
        }
        let received = received.unwrap();
        self.check_receiver_manifest(&received.failed);
        (sent, received)
    }

    /// The receiver's manifest lists the replica as a walk does but for the files the
    /// push failed to write (however it was made: a walk after the push, or the paths the
    /// push touched looked at again), and every hash it holds is its file's.
    fn check_receiver_manifest(&self, failed: &[(String, String)]) {
        let Some(m) = self.recv.lock().unwrap().clone() else {
            return;
        };
        let mut w = walk::walk(&self.dst, None).unwrap();
        w.entries
            .retain(|(e, _)| !failed.iter().any(|(path, _)| *path == e.path));
        let listed: Vec<_> = m
            .entries
            .iter()
            .map(|(_, (e, s))| {
                let mut e = e.clone();
                e.hash = None;
                (e, *s)
            })
            .collect();
        assert_eq!(listed, w.entries, "the receiver's manifest against a walk");
        for (path, (e, _)) in &m.entries {
            if let Some(h) = e.hash {
                let (real, _) = walk::hash_file(&self.dst.join(path)).unwrap();
                assert_eq!(h, real, "{path}: the manifest's hash is not the file's");
            }
        }
    }

    fn push(&mut self) -> (send::Sent, recv::Received) {
        self.push_with(false, false, &[])
    }
}

/// Neither end failed a file.
fn assert_no_failures(s: &send::Sent, r: &recv::Received) {
    assert!(
        s.failed.is_empty() && r.failed.is_empty(),
        "{:?} {:?}",
        s.failed,
        r.failed
    );
}

fn write(root: &Path, path: &str, content: &[u8]) {
    let p = root.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every entry's kind, size, mode, mtime (ns), symlink target, hard-link grouping and
/// content, for comparing two trees.
fn snapshot(root: &Path) -> Vec<String> {
    let mut w = walk::walk(root, None).unwrap();
    walk::hash_missing(root, &mut w, 2);
    assert!(w.temps.is_empty(), "temp files left: {:?}", w.temps);
    w.entries
        .iter()
        .map(|(e, _)| {
            format!(
                "{} {:?} {} {:o} {}.{} {:?} {:?} {:?}",
                e.path,
                e.kind,
                e.size,
                e.meta.mode,
                e.meta.mtime,
                e.meta.mtime_ns,
                e.target(),
                e.link(),
                e.hash
            )
        })
        .collect()
}

fn build_tree(r: &Path) {
    write(r, "a/b/text.txt", b"hello world\n");
    write(r, "a/empty-file", b"");
    write(r, "big.bin", &noise(300_000, 1));
    fs::create_dir_all(r.join("empty/dir")).unwrap();
    std::os::unix::fs::symlink("../big.bin", r.join("a/link-to-big")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/abs", r.join("dangling")).unwrap();
    fs::hard_link(r.join("a/b/text.txt"), r.join("hard")).unwrap();
    fs::set_permissions(r.join("big.bin"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(r.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_600_000_000, 123_456_789);
    fs::File::options()
        .write(true)
        .open(r.join("a/empty-file"))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn every_kind_round_trips_and_a_second_push_sends_nothing() {
    let mut p = Pair::new();
    build_tree(&p.src);
    let (s, r) = p.push();
    assert!(s.failed.is_empty() && r.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
    let ino = |path: &str| fs::symlink_metadata(p.dst.join(path)).unwrap().ino();
    assert_eq!(ino("hard"), ino("a/b/text.txt"), "hard link kept");
    assert_eq!(s.files_total, 10);

    let (s, r) = p.push();
    assert_eq!((s.changed, r.steps), (0, 0));
    assert!(
        s.bytes_sent < 100,
        "a no-change push sent {} bytes",
        s.bytes_sent
    );
    assert!(s.manifest.is_none(), "nothing to save");
}

#[test]
fn edits_renames_and_deletions() {
    let mut p = Pair::new();
    build_tree(&p.src);
    for i in 0..20 {
        write(&p.src, &format!("many/f{i}"), &noise(40_000, i + 10));
    }
    p.push();
    // An in-place edit of a big file travels as a delta.
    let mut big = fs::read(p.src.join("big.bin")).unwrap();
    big[150_000..150_010].copy_from_slice(b"0123456789");
    fs::write(p.src.join("big.bin"), &big).unwrap();
    let (s, _) = p.push();
    assert_eq!(s.changed, 1, "only the file (its directory is the root)");
    assert!(
        s.bytes_sent < 40_000,
        "a 10-byte edit sent {} bytes",
        s.bytes_sent
    );
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));

    // A renamed directory is copied on the receiver, not sent again.
    fs::rename(p.src.join("many"), p.src.join("moved")).unwrap();
    let (s, _) = p.push_with(true, false, &[]);
    assert!(
        s.bytes_sent < 20_000,
        "a rename sent {} bytes",
        s.bytes_sent
    );
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));

    // Kind changes and deletions.
    fs::remove_file(p.src.join("hard")).unwrap();
    fs::create_dir(p.src.join("hard")).unwrap();
    fs::remove_dir_all(p.src.join("a/b")).unwrap();
    write(&p.src, "a/b", b"now a file");
    let (s, _) = p.push_with(true, false, &[]);
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
}

/// More files than a batch: full batches are made durable and renamed on a thread while
/// the next is written; hard links (to leaders in an early batch) and deletions wait for
/// them, symlinks and directories do not need to. Every file lands, in both modes.
#[test]
fn batches_made_durable_behind_the_writing_all_land() {
    for diverge in [false, true] {
        let mut p = Pair::new();
        p.diverge = diverge;
        for i in 0..2600u64 {
            write(
                &p.src,
                &format!("d{:02}/f{i:04}", i / 100),
                &noise(64 + (i as usize % 300), i),
            );
            if i % 250 == 0 {
                std::os::unix::fs::symlink(
                    format!("f{i:04}"),
                    p.src.join(format!("d{:02}/s{i}", i / 100)),
                )
                .unwrap();
            }
        }
        fs::create_dir_all(p.src.join("z-links")).unwrap();
        for i in [0u64, 5, 1500] {
            fs::hard_link(
                p.src.join(format!("d{:02}/f{i:04}", i / 100)),
                p.src.join(format!("z-links/h{i}")),
            )
            .unwrap();
        }
        let (s, r) = p.push();
        assert_no_failures(&s, &r);
        assert_eq!(snapshot(&p.src), snapshot(&p.dst), "diverge {diverge}");
        let ino = |path: &str| fs::symlink_metadata(p.dst.join(path)).unwrap().ino();
        assert_eq!(ino("z-links/h1500"), ino("d15/f1500"), "hard link kept");

        // Over a batch of edits, and a directory deleted after them.
        for i in (0..2600u64).step_by(2) {
            write(
                &p.src,
                &format!("d{:02}/f{i:04}", i / 100),
                &noise(80, i + 7),
            );
        }
        fs::remove_dir_all(p.src.join("d20")).unwrap();
        let (s, r) = p.push_with(true, false, &[]);
        assert_no_failures(&s, &r);
        assert_eq!(snapshot(&p.src), snapshot(&p.dst), "diverge {diverge}");
    }
}

/// A small edit in a big file: what is around it is copied from the replica's own copy in
/// long runs (longer than the copy buffer), and only the edit travels.
#[test]
fn a_delta_copies_long_runs_of_the_old_copy() {
    let mut p = Pair::new();
    let mut big = noise(3 << 20, 99);
    write(&p.src, "big.bin", &big);
    p.push();
    big[1_500_000..1_500_010].copy_from_slice(b"0123456789");
    write(&p.src, "big.bin", &big);
    push_sending_less_than(&mut p, 200_000, "a 10-byte edit of 3 MB");
}

/// Pushes: no failure, fewer than `most` bytes sent (`what` said otherwise), the replica
/// equal to the source.
fn push_sending_less_than(p: &mut Pair, most: u64, what: &str) -> send::Sent {
    let (s, r) = p.push();
    assert_no_failures(&s, &r);
    assert!(s.bytes_sent < most, "{what} sent {} bytes", s.bytes_sent);
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
    s
}

/// Bases chunked ahead on the worker threads (the small ones, within the 4 MiB a test
/// session may hold ahead) and on the main thread (the one bigger than that alone): only
/// the edits travel either way.
#[test]
fn deltas_against_bases_chunked_ahead_and_not_send_only_the_edits() {
    let mut p = Pair::new();
    let mut files: Vec<(String, Vec<u8>)> = vec![("a-big.bin".into(), noise(5 << 20, 7))];
    for i in 0..6 {
        files.push((format!("b-{i}.bin"), noise(1 << 20, 100 + i)));
    }
    for (path, content) in &files {
        write(&p.src, path, content);
    }
    p.push();
    for (path, content) in &mut files {
        let mid = content.len() / 2;
        content[mid..mid + 10].copy_from_slice(b"0123456789");
        write(&p.src, path, content);
    }
    let s = push_sending_less_than(&mut p, 400_000, "seven 10-byte edits of 11 MB");
    assert_eq!(s.changed, 7);
}

/// An entry the walk could not read (here: a file become a symlink whose target is not
/// UTF-8, which cannot be pushed) stays on the replica as it was, named in the errors;
/// what is really gone is still deleted, and the entry is pushed once it can be read.
#[test]
fn what_the_source_could_not_read_is_not_deleted_from_the_replica() {
    let mut p = Pair::new();
    write(&p.src, "keep/a", b"precious");
    write(&p.src, "gone", b"deleted for real");
    for i in 0..10 {
        write(&p.src, &format!("other/{i}"), b"x");
    }
    p.push();
    fs::remove_file(p.src.join("keep/a")).unwrap();
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(b"\xff"), p.src.join("keep/a")).unwrap();
    fs::remove_file(p.src.join("gone")).unwrap();
    let (s, r) = p.push();
    assert!(
        s.errors.iter().any(|e| e.contains("keep/a")),
        "{:?}",
        s.errors
    );
    assert_eq!(fs::read(p.dst.join("keep/a")).unwrap(), b"precious");
    assert!(!p.dst.join("gone").exists());
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    // Readable again: pushed.
    fs::remove_file(p.src.join("keep/a")).unwrap();
    std::os::unix::fs::symlink("elsewhere", p.src.join("keep/a")).unwrap();
    let (s, r) = p.push();
    assert_no_failures(&s, &r);
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
}

#[test]
fn the_replica_changed_behind_our_back_is_repaired() {
    let mut p = Pair::new();
    build_tree(&p.src);
    p.push();
    fs::write(p.dst.join("a/b/text.txt"), b"tampered").unwrap();
    fs::remove_file(p.dst.join("big.bin")).unwrap();
    write(&p.dst, "intruder", b"x");
    let (s, _) = p.push_with(true, false, &[]);
    assert!(s.changed >= 3, "{}", s.changed);
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
    // Forgetting the sender manifest: a full listing, nothing resent.
    p.sent = None;
    let (s, _) = p.push();
    assert_eq!(s.changed, 0);
    assert!(s.bytes_sent < 100);
}

#[test]
fn excludes_are_neither_sent_nor_deleted() {
    let mut p = Pair::new();
    write(&p.src, "keep.txt", b"k");
    write(&p.src, "cache/x", b"c");
    write(&p.src, "t.tmp", b"t");
    write(&p.dst, "cache/theirs", b"mine");
    let (s, _) = p.push_with(false, false, &["cache/", "*.tmp"]);
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    assert!(p.dst.join("keep.txt").exists());
    assert!(!p.dst.join("t.tmp").exists());
    assert_eq!(fs::read(p.dst.join("cache/theirs")).unwrap(), b"mine");
    assert!(!p.dst.join("cache/x").exists());
}

#[test]
fn guards_and_dry_run_change_nothing() {
    let mut p = Pair::new();
    for i in 0..10 {
        write(&p.src, &format!("f{i}"), b"x");
    }
    p.push();
    let before = snapshot(&p.dst);
    for i in 0..6 {
        fs::remove_file(p.src.join(format!("f{i}"))).unwrap();
    }
    let (s, _) = p.push();
    assert!(
        s.refused.as_deref().unwrap().contains("delete 6"),
        "{:?}",
        s.refused
    );
    assert_eq!(snapshot(&p.dst), before);
    let (s, _) = p.push_with(true, true, &[]);
    assert_eq!(s.steps.len(), 6, "{:?}", s.steps);
    assert_eq!(snapshot(&p.dst), before, "a dry run changes nothing");
    for i in 6..10 {
        fs::remove_file(p.src.join(format!("f{i}"))).unwrap();
    }
    let (s, _) = p.push();
    assert!(s.refused.as_deref().unwrap().contains("source is empty"));
    assert_eq!(snapshot(&p.dst), before);
}

#[test]
fn diverged_data_is_moved_aside() {
    let mut p = Pair::new();
    write(&p.src, "same", b"same");
    write(&p.src, "changed", b"new");
    write(&p.dst, "same", b"same");
    write(&p.dst, "changed", b"old local edit");
    write(&p.dst, "only-here", b"written while master");
    p.diverge = true;
    let (s, r) = p.push_with(true, false, &[]);
    let mut d = r.diverged.clone();
    d.sort();
    assert_eq!(d, ["changed", "only-here"]);
    assert_eq!(s.diverged, r.diverged);
    let dir = r.diverged_dir.unwrap();
    assert!(dir.starts_with(p.state.join("diverged/s")));
    assert_eq!(fs::read(dir.join("changed")).unwrap(), b"old local edit");
    assert_eq!(
        fs::read(dir.join("only-here")).unwrap(),
        b"written while master"
    );
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
}

/// After a push of a few changes the receiver looks again at the paths it touched (and
/// their directories) instead of walking the replica; with a hard link among them it
/// walks. Either way its manifest is what a walk sees (`check_receiver_manifest`, run
/// after every push of these tests).
#[test]
fn a_push_of_a_few_changes_looks_again_only_at_what_it_touched() {
    let mut p = Pair::new();
    for i in 0..40 {
        write(
            &p.src,
            &format!("d{}/f{i}", i % 4),
            &noise(100 + i, i as u64),
        );
    }
    write(&p.src, "d0/gone", b"to delete");
    write(&p.src, "d1/becomes-dir", b"a file first");
    std::os::unix::fs::symlink("f1", p.src.join("d1/link")).unwrap();
    let (_, r) = p.push();
    assert!(
        r.phases.parts.iter().any(|(n, _)| *n == "walk after"),
        "the first push walks"
    );

    write(&p.src, "d0/f0", &noise(5000, 99));
    write(&p.src, "d2/new/deeper/f", b"new");
    fs::remove_file(p.src.join("d0/gone")).unwrap();
    fs::set_permissions(p.src.join("d3/f3"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(p.src.join("d1/link")).unwrap();
    std::os::unix::fs::symlink("f5", p.src.join("d1/link")).unwrap();
    fs::remove_file(p.src.join("d1/becomes-dir")).unwrap();
    write(&p.src, "d1/becomes-dir/inner", b"now a dir");
    let (_, r) = p.push();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let kinds: Vec<&str> = r.phases.parts.iter().map(|(n, _)| *n).collect();
    assert!(kinds.contains(&"look again"), "{kinds:?}");
    assert!(!kinds.contains(&"walk after"), "{kinds:?}");
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
    // The next push finds nothing to do (the manifest's stamps are the replica's).
    let (s, r) = p.push();
    assert_eq!(s.steps.len(), 0, "{:?}", s.steps);
    assert_eq!(r.steps, 0);
    assert!(
        s.manifest.is_none(),
        "nothing changed: no manifest to write"
    );
    assert_eq!((s.files_total, s.changed), (50, 0));

    fs::hard_link(p.src.join("d2/f2"), p.src.join("d2/hard")).unwrap();
    let (_, r) = p.push();
    let kinds: Vec<&str> = r.phases.parts.iter().map(|(n, _)| *n).collect();
    assert!(
        kinds.contains(&"walk after"),
        "a hard link: walked ({kinds:?})"
    );
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
    // Writing over one name of a hard-linked inode: walked too.
    write(&p.src, "d2/f2", b"rewritten");
    fs::remove_file(p.src.join("d2/hard")).unwrap();
    let (_, r) = p.push();
    let kinds: Vec<&str> = r.phases.parts.iter().map(|(n, _)| *n).collect();
    assert!(kinds.contains(&"walk after"), "{kinds:?}");
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
}

#[test]
fn the_profile_line_names_each_phase_then_the_work_within_them() {
    let mut p = Phases {
        parts: vec![("walk", std::time::Duration::from_millis(250))],
        ..Phases::default()
    };
    p.add_within("steps", std::time::Duration::from_millis(10));
    p.add_within("steps", std::time::Duration::from_millis(15));
    let mut outer = Phases::default();
    outer.extend(&p);
    outer.add_within("waiting", std::time::Duration::from_millis(5));
    assert_eq!(
        outer.line(),
        "walk 0.250 s, total 0.250 s; within them: steps 0.025 s, waiting 0.005 s"
    );
    // A push's own profile says where its apply and its transfer went.
    let mut pair = Pair::new();
    write(&pair.src, "f", &noise(10_000, 1));
    let (sent, r) = pair.push();
    let names = |p: &Phases| p.within.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert!(names(&r.phases).contains(&"steps"), "{}", r.phases.line());
    assert!(
        names(&sent.phases).contains(&"reading and sending data"),
        "{}",
        sent.phases.line()
    );
}

#[test]
fn a_failed_move_aside_writes_nothing_over_and_keeps_the_next_push_diverging() {
    let mut p = Pair::new();
    write(&p.src, "changed", b"new");
    write(&p.dst, "changed", b"old local edit");
    // `diverged/` cannot be made: its parent is a file.
    fs::create_dir_all(&p.state).unwrap();
    fs::write(p.state.join("diverged"), b"in the way").unwrap();
    p.diverge = true;
    let (_, r) = p.push_with(true, false, &[]);
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert_eq!(r.failed[0].0, "changed");
    assert_eq!(
        fs::read(p.dst.join("changed")).unwrap(),
        b"old local edit",
        "not overwritten"
    );
    let confirmed = p.recv.lock().unwrap().clone().expect("a manifest");
    assert!(
        confirmed.epoch < 1,
        "not confirmed past the role change: epoch {}",
        confirmed.epoch
    );
    // Once the way is clear, the next push keeps the edit and then writes.
    fs::remove_file(p.state.join("diverged")).unwrap();
    let (_, r) = p.push_with(true, false, &[]);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let dir = r.diverged_dir.expect("kept");
    assert_eq!(fs::read(dir.join("changed")).unwrap(), b"old local edit");
    assert_eq!(fs::read(p.dst.join("changed")).unwrap(), b"new");
}

/// A hostile sender: speaks the protocol and tries to write outside the target.
#[test]
fn a_hostile_sender_cannot_leave_the_tree() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    let outside = t.path().join("outside");
    fs::create_dir_all(&dst).unwrap();
    fs::create_dir_all(&outside).unwrap();
    // The replica holds a symlink pointing outside (a local user made it, or a push did).
    std::os::unix::fs::symlink(&outside, dst.join("escape")).unwrap();
    let meta = Meta {
        mode: 0o644,
        ..Meta::default()
    };
    let file = |path: &str| super::plan::Step::File {
        path: path.into(),
        size: 1,
        hash: Hash(*blake3::hash(b"x").as_bytes()),
        meta,
        how: super::plan::How::Literal,
    };
    let attempts: Vec<(Vec<u8>, &str)> = vec![
        (step(1, file("../x")), "`..`"),
        (step(1, file("/tmp/abs")), "absolute"),
        (step(1, file("a\0b")), "NUL"),
        (step(1, file("escape/pwned")), ""),
        (
            step(
                1,
                super::plan::Step::Hardlink {
                    path: "h".into(),
                    to: "escape/../../etc/passwd".into(),
                },
            ),
            "`..`",
        ),
        (
            {
                let mut f = step(1, file("big"));
                f.extend(data(1, 0, &[b'x'; 2]));
                f
            },
            "past the announced size",
        ),
        (vec![0xff, 0xff, 0xff, 0xff, 1, 0], "over"),
        (
            {
                let mut f = step(1, file("a"));
                f.extend(step(1, file("b")));
                f
            },
            "used twice",
        ),
        (
            {
                let mut f = step(1, file("a"));
                f.extend(data(1, 0, b"x"));
                f.extend(step(2, file("a")));
                f
            },
            "written twice in one push",
        ),
    ];
    for (frames, why) in attempts {
        let (addr, server) = serve_one(hostile_open(), hostile_target(&dst));
        let mut c = TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut c, &frames).unwrap();
        let mut fin = Vec::new();
        wire::write_msg(&mut fin, &ToReceiver::Finish).unwrap();
        let _ = std::io::Write::write_all(&mut c, &fin);
        let got = server.join().unwrap();
        match got {
            Err(e) => assert!(e.to_string().contains(why), "{why}: {e}"),
            Ok(r) => {
                // Not a protocol violation: the write itself must have failed.
                assert!(why.is_empty(), "{why}: accepted");
                assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
            }
        }
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{why}: wrote outside"
        );
    }
}

/// A hostile sender that ignores the job's rules: it deletes more than `max_delete`
/// allows, or an excluded (local-only) file. The receiver holds to its own config: the
/// push is refused before the limit is passed, excluded files stay; `--force` in the
/// protocol lets the deletions through.
#[test]
fn the_receiver_holds_a_push_to_its_own_max_delete_and_excludes() {
    let run = |frames: Vec<u8>, force: bool, dst: &std::path::Path| {
        let (addr, server) = serve_one(
            Open {
                force,
                ..hostile_open()
            },
            Target {
                max_delete: Limit::Count(3),
                exclude: vec!["local/".into(), "*.key".into()],
                ..hostile_target(dst)
            },
        );
        let mut c = TcpStream::connect(addr).unwrap();
        let mut all = frames;
        wire::write_msg(&mut all, &ToReceiver::Finish).unwrap();
        let _ = std::io::Write::write_all(&mut c, &all);
        server.join().unwrap()
    };
    let delete = |path: &str, kind: Kind| super::plan::Step::Delete {
        path: path.into(),
        kind,
    };
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    fs::create_dir_all(dst.join("local")).unwrap();
    fs::write(dst.join("local/notes"), "mine").unwrap();
    fs::write(dst.join("site.key"), "mine").unwrap();
    for i in 0..10 {
        fs::write(dst.join(format!("f{i}")), "x").unwrap();
    }
    // Ten deletions, the limit is three: refused at the fourth.
    let mut frames = Vec::new();
    for i in 0..10 {
        frames.extend(step(0, delete(&format!("f{i}"), Kind::File)));
    }
    let got = run(frames.clone(), false, &dst);
    let e = got.expect_err("more deletions than max_delete");
    assert!(e.to_string().contains("max_delete"), "{e}");
    let left = (0..10)
        .filter(|i| dst.join(format!("f{i}")).exists())
        .count();
    assert_eq!(left, 7, "three deleted, then refused");
    // Deletions of missing names do not count.
    let mut again = Vec::new();
    for i in 0..3 {
        again.extend(step(0, delete(&format!("f{i}"), Kind::File)));
    }
    run(again, false, &dst).expect("no-op deletions");
    // Excluded, local-only files: neither deleted nor written.
    for (frames, what) in [
        (step(0, delete("local/notes", Kind::File)), "local/notes"),
        (step(0, delete("local", Kind::Dir)), "local"),
        (step(0, delete("site.key", Kind::File)), "site.key"),
        (
            step(
                1,
                super::plan::Step::Symlink {
                    path: "local/evil".into(),
                    target: "/etc".into(),
                    meta: Meta::default(),
                },
            ),
            "local/evil",
        ),
    ] {
        let e = run(frames, false, &dst).expect_err(what);
        assert!(e.to_string().contains("is excluded"), "{what}: {e}");
    }
    assert_eq!(fs::read(dst.join("local/notes")).unwrap(), b"mine");
    assert_eq!(fs::read(dst.join("site.key")).unwrap(), b"mine");
    assert!(!dst.join("local/evil").exists());
    // Forced, the deletions go through (the sender's operator said so).
    run(frames, true, &dst).expect("forced");
    assert_eq!(
        (0..10)
            .filter(|i| dst.join(format!("f{i}")).exists())
            .count(),
        0
    );
}

/// A sender that vanishes in the middle of a file: its temporary file is gone as soon
/// as the session ends, as are the temporaries of files complete but not yet renamed.
#[test]
fn an_aborted_session_leaves_no_temporary_files() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    fs::create_dir_all(&dst).unwrap();
    let (addr, server) = serve_one(hostile_open(), hostile_target(&dst));
    let file = |path: &str, body: &[u8]| super::plan::Step::File {
        path: path.into(),
        size: body.len() as u64,
        hash: Hash(*blake3::hash(body).as_bytes()),
        meta: Meta {
            mode: 0o644,
            ..Meta::default()
        },
        how: super::plan::How::Literal,
    };
    // One file whole (pending its rename), one half sent; then the sender is gone.
    let mut frames = step(1, file("done.txt", b"whole"));
    frames.extend(data(1, 0, b"whole"));
    frames.extend(step(2, file("half.txt", b"0123456789")));
    frames.extend(data(2, 0, b"01234"));
    let mut c = TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut c, &frames).unwrap();
    drop(c);
    assert!(server.join().unwrap().is_err(), "an unfinished push");
    let left: Vec<String> = fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A file that would leave less than the reserve free (20 GB of zeros cost the sender
/// nothing on the wire) is not written; the push goes on without it.
#[test]
fn a_file_that_would_cross_the_reserve_is_not_written() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    fs::create_dir_all(&dst).unwrap();
    let s = rustix::fs::statvfs(&dst).unwrap();
    let free = s.f_bavail * s.f_frsize;
    let reserve = 1u64 << 30;
    let (addr, server) = serve_one(
        hostile_open(),
        Target {
            reserve: recv::Reserve::Bytes(reserve),
            state_dir: Some(t.path().to_owned()),
            ..hostile_target(&dst)
        },
    );
    let zeros = super::plan::Step::File {
        path: "zeros".into(),
        size: free.saturating_sub(reserve / 2),
        hash: Hash([0; 32]),
        meta: Meta {
            mode: 0o644,
            ..Meta::default()
        },
        how: super::plan::How::Literal,
    };
    let small = super::plan::Step::File {
        path: "small".into(),
        size: 2,
        hash: Hash(*blake3::hash(b"ok").as_bytes()),
        meta: Meta {
            mode: 0o644,
            ..Meta::default()
        },
        how: super::plan::How::Literal,
    };
    let mut frames = step(1, zeros);
    frames.extend(step(2, small));
    frames.extend(data(2, 0, b"ok"));
    wire::write_msg(&mut frames, &ToReceiver::Finish).unwrap();
    let c = TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut &c, &frames).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let got = server.join().unwrap().expect("the push goes on");
    assert_eq!(got.failed.len(), 1, "{:?}", got.failed);
    assert!(got.failed[0].1.contains("reserve"), "{:?}", got.failed);
    assert!(!dst.join("zeros").exists());
    assert_eq!(fs::read(dst.join("small")).unwrap(), b"ok");
}

/// A receiver for one hostile session: `frames` then finish; the session's end.
fn receive_frames(frames: Vec<u8>) -> Result<recv::Received, recv::RecvError> {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    fs::create_dir_all(&dst).unwrap();
    fs::write(dst.join("basis"), vec![7u8; 1 << 16]).unwrap();
    let (addr, server) = serve_one(hostile_open(), hostile_target(&dst));
    let mut all = frames;
    wire::write_msg(&mut all, &ToReceiver::Finish).unwrap();
    let c = TcpStream::connect(addr).unwrap();
    // The receiver may refuse before reading it all.
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut &c, &all);
        let _ = c.shutdown(std::net::Shutdown::Write);
        // Drain what it answers so that it never blocks on a full socket.
        let _ = std::io::copy(&mut &c, &mut std::io::sink());
    });
    let got = server.join().unwrap();
    let _ = writer.join();
    got
}

fn delta_step(
    id: u32,
    path: &str,
    size: u64,
    params: super::chunk::Params,
    chunks: u32,
) -> Vec<u8> {
    let mut b = Vec::new();
    wire::write_msg(
        &mut b,
        &ToReceiver::Step {
            id,
            step: super::plan::Step::File {
                path: path.into(),
                size,
                hash: Hash([1; 32]),
                meta: Meta {
                    mode: 0o644,
                    ..Meta::default()
                },
                how: super::plan::How::Delta {
                    basis: "basis".into(),
                },
            },
            delta: Some(wire::DeltaHead { params, chunks }),
        },
    )
    .unwrap();
    b
}

/// Bounded memory whatever the peer announces: chunking parameters other than the
/// receiver's own for the size, more chunk records at once than a session may hold, and
/// long failure reasons are refused or cut.
#[test]
fn a_hostile_sender_cannot_make_the_receiver_hold_much() {
    use super::chunk::Params;
    // Tiny chunks for a 1 MiB file: not this node's parameters.
    let size = 1 << 20;
    let tiny = Params {
        min: 64,
        avg: 256,
        max: 1024,
    };
    let e = receive_frames(delta_step(1, "f", size, tiny, 4096)).unwrap_err();
    assert!(
        e.to_string().contains("delta parameters out of bounds"),
        "{e}"
    );

    // Files as big as the disk allows, each announcing all the chunks it may: past the
    // session's bound, refused before a single record is sent.
    let t = tempfile::tempdir().unwrap();
    let st = rustix::fs::statvfs(t.path()).unwrap();
    let big = (st.f_bavail * st.f_frsize / 2).max(1 << 30);
    let own = Params::for_size(big);
    let most = (big / u64::from(own.min) + 2).min(u64::from(wire::MAX_WIRE_CHUNKS)) as u32;
    let mut frames = Vec::new();
    for id in 1..=((1u64 << 22) / u64::from(most) + 2) as u32 {
        frames.extend(delta_step(id, &format!("big{id}"), big, own, most));
    }
    let e = receive_frames(frames).unwrap_err();
    assert!(
        e.to_string().contains("chunk records announced at once"),
        "{e}"
    );

    // Failure reasons from the peer: kept (and logged) a few hundred bytes each.
    let mut frames = Vec::new();
    for id in 1..=40u32 {
        frames.extend(step(
            id,
            super::plan::Step::File {
                path: format!("f{id}"),
                size: 1,
                hash: Hash([1; 32]),
                meta: Meta {
                    mode: 0o644,
                    ..Meta::default()
                },
                how: super::plan::How::Literal,
            },
        ));
        wire::write_msg(
            &mut frames,
            &ToReceiver::Abandon {
                id,
                reason: "\u{1b}[31m".repeat(1 << 14),
            },
        )
        .unwrap();
    }
    let r = receive_frames(frames).expect("abandoned files are failures, not errors");
    assert_eq!(r.failed.len(), 40);
    for (_, why) in &r.failed {
        assert!(why.len() <= 303, "{} bytes", why.len());
        assert!(!why.chars().any(char::is_control), "{why:?}");
    }
}

/// A sender that trickles a byte at a time (each read well within the socket's timeout)
/// is cut off once no frame has completed for the session's idle limit.
#[test]
fn a_trickling_sender_is_cut_off() {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    fs::create_dir_all(&dst).unwrap();
    let (addr, server) = serve_one(
        hostile_open(),
        Target {
            idle: std::time::Duration::from_secs(1),
            ..hostile_target(&dst)
        },
    );
    let frame = step(1, super::plan::Step::Mkdir { path: "d".into() });
    let c = TcpStream::connect(addr).unwrap();
    // A byte every 200 ms, for at most 5 s (the frame would take longer than that).
    let trickle = std::thread::spawn(move || {
        for b in frame.iter().cycle().take(25) {
            if std::io::Write::write_all(&mut &c, &[*b]).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    let e = server.join().unwrap().expect_err("cut off");
    let e = crate::error_chain(&e);
    assert!(
        e.contains("no complete frame from the sender for 1 s"),
        "{e}"
    );
    let _ = trickle.join();
}

/// Deletions come after content (a type change's deletion aside, which comes first): a
/// sender that deletes, then writes, is refused at the first write after a deletion.
#[test]
fn content_after_deletions_is_refused() {
    let file = |path: &str| super::plan::Step::File {
        path: path.into(),
        size: 1,
        hash: Hash(*blake3::hash(b"x").as_bytes()),
        meta: Meta {
            mode: 0o644,
            ..Meta::default()
        },
        how: super::plan::How::Literal,
    };
    let delete = |path: &str| super::plan::Step::Delete {
        path: path.into(),
        kind: Kind::File,
    };
    // The plan's own order: a type change's deletion, content, deletions, metadata.
    let mut ok = step(0, delete("was-a-file"));
    ok.extend(step(
        0,
        super::plan::Step::Mkdir {
            path: "was-a-file".into(),
        },
    ));
    ok.extend(step(1, file("a")));
    ok.extend(data(1, 0, b"x"));
    ok.extend(step(0, delete("gone")));
    ok.extend(step(
        0,
        super::plan::Step::Meta {
            path: "was-a-file".into(),
            kind: Kind::Dir,
            meta: Meta {
                mode: 0o755,
                ..Meta::default()
            },
        },
    ));
    receive_frames(ok).expect("the plan's order");
    let mut bad = step(1, file("a"));
    bad.extend(data(1, 0, b"x"));
    bad.extend(step(0, delete("gone")));
    bad.extend(step(2, file("b")));
    let e = receive_frames(bad).unwrap_err();
    assert!(e.to_string().contains("content after deletions"), "{e}");
}

/// The replica's root takes the source root's mode (a web server must be able to enter
/// it after a failover; created under the agent's umask it would be 0700), setuid never.
#[test]
fn the_replica_root_gets_the_source_roots_mode() {
    let mut p = Pair::new();
    fs::write(p.src.join("index.html"), "x").unwrap();
    fs::set_permissions(&p.src, fs::Permissions::from_mode(0o751)).unwrap();
    p.push_with(false, false, &[]);
    assert_eq!(fs::metadata(&p.dst).unwrap().mode() & 0o7777, 0o751);
    // Changed later: the next push carries it.
    fs::set_permissions(&p.src, fs::Permissions::from_mode(0o4755)).unwrap();
    p.push_with(false, false, &[]);
    assert_eq!(fs::metadata(&p.dst).unwrap().mode() & 0o7777, 0o755);
}

/// The replica's root is a symlink (to somewhere else): nothing is written through it.
#[test]
fn a_replica_root_that_is_a_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let elsewhere = t.path().join("etc");
    fs::create_dir_all(&elsewhere).unwrap();
    let root = t.path().join("replica");
    std::os::unix::fs::symlink(&elsewhere, &root).unwrap();
    let (addr, server) = serve_one(hostile_open(), hostile_target(&root));
    let mut frames = step(
        1,
        super::plan::Step::Mkdir {
            path: "cron.d".into(),
        },
    );
    wire::write_msg(&mut frames, &ToReceiver::Finish).unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    let _ = std::io::Write::write_all(&mut c, &frames);
    let e = server.join().unwrap().expect_err("a symlinked root");
    assert!(e.to_string().contains("is a symlink"), "{e}");
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through"
    );
}

/// The push a hostile-sender test opens: site `s`, job `j`, epoch 1.
fn hostile_open() -> Open {
    Open {
        protocol: wire::SYNC_PROTOCOL,
        site: "s".into(),
        job: "j".into(),
        epoch: 1,
        generation: None,
        dry_run: false,
        force: false,
        root_meta: None,
    }
}

/// The receiving end of a hostile-sender test: a replica in `root` with the job's
/// defaults (no reserve, no state dir).
fn hostile_target(root: &Path) -> Target {
    Target {
        root: root.to_owned(),
        diverged_base: std::path::PathBuf::from("/nonexistent"),
        manifest: None,
        epoch: 1,
        diverge: false,
        keep_setuid: false,
        max_delete: Limit::Percent(50.0),
        exclude: Vec::new(),
        reserve: recv::Reserve::Bytes(0),
        state_dir: None,
        idle: std::time::Duration::from_secs(60),
        stop: Arc::default(),
    }
}

/// Serves one push session on a fresh loopback port: its address, and the session's end.
fn serve_one(
    open: Open,
    target: Target,
) -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<Result<recv::Received, recv::RecvError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        recv::receive(stream, &open, &target, &mut |_| Ok(()))
    });
    (addr, server)
}

fn step(id: u32, step: super::plan::Step) -> Vec<u8> {
    let mut b = Vec::new();
    wire::write_msg(
        &mut b,
        &ToReceiver::Step {
            id,
            step,
            delta: None,
        },
    )
    .unwrap();
    b
}

fn data(id: u32, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    wire::write_data(&mut b, id, offset, bytes, false).unwrap();
    b
}

#[test]
fn nested_edits_keep_every_directory_time() {
    let mut p = Pair::new();
    for i in 0..30u64 {
        write(
            &p.src,
            &format!("d{}/e{}/f{i}", i % 3, i % 2),
            &noise(20_000 + i as usize * 1000, i + 1),
        );
    }
    p.push();
    assert_eq!(snapshot(&p.src), snapshot(&p.dst));
    for i in [3u64, 17, 28] {
        let path = p.src.join(format!("d{}/e{}/f{i}", i % 3, i % 2));
        let mut b = fs::read(&path).unwrap();
        b[10_000..10_064].copy_from_slice(&[7u8; 64]);
        fs::write(&path, &b).unwrap();
    }
    let (s, _) = p.push();
    assert!(s.failed.is_empty(), "{:?}", s.failed);
    let (a, b) = (snapshot(&p.src), snapshot(&p.dst));
    let diff: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
    assert!(diff.is_empty() && a.len() == b.len(), "{diff:#?}");
}

#[test]
fn setuid_and_file_setgid_bits_are_dropped_unless_the_job_keeps_them() {
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for keep in [false, true] {
        let mut p = Pair::new();
        p.keep_setuid = keep;
        write(&p.src, "bin/tool", b"#!/bin/sh\n");
        write(&p.src, "bin/group-tool", b"#!/bin/sh\n");
        fs::set_permissions(p.src.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(
            p.src.join("bin/group-tool"),
            fs::Permissions::from_mode(0o2755),
        )
        .unwrap();
        fs::create_dir_all(p.src.join("shared")).unwrap();
        fs::set_permissions(p.src.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
        p.push();
        let want = |m: u32, dropped: u32| if keep { m } else { dropped };
        assert_eq!(
            mode(&p.dst.join("bin/tool")),
            want(0o4755, 0o755),
            "keep {keep}"
        );
        assert_eq!(
            mode(&p.dst.join("bin/group-tool")),
            want(0o2755, 0o755),
            "keep {keep}"
        );
        assert_eq!(
            mode(&p.dst.join("shared")),
            0o2775,
            "a setgid directory grants nothing: kept"
        );
        // A metadata-only change later is held to the same rule.
        fs::set_permissions(p.src.join("bin/tool"), fs::Permissions::from_mode(0o4750)).unwrap();
        p.push();
        assert_eq!(
            mode(&p.dst.join("bin/tool")),
            want(0o4750, 0o750),
            "keep {keep}"
        );
    }
    assert_eq!(recv::allowed_mode(0o6755, false, false), 0o755);
    assert_eq!(recv::allowed_mode(0o6755, true, false), 0o2755);
    assert_eq!(recv::allowed_mode(0o1777, true, false), 0o1777);
}
