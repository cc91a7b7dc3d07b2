#!/usr/bin/env python3
"""bench/paired_bootstrap.py — is candidate A's mean KLD really lower than B's? A paired bootstrap over
evaluation chunks of two `moetool verify --json` reports on the same text and --ctx (same chunks).

verify's "chunks" list holds running values (cumulative mean KLD after each chunk, cumulative token
count); each chunk's own mean KLD is recovered from consecutive entries. The chunks are resampled with
replacement (the same indices for A and B: the comparison is paired, so the text's difficulty cancels),
and the token-weighted mean KLD difference A − B is recomputed each time.

Usage: bench/paired_bootstrap.py A.json B.json [--samples 10000] [--seed 1]
Prints: mean KLD of A and B, the difference, its 95 % percentile interval, and the fraction of resamples
in which A is lower. Treats chunks (ctx tokens of running text) as the independent unit.
"""
import argparse
import json
import random


def chunk_klds(path):
    j = json.load(open(path))
    out, prev_tok, prev_sum = [], 0, 0.0
    for c in j["chunks"]:
        tok = c["tokens"]
        s = c["kld"]["value"] * tok
        out.append((tok - prev_tok, s - prev_sum))
        prev_tok, prev_sum = tok, s
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    a, b = chunk_klds(args.a), chunk_klds(args.b)
    if [t for t, _ in a] != [t for t, _ in b]:
        raise SystemExit("paired_bootstrap: the two reports have different chunks (same text and --ctx needed)")
    n = len(a)
    rng = random.Random(args.seed)

    def diff(idx):
        tok = sum(a[i][0] for i in idx)
        return (sum(a[i][1] for i in idx) - sum(b[i][1] for i in idx)) / tok

    full = list(range(n))
    tok = sum(t for t, _ in a)
    ds = sorted(diff([rng.randrange(n) for _ in range(n)]) for _ in range(args.samples))
    lo, hi = ds[int(0.025 * len(ds))], ds[int(0.975 * len(ds)) - 1]
    print(json.dumps({"chunks": n, "kld_a": sum(s for _, s in a) / tok, "kld_b": sum(s for _, s in b) / tok,
                      "diff": diff(full), "ci95": [lo, hi], "p_a_lower": sum(d < 0 for d in ds) / len(ds)}))


if __name__ == "__main__":
    main()
