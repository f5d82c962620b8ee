#!/usr/bin/env python3
"""Measures what idle TLS connections cost a server in resident memory.

    idle_tls.py --port P --pid PID [--count 2000] [--h2] [--path /small.html] [--timeout 120]

Reads VmRSS of PID, then opens COUNT TLS 1.3 connections to 127.0.0.1:P one after another
(blocking handshakes: the point is the state each leaves behind, not the rate). Over HTTP/1.1
(ALPN http/1.1) each sends one keep-alive GET and reads its whole answer; with --h2 (ALPN h2)
each sends the connection preface and an empty SETTINGS frame and reads the server's SETTINGS, so
the connection is set up and idle. Once all are open it waits a second, reads VmRSS again,
closes them and prints one line of JSON: rss_before_kib, rss_after_kib, open, per_conn_bytes.
Everything is bounded by --timeout; on failure it prints {"error": ...} and exits 1.
"""

import argparse
import json
import resource
import socket
import ssl
import sys
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def read_answer(s):
    """Reads one HTTP/1.1 answer with a Content-Length body."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").lower().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the end of the body")
        body += chunk


def read_settings(s):
    """Reads frames until the server's SETTINGS (type 4) has come."""
    buf = b""
    while True:
        while len(buf) < 9:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("closed before SETTINGS")
            buf += chunk
        length = int.from_bytes(buf[0:3], "big")
        kind = buf[3]
        while len(buf) < 9 + length:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("closed inside a frame")
            buf += chunk
        if kind == 4:
            return
        buf = buf[9 + length:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--h2", action="store_true")
    ap.add_argument("--path", default="/small.html")
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, a.count + 100)), hard))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"] if a.h2 else ["http/1.1"])
    deadline = time.monotonic() + a.timeout
    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % a.path).encode()
    conns = []
    try:
        before = rss_kib(a.pid)
        for _ in range(a.count):
            if time.monotonic() > deadline:
                raise RuntimeError("timed out after %d connections" % len(conns))
            raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            want = "h2" if a.h2 else "http/1.1"
            if s.selected_alpn_protocol() != want:
                raise RuntimeError("ALPN chose %r, not %s" % (s.selected_alpn_protocol(), want))
            if a.h2:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                read_settings(s)
            else:
                s.sendall(request)
                read_answer(s)
            conns.append(s)
        time.sleep(1)
        after = rss_kib(a.pid)
        still_open = 0
        for s in conns:
            try:
                s.setblocking(False)
                if s.recv(1) == b"":
                    continue
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
            except OSError:
                continue
            still_open += 1
        print(json.dumps({
            "rss_before_kib": before,
            "rss_after_kib": after,
            "open": still_open,
            "per_conn_bytes": round((after - before) * 1024 / max(1, len(conns))),
        }))
    except Exception as e:  # noqa: BLE001 - one line of JSON whatever went wrong
        print(json.dumps({"error": str(e), "opened": len(conns)}))
        sys.exit(1)
    finally:
        for s in conns:
            try:
                s.close()
            except OSError:
                pass


if __name__ == "__main__":
    main()
