#!/usr/bin/env python3
"""Speaks peer RPC as NODE to the agent at HOST:PORT and asks switchover steps of SITE at
EPOCH, one per argument: `demote`, `undo`, `check`, or `rejoin:EPOCH`. Prints each answer
as one JSON line. Run from the peer's tunnel address (its network namespace).

usage: handover.py HOST:PORT NODE SITE EPOCH STEP...
"""
import json
import socket
import struct
import sys

HOST, PORT = sys.argv[1].rsplit(":", 1)
NODE, SITE, EPOCH = sys.argv[2], sys.argv[3], int(sys.argv[4])


def frame(obj):
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


def read_frame(s):
    (n,) = struct.unpack(">I", read_exact(s, 4))
    return json.loads(read_exact(s, n))


s = socket.create_connection((HOST, int(PORT)), timeout=120)
s.sendall(frame({"protocol": 1, "node": NODE}))
read_frame(s)
for step in sys.argv[5:]:
    if step.startswith("rejoin:"):
        step = {"rejoin": {"to_epoch": int(step.split(":", 1)[1])}}
    s.sendall(frame({"handover": {"site": SITE, "epoch": EPOCH, "step": step}}))
    print(json.dumps(read_frame(s)), flush=True)
s.close()
