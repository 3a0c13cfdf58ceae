#!/usr/bin/env python3
"""Attack traffic of regress/attacks.sh, each bounded in count and time.

  flood.py reset FILE                 the first HARD_RESET_CLIENT_V2 of a capture:
                                      "HEX SRC-IP SRC-PORT"
  flood.py replay HEX DST PORTS SECS  HEX from PORTS distinct source ports, again
                                      and again for SECS seconds
  flood.py forge HEX SRC SPORT DST SECS
                                      HEX with the forged source SRC:SPORT (a raw
                                      socket), ten times a second for SECS seconds
  flood.py resets DST N PORTS SECS    N forged plain resets (fresh session ids) from
                                      PORTS source ports, within SECS seconds
  flood.py random DST SECS RATE       random datagrams (1-200 bytes) at RATE a second
  flood.py ctl SOCK N CONNS HOLD      N show-summary requests over CONNS control
                                      connections, none of the answers read, held
                                      open HOLD seconds

Each prints what it sent on one line ("sent N ..."). DST is ADDR:PORT.
"""
import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pcap  # noqa: E402

HARD_RESET_CLIENT_V2 = 7
CTL_SHOW_SUMMARY = 22  # common/src/msg.rs ImsgType::CtlShowSummary
IMSG_HEADER = 16  # common/src/imsg.rs: u32 type, len, peerid, pid


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def reset(path):
    for _, _, iph, udph, pay in pcap.packets(path):
        sport, dport = struct.unpack("!HH", udph[:4])
        if dport == pcap.OPENVPN_PORT and pay and pay[0] >> 3 == HARD_RESET_CLIENT_V2:
            print(pay.hex(), socket.inet_ntoa(iph[12:16]), sport)
            return 0
    sys.exit("no HARD_RESET_CLIENT_V2 in " + path)


def sockets(n):
    """n UDP sockets, each on its own ephemeral source port."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("0.0.0.0", 0))
        out.append(s)
    return out


def send(s, data, dst):
    try:
        s.sendto(data, dst)
        return 1
    except (BlockingIOError, ConnectionRefusedError):
        return 0


def replay(hexdata, dst, ports, secs):
    data, dst = bytes.fromhex(hexdata), addr(dst)
    socks = sockets(int(ports))
    end, n, rounds = time.monotonic() + float(secs), 0, 0
    while time.monotonic() < end:
        n += sum(send(s, data, dst) for s in socks)
        rounds += 1
        time.sleep(0.2)
    print(f"sent {n} replays from {len(socks)} ports in {rounds} rounds")


def forge(hexdata, src, sport, dst, secs):
    pay, (dhost, dport) = bytes.fromhex(hexdata), addr(dst)
    udp = struct.pack("!HHHH", int(sport), dport, 8 + len(pay), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(pay), 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dhost))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    end, n = time.monotonic() + float(secs), 0
    while time.monotonic() < end:
        s.sendto(ip + udp + pay, (dhost, 0))
        n += 1
        time.sleep(0.1)
    print(f"sent {n} replays forged from {src}:{sport}")


def resets(dst, count, ports, secs):
    dst, count = addr(dst), int(count)
    socks = sockets(int(ports))
    end, n, i = time.monotonic() + float(secs), 0, 0
    while i < count and time.monotonic() < end:
        # P_CONTROL_HARD_RESET_CLIENT_V2, key_id 0; session id; no acks;
        # message packet id 0: the plain reset of a client without tls-auth.
        pkt = bytes([HARD_RESET_CLIENT_V2 << 3]) + os.urandom(8) + b"\0" + b"\0\0\0\0"
        if not send(socks[i % len(socks)], pkt, dst):
            time.sleep(0.001)
        else:
            n += 1
        i += 1
    print(f"sent {n} forged resets from {len(socks)} ports")


def random_flood(dst, secs, rate):
    dst, rate = addr(dst), int(rate)
    socks = sockets(64)
    end, n = time.monotonic() + float(secs), 0
    while time.monotonic() < end:
        t = time.monotonic()
        for i in range(rate // 10):
            n += send(socks[i % len(socks)], os.urandom(1 + os.urandom(1)[0] % 200), dst)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
    print(f"sent {n} random datagrams")


def ctl(path, count, conns, hold):
    req = struct.pack("=IIII", CTL_SHOW_SUMMARY, IMSG_HEADER, 0, 0)
    count, conns = int(count), int(conns)
    socks = []
    for _ in range(conns):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            break
        s.setblocking(False)
        socks.append(s)
    # Round robin until every request is written or 5 s passed: a
    # connection the engine stopped reading stays blocked, and gets no more.
    share = count // max(1, len(socks))
    left = {s: share * IMSG_HEADER for s in socks}
    chunk = req * 1024
    end = time.monotonic() + 5.0
    while any(left.values()) and time.monotonic() < end:
        moved = 0
        for s in socks:
            if not left[s]:
                continue
            try:
                k = s.send(chunk[:left[s]])
                left[s] -= k
                moved += k
            except BlockingIOError:
                pass
            except OSError:
                left[s] = 0
        if not moved:
            time.sleep(0.05)
    sent = sum(share * IMSG_HEADER - v for v in left.values()) // IMSG_HEADER
    print(f"sent {sent} of {count} requests over {len(socks)} connections, none read", flush=True)
    time.sleep(float(hold))


def main(argv):
    cmds = {"reset": reset, "replay": replay, "forge": forge, "resets": resets,
            "random": random_flood, "ctl": ctl}
    if len(argv) < 2 or argv[1] not in cmds:
        sys.exit(__doc__)
    return cmds[argv[1]](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
