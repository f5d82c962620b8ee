#!/usr/bin/env python3
"""Turns the raw measurements of bench/run into the results table (markdown).

    report.py WORKDIR

Reads WORKDIR/scenarios.tsv (name, description, target), WORKDIR/raw.tsv (one wrk run a line:
scenario, round, server, req/s, transfer/s, socket errors, non-2xx/3xx, CPU0 %, CPU1 %),
WORKDIR/meta.tsv (key, value) and WORKDIR/memory-*.json, and prints the report: the main table
(median req/s per server over the rounds, the median of the rounds' ratios, how many rounds the
front won, the target and whether it is met), the
memory figures, then every round's raw numbers with the CPU use of both cores, so a reader can
see whether the server core (CPU 0) was saturated and the load generator (CPU 1) was not.
"""

import json
import os
import statistics
import sys

SERVERS = ("front", "nginx")
OTHER_LIMIT = 15   # % of one CPU used by other processes during a run (bench/run's NOISE_LIMIT)
STEAL_LIMIT = 10   # % stolen by the hypervisor during a run (bench/run's STEAL_LIMIT)


def disturbed(row):
    return len(row) >= 11 and (int(row[9]) > OTHER_LIMIT or int(row[10]) > STEAL_LIMIT)


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def fmt_rps(x):
    return "—" if x is None else "{:,.0f}".format(x)


def fmt_kib(kib):
    return "{:,.1f} MiB".format(kib / 1024)


def main():
    work = sys.argv[1]
    meta = dict((r[0], r[1]) for r in read_tsv(os.path.join(work, "meta.tsv")) if len(r) >= 2)
    scenarios = read_tsv(os.path.join(work, "scenarios.tsv"))
    raw = read_tsv(os.path.join(work, "raw.tsv"))

    runs = {}
    for row in raw:
        scen, rnd, server, rps = row[0], int(row[1]), row[2], float(row[3])
        runs.setdefault((scen, server), []).append((rnd, rps, row))

    out = []
    out.append("khttpd-front vs nginx — %s, commit %s%s" % (
        meta.get("date", "?"), meta.get("commit", "?"), meta.get("dirty", "")))
    out.append("")
    out.append("%s; %s rounds x %s s, wrk -t1 -c%s on CPU 1, each server alone on CPU 0; "
               "medians; nginx gzip_comp_level %s." % (
                   meta.get("machine", "?"), meta.get("rounds", "?"), meta.get("duration", "?"),
                   meta.get("connections", "?"), meta.get("gzip_level", "6")))
    if "busy_before" in meta:
        busy = [int(meta[k]) for k in ("busy_before", "busy_after") if k in meta]
        note = "Machine CPU use with both servers idle: %s%% before the runs%s." % (
            meta["busy_before"],
            ", %s%% after" % meta["busy_after"] if "busy_after" in meta else "")
        if max(busy) > 10:
            note += " **Other processes were using the CPU: these numbers are noisy.**"
        bad = [r for r in raw if disturbed(r)]
        steal = [int(r[10]) for r in raw if len(r) >= 11]
        if "repeats" in meta:
            note += (" Runs repeated because other processes used over 15%% of a CPU or the "
                     "hypervisor stole over 10%% meanwhile: %s" % meta["repeats"])
            note += "; still disturbed: %d of %d." % (len(bad), len(raw))
        if steal:
            note += " Hypervisor steal: up to %d%% (median %d%%)." % (
                max(steal), statistics.median(steal))
        out.append("")
        out.append(note)
    out.append("")
    if scenarios:
        out.append("| scenario | khttpd-front req/s | nginx req/s | ratio | rounds won | target | met? |")
        out.append("|---|---:|---:|---:|---:|---:|:---:|")
    footnote = False
    cpu_rows = []
    for name, desc, target in scenarios:
        # Rounds in which neither server's run was disturbed; the medians come from those, so
        # both servers are compared under the same conditions. None: all rounds, marked.
        by_round = {}
        for server in SERVERS:
            for rnd, rps, row in runs.get((name, server), []):
                by_round.setdefault(rnd, {})[server] = (rps, disturbed(row), row)
        complete = {r: v for r, v in by_round.items() if len(v) == len(SERVERS)}
        clean = [r for r, v in complete.items() if not any(d for _, d, _ in v.values())]
        use = clean or list(by_round)
        mark = ""
        if complete and not clean:
            mark, footnote = " ¹", True
        med = {}
        cpu_us = {}
        for server in SERVERS:
            vals = [by_round[r][server][0] for r in use if server in by_round[r]]
            med[server] = statistics.median(vals) if vals else None
            # CPU 0 time per request: what one answer costs the server side (server, its kernel
            # work, Apache for PHP), telling servers apart even when wrk (CPU 1) is the limit.
            us = [float(by_round[r][server][2][7]) * 1e4 / by_round[r][server][0]
                  for r in use if server in by_round[r] and by_round[r][server][0] > 0]
            cpu_us[server] = statistics.median(us) if us else None
        cpu1 = {}
        for server in SERVERS:
            c = [float(by_round[r][server][2][8]) for r in use if server in by_round[r]]
            cpu1[server] = statistics.median(c) if c else None
        cpu_rows.append((desc, cpu_us, cpu1))
        if med["front"] is None and med["nginx"] is None:
            continue
        # The ratio pairs the two runs of each round, which ran back to back: the machine's speed
        # drifts between rounds on a shared VM, and a quotient of two medians taken from different
        # rounds can then say 0.97 for a row the front won in four rounds of five.
        pairs = [by_round[r]["front"][0] / by_round[r]["nginx"][0]
                 for r in use if r in complete and by_round[r]["nginx"][0] > 0]
        ratio = statistics.median(pairs) if pairs else None
        won = "%d/%d" % (sum(1 for x in pairs if x >= 1.0), len(pairs)) if pairs else "—"
        if target in ("", "-"):
            tgt, met = "—", ""
        else:
            tgt = "≥ %s" % target
            met = "" if ratio is None else ("yes" if ratio >= float(target) else "**no**")
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            desc, fmt_rps(med["front"]), fmt_rps(med["nginx"]),
            "—" if ratio is None else "%.2f%s" % (ratio, mark), won, tgt, met))
    if scenarios:
        out.append("")
        out.append("Each figure is the median over the rounds in which neither server's run was "
                   "disturbed (other processes at most %d%% of a CPU, steal at most %d%%)%s. The "
                   "ratio is the median of each such round's khttpd-front/nginx quotient (the two "
                   "runs of a round ran back to back), so it can differ from the quotient of the "
                   "two medians; rounds won counts the rounds whose quotient is at least 1." % (
                       OTHER_LIMIT, STEAL_LIMIT,
                       "; ¹ no round was undisturbed, so all rounds count" if footnote else ""))
        out.append("")

    if cpu_rows:
        out.append("CPU 0 time per request (server side, µs; lower is better). Where wrk's CPU 1 is "
                   "near 100%, the load generator is the limit and req/s alone understate the "
                   "difference; this does not:")
        out.append("")
        out.append("| scenario | khttpd-front µs/req | nginx µs/req | wrk's CPU 1 with khttpd-front / nginx |")
        out.append("|---|---:|---:|---:|")
        fmt = lambda x: "—" if x is None else ("%.1f" % x if x < 100 else "{:,.0f}".format(x))
        for desc, us, cpu1 in cpu_rows:
            pct = lambda x: "—" if x is None else "%.0f%%" % x
            out.append("| %s | %s | %s | %s / %s |" % (desc, fmt(us["front"]), fmt(us["nginx"]),
                                                      pct(cpu1["front"]), pct(cpu1["nginx"])))
        out.append("")

    mem_lines = []
    for server, label in (("front", "khttpd-front"), ("nginx", "nginx (its one worker)")):
        after_run = meta.get("rss_after_run_%s_kib" % server)
        path = os.path.join(work, "memory-%s.json" % server)
        idle = None
        if os.path.exists(path):
            with open(path) as f:
                idle = json.load(f)
        if after_run is None and idle is None:
            continue
        parts = []
        if idle is not None and "error" not in idle:
            per = idle["per_conn_bytes"] / 1024
            verdict = ""
            if server == "front":
                verdict = " (target ≤ 2 KiB: %s)" % ("met" if per <= 2 else "**not met**")
            parts.append("fresh %s, with %d idle keep-alive connections %s: **%.1f KiB per connection**%s"
                         % (fmt_kib(idle["rss_before_kib"]), idle["open"],
                            fmt_kib(idle["rss_after_kib"]), per, verdict))
        elif idle is not None:
            parts.append("idle-connection test failed: %s" % idle["error"])
        if after_run is not None:
            parts.append("after the benchmark run %s" % fmt_kib(int(after_run)))
        mem_lines.append("- %s RSS: %s." % (label, "; ".join(parts)))
    tls_rows = []
    for kind, desc in (("tls", "idle HTTPS (HTTP/1.1) connection"), ("h2", "idle HTTP/2 connection")):
        got = {}
        for server in SERVERS:
            path = os.path.join(work, "memory-%s-%s.json" % (server, kind))
            if os.path.exists(path):
                with open(path) as f:
                    got[server] = json.load(f)
        if got:
            cell = lambda m: ("failed: %s" % m["error"]) if "error" in m else (
                "%.1f KiB (%d open)" % (m["per_conn_bytes"] / 1024, m["open"]))
            tls_rows.append("- per %s: khttpd-front %s, nginx %s." % (
                desc, cell(got["front"]) if "front" in got else "—",
                cell(got["nginx"]) if "nginx" in got else "—"))
    mem_lines.extend(tls_rows)
    slow = {}
    for server in SERVERS:
        path = os.path.join(work, "slow-%s.json" % server)
        if os.path.exists(path):
            with open(path) as f:
                slow[server] = json.load(f)
    if slow:
        def slow_cell(m):
            if "error" in m:
                return "failed: %s" % m["error"]
            return ("%.1f KiB per client (%s during, %s after they left); PHP meanwhile %d/%d "
                    "answered 200, slowest %.0f ms" % (
                        m["per_client_bytes"] / 1024, fmt_kib(m["rss_during_kib"]),
                        fmt_kib(m["rss_after_kib"]), m["php_ok"], m["php_total"], m["php_max_ms"]))
        front_slow = slow.get("front")
        slow_verdict = ""
        if front_slow is not None and "error" not in front_slow:
            slow_verdict = " (target ≤ 32 KiB per client: %s)" % (
                "met" if front_slow["per_client_bytes"] <= 32 * 1024 else "**not met**")
        mem_lines.append("- 1,000 slow readers of an 8 MiB file%s: khttpd-front %s; nginx %s." % (
            slow_verdict,
            slow_cell(slow["front"]) if "front" in slow else "—",
            slow_cell(slow["nginx"]) if "nginx" in slow else "—"))
    storm_path = os.path.join(work, "storm-front.json")
    if os.path.exists(storm_path):
        with open(storm_path) as f:
            try:
                st = json.load(f)
            except ValueError:
                st = {"error": "no result"}
        if "error" in st:
            mem_lines.append("- compression storm: failed: %s" % st["error"])
        else:
            budget = 16 * 1024 + 32 * 1024
            mem_lines.append(
                "- compression storm (%d first requests for %d text files of 490 KB, br and gzip, 4 "
                "clients, --cache-size 16M; target: RSS ≤ cache + 32 MiB = 48 MiB during and after: "
                "%s): khttpd-front %s before, **%s at the peak, %s after**, %.1f s."
                % (st["requests"], st["files"],
                   "met" if max(st["peak_kib"], st["after_kib"]) <= budget else "**not met**",
                   fmt_kib(st["rss_before_kib"]), fmt_kib(st["peak_kib"]), fmt_kib(st["after_kib"]),
                   st["secs"]))
    if mem_lines:
        out.append("Memory (VmRSS):")
        out.append("")
        out.extend(mem_lines)
        out.append("")

    if not raw:
        print("\n".join(out))
        return
    out.append("<details><summary>every run: req/s, transfer/s, errors; CPU use of CPU 0 (the server) "
               "and CPU 1 (wrk); CPU used meanwhile by other processes (% of one CPU) and stolen by "
               "the hypervisor</summary>")
    out.append("")
    out.append("| scenario | round | server | req/s | transfer/s | socket errors | non-2xx/3xx "
               "| CPU 0 | CPU 1 | other | steal |")
    out.append("|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for name, _, _ in scenarios:
        rows = []
        for server in SERVERS:
            rows += [r for _, _, r in runs.get((name, server), [])]
        rows.sort(key=lambda r: (int(r[1]), r[2]))
        for r in rows:
            extra = r[9:11] if len(r) >= 11 else ["?", "?"]
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s%% | %s%% | %s%% | %s%% |" % (
                r[0], r[1], "khttpd-front" if r[2] == "front" else r[2],
                fmt_rps(float(r[3])), r[4], r[5], r[6], r[7], r[8], extra[0], extra[1]))
    out.append("")
    out.append("</details>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
