#!/usr/bin/env python3
"""A hostile push sender for the lab: from alice's tunnel address it speaks orch's peer
RPC and push protocol (agent/src/peer.rs, agent/src/sync/wire.rs) to bob's agent and tries
to write outside the target. Prints one line per attempt: NAME: refused|not written|ACCEPTED.

usage: hostilepush.py HOST:PORT OUTSIDE_DIR [memory]

With `memory`, it tries to make the receiver hold much instead: a delta with tiny chunks
announced for millions of records, and 10 000 files abandoned with 20 KiB reasons each.
"""
import json
import socket
import struct
import sys

HOST, PORT = sys.argv[1].rsplit(":", 1)
OUTSIDE = sys.argv[2]
HASH_X = "cfa6b6b1ba4d3cdd6ff5e1ef4a9b10b1b5a1c5e3b0f6e0c1a0b4d5d1a3c2f9e8"  # any 64 hex digits
META = {"mode": 0o644, "uid": 0, "gid": 0, "mtime": 0, "mtime_ns": 0}


def peer_frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def read_exact(s, n):
    out = b""
    while len(out) < n:
        got = s.recv(n - len(out))
        if not got:
            raise EOFError("closed")
        out += got
    return out


def read_peer_frame(s):
    (n,) = struct.unpack(">I", read_exact(s, 4))
    return json.loads(read_exact(s, n))


def msg(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">IBB", len(body), 1, 0) + body


def data(file_id, offset, payload):
    body = struct.pack(">IQ", file_id, offset) + payload
    return struct.pack(">IBB", len(body), 2, 0) + body


def read_msg(s):
    n, kind, flags = struct.unpack(">IBB", read_exact(s, 6))
    body = read_exact(s, n)
    if kind == 1 and flags == 1:
        # A compressed message (a long answer): this tool does not read zstd.
        return {"t": "compressed", "bytes": n}
    if kind != 1 or flags != 0:
        raise ValueError(f"frame kind {kind} flags {flags} (this tool reads plain messages only)")
    return json.loads(body)


def file_step(i, path, how="literal"):
    return {"t": "step", "id": i, "step": {"op": "file", "path": path, "size": 1, "hash": HASH_X,
                                           "meta": META, "how": how}}


def attempt(name, site="alice-web", job="www", epoch=1, frames=b""):
    s = socket.create_connection((HOST, int(PORT)), timeout=20)
    s.sendall(peer_frame({"protocol": 1, "node": "alice"}))
    read_peer_frame(s)
    s.sendall(peer_frame({"push": {"protocol": 1, "site": site, "job": job, "epoch": epoch,
                                   "generation": None, "dry_run": False}}))
    try:
        while True:
            m = read_msg(s)
            if m["t"] == "error":
                print(f"{name}: refused ({m['message']})")
                return
            if m["t"] == "state" and m["last"]:
                break
        s.sendall(frames + msg({"t": "finish"}))
        while True:
            m = read_msg(s)
            if m["t"] == "error":
                print(f"{name}: refused ({m['message']})")
                return
            if m["t"] == "compressed":
                print(f"{name}: answered ({m['bytes']} bytes compressed)")
                return
            if m["t"] == "done":
                if m["failed"]:
                    print(f"{name}: not written ({len(m['failed'])} failed; the longest reason "
                          f"{max(len(r) for _, r in m['failed'])} bytes)")
                else:
                    print(f"{name}: ACCEPTED")
                return
    except (EOFError, ConnectionError) as e:
        print(f"{name}: refused (connection closed: {e})")
    finally:
        s.close()


if len(sys.argv) > 3 and sys.argv[3] == "memory":
    tiny = {"min": 64, "avg": 256, "max": 1024}
    attempt("huge-delta", frames=msg({
        "t": "step", "id": 1,
        "step": {"op": "file", "path": "big", "size": 1 << 30, "hash": HASH_X, "meta": META,
                 "how": {"delta": {"basis": "f"}}},
        "delta": {"params": tiny, "chunks": 4_000_000}}))
    reason = "x" * (20 << 10)
    long = b"".join(msg(file_step(i, f"long{i}")) + msg({"t": "abandon", "id": i, "reason": reason})
                    for i in range(1, 10_001))
    attempt("long-failures", frames=long)
    sys.exit(0)

attempt("dotdot", frames=msg(file_step(1, "../pwned")) + data(1, 0, b"x"))
attempt("absolute", frames=msg(file_step(1, OUTSIDE + "/pwned")) + data(1, 0, b"x"))
attempt("nul", frames=msg(file_step(1, "a\u0000b")) + data(1, 0, b"x"))
attempt("through-symlink", frames=msg({"t": "step", "id": 1, "step": {
    "op": "symlink", "path": "esc", "target": OUTSIDE, "meta": META}})
    + msg(file_step(2, "esc/pwned")) + data(2, 0, b"x"))
attempt("oversized", frames=struct.pack(">IBB", 0xFFFFFFF0, 1, 0))
attempt("not-master", site="bob-cloud")
attempt("stale-epoch", epoch=0)
attempt("unknown-job", job="nope")
