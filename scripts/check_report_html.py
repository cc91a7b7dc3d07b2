#!/usr/bin/env python3
"""scripts/check_report_html.py — renders a `moetool verify` report.html (or, with --summary, a
`moetool run` summary.html) in headless Chromium and checks what a reader sees: the verdict badge,
the headline row (report) or the summary table (summary), the plots (rendered, not only present:
each kind of plot is screenshotted alone and must show its coloured marks), the routing section
(--expect-routing), and no console message. Full-page screenshots at 1280 and 390 px are written to
OUT_DIR for people to look at.

Usage: check_report_html.py [--expect-routing] [--summary] HTML OUT_DIR
Exit: 0 all checks passed, 1 a check failed, 77 no Chromium installed (the test suite skips).
Standard library only (PNG decoded with zlib).
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

BROWSERS = ["chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"]
FLAGS = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


def browser():
    for b in BROWSERS:
        p = shutil.which(b)
        if p:
            return p
    return None


def run(b, args, url):
    r = subprocess.run([b] + FLAGS + args + [url], capture_output=True, text=True, timeout=120)
    console = [l for l in r.stderr.splitlines() if ":CONSOLE" in l]
    return r.returncode, r.stdout, console


def png_pixels(path):
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(path + ": not a PNG")
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            if depth != 8 or ctype not in (2, 6):
                raise ValueError("%s: PNG depth %d colour type %d not handled" % (path, depth, ctype))
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, h, bpp, rows


def coloured_pixels(path):
    """Pixels that are clearly coloured (not white, grey or black): the plots' bars, lines, points."""
    w, h, bpp, rows = png_pixels(path)
    n = 0
    for line in rows:
        for x in range(0, w * bpp, bpp):
            r, g, b = line[x], line[x + 1], line[x + 2]
            if max(r, g, b) - min(r, g, b) > 60:
                n += 1
    return n


def main():
    args = sys.argv[1:]
    expect_routing = "--expect-routing" in args
    summary = "--summary" in args
    args = [a for a in args if a not in ("--expect-routing", "--summary")]
    if len(args) != 2:
        print("usage: check_report_html.py [--expect-routing] [--summary] HTML OUT_DIR")
        return 2
    html, out = os.path.abspath(args[0]), args[1]
    b = browser()
    if not b:
        print("check_report_html: no Chromium found (%s): skipped" % ", ".join(BROWSERS))
        return 77
    os.makedirs(out, exist_ok=True)
    problems = []
    url = "file://" + html

    rc, dom, console = run(b, ["--dump-dom"], url)
    if rc != 0:
        problems.append("chromium --dump-dom exited %d" % rc)
    problems += ["console message: " + l for l in console]
    if not re.search(r'<span class="badge (pass|fail|unchecked|error)" id="verdict">(PASS|FAIL|UNCHECKED|ERROR)</span>',
                     dom):
        problems.append("no verdict badge")
    if summary:
        t = re.search(r'<table id="summary">(.*?)</table>', dom, re.S)
        rows = len(re.findall(r"<tr>", t.group(1))) if t else 0
        cells = ["%d table rows" % rows]
        if rows < 2:
            problems.append("summary table has %d rows, expected a header and at least one step" % rows)
    else:
        m = re.search(r'<div class="headline" id="headline">(.*?)</div>\s*</div>', dom, re.S)
        cells = re.findall(r'<span class="k">([^<]*)</span>', m.group(1)) if m else []
        for k in ("Mean KLD", "Top-1 agreement", "PPL ratio"):
            if k not in cells:
                problems.append("headline row lacks %r (cells: %s)" % (k, cells))
    svgs = re.findall(r"<svg.*?</svg>", dom, re.S)
    if len(svgs) < (1 if summary else 2):
        problems.append("%d plots rendered in the DOM, expected at least %d" % (len(svgs), 1 if summary else 2))
    if expect_routing and 'id="routing"' not in dom:
        problems.append("no routing section")

    for width in (1280, 390):
        png = os.path.join(out, "report-%d.png" % width)
        rc, _, console = run(b, ["--screenshot=" + png, "--window-size=%d,3000" % width], url)
        problems += ["console message (%d px): %s" % (width, l) for l in console]
        if rc != 0 or not os.path.exists(png):
            problems.append("no screenshot at %d px" % width)
        else:
            w = struct.unpack(">I", open(png, "rb").read()[16:20])[0]
            if w != width:
                problems.append("screenshot at %d px is %d px wide" % (width, w))

    # One plot of each kind alone, with the report's style: it must draw coloured marks.
    style = re.search(r"<style>.*?</style>", dom, re.S)
    kinds, plots = set(), []
    for svg in svgs:
        t = re.search(r'class="t">([^<]*)<', svg)
        kind = re.sub(r"\d+", "N", t.group(1) if t else "")
        if kind not in kinds:
            kinds.add(kind)
            plots.append(svg)
    with tempfile.TemporaryDirectory() as tmp:
        for i, svg in enumerate(plots):
            page = os.path.join(tmp, "plot%d.html" % i)
            with open(page, "w", encoding="utf-8") as f:
                f.write("<!DOCTYPE html><html><head><meta charset='utf-8'>%s</head><body style='margin:0'>%s"
                        "</body></html>" % (style.group(0) if style else "", svg))
            png = os.path.join(tmp, "plot%d.png" % i)
            run(b, ["--screenshot=" + png, "--window-size=640,360"], "file://" + page)
            title = re.search(r'class="t">([^<]*)<', svg)
            name = title.group(1) if title else "plot %d" % i
            if ("no tokens were scored" in svg or "are identical" in svg or "could be mapped" in svg
                    or "no verified step" in svg):
                continue  # a message panel: nothing to draw
            n = coloured_pixels(png) if os.path.exists(png) else 0
            print("plot %r: %d coloured pixels" % (name, n))
            if n < 100:
                problems.append("plot %r drew %d coloured pixels (expected its marks)" % (name, n))

    for p in problems:
        print("check_report_html: " + p)
    print("check_report_html: %s (%d plots, headline %s; screenshots in %s)"
          % ("FAIL" if problems else "ok", len(svgs), cells, out))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
