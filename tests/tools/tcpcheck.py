#!/usr/bin/python3
"""Moves seeded random bytes over one TCP connection and prints "BYTES SHA256" at each end.

  tcpcheck.py serve ADDR PORT TIMEOUT     accept one connection, read to EOF
  tcpcheck.py send ADDR PORT MIB SEED     connect, send MIB mebibytes, close
"""
import hashlib
import random
import socket
import sys


def serve(addr, port, timeout):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1)
    srv.settimeout(timeout)
    print("listening", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(timeout)
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest(), flush=True)


def send(addr, port, mib, seed):
    rng = random.Random(seed)
    conn = socket.create_connection((addr, port), timeout=30)
    digest, total = hashlib.sha256(), 0
    for _ in range(mib):
        block = rng.randbytes(1 << 20)
        conn.sendall(block)
        digest.update(block)
        total += len(block)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)  # wait for the reader to close
    print(total, digest.hexdigest(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
