#!/usr/bin/env python3
"""A compression storm: what first requests for many large text files cost in memory (issue 16).

    compress_storm.py --port P --pid PID --root DIR [--files 100] [--size 490000] [--clients 4]
                      [--encodings br,gzip] [--timeout 240]

Makes FILES text files of SIZE bytes in DIR (words, so they compress as prose does; kept between
runs), then CLIENTS threads ask each file once per encoding with that Accept-Encoding, all on
fresh connections, while VmRSS of PID is sampled every 50 ms. Three seconds after the last answer
it reads VmRSS once more. The server is meant to run with a small --cache-size (16M in bench/run),
so the storm is far larger than the cache. Prints one line of JSON: files, requests, secs,
rss_before_kib, peak_kib, after_kib. Everything is bounded by --timeout.
"""

import argparse
import json
import os
import random
import socket
import sys
import threading
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def make_files(root, n, size):
    os.makedirs(root, exist_ok=True)
    rng = random.Random(16)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(5000)]
    for i in range(n):
        path = os.path.join(root, "s%d.txt" % i)
        if os.path.exists(path) and os.path.getsize(path) == size:
            continue
        r = random.Random(i)
        parts, total = [], 0
        while total < size:
            w = r.choice(words)
            parts.append(w)
            total += len(w) + 1
        with open(path, "w") as f:
            f.write(" ".join(parts)[:size])


def fetch(port, path, encoding, deadline):
    s = socket.create_connection(("127.0.0.1", port), timeout=max(1, deadline - time.monotonic()))
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: %s\r\nConnection: close\r\n\r\n"
               % (path, encoding)).encode())
    ok = False
    first = True
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        if first:
            ok = chunk.startswith(b"HTTP/1.1 200")
            first = False
    s.close()
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--size", type=int, default=490000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--encodings", default="br,gzip")
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args()
    deadline = time.monotonic() + a.timeout
    make_files(a.root, a.files, a.size)
    before = rss_kib(a.pid)
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(a.pid))
            time.sleep(0.05)

    jobs = [("/s%d.txt" % i, e) for i in range(a.files) for e in a.encodings.split(",")]
    lock = threading.Lock()
    failed = []

    def worker():
        while time.monotonic() < deadline:
            with lock:
                if not jobs:
                    return
                path, enc = jobs.pop(0)
            try:
                if not fetch(a.port, path, enc, deadline):
                    failed.append(path)
            except OSError as e:
                failed.append("%s: %s" % (path, e))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(a.clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    secs = time.monotonic() - started
    time.sleep(3)
    done.set()
    watcher.join()
    out = {"files": a.files, "requests": a.files * len(a.encodings.split(",")),
           "secs": round(secs, 1), "rss_before_kib": before, "peak_kib": peak[0],
           "after_kib": rss_kib(a.pid)}
    if jobs or failed:
        out["error"] = "%d requests not made, %d failed (%s)" % (len(jobs), len(failed), failed[:3])
        print(json.dumps(out))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
