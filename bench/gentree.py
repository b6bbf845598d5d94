#!/usr/bin/env python3
"""Generates a benchmark tree: N files with lognormal sizes (median 4 KiB, sigma 1.6,
capped at 64 MiB), 100 per directory in two levels; two thirds text-like (compressible),
one third random bytes (like images or archives). Deterministic for a given N.

usage: gentree.py ROOT N
       gentree.py --edit ROOT PERCENT   overwrite 64 bytes in the middle of PERCENT% of files
"""
import os
import random
import sys

WORDS = ("the of and to in is that for it as with was on be by this are from at or an have "
         "orch push replica standby master tunnel backup file directory site page image user "
         "config report database nightly alpha beta gamma delta").split()


def text(rng, n):
    out = []
    size = 0
    while size < n:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def files(root, n):
    for i in range(n):
        d = os.path.join(root, f"d{i // 10000:02d}", f"d{(i // 100) % 100:02d}")
        yield i, d, os.path.join(d, f"f{i:07d}")


def generate(root, n):
    rng = random.Random(20261121)
    total = 0
    for i, d, path in files(root, n):
        os.makedirs(d, exist_ok=True)
        size = min(int(rng.lognormvariate(8.3, 1.6)), 64 << 20)
        data = os.urandom(size) if i % 3 == 2 else text(rng, size)
        with open(path, "wb") as f:
            f.write(data)
        total += size
    print(f"{n} files, {total / 1e6:.1f} MB in {root}")


def edit(root, percent):
    rng = random.Random(7)
    paths = []
    for dirpath, _, names in os.walk(root):
        paths.extend(os.path.join(dirpath, n) for n in names)
    paths.sort()
    chosen = rng.sample(paths, max(1, len(paths) * percent // 100))
    for p in chosen:
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            f.seek(max(0, size // 2 - 32))
            f.write(os.urandom(min(64, size)))
    print(f"edited {len(chosen)} files in place")


if __name__ == "__main__":
    if sys.argv[1] == "--edit":
        edit(sys.argv[2], int(sys.argv[3]))
    else:
        generate(sys.argv[1], int(sys.argv[2]))
