//! The receiving end of a push (blocking; run it on a thread of its own).
//!
//! Every write goes through a directory descriptor opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` under the replica's root, and the last name is used with
//! `*at` calls that do not follow symlinks: no path from the sender can leave the tree,
//! pass through a symlink, or write through one. File contents go to a temp file in the
//! target's directory; completed temp files are made durable together (`syncfs`, one
//! flush for a batch instead of an fsync each) and only then renamed over their names,
//! with their metadata already set; the directories are flushed again at the end. A full
//! batch is made durable and renamed on a thread of its own while the next one is
//! written (one batch behind at most; links, metadata, deletions and the end wait for it).
//! A push cut off at any moment leaves every file old or new; the next walk removes temp
//! files.

use super::chunk::{self, Params};
use super::plan::{How, Step};
use super::wire::{self, Frame, Open, ToReceiver, ToSender, WireError};
use super::{check_path, parent, shown, Entry, Hash, Kind, Manifest, Meta, MAX_PATH, TEMP_PREFIX};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// At most this many files may be open (being written) at once.
const MAX_OPEN: usize = 256;
/// A batch of completed files is made durable and renamed at this many files or bytes
/// (however many directories they lie in: a batch holds no directory open, each is
/// opened again, beneath the root, for its renames).
const BATCH_FILES: usize = 1024;
/// At most this many chunk records announced and not yet checked, all open files
/// together (20 bytes each on the wire, about as much here).
const MAX_SESSION_CHUNKS: u64 = 1 << 22;
/// A failure reason is kept (and logged) up to this many bytes.
const MAX_REASON: usize = 300;
const BATCH_BYTES: u64 = 256 << 20;
/// Bases being chunked ahead (read, not yet taken by their file's chunk list), all
/// together, at most this many bytes: their chunk lists wait in memory. A basis that
/// does not fit is chunked when its list is complete, as before.
const AHEAD_BYTES: u64 = if cfg!(test) { 4 << 20 } else { 64 << 20 };
/// Threads chunking bases ahead, started at a push's first delta.
const AHEAD_THREADS: usize = 2;

/// The free space a received file must leave on the replica's filesystem (and on the
/// state directory's): a peer's 20 GB of zeros, which cost it nothing on the wire, cannot
/// fill this node's disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserve {
    /// 5% of the filesystem, at most 2 GiB (the default).
    Auto,
    Percent(f64),
    Bytes(u64),
}

impl Reserve {
    /// The bytes to keep free on a filesystem of `total` bytes.
    pub fn of(self, total: u64) -> u64 {
        match self {
            Reserve::Auto => (total / 20).min(2 << 30),
            Reserve::Percent(p) => (total as f64 * p / 100.0) as u64,
            Reserve::Bytes(b) => b,
        }
    }
}

/// Whether `size` more bytes fit on the filesystem of `fd` above its reserve.
fn room(fd: impl AsFd, size: u64, reserve: Reserve, what: &str) -> std::io::Result<()> {
    let s = rustix::fs::fstatvfs(fd)?;
    let unit = s.f_frsize.max(1);
    let free = s.f_bavail.saturating_mul(unit);
    let keep = reserve.of(s.f_blocks.saturating_mul(unit));
    if free < size.saturating_add(keep) {
        return Err(std::io::Error::other(format!(
            "not written: {size} bytes would leave less than the reserve of {keep} bytes free on {what} ({free} free)"
        )));
    }
    Ok(())
}

/// Where and how this node keeps the replica of one job.
pub struct Target {
    pub root: PathBuf,
    /// `<state_dir>/diverged/SITE`: a timestamped directory under it receives what the
    /// first push after a role change would overwrite or delete.
    pub diverged_base: PathBuf,
    /// The receiver manifest of the last completed push, if any.
    pub manifest: Option<Arc<Manifest>>,
    /// The site's epoch now (recorded in the new manifest).
    pub epoch: i64,
    /// Keep what this push overwrites or deletes (first push after a role change).
    pub diverge: bool,
    /// Apply setuid bits, and setgid bits on files, as sent (the job's `keep_setuid`:
    /// "trust the peer with root"); otherwise they are dropped.
    pub keep_setuid: bool,
    /// This node's own rules for the job, enforced whatever the sender says: at most this
    /// many deletions unless the push is forced, and nothing written or deleted under an
    /// excluded path (local-only files stay the receiver's).
    pub max_delete: super::plan::Limit,
    pub exclude: Vec<String>,
    /// The free space every received file leaves on the replica's filesystem; a push is
    /// refused when the state directory (`state_dir`) has less than it free.
    pub reserve: Reserve,
    pub state_dir: Option<PathBuf>,
    /// Set from another thread when the session must end (a newer push of the same job
    /// supersedes it, or the site's role moved on): it stops at the next frame, before
    /// anything more is written or recorded.
    pub stop: Arc<Stop>,
    /// The longest a session may go without a complete frame (a sender trickling a byte
    /// at a time would reset a socket timeout forever, holding a push slot).
    pub idle: std::time::Duration,
}

/// The session's input: reading fails once [`Target::idle`] has passed since the last
/// complete frame.
struct Idle<R> {
    inner: R,
    since: tokio::time::Instant,
    limit: std::time::Duration,
}

impl<R: Read> Read for Idle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since.elapsed() > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no complete frame from the sender for {} s",
                    self.limit.as_secs()
                ),
            ));
        }
        self.inner.read(buf)
    }
}

/// Why a running session must stop; set once, by whoever ends it.
#[derive(Debug, Default)]
pub struct Stop(std::sync::OnceLock<String>);

impl Stop {
    /// Asks the session to stop, saying why (the first reason given is kept).
    pub fn stop(&self, reason: impl Into<String>) {
        let _ = self.0.set(reason.into());
    }

    pub fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

#[derive(Debug, Default)]
pub struct Received {
    /// Where the time went (walk, state, apply, syncfs, look again or walk after, manifest,
    /// save).
    pub phases: super::Phases,
    pub steps: u64,
    pub failed: Vec<(String, String)>,
    pub diverged: Vec<String>,
    pub diverged_dir: Option<PathBuf>,
    pub generation: String,
}

/// A protocol violation or an I/O failure of the session: the push stops.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Local(String),
}

fn refused<T>(why: impl Into<String>) -> Result<T, RecvError> {
    Err(RecvError::Refused(why.into()))
}

fn io_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", shown(what))
}

/// The replica's root and a small cache of confined directory descriptors.
struct Tree {
    root: Arc<OwnedFd>,
    cache: HashMap<String, Arc<OwnedFd>>,
}

impl Tree {
    /// The directory `rel` ("" for the root), opened beneath the root without following
    /// any symlink on the way.
    fn dir(&mut self, rel: &str) -> std::io::Result<Arc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(Arc::clone(&self.root));
        }
        if let Some(fd) = self.cache.get(rel) {
            return Ok(Arc::clone(fd));
        }
        let fd = Arc::new(rustix::fs::openat2(
            self.root.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )?);
        if self.cache.len() >= 256 {
            self.cache.clear();
        }
        self.cache.insert(rel.to_owned(), Arc::clone(&fd));
        Ok(fd)
    }

    /// The directory holding `path`, and `path`'s last name.
    fn at<'p>(&mut self, path: &'p str) -> std::io::Result<(Arc<OwnedFd>, &'p str)> {
        let name = path.rsplit('/').next().unwrap_or(path);
        Ok((self.dir(parent(path))?, name))
    }

    /// Opens a file beneath the root for reading, refusing symlinks anywhere.
    fn open_file(&self, path: &str) -> std::io::Result<File> {
        Ok(File::from(rustix::fs::openat2(
            self.root.as_fd(),
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )?))
    }
}

fn lstat_at(dir: &OwnedFd, name: &str) -> std::io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn temp_name() -> String {
    format!("{TEMP_PREFIX}{}", &super::new_generation()[..16])
}

fn times(meta: &Meta) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: meta.mtime,
        tv_nsec: i64::from(meta.mtime_ns),
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn check_meta(m: &Meta) -> Result<(), String> {
    if m.mtime_ns >= 1_000_000_000 {
        return Err("nanoseconds out of range".into());
    }
    if m.mode > 0o7777 {
        return Err("mode out of range".into());
    }
    if m.uid == u32::MAX || m.gid == u32::MAX {
        return Err("owner out of range".into());
    }
    Ok(())
}

enum Phase {
    /// Data arrives in order from offset 0.
    Literal { hasher: Box<blake3::Hasher> },
    /// Waiting for `expected` chunk records of a delta against `basis` (being chunked
    /// `ahead` meanwhile, when it fitted).
    ChunkList {
        params: Params,
        expected: u32,
        list: Vec<(u32, [u8; 16])>,
        basis: String,
        ahead: Option<Ahead>,
    },
    /// The chunks the basis lacked: byte ranges still to come.
    AwaitData {
        ranges: Vec<(u64, u64)>,
        remaining: u64,
    },
}

struct Incoming {
    path: String,
    dir: Arc<OwnedFd>,
    tmp: String,
    file: File,
    size: u64,
    hash: Hash,
    meta: Meta,
    written: u64,
    retried: bool,
    phase: Phase,
}

struct Done_ {
    path: String,
    tmp: String,
    hash: Hash,
}

/// A basis opened when its delta's step came and chunked on a worker thread while the
/// chunk list arrives: the basis and its chunks, or `None` when it could not be read.
type BaseChunks = Option<(File, Vec<chunk::Chunk>)>;

/// A basis to chunk ahead, with its chunking, and where its chunks go.
type AheadJob = (File, Params, std::sync::mpsc::SyncSender<BaseChunks>);

/// A basis being chunked ahead; its size counts against [`AHEAD_BYTES`] until it is
/// dropped (taken, or its file failed or the session ended).
struct Ahead {
    chunks: std::sync::mpsc::Receiver<BaseChunks>,
    bytes: u64,
    counted: Arc<AtomicU64>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.counted.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Threads chunking bases ahead of their chunk lists (the receiver's main thread reads
/// frames and writes meanwhile). They only read: a basis changed meanwhile costs only a
/// failed whole-file hash check, and the file is asked for whole.
struct Chunkers {
    jobs: Option<std::sync::mpsc::Sender<AheadJob>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Bytes of bases being chunked ahead or waiting to be taken.
    bytes: Arc<AtomicU64>,
}

impl Chunkers {
    fn start(stop: &Arc<Stop>) -> Chunkers {
        let (tx, rx) = std::sync::mpsc::channel::<AheadJob>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let threads = (0..AHEAD_THREADS)
            .map(|_| {
                let (rx, stop) = (Arc::clone(&rx), Arc::clone(stop));
                std::thread::spawn(move || loop {
                    let job = rx
                        .lock()
                        .map_err(|_| ())
                        .and_then(|r| r.recv().map_err(|_| ()));
                    let Ok((base, params, done)) = job else {
                        return;
                    };
                    let found = if stop.reason().is_some() {
                        None
                    } else {
                        chunk::chunks(&base, params).ok().map(|(c, _, _)| (base, c))
                    };
                    let _ = done.send(found);
                })
            })
            .collect();
        Chunkers {
            jobs: Some(tx),
            threads,
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Drop for Chunkers {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A batch made durable and renamed on a thread of its own: the paths it could not
/// rename, with why, or why the whole batch was not.
type Behind = std::thread::JoinHandle<Result<Vec<(String, String)>, String>>;

/// Makes `batch`'s temp files durable (`syncfs`), then renames each over its name, its
/// directory opened again beneath `root`. Once `stop` is set, the rest is removed instead
/// of renamed (nothing more is written for a push that is no longer wanted).
fn settle_batch(
    root: Arc<OwnedFd>,
    batch: Vec<Done_>,
    stop: Arc<Stop>,
) -> Result<Vec<(String, String)>, String> {
    let mut tree = Tree {
        root,
        cache: HashMap::new(),
    };
    let synced = rustix::fs::syncfs(tree.root.as_fd()).map_err(|e| format!("syncfs: {e}"));
    let mut failed = Vec::new();
    for d in batch {
        let Ok((dir, name)) = tree.at(&d.path) else {
            failed.push((d.path, "its directory is gone".to_owned()));
            continue;
        };
        if synced.is_err() || stop.reason().is_some() {
            let _ = rustix::fs::unlinkat(dir.as_fd(), d.tmp.as_str(), AtFlags::empty());
            continue;
        }
        if let Err(e) = rename_into_place(&dir, &d.tmp, name) {
            failed.push((d.path, e.to_string()));
        }
    }
    synced.map(|()| failed)
}

/// Renames `tmp` over `name` in `dir`; the temp file is removed when that fails.
fn rename_into_place(dir: &OwnedFd, tmp: &str, name: &str) -> std::io::Result<()> {
    let r = rustix::fs::renameat(dir.as_fd(), tmp, dir.as_fd(), name);
    if r.is_err() {
        let _ = rustix::fs::unlinkat(dir.as_fd(), tmp, AtFlags::empty());
    }
    Ok(r?)
}

struct Session<'a> {
    tree: Tree,
    target: &'a Target,
    owners: bool,
    open: HashMap<u32, Incoming>,
    /// Ids announced whose file failed: their data is read and dropped.
    dead: HashSet<u32>,
    seen: HashSet<u32>,
    /// Paths a file, symlink or hard link was written to in this push: a second one for
    /// the same path is a protocol error (it would move the first one's data aside over
    /// what was kept of the replica's own).
    written: HashSet<String>,
    /// A move into `diverged/` failed: the push is not confirmed as past the role change,
    /// so the next one keeps diverged data again.
    aside_failed: bool,
    pending: Vec<Done_>,
    pending_bytes: u64,
    /// The previous full batch, being made durable and renamed.
    behind: Option<Behind>,
    out: BufWriter<TcpStream>,
    r: Received,
    diverged_dir: Option<PathBuf>,
    /// Directory metadata set during the push, set again at the end (a late rename into a
    /// directory moves its mtime).
    dir_metas: Vec<(String, Meta)>,
    /// Where the apply phase's time went (`Phases::within`), and the part of it spent
    /// making batches durable and renaming them (kept apart from the work that called it).
    timing: super::Phases,
    flushing: std::time::Duration,
    excludes: super::Excludes,
    /// Chunk records announced by the files whose lists are still arriving.
    listed: u64,
    /// Content was written in this push, and since then a deletion came: the plan's
    /// order is type-change deletions, content, then deletions, so no content may follow
    /// (a push that dies midway never leaves a replica emptied before it was filled).
    content_seen: bool,
    deleting: bool,
    /// Entries the replica may lose in this push (`max_delete` of what it held), and how
    /// many it lost so far; `None` when the push is forced.
    may_delete: Option<u64>,
    deleted: u64,
    /// Threads chunking bases ahead (from the push's first delta on).
    chunkers: Option<Chunkers>,
    /// Files whose chunk lists are complete, waiting for their bases chunked ahead.
    awaiting: std::collections::VecDeque<u32>,
}

impl Drop for Session<'_> {
    /// A session that ends before its finish (an error, the peer gone, stopped) removes
    /// its temporary files now, not at the next push's walk.
    fn drop(&mut self) {
        // The batch behind finishes (or, stopped, removes its temp files) before the
        // session is over: nothing of a push is written after it returns.
        if let Some(b) = self.behind.take() {
            let _ = b.join();
        }
        for f in self.open.values() {
            let _ = rustix::fs::unlinkat(f.dir.as_fd(), f.tmp.as_str(), AtFlags::empty());
        }
        for d in std::mem::take(&mut self.pending) {
            if let Ok((dir, _)) = self.tree.at(&d.path) {
                let _ = rustix::fs::unlinkat(dir.as_fd(), d.tmp.as_str(), AtFlags::empty());
            }
        }
    }
}

/// Serves one push on `stream` (after the peer RPC `push` request): lists the replica,
/// applies the sender's steps and, at `finish`, makes them durable, calls `save` with the
/// new receiver manifest and answers `done`.
pub fn receive(
    stream: TcpStream,
    open: &Open,
    target: &Target,
    save: &mut dyn FnMut(Manifest) -> Result<(), String>,
) -> Result<Received, RecvError> {
    let write_half = stream
        .try_clone()
        .map_err(|e| RecvError::Local(e.to_string()))?;
    let mut out = BufWriter::with_capacity(64 << 10, write_half);
    let mut result = serve(stream, open, target, save, &mut out);
    if let (Err(_), Some(reason)) = (&result, target.stop.reason()) {
        // Stopped from outside (its socket's read side shut to wake it): that is why.
        result = Err(RecvError::Local(reason.to_owned()));
    }
    if let Err(e) = &result {
        let message = match e {
            RecvError::Refused(m) | RecvError::Local(m) => m.clone(),
            RecvError::Wire(w) => w.to_string(),
        };
        let _ = wire::write_msg(&mut out, &ToSender::Error { message });
        let _ = out.flush();
    }
    result
}

fn serve(
    stream: TcpStream,
    open: &Open,
    target: &Target,
    save: &mut dyn FnMut(Manifest) -> Result<(), String>,
    out: &mut BufWriter<TcpStream>,
) -> Result<Received, RecvError> {
    // The replica's root itself is never a symlink: writes would land wherever it points.
    if std::fs::symlink_metadata(&target.root).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(RecvError::Local(format!(
            "{} is a symlink: name the real directory in the job's path (a replica is written without following links)",
            target.root.display()
        )));
    }
    if !open.dry_run {
        std::fs::create_dir_all(&target.root)
            .map_err(|e| RecvError::Local(io_err(&target.root.display().to_string(), e)))?;
    }
    if open.dry_run && !target.root.exists() {
        // Nothing there yet: an empty replica, and nothing to do for a dry run.
        wire::write_msg(
            out,
            &ToSender::State {
                generation: String::new(),
                full: true,
                entries: Vec::new(),
                gone: Vec::new(),
                owners: rustix::process::geteuid().is_root(),
                last: true,
            },
        )?;
        out.flush().map_err(WireError::from)?;
        return Ok(Received::default());
    }
    let mut phases = super::Phases::default();
    let listing = super::walk::walk(&target.root, None).map_err(RecvError::Local)?;
    phases.mark("walk");
    let root = Arc::new(
        rustix::fs::open(
            &target.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RecvError::Local(io_err(&target.root.display().to_string(), e)))?,
    );
    let mut tree = Tree {
        root,
        cache: HashMap::new(),
    };
    if !open.dry_run {
        for t in &listing.temps {
            if let Ok((dir, name)) = tree.at(t) {
                let _ = rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty());
            }
        }
    }
    let owners = rustix::process::geteuid().is_root();
    // What the replica holds, with hashes where the manifest vouches for a file.
    let manifest = target.manifest.as_deref();
    let full = manifest.is_none_or(|m| Some(&m.generation) != open.generation.as_ref());
    // The listing as it is now (sorted by path, as the walk returns it), hashes filled in
    // where the manifest vouches for them, in place: the walk's own vector.
    let mut now: Listing = listing.entries;
    // What to report, as indexes into the listing (a full state is all of it: a copy of
    // each entry had doubled the listing's memory); sent a batch at a time.
    let mut report: Vec<usize> = Vec::new();
    // Listing and manifest are both sorted by path: walked side by side, no lookup.
    let mut manifest_entries = manifest
        .map_or(&[][..], |m| m.entries.as_slice())
        .iter()
        .peekable();
    // What the manifest holds and the replica no longer does (a full state has no use
    // for it: the sender takes the listing as all there is).
    let mut gone: Vec<String> = Vec::new();
    for (i, (e, stamp)) in now.iter_mut().enumerate() {
        while let Some((k, _)) = manifest_entries.next_if(|(k, _)| k.path < e.path) {
            if !full {
                gone.push(k.path.clone());
            }
        }
        let known = manifest_entries
            .next_if(|(k, _)| k.path == e.path)
            .map(|(k, s)| (k, s));
        let clean = known.is_some_and(|(k, s)| {
            s == stamp
                && k.kind == e.kind
                && k.size == e.size
                && k.meta == e.meta
                && k.target() == e.target()
                && k.link() == e.link()
        });
        if clean {
            e.hash = known.and_then(|(k, _)| k.hash);
        }
        if full || !clean {
            report.push(i);
        }
    }
    if !full {
        gone.extend(manifest_entries.map(|(k, _)| k.path.clone()));
    }
    let generation = manifest.map(|m| m.generation.clone()).unwrap_or_default();
    let mut batches = report.chunks(wire::STATE_BATCH).peekable();
    let mut gone = Some(gone);
    loop {
        let batch = batches.next().unwrap_or(&[]);
        let last = batches.peek().is_none();
        wire::write_msg(
            out,
            &ToSender::State {
                generation: generation.clone(),
                full,
                entries: batch.iter().map(|i| now[*i].0.clone()).collect(),
                gone: if last {
                    gone.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                owners,
                last,
            },
        )?;
        if last {
            break;
        }
    }
    out.flush().map_err(WireError::from)?;
    phases.mark("state");
    if open.dry_run {
        return Ok(Received {
            generation,
            ..Received::default()
        });
    }

    let excludes = super::Excludes::new(&target.exclude).map_err(RecvError::Local)?;
    // The state store must keep room to record this push.
    if let Some(state) = &target.state_dir {
        let fd = File::open(state)
            .map_err(|e| RecvError::Local(io_err(&state.display().to_string(), e)))?;
        room(&fd, 0, target.reserve, "the state directory's filesystem")
            .map_err(|e| RecvError::Local(format!("refused: {e}")))?;
    }
    let held = now.len() as u64;
    let may_delete = if open.force {
        tracing::warn!(site = %open.site, job = %open.job, "A forced push (past max_delete) from the peer");
        None
    } else {
        Some(match target.max_delete {
            super::plan::Limit::Count(n) => n,
            super::plan::Limit::Percent(pct) => (held as f64 * pct / 100.0).floor() as u64,
        })
    };
    let mut s = Session {
        excludes,
        listed: 0,
        content_seen: false,
        deleting: false,
        may_delete,
        deleted: 0,
        chunkers: None,
        awaiting: std::collections::VecDeque::new(),
        tree,
        target,
        owners,
        open: HashMap::new(),
        dead: HashSet::new(),
        seen: HashSet::new(),
        written: HashSet::new(),
        aside_failed: false,
        pending: Vec::new(),
        pending_bytes: 0,
        behind: None,
        out: BufWriter::with_capacity(
            64 << 10,
            out.get_ref()
                .try_clone()
                .map_err(|e| RecvError::Local(e.to_string()))?,
        ),
        r: Received::default(),
        diverged_dir: None,
        dir_metas: Vec::new(),
        timing: super::Phases::default(),
        flushing: std::time::Duration::ZERO,
    };
    let mut input = BufReader::with_capacity(
        256 << 10,
        Idle {
            inner: stream,
            since: tokio::time::Instant::now(),
            limit: target.idle,
        },
    );
    let mut hashes: HashMap<String, Hash> = HashMap::new();
    // The paths the steps name, to look at again after the push instead of walking the
    // whole replica; `None` once that would cost about as much as the walk (a look at one
    // path costs about what the walk spends on an entry, the directories holding them
    // come on top).
    let mut touched: Option<Vec<String>> = Some(Vec::new());
    let restat_most = (now.len() / 4).max(1024);
    let mut finishing = false;
    loop {
        if finishing && s.open.is_empty() {
            break;
        }
        if let Some(reason) = target.stop.reason() {
            return Err(RecvError::Local(reason.to_owned()));
        }
        if !s.awaiting.is_empty() {
            // Files whose bases were chunked ahead, taken up as their chunks come; with
            // nothing to read (the sender may be waiting for what they need), wait for
            // the first of them instead of for the sender.
            let idle = input.buffer().is_empty()
                && rustix::io::ioctl_fionread(&input.get_ref().inner).is_ok_and(|n| n == 0);
            timed(&mut s, "chunk lists and bases", |s| s.settle_ahead(idle))?;
            if idle {
                input.get_mut().since = tokio::time::Instant::now();
                continue;
            }
        }
        let waiting = tokio::time::Instant::now();
        let frame = wire::read_frame(&mut input)?;
        s.timing
            .add_within("reading the sender's frames", waiting.elapsed());
        input.get_mut().since = tokio::time::Instant::now();
        match frame {
            Frame::Msg(_) => match frame.msg::<ToReceiver>()? {
                ToReceiver::Step { id, step, delta } => {
                    if finishing {
                        return refused("a step after finish");
                    }
                    s.r.steps += 1;
                    if let Step::File { path, hash, .. } = &step {
                        hashes.insert(path.clone(), *hash);
                    }
                    // Hard links change every name of an inode: the walk sees them all.
                    let linking = matches!(step, Step::Hardlink { .. });
                    match &mut touched {
                        Some(t) if !linking && t.len() < restat_most => {
                            t.push(step.path().to_owned());
                        }
                        _ => touched = None,
                    }
                    timed(&mut s, "steps", |s| s.step(id, step, delta))?;
                }
                ToReceiver::Abandon { id, reason } => {
                    if let Some(f) = s.open.remove(&id) {
                        if let Phase::ChunkList { expected, .. } = &f.phase {
                            s.listed = s.listed.saturating_sub(u64::from(*expected));
                        }
                        let _ =
                            rustix::fs::unlinkat(f.dir.as_fd(), f.tmp.as_str(), AtFlags::empty());
                        s.fail(&f.path, format!("not sent: {reason}"));
                        s.dead.insert(id);
                    } else if !s.seen.contains(&id) {
                        return refused(format!("abandon of unknown file {id}"));
                    }
                }
                ToReceiver::Finish => finishing = true,
            },
            Frame::Data { id, offset, bytes } => {
                timed(&mut s, "writing data", |s| s.data(id, offset, &bytes))?
            }
            Frame::Chunks { id, list } => {
                timed(&mut s, "chunk lists and bases", |s| s.chunks(id, list))?
            }
        }
    }
    s.flush()?;
    for (path, meta) in std::mem::take(&mut s.dir_metas) {
        if let Ok((dir, name)) = s.tree.at(&path) {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            if let Ok(fd) = rustix::fs::openat(dir.as_fd(), name, flags, Mode::empty()) {
                let _ = set_meta(&fd, &meta, s.owners, s.target.keep_setuid);
            }
        }
    }
    // The replica's root as the source's (its mode, and owner when root receives).
    if let Some(meta) = &open.root_meta {
        if let Err(e) = check_meta(meta).map_err(|e| e.to_string()).and_then(|()| {
            set_meta(&s.tree.root, meta, s.owners, s.target.keep_setuid).map_err(|e| e.to_string())
        }) {
            s.fail("", format!("the replica's root: {e}"));
        }
    }
    phases.mark("apply");
    // Everything written is made durable before it is confirmed; a push that wrote
    // nothing has nothing to make durable (the root's metadata is set again by every push).
    if s.r.steps > 0 {
        rustix::fs::syncfs(s.tree.root.as_fd())
            .map_err(|e| RecvError::Local(format!("syncfs: {e}")))?;
    }
    phases.mark("syncfs");

    // The new receiver manifest: the tree as it is now, with the hashes we know.
    let mut generation = generation;
    if s.r.steps > 0 || manifest.is_none() || full {
        let failed: HashSet<&str> = s.r.failed.iter().map(|(p, _)| p.as_str()).collect();
        // The listing from before the push, with what the push touched looked at again
        // (moved, not copied), or back for the walk's hashes.
        let looked = match touched.filter(|_| manifest.is_some() && !full) {
            Some(t) => restat(&mut s.tree, now, t, &hashes),
            None => Err(now),
        };
        let mut m = Manifest {
            generation: if s.r.steps > 0 || generation.is_empty() {
                super::new_generation()
            } else {
                generation.clone()
            },
            root_dev: 0,
            // A move aside that failed keeps the replica armed for diverging: the next
            // push finds the epoch not reached yet and keeps what it replaces.
            epoch: if s.aside_failed {
                manifest
                    .as_ref()
                    .map_or(0, |m| m.epoch.min(target.epoch - 1))
            } else {
                target.epoch
            },
            entries: super::Entries::default(),
        };
        let mut entries = match looked {
            Ok(entries) => {
                phases.mark("look again");
                entries
            }
            Err(now) => {
                // The walk's own vector becomes the manifest's (sorted already): no copy.
                let mut entries = super::walk::walk(&target.root, None)
                    .map_err(RecvError::Local)?
                    .entries;
                phases.mark("walk after");
                for (e, _) in &mut entries {
                    if e.kind == Kind::File {
                        let lead = e.link().unwrap_or(e.path.as_str());
                        let hash = hashes.get(lead).copied().or_else(|| {
                            find(&now, lead)
                                .filter(|o| o.size == e.size && o.meta == e.meta)
                                .and_then(|o| o.hash)
                        });
                        e.hash = hash;
                    }
                }
                entries
            }
        };
        entries.retain(|(e, _)| !failed.contains(e.path.as_str()));
        m.entries = super::Entries::from_sorted(entries);
        if let Some(reason) = target.stop.reason() {
            // Not recorded as confirmed under an epoch that is no longer ours.
            return Err(RecvError::Local(reason.to_owned()));
        }
        phases.mark("new manifest");
        generation.clone_from(&m.generation);
        save(m).map_err(RecvError::Local)?;
        phases.mark("save manifest");
    }
    let mut r = std::mem::take(&mut s.r);
    for (name, spent) in std::mem::take(&mut s.timing.within) {
        phases.add_within(name, spent);
    }
    r.phases = phases;
    r.generation = generation.clone();
    r.diverged_dir = s.diverged_dir.take();
    wire::write_msg(
        out,
        &ToSender::Done {
            generation,
            failed: r.failed.clone(),
            diverged: r.diverged.clone(),
            diverged_dir: r.diverged_dir.as_ref().map(|d| d.display().to_string()),
        },
    )?;
    out.flush().map_err(WireError::from)?;
    Ok(r)
}

impl Session<'_> {
    fn fail(&mut self, path: &str, why: String) {
        // The reason may quote the peer: bounded and inert, as kept and as logged.
        let why = crate::inert(&why, MAX_REASON);
        tracing::warn!(path = %shown(path), error = %why, "Push: a file was not written");
        if self.r.failed.len() < 10_000 {
            self.r.failed.push((path.to_owned(), why));
        }
    }

    fn send(&mut self, msg: &ToSender) -> Result<(), RecvError> {
        wire::write_msg(&mut self.out, msg)?;
        self.out.flush().map_err(WireError::from)?;
        Ok(())
    }

    fn step(
        &mut self,
        id: u32,
        step: Step,
        delta: Option<wire::DeltaHead>,
    ) -> Result<(), RecvError> {
        if let Err(e) = check_path(step.path()) {
            return refused(e);
        }
        let is_dir = matches!(
            step,
            Step::Mkdir { .. }
                | Step::Delete {
                    kind: Kind::Dir,
                    ..
                }
                | Step::Meta {
                    kind: Kind::Dir,
                    ..
                }
        );
        match &step {
            Step::Delete { .. } => self.deleting = self.content_seen,
            Step::Meta { .. } => {}
            _ if self.deleting => {
                return refused(format!(
                    "{}: content after deletions (deletions come last in a push)",
                    shown(step.path())
                ))
            }
            _ => self.content_seen = true,
        }
        if self.excludes.excluded(step.path(), is_dir) {
            return refused(format!(
                "{} is excluded from this job by {}'s own config: a push never writes or deletes there",
                shown(step.path()),
                "this node"
            ));
        }
        if matches!(
            step,
            Step::File { .. } | Step::Symlink { .. } | Step::Hardlink { .. }
        ) && !self.written.insert(step.path().to_owned())
        {
            return refused(format!("{} written twice in one push", shown(step.path())));
        }
        match &step {
            // Hard links, metadata and deletions act on names already written (and a
            // deletion comes only after the content is durable); a directory or a
            // symlink depends on no file written before it.
            Step::File { .. } | Step::Mkdir { .. } | Step::Symlink { .. } => {}
            Step::Hardlink { .. } | Step::Meta { .. } | Step::Delete { .. } => self.flush()?,
        }
        match step {
            Step::Mkdir { path } => {
                let r = (|| -> std::io::Result<()> {
                    let (dir, name) = self.tree.at(&path)?;
                    match lstat_at(&dir, name)? {
                        Some(FileType::Directory) => return Ok(()),
                        Some(_) => self.remove(&dir, name, &path)?,
                        None => {}
                    }
                    rustix::fs::mkdirat(dir.as_fd(), name, Mode::from_raw_mode(0o700))?;
                    Ok(())
                })();
                if let Err(e) = r {
                    self.fail(&path, e.to_string());
                }
            }
            Step::File {
                path,
                size,
                hash,
                meta,
                how,
            } => {
                if !self.seen.insert(id) {
                    return refused(format!("file id {id} used twice"));
                }
                if let Err(e) = check_meta(&meta) {
                    return refused(format!("{}: {e}", shown(&path)));
                }
                if self.open.len() >= MAX_OPEN {
                    return refused(format!("over {MAX_OPEN} files in flight"));
                }
                let answers = !matches!(how, How::Literal);
                let created = (|| -> std::io::Result<Incoming> {
                    room(
                        self.tree.root.as_fd(),
                        size,
                        self.target.reserve,
                        "the replica's filesystem",
                    )?;
                    let (dir, _) = self.tree.at(&path)?;
                    let tmp = temp_name();
                    let fd = rustix::fs::openat(
                        dir.as_fd(),
                        tmp.as_str(),
                        OFlags::RDWR
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )?;
                    Ok(Incoming {
                        path: path.clone(),
                        dir,
                        tmp,
                        file: File::from(fd),
                        size,
                        hash,
                        meta,
                        written: 0,
                        retried: false,
                        phase: Phase::Literal {
                            hasher: Box::new(blake3::Hasher::new()),
                        },
                    })
                })();
                let mut f = match created {
                    Ok(f) => f,
                    Err(e) => {
                        self.fail(&path, e.to_string());
                        self.dead.insert(id);
                        if answers {
                            self.send(&ToSender::Need {
                                id,
                                all: false,
                                ranges: Vec::new(),
                            })?;
                        }
                        return Ok(());
                    }
                };
                match how {
                    How::Literal => {
                        if size == 0 {
                            return self.complete(f, false);
                        }
                        self.open.insert(id, f);
                    }
                    How::Copy { from } => {
                        if let Err(e) = check_path(&from) {
                            return refused(e);
                        }
                        let copied = (|| -> std::io::Result<bool> {
                            let mut src = self.tree.open_file(&from)?;
                            let mut hasher = blake3::Hasher::new();
                            let mut buf = vec![0u8; 256 << 10];
                            let mut n_total = 0u64;
                            loop {
                                let n = src.read(&mut buf)?;
                                if n == 0 {
                                    break;
                                }
                                n_total += n as u64;
                                if n_total > size {
                                    return Ok(false);
                                }
                                hasher.update(&buf[..n]);
                                f.file.write_all(&buf[..n])?;
                            }
                            Ok(n_total == size && Hash(*hasher.finalize().as_bytes()) == hash)
                        })();
                        if copied.unwrap_or(false) {
                            self.send(&ToSender::Need {
                                id,
                                all: false,
                                ranges: Vec::new(),
                            })?;
                            f.written = size;
                            return self.complete(f, true);
                        }
                        f.file
                            .set_len(0)
                            .map_err(|e| RecvError::Local(e.to_string()))?;
                        f.retried = true;
                        self.open.insert(id, f);
                        self.send(&ToSender::Need {
                            id,
                            all: true,
                            ranges: Vec::new(),
                        })?;
                    }
                    How::Delta { basis } => {
                        if let Err(e) = check_path(&basis) {
                            return refused(e);
                        }
                        let Some(head) = delta else {
                            return refused("a delta without its chunk count");
                        };
                        // The chunking is the receiver's own for this size, not the
                        // sender's choice: tiny chunks over a big basis would cost memory.
                        let own = super::chunk::Params::for_size(size);
                        let most = size / u64::from(own.min.max(1)) + 2;
                        if head.params != own
                            || head.chunks > wire::MAX_WIRE_CHUNKS
                            || u64::from(head.chunks) > most
                            || (head.chunks == 0) != (size == 0)
                        {
                            return refused(format!(
                                "{}: delta parameters out of bounds",
                                shown(&path)
                            ));
                        }
                        self.listed += u64::from(head.chunks);
                        if self.listed > MAX_SESSION_CHUNKS {
                            return refused(format!(
                                "over {MAX_SESSION_CHUNKS} chunk records announced at once"
                            ));
                        }
                        let ahead = self.chunk_ahead(&basis, size, head.params);
                        f.phase = Phase::ChunkList {
                            params: head.params,
                            expected: head.chunks,
                            list: Vec::new(),
                            basis,
                            ahead,
                        };
                        self.open.insert(id, f);
                        if head.chunks == 0 {
                            return self.chunks(id, Vec::new());
                        }
                    }
                }
            }
            Step::Symlink { path, target, meta } => {
                if target.is_empty() || target.len() > MAX_PATH || target.contains('\0') {
                    return refused(format!("{}: a symlink target out of bounds", shown(&path)));
                }
                if let Err(e) = check_meta(&meta) {
                    return refused(e);
                }
                let r = (|| -> std::io::Result<()> {
                    let (dir, name) = self.tree.at(&path)?;
                    let tmp = temp_name();
                    rustix::fs::symlinkat(target.as_str(), dir.as_fd(), tmp.as_str())?;
                    if self.owners {
                        rustix::fs::chownat(
                            dir.as_fd(),
                            tmp.as_str(),
                            Some(rustix::fs::Uid::from_raw(meta.uid)),
                            Some(rustix::fs::Gid::from_raw(meta.gid)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )?;
                    }
                    rustix::fs::utimensat(
                        dir.as_fd(),
                        tmp.as_str(),
                        &times(&meta),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                    self.replace(&dir, &tmp, name, &path, None)
                })();
                if let Err(e) = r {
                    self.fail(&path, e.to_string());
                }
            }
            Step::Hardlink { path, to } => {
                if let Err(e) = check_path(&to) {
                    return refused(e);
                }
                let in_flight = self.open.values().any(|f| f.path == to);
                let r = (|| -> std::io::Result<()> {
                    if in_flight {
                        return Err(std::io::Error::other(format!(
                            "{} is still being written: linked at the next push",
                            shown(&to)
                        )));
                    }
                    let (from_dir, from_name) = self.tree.at(&to)?;
                    if lstat_at(&from_dir, from_name)? != Some(FileType::RegularFile) {
                        return Err(std::io::Error::other(format!(
                            "{} is not a regular file",
                            shown(&to)
                        )));
                    }
                    let (dir, name) = self.tree.at(&path)?;
                    let tmp = temp_name();
                    rustix::fs::linkat(
                        from_dir.as_fd(),
                        from_name,
                        dir.as_fd(),
                        tmp.as_str(),
                        AtFlags::empty(),
                    )?;
                    self.replace(&dir, &tmp, name, &path, None)
                })();
                if let Err(e) = r {
                    self.fail(&path, e.to_string());
                }
            }
            Step::Meta { path, kind, meta } => {
                if let Err(e) = check_meta(&meta) {
                    return refused(e);
                }
                let r = (|| -> std::io::Result<()> {
                    let (dir, name) = self.tree.at(&path)?;
                    let is = lstat_at(&dir, name)?;
                    match (kind, is) {
                        (Kind::Symlink, Some(FileType::Symlink)) => {
                            if self.owners {
                                rustix::fs::chownat(
                                    dir.as_fd(),
                                    name,
                                    Some(rustix::fs::Uid::from_raw(meta.uid)),
                                    Some(rustix::fs::Gid::from_raw(meta.gid)),
                                    AtFlags::SYMLINK_NOFOLLOW,
                                )?;
                            }
                            rustix::fs::utimensat(
                                dir.as_fd(),
                                name,
                                &times(&meta),
                                AtFlags::SYMLINK_NOFOLLOW,
                            )?;
                        }
                        (Kind::Dir, Some(FileType::Directory))
                        | (Kind::File, Some(FileType::RegularFile)) => {
                            let mut flags = OFlags::RDONLY
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC
                                | OFlags::NONBLOCK;
                            if kind == Kind::Dir {
                                flags |= OFlags::DIRECTORY;
                            }
                            let fd = rustix::fs::openat(dir.as_fd(), name, flags, Mode::empty())?;
                            set_meta(&fd, &meta, self.owners, self.target.keep_setuid)?;
                            if kind == Kind::Dir {
                                self.dir_metas.push((path.clone(), meta));
                            }
                        }
                        _ => return Err(std::io::Error::other("not the kind the sender expects")),
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    self.fail(&path, e.to_string());
                }
            }
            Step::Delete { path, .. } => {
                // Only what the replica holds counts (a step for a missing name is a no-op).
                let exists = self
                    .tree
                    .at(&path)
                    .ok()
                    .and_then(|(dir, name)| lstat_at(&dir, name).ok().flatten())
                    .is_some();
                if exists {
                    self.deleted += 1;
                    if let Some(limit) = self.may_delete.filter(|l| self.deleted > *l) {
                        return refused(format!(
                            "the push deletes more than this node's max_delete allows ({limit} entries of what the replica held); \
                             nothing more is deleted: push with --force if that is right"
                        ));
                    }
                }
                let r = (|| -> std::io::Result<()> {
                    let (dir, name) = self.tree.at(&path)?;
                    match lstat_at(&dir, name)? {
                        None => Ok(()),
                        Some(FileType::Directory) => {
                            self.tree.cache.clear();
                            rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::REMOVEDIR).map_err(|e| {
                                if e == rustix::io::Errno::NOTEMPTY {
                                    std::io::Error::other("kept: it holds entries the push does not own (excluded?)")
                                } else {
                                    e.into()
                                }
                            })
                        }
                        Some(_) => self.remove(&dir, name, &path),
                    }
                })();
                if let Err(e) = r {
                    self.fail(&path, e.to_string());
                }
            }
        }
        Ok(())
    }

    /// Removes a non-directory, or moves it aside when this push keeps diverged data.
    fn remove(&mut self, dir: &OwnedFd, name: &str, path: &str) -> std::io::Result<()> {
        if self.target.diverge {
            return self.move_aside(dir, name, path);
        }
        rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty())?;
        Ok(())
    }

    /// Renames `tmp` over `name`, first keeping what was there if this push diverges
    /// (unless it is a file holding `same_as` already: nothing would be lost).
    fn replace(
        &mut self,
        dir: &OwnedFd,
        tmp: &str,
        name: &str,
        path: &str,
        same_as: Option<Hash>,
    ) -> std::io::Result<()> {
        if self.target.diverge {
            match lstat_at(dir, name)? {
                Some(FileType::Directory) | None => {}
                Some(FileType::RegularFile)
                    if same_as.is_some() && self.hash_of(path) == same_as => {}
                Some(_) => self.move_aside(dir, name, path)?,
            }
        }
        rename_into_place(dir, tmp, name)
    }

    fn hash_of(&self, path: &str) -> Option<Hash> {
        let f = self.tree.open_file(path).ok()?;
        let mut h = blake3::Hasher::new();
        h.update_reader(&f).ok()?;
        Some(Hash(*h.finalize().as_bytes()))
    }

    /// Moves `name` (a file or symlink) to the same relative path under this push's
    /// diverged directory, never over anything kept there. A failure stops the write
    /// that needed it (the caller fails that entry) and keeps the next push diverging.
    fn move_aside(&mut self, dir: &OwnedFd, name: &str, path: &str) -> std::io::Result<()> {
        let moved = self.move_aside_now(dir, name, path);
        if moved.is_err() {
            self.aside_failed = true;
        }
        moved
    }

    fn move_aside_now(&mut self, dir: &OwnedFd, name: &str, path: &str) -> std::io::Result<()> {
        let base = match &self.diverged_dir {
            Some(b) => b.clone(),
            None => {
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
                let b = self.target.diverged_base.join(stamp);
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&b)?;
                self.diverged_dir = Some(b.clone());
                b
            }
        };
        let to_dir = base.join(parent(path));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&to_dir)?;
        let to = File::open(&to_dir)?;
        match rustix::fs::renameat_with(
            dir.as_fd(),
            name,
            to.as_fd(),
            name,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::XDEV) => {
                // Another filesystem: copy, then remove.
                match lstat_at(dir, name)? {
                    Some(FileType::Symlink) => {
                        let t = rustix::fs::readlinkat(dir.as_fd(), name, Vec::new())?;
                        rustix::fs::symlinkat(t.as_c_str(), to.as_fd(), name)?;
                    }
                    _ => {
                        let mut src = File::from(rustix::fs::openat(
                            dir.as_fd(),
                            name,
                            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                            Mode::empty(),
                        )?);
                        let mut dst = File::from(rustix::fs::openat(
                            to.as_fd(),
                            name,
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(0o600),
                        )?);
                        std::io::copy(&mut src, &mut dst)?;
                        dst.sync_all()?;
                    }
                }
                rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty())?;
            }
            Err(e) => return Err(e.into()),
        }
        if self.r.diverged.len() < 100_000 {
            self.r.diverged.push(path.to_owned());
        }
        Ok(())
    }

    fn data(&mut self, id: u32, offset: u64, bytes: &[u8]) -> Result<(), RecvError> {
        if self.dead.contains(&id) {
            return Ok(());
        }
        let Some(mut f) = self.open.remove(&id) else {
            return refused(format!("data for file {id}, which is not open"));
        };
        let end = offset
            .checked_add(bytes.len() as u64)
            .filter(|e| *e <= f.size);
        let Some(end) = end else {
            return refused(format!("{}: data past the announced size", shown(&f.path)));
        };
        let w = match &mut f.phase {
            Phase::Literal { hasher } => {
                if offset != f.written {
                    return refused(format!("{}: data out of order", shown(&f.path)));
                }
                hasher.update(bytes);
                f.written = end;
                f.file.write_all_at(bytes, offset)
            }
            Phase::AwaitData { ranges, remaining } => {
                let inside = ranges.iter().any(|(a, b)| *a <= offset && end <= *b);
                if !inside || bytes.len() as u64 > *remaining {
                    return refused(format!(
                        "{}: data the receiver did not ask for",
                        shown(&f.path)
                    ));
                }
                *remaining -= bytes.len() as u64;
                f.file.write_all_at(bytes, offset)
            }
            Phase::ChunkList { .. } => {
                return refused(format!("{}: data before its chunk list", shown(&f.path)));
            }
        };
        if let Err(e) = w {
            let _ = rustix::fs::unlinkat(f.dir.as_fd(), f.tmp.as_str(), AtFlags::empty());
            self.fail(&f.path, e.to_string());
            self.dead.insert(id);
            return Ok(());
        }
        let done = match &f.phase {
            Phase::Literal { .. } => f.written == f.size,
            Phase::AwaitData { remaining, .. } => *remaining == 0,
            Phase::ChunkList { .. } => false,
        };
        if !done {
            self.open.insert(id, f);
            return Ok(());
        }
        if matches!(f.phase, Phase::AwaitData { .. }) {
            return self.verify_delta(id, f);
        }
        self.complete(f, false)
    }

    /// Checks a delta-built file against its hash; a mismatch asks for the whole file once.
    fn verify_delta(&mut self, id: u32, mut f: Incoming) -> Result<(), RecvError> {
        let got = (|| -> std::io::Result<Hash> {
            let mut h = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 << 10];
            let mut at = 0u64;
            while at < f.size {
                let n = f.file.read_at(&mut buf, at)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                at += n as u64;
            }
            Ok(Hash(*h.finalize().as_bytes()))
        })();
        if got.ok() == Some(f.hash) {
            f.written = f.size;
            return self.complete(f, true);
        }
        if f.retried {
            let _ = rustix::fs::unlinkat(f.dir.as_fd(), f.tmp.as_str(), AtFlags::empty());
            self.fail(
                &f.path,
                "content does not match its hash (changed while sent?)".into(),
            );
            self.dead.insert(id);
            return Ok(());
        }
        f.retried = true;
        f.written = 0;
        f.phase = Phase::Literal {
            hasher: Box::new(blake3::Hasher::new()),
        };
        f.file
            .set_len(0)
            .map_err(|e| RecvError::Local(e.to_string()))?;
        self.open.insert(id, f);
        self.send(&ToSender::Need {
            id,
            all: true,
            ranges: Vec::new(),
        })
    }

    fn chunks(&mut self, id: u32, more: Vec<(u32, [u8; 16])>) -> Result<(), RecvError> {
        if self.dead.contains(&id) {
            return Ok(());
        }
        if self.awaiting.contains(&id) {
            return refused(format!("more chunk records for file {id} after its list"));
        }
        let Some(mut f) = self.open.remove(&id) else {
            return refused(format!("a chunk list for file {id}, which is not open"));
        };
        let Phase::ChunkList {
            params,
            expected,
            list,
            ahead,
            ..
        } = &mut f.phase
        else {
            return refused(format!("{}: an unexpected chunk list", shown(&f.path)));
        };
        if list.len() + more.len() > *expected as usize {
            return refused(format!("{}: more chunks than announced", shown(&f.path)));
        }
        list.extend(more);
        if list.len() < *expected as usize {
            self.open.insert(id, f);
            return Ok(());
        }
        let total: u64 = list.iter().map(|(l, _)| u64::from(*l)).sum();
        if total != f.size || list.iter().any(|(l, _)| *l == 0 || *l > params.max) {
            return refused(format!("{}: chunk lengths do not add up", shown(&f.path)));
        }
        // A basis still being chunked ahead: the file waits (complete list and all) while
        // the next frames are read; `settle_ahead` takes it up when its chunks are there.
        let ready = match ahead.as_ref().map(|a| a.chunks.try_recv()) {
            Some(Err(std::sync::mpsc::TryRecvError::Empty)) => {
                self.open.insert(id, f);
                self.awaiting.push_back(id);
                return Ok(());
            }
            Some(Ok(found)) => Some(found),
            Some(Err(std::sync::mpsc::TryRecvError::Disconnected)) => Some(None),
            None => None,
        };
        self.match_basis(id, f, ready)
    }

    /// Takes up the files waiting for their bases chunked ahead, in the order their lists
    /// completed: those whose chunks are there, or (`block`) at least the first, waiting
    /// for it.
    fn settle_ahead(&mut self, mut block: bool) -> Result<(), RecvError> {
        while let Some(&id) = self.awaiting.front() {
            let Some(Phase::ChunkList { ahead: Some(a), .. }) =
                self.open.get(&id).map(|f| &f.phase)
            else {
                // Abandoned meanwhile.
                self.awaiting.pop_front();
                continue;
            };
            let found = if block {
                a.chunks.recv().ok().flatten()
            } else {
                match a.chunks.try_recv() {
                    Ok(found) => found,
                    Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => None,
                }
            };
            block = false;
            self.awaiting.pop_front();
            if let Some(f) = self.open.remove(&id) {
                self.match_basis(id, f, Some(found))?;
            }
        }
        Ok(())
    }

    /// A delta's chunk list is complete (checked): chunks our copy with the sender's
    /// parameters (or takes the chunks found `ahead`), copies what matches into the new
    /// file and asks for the rest.
    fn match_basis(
        &mut self,
        id: u32,
        mut f: Incoming,
        ahead: Option<BaseChunks>,
    ) -> Result<(), RecvError> {
        let Phase::ChunkList {
            params,
            expected,
            list,
            basis,
            ..
        } = &mut f.phase
        else {
            return refused(format!("{}: an unexpected chunk list", shown(&f.path)));
        };
        // Its records count against the session's bound until here (waiting for its
        // basis included).
        self.listed = self.listed.saturating_sub(u64::from(*expected));
        let (params, list, basis) = (*params, std::mem::take(list), std::mem::take(basis));
        // Chunk our copy with the sender's parameters; reuse what matches.
        let wanted: HashSet<[u8; 16]> = list.iter().map(|(_, h)| *h).collect();
        let mut have: HashMap<[u8; 16], (u64, u32)> = HashMap::new();
        let (base, found) = match ahead {
            Some(Some((b, found))) => (Some(b), found),
            Some(None) => (None, Vec::new()),
            None => {
                let base = self
                    .tree
                    .open_file(&basis)
                    .ok()
                    .filter(|b| b.metadata().is_ok_and(|m| basis_fits(m.len(), f.size)));
                let found = base
                    .as_ref()
                    .and_then(|b| chunk::chunks(b, params).ok())
                    .map(|(c, _, _)| c)
                    .unwrap_or_default();
                (base, found)
            }
        };
        for c in found {
            if wanted.contains(&c.hash) {
                have.entry(c.hash).or_insert((c.offset, c.len));
            }
        }
        let mut ranges = Vec::new();
        let mut bytes = Vec::new();
        let mut at = 0u64;
        // What our copy has, as runs of (offset in it, offset in the new file, length):
        // the chunks around an edit lie side by side in both, and a run is one read and
        // one write instead of one a chunk. The whole file's hash is checked once it is
        // complete (`verify_delta`), so a basis that changed meanwhile is caught there.
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        for (i, (len, h)) in list.iter().enumerate() {
            let reused = match (have.get(h), &base) {
                (Some((off, l)), Some(_)) if l == len => {
                    match runs.last_mut() {
                        Some((from, to, n)) if *from + *n == *off && *to + *n == at => {
                            *n += u64::from(*len);
                        }
                        _ => runs.push((*off, at, u64::from(*len))),
                    }
                    true
                }
                _ => false,
            };
            if !reused {
                let i = i as u32;
                match ranges.last_mut() {
                    Some((_, end)) if *end == i => *end = i + 1,
                    _ => ranges.push((i, i + 1)),
                }
                match bytes.last_mut() {
                    Some((_, end)) if *end == at => *end = at + u64::from(*len),
                    _ => bytes.push((at, at + u64::from(*len))),
                }
            }
            at += u64::from(*len);
        }
        if let Some(b) = &base {
            let mut buf =
                vec![0u8; runs.iter().map(|r| r.2).max().unwrap_or(0).min(1 << 20) as usize];
            for (from, to, n) in runs {
                let mut done = 0u64;
                while done < n {
                    let k = (n - done).min(buf.len() as u64) as usize;
                    // A short read or a failed write leaves a hole: the file's hash
                    // will not match, and it is asked for whole.
                    if b.read_exact_at(&mut buf[..k], from + done).is_err()
                        || f.file.write_all_at(&buf[..k], to + done).is_err()
                    {
                        break;
                    }
                    done += k as u64;
                }
            }
        }
        let remaining: u64 = bytes.iter().map(|(a, b)| b - a).sum();
        f.phase = Phase::AwaitData {
            ranges: bytes,
            remaining,
        };
        self.send(&ToSender::Need {
            id,
            all: false,
            ranges,
        })?;
        if remaining == 0 {
            return self.verify_delta(id, f);
        }
        self.open.insert(id, f);
        Ok(())
    }

    /// Starts chunking `basis` for a delta of a file of `size` bytes on a worker thread,
    /// when it is readable and fits in what may be chunked ahead; `None` leaves it to be
    /// chunked when the file's chunk list is complete.
    fn chunk_ahead(&mut self, basis: &str, size: u64, params: Params) -> Option<Ahead> {
        let base = self.tree.open_file(basis).ok()?;
        let bytes = base.metadata().ok()?.len();
        if !basis_fits(bytes, size) {
            return None;
        }
        let stop = &self.target.stop;
        let c = self.chunkers.get_or_insert_with(|| Chunkers::start(stop));
        if c.bytes.load(Ordering::Relaxed).saturating_add(bytes) > AHEAD_BYTES {
            return None;
        }
        let (done, chunks) = std::sync::mpsc::sync_channel(1);
        c.jobs.as_ref()?.send((base, params, done)).ok()?;
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        Some(Ahead {
            chunks,
            bytes,
            counted: Arc::clone(&c.bytes),
        })
    }

    /// A file's content is all there: set its metadata, queue it for the durable rename.
    /// Literal data was hashed as it came; copies and deltas are `verified` already.
    fn complete(&mut self, f: Incoming, verified: bool) -> Result<(), RecvError> {
        let ok = verified
            || match &f.phase {
                Phase::Literal { hasher } => Hash(*hasher.finalize().as_bytes()) == f.hash,
                _ => false,
            };
        if !ok {
            let _ = rustix::fs::unlinkat(f.dir.as_fd(), f.tmp.as_str(), AtFlags::empty());
            self.fail(
                &f.path,
                "content does not match its hash (changed while sent?)".into(),
            );
            return Ok(());
        }
        if let Err(e) = set_meta(&f.file, &f.meta, self.owners, self.target.keep_setuid) {
            let _ = rustix::fs::unlinkat(f.dir.as_fd(), f.tmp.as_str(), AtFlags::empty());
            self.fail(&f.path, e.to_string());
            return Ok(());
        }
        self.pending_bytes += f.size;
        self.pending.push(Done_ {
            path: f.path,
            tmp: f.tmp,
            hash: f.hash,
        });
        if self.pending.len() >= BATCH_FILES || self.pending_bytes >= BATCH_BYTES {
            self.flush_behind()?;
        }
        Ok(())
    }

    /// Waits for the batch behind, then makes the completed temp files durable and
    /// renames them into place: everything written so far is in place after it.
    fn flush(&mut self) -> Result<(), RecvError> {
        self.timed_flush(false)
    }

    /// Waits for the batch behind, then starts the completed files on their way into
    /// place on a thread of their own (in place at once when this push moves aside what
    /// it replaces: that is done here).
    fn flush_behind(&mut self) -> Result<(), RecvError> {
        self.timed_flush(!self.target.diverge)
    }

    fn timed_flush(&mut self, behind: bool) -> Result<(), RecvError> {
        if self.pending.is_empty() && self.behind.is_none() {
            return Ok(());
        }
        let began = tokio::time::Instant::now();
        let r = self.join_behind().and_then(|()| {
            if !behind {
                return self.flush_now();
            }
            if !self.pending.is_empty() {
                let batch = std::mem::take(&mut self.pending);
                self.pending_bytes = 0;
                let (root, stop) = (Arc::clone(&self.tree.root), Arc::clone(&self.target.stop));
                self.behind = Some(std::thread::spawn(move || settle_batch(root, batch, stop)));
            }
            Ok(())
        });
        let spent = began.elapsed();
        self.flushing += spent;
        self.timing
            .add_within("syncfs and renames of batches", spent);
        r
    }

    /// Waits for the batch behind; its failures are this push's.
    fn join_behind(&mut self) -> Result<(), RecvError> {
        let Some(b) = self.behind.take() else {
            return Ok(());
        };
        let failed = match b.join() {
            Ok(r) => r.map_err(RecvError::Local)?,
            Err(p) => std::panic::resume_unwind(p),
        };
        for (path, why) in failed {
            self.fail(&path, why);
        }
        Ok(())
    }

    fn flush_now(&mut self) -> Result<(), RecvError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        rustix::fs::syncfs(self.tree.root.as_fd())
            .map_err(|e| RecvError::Local(format!("syncfs: {e}")))?;
        for d in std::mem::take(&mut self.pending) {
            // Its directory opened again beneath the root (never through a symlink): one
            // replaced meanwhile holds no such temp file, and the rename fails.
            let r = self.tree.at(&d.path).and_then(|(dir, name)| {
                let name = name.to_owned();
                self.replace(&dir, &d.tmp, &name, &d.path, Some(d.hash))
            });
            if let Err(e) = r {
                self.fail(&d.path, e.to_string());
            }
        }
        self.pending_bytes = 0;
        Ok(())
    }
}

/// Whether a basis of `len` bytes is chunked for a file of `size`: one far bigger is not
/// (its chunk list would cost memory for nothing), and the file is sent whole.
fn basis_fits(len: u64, size: u64) -> bool {
    len <= size.saturating_mul(8).saturating_add(64 << 20)
}

/// Runs `work` on the session, adding its time (less any batch flush inside it, counted
/// apart) to `name` within the apply phase.
fn timed<T>(
    s: &mut Session<'_>,
    name: &'static str,
    work: impl FnOnce(&mut Session<'_>) -> T,
) -> T {
    let began = tokio::time::Instant::now();
    let flushed = s.flushing;
    let r = work(s);
    let spent = began.elapsed().saturating_sub(s.flushing - flushed);
    s.timing.add_within(name, spent);
    r
}

/// A replica's entries as a walk lists them (sorted by path), with their stamps.
type Listing = Vec<(Entry, super::Stamp)>;

/// The entry at `path` in a listing sorted by path.
fn find<'a>(sorted: &'a [(Entry, super::Stamp)], path: &str) -> Option<&'a Entry> {
    sorted
        .binary_search_by(|(e, _)| e.path.as_str().cmp(path))
        .ok()
        .map(|i| &sorted[i].0)
}

/// The replica after a push that touched a few paths: the listing from before it, each
/// touched path (and the directory holding it) looked at again, as a walk would list it.
/// A file keeps the hash it was written with, or the one it had when only its metadata
/// changed. The listing comes back (`Err`) when a walk must decide instead: a hard-linked
/// file among them (every name of its inode changes), or a path that cannot be looked at.
fn restat(
    tree: &mut Tree,
    mut before: Listing,
    mut touched: Vec<String>,
    written: &HashMap<String, Hash>,
) -> Result<Listing, Listing> {
    let dirs: Vec<String> = touched
        .iter()
        .map(|p| parent(p))
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    touched.extend(dirs);
    touched.sort_unstable();
    touched.dedup();
    let leaders: HashSet<&str> = before.iter().filter_map(|(e, _)| e.link()).collect();
    // Each path with where it is (or would go) in the listing, and what is there now.
    let mut fresh = Vec::with_capacity(touched.len());
    for path in touched {
        let at = before.binary_search_by(|(e, _)| e.path.as_str().cmp(&path));
        let old = at.ok().map(|i| &before[i].0);
        if old.is_some_and(|o| o.link().is_some()) || leaders.contains(path.as_str()) {
            return Err(before);
        }
        let looked = match tree.at(&path) {
            Ok((dir, name)) => super::walk::stat_entry(dir.as_fd(), name, &path),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(e),
        };
        let now = match looked {
            Err(_) => return Err(before),
            Ok(Some((e, _, links))) if links > 1 && e.kind == Kind::File => return Err(before),
            Ok(Some((mut e, stamp, _))) => {
                if e.kind == Kind::File {
                    e.hash = written.get(&path).copied().or_else(|| {
                        old.filter(|o| o.kind == Kind::File && o.size == e.size)
                            .and_then(|o| o.hash)
                    });
                }
                Some((e, stamp))
            }
            Ok(None) => None,
        };
        fresh.push((at, now));
    }
    // In place (a second vector of the whole listing would double its memory): paths
    // still there replaced, paths gone marked and dropped, new paths added at the end and
    // merged in by a sort that finds the two sorted runs.
    let mut added = Vec::new();
    let mut dropped = false;
    for (at, now) in fresh {
        match (at, now) {
            (Ok(i), Some(now)) => before[i] = now,
            (Ok(i), None) => {
                // No entry's path is empty but those marked here.
                before[i].0.path.clear();
                dropped = true;
            }
            (Err(_), now) => added.extend(now),
        }
    }
    if dropped {
        before.retain(|(e, _)| !e.path.is_empty());
    }
    if !added.is_empty() {
        before.reserve_exact(added.len());
        before.extend(added);
        before.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    }
    Ok(before)
}

/// The permission bits a received entry gets: a peer plants no privilege here, so the
/// setuid bit never stays, nor setgid on a file (setgid on a directory only gives new
/// files its group and stays) — unless the job keeps them (`keep_setuid`).
pub fn allowed_mode(mode: u32, is_dir: bool, keep_setuid: bool) -> u32 {
    if keep_setuid {
        return mode;
    }
    let mut mode = mode & !0o4000;
    if !is_dir {
        mode &= !0o2000;
    }
    mode
}

fn set_meta(fd: &impl AsFd, meta: &Meta, owners: bool, keep_setuid: bool) -> std::io::Result<()> {
    if owners {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
        )?;
    }
    let is_dir = FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode) == FileType::Directory;
    // After the chown, which clears these bits anyway: chmod decides them.
    rustix::fs::fchmod(
        fd,
        Mode::from_raw_mode(allowed_mode(meta.mode, is_dir, keep_setuid)),
    )?;
    rustix::fs::futimens(fd, &times(meta))?;
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;
