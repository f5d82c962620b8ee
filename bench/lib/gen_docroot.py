#!/usr/bin/env python3
"""Writes the benchmark's document root, byte for byte the same on every run.

    gen_docroot.py DIR

Everything comes from a fixed-seed splitmix64 generator (not Python's `random`, whose
algorithms may change between versions), every mtime is 2024-01-01 00:00:00 UTC (so
Last-Modified, and the If-Modified-Since the 304 scenario sends, are known in advance),
files are 0644 and directories 0755 (world-readable, no execute bit: khttpd-front serves
them itself, and Apache's www-data workers can read them). Prints one line per file and a
sha256 over the whole tree, so two machines can check they measured the same bytes.

The CSS and JavaScript are generated text built from a vocabulary, so they compress about
as well as real minified-but-not-mangled assets (gzip -6 takes them to roughly a fifth to a
quarter of their size), rather than either random bytes (incompressible) or one repeated
line (unrealistically compressible).
"""

import hashlib
import os
import sys

MTIME = 1704067200  # 2024-01-01T00:00:00Z; Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT
MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def bytes(self, n):
        out = bytearray()
        while len(out) < n:
            out += self.next().to_bytes(8, "little")
        return bytes(out[:n])


WORDS = (
    "header nav menu item link button primary secondary card title body footer grid row col "
    "container wrapper modal dialog overlay tooltip badge alert form input label select option "
    "table cell list media image icon avatar banner hero section article aside sidebar panel "
    "tab active disabled hidden visible small large dark light muted accent brand logo search "
    "toggle dropdown carousel slide progress spinner loader chart legend axis tick value"
).split()

CSS_PROPS = (
    ("color", ("#{hex}", "inherit", "currentColor", "rgba({n},{n},{n},0.{d})")),
    ("background-color", ("#{hex}", "transparent", "rgba({n},{n},{n},0.{d})")),
    ("margin", ("{n}px", "0 auto", "{n}px {n}px", "0")),
    ("padding", ("{n}px", "{n}px {n}px", "0 {n}px")),
    ("font-size", ("{n}px", "1.{d}rem", "0.{d}em")),
    ("font-weight", ("400", "500", "600", "700", "bold", "normal")),
    ("line-height", ("1.{d}", "{n}px", "normal")),
    ("display", ("block", "flex", "grid", "inline-block", "none", "inline-flex")),
    ("border", ("1px solid #{hex}", "0", "none", "{d}px dashed #{hex}")),
    ("border-radius", ("{n}px", "50%", "{d}px {d}px 0 0")),
    ("width", ("100%", "{n}px", "auto", "calc(100% - {n}px)")),
    ("height", ("{n}px", "auto", "100%")),
    ("position", ("relative", "absolute", "fixed", "sticky")),
    ("transition", ("all 0.{d}s ease", "opacity 0.{d}s linear", "transform 0.{d}s ease-in-out")),
    ("box-shadow", ("0 {d}px {n}px rgba(0,0,0,0.{d})", "none")),
    ("justify-content", ("center", "space-between", "flex-start", "flex-end")),
    ("align-items", ("center", "stretch", "baseline")),
    ("z-index", ("{n}", "10", "100", "1000")),
)

JS_IDENTS = (
    "state props options config element node event handler callback result value index count "
    "items list map cache queue buffer request response data payload error message target source "
    "width height offset delta timer frame context store action reducer selector listener"
).split()


def fill(rng, template):
    out = []
    i = 0
    while i < len(template):
        if template.startswith("{hex}", i):
            out.append("%06x" % (rng.next() & 0xFFFFFF))
            i += 5
        elif template.startswith("{n}", i):
            out.append(str(rng.below(64)))
            i += 3
        elif template.startswith("{d}", i):
            out.append(str(rng.below(10)))
            i += 3
        else:
            out.append(template[i])
            i += 1
    return "".join(out)


def css(size, seed):
    rng = SplitMix64(seed)
    parts = ["/* bench stylesheet: generated, deterministic */\n"]
    length = len(parts[0])
    while length < size:
        sel = ".%s-%s" % (rng.pick(WORDS), rng.pick(WORDS))
        if rng.below(3) == 0:
            sel += " .%s" % rng.pick(WORDS)
        if rng.below(4) == 0:
            sel += ":hover"
        decls = []
        for _ in range(2 + rng.below(6)):
            prop, values = rng.pick(CSS_PROPS)
            decls.append("  %s: %s;\n" % (prop, fill(rng, rng.pick(values))))
        rule = "%s {\n%s}\n" % (sel, "".join(decls))
        parts.append(rule)
        length += len(rule)
    return pad("".join(parts), size)


def js(size, seed):
    rng = SplitMix64(seed)
    parts = ['"use strict";\n/* bench script: generated, deterministic */\n']
    length = len(parts[0])
    n = 0
    while length < size:
        n += 1
        name = "%s%s%d" % (rng.pick(JS_IDENTS), rng.pick(JS_IDENTS).capitalize(), n)
        a, b, c = rng.pick(JS_IDENTS), rng.pick(JS_IDENTS), rng.pick(JS_IDENTS)
        body = []
        for _ in range(2 + rng.below(5)):
            kind = rng.below(5)
            if kind == 0:
                body.append("  const %s = %s.%s(%d);\n" % (c, a, b, rng.below(1000)))
            elif kind == 1:
                body.append("  if (%s && %s.length > %d) { return %s[%d]; }\n"
                            % (a, a, rng.below(100), a, rng.below(10)))
            elif kind == 2:
                body.append("  for (let i = 0; i < %s.length; i++) { %s += %s[i] * %d; }\n"
                            % (b, c, b, rng.below(97)))
            elif kind == 3:
                body.append('  %s.%s = "%s-%s";\n' % (a, b, rng.pick(WORDS), rng.pick(WORDS)))
            else:
                body.append("  %s.addEventListener(\"%s\", (e) => %s(e, %s));\n"
                            % (a, rng.pick(("click", "input", "load", "resize")), name, b))
        fn = "function %s(%s, %s) {\n  let %s = 0;\n%s  return %s;\n}\n" % (
            name, a, b, c, "".join(body), c)
        parts.append(fn)
        length += len(fn)
    return pad("".join(parts), size)


def pad(text, size):
    """Cuts or pads (with a comment) to exactly `size` bytes, ending with a newline."""
    data = text.encode()
    if len(data) >= size:
        data = data[: size - 1] + b"\n"
    else:
        data += b"/*" + b" " * (size - len(data) - 5) + b"*/\n"
    assert len(data) == size
    return data


def html(size, title, seed):
    head = "<!doctype html><title>%s</title><p>" % title
    tail = "</p>\n"
    rng = SplitMix64(seed)
    words = []
    length = len(head) + len(tail)
    while True:
        w = rng.pick(WORDS)
        if length + len(w) + 1 > size:
            break
        words.append(w)
        length += len(w) + 1
    body = " ".join(words)
    data = (head + body + tail).encode()
    data = data[:-len(tail)] + b" " * (size - len(data)) + tail.encode()
    assert len(data) == size, (len(data), size)
    return data


SMALL = b"<!doctype html><title>khttpd bench</title><p>Hello from kHTTPd.</p>\n"

PHP = b"""<?php
// bench page: a small dynamic page, answered by Apache + mod_php.
header('Content-Type: text/html; charset=utf-8');
$sum = 0;
for ($i = 1; $i <= 100; $i++) { $sum += $i; }
echo "<!doctype html><title>php bench</title><p>Hello from PHP ", PHP_MAJOR_VERSION, " sum=", $sum, "</p>\\n";
"""

# A 50 KB page as a PHP application makes one (a loop over rows), uncompressed by Apache: what
# `php-gzip` asks for with Accept-Encoding: gzip (issue 16, against nginx's gzip_proxied any).
PHP_50K = b"""<?php
// bench page: about 50 KB of HTML generated by PHP, sent uncompressed by Apache.
header('Content-Type: text/html; charset=utf-8');
echo "<!doctype html><title>php 50k</title><table>\\n";
for ($i = 0; $i < 640; $i++) {
    echo "<tr><td>row ", $i, "</td><td>item-", $i * 7 % 1000, "</td><td>", md5((string)$i), "</td></tr>\\n";
}
echo "</table><p>Hello from PHP ", PHP_MAJOR_VERSION, " rows=640</p>\\n";
"""


def files():
    assert len(SMALL) == 68, len(SMALL)
    yield "index.html", SMALL
    yield "small.html", SMALL
    yield "page1k.html", html(1024, "one kilobyte", 1)
    yield "style.css", css(23 * 1024, 2)
    yield "app.js", js(170 * 1024, 3)
    yield "blob.bin", SplitMix64(4).bytes(1024 * 1024)
    # Larger than the front's largest cached file (2 MiB): streamed from disk to slow readers.
    yield "big8m.bin", SplitMix64(5).bytes(8 * 1024 * 1024)
    yield "hello.php", PHP
    yield "page50k.php", PHP_50K
    for i in range(200):
        yield "list/file-%03d.txt" % i, ("file %03d of the listing\n" % i).encode() * (1 + i % 7)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_docroot.py DIR")
    root = sys.argv[1]
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    total = hashlib.sha256()
    for name, data in files():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.utime(tmp, (MTIME, MTIME))
        os.replace(tmp, path)
        total.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
            os.utime(os.path.join(dirpath, d), (MTIME, MTIME))
    os.utime(root, (MTIME, MTIME))
    print("docroot %s sha256 %s" % (root, total.hexdigest()[:16]))


if __name__ == "__main__":
    main()
