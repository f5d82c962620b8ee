#!/usr/bin/env python3
"""Measures what idle keep-alive connections cost a server in resident memory.

    idle_conns.py --port P --pid PID [--count 10000] [--path /small.html] [--timeout 60]

Reads VmRSS of PID, then opens COUNT connections to 127.0.0.1:P in batches (so the listen
backlog never overflows), sends one keep-alive GET on each and reads its whole answer, so
every connection has been through a complete request and sits idle in the server's
keep-alive wait, as a browser's would. Once all are open it waits a second, reads VmRSS
again, counts how many the server still holds open, closes them all and prints one line of
JSON: rss_before_kib, rss_after_kib, open, per_conn_bytes. Everything is bounded by
--timeout; on failure it prints {"error": ...} and exits 1.
"""

import argparse
import json
import resource
import selectors
import socket
import sys
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


class Conn:
    __slots__ = ("sock", "buf", "sent", "done", "need")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.sent = False
        self.done = False
        self.need = None


def response_complete(conn):
    """True once a whole response (head plus Content-Length body) has been read."""
    if conn.need is None:
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = conn.buf[:end].decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip() == "content-length":
                length = int(value.strip())
        conn.need = end + 4 + length
    return len(conn.buf) >= conn.need


def open_batch(port, n, request, sel, deadline):
    """Opens n connections; each sends `request` and reads its answer (or, when `request` is
    empty, only completes its handshake)."""
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        c = Conn(s)
        conns.append(c)
        sel.register(s, selectors.EVENT_WRITE, c)
    pending = len(conns)
    while pending and time.monotonic() < deadline:
        for key, mask in sel.select(timeout=0.5):
            c = key.data
            if not c.sent and mask & selectors.EVENT_WRITE:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise RuntimeError("connect failed: errno %d" % err)
                if not request:
                    c.done = True
                    sel.unregister(c.sock)
                    pending -= 1
                    continue
                c.sock.send(request)
                c.sent = True
                sel.modify(c.sock, selectors.EVENT_READ, c)
            elif c.sent and mask & selectors.EVENT_READ:
                data = c.sock.recv(65536)
                if not data:
                    raise RuntimeError("server closed a connection before answering")
                c.buf += data
                if response_complete(c):
                    c.done = True
                    c.buf = b""
                    sel.unregister(c.sock)
                    pending -= 1
    if pending:
        raise RuntimeError("%d connections did not get an answer in time" % pending)
    return conns


def still_open(conns):
    """Connections the server has not closed (no EOF waiting to be read)."""
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    closed = 0
    for key, _ in sel.select(timeout=0):
        try:
            if not key.data.sock.recv(1, socket.MSG_PEEK):
                closed += 1
        except OSError:
            closed += 1
    sel.close()
    return len(conns) - closed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--path", default="/small.html")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--no-request", action="store_true",
                    help="only connect, send nothing (a diagnostic; bench/run always sends one)")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        if min(want, hard) < want:
            print(json.dumps({"error": "open-files limit %d is below %d" % (hard, want)}))
            return 1

    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-idle\r\n\r\n"
               % args.path).encode()
    if args.no_request:
        request = b""
    deadline = time.monotonic() + args.timeout
    conns = []
    try:
        before = rss_kib(args.pid)
        sel = selectors.DefaultSelector()
        while len(conns) < args.count:
            if time.monotonic() >= deadline:
                raise RuntimeError("timed out after %d connections" % len(conns))
            n = min(args.batch, args.count - len(conns))
            conns += open_batch(args.port, n, request, sel, deadline)
        sel.close()
        time.sleep(1.0)
        after = rss_kib(args.pid)
        held = still_open(conns)
        out = {
            "count": args.count,
            "open": held,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "per_conn_bytes": round((after - before) * 1024 / max(held, 1)),
        }
        print(json.dumps(out))
        return 0
    except Exception as e:  # one clear line for the bash driver
        print(json.dumps({"error": str(e), "opened": len(conns)}))
        return 1
    finally:
        for c in conns:
            c.sock.close()


if __name__ == "__main__":
    sys.exit(main())
