#!/usr/bin/env python3
"""Memory per slow reader, and whether PHP pages still get through meanwhile (issue 16).

    slow_readers.py --port P --pid PID --path /big8m.bin [--count 1000] [--php /hello.php]

Reads VmRSS of PID, opens COUNT connections to 127.0.0.1:P with a 4 KiB receive buffer, each
asking for PATH (a file larger than the front's cache, so it is streamed from disk) and never
reading the answer (after reading it whole twice, so the URL is verified and warm). After 3 s it reads VmRSS again, then asks for the PHP page 20 times on fresh
connections (each must answer 200 within 10 s), closes the slow connections, waits 3 s and reads
VmRSS a last time. Prints one line of JSON; everything is bounded in time.
"""

import argparse
import json
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def php_once(port, path):
    started = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    ok = data.startswith(b"HTTP/1.1 200")
    return ok, (time.monotonic() - started) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--php", default="/hello.php")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, a.count + 200)), hard))
    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % a.path).encode()
    # Read the file whole twice first, as any visitor would: with a backend, khttpd-front serves
    # a URL itself only once Apache's verdict is in (until then the requests go to Apache), and
    # this measures the front's own streaming, not a storm of first requests.
    for _ in range(2):
        php_once(a.port, a.path)
        time.sleep(0.5)
    before = rss_kib(a.pid)
    conns = []
    try:
        for _ in range(a.count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect(("127.0.0.1", a.port))
            s.sendall(request)
            conns.append(s)
        time.sleep(3)
        during = rss_kib(a.pid)
        results = [php_once(a.port, a.php) for _ in range(20)]
    except Exception as e:  # noqa: BLE001 - one line of JSON whatever went wrong
        print(json.dumps({"error": str(e), "opened": len(conns)}))
        sys.exit(1)
    finally:
        for s in conns:
            s.close()
    time.sleep(3)
    after = rss_kib(a.pid)
    print(json.dumps({
        "rss_before_kib": before,
        "rss_during_kib": during,
        "rss_after_kib": after,
        "per_client_bytes": round((during - before) * 1024 / max(1, len(conns))),
        "php_ok": sum(1 for ok, _ in results if ok),
        "php_total": len(results),
        "php_max_ms": round(max(ms for _, ms in results), 1),
    }))


if __name__ == "__main__":
    main()
