//! The push protocol, spoken on a peer RPC connection after a `push` request.
//!
//! A frame is a 4-byte big-endian length, a kind byte, a flags byte and the body (at most
//! [`MAX_FRAME`] bytes, compressed or not; a compressed body may not inflate past it).
//! Kinds: a JSON message ([`ToReceiver`] / [`ToSender`]); file data (`u32` file id,
//! `u64` offset, bytes); a chunk list (`u32` file id, then 20-byte records: `u32` length
//! and a 16-byte hash). Flag bit 0: the body is zstd-compressed.
//!
//! The receiver drives nothing; the sender sends steps in plan order and, for copies and
//! deltas, the receiver answers `need` with what it lacks. Every path in a step is
//! checked with [`super::check_path`] before use.

use super::chunk::{Chunk, Params};
use super::plan::Step;
use super::Entry;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::io::{self, Read, Write};

/// Bumped on any incompatible change; both sides must agree.
pub const SYNC_PROTOCOL: u32 = 1;
pub const MAX_FRAME: usize = 2 << 20;
/// File data travels in blocks of this size.
pub const DATA_BLOCK: usize = 256 << 10;
/// Entries per `state` message, and chunk records per chunk-list frame.
pub const STATE_BATCH: usize = 2048;
pub const CHUNK_BATCH: usize = 32 * 1024;
/// The most chunks one delta may have on the wire.
pub const MAX_WIRE_CHUNKS: u32 = 1 << 22;
/// Bodies shorter than this are not worth compressing.
const COMPRESS_MIN: usize = 512;

const KIND_MSG: u8 = 1;
const KIND_DATA: u8 = 2;
const KIND_CHUNKS: u8 = 3;
const FLAG_ZSTD: u8 = 1;

/// What the sender opens a push with (inside a peer RPC request).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Open {
    pub protocol: u32,
    pub site: String,
    pub job: String,
    /// The sender's epoch for the site (the receiver checks its own store).
    pub epoch: i64,
    /// The receiver generation the sender's manifest matches, if it has one.
    pub generation: Option<String>,
    /// List what would change; the receiver changes nothing at all.
    pub dry_run: bool,
    /// Pushed past `max_delete` by the sender's operator (`orch push --force`): the
    /// receiver logs it; without it, the receiver holds deletions to its own limit.
    #[serde(default)]
    pub force: bool,
    /// The source root's own mode, owner and time: the replica's root gets them (under
    /// the same rules as any directory), so that a web server can enter it after a
    /// failover.
    #[serde(default)]
    pub root_meta: Option<super::Meta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeltaHead {
    pub params: Params,
    /// How many chunk records follow in chunk-list frames.
    pub chunks: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToReceiver {
    /// A step of the plan; files have an id that data, chunk lists and needs refer to.
    Step {
        id: u32,
        step: Step,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<DeltaHead>,
    },
    /// The file `id` cannot be sent (it vanished or changed while being read).
    Abandon { id: u32, reason: String },
    /// Every step was sent: make it durable and answer `done`.
    Finish,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToSender {
    /// What the replica holds: everything (`full`) when the sender's generation is not
    /// the receiver's, else only what changed behind the sender's back (`entries` as
    /// they are now, `gone` removed). Sent in batches; `last` marks the end.
    State {
        generation: String,
        full: bool,
        entries: Vec<Entry>,
        #[serde(default)]
        gone: Vec<String>,
        /// The receiver sets numeric owners (it runs as root).
        #[serde(default)]
        owners: bool,
        last: bool,
    },
    /// For a copy or delta `id`: send these chunk ranges `[from, to)` (or everything).
    Need {
        id: u32,
        all: bool,
        ranges: Vec<(u32, u32)>,
    },
    Done {
        generation: String,
        /// Paths that could not be written, with why.
        failed: Vec<(String, String)>,
        /// Paths moved aside into `diverged_dir` before being overwritten or deleted.
        diverged: Vec<String>,
        diverged_dir: Option<String>,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("push connection")]
    Io(#[from] io::Error),
    #[error("the peer closed the push connection")]
    Closed,
    #[error("a frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    Oversized(usize),
    #[error("malformed push frame: {0}")]
    Malformed(String),
}

#[derive(Debug)]
pub enum Frame {
    Msg(Vec<u8>),
    Data {
        id: u32,
        offset: u64,
        bytes: Vec<u8>,
    },
    Chunks {
        id: u32,
        list: Vec<(u32, [u8; 16])>,
    },
}

impl Frame {
    pub fn msg<T: DeserializeOwned>(self) -> Result<T, WireError> {
        match self {
            Frame::Msg(body) => {
                serde_json::from_slice(&body).map_err(|e| WireError::Malformed(e.to_string()))
            }
            Frame::Data { .. } => Err(WireError::Malformed(
                "file data where a message was due".into(),
            )),
            Frame::Chunks { .. } => Err(WireError::Malformed(
                "a chunk list where a message was due".into(),
            )),
        }
    }
}

/// Counts the bytes written through it (the push's bytes on the wire).
pub struct Counted<W> {
    pub inner: W,
    pub bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

thread_local! {
    /// One zstd context a thread for the frames it writes, one for those it reads: a
    /// context made for each frame cost more than compressing a small one.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    /// The compressed form of the frame being written, and a compressed frame being read:
    /// one buffer each a thread, not one allocated for every frame.
    static PACKED_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static PACKED_IN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `body` into `out` (cleared first).
fn compress_frame(body: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(body.len()));
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let z = match &mut *c {
            Some(z) => z,
            none => none.insert(zstd::bulk::Compressor::new(1)?),
        };
        z.compress_to_buffer(body, out).map(drop)
    })
}

/// Inflates a frame's body into a buffer of the size its header declares (refused over
/// [`MAX_FRAME`]; a body longer than declared fails), or of `MAX_FRAME` when it declares
/// none.
fn decompress_frame(packed: &[u8]) -> io::Result<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(packed)
        .map_err(|_| io::Error::other("not a zstd frame"))?;
    let capacity = match declared {
        Some(n) if n > MAX_FRAME as u64 => {
            return Err(io::Error::other(format!(
                "declares {n} bytes, over {MAX_FRAME}"
            )))
        }
        Some(n) => n as usize,
        None => MAX_FRAME,
    };
    let mut out = Vec::with_capacity(capacity);
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let z = match &mut *d {
            Some(z) => z,
            none => none.insert(zstd::bulk::Decompressor::new()?),
        };
        z.decompress_to_buffer(packed, &mut out)
    })?;
    Ok(out)
}

/// Writes a frame, its body compressed when asked and worth it; says how many bytes the
/// body took on the wire.
fn write_frame<W: Write>(
    w: &mut W,
    kind: u8,
    body: &[u8],
    compress: bool,
) -> Result<usize, WireError> {
    if !(compress && body.len() >= COMPRESS_MIN) {
        return write_body(w, kind, 0, body);
    }
    PACKED_OUT.with(|p| {
        let mut packed = p.borrow_mut();
        compress_frame(body, &mut packed)?;
        if packed.len() < body.len() {
            write_body(w, kind, FLAG_ZSTD, &packed)
        } else {
            write_body(w, kind, 0, body)
        }
    })
}

fn write_body<W: Write>(w: &mut W, kind: u8, flags: u8, body: &[u8]) -> Result<usize, WireError> {
    if body.len() > MAX_FRAME {
        return Err(WireError::Oversized(body.len()));
    }
    let mut head = [0u8; 6];
    head[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
    head[4] = kind;
    head[5] = flags;
    w.write_all(&head)?;
    w.write_all(body)?;
    Ok(body.len())
}

pub fn write_msg<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), WireError> {
    let body = serde_json::to_vec(msg).map_err(|e| WireError::Malformed(e.to_string()))?;
    write_frame(w, KIND_MSG, &body, true).map(drop)
}

/// A data frame written from a slice (tests; the sender builds its frames in a
/// [`DataBuf`]).
#[cfg(test)]
pub fn write_data<W: Write>(
    w: &mut W,
    id: u32,
    offset: u64,
    bytes: &[u8],
    compress: bool,
) -> Result<(), WireError> {
    let mut body = Vec::with_capacity(12 + bytes.len());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(bytes);
    write_frame(w, KIND_DATA, &body, compress).map(drop)
}

/// A data frame's body built in place, one for all the blocks a sender writes: a file's
/// bytes are read straight in behind the frame's 12-byte header (no copy, no fresh zeroed
/// block for each file), and a file whose data does not compress is sent as it is
/// (compression is tried again every [`DataBuf::RETRY`] blocks, in case the file changes
/// in kind part way).
pub struct DataBuf {
    body: Vec<u8>,
    /// Blocks still to send uncompressed before compression is tried again.
    skip: u32,
}

impl Default for DataBuf {
    fn default() -> DataBuf {
        DataBuf {
            body: vec![0u8; 12 + DATA_BLOCK],
            skip: 0,
        }
    }
}

impl DataBuf {
    /// After a block that did not compress by a 32nd, this many go as they are.
    pub const RETRY: u32 = 8;

    /// Room for the next block's bytes: `want` of them, at most [`DATA_BLOCK`].
    pub fn room(&mut self, want: usize) -> &mut [u8] {
        &mut self.body[12..12 + want.min(DATA_BLOCK)]
    }

    /// A new file begins: its data is tried compressed again.
    pub fn new_file(&mut self) {
        self.skip = 0;
    }

    /// Writes the first `n` bytes put in [`DataBuf::room`] as file `id`'s data at `offset`.
    pub fn write<W: Write>(
        &mut self,
        w: &mut W,
        id: u32,
        offset: u64,
        n: usize,
    ) -> Result<(), WireError> {
        self.body[..4].copy_from_slice(&id.to_be_bytes());
        self.body[4..12].copy_from_slice(&offset.to_be_bytes());
        let body = &self.body[..12 + n.min(DATA_BLOCK)];
        // Bytes as even as noise (already compressed: photos, videos, archives) are not
        // given to zstd at all: it would spend most of a sender's CPU to gain nothing.
        let compress = self.skip == 0 && !looks_compressed(&body[12..]);
        let sent = write_frame(w, KIND_DATA, body, compress)?;
        if self.skip == 0 && body.len() >= COMPRESS_MIN && sent > body.len() - body.len() / 32 {
            self.skip = Self::RETRY;
        } else {
            self.skip = self.skip.saturating_sub(1);
        }
        Ok(())
    }
}

/// Whether a block's bytes look already compressed: the entropy of its bytes, over eight
/// samples of 512 spread through it, above 7.8 bits a byte (noise measures about 7.95
/// on 4 KiB; text 4–5). Blocks under 4 KiB are left to zstd.
fn looks_compressed(block: &[u8]) -> bool {
    const SAMPLES: usize = 8;
    const SAMPLE: usize = 512;
    if block.len() < SAMPLES * SAMPLE {
        return false;
    }
    let mut count = [0u32; 256];
    let stride = block.len() / SAMPLES;
    for i in 0..SAMPLES {
        for b in &block[i * stride..i * stride + SAMPLE] {
            count[usize::from(*b)] += 1;
        }
    }
    let total = (SAMPLES * SAMPLE) as f64;
    let bits: f64 = count
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / total;
            -p * p.log2()
        })
        .sum();
    bits > 7.8
}

pub fn write_chunks<W: Write>(w: &mut W, id: u32, chunks: &[Chunk]) -> Result<(), WireError> {
    for batch in chunks.chunks(CHUNK_BATCH) {
        let mut body = Vec::with_capacity(4 + 20 * batch.len());
        body.extend_from_slice(&id.to_be_bytes());
        for c in batch {
            body.extend_from_slice(&c.len.to_be_bytes());
            body.extend_from_slice(&c.hash);
        }
        write_frame(w, KIND_CHUNKS, &body, false)?;
    }
    Ok(())
}

/// Reads one frame, checking its length before reading it and its inflated size.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Frame, WireError> {
    let mut head = [0u8; 6];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::Oversized(len));
    }
    if head[5] & !FLAG_ZSTD != 0 {
        return Err(WireError::Malformed(format!(
            "unknown flags {:#x}",
            head[5]
        )));
    }
    // Read into a buffer not zeroed first: a compressed body into this thread's one, to
    // be inflated into the frame's own; any other straight into the frame's own.
    let read_body = |r: &mut R, body: &mut Vec<u8>| -> Result<(), WireError> {
        body.clear();
        body.reserve(len);
        (&mut *r).take(len as u64).read_to_end(body)?;
        if body.len() < len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        Ok(())
    };
    let mut body = Vec::new();
    if head[5] & FLAG_ZSTD != 0 {
        body = PACKED_IN.with(|p| -> Result<Vec<u8>, WireError> {
            let mut packed = p.borrow_mut();
            read_body(r, &mut packed)?;
            decompress_frame(&packed)
                .map_err(|e| WireError::Malformed(format!("a compressed frame: {e}")))
        })?;
    } else {
        read_body(r, &mut body)?;
    }
    let short = || WireError::Malformed("a frame shorter than its header".into());
    match head[4] {
        KIND_MSG => Ok(Frame::Msg(body)),
        KIND_DATA => {
            if body.len() < 12 {
                return Err(short());
            }
            let id = u32::from_be_bytes(body[..4].try_into().map_err(|_| short())?);
            let offset = u64::from_be_bytes(body[4..12].try_into().map_err(|_| short())?);
            body.drain(..12);
            Ok(Frame::Data {
                id,
                offset,
                bytes: body,
            })
        }
        KIND_CHUNKS => {
            if body.len() < 4 || (body.len() - 4) % 20 != 0 {
                return Err(WireError::Malformed(
                    "a chunk list of partial records".into(),
                ));
            }
            let id = u32::from_be_bytes(body[..4].try_into().map_err(|_| short())?);
            let list = body[4..]
                .chunks_exact(20)
                .map(|r| {
                    let mut h = [0u8; 16];
                    h.copy_from_slice(&r[4..]);
                    (u32::from_be_bytes([r[0], r[1], r[2], r[3]]), h)
                })
                .collect();
            Ok(Frame::Chunks { id, list })
        }
        k => Err(WireError::Malformed(format!("unknown frame kind {k}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_compressed_or_not() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &ToReceiver::Finish).unwrap();
        let text = vec![b'a'; 100_000];
        write_data(&mut buf, 7, 42, &text, true).unwrap();
        let c = Chunk {
            offset: 0,
            len: 9,
            hash: [3; 16],
        };
        write_chunks(&mut buf, 7, &[c, c]).unwrap();
        assert!(
            buf.len() < 2000,
            "the repetitive data was compressed: {}",
            buf.len()
        );
        let mut r = &buf[..];
        assert!(matches!(
            read_frame(&mut r).unwrap().msg::<ToReceiver>().unwrap(),
            ToReceiver::Finish
        ));
        let Frame::Data { id, offset, bytes } = read_frame(&mut r).unwrap() else {
            panic!()
        };
        assert_eq!((id, offset, bytes), (7, 42, text));
        let Frame::Chunks { id, list } = read_frame(&mut r).unwrap() else {
            panic!()
        };
        assert_eq!((id, list), (7, vec![(9, [3; 16]), (9, [3; 16])]));
        assert!(matches!(read_frame(&mut r), Err(WireError::Closed)));
    }

    #[test]
    fn hostile_frames_are_refused_before_allocation() {
        let huge = [0xff, 0xff, 0xff, 0xff, KIND_MSG, 0];
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(WireError::Oversized(_))
        ));
        // A zstd bomb: small compressed, huge inflated.
        let bomb = zstd::bulk::compress(&vec![0u8; MAX_FRAME + 1], 19).unwrap();
        let mut f = (bomb.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[KIND_DATA, FLAG_ZSTD]);
        f.extend_from_slice(&bomb);
        assert!(matches!(
            read_frame(&mut &f[..]),
            Err(WireError::Malformed(_))
        ));
        for bad in [
            vec![0, 0, 0, 3, KIND_DATA, 0, 1, 2, 3],
            vec![0, 0, 0, 5, KIND_CHUNKS, 0, 0, 0, 0, 1, 2],
            vec![0, 0, 0, 0, 9, 0],
            vec![0, 0, 0, 0, KIND_MSG, 4],
        ] {
            assert!(
                matches!(read_frame(&mut &bad[..]), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut r = &[0, 0, 0, 2, KIND_MSG, 0, b'{', b'}'][..];
        assert!(read_frame(&mut r).unwrap().msg::<ToSender>().is_err());
    }

    #[test]
    fn data_built_in_place_reads_back_and_what_does_not_compress_goes_as_it_is() {
        // One file of 20 blocks of noise then 20 of text; a second file of text.
        let mut noise = vec![0u8; 20 * DATA_BLOCK];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        let text: Vec<u8> = (0..20 * DATA_BLOCK)
            .map(|i| b"orch pushes trees "[i % 18])
            .collect();
        let first = [&noise[..], &text[..]].concat();
        let second = &text[..3 * DATA_BLOCK + 5];
        let mut d = DataBuf::default();
        let mut w = Vec::new();
        for (id, file) in [(1u32, &first[..]), (2, second)] {
            d.new_file();
            for (i, block) in file.chunks(DATA_BLOCK).enumerate() {
                d.room(block.len()).copy_from_slice(block);
                d.write(&mut w, id, (i * DATA_BLOCK) as u64, block.len())
                    .unwrap();
            }
        }
        let mut r = &w[..];
        let mut got: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
        let mut packed = Vec::new();
        while !r.is_empty() {
            packed.push(r[5] & FLAG_ZSTD != 0);
            let Frame::Data { id, offset, bytes } = read_frame(&mut r).unwrap() else {
                panic!("not a data frame")
            };
            let had = got.entry(id).or_default();
            assert_eq!(offset, had.len() as u64);
            had.extend_from_slice(&bytes);
        }
        assert_eq!(got[&1], first);
        assert_eq!(got[&2], second);
        // The noise is looked at in blocks 0, 9 and 18 and sent as it is; the text after
        // it is tried again at block 27 and compressed from there; the second file is
        // tried from its first block (its last, 5 bytes, is too short to try).
        let mut want = vec![false; 27];
        want.extend([true; 13]);
        want.extend([true, true, true, false]);
        assert_eq!(packed, want);
    }

    #[test]
    fn noise_looks_compressed_and_text_zeros_or_small_blocks_do_not() {
        let mut noise = vec![0u8; DATA_BLOCK];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        assert!(looks_compressed(&noise));
        // A zstd frame of text (what a .zst or a .gz holds) is noise enough.
        let words = [
            "orch ", "pushes ", "the ", "tree ", "to ", "its ", "standby ", "at ", "night\n",
        ];
        let text: Vec<u8> = noise
            .iter()
            .flat_map(|b| words[usize::from(*b) % words.len()].bytes())
            .collect();
        let packed = zstd::bulk::compress(&text, 3).unwrap();
        assert!(packed.len() > 16 << 10, "{}", packed.len());
        assert!(looks_compressed(&packed));
        assert!(!looks_compressed(&text[..DATA_BLOCK]));
        assert!(!looks_compressed(&vec![0u8; DATA_BLOCK]));
        // Too small to judge: left to zstd.
        assert!(!looks_compressed(&noise[..4095]));
    }

    fn zstd_frame(kind: u8, packed: &[u8]) -> Vec<u8> {
        let mut f = (packed.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[kind, FLAG_ZSTD]);
        f.extend_from_slice(packed);
        f
    }

    #[test]
    fn a_compressed_frame_is_inflated_to_its_declared_size_and_no_more() {
        let body: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 97).to_be_bytes())
            .collect();
        let mut data = vec![0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9];
        data.extend_from_slice(&body);
        // Declared in the header (as a one-shot compression writes it): read back.
        let declared = zstd_frame(KIND_DATA, &zstd::bulk::compress(&data, 1).unwrap());
        let Frame::Data { id, offset, bytes } = read_frame(&mut &declared[..]).unwrap() else {
            panic!()
        };
        assert_eq!((id, offset), (5, 9));
        assert_eq!(bytes, body);
        // Not declared (a streaming compressor's frame): read back too.
        let mut streamed = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut streamed, 1).unwrap();
        enc.include_contentsize(false).unwrap();
        enc.write_all(&data).unwrap();
        enc.finish().unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        let Frame::Data { bytes, .. } =
            read_frame(&mut &zstd_frame(KIND_DATA, &streamed)[..]).unwrap()
        else {
            panic!()
        };
        assert_eq!(bytes, body);
        // Not a zstd frame at all.
        assert!(matches!(
            read_frame(&mut &zstd_frame(KIND_DATA, b"not zstd")[..]),
            Err(WireError::Malformed(_))
        ));
        // Many frames through the one context of this thread: each stands alone.
        let mut w = Vec::new();
        for i in 0..50u32 {
            write_data(
                &mut w,
                i,
                u64::from(i),
                &body[..(i as usize + 1) * 1000],
                true,
            )
            .unwrap();
        }
        let mut r = &w[..];
        for i in 0..50u32 {
            let Frame::Data { id, bytes, .. } = read_frame(&mut r).unwrap() else {
                panic!()
            };
            assert_eq!((id, &bytes[..]), (i, &body[..(i as usize + 1) * 1000]));
        }
    }
}
