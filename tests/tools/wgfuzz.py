#!/usr/bin/python3
"""Hostile traffic for the tunnel's listen port, for the lab tests (bounded in count).

  wgfuzz.py sniff IFACE PORT OUTFILE SECONDS   record UDP payloads sent to PORT (max 400)
  wgfuzz.py attack HOST PORT CAPTURE SEED      random bytes, truncated and replayed datagrams
"""
import random
import socket
import struct
import sys
import time


def sniff(iface, port, outfile, seconds):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
    s.bind((iface, 0))
    s.settimeout(0.2)
    deadline = time.time() + seconds
    seen = []
    while time.time() < deadline and len(seen) < 400:
        try:
            frame = s.recv(65535)
        except socket.timeout:
            continue
        if frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        if ip[9] != 17:
            continue
        udp = ip[ihl:]
        if struct.unpack("!H", udp[2:4])[0] != port:
            continue
        seen.append(udp[8:].hex())
    with open(outfile, "w") as f:
        f.write("\n".join(seen))
    print(f"captured {len(seen)} datagrams", flush=True)


def attack(host, port, capture, seed):
    rng = random.Random(seed)
    with open(capture) as f:
        captured = [bytes.fromhex(line) for line in f.read().split()]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0

    def send(data):
        nonlocal sent
        s.sendto(data, (host, port))
        sent += 1
        if sent % 200 == 0:
            time.sleep(0.01)  # stay a burst, not a flood of the 2-core test machine

    for _ in range(2000):
        data = bytearray(rng.randbytes(rng.choice([0, 1, 4, 32, 92, 148, 200, 1500])))
        if data:
            data[0] = rng.choice([1, 2, 3, 4, rng.randrange(256)])
        send(bytes(data))
    for d in captured:
        for cut in (1, 4, 16, len(d) // 2, len(d) - 1):
            if 0 < cut < len(d):
                send(d[:cut])
        for _ in range(3):
            send(d)
    print(f"sent {sent} datagrams ({len(captured)} captured ones replayed)", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "sniff":
        sniff(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    elif mode == "attack":
        attack(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    else:
        sys.exit(f"unknown mode {mode}")
