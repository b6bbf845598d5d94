//! The manifest's compact binary form in the state store: a magic, the header, then the
//! entries in path order, each path stored as the length it shares with the previous one
//! and the rest, every number as a LEB128 varint (signed ones zigzag), the hash as 32
//! raw bytes. About 60–80 bytes an entry (the hash is most of it) against ~250 of JSON,
//! and an order of magnitude faster both ways. Decoding is bounded: counts, lengths and
//! the blob's own end are checked, so a corrupt blob is an error, never a panic or a
//! huge allocation. Blobs of the older zstd-compressed JSON are still read.

use super::{Entry, Hash, Kind, Manifest, Meta, Stamp, MAX_ENTRIES, MAX_PATH};

const MAGIC: &[u8; 8] = b"orchMF1\n";
const HAS_HASH: u8 = 1 << 2;
const HAS_TARGET: u8 = 1 << 3;
const HAS_LINK: u8 = 1 << 4;

pub(super) fn is_binary(blob: &[u8]) -> bool {
    blob.starts_with(MAGIC)
}

pub(super) fn encode(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + m.entries.len() * 72);
    out.extend_from_slice(MAGIC);
    bytes(&mut out, m.generation.as_bytes());
    uvar(&mut out, m.root_dev);
    ivar(&mut out, m.epoch);
    uvar(&mut out, m.entries.len() as u64);
    let mut prev: &str = "";
    for (path, (e, s)) in &m.entries {
        let shared = common_prefix(prev, path);
        uvar(&mut out, shared as u64);
        bytes(&mut out, &path.as_bytes()[shared..]);
        prev = path;
        let kind = match e.kind {
            Kind::Dir => 0,
            Kind::File => 1,
            Kind::Symlink => 2,
        };
        let flags = kind
            | if e.hash.is_some() { HAS_HASH } else { 0 }
            | if e.target().is_some() { HAS_TARGET } else { 0 }
            | if e.link().is_some() { HAS_LINK } else { 0 };
        out.push(flags);
        uvar(&mut out, e.size);
        uvar(&mut out, u64::from(e.meta.mode));
        uvar(&mut out, u64::from(e.meta.uid));
        uvar(&mut out, u64::from(e.meta.gid));
        ivar(&mut out, e.meta.mtime);
        uvar(&mut out, u64::from(e.meta.mtime_ns));
        if let Some(h) = e.hash {
            out.extend_from_slice(&h.0);
        }
        if let Some(t) = e.target() {
            bytes(&mut out, t.as_bytes());
        }
        if let Some(l) = e.link() {
            bytes(&mut out, l.as_bytes());
        }
        ivar(&mut out, s.ctime);
        uvar(&mut out, u64::from(s.ctime_ns));
        uvar(&mut out, s.ino);
    }
    out
}

pub(super) fn decode(blob: &[u8]) -> Result<Manifest, String> {
    let mut r = Reader {
        buf: blob
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a binary manifest")?,
    };
    let generation = r.string(256)?;
    let root_dev = r.uvar()?;
    let epoch = r.ivar()?;
    let count = r.uvar()?;
    if count > MAX_ENTRIES as u64 {
        return Err(format!("a manifest of {count} entries"));
    }
    // Capacity grows with what the blob really holds, not with what it claims.
    let mut entries = Vec::new();
    let mut prev = String::new();
    for _ in 0..count {
        let shared = r.small(MAX_PATH)?;
        if shared > prev.len() || !prev.is_char_boundary(shared) {
            return Err("a path shares more than the previous one holds".into());
        }
        let rest = r.bytes(MAX_PATH)?;
        let mut path = String::with_capacity(shared + rest.len());
        path.push_str(&prev[..shared]);
        path.push_str(std::str::from_utf8(rest).map_err(|e| e.to_string())?);
        if path.len() > MAX_PATH || path <= prev && !prev.is_empty() {
            return Err("paths out of order or too long".into());
        }
        let flags = r.byte()?;
        let kind = match flags & 3 {
            0 => Kind::Dir,
            1 => Kind::File,
            2 => Kind::Symlink,
            _ => return Err("an unknown entry kind".into()),
        };
        let size = r.uvar()?;
        let meta = Meta {
            mode: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            mtime: r.ivar()?,
            mtime_ns: r.u32()?,
        };
        let hash = if flags & HAS_HASH != 0 {
            let b = r.take(32)?;
            let mut h = [0u8; 32];
            h.copy_from_slice(b);
            Some(Hash(h))
        } else {
            None
        };
        let target = (flags & HAS_TARGET != 0)
            .then(|| r.string(MAX_PATH))
            .transpose()?;
        let link = (flags & HAS_LINK != 0)
            .then(|| r.string(MAX_PATH))
            .transpose()?;
        let stamp = Stamp {
            ctime: r.ivar()?,
            ctime_ns: r.u32()?,
            ino: r.uvar()?,
        };
        prev.clone_from(&path);
        entries.push((
            Entry::from_parts(path, kind, size, meta, hash, target, link)?,
            stamp,
        ));
    }
    if !r.buf.is_empty() {
        return Err("bytes after the last entry".into());
    }
    Ok(Manifest {
        generation,
        root_dev,
        epoch,
        entries: super::Entries::from_sorted(entries),
    })
}

fn common_prefix(a: &str, b: &str) -> usize {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    // On a character boundary of both (the shared bytes are equal, so one check is enough).
    (0..=n).rev().find(|&i| b.is_char_boundary(i)).unwrap_or(0)
}

fn uvar(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn ivar(out: &mut Vec<u8>, v: i64) {
    uvar(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    uvar(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("the manifest ends early".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn uvar(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number longer than 64 bits".into())
    }

    fn ivar(&mut self) -> Result<i64, String> {
        let u = self.uvar()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.uvar()?).map_err(|_| "a number over 32 bits".to_string())
    }

    fn small(&mut self, max: usize) -> Result<usize, String> {
        match usize::try_from(self.uvar()?) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(format!("a length over {max}")),
        }
    }

    fn bytes(&mut self, max: usize) -> Result<&'a [u8], String> {
        let n = self.small(max)?;
        self.take(n)
    }

    fn string(&mut self, max: usize) -> Result<String, String> {
        let b = self.bytes(max)?;
        String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind, n: u64) -> (String, (Entry, Stamp)) {
        let e = Entry {
            path: path.into(),
            kind,
            size: n * 1000,
            meta: Meta {
                mode: 0o644,
                uid: 1000 + n as u32,
                gid: 100,
                mtime: 1_700_000_000 + n as i64 - 2_000_000_000,
                mtime_ns: 999_999_999,
            },
            hash: (kind == Kind::File).then_some(Hash([n as u8; 32])),
            other: match kind {
                Kind::Symlink => Some(Box::new("../élan/target".into())),
                _ => (n == 3).then(|| Box::new("a/b/c.txt".into())),
            },
        };
        let s = Stamp {
            ctime: -5 + n as i64,
            ctime_ns: 7,
            ino: u64::MAX - n,
        };
        (path.into(), (e, s))
    }

    fn sample() -> Manifest {
        Manifest {
            generation: "g-1234".into(),
            root_dev: 0xfd01,
            epoch: -3,
            entries: [
                entry("a", Kind::Dir, 1),
                entry("a/b", Kind::Dir, 2),
                entry("a/b/c.txt", Kind::File, 3),
                entry("a/b/cé.txt", Kind::File, 4),
                entry("a/b/cé2", Kind::Symlink, 5),
                entry("z", Kind::File, 6),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_is_compact() {
        let m = sample();
        let blob = encode(&m);
        let back = decode(&blob).unwrap();
        assert_eq!(back.generation, m.generation);
        assert_eq!((back.root_dev, back.epoch), (m.root_dev, m.epoch));
        assert_eq!(back.entries, m.entries);
        let json = serde_json::to_vec(&m).unwrap();
        assert!(
            blob.len() * 2 < json.len(),
            "{} vs {}",
            blob.len(),
            json.len()
        );
        // Through the public API as well, and the old JSON form is still read.
        assert_eq!(
            Manifest::decode(&m.encode().unwrap()).unwrap().entries,
            m.entries
        );
        let old = zstd::bulk::compress(&json, 3).unwrap();
        assert_eq!(Manifest::decode(&old).unwrap().entries, m.entries);
    }

    #[test]
    fn every_cut_or_flipped_blob_is_an_error_or_a_manifest_never_a_panic() {
        let blob = encode(&sample());
        for n in 0..blob.len() {
            assert!(decode(&blob[..n]).is_err(), "cut at {n}");
        }
        for i in MAGIC.len()..blob.len() {
            for bit in [0x01, 0x40, 0x80] {
                let mut b = blob.clone();
                b[i] ^= bit;
                let _ = decode(&b);
            }
        }
        // A huge count or length is refused before anything is allocated for it.
        let mut b = MAGIC.to_vec();
        bytes(&mut b, b"g");
        uvar(&mut b, 0);
        ivar(&mut b, 0);
        uvar(&mut b, u64::MAX);
        assert!(decode(&b).unwrap_err().contains("entries"));
    }
}
