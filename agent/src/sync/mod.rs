//! The push engine: replicates a directory tree from a site's master to its standby over
//! the tunnel.
//!
//! - [`plan`] (sans-IO) decides what to send from the source's entries, what the sender
//!   believes the receiver holds, and the job's guards.
//! - [`walk`] reads a tree (never following symlinks) and hashes files with blake3.
//! - [`chunk`] cuts files into content-defined chunks (FastCDC) for deltas.
//! - [`wire`] is the framing between the agents, every length and count bounded.
//! - [`send`] and [`recv`] are the two ends of a push session (blocking code, run on
//!   threads of their own); the receiver writes only through confined `*at` calls.
//!
//! Paths on the wire and in manifests are relative, `/`-separated UTF-8 strings; every
//! one read from the network passes [`check_path`].

pub mod chunk;
mod manifest_codec;
pub mod plan;
pub mod recv;
pub mod send;
pub mod walk;
pub mod wire;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests_session;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a push's wall time goes: each phase's duration, logged once at its end (target
/// `orch::profile`, level info; `--log-level warn,orch::profile=info` shows only these),
/// so that `bench/sync` can print the breakdown of every scenario.
#[derive(Debug)]
pub struct Phases {
    last: tokio::time::Instant,
    pub parts: Vec<(&'static str, std::time::Duration)>,
    /// Time spent on one kind of work inside the phases (summed over its occurrences,
    /// not part of the total): where a long phase went.
    pub within: Vec<(&'static str, std::time::Duration)>,
}

impl Default for Phases {
    fn default() -> Phases {
        Phases {
            last: tokio::time::Instant::now(),
            parts: Vec::new(),
            within: Vec::new(),
        }
    }
}

impl Phases {
    /// Ends the phase `name` now (it began at the previous mark, or at the start).
    pub fn mark(&mut self, name: &'static str) {
        let now = tokio::time::Instant::now();
        self.parts.push((name, now - self.last));
        self.last = now;
    }

    /// Adds `spent` to the work `name` inside the current phase.
    pub fn add_within(&mut self, name: &'static str, spent: std::time::Duration) {
        match self.within.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d += spent,
            None => self.within.push((name, spent)),
        }
    }

    /// Appends another's phases (the engine's, inside the daemon's).
    pub fn extend(&mut self, other: &Phases) {
        self.parts.extend_from_slice(&other.parts);
        for (n, d) in &other.within {
            self.add_within(n, *d);
        }
        self.last = tokio::time::Instant::now();
    }

    /// `walk 0.123 s, state 0.010 s, …, total 0.4 s`.
    pub fn line(&self) -> String {
        let total: std::time::Duration = self.parts.iter().map(|(_, d)| *d).sum();
        let mut out: Vec<String> = self
            .parts
            .iter()
            .map(|(n, d)| format!("{n} {:.3} s", d.as_secs_f64()))
            .collect();
        out.push(format!("total {:.3} s", total.as_secs_f64()));
        let mut line = out.join(", ");
        if !self.within.is_empty() {
            let within: Vec<String> = self
                .within
                .iter()
                .map(|(n, d)| format!("{n} {:.3} s", d.as_secs_f64()))
                .collect();
            line.push_str(&format!("; within them: {}", within.join(", ")));
        }
        line
    }
}

/// The longest relative path accepted, and the longest name in it.
pub const MAX_PATH: usize = 4096;
pub const MAX_NAME: usize = 255;
/// The most entries a tree may hold (a listing from the peer is cut off beyond it).
pub const MAX_ENTRIES: usize = 4_000_000;
/// Names the receiver uses for files being written; never sent, never listed.
pub const TEMP_PREFIX: &str = ".orch-tmp-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// A file's content hash (blake3), hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl Hash {
    pub fn to_hex(self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        blake3::Hash::from_hex(s.as_bytes())
            .map(|h| Hash(*h.as_bytes()))
            .map_err(|_| serde::de::Error::custom("a hash is 64 hex digits"))
    }
}

/// The metadata a push carries for every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Meta {
    /// Permission bits, with setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: i64,
    pub mtime_ns: u32,
}

/// One entry of a tree as pushes see it.
///
/// A symlink's target and a hard-linked file's leader share one field held out of line
/// ([`Entry::target`], [`Entry::link`]): few entries have either, and a listing of
/// 200 000 entries is 40 bytes an entry smaller than with two inline strings. On the wire
/// and in the JSON form they are still the fields `target` and `link`, and an entry that
/// has one its kind cannot (a target on a file, a leader on a symlink or a directory) is
/// refused when read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "EntryForm<String, String>")]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub meta: Meta,
    /// A regular file's content hash, when known.
    pub hash: Option<Hash>,
    /// A symlink's target (kind `Symlink`) or a file's hard-link leader (kind `File`);
    /// a thin pointer (8 bytes, against 16 for a `Box<str>`).
    #[allow(clippy::box_collection)]
    other: Option<Box<String>>,
}

impl Entry {
    /// An entry with neither a symlink target nor a hard-link leader.
    pub fn new(path: String, kind: Kind, size: u64, meta: Meta, hash: Option<Hash>) -> Entry {
        Entry {
            path,
            kind,
            size,
            meta,
            hash,
            other: None,
        }
    }

    /// An entry as read (from the wire or a stored manifest): refused when it has a
    /// target or a leader its kind cannot have.
    pub fn from_parts(
        path: String,
        kind: Kind,
        size: u64,
        meta: Meta,
        hash: Option<Hash>,
        target: Option<String>,
        link: Option<String>,
    ) -> Result<Entry, String> {
        let other = match (kind, target, link) {
            (Kind::Symlink, t, None) => t,
            (Kind::File, None, l) => l,
            (Kind::Dir, None, None) => None,
            (kind, _, _) => {
                return Err(format!(
                    "{path}: a {kind:?} entry with a target or a leader it cannot have"
                ))
            }
        };
        Ok(Entry {
            other: other.map(Box::new),
            ..Entry::new(path, kind, size, meta, hash)
        })
    }

    /// A symlink's target, as stored (never resolved).
    pub fn target(&self) -> Option<&str> {
        (self.kind == Kind::Symlink)
            .then_some(self.other.as_deref().map(String::as_str))
            .flatten()
    }

    /// A hard link: the first path (in path order) of the same inode in this tree.
    pub fn link(&self) -> Option<&str> {
        (self.kind == Kind::File)
            .then_some(self.other.as_deref().map(String::as_str))
            .flatten()
    }

    /// Makes this file a hard link to `leader`. Only a file is.
    pub fn set_link(&mut self, leader: &str) {
        debug_assert!(self.kind == Kind::File);
        self.other = Some(Box::new(leader.to_owned()));
    }

    /// Makes this a symlink to `target`.
    #[cfg(test)]
    pub fn set_target(&mut self, target: &str) {
        self.kind = Kind::Symlink;
        self.size = 0;
        self.hash = None;
        self.other = Some(Box::new(target.to_owned()));
    }
}

/// An [`Entry`] as written and read: the target and the leader as fields of their own.
#[derive(Serialize, Deserialize)]
struct EntryForm<P, T> {
    path: P,
    kind: Kind,
    #[serde(default)]
    size: u64,
    meta: Meta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<Hash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<T>,
}

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        EntryForm {
            path: self.path.as_str(),
            kind: self.kind,
            size: self.size,
            meta: self.meta,
            hash: self.hash,
            target: self.target(),
            link: self.link(),
        }
        .serialize(s)
    }
}

impl TryFrom<EntryForm<String, String>> for Entry {
    type Error = String;

    fn try_from(f: EntryForm<String, String>) -> Result<Entry, String> {
        Entry::from_parts(f.path, f.kind, f.size, f.meta, f.hash, f.target, f.link)
    }
}

/// What `stat` says beyond an [`Entry`]: enough to see that a file changed without
/// reading it (ctime moves on any write, chmod, chown or rename onto the path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Stamp {
    pub ctime: i64,
    pub ctime_ns: u32,
    pub ino: u64,
}

/// The most JSON a manifest may decode to (about 4 million entries).
pub const MAX_MANIFEST: u64 = 1 << 30;

/// What one side knows of a tree after the last confirmed push: each entry with the
/// stamp it had then. The sender's is of its source; the receiver's of its replica.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The receiver's generation this manifest matches.
    pub generation: String,
    /// The sender: `st_dev` of the source root then (an unmounted disk shows a new one).
    #[serde(default)]
    pub root_dev: u64,
    /// The receiver: the site's epoch of the push that wrote it.
    #[serde(default)]
    pub epoch: i64,
    pub entries: Entries,
}

/// A manifest's entries: sorted by path, each path held once (in its entry), looked up
/// by binary search. A walk's output (sorted) becomes one without a copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entries(Vec<(Entry, Stamp)>);

impl Entries {
    /// From entries sorted by path with no path twice (what a walk returns).
    pub fn from_sorted(entries: Vec<(Entry, Stamp)>) -> Entries {
        debug_assert!(entries.windows(2).all(|w| w[0].0.path < w[1].0.path));
        Entries(entries)
    }

    fn position(&self, path: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(e, _)| e.path.as_str().cmp(path))
    }

    pub fn get(&self, path: &str) -> Option<&(Entry, Stamp)> {
        self.position(path).ok().map(|i| &self.0[i])
    }

    /// Adds or replaces the entry at `path` (which must be the entry's own path).
    pub fn insert(&mut self, path: String, value: (Entry, Stamp)) {
        debug_assert_eq!(path, value.0.path);
        match self.0.last() {
            Some((last, _)) if last.path.as_str() < path.as_str() => self.0.push(value),
            None => self.0.push(value),
            _ => match self.position(&path) {
                Ok(i) => self.0[i] = value,
                Err(i) => self.0.insert(i, value),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The entries in path order (to walk beside another sorted list).
    pub fn as_slice(&self) -> &[(Entry, Stamp)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (path, (entry, stamp)) in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &(Entry, Stamp))> {
        self.0.iter().map(|t| (&t.0.path, t))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(e, _)| &e.path)
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = (&'a String, &'a (Entry, Stamp));
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Entry, Stamp)>,
        fn(&'a (Entry, Stamp)) -> (&'a String, &'a (Entry, Stamp)),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|t| (&t.0.path, t))
    }
}

impl std::ops::Index<&str> for Entries {
    type Output = (Entry, Stamp);
    fn index(&self, path: &str) -> &(Entry, Stamp) {
        match self.get(path) {
            Some(v) => v,
            None => panic!("no entry {path:?}"),
        }
    }
}

impl FromIterator<(String, (Entry, Stamp))> for Entries {
    /// In any order; the last of a path given twice wins.
    fn from_iter<I: IntoIterator<Item = (String, (Entry, Stamp))>>(iter: I) -> Entries {
        let mut v: Vec<(Entry, Stamp)> = iter.into_iter().map(|(_, t)| t).collect();
        v.reverse();
        v.sort_by(|a, b| a.0.path.cmp(&b.0.path)); // stable: the last given comes first
        v.dedup_by(|b, a| a.0.path == b.0.path);
        Entries(v)
    }
}

// The JSON form (earlier versions' store, and tests) is a map from path to entry.
impl Serialize for Entries {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        let map = BTreeMap::<String, (Entry, Stamp)>::deserialize(d)?;
        Ok(map
            .into_iter()
            .map(|(path, (mut e, s))| {
                e.path.clone_from(&path);
                (path, (e, s))
            })
            .collect())
    }
}

impl Manifest {
    /// About how many bytes of memory the decoded manifest holds: its vector's, each
    /// path's and each symlink target's or link leader's, with 16 bytes of the
    /// allocator's own for each allocation.
    pub fn memory(&self) -> usize {
        const OWN: usize = 16;
        let slots = self.entries.0.capacity() * std::mem::size_of::<(Entry, Stamp)>();
        let heap: usize = self
            .entries
            .0
            .iter()
            .map(|(e, _)| {
                e.path.capacity()
                    + OWN
                    + e.other.as_ref().map_or(0, |o| {
                        std::mem::size_of::<String>() + o.capacity() + 2 * OWN
                    })
            })
            .sum();
        slots + heap + self.generation.capacity()
    }

    /// The compact binary form, for the state store ([`manifest_codec`]).
    pub fn encode(&self) -> std::io::Result<Vec<u8>> {
        Ok(manifest_codec::encode(self))
    }

    /// Decodes what [`Manifest::encode`] wrote, or the zstd-compressed JSON of earlier
    /// versions (at most [`MAX_MANIFEST`] bytes of it: a corrupt or forged blob cannot
    /// make it allocate more).
    pub fn decode(blob: &[u8]) -> Result<Manifest, String> {
        if manifest_codec::is_binary(blob) {
            return manifest_codec::decode(blob);
        }
        use std::io::Read as _;
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(blob)
            .map_err(|e| e.to_string())?
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut json)
            .map_err(|e| e.to_string())?;
        if json.len() as u64 > MAX_MANIFEST {
            return Err(format!("a manifest over {MAX_MANIFEST} bytes"));
        }
        serde_json::from_slice(&json).map_err(|e| e.to_string())
    }
}

/// Sets up a push connection: blocking, with `idle` as the longest silence tolerated,
/// and a dead peer noticed within about 30 s ([`notice_dead_peer`]).
pub fn tune(stream: &std::net::TcpStream, idle: std::time::Duration) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    stream.set_nodelay(true)?;
    notice_dead_peer(socket2::SockRef::from(stream))
}

/// Makes a connection to the peer's agent notice within about 30 s that the peer died,
/// even while we only wait for it: TCP keepalive probes, which a live but busy peer's
/// kernel answers, and `TCP_USER_TIMEOUT` while our data stays unacknowledged. A peer
/// whose agent dies takes its end of the tunnel with it: no reset ever arrives.
pub fn notice_dead_peer(s: socket2::SockRef<'_>) -> std::io::Result<()> {
    s.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(std::time::Duration::from_secs(10))
            .with_interval(std::time::Duration::from_secs(5))
            .with_retries(3),
    )?;
    s.set_tcp_user_timeout(Some(std::time::Duration::from_secs(30)))
}

/// A fresh random generation id (128 bits, hex).
pub fn new_generation() -> String {
    use rand_core::RngCore as _;
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks a relative path from the network or a listing: non-empty, not absolute, no
/// empty, `.` or `..` component, no NUL, bounded lengths, not one of our temp names.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("an empty path".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("a path of {} bytes (limit {MAX_PATH})", path.len()));
    }
    if path.starts_with('/') {
        return Err(format!("an absolute path `{}`", shown(path)));
    }
    if path.contains('\0') {
        return Err("a path with a NUL byte".into());
    }
    for name in path.split('/') {
        match name {
            "" => return Err(format!("an empty name in `{}`", shown(path))),
            "." | ".." => return Err(format!("`{name}` in `{}`", shown(path))),
            n if n.len() > MAX_NAME => {
                return Err(format!("a name of {} bytes (limit {MAX_NAME})", n.len()))
            }
            n if n.starts_with(TEMP_PREFIX) => {
                return Err(format!("the reserved name `{}`", shown(n)))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A path for an error message: control characters escaped, long ones cut.
pub fn shown(path: &str) -> String {
    let mut s: String = path
        .chars()
        .take(200)
        .flat_map(char::escape_default)
        .collect();
    if path.chars().count() > 200 {
        s.push('…');
    }
    s
}

/// The parent directory of a relative path ("" for the root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// gitignore-style `exclude` patterns of a job.
pub struct Excludes {
    matcher: ignore::gitignore::Gitignore,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes, String> {
        let mut b = ignore::gitignore::GitignoreBuilder::new("/");
        for p in patterns {
            b.add_line(None, p)
                .map_err(|e| format!("exclude pattern `{p}`: {e}"))?;
        }
        let matcher = b.build().map_err(|e| e.to_string())?;
        Ok(Excludes { matcher })
    }

    /// Whether `path` (relative) or one of its parent directories is excluded.
    pub fn excluded(&self, path: &str, is_dir: bool) -> bool {
        if self.matcher.is_empty() {
            return false;
        }
        self.matcher
            .matched_path_or_any_parents(std::path::Path::new("/").join(path), is_dir)
            .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_the_wire_are_checked() {
        for good in ["a", "a/b.txt", "dir/.hidden", "x/..y", "ü/名前"] {
            check_path(good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("a/../../x", "`..`"),
            ("..", "`..`"),
            ("./a", "`.`"),
            ("a//b", "empty name"),
            ("a/", "empty name"),
            ("a\0b", "NUL"),
            ("d/.orch-tmp-1", "reserved"),
        ] {
            let e = check_path(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_path(&"a/".repeat(2100))
            .unwrap_err()
            .contains("bytes"));
        assert!(check_path(&"n".repeat(256))
            .unwrap_err()
            .contains("name of 256"));
    }

    #[test]
    fn excludes_follow_gitignore() {
        let x = Excludes::new(&["cache/".into(), "*.tmp".into(), "/top.log".into()]).unwrap();
        assert!(x.excluded("cache", true));
        assert!(
            !x.excluded("cache", false),
            "cache/ matches directories only"
        );
        assert!(
            x.excluded("a/cache/f", false),
            "inside an excluded directory"
        );
        assert!(x.excluded("a/b/x.tmp", false));
        assert!(x.excluded("top.log", false));
        assert!(!x.excluded("a/top.log", false), "anchored");
        assert!(!x.excluded("keep.txt", false));
    }

    #[test]
    fn an_entry_reads_and_writes_its_target_and_leader_as_fields_and_refuses_what_its_kind_cannot_have(
    ) {
        let meta = r#""meta":{"mode":420,"uid":0,"gid":0,"mtime":1,"mtime_ns":0}"#;
        let sym: Entry = serde_json::from_str(&format!(
            r#"{{"path":"s","kind":"symlink",{meta},"target":"../t"}}"#
        ))
        .unwrap();
        assert_eq!(sym.target(), Some("../t"));
        assert_eq!(sym.link(), None);
        let json = serde_json::to_string(&sym).unwrap();
        assert!(
            json.contains(r#""target":"../t""#) && !json.contains(r#""link""#),
            "{json}"
        );
        let hard: Entry = serde_json::from_str(&format!(
            r#"{{"path":"h","kind":"file","size":1,{meta},"link":"f"}}"#
        ))
        .unwrap();
        assert_eq!((hard.link(), hard.target()), (Some("f"), None));
        assert_eq!(
            serde_json::from_str::<Entry>(&serde_json::to_string(&hard).unwrap()).unwrap(),
            hard
        );
        for bad in [
            r#""path":"d","kind":"dir","link":"f""#,
            r#""path":"d","kind":"dir","target":"f""#,
            r#""path":"f","kind":"file","target":"t""#,
            r#""path":"s","kind":"symlink","target":"t","link":"f""#,
        ] {
            let e = serde_json::from_str::<Entry>(&format!("{{{bad},{meta}}}")).unwrap_err();
            assert!(e.to_string().contains("it cannot have"), "{bad}: {e}");
        }
        // The point of holding them out of line: an entry and its stamp in 128 bytes.
        assert!(std::mem::size_of::<(Entry, Stamp)>() <= 128);
    }

    #[test]
    fn manifests_round_trip() {
        let mut m = Manifest {
            generation: new_generation(),
            ..Manifest::default()
        };
        let e = Entry {
            path: "a".into(),
            kind: Kind::File,
            size: 3,
            meta: Meta::default(),
            hash: Some(Hash(*blake3::hash(b"abc").as_bytes())),
            other: None,
        };
        m.entries.insert("a".into(), (e.clone(), Stamp::default()));
        let back = Manifest::decode(&m.encode().unwrap()).unwrap();
        assert_eq!(back.entries["a"].0, e);
        assert_eq!(back.generation.len(), 32);
    }
}
