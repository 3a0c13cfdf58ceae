#!/usr/bin/env python3
"""UDP datagrams of the lab's pcap captures (tcpdump -w), for failover.sh.

  pcap.py count FILE                  datagrams in FILE
  pcap.py find FILE HEX...            exit 0 if a payload holds one of the byte strings
  pcap.py inject FILE SRC MODE IFADDR resend a datagram from SRC (replay|flip|truncate)
  pcap.py senders FILE MAC=NAME...    datagrams per sending MAC (for "sends nothing")
  pcap.py ids FILE MAC=NAME...        no (key, packet id) pair sent twice to a client
  pcap.py selftest                    ids on synthetic captures, one with a repeat

ids: FILE is one client's capture (both directions, udp port 1194). Every
data packet the servers send it (source port 1194) is keyed by (key_id,
key), where a key starts at each soft reset (P_CONTROL_SOFT_RESET_V1) with
that key_id seen in either direction, and every key_id's key at a hard
reset: key_ids cycle 1..7 and a new key starts its packet ids at 1 again,
and the reset that makes the key is on the wire in clear. The packet id is
read from the clear header, which only AEAD ciphers (AES-GCM,
CHACHA20-POLY1305) have: DATA_V2 (opcode 9) = op/key_id, 3-byte peer id,
4-byte packet id; DATA_V1 (opcode 6) = op/key_id, packet id. With CBC the id
is inside the encryption: the caller checks only AEAD sessions.
Exit 1 when an id repeats within a key.
"""
import os
import socket
import struct
import sys
import tempfile

P_CONTROL_SOFT_RESET_V1 = 3
P_DATA_V1 = 6
HARD_RESETS = (7, 8, 10)  # client v2, server v2, client v3
P_DATA_V2 = 9
OPENVPN_PORT = 1194


def packets(path):
    """(time, source MAC, IP header, UDP header, payload) of every IPv4 UDP
    datagram; a record cut short by a killed tcpdump ends the list."""
    with open(path, "rb") as f:
        d = f.read()
    if len(d) < 24:
        return
    e = "<" if d[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = d[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    link = struct.unpack(e + "I", d[20:24])[0]
    off = 24
    while off + 16 <= len(d):
        sec, frac, incl, _ = struct.unpack(e + "IIII", d[off:off + 16])
        off += 16
        f = d[off:off + incl]
        off += incl
        mac = f[6:12].hex(":") if link == 1 and len(f) >= 12 else ""
        ip = f[14 if link == 1 else 16 if link == 113 else 0:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        yield sec + frac / (1e9 if nano else 1e6), mac, ip[:ihl], ip[ihl:ihl + 8], ip[ihl + 8:]


def names(args):
    """MAC=NAME arguments as a dictionary."""
    return dict(a.lower().split("=", 1) for a in args)


def check_ids(path, who):
    """Prints what was checked and every repeat; returns the repeat count."""
    epoch = {}  # key_id -> number of the current key with that id
    seen = {}  # (key_id, epoch) -> {packet id: (time, sender)}
    count, senders, repeats = 0, {}, 0
    for t, mac, _, udp, pay in packets(path):
        if not pay:
            continue
        sport, dport = struct.unpack("!HH", udp[:4])
        op, kid = pay[0] >> 3, pay[0] & 7
        if op in HARD_RESETS:
            for k in range(8):
                epoch[k] = epoch.get(k, 0) + 1
        elif op == P_CONTROL_SOFT_RESET_V1 and (kid, epoch.get(kid, 0)) in seen:
            epoch[kid] = epoch.get(kid, 0) + 1  # retransmitted resets start nothing
        if sport != OPENVPN_PORT or op not in (P_DATA_V1, P_DATA_V2):
            continue
        at = 4 if op == P_DATA_V2 else 1
        if len(pay) < at + 4:
            continue
        pid = struct.unpack("!I", pay[at:at + 4])[0]
        name = who.get(mac, mac or "?")
        count += 1
        senders[name] = senders.get(name, 0) + 1
        ids = seen.setdefault((kid, epoch.get(kid, 0)), {})
        if pid in ids:
            repeats += 1
            if repeats <= 10:
                t0, n0 = ids[pid]
                print(f"REPEAT: key_id {kid} (key {epoch.get(kid, 0)}) packet id {pid}: "
                      f"sent by {n0} at {t0:.6f}, again by {name} at {t:.6f}")
        else:
            ids[pid] = (t, name)
    by = ", ".join(f"{n} {c}" for n, c in sorted(senders.items())) or "none"
    print(f"{count} data packets checked (from {by}), {len(seen)} keys, {repeats} repeated (key, packet id)")
    return repeats


def write_pcap(path, frames):
    """A little-endian Ethernet pcap of (source MAC, sport, dport, payload)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, (mac, sport, dport, pay) in enumerate(frames):
            udp = struct.pack("!HHHH", sport, dport, 8 + len(pay), 0) + pay
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                             bytes(4), bytes(4)) + udp
            eth = bytes(6) + bytes.fromhex(mac.replace(":", "")) + b"\x08\x00" + ip
            f.write(struct.pack("<IIII", 1000 + n, 0, len(eth), len(eth)) + eth)


def selftest():
    """Two keys with key_id 1 (a renegotiation in between) reuse ids 1..3:
    no repeat; the same ids sent again under one key by a second server: a
    repeat. Exit 0 only when the checker tells them apart."""
    s1, s2 = "02:00:00:00:00:01", "02:00:00:00:00:02"

    def data(mac, kid, pid):
        return (mac, OPENVPN_PORT, 40000, bytes([P_DATA_V2 << 3 | kid, 0, 0, 0]) + struct.pack("!I", pid) + bytes(16))

    def soft(kid):
        return ("02:00:00:00:00:0c", 40000, OPENVPN_PORT, bytes([P_CONTROL_SOFT_RESET_V1 << 3 | kid]) + bytes(8))

    hard = ("02:00:00:00:00:0c", 40000, OPENVPN_PORT, bytes([7 << 3]) + bytes(8))
    good = [hard] + [data(s1, 0, i) for i in (1, 2, 3)] + [soft(1), soft(1)]
    good += [data(s1, 1, i) for i in (1, 2, 3)] + [soft(1)] + [data(s1, 1, i) for i in (1, 2, 3)]
    bad = good + [data(s2, 1, 3)]
    who = {s1: "s1", s2: "s2"}
    with tempfile.TemporaryDirectory() as d:
        write_pcap(os.path.join(d, "good"), good)
        write_pcap(os.path.join(d, "bad"), bad)
        print("selftest, no repeat:", end=" ", flush=True)
        r_good = check_ids(os.path.join(d, "good"), who)
        print("selftest, id 3 again from s2 under the same key:", end=" ", flush=True)
        r_bad = check_ids(os.path.join(d, "bad"), who)
    return 0 if (r_good, r_bad) == (0, 1) else 1


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "selftest":
        return selftest()
    if len(argv) < 3:
        sys.exit(__doc__)
    path = argv[2]
    if cmd == "count":
        print(sum(1 for _ in packets(path)))
    elif cmd == "find":
        needles = [bytes.fromhex(h) for h in argv[3:]]
        return 0 if any(n in p for *_, p in packets(path) for n in needles) else 1
    elif cmd == "senders":
        who, out = names(argv[3:]), {}
        for _, mac, *_ in packets(path):
            out[who.get(mac, mac)] = out.get(who.get(mac, mac), 0) + 1
        for n, c in sorted(out.items()):
            print(n, c)
    elif cmd == "ids":
        return 1 if check_ids(path, names(argv[3:])) else 0
    elif cmd == "inject":
        inject(path, *argv[3:6])
    else:
        sys.exit(__doc__)
    return 0


def inject(path, src, mode, ifaddr):
    """Sends again, with a raw socket on eth1, a captured datagram from src:
    as it was (replay), with its last byte flipped, or cut to 5 bytes."""
    cand = [x for x in packets(path) if socket.inet_ntoa(x[2][12:16]) == src]
    if not cand:
        sys.exit("no datagram from " + src)
    _, _, iph, udph, pay = cand[len(cand) // 2]
    if mode == "flip":
        pay = pay[:-1] + bytes([pay[-1] ^ 0x55])
    elif mode == "truncate":
        pay = pay[:5]
    udph = udph[:4] + struct.pack("!HH", 8 + len(pay), 0)
    iph = bytearray(iph)
    iph[2:4] = struct.pack("!H", len(iph) + 8 + len(pay))
    iph[10:12] = b"\0\0"
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth1")
    s.sendto(bytes(iph) + udph + pay, (socket.inet_ntoa(iph[16:20]), 0))
    print(f"injected {mode}: {len(pay)} bytes from {src} to {socket.inet_ntoa(iph[16:20])}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
