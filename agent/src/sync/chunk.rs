//! Content-defined chunks (FastCDC 2020) for deltas: an edit moves only the chunks around
//! it, even when bytes are inserted. The average chunk grows with the file (about 4·√size),
//! so a file of S bytes has about √S/4 chunks of 20 bytes each on the wire: 2 048 for
//! 64 MiB, 262 144 for 1 TiB. Chunking holds one chunk in memory at a time.

use std::io::Read;

/// Files smaller than this travel whole: a delta would not save a round trip's worth.
pub const DELTA_MIN_SIZE: u64 = 4 * 1024;

/// FastCDC parameters: minimum, average and maximum chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Params {
    /// The parameters for a file of `size` bytes: an average near 4·√size, which about
    /// balances the chunk list (20 bytes a chunk) against the bytes resent around an edit
    /// (256 B for a 4 KiB file, 4 KiB for 1 MiB, 32 KiB for 64 MiB, at most 4 MiB).
    pub fn for_size(size: u64) -> Params {
        let want = (4.0 * (size as f64).sqrt()) as u64;
        let avg = want.clamp(256, 4 << 20).next_power_of_two().min(4 << 20) as u32;
        Params {
            min: (avg / 4).max(64),
            avg,
            max: (avg * 4).max(1024),
        }
    }

    /// Whether parameters from the wire are ones FastCDC accepts.
    pub fn valid(self) -> bool {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
    }
}

/// One chunk: where it is and a 128-bit blake3 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub len: u32,
    pub hash: [u8; 16],
}

pub fn chunk_hash(data: &[u8]) -> [u8; 16] {
    let mut h = [0u8; 16];
    h.copy_from_slice(&blake3::hash(data).as_bytes()[..16]);
    h
}

/// Cuts what `reader` yields into chunks, also returning the blake3 of all of it. Holds
/// at most one chunk (≤ `max`) in memory.
pub fn chunks<R: Read>(
    reader: R,
    p: Params,
) -> std::io::Result<(Vec<Chunk>, crate::sync::Hash, u64)> {
    let mut out = Vec::new();
    let mut whole = blake3::Hasher::new();
    let mut total = 0u64;
    for c in fastcdc::v2020::StreamCDC::new(reader, p.min, p.avg, p.max) {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => std::io::Error::other(other.to_string()),
        })?;
        whole.update(&c.data);
        total += c.length as u64;
        out.push(Chunk {
            offset: c.offset,
            len: c.length as u32,
            hash: chunk_hash(&c.data),
        });
    }
    Ok((out, crate::sync::Hash(*whole.finalize().as_bytes()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn an_insertion_moves_only_nearby_chunks() {
        let old = data(1 << 20, 7);
        let mut new = old.clone();
        new.splice(500_000..500_000, b"inserted bytes".iter().copied());
        let p = Params::for_size(new.len() as u64);
        let (a, ha, na) = chunks(&old[..], p).unwrap();
        let (b, hb, nb) = chunks(&new[..], p).unwrap();
        assert_eq!((na, nb), (old.len() as u64, new.len() as u64));
        assert_ne!(ha, hb);
        let have: std::collections::HashSet<_> = a.iter().map(|c| c.hash).collect();
        let missing: u64 = b
            .iter()
            .filter(|c| !have.contains(&c.hash))
            .map(|c| u64::from(c.len))
            .sum();
        assert!(b.len() > 50, "{} chunks", b.len());
        assert!(
            missing < 3 * 32 * 1024,
            "{missing} bytes of new chunks for a 14-byte insertion"
        );
        // The chunks tile the file.
        let mut at = 0;
        for c in &b {
            assert_eq!(c.offset, at);
            at += u64::from(c.len);
        }
        assert_eq!(at, nb);
    }

    #[test]
    fn parameters_scale_and_stay_valid() {
        for size in [0, 1, 100_000, 1 << 30, 1 << 40, u64::MAX] {
            let p = Params::for_size(size);
            assert!(p.valid(), "{size}: {p:?}");
            if size <= 1 << 40 {
                assert!(
                    size / u64::from(p.min) <= u64::from(crate::sync::wire::MAX_WIRE_CHUNKS),
                    "{size}: {p:?}"
                );
            }
        }
        assert!(!Params {
            min: 0,
            avg: 1,
            max: 2
        }
        .valid());
    }
}
