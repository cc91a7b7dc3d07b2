#!/usr/bin/env python3
"""bench/peak_anon.py — runs a command and reports its wall time, peak RSS and peak anonymous memory
(RssAnon: heap and stacks, excluding memory-mapped checkpoint pages, which the kernel can drop).
Usage: bench/peak_anon.py CMD [ARGS...]  (prints one line to stderr; the command's output passes through)"""
import subprocess
import sys
import time


def main() -> int:
    t0 = time.time()
    p = subprocess.Popen(sys.argv[1:])
    peak_anon = peak_rss = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        peak_anon = max(peak_anon, int(line.split()[1]))
                    elif line.startswith("VmRSS:"):
                        peak_rss = max(peak_rss, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    print(f"peak_anon.py: {time.time() - t0:.1f} s, peak RSS {peak_rss / 1024:.0f} MiB, "
          f"peak anonymous {peak_anon / 1024:.0f} MiB, exit {p.returncode}", file=sys.stderr)
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
