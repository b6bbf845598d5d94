//! Push planning, sans-IO: from the source's entries (hashes known) and what the sender
//! believes the receiver holds, the ordered steps of a push and its guards.
//!
//! Order: deletions forced by a type change (a file where a directory was), new
//! directories (parents first), file contents and symlinks, hard links, metadata-only
//! changes, the remaining deletions (deepest first), and last the directories' metadata
//! (deepest first, so that writing inside a directory cannot disturb its mtime).

use super::{chunk::DELTA_MIN_SIZE, parent, Entry, Hash, Kind, Meta};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How a file's content gets to the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// All of it, compressed.
    Literal,
    /// The receiver already holds the same bytes at `from` (a rename, a copy).
    Copy { from: String },
    /// Against the receiver's copy at `basis`: only the chunks it lacks travel.
    Delta { basis: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    Delete {
        path: String,
        kind: Kind,
    },
    Mkdir {
        path: String,
    },
    File {
        path: String,
        size: u64,
        hash: Hash,
        meta: Meta,
        how: How,
    },
    Symlink {
        path: String,
        target: String,
        meta: Meta,
    },
    Hardlink {
        path: String,
        to: String,
    },
    Meta {
        path: String,
        kind: Kind,
        meta: Meta,
    },
}

impl Step {
    pub fn path(&self) -> &str {
        match self {
            Step::Delete { path, .. }
            | Step::Mkdir { path }
            | Step::File { path, .. }
            | Step::Symlink { path, .. }
            | Step::Hardlink { path, .. }
            | Step::Meta { path, .. } => path,
        }
    }
}

/// The most a push may delete without `--force`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Percent(f64),
    Count(u64),
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub max_delete: Limit,
    pub force: bool,
    /// The receiver sets owners (it runs as root): uid/gid differences matter.
    pub owners: bool,
}

/// Whether two entries' metadata agree, as far as the receiver can make them agree.
fn same_meta(a: &Meta, b: &Meta, kind: Kind, owners: bool) -> bool {
    (a.mtime, a.mtime_ns) == (b.mtime, b.mtime_ns)
        && (kind == Kind::Symlink || a.mode == b.mode)
        && (!owners || (a.uid, a.gid) == (b.uid, b.gid))
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Entries in the source, and the bytes of its regular files.
    pub files_total: u64,
    pub bytes_total: u64,
    /// Entries created, changed or deleted.
    pub changed: u64,
    pub deletions: u64,
    /// Why the push must not run (a guard), when it must not.
    pub refused: Option<String>,
}

impl Plan {
    /// The plan of a source against a replica that holds it as it is: no step, the
    /// source's totals (what [`plan_borrowed`] gives then, without its maps).
    pub fn unchanged<S: Borrow<Entry>>(source: &[S]) -> Plan {
        Plan {
            files_total: source.len() as u64,
            bytes_total: source
                .iter()
                .map(Borrow::borrow)
                .filter(|e| e.kind == Kind::File && e.link().is_none())
                .map(|e| e.size)
                .sum(),
            ..Plan::default()
        }
    }
}

/// The entry at `path` in a list sorted by path.
fn find<'a>(sorted: &[&'a Entry], path: &str) -> Option<&'a Entry> {
    sorted
        .binary_search_by(|e| e.path.as_str().cmp(path))
        .ok()
        .map(|i| sorted[i])
}

/// Writing an entry changes its directory's mtime: set it again at the end.
fn touch<'a>(src: &[&'a Entry], path: &str, dir_meta: &mut BTreeSet<&'a str>) {
    if let Some(d) = find(src, parent(path)) {
        dir_meta.insert(d.path.as_str());
    }
}

/// For each entry of `a`, the entry of `b` at the same path (both sorted by path, walked
/// side by side).
fn matching<'a>(a: &[&Entry], b: &[&'a Entry]) -> Vec<Option<&'a Entry>> {
    let mut b = b.iter().peekable();
    a.iter()
        .map(|x| {
            while b.next_if(|y| y.path < x.path).is_some() {}
            b.peek().filter(|y| y.path == x.path).map(|y| **y)
        })
        .collect()
}

/// [`plan_borrowed`] of owned entries, the source in any order, its steps made.
pub fn plan(source: &[Entry], receiver: &BTreeMap<String, Entry>, opt: Options) -> Plan {
    let mut source: Vec<&Entry> = source.iter().collect();
    source.sort_by(|a, b| a.path.cmp(&b.path));
    let receiver: Vec<&Entry> = receiver.values().collect();
    plan_borrowed(&source, &receiver, opt).into_plan()
}

/// A step of a plan as indexes into the lists it was planned from.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// The receiver's entry, deleted.
    Delete(usize),
    /// The source's entry, made on the receiver:
    Mkdir(usize),
    File(usize, Via),
    Symlink(usize),
    Hardlink(usize),
    /// its metadata only (a file's or a symlink's),
    Meta(usize),
    /// a directory's metadata, last.
    DirMeta(usize),
}

// What `Planned` says an item costs.
const _: () = assert!(std::mem::size_of::<Item>() <= 24);

/// How a file's content gets there ([`How`] with an index for a path).
#[derive(Debug, Clone, Copy)]
enum Via {
    Literal,
    /// From the receiver's entry.
    Copy(usize),
    Delta,
}

/// A plan as made: its totals and the guards' verdict, and its steps as indexes into the
/// lists it was planned from, each made into a [`Step`] as it is sent
/// ([`Planned::steps`]). A step with its path is about 180 bytes and an index 24: a first
/// push of 200 000 files had held 35 MB of steps.
pub struct Planned<'a, 'r> {
    /// The totals and the verdict (its `steps` left empty).
    pub plan: Plan,
    source: Vec<&'a Entry>,
    receiver: &'r [&'a Entry],
    items: Vec<Item>,
}

impl<'a> Planned<'a, '_> {
    /// No step: the replica holds the source as it is ([`Plan::unchanged`]).
    pub fn unchanged<S: Borrow<Entry>>(source: &[S]) -> Planned<'a, 'static> {
        Planned {
            plan: Plan::unchanged(source),
            source: Vec::new(),
            receiver: &[],
            items: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The steps in order, each made when it is reached.
    pub fn steps(&self) -> impl Iterator<Item = Step> + '_ {
        self.items.iter().filter_map(|item| self.step(*item))
    }

    /// The plan with its steps made (a dry run's list, tests).
    pub fn into_plan(self) -> Plan {
        let steps = self.steps().collect();
        Plan { steps, ..self.plan }
    }

    fn step(&self, item: Item) -> Option<Step> {
        let src = |i: usize| self.source[i];
        Some(match item {
            Item::Delete(i) => Step::Delete {
                path: self.receiver[i].path.clone(),
                kind: self.receiver[i].kind,
            },
            Item::Mkdir(i) => Step::Mkdir {
                path: src(i).path.clone(),
            },
            Item::File(i, via) => {
                let s = src(i);
                Step::File {
                    path: s.path.clone(),
                    size: s.size,
                    // Only files whose hash is known are planned.
                    hash: s.hash?,
                    meta: s.meta,
                    how: match via {
                        Via::Literal => How::Literal,
                        Via::Copy(r) => How::Copy {
                            from: self.receiver[r].path.clone(),
                        },
                        Via::Delta => How::Delta {
                            basis: s.path.clone(),
                        },
                    },
                }
            }
            Item::Symlink(i) => Step::Symlink {
                path: src(i).path.clone(),
                target: src(i).target().unwrap_or_default().to_string(),
                meta: src(i).meta,
            },
            Item::Hardlink(i) => Step::Hardlink {
                path: src(i).path.clone(),
                to: src(i).link()?.to_owned(),
            },
            Item::Meta(i) => Step::Meta {
                path: src(i).path.clone(),
                kind: src(i).kind,
                meta: src(i).meta,
            },
            Item::DirMeta(i) => Step::Meta {
                path: src(i).path.clone(),
                kind: Kind::Dir,
                meta: src(i).meta,
            },
        })
    }
}

/// Plans a push of `source` (sorted by path, every file's hash known, excluded entries
/// left out) onto `receiver` (what the sender believes the receiver holds, sorted by
/// path, excluded entries left out).
///
/// Both sides are taken by reference in whatever form the caller holds them (owned
/// entries, or references into a walk and a manifest), so a plan of a big tree copies
/// no entry; both sorted, they are walked side by side instead of looked up in maps.
pub fn plan_borrowed<'a, 'r, S: Borrow<Entry>>(
    source: &'a [S],
    receiver: &'r [&'a Entry],
    opt: Options,
) -> Planned<'a, 'r> {
    let source_refs: Vec<&'a Entry> = source.iter().map(Borrow::borrow).collect();
    let source = &source_refs;
    let src = source.as_slice();
    debug_assert!(
        src.windows(2).all(|w| w[0].path < w[1].path),
        "source not sorted"
    );
    debug_assert!(
        receiver.windows(2).all(|w| w[0].path < w[1].path),
        "receiver not sorted"
    );
    // Each source entry's receiver entry, and each receiver entry's source entry.
    let held = matching(src, receiver);
    let kept = matching(receiver, src);
    let mut p = Plan::unchanged(source);

    // A path whose kind changes loses what the receiver holds there first, and with a
    // directory everything under it.
    let mut pre: BTreeSet<&str> = BTreeSet::new();
    for (r, s) in receiver.iter().zip(&kept) {
        if let Some(s) = s {
            if s.kind != r.kind {
                pre.insert(&r.path);
                if r.kind == Kind::Dir {
                    let prefix = format!("{}/", r.path);
                    let from = receiver.partition_point(|e| e.path.as_str() < prefix.as_str());
                    pre.extend(
                        receiver[from..]
                            .iter()
                            .take_while(|e| e.path.starts_with(&prefix))
                            .map(|e| e.path.as_str()),
                    );
                }
            }
        }
    }
    // The content the receiver may lack: hashes of source files it does not hold as they
    // are (only these are worth looking for among its files).
    let wanted: std::collections::HashSet<Hash> = source
        .iter()
        .zip(&held)
        .filter(|(s, _)| s.kind == Kind::File && s.link().is_none() && s.size > 0)
        .filter_map(|(s, r)| {
            let h = s.hash?;
            (r.and_then(|r| r.hash) != Some(h)).then_some(h)
        })
        .collect();
    // Receiver files whose bytes stay where they are during the push: sources for copies.
    let mut copies: HashMap<Hash, usize> = HashMap::new();
    for (ri, (r, s)) in receiver.iter().zip(&kept).enumerate() {
        if r.kind != Kind::File || r.size == 0 || pre.contains(r.path.as_str()) {
            continue;
        }
        let Some(h) = r.hash.filter(|h| wanted.contains(h)) else {
            continue;
        };
        let stays = match s {
            None => true,
            Some(s) => s.hash == Some(h),
        };
        if stays {
            copies.entry(h).or_insert(ri);
        }
    }

    let mut mkdirs = Vec::new();
    let mut contents = Vec::new();
    let mut links = Vec::new();
    let mut metas = Vec::new();
    let mut dir_meta: BTreeSet<&str> = BTreeSet::new();
    let mut rewritten: BTreeSet<&str> = BTreeSet::new();
    let touched = |path: &str, dir_meta: &mut BTreeSet<&'a str>| touch(src, path, dir_meta);

    for (si, (s, r)) in source.iter().zip(&held).enumerate() {
        let r = r.filter(|r| !pre.contains(r.path.as_str()));
        match s.kind {
            Kind::Dir => match r {
                Some(r) if same_meta(&r.meta, &s.meta, Kind::Dir, opt.owners) => {}
                Some(_) => {
                    dir_meta.insert(&s.path);
                }
                None => {
                    mkdirs.push(Item::Mkdir(si));
                    dir_meta.insert(&s.path);
                    touched(&s.path, &mut dir_meta);
                }
            },
            Kind::Symlink => match r {
                Some(r)
                    if r.kind == Kind::Symlink
                        && r.target() == Some(s.target().unwrap_or_default()) =>
                {
                    if !same_meta(&r.meta, &s.meta, Kind::Symlink, opt.owners) {
                        metas.push(Item::Meta(si));
                    }
                }
                _ => {
                    contents.push(Item::Symlink(si));
                    touched(&s.path, &mut dir_meta);
                }
            },
            Kind::File => {
                if s.link().is_some() {
                    continue; // after every leader is known (below)
                }
                let Some(hash) = s.hash else { continue };
                let same = match r {
                    Some(r) if r.kind == Kind::File => match r.hash {
                        Some(h) => h == hash,
                        // Unknown to us: rsync's quick check (size and mtime to the ns).
                        None => {
                            r.size == s.size
                                && r.meta.mtime == s.meta.mtime
                                && r.meta.mtime_ns == s.meta.mtime_ns
                        }
                    },
                    _ => false,
                };
                if same {
                    if r.is_some_and(|r| !same_meta(&r.meta, &s.meta, Kind::File, opt.owners)) {
                        metas.push(Item::Meta(si));
                    }
                    continue;
                }
                let via = match copies.get(&hash) {
                    Some(from) if s.size > 0 => Via::Copy(*from),
                    _ => match r {
                        Some(r)
                            if r.kind == Kind::File && r.size > 0 && s.size >= DELTA_MIN_SIZE =>
                        {
                            Via::Delta
                        }
                        _ => Via::Literal,
                    },
                };
                rewritten.insert(&s.path);
                contents.push(Item::File(si, via));
                touched(&s.path, &mut dir_meta);
            }
        }
    }
    for (si, (s, r)) in source.iter().zip(&held).enumerate() {
        let Some(leader) = s.link() else { continue };
        let r = r.filter(|r| !pre.contains(r.path.as_str()));
        let linked = r.is_some_and(|r| r.kind == Kind::File && r.link() == Some(leader));
        if !linked || rewritten.contains(leader) {
            links.push(Item::Hardlink(si));
            touched(&s.path, &mut dir_meta);
        }
    }

    let mut deletes: Vec<Item> = receiver
        .iter()
        .zip(&kept)
        .enumerate()
        .rev()
        .filter(|(_, (r, s))| s.is_none() && !pre.contains(r.path.as_str()))
        .map(|(ri, _)| Item::Delete(ri))
        .collect();
    for d in &deletes {
        if let Item::Delete(ri) = d {
            touched(&receiver[*ri].path, &mut dir_meta);
        }
    }
    // Every path in `pre` is one of the receiver's.
    let pre_deletes: Vec<Item> = pre
        .iter()
        .rev()
        .filter_map(|path| {
            receiver
                .binary_search_by(|e| e.path.as_str().cmp(path))
                .ok()
                .map(Item::Delete)
        })
        .collect();
    p.deletions = (pre_deletes.len() + deletes.len()) as u64;
    p.changed = p.deletions
        + (mkdirs.len() + contents.len() + links.len() + metas.len()) as u64
        + dir_meta
            .iter()
            .filter(|d| {
                let s = find(src, d);
                find(receiver, d).is_some_and(|r| {
                    r.kind == Kind::Dir
                        && s.is_some_and(|s| !same_meta(&r.meta, &s.meta, Kind::Dir, opt.owners))
                })
            })
            .count() as u64;

    let dir_metas = dir_meta.iter().rev().filter_map(|path| {
        src.binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(Item::DirMeta)
    });
    let mut items = pre_deletes;
    items.append(&mut mkdirs);
    items.append(&mut contents);
    items.append(&mut links);
    items.append(&mut metas);
    items.append(&mut deletes);
    items.extend(dir_metas);

    if !opt.force {
        let held = receiver.len() as u64;
        if source.is_empty() && held > 0 {
            p.refused = Some(format!(
                "the source is empty while the replica holds {held} entries (an unmounted disk?); \
                 push with --force if the tree really is empty now"
            ));
        } else {
            let limit = match opt.max_delete {
                Limit::Count(n) => n,
                Limit::Percent(pct) => (held as f64 * pct / 100.0).floor() as u64,
            };
            if p.deletions > limit {
                let what = match opt.max_delete {
                    Limit::Count(n) => format!("max_delete = {n}"),
                    Limit::Percent(pct) => format!("max_delete = {pct}% of {held} = {limit}"),
                };
                p.refused = Some(format!(
                    "the push would delete {} entries on the replica ({what}); \
                     look at `orch push --dry-run`, then push with --force if that is right",
                    p.deletions
                ));
            }
        }
    }
    Planned {
        plan: p,
        source: source_refs,
        receiver,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mtime: i64) -> Meta {
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
            mtime_ns: 5,
        }
    }
    fn h(b: &[u8]) -> Hash {
        Hash(*blake3::hash(b).as_bytes())
    }
    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            size: 0,
            meta: Meta {
                mode: 0o755,
                ..meta(1)
            },
            hash: None,
            other: None,
        }
    }
    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            size: content.len() as u64,
            meta: meta(1),
            hash: Some(h(content)),
            other: None,
        }
    }
    fn big(path: &str, seed: u8) -> Entry {
        file(path, &vec![seed; 100_000])
    }
    fn opt() -> Options {
        Options {
            max_delete: Limit::Percent(50.0),
            force: false,
            owners: true,
        }
    }
    fn map(entries: &[Entry]) -> BTreeMap<String, Entry> {
        entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect()
    }
    fn ops(p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .map(|s| match s {
                Step::Delete { path, .. } => format!("rm {path}"),
                Step::Mkdir { path } => format!("mkdir {path}"),
                Step::File { path, how, .. } => match how {
                    How::Literal => format!("put {path}"),
                    How::Copy { from } => format!("cp {from} {path}"),
                    How::Delta { basis } => format!("delta {basis} {path}"),
                },
                Step::Symlink { path, target, .. } => format!("ln -s {target} {path}"),
                Step::Hardlink { path, to } => format!("ln {to} {path}"),
                Step::Meta { path, kind, .. } => format!("meta {kind:?} {path}"),
            })
            .collect()
    }

    #[test]
    fn a_first_push_creates_everything_in_order() {
        let mut link = file("d/hard", b"x");
        link.set_link("d/f");
        let mut sym = file("d/sym", b"");
        sym.set_target("../elsewhere");
        let src = vec![dir("d"), dir("d/empty"), file("d/f", b"x"), link, sym];
        let p = plan(&src, &BTreeMap::new(), opt());
        assert_eq!(
            ops(&p),
            [
                "mkdir d",
                "mkdir d/empty",
                "put d/f",
                "ln -s ../elsewhere d/sym",
                "ln d/f d/hard",
                "meta Dir d/empty",
                "meta Dir d",
            ]
        );
        assert_eq!((p.files_total, p.bytes_total, p.deletions), (5, 1, 0));
        assert!(p.refused.is_none());
    }

    #[test]
    fn no_change_is_no_step() {
        let src = vec![dir("d"), file("d/f", b"x"), big("d/b", 1)];
        let p = plan(&src, &map(&src), opt());
        assert!(p.steps.is_empty(), "{:?}", ops(&p));
        assert_eq!(p.changed, 0);
    }

    #[test]
    fn a_replica_holding_the_source_as_it_is_is_the_unchanged_plan() {
        let mut l = file("d/l", b"x");
        l.set_link("d/f");
        let mut s = dir("d/s");
        s.set_target("f");
        let src = vec![dir("d"), file("d/f", b"x"), l, big("d/b", 1), s];
        for owners in [false, true] {
            let p = plan(&src, &map(&src), Options { owners, ..opt() });
            assert_eq!(p, Plan::unchanged(&src));
        }
        assert_eq!(Plan::unchanged(&src).bytes_total, 1 + 100_000);
    }

    #[test]
    fn edits_go_as_deltas_or_literals_and_touch_their_directory() {
        let old = vec![dir("d"), big("d/big", 1), file("d/small", b"x")];
        let src = vec![dir("d"), big("d/big", 2), file("d/small", b"y")];
        let p = plan(&src, &map(&old), opt());
        assert_eq!(ops(&p), ["delta d/big d/big", "put d/small", "meta Dir d"]);
        assert_eq!(p.changed, 2);
    }

    #[test]
    fn a_renamed_directory_is_copied_on_the_receiver_then_deleted() {
        let old = vec![dir("a"), big("a/one", 1), file("a/two", b"2")];
        let src = vec![dir("b"), big("b/one", 1), file("b/two", b"2")];
        let p = plan(&src, &map(&old), opt());
        assert_eq!(
            ops(&p),
            [
                "mkdir b",
                "cp a/one b/one",
                "cp a/two b/two",
                "rm a/two",
                "rm a/one",
                "rm a",
                "meta Dir b",
            ]
        );
        assert_eq!(p.deletions, 3);
        // 3 deletions of 3 entries is over 50%: refused unless forced.
        assert!(p.refused.as_deref().unwrap().contains("delete 3 entries"));
        let forced = plan(
            &src,
            &map(&old),
            Options {
                force: true,
                ..opt()
            },
        );
        assert!(forced.refused.is_none());
    }

    #[test]
    fn metadata_only_changes_send_no_content() {
        let old = vec![file("f", b"x")];
        let mut f = file("f", b"x");
        f.meta.mode = 0o600;
        let p = plan(std::slice::from_ref(&f), &map(&old), opt());
        assert_eq!(ops(&p), ["meta File f"]);
        // Unknown receiver hash: size + mtime decide, like rsync's quick check.
        let mut unknown = file("f", b"y");
        unknown.hash = None;
        let p = plan(&[file("f", b"x")], &map(&[unknown.clone()]), opt());
        assert!(p.steps.is_empty(), "{:?}", ops(&p));
        unknown.meta.mtime_ns = 6;
        let p = plan(&[file("f", b"x")], &map(&[unknown]), opt());
        assert_eq!(ops(&p), ["put f"]);
    }

    #[test]
    fn a_kind_change_deletes_first() {
        let old = vec![dir("x"), file("x/in", b"1"), file("y", b"2")];
        let src = vec![file("x", b"now a file"), dir("y")];
        let p = plan(
            &src,
            &map(&old),
            Options {
                force: true,
                ..opt()
            },
        );
        assert_eq!(
            ops(&p),
            ["rm y", "rm x/in", "rm x", "mkdir y", "put x", "meta Dir y"]
        );
    }

    #[test]
    fn guards_refuse_an_empty_source_and_too_many_deletions() {
        let old: Vec<Entry> = (0..10).map(|i| file(&format!("f{i}"), b"x")).collect();
        let p = plan(&[], &map(&old), opt());
        assert!(p.refused.as_deref().unwrap().contains("source is empty"));
        let p = plan(&old[..6], &map(&old), opt());
        assert!(p.refused.is_none(), "4 of 10 is under 50%");
        let p = plan(&old[..4], &map(&old), opt());
        assert!(p.refused.as_deref().unwrap().contains("6 entries"));
        let count = Options {
            max_delete: Limit::Count(3),
            force: false,
            owners: true,
        };
        assert!(plan(&old[..6], &map(&old), count).refused.is_some());
        assert!(plan(&old[..7], &map(&old), count).refused.is_none());
        // An empty replica takes an empty source.
        assert!(plan(&[], &BTreeMap::new(), opt()).refused.is_none());
    }

    #[test]
    fn hard_links_are_redone_when_their_leader_is_rewritten() {
        let mut l = file("b", b"x");
        l.set_link("a");
        let old = vec![file("a", b"x"), l.clone()];
        assert!(plan(&old, &map(&old), opt()).steps.is_empty());
        let mut l2 = file("b", b"y");
        l2.set_link("a");
        let p = plan(&[file("a", b"y"), l2], &map(&old), opt());
        assert_eq!(ops(&p), ["put a", "ln a b"]);
    }
}
