//! Reading a tree: a stat walk that never follows symlinks, hard links grouped, and
//! blake3 hashes of the files that a manifest cannot vouch for (in parallel).

use super::{Entry, Excludes, Kind, Manifest, Meta, Stamp, MAX_ENTRIES, TEMP_PREFIX};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// A walked tree: entries sorted by path, with their stamps.
#[derive(Debug, Default)]
pub struct Walked {
    pub entries: Vec<(Entry, Stamp)>,
    /// `st_dev` of the root.
    pub root_dev: u64,
    /// What could not be read (named; the rest of the walk went on).
    pub errors: Vec<String>,
    /// The paths behind those errors: an entry that could not be looked at or read, a
    /// directory that could not be listed (whole) — what the walk cannot say is gone.
    /// Sorted.
    pub unread: Vec<String>,
    /// Our own temp files found (left over by a crash).
    pub temps: Vec<String>,
}

/// The metadata of a tree's root itself (which is not an entry), without following a
/// symlink.
pub fn root_meta(root: &Path) -> std::io::Result<Meta> {
    Ok(meta_of(&std::fs::symlink_metadata(root)?).0)
}

fn meta_of(m: &std::fs::Metadata) -> (Meta, Stamp) {
    (
        Meta {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec() as u32,
        },
        Stamp {
            ctime: m.ctime(),
            ctime_ns: m.ctime_nsec() as u32,
            ino: m.ino(),
        },
    )
}

/// One entry as a walk would list it (`name` in the directory `dir`, at `path` of the
/// tree), and its link count; `None` when nothing a walk lists is there (nothing at all,
/// a socket, a fifo or a device, a temp file of ours, a non-UTF-8 symlink target).
pub fn stat_entry(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    path: &str,
) -> std::io::Result<Option<(Entry, Stamp, u64)>> {
    use rustix::fs::AtFlags;
    if name.starts_with(TEMP_PREFIX) {
        return Ok(None);
    }
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(kind) = kind_of(&st) else {
        return Ok(None);
    };
    let target = if kind == Kind::Symlink {
        match rustix::fs::readlinkat(dir, name, Vec::new())?.into_string() {
            Ok(t) => Some(t),
            Err(_) => return Ok(None),
        }
    } else {
        None
    };
    let (entry, stamp) = entry_of(&st, path.to_owned(), kind, target);
    Ok(Some((entry, stamp, st.st_nlink)))
}

/// What a walk lists of a `stat`: a directory, a regular file or a symlink (sockets,
/// fifos and devices are not pushed).
fn kind_of(st: &rustix::fs::Stat) -> Option<Kind> {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => Some(Kind::Dir),
        FileType::RegularFile => Some(Kind::File),
        FileType::Symlink => Some(Kind::Symlink),
        _ => None,
    }
}

/// The entry at `path` of kind `kind` (with a symlink's `target`) and its stamp, from
/// its `stat`.
fn entry_of(
    st: &rustix::fs::Stat,
    path: String,
    kind: Kind,
    target: Option<String>,
) -> (Entry, Stamp) {
    let entry = Entry {
        path,
        kind,
        size: if kind == Kind::File {
            st.st_size as u64
        } else {
            0
        },
        meta: Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            mtime_ns: st.st_mtime_nsec as u32,
        },
        hash: None,
        other: target.map(Box::new),
    };
    let stamp = Stamp {
        ctime: st.st_ctime,
        ctime_ns: st.st_ctime_nsec as u32,
        ino: st.st_ino,
    };
    (entry, stamp)
}

/// Walks `root` (which must be a directory; the root itself is not an entry). Excluded
/// entries are left out and excluded directories not entered. Directories are read on
/// up to [`walk_threads`] threads (the kernel's `stat` is most of a walk's time). A tree
/// of more than [`MAX_ENTRIES`] entries is an error, found before more than a few
/// thousand past it are held: what a push holds in memory is bounded by that.
pub fn walk(root: &Path, excludes: Option<&Excludes>) -> Result<Walked, String> {
    walk_limited(root, excludes, walk_threads(), MAX_ENTRIES)
}

/// Threads for a walk: one a core, four at most (a push should not take every core of a
/// big machine; measured here on two: 200 000 entries in 0.18 s against 0.34 s on one).
pub fn walk_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

/// What one thread of a walk found besides the entries (those go, a directory at a
/// time, into the walk's one vector: no second copy of the listing to merge).
#[derive(Default)]
struct Part {
    /// (device, inode, index in the walk's vector) of each file with more than one link.
    links: Vec<(u64, u64, usize)>,
    errors: Vec<String>,
    unread: Vec<String>,
    temps: Vec<String>,
}

/// One directory as read: where its entries (sorted by name) sit in the walk's vector,
/// and where its subdirectories' own blocks go among them in the paths' byte order
/// (`Gathered::descend[from..to]`). Indexes are `u32`: a walk holds fewer entries.
#[derive(Default, Clone, Copy)]
struct Block {
    start: u32,
    len: u32,
    from: u32,
    to: u32,
}

/// What the walk's threads gathered: the entries, a directory's together, each
/// directory's block (the root's first), and for each block's subdirectories in order
/// (how many of the block's entries come first, the subdirectory's block). A directory
/// `d`'s subtree sorts as `d/`: after `d` itself and after a sibling such as `d-1` or
/// `d.txt` (`-` and `.` are below `/`), before `d0`.
#[derive(Default)]
struct Gathered {
    entries: Vec<(Entry, Stamp)>,
    blocks: Vec<Block>,
    descend: Vec<(u32, u32)>,
}

/// The directories left to read (with the block each fills), and how many threads are
/// reading one now.
struct Queue {
    state: Mutex<(Vec<(String, usize)>, usize)>,
    more: Condvar,
}

impl Queue {
    /// The next directory to read; `None` when none is left and none is being read (the
    /// walk is over).
    fn take(&self) -> Option<(String, usize)> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(dir) = g.0.pop() {
                g.1 += 1;
                return Some(dir);
            }
            if g.1 == 0 {
                return None;
            }
            g = self.more.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A directory read: its subdirectories join the queue.
    fn done(&self, subdirs: Vec<(String, usize)>) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.1 -= 1;
        let wake = !subdirs.is_empty() || g.1 == 0;
        g.0.extend(subdirs);
        drop(g);
        if wake {
            self.more.notify_all();
        }
    }
}

/// An entry's name: its path less the `skip` bytes of its directory's path and `/`.
fn named(e: &(Entry, Stamp), skip: usize) -> &str {
    e.0.path.get(skip..).unwrap_or_default()
}

/// `a/` against `b/`: how a directory's subtree sorts among its siblings' subtrees.
fn cmp_subtrees(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes().chain([b'/']).cmp(b.bytes().chain([b'/']))
}

/// Puts `v[perm[i]]` at `i` for every `i`, in place (`perm` is used up: left as the
/// identity).
fn permute<T>(v: &mut [T], perm: &mut [u32]) {
    debug_assert_eq!(v.len(), perm.len());
    for i in 0..v.len() {
        let mut cur = i;
        loop {
            let next = perm[cur] as usize;
            perm[cur] = cur as u32;
            if next == i {
                break;
            }
            v.swap(cur, next);
            cur = next;
        }
    }
}

/// The walk's vector, read a directory at a time (each directory's entries together,
/// sorted by name), into the paths' byte order: the blocks followed depth first, each
/// subdirectory's block where its subtree sorts. No comparison of whole paths.
fn byte_order(g: &mut Gathered) {
    let mut perm: Vec<u32> = Vec::with_capacity(g.entries.len());
    // (block, its entries placed, its next subdirectory in `g.descend`)
    let root = g.blocks.first().map_or(0, |b| b.from);
    let mut stack: Vec<(usize, u32, u32)> = vec![(0, 0, root)];
    while let Some((b, placed, next)) = stack.last_mut() {
        let block = g.blocks[*b];
        let sub = (*next < block.to).then(|| g.descend[*next as usize]);
        match sub {
            Some((before, sub)) if before == *placed => {
                *next += 1;
                let from = g.blocks[sub as usize].from;
                stack.push((sub as usize, 0, from));
            }
            _ if *placed < block.len => {
                perm.push(block.start + *placed);
                *placed += 1;
            }
            _ => {
                stack.pop();
            }
        }
    }
    debug_assert_eq!(perm.len(), g.entries.len());
    permute(&mut g.entries, &mut perm);
}

#[cfg(test)]
fn walk_on(root: &Path, excludes: Option<&Excludes>, threads: usize) -> Result<Walked, String> {
    walk_limited(root, excludes, threads, MAX_ENTRIES)
}

/// How often a directory being read checks the walk's count against its limit.
const COUNT_EVERY: usize = 1024;

fn walk_limited(
    root: &Path,
    excludes: Option<&Excludes>,
    threads: usize,
    limit: usize,
) -> Result<Walked, String> {
    let top = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    if !top.is_dir() {
        return Err(format!("{} is not a directory", root.display()));
    }
    let queue = Queue {
        state: Mutex::new((vec![(String::new(), 0)], 0)),
        more: Condvar::new(),
    };
    let top_fd = open_root(root).map_err(|e| format!("{}: {e}", root.display()))?;
    // The walk never holds more than `limit` entries: indexes into it fit in a `u32`.
    if u32::try_from(limit).is_err() {
        return Err(format!(
            "{}: a walk of more than 4 billion entries",
            root.display()
        ));
    }
    let all = Mutex::new(Gathered {
        blocks: vec![Block::default()],
        ..Gathered::default()
    });
    // Entries read so far (a directory's counted every `COUNT_EVERY` entries as it is
    // read, the rest once it is), and whether past `limit`.
    let counted = AtomicUsize::new(0);
    let over = std::sync::atomic::AtomicBool::new(false);
    let work = |part: &mut Part| {
        // One buffer of directory entries a thread, and one for a directory's entries,
        // for every directory it reads.
        let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
        let mut entries: Vec<(Entry, Stamp)> = Vec::new();
        let mut links: Vec<(u64, u64, usize)> = Vec::new();
        while let Some((dir, id)) = queue.take() {
            if over.load(Ordering::Relaxed) {
                // Past the limit: what is queued is let go unread.
                queue.done(Vec::new());
                continue;
            }
            let within = read_dir(
                root,
                &top_fd,
                &dir,
                excludes,
                part,
                &mut entries,
                &mut links,
                &mut buf,
                // Counted as they are read, so that directories read at once on
                // several threads cannot each hold up to the limit.
                || {
                    !over.load(Ordering::Relaxed)
                        && counted.fetch_add(COUNT_EVERY, Ordering::Relaxed) + COUNT_EVERY <= limit
                },
            );
            let rest = entries.len() % COUNT_EVERY;
            if !within || counted.fetch_add(rest, Ordering::Relaxed) + rest > limit {
                over.store(true, Ordering::Relaxed);
                entries.clear();
                links.clear();
                queue.done(Vec::new());
                continue;
            }
            // By name (every path here begins with `dir/`).
            let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
            let mut order: Vec<u32> = (0..entries.len() as u32).collect();
            order.sort_unstable_by(|&a, &b| {
                named(&entries[a as usize], skip).cmp(named(&entries[b as usize], skip))
            });
            // Where each file with links went (most directories have none).
            if !links.is_empty() {
                let mut at = vec![0usize; entries.len()];
                for (to, &from) in order.iter().enumerate() {
                    at[from as usize] = to;
                }
                for link in &mut links {
                    link.2 = at[link.2];
                }
            }
            permute(&mut entries, &mut order);
            let mut subdirs: Vec<usize> = (0..entries.len())
                .filter(|&i| entries[i].0.kind == Kind::Dir)
                .collect();
            subdirs.sort_unstable_by(|&a, &b| {
                cmp_subtrees(named(&entries[a], skip), named(&entries[b], skip))
            });
            let before: Vec<usize> = subdirs
                .iter()
                .map(|&d| {
                    let key = named(&entries[d], skip);
                    entries.partition_point(|e| {
                        named(e, skip).bytes().cmp(key.bytes().chain([b'/']))
                            == std::cmp::Ordering::Less
                    })
                })
                .collect();
            let mut queued: Vec<(String, usize)> = Vec::with_capacity(subdirs.len());
            {
                let mut g = all.lock().unwrap_or_else(|e| e.into_inner());
                let g = &mut *g;
                let start = g.entries.len();
                let from = g.descend.len() as u32;
                for (&d, before) in subdirs.iter().zip(before) {
                    let sub = g.blocks.len();
                    g.descend.push((before as u32, sub as u32));
                    queued.push((entries[d].0.path.clone(), sub));
                    g.blocks.push(Block::default());
                }
                g.blocks[id] = Block {
                    start: start as u32,
                    len: entries.len() as u32,
                    from,
                    to: g.descend.len() as u32,
                };
                part.links
                    .extend(links.drain(..).map(|(dev, ino, i)| (dev, ino, start + i)));
                g.entries.append(&mut entries);
            }
            queue.done(queued);
        }
    };
    let mut parts: Vec<Part> = Vec::new();
    if threads <= 1 {
        let mut part = Part::default();
        work(&mut part);
        parts.push(part);
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut part = Part::default();
                        work(&mut part);
                        part
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(part) => parts.push(part),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
        });
    }
    if over.into_inner() {
        return Err(format!(
            "{} holds more than {limit} entries, the most one push job takes: split it into \
             several jobs (a path each), or exclude part of it",
            root.display()
        ));
    }
    let mut gathered = all.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut w = Walked {
        root_dev: top.dev(),
        ..Walked::default()
    };
    let mut links: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for part in parts {
        for (dev, ino, i) in part.links {
            links.entry((dev, ino)).or_default().push(i);
        }
        w.errors.extend(part.errors);
        w.unread.extend(part.unread);
        w.temps.extend(part.temps);
    }
    // Hard links: every name but the first (in path order) points at the first.
    let all = &mut gathered.entries;
    for group in links.values().filter(|g| g.len() > 1) {
        let Some(&lead) = group
            .iter()
            .min_by(|a, b| all[**a].0.path.cmp(&all[**b].0.path))
        else {
            continue;
        };
        let leader = all[lead].0.path.clone();
        for &i in group {
            if i != lead {
                all[i].0.set_link(&leader);
            }
        }
    }
    byte_order(&mut gathered);
    w.entries = gathered.entries;
    debug_assert!(w.entries.windows(2).all(|p| p[0].0.path < p[1].0.path));
    w.errors.sort_unstable();
    w.unread.sort_unstable();
    w.temps.sort_unstable();
    Ok(w)
}

/// Reads the directory `dir` of the tree at `root` (open as `top`) into `entries` (in the
/// order listed), with (device, inode, index in `entries`) of each file with more than one
/// link in `links`, and what could not be read into `part`. Raw `getdents64` into one
/// buffer and `fstatat` on each name beside the directory's descriptor: no allocation a
/// name but the entry's path. Every [`COUNT_EVERY`] entries it asks `within` whether the
/// walk is still within its limit (counting them), and stops (returning `false`) when not.
#[allow(clippy::too_many_arguments)]
fn read_dir(
    root: &Path,
    top: &OwnedFd,
    dir: &str,
    excludes: Option<&Excludes>,
    part: &mut Part,
    entries: &mut Vec<(Entry, Stamp)>,
    links: &mut Vec<(u64, u64, usize)>,
    buf: &mut Vec<u8>,
    within: impl Fn() -> bool,
) -> bool {
    use rustix::fs::{AtFlags, Mode, OFlags, RawDir, ResolveFlags};
    let full = if dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    // Opened beneath the root through no symlink: a directory (or one above it) replaced
    // by a symlink since it was listed is not entered, and nothing outside the tree is
    // read (the root itself may be a symlink, as before).
    let opened = if dir.is_empty() {
        rustix::fs::openat(
            top,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    } else {
        rustix::fs::openat2(
            top,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    };
    let fd = match opened {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if !dir.is_empty() => return true,
        Err(e) => {
            part.errors
                .push(format!("{}: {}", full.display(), std::io::Error::from(e)));
            part.unread.push(dir.to_owned());
            return true;
        }
    };
    let mut names = RawDir::new(&fd, buf.spare_capacity_mut());
    while let Some(de) = names.next() {
        let de = match de {
            Ok(de) => de,
            Err(e) => {
                part.errors
                    .push(format!("{}: {}", full.display(), std::io::Error::from(e)));
                part.unread.push(dir.to_owned());
                break;
            }
        };
        let cname = de.file_name();
        let bytes = cname.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let Ok(name) = std::str::from_utf8(bytes) else {
            part.errors.push(format!(
                "{}: a name that is not UTF-8 (not pushed)",
                full.join(std::ffi::OsStr::from_bytes(bytes)).display()
            ));
            continue;
        };
        let path = if dir.is_empty() {
            name.to_owned()
        } else {
            let mut p = String::with_capacity(dir.len() + 1 + name.len());
            p.push_str(dir);
            p.push('/');
            p.push_str(name);
            p
        };
        if name.starts_with(TEMP_PREFIX) {
            part.temps.push(path);
            continue;
        }
        let st = match rustix::fs::statat(&fd, cname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => {
                part.errors.push(format!(
                    "{}: {}",
                    full.join(name).display(),
                    std::io::Error::from(e)
                ));
                part.unread.push(path);
                continue;
            }
        };
        let Some(kind) = kind_of(&st) else {
            continue;
        };
        if excludes.is_some_and(|x| x.excluded(&path, kind == Kind::Dir)) {
            continue;
        }
        let target = if kind == Kind::Symlink {
            match rustix::fs::readlinkat(&fd, cname, Vec::new()) {
                Ok(t) => match t.into_string() {
                    Ok(t) => Some(t),
                    Err(_) => {
                        part.errors
                            .push(format!("{path}: a symlink target that is not UTF-8"));
                        part.unread.push(path);
                        continue;
                    }
                },
                Err(e) => {
                    part.errors
                        .push(format!("{path}: {}", std::io::Error::from(e)));
                    part.unread.push(path);
                    continue;
                }
            }
        } else {
            None
        };
        if kind == Kind::File && st.st_nlink > 1 {
            links.push((st.st_dev, st.st_ino, entries.len()));
        }
        entries.push(entry_of(&st, path, kind, target));
        if entries.len() % COUNT_EVERY == 0 && !within() {
            return false;
        }
    }
    true
}

/// Takes each file's hash from `manifest` where its stamp, size and mtime are those the
/// manifest recorded (the file was not touched since).
pub fn reuse_hashes(w: &mut Walked, manifest: &Manifest) {
    // Both sorted by path: walked side by side, no lookup.
    let mut known = manifest.entries.as_slice().iter().peekable();
    for (e, s) in &mut w.entries {
        while known.next_if(|(k, _)| k.path < e.path).is_some() {}
        if e.kind != Kind::File {
            continue;
        }
        if let Some((old, old_stamp)) = known.peek().filter(|(k, _)| k.path == e.path) {
            if old_stamp == s
                && old.size == e.size
                && old.meta.mtime == e.meta.mtime
                && old.meta.mtime_ns == e.meta.mtime_ns
            {
                e.hash = old.hash;
            }
        }
    }
}

/// Hashes every file without a hash, on up to `threads` threads. A file that vanished
/// meanwhile is dropped from the walk; one that cannot be read is dropped and named in
/// `errors`. Hard-linked names share their leader's hash. Returns the bytes read.
pub fn hash_missing(root: &Path, w: &mut Walked, threads: usize) -> u64 {
    let todo: Vec<usize> = (0..w.entries.len())
        .filter(|&i| {
            let e = &w.entries[i].0;
            e.kind == Kind::File && e.hash.is_none() && e.link().is_none()
        })
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(todo.len()));
    let read = AtomicUsize::new(0);
    let top = open_root(root);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = todo.get(k) else { break };
                let r = open_beneath(&top, &w.entries[i].0.path).and_then(|f| hash_open(&f));
                if let Ok((_, n)) = &r {
                    read.fetch_add(*n as usize, Ordering::Relaxed);
                }
                if let Ok(mut v) = results.lock() {
                    v.push((i, r));
                }
            });
        }
    });
    let mut drop = vec![false; w.entries.len()];
    for (i, r) in results.into_inner().unwrap_or_default() {
        match r {
            Ok((h, _)) => w.entries[i].0.hash = Some(h),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    w.errors.push(format!("{}: {e}", w.entries[i].0.path));
                    w.unread.push(w.entries[i].0.path.clone());
                }
                drop[i] = true;
            }
        }
    }
    // Hard-linked names take their leader's hash (looked up without copying a path).
    if w.entries.iter().any(|(e, _)| e.link().is_some()) {
        let fills: Vec<(usize, Option<super::Hash>)> = {
            let leaders: HashMap<&str, Option<super::Hash>> = w
                .entries
                .iter()
                .enumerate()
                .filter(|(i, (e, _))| !drop[*i] && e.kind == Kind::File && e.link().is_none())
                .map(|(_, (e, _))| (e.path.as_str(), e.hash))
                .collect();
            w.entries
                .iter()
                .enumerate()
                .filter_map(|(i, (e, _))| {
                    let l = e.link()?;
                    Some((i, leaders.get(l).copied().flatten()))
                })
                .collect()
        };
        for (i, h) in fills {
            w.entries[i].0.hash = h;
        }
    }
    let mut i = 0;
    w.entries.retain(|(e, _)| {
        let keep = !drop[i] && (e.kind != Kind::File || e.hash.is_some());
        i += 1;
        keep
    });
    w.unread.sort_unstable();
    read.load(Ordering::Relaxed) as u64
}

/// Whether `path` is one of `unread` or lies under one of them ("" is the root).
fn under_unread(path: &str, unread: &HashSet<&str>) -> bool {
    unread.contains("")
        || unread.contains(path)
        || path
            .match_indices('/')
            .any(|(i, _)| unread.contains(&path[..i]))
}

/// Keeps what the replica holds (`believed`, sorted) at and under the paths the walk
/// could not read, as if the source still held it: a directory that could not be listed
/// or a file that could not be read (a failing disk) is neither deleted nor changed on
/// the replica by this push; the next push that reads them pushes them. Adds those
/// entries of the replica the walk lacks to it (a zero stamp, so the next push reads
/// them again) and keeps it sorted; returns how many.
pub fn keep_unread(w: &mut Walked, believed: &[&Entry]) -> usize {
    if w.unread.is_empty() {
        return 0;
    }
    let unread: HashSet<&str> = w.unread.iter().map(String::as_str).collect();
    let mut walked = w.entries.iter().map(|(e, _)| e.path.as_str()).peekable();
    let mut missing: Vec<(Entry, Stamp)> = Vec::new();
    for b in believed {
        while walked.next_if(|p| *p < b.path.as_str()).is_some() {}
        if walked.peek() == Some(&b.path.as_str()) {
            continue;
        }
        if under_unread(&b.path, &unread) {
            missing.push(((*b).clone(), Stamp::default()));
        }
    }
    let n = missing.len();
    if n > 0 {
        w.entries.extend(missing);
        w.entries.sort_unstable_by(|a, b| a.0.path.cmp(&b.0.path));
    }
    n
}

/// The blake3 of a file's bytes, and how many there were.
pub fn hash_file(path: &Path) -> std::io::Result<(super::Hash, u64)> {
    hash_open(&std::fs::File::open(path)?)
}

fn hash_open(f: &std::fs::File) -> std::io::Result<(super::Hash, u64)> {
    let mut h = blake3::Hasher::new();
    h.update_reader(f)?;
    let n = f.metadata()?.len();
    Ok((super::Hash(*h.finalize().as_bytes()), n))
}

/// The root of a tree to read, opened as a directory (following a symlink there: the
/// source's root may be one).
pub fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// [`open_in_tree`] of the root as [`open_root`] gave it: its error for every file when
/// the root could not be opened.
pub fn open_beneath(top: &std::io::Result<OwnedFd>, path: &str) -> std::io::Result<std::fs::File> {
    match top {
        Ok(top) => open_in_tree(top, path),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    }
}

/// Opens the file `path` of the tree open as `top` to read its content: beneath the root,
/// through no symlink, and only a regular file. A name swapped for a symlink (or a fifo,
/// or a directory above it for a symlink) after the walk is not followed: nothing from
/// outside the tree is hashed or sent under a name of the tree.
pub fn open_in_tree(top: &OwnedFd, path: &str) -> std::io::Result<std::fs::File> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let fd = rustix::fs::openat2(
        top,
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other(
            "no longer a regular file (replaced since the walk)",
        ));
    }
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_on_many_threads_lists_what_one_thread_lists() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for i in 0..300 {
            let d = r.join(format!("a{}/b{}", i % 7, i % 13));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
            if i % 50 == 0 {
                // Hard links across directories: the leader is the first name in path order.
                std::fs::hard_link(d.join(format!("f{i}")), r.join(format!("z-link{i}"))).unwrap();
                std::fs::hard_link(d.join(format!("f{i}")), r.join(format!("0-link{i}"))).unwrap();
                std::os::unix::fs::symlink("nowhere", d.join("sym")).unwrap();
                std::fs::write(d.join(format!("{TEMP_PREFIX}{i}")), b"").unwrap();
            }
        }
        let x = Excludes::new(&["b3/".into()]).unwrap();
        let one = walk_on(r, Some(&x), 1).unwrap();
        assert!(one.entries.len() > 300, "{}", one.entries.len());
        assert!(!one.entries.iter().any(|(e, _)| e.path.contains("/b3/")));
        assert_eq!(one.temps.len(), 5, "six made, one in an excluded directory");
        let linked: Vec<_> = one
            .entries
            .iter()
            .filter_map(|(e, _)| Some((e.path.as_str(), e.link()?)))
            .collect();
        assert!(linked.contains(&("z-link0", "0-link0")), "{linked:?}");
        assert!(linked.contains(&("a0/b0/f0", "0-link0")), "{linked:?}");
        for threads in [2, 4] {
            for _ in 0..5 {
                let many = walk_on(r, Some(&x), threads).unwrap();
                assert_eq!(many.entries, one.entries);
                assert_eq!(many.temps, one.temps);
                assert_eq!(many.errors, one.errors);
                assert_eq!(many.root_dev, one.root_dev);
            }
        }
    }

    /// The walk's order is the paths' byte order, which is not a depth-first walk with
    /// each directory sorted by name: `c-d` and `c.e` sort before `c/x` (`-` and `.` are
    /// below `/`), `c/` before `c0`.
    #[test]
    fn a_walk_lists_in_the_byte_order_of_the_paths() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["c/c/q", "c/c-1", "c-d/y", "c d", "é/a", "c0/0", "d"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in [
            "c.e", "c!", "c/x", "c/ z", "c/c.txt", "c/c/q/f", "c-d/y/z", "cc", "é/a/b",
        ] {
            std::fs::write(r.join(f), f).unwrap();
        }
        std::fs::hard_link(r.join("c/x"), r.join("c-d/x")).unwrap();
        let mut expected: Vec<String> = Vec::new();
        let mut todo = vec![r.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                expected.push(p.strip_prefix(r).unwrap().to_str().unwrap().to_owned());
                if p.is_dir() {
                    todo.push(p);
                }
            }
        }
        expected.sort();
        for threads in [1, 2, 4] {
            let w = walk_on(r, None, threads).unwrap();
            let paths: Vec<&str> = w.entries.iter().map(|(e, _)| e.path.as_str()).collect();
            assert_eq!(paths, expected, "{threads} threads");
            assert_eq!(
                paths[..9],
                ["c", "c d", "c!", "c-d", "c-d/x", "c-d/y", "c-d/y/z", "c.e", "c/ z"]
            );
            let links: Vec<_> = w
                .entries
                .iter()
                .filter_map(|(e, _)| Some((e.path.as_str(), e.link()?)))
                .collect();
            // `c-d/x` comes before `c/x` in byte order: it leads.
            assert_eq!(links, [("c/x", "c-d/x")], "{threads} threads");
        }
    }

    /// A tree past the walk's limit is an error that says what to do: one entry past it,
    /// and a directory alone far bigger than it.
    #[test]
    fn a_walk_past_its_limit_is_refused_with_what_to_do() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in 0..3 {
            std::fs::create_dir(r.join(format!("d{d}"))).unwrap();
            for f in 0..40 {
                std::fs::write(r.join(format!("d{d}/f{f}")), b"").unwrap();
            }
        }
        for threads in [1, 2] {
            assert_eq!(
                walk_limited(r, None, threads, 123).unwrap().entries.len(),
                123
            );
            let e = walk_limited(r, None, threads, 122).unwrap_err();
            assert!(
                e.contains("more than 122 entries") && e.contains("split"),
                "{e}"
            );
        }
        let big = r.join("d1");
        for f in 40..3000 {
            std::fs::write(big.join(format!("f{f}")), b"").unwrap();
        }
        for threads in [1, 2] {
            let e = walk_limited(r, None, threads, 1500).unwrap_err();
            assert!(e.contains("more than 1500 entries"), "{e}");
            assert_eq!(
                walk_limited(r, None, threads, 3083).unwrap().entries.len(),
                3083
            );
        }
    }

    /// Names swapped for symlinks between the walk and the reading of their content (a
    /// local user racing the push): nothing outside the tree is read under their names.
    #[test]
    fn content_is_read_beneath_the_root_through_no_symlink() {
        let t = tempfile::tempdir().unwrap();
        let (r, outside) = (t.path().join("tree"), t.path().join("outside"));
        std::fs::create_dir_all(r.join("d")).unwrap();
        std::fs::create_dir_all(outside.join("d")).unwrap();
        for p in ["d/f", "g", "h", "ok"] {
            std::fs::write(r.join(p), b"mine").unwrap();
        }
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        std::fs::write(outside.join("d/f"), b"secret").unwrap();
        let mut w = walk(&r, None).unwrap();
        // After the walk: a file becomes a symlink out, a directory a symlink to one
        // outside holding the same name, another file a fifo.
        std::fs::remove_file(r.join("g")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), r.join("g")).unwrap();
        std::fs::remove_dir_all(r.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.join("d"), r.join("d")).unwrap();
        std::fs::remove_file(r.join("h")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("h"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        hash_missing(&r, &mut w, 2);
        let secret = super::super::Hash(*blake3::hash(b"secret").as_bytes());
        let hashed: Vec<_> = w
            .entries
            .iter()
            .filter(|(e, _)| e.kind == Kind::File)
            .map(|(e, _)| (e.path.as_str(), e.hash))
            .collect();
        assert_eq!(
            hashed,
            [(
                "ok",
                Some(super::super::Hash(*blake3::hash(b"mine").as_bytes()))
            )],
            "errors: {:?}",
            w.errors
        );
        assert!(!hashed.iter().any(|(_, h)| *h == Some(secret)));
        assert_eq!(w.errors.len(), 3, "{:?}", w.errors);
        let top = open_root(&r).unwrap();
        assert!(open_in_tree(&top, "ok").is_ok());
        for p in ["g", "d/f", "h", "d", "../outside/secret"] {
            assert!(open_in_tree(&top, p).is_err(), "{p}");
        }
        // The source's root itself may be a symlink (followed there only).
        std::os::unix::fs::symlink(&r, t.path().join("link")).unwrap();
        let top = open_root(&t.path().join("link")).unwrap();
        assert!(open_in_tree(&top, "ok").is_ok());
        assert!(walk(&t.path().join("link"), None).is_ok());
    }

    fn file(path: &str) -> Entry {
        Entry::new(path.into(), Kind::File, 1, Meta::default(), None)
    }

    #[test]
    fn what_could_not_be_read_is_kept_as_the_replica_holds_it() {
        let mut w = Walked {
            entries: ["a", "d", "z"]
                .iter()
                .map(|p| (file(p), Stamp::default()))
                .collect(),
            unread: vec!["d".into(), "f".into()],
            ..Walked::default()
        };
        let replica: Vec<Entry> = ["a", "d", "d-e", "d/x", "d/y/z", "e", "f", "f/g", "z"]
            .iter()
            .map(|p| file(p))
            .collect();
        let believed: Vec<&Entry> = replica.iter().collect();
        assert_eq!(keep_unread(&mut w, &believed), 4);
        let paths: Vec<_> = w.entries.iter().map(|(e, _)| e.path.as_str()).collect();
        // "d-e" and "e" are gone from the source for real: still deleted.
        assert_eq!(paths, ["a", "d", "d/x", "d/y/z", "f", "f/g", "z"]);
        // The root unread: all of the replica is kept.
        w.unread = vec![String::new()];
        assert_eq!(keep_unread(&mut w, &believed), 2);
        assert_eq!(w.entries.len(), replica.len());
        // Nothing unread: nothing added.
        let mut clean = Walked::default();
        assert_eq!(keep_unread(&mut clean, &believed), 0);
    }

    #[test]
    fn walk_sees_every_kind_and_never_follows_links() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("d/empty")).unwrap();
        std::fs::write(r.join("d/f"), b"hello").unwrap();
        std::fs::hard_link(r.join("d/f"), r.join("a-link")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("d/etc")).unwrap();
        std::fs::write(r.join("d/x.tmp"), b"").unwrap();
        std::fs::write(r.join(format!("d/{TEMP_PREFIX}1")), b"").unwrap();
        let x = Excludes::new(&["*.tmp".into()]).unwrap();
        let mut w = walk(r, Some(&x)).unwrap();
        hash_missing(r, &mut w, 2);
        let got: Vec<_> = w
            .entries
            .iter()
            .map(|(e, _)| (e.path.as_str(), e.kind, e.link(), e.target()))
            .collect();
        assert_eq!(
            got,
            [
                ("a-link", Kind::File, None, None),
                ("d", Kind::Dir, None, None),
                ("d/empty", Kind::Dir, None, None),
                ("d/etc", Kind::Symlink, None, Some("/etc")),
                ("d/f", Kind::File, Some("a-link"), None),
            ]
        );
        assert_eq!(w.temps, [format!("d/{TEMP_PREFIX}1")]);
        let h = super::super::Hash(*blake3::hash(b"hello").as_bytes());
        assert_eq!(w.entries[0].0.hash, Some(h));
        assert_eq!(
            w.entries[4].0.hash,
            Some(h),
            "a hard link shares its leader's hash"
        );
    }
}
