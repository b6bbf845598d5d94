//! Garbage in, no panic: random, truncated and mutated input to every decoder that reads
//! the network or a file in the push engine (frames, messages, the manifest), 10 000
//! cases each. A decoder may refuse; it must not panic nor allocate past its bounds.

use super::plan::{How, Step};
use super::wire::{self, Frame, ToReceiver, ToSender};
use super::{Entry, Hash, Kind, Manifest, Meta, Stamp};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A real stream of frames: messages of both directions, data (plain and compressed)
/// and a chunk list, to be cut and mutated.
fn valid_stream() -> Vec<u8> {
    let mut b = Vec::new();
    let meta = Meta {
        mode: 0o644,
        ..Meta::default()
    };
    wire::write_msg(
        &mut b,
        &ToReceiver::Step {
            id: 1,
            step: Step::File {
                path: "a/b.txt".into(),
                size: 5,
                hash: Hash(*blake3::hash(b"hello").as_bytes()),
                meta,
                how: How::Literal,
            },
            delta: None,
        },
    )
    .unwrap();
    wire::write_data(&mut b, 1, 0, b"hello", false).unwrap();
    wire::write_data(&mut b, 1, 0, &[b'z'; 4096], true).unwrap();
    wire::write_chunks(
        &mut b,
        1,
        &[super::chunk::Chunk {
            offset: 0,
            len: 5,
            hash: [7; 16],
        }],
    )
    .unwrap();
    wire::write_msg(
        &mut b,
        &ToSender::Need {
            id: 1,
            all: false,
            ranges: vec![(0, 5)],
        },
    )
    .unwrap();
    wire::write_msg(&mut b, &ToReceiver::Finish).unwrap();
    b
}

/// Reads frames until the decoder refuses or the input ends; every message is decoded
/// as either direction's message.
fn read_all(mut input: &[u8]) {
    for _ in 0..64 {
        match wire::read_frame(&mut input) {
            Ok(Frame::Msg(body)) => {
                let _ = Frame::Msg(body.clone()).msg::<ToReceiver>();
                let _ = Frame::Msg(body).msg::<ToSender>();
            }
            Ok(Frame::Data { bytes, .. }) => assert!(bytes.len() <= wire::MAX_FRAME),
            Ok(Frame::Chunks { list, .. }) => assert!(list.len() <= wire::MAX_FRAME / 20),
            Err(_) => return,
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        read_all(&bytes);
        let _ = Manifest::decode(&bytes);
    }

    #[test]
    fn mutated_frames_are_refused_without_panic(
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut b = valid_stream();
        for (at, x) in flips {
            let i = at.index(b.len());
            b[i] ^= x;
        }
        let end = cut.index(b.len() + 1);
        read_all(&b[..end]);
    }

    #[test]
    fn mutated_manifests_are_refused_without_panic(
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut m = Manifest {
            generation: "g1".into(),
            root_dev: 3,
            epoch: 2,
            ..Manifest::default()
        };
        m.entries.insert(
            "a".into(),
            (
                Entry {
                    path: "a".into(),
                    kind: Kind::File,
                    size: 5,
                    meta: Meta::default(),
                    hash: None,
                    other: None,
                },
                Stamp::default(),
            ),
        );
        let mut b = m.encode().unwrap();
        for (at, x) in flips {
            let i = at.index(b.len());
            b[i] ^= x;
        }
        let end = cut.index(b.len() + 1);
        let _ = Manifest::decode(&b[..end]);
    }
}
