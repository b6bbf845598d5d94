//! The sending end of a push (blocking; run it on a thread of its own).
//!
//! The walk of the source runs while the receiver walks its replica; hashes come from the
//! sender's manifest for files whose stamp did not move, the rest are read (in
//! parallel). Steps stream out without waiting for answers; copies and deltas are answered
//! by `need` messages that a reader thread passes back, at most [`MAX_AWAITING`] open at a
//! time, so memory stays bounded whatever the tree.

use super::chunk::{self, Params};
use super::plan::{self, How, Limit, Step};
use super::walk;
use super::wire::{self, Counted, Frame, ToReceiver, ToSender, WireError};
use super::{check_path, shown, Entry, Excludes, Kind, Manifest, MAX_ENTRIES, MAX_PATH};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

/// Copies and deltas waiting for the receiver's answer, at most.
const MAX_AWAITING: usize = 64;

pub struct Source<'a> {
    pub root: &'a Path,
    pub excludes: &'a Excludes,
    /// The sender manifest of the last confirmed push, if any.
    pub manifest: Option<&'a Manifest>,
    pub max_delete: Limit,
    pub force: bool,
    pub dry_run: bool,
}

/// How far a push has got, for a progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    pub phase: Mutex<String>,
    pub steps_total: AtomicU64,
    pub steps_done: AtomicU64,
    pub bytes_sent: AtomicU64,
}

impl Progress {
    fn phase(&self, p: &str) {
        if let Ok(mut g) = self.phase.lock() {
            *g = p.to_owned();
        }
    }
}

#[derive(Debug, Default)]
pub struct Sent {
    /// Where the time went (walk, state, hash, plan, transfer, manifest).
    pub phases: super::Phases,
    pub files_total: u64,
    pub bytes_total: u64,
    pub changed: u64,
    pub deletions: u64,
    pub bytes_sent: u64,
    /// The plan (kept for a dry run; empty otherwise).
    pub steps: Vec<Step>,
    pub refused: Option<String>,
    /// Problems reading the source (those entries were not pushed).
    pub errors: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub diverged: Vec<String>,
    pub diverged_dir: Option<String>,
    /// The new sender manifest to keep, when it changed.
    pub manifest: Option<Manifest>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("the receiver refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Local(String),
}

fn bad<T>(why: impl Into<String>) -> Result<T, SendError> {
    Err(SendError::Wire(WireError::Malformed(why.into())))
}

struct InFlight {
    path: String,
    size: u64,
    chunks: Vec<(u64, u32)>,
    answered: bool,
}

/// Pushes `src` over `stream` (after the peer RPC `push` request was sent).
pub fn push(stream: TcpStream, src: &Source, progress: &Progress) -> Result<Sent, SendError> {
    progress.phase("walking the source");
    let mut phases = super::Phases::default();
    let mut walked = walk::walk(src.root, Some(src.excludes)).map_err(SendError::Local)?;
    phases.mark("walk");
    if let Some(m) = src.manifest {
        walk::reuse_hashes(&mut walked, m);
    }
    phases.mark("reuse hashes");
    let mut sent = Sent {
        errors: std::mem::take(&mut walked.errors),
        ..Sent::default()
    };
    if let Some(m) = src.manifest {
        if m.root_dev != 0 && m.root_dev != walked.root_dev && !src.force {
            sent.refused = Some(format!(
                "{} is on another filesystem than at the last push (device {:#x}, was {:#x}): \
                 is a disk not mounted? Push with --force if the move is intended",
                src.root.display(),
                walked.root_dev,
                m.root_dev
            ));
            return Ok(sent);
        }
    }

    // The receiver's state, as it tells it.
    progress.phase("reading the replica's state");
    let mut input = BufReader::with_capacity(
        256 << 10,
        stream
            .try_clone()
            .map_err(|e| SendError::Local(e.to_string()))?,
    );
    // What it reports (all of it, or what changed since the manifest of `generation`)
    // and what is gone since; the manifest itself is used in place, never copied.
    let mut reported: Vec<Entry> = Vec::new();
    let mut gone_paths: Vec<String> = Vec::new();
    let mut base: Option<&Manifest> = None;
    let mut owners = false;
    let mut generation = String::new();
    let mut first = true;
    loop {
        let msg: ToSender = wire::read_frame(&mut input)?.msg()?;
        let (g, full, entries, gone, own, last) = match msg {
            ToSender::State {
                generation,
                full,
                entries,
                gone,
                owners,
                last,
            } => (generation, full, entries, gone, owners, last),
            ToSender::Error { message } => {
                return Err(SendError::Refused(crate::inert(&message, crate::PEER_TEXT)))
            }
            _ => return bad("expected the replica's state"),
        };
        if first {
            first = false;
            generation = g;
            owners = own;
            if !full {
                match src.manifest {
                    Some(m) if m.generation == generation => base = Some(m),
                    _ => return bad("a partial state for a generation this sender does not know"),
                }
            }
        }
        let held = base.map_or(0, |m| m.entries.len());
        for e in entries {
            check_path(&e.path).map_err(|m| SendError::Wire(WireError::Malformed(m)))?;
            if e.target().is_some_and(|t| t.len() > MAX_PATH)
                || e.link().is_some_and(|l| l.len() > MAX_PATH)
            {
                return bad("an entry out of bounds");
            }
            if held + reported.len() >= MAX_ENTRIES {
                return bad(format!("over {MAX_ENTRIES} entries in the replica"));
            }
            reported.push(e);
        }
        if gone_paths.len() + gone.len() > MAX_ENTRIES {
            return bad(format!("over {MAX_ENTRIES} entries gone from the replica"));
        }
        gone_paths.extend(gone);
        if last {
            break;
        }
    }
    // The replica holds the manifest as it is (nothing reported, nothing gone) and the
    // walk is that manifest again, entry for entry (both sorted): nothing to plan. With
    // the stamps equal too, the manifest needs no writing either.
    let (mut same_entries, same_stamps) = match base {
        Some(m) if reported.is_empty() && gone_paths.is_empty() => {
            let mut stamps = true;
            let entries = m.entries.len() == walked.entries.len()
                && walked
                    .entries
                    .iter()
                    .zip(m.entries.as_slice())
                    .all(|((a, sa), (b, sb))| {
                        stamps &= sa == sb;
                        a == b
                    });
            (entries, entries && stamps)
        }
        _ => (false, false),
    };
    // What the replica holds, sorted by path: the manifest less what is gone, with what
    // the receiver reported in place of its entries (the last report of a path wins).
    let mut reported_sorted: Vec<&Entry> = reported.iter().collect();
    reported_sorted.sort_by(|a, b| a.path.cmp(&b.path)); // stable: the last stays last
    reported_sorted.dedup_by(|later, earlier| {
        let same = later.path == earlier.path;
        if same {
            *earlier = *later;
        }
        same
    });
    let gone: HashSet<&str> = gone_paths.iter().map(String::as_str).collect();
    let held = base
        .filter(|_| !same_entries)
        .map_or(&[][..], |m| m.entries.as_slice());
    let mut believed: Vec<&Entry> = Vec::with_capacity(held.len() + reported_sorted.len());
    let mut news = reported_sorted.into_iter().peekable();
    for (e, _) in held {
        while let Some(r) = news.next_if(|r| r.path < e.path) {
            believed.push(r);
        }
        if let Some(r) = news.next_if(|r| r.path == e.path) {
            believed.push(r);
        } else if !gone.contains(e.path.as_str()) {
            believed.push(e);
        }
    }
    believed.extend(news);
    believed.retain(|e| !src.excludes.excluded(&e.path, e.kind == Kind::Dir));
    phases.mark("replica state");

    progress.phase("hashing changed files");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    walk::hash_missing(src.root, &mut walked, threads);
    // What could not be read stays on the replica as it is (the errors are reported).
    if walk::keep_unread(&mut walked, &believed) > 0 {
        same_entries = false;
    }
    phases.mark("hash");
    let source: Vec<&Entry> = walked.entries.iter().map(|(e, _)| e).collect();
    let p = if same_entries {
        plan::Planned::unchanged(&source)
    } else {
        plan::plan_borrowed(
            &source,
            &believed,
            plan::Options {
                max_delete: src.max_delete,
                force: src.force,
                owners,
            },
        )
    };
    sent.files_total = p.plan.files_total;
    sent.bytes_total = p.plan.bytes_total;
    sent.changed = p.plan.changed;
    sent.deletions = p.plan.deletions;
    phases.mark("plan");
    if p.plan.refused.is_some() || src.dry_run {
        let p = p.into_plan();
        sent.refused = p.refused;
        sent.steps = p.steps;
        sent.phases = phases;
        return Ok(sent);
    }
    let unchanged_manifest = p.is_empty()
        && src.manifest.is_some_and(|m| {
            m.generation == generation
                && m.entries.len() == walked.entries.len()
                && (same_stamps
                    || walked
                        .entries
                        .iter()
                        .zip(m.entries.as_slice())
                        .all(|(a, b)| a == b))
        });

    // Transfer.
    progress.phase("sending");
    progress
        .steps_total
        .store(p.len() as u64, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Result<ToSender, WireError>>();
    let reader = std::thread::spawn(move || loop {
        let m = wire::read_frame(&mut input).and_then(|f| match f {
            Frame::Msg(_) => f.msg::<ToSender>(),
            _ => Err(WireError::Malformed("the receiver sent file data".into())),
        });
        let stop = m.is_err();
        if tx.send(m).is_err() || stop {
            break;
        }
    });
    let write_half = stream
        .try_clone()
        .map_err(|e| SendError::Local(e.to_string()))?;
    let mut t = Transfer {
        w: Counted {
            inner: BufWriter::with_capacity(256 << 10, write_half),
            bytes: 0,
        },
        root: walk::open_root(src.root),
        inflight: HashMap::new(),
        awaiting: 0,
        abandoned: HashSet::new(),
        progress,
        timing: super::Phases::default(),
        data: wire::DataBuf::default(),
    };
    let result = t.run(p.steps(), &rx);
    drop(p);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    sent.bytes_sent = t.w.bytes;
    phases.mark("transfer");
    for (name, spent) in std::mem::take(&mut t.timing.within) {
        phases.add_within(name, spent);
    }
    let (generation, failed, diverged, diverged_dir) = result?;
    sent.failed = failed;
    sent.diverged = diverged;
    sent.diverged_dir = diverged_dir;
    if !unchanged_manifest {
        let failed: HashSet<&str> = sent
            .failed
            .iter()
            .map(|(p, _)| p.as_str())
            .chain(t.abandoned.iter().map(String::as_str))
            .collect();
        sent.manifest = Some(Manifest {
            generation,
            root_dev: walked.root_dev,
            epoch: 0,
            // The walk's own vector (sorted) becomes the manifest's: no copy.
            entries: {
                let mut entries = walked.entries;
                entries.retain(|(e, _)| !failed.contains(e.path.as_str()));
                super::Entries::from_sorted(entries)
            },
        });
    }
    phases.mark("new manifest");
    sent.phases = phases;
    Ok(sent)
}

type DoneParts = (String, Vec<(String, String)>, Vec<String>, Option<String>);

struct Transfer<'a> {
    w: Counted<BufWriter<TcpStream>>,
    /// The source's root, opened once: every file is opened beneath it.
    root: std::io::Result<std::os::fd::OwnedFd>,
    inflight: HashMap<u32, InFlight>,
    awaiting: usize,
    abandoned: HashSet<String>,
    progress: &'a Progress,
    /// Where the transfer's time went (`Phases::within`).
    timing: super::Phases,
    /// The data frame being written (one buffer for the whole push).
    data: wire::DataBuf,
}

impl Transfer<'_> {
    /// A file of the source to send, opened beneath its root through no symlink.
    fn open(&self, path: &str) -> std::io::Result<File> {
        walk::open_beneath(&self.root, path)
    }

    fn run(
        &mut self,
        steps: impl Iterator<Item = Step>,
        rx: &mpsc::Receiver<Result<ToSender, WireError>>,
    ) -> Result<DoneParts, SendError> {
        let mut id = 0u32;
        for step in steps {
            let step = &step;
            id += 1;
            // Hard links, metadata and late deletions act on names that copies and deltas
            // write: let every one of those be answered (its data is then ahead in the
            // stream) first.
            if matches!(step, Step::Hardlink { .. } | Step::Meta { .. })
                || (matches!(step, Step::Delete { .. }) && !self.inflight.is_empty())
            {
                while self.awaiting > 0 {
                    self.wait(rx)?;
                }
            }
            match step {
                Step::File {
                    path,
                    size,
                    hash,
                    how,
                    ..
                } => match how {
                    How::Literal => {
                        wire::write_msg(
                            &mut self.w,
                            &ToReceiver::Step {
                                id,
                                step: step.clone(),
                                delta: None,
                            },
                        )?;
                        self.send_range(id, path, 0, *size)?;
                    }
                    How::Copy { .. } => {
                        wire::write_msg(
                            &mut self.w,
                            &ToReceiver::Step {
                                id,
                                step: step.clone(),
                                delta: None,
                            },
                        )?;
                        self.inflight.insert(
                            id,
                            InFlight {
                                path: path.clone(),
                                size: *size,
                                chunks: Vec::new(),
                                answered: false,
                            },
                        );
                        self.awaiting += 1;
                    }
                    How::Delta { .. } => {
                        let params = Params::for_size(*size);
                        let began = tokio::time::Instant::now();
                        let cut = self.open(path).and_then(|f| chunk::chunks(f, params));
                        self.timing
                            .add_within("chunking changed files", began.elapsed());
                        match cut {
                            Ok((chunks, h, n))
                                if h == *hash
                                    && n == *size
                                    && chunks.len() <= wire::MAX_WIRE_CHUNKS as usize =>
                            {
                                let head = wire::DeltaHead {
                                    params,
                                    chunks: chunks.len() as u32,
                                };
                                wire::write_msg(
                                    &mut self.w,
                                    &ToReceiver::Step {
                                        id,
                                        step: step.clone(),
                                        delta: Some(head),
                                    },
                                )?;
                                wire::write_chunks(&mut self.w, id, &chunks)?;
                                self.inflight.insert(
                                    id,
                                    InFlight {
                                        path: path.clone(),
                                        size: *size,
                                        chunks: chunks.iter().map(|c| (c.offset, c.len)).collect(),
                                        answered: false,
                                    },
                                );
                                self.awaiting += 1;
                            }
                            _ => {
                                // Changed since it was hashed (or too many chunks to list):
                                // send it whole; the receiver checks the hash and the next
                                // push catches up.
                                let mut literal = step.clone();
                                if let Step::File { how, .. } = &mut literal {
                                    *how = How::Literal;
                                }
                                wire::write_msg(
                                    &mut self.w,
                                    &ToReceiver::Step {
                                        id,
                                        step: literal,
                                        delta: None,
                                    },
                                )?;
                                self.send_range(id, path, 0, *size)?;
                            }
                        }
                    }
                },
                _ => wire::write_msg(
                    &mut self.w,
                    &ToReceiver::Step {
                        id,
                        step: step.clone(),
                        delta: None,
                    },
                )?,
            }
            self.progress.steps_done.fetch_add(1, Ordering::Relaxed);
            self.progress
                .bytes_sent
                .store(self.w.bytes, Ordering::Relaxed);
            loop {
                match rx.try_recv() {
                    Ok(m) => {
                        if let Some(done) = self.answer(m?)? {
                            return bad(format!("done before finish ({})", done.0));
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Err(WireError::Closed.into()),
                }
            }
            while self.awaiting >= MAX_AWAITING {
                self.wait(rx)?;
            }
        }
        while self.awaiting > 0 {
            self.wait(rx)?;
        }
        wire::write_msg(&mut self.w, &ToReceiver::Finish)?;
        self.progress
            .phase("waiting for the receiver to make it durable");
        loop {
            if let Some(done) = self.wait(rx)? {
                return Ok(done);
            }
        }
    }

    fn wait(
        &mut self,
        rx: &mpsc::Receiver<Result<ToSender, WireError>>,
    ) -> Result<Option<DoneParts>, SendError> {
        self.w.flush().map_err(WireError::from)?;
        let began = tokio::time::Instant::now();
        let m = rx.recv().map_err(|_| WireError::Closed)??;
        self.timing
            .add_within("waiting for the receiver", began.elapsed());
        self.answer(m)
    }

    fn answer(&mut self, m: ToSender) -> Result<Option<DoneParts>, SendError> {
        match m {
            ToSender::Need { id, all, ranges } => {
                let Some(f) = self.inflight.get_mut(&id) else {
                    return bad(format!("a need for file {id}, which is not in flight"));
                };
                if !f.answered {
                    f.answered = true;
                    self.awaiting -= 1;
                }
                let (path, size) = (f.path.clone(), f.size);
                let mut parts = Vec::new();
                if all {
                    parts.push((0, size));
                } else {
                    for (a, b) in ranges {
                        if a >= b || b as usize > f.chunks.len() {
                            return bad(format!("a need for chunks {a}..{b} of {}", shown(&path)));
                        }
                        let start = f.chunks[a as usize].0;
                        let (lo, ln) = f.chunks[b as usize - 1];
                        parts.push((start, lo + u64::from(ln) - start));
                    }
                }
                for (offset, len) in parts {
                    self.send_range(id, &path, offset, len)?;
                }
                self.progress
                    .bytes_sent
                    .store(self.w.bytes, Ordering::Relaxed);
                Ok(None)
            }
            ToSender::Done {
                generation,
                failed,
                diverged,
                diverged_dir,
            } => {
                // The receiver's words: inert before they reach a log, a report or a mail.
                let failed = failed
                    .into_iter()
                    .map(|(path, reason)| (path, crate::inert(&reason, crate::PEER_TEXT)))
                    .collect();
                let diverged_dir = diverged_dir.map(|d| crate::inert(&d, crate::PEER_TEXT));
                Ok(Some((generation, failed, diverged, diverged_dir)))
            }
            ToSender::Error { message } => {
                Err(SendError::Refused(crate::inert(&message, crate::PEER_TEXT)))
            }
            ToSender::State { .. } => bad("a state message in the middle of a push"),
        }
    }

    /// Sends `len` bytes of `path` from `offset` as data frames; a file that came up
    /// short (it shrank or vanished) is abandoned.
    fn send_range(&mut self, id: u32, path: &str, offset: u64, len: u64) -> Result<(), SendError> {
        let began = tokio::time::Instant::now();
        let r = self.send_range_now(id, path, offset, len);
        self.timing
            .add_within("reading and sending data", began.elapsed());
        r
    }

    fn send_range_now(
        &mut self,
        id: u32,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), SendError> {
        let f = self.open(path);
        let mut at = offset;
        let end = offset + len;
        let mut failure = None;
        self.data.new_file();
        match f {
            Ok(f) => {
                while at < end {
                    let want = usize::try_from(end - at).unwrap_or(usize::MAX);
                    match f.read_at(self.data.room(want), at) {
                        Ok(0) => {
                            failure = Some("it shrank while being sent".to_owned());
                            break;
                        }
                        Ok(n) => {
                            self.data.write(&mut self.w, id, at, n)?;
                            at += n as u64;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            failure = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
            Err(e) => failure = Some(e.to_string()),
        }
        if let Some(reason) = failure {
            tracing::warn!(path = %shown(path), %reason, "Push: a file could not be sent");
            self.abandoned.insert(path.to_owned());
            wire::write_msg(&mut self.w, &ToReceiver::Abandon { id, reason })?;
        }
        Ok(())
    }
}
