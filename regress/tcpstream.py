#!/usr/bin/env python3
"""One long TCP connection for regress/fullnat.sh, whose every byte is checked.

  tcpstream.py serve ADDR PORT LOG [RATE]   accept ONE connection, log its
                                            peer, stream RATE bytes/s to it
  tcpstream.py recv ADDR PORT LOG           connect once, check every byte,
                                            log the running total

Byte n of the stream is n % 251 (a prime, so that a lost, repeated or
reordered segment shows at once). Neither side ever reconnects: one socket
from start to end, so "the same connection went on" is what the log says.
Every line of LOG is flushed when written:

  peer IP PORT / local IP PORT          the connection is open
  progress UNIXTIME TOTAL               (recv) at most every 0.1 s
  error NAME: TEXT                      the connection failed (e.g. a RST:
                                        ConnectionResetError); exit 1
  corrupt at OFFSET                     (recv) a byte out of order; exit 1
  eof                                   (recv) the server closed; exit 1
"""
import socket
import sys
import time

PERIOD = 251
CHUNK = 16384  # what the server sends at once
RECV_MAX = 65536  # what the client reads at once
# Long enough for any read starting anywhere in the period.
BASE = bytes(range(PERIOD)) * (RECV_MAX // PERIOD + 2)


def expected(offset, length):
    start = offset % PERIOD
    return BASE[start:start + length]


def log_line(log, text):
    log.write(text + "\n")
    log.flush()


def serve(addr, port, log, rate):
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((addr, port))
    lst.listen(1)
    conn, peer = lst.accept()
    lst.close()
    log_line(log, "peer %s %d" % peer)
    interval = CHUNK / rate
    offset = 0
    next_at = time.monotonic()
    while True:
        conn.sendall(expected(offset, CHUNK))
        offset += CHUNK
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            # Behind after a stall: catch up slowly, not in one burst.
            next_at = time.monotonic()


def recv(addr, port, log):
    conn = socket.create_connection((addr, port), timeout=10)
    log_line(log, "local %s %d" % conn.getsockname())
    conn.settimeout(None)
    total = 0
    logged_at = 0.0
    while True:
        data = conn.recv(RECV_MAX)
        if not data:
            log_line(log, "eof")
            return 1
        if data != expected(total, len(data)):
            bad = next(i for i, b in enumerate(data) if b != (total + i) % PERIOD)
            log_line(log, "corrupt at %d" % (total + bad))
            return 1
        total += len(data)
        now = time.time()
        if now - logged_at >= 0.1:
            log_line(log, "progress %.3f %d" % (now, total))
            logged_at = now


def main(argv):
    if len(argv) < 5 or argv[1] not in ("serve", "recv"):
        sys.stderr.write(__doc__)
        return 2
    addr, port = argv[2], int(argv[3])
    with open(argv[4], "a", encoding="ascii") as log:
        try:
            if argv[1] == "serve":
                rate = int(argv[5]) if len(argv) > 5 else 524288
                return serve(addr, port, log, rate)
            return recv(addr, port, log)
        except OSError as e:
            log_line(log, "error %s: %s" % (type(e).__name__, e))
            return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
