#!/usr/bin/env python3
# tests/golden/interop.py — does Hugging Face transformers load what moetool writes? (issue 7, "Interop")
#
# Produces every kind of checkpoint moetool writes today (synth of each family, a sharded synth,
# convert upcycle to each target family, convert factorize to each target family) in a temporary
# directory, loads each with AutoModelForCausalLM.from_pretrained(dir, torch_dtype=float32,
# attn_implementation="eager"), runs the same token ids through transformers and through
# `moetool logits DIR --tokens ... -o X.npy`, and prints a table (Markdown): output kind, loads?,
# max |Δlogit|, top-1 agreement. Nothing is written into the repository.
#
#   /tmp/golden-venv/bin/python tests/golden/interop.py --moetool build-convert/moetool \
#       [--shared /work/shared] [--keep DIR] [--json results.json]
#
# Same pinned versions as make_golden.py (the assertions below refuse others):
#   req: torch==2.15.0
#   req: transformers==5.23.0
#   req: safetensors==0.8.0
#   req: tokenizers==0.23.3
#   req: numpy==2.4.6
#   req: accelerate==1.16.0       (FP8 checkpoints)
#   req: compressed-tensors==0.20.1  (compressed-tensors checkpoints)
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM

PINNED = {
    "torch": "2.15.0",
    "transformers": "5.23.0",
    "safetensors": "0.8.0",
    "tokenizers": "0.23.3",
    "numpy": "2.4.6",
}


def check_versions():
    got = {
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }
    assert transformers.__version__ == PINNED["transformers"], (
        f"transformers {transformers.__version__} != pinned {PINNED['transformers']}")
    bad = {k: v for k, v in got.items() if v != PINNED[k]}
    assert not bad, f"versions differ from the pinned ones {PINNED}: {bad}"
    return {**got, "torch_full": torch.__version__, "python": sys.version.split()[0]}


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"]
MOE_TARGETS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"]
TOL = 1e-4  # same tolerance as tests/golden_test.cc
SEQ_LEN = 24


def run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(map(str, cmd))}` exited {p.returncode}: "
                           f"{(p.stderr or p.stdout).strip()[-2000:]}")
    return p.stdout


def has_convert(moetool):
    p = subprocess.run([moetool, "convert", "--help"], capture_output=True, text=True)
    return p.returncode == 0 and "upcycle" in p.stdout


def has_command(moetool, name):
    return subprocess.run([moetool, name, "--help"], capture_output=True, text=True).returncode == 0


def compress_jobs(moetool, shared, work, out):
    """The compress passes' outputs (prune, merge, svd --materialize): tinymoe-3domain and synthetic MoEs of every family."""
    moe3 = os.path.join(shared, "models", "tinymoe-3domain")
    code = os.path.join(shared, "data", "moe3-calib-code.txt")
    jobs = []
    if has_command(moetool, "prune"):
        cases = [("prune tinymoe-3domain --keep 4 --method reap (code)", moe3,
                  ["--keep", "4", "--method", "reap", "--calib-text", code, "--ctx", "256"], "moe3-reap4"),
                 ("prune tinymoe-3domain --keep 6 --method easy-ep --slim 0.25 (code)", moe3,
                  ["--keep", "6", "--method", "easy-ep", "--slim", "0.25", "--calib-text", code, "--ctx", "256"],
                  "moe3-easy6-slim")]
        for fam in MOE_TARGETS:
            src = out(f"synth-small-{fam}")
            jobs.append((f"synth --family {fam} --preset small",
                         [moetool, "synth", "--family", fam, "--preset", "small", "-o", src, "-q"], src))
            cases.append((f"prune synth {fam} (small, 8 experts) --keep 4 --method random", src,
                          ["--keep", "4", "--method", "random", "--seed", "3", "--protect-super-experts", "off"],
                          f"{fam}-rand4"))
        for kind, src, a, tag in cases:
            d = out(f"prune-{tag}")
            jobs.append((kind, [moetool, "prune", src, *a, "-o", d, "-q"], d))
    if has_command(moetool, "merge"):
        story = os.path.join(shared, "data", "tinystories-calib.txt")
        cases = [("merge tinymoe-3domain --experts 4 --method msmoe (code)", moe3,
                  ["--experts", "4", "--method", "msmoe", "--calib-text", code], "moe3-msmoe4"),
                 ("merge tinymoe-3domain --experts 6 --method hc --group-by outputs (code)", moe3,
                  ["--experts", "6", "--method", "hc", "--calib-text", code], "moe3-hc6"),
                 ("merge tinymoe-3domain --experts 4 --method sub-moe --router fit (code)", moe3,
                  ["--experts", "4", "--method", "sub-moe", "--router", "fit", "--calib-text", code], "moe3-sub4")]
        for fam in MOE_TARGETS:
            src = out(f"synth-small-{fam}")
            if not any(j[2] == src for j in jobs):
                jobs.append((f"synth --family {fam} --preset small",
                             [moetool, "synth", "--family", fam, "--preset", "small", "-o", src, "-q"], src))
            cases.append((f"merge synth {fam} (small, 8 experts) --experts 4 --method msmoe", src,
                          ["--experts", "4", "--method", "msmoe", "--calib-text", story, "--ctx", "128"],
                          f"{fam}-msmoe4"))
        for kind, src, a, tag in cases:
            d = out(f"merge-{tag}")
            jobs.append((kind, [moetool, "merge", src, *a, "-o", d, "-q"], d))
    if has_command(moetool, "svd"):
        # --materialize: the low-rank approximation written as standard dense experts.
        cases = [(f"svd tinymoe-3domain --ratio 0.5 --method {m} --materialize (code)", moe3,
                  ["--ratio", "0.5", "--method", m, "--calib-text", code, "--ctx", "256"], f"moe3-{m}")
                 for m in ("whitened", "shared-basis", "delta")]
        for fam in MOE_TARGETS:
            src = out(f"synth-small-{fam}")
            if not any(j[2] == src for j in jobs):
                jobs.append((f"synth --family {fam} --preset small",
                             [moetool, "synth", "--family", fam, "--preset", "small", "-o", src, "-q"], src))
            cases.append((f"svd synth {fam} (small) --rank 8 --method plain --materialize", src,
                          ["--rank", "8", "--method", "plain"], f"{fam}-plain8"))
        for kind, src, a, tag in cases:
            d = out(f"svd-{tag}")
            jobs.append((kind, [moetool, "svd", src, *a, "--materialize", "-o", d, "-q"], d))
    if has_command(moetool, "quantize"):
        # Block FP8 (transformers loads it on the CPU by dequantizing; the k/v projections [64, 128] of
        # tinymoe-3domain stay float at 128x128 blocks and are listed in modules_to_not_convert).
        cases = [(f"quantize tinymoe-3domain --format fp8 --fp8-block {b}", moe3, ["--fp8-block", b], f"moe3-{b}")
                 for b in ("128x128", "64x64")]
        for fam in ("qwen3_moe", "deepseek_v3", "mixtral"):
            src = out(f"synth-small-{fam}")
            if not any(j[2] == src for j in jobs):
                jobs.append((f"synth --family {fam} --preset small",
                             [moetool, "synth", "--family", fam, "--preset", "small", "-o", src, "-q"], src))
            cases.append((f"quantize synth {fam} (small) --format fp8 --fp8-block 32x32", src,
                          ["--fp8-block", "32x32"], f"{fam}-32"))
        tiny = os.path.join(shared, "models", "tinystories-656k")
        cases.append(("quantize tinystories (tied) --format fp8 --fp8-block 64x64", tiny, ["--fp8-block", "64x64"],
                      "ts-64"))
        for kind, src, a, tag in cases:
            d = out(f"fp8-{tag}")
            jobs.append((kind, [moetool, "quantize", src, "--format", "fp8", *a, "-o", d, "-q"], d))
        # compressed-tensors pack-quantized (transformers decompresses it with the compressed-tensors package;
        # tests/tools/ct_check.py also runs the package's own decompressor on every linear).
        cases = [("quantize tinystories (tied) --format compressed-tensors int4 g32 rtn", tiny, "ts"),
                 ("quantize tinymoe-3domain --format compressed-tensors int4 g32 rtn", moe3, "moe3")]
        for fam in ("qwen3_moe", "deepseek_v3", "olmoe", "qwen2_moe"):
            src = out(f"synth-small-{fam}")
            if not any(j[2] == src for j in jobs):
                jobs.append((f"synth --family {fam} --preset small",
                             [moetool, "synth", "--family", fam, "--preset", "small", "-o", src, "-q"], src))
            cases.append((f"quantize synth {fam} (small) --format compressed-tensors int4 g32 rtn", src, fam))
        for kind, src, tag in cases:
            d = out(f"ct-{tag}")
            jobs.append((kind, [moetool, "quantize", src, "--format", "compressed-tensors", "--method", "rtn",
                                "--bits", "4", "--group-size", "32", "-o", d, "-q"], d))
    return jobs


def vocab_size(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    if "vocab_size" in cfg:
        return int(cfg["vocab_size"])
    return int(cfg["text_config"]["vocab_size"])


def token_ids(vocab, seed=7):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=SEQ_LEN).tolist()
    ids[0] = min(1, vocab - 1)  # BOS-like start
    return ids


def compare(moetool, d, work):
    """Return dict: loads, error, max_abs, top1 (agreeing/total)."""
    r = {"loads": False, "error": "", "max_abs": None, "top1": None}
    ids = token_ids(vocab_size(d))
    npy = os.path.join(work, os.path.basename(d) + ".logits.npy")
    try:
        with torch.no_grad():
            model, info = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32,
                                                               attn_implementation="eager",
                                                               output_loading_info=True)
            model.eval()
            hf = model(torch.tensor([ids])).logits[0].float().numpy()
        r["loads"] = True
        r["hf_class"] = type(model).__name__
        # A checkpoint "loads" only if every weight is read and none is left over: transformers would
        # otherwise initialise the missing ones randomly (or drop the extra ones) with just a warning.
        keys = {k: sorted(map(str, v)) for k, v in info.items() if v}
        if keys:
            r["error"] = f"loading info: {keys}"
    except Exception as e:  # record the error exactly
        r["error"] = f"{type(e).__name__}: {e}".strip()
        r["traceback"] = traceback.format_exc()
        return r
    try:
        run([moetool, "logits", d, "--tokens", ",".join(map(str, ids)), "-o", npy])
        mt = np.load(npy).astype(np.float32)
    except Exception as e:
        r["error"] = f"moetool logits failed: {e}"
        return r
    if mt.shape != hf.shape:
        r["error"] = f"shape mismatch: moetool {mt.shape} vs transformers {hf.shape}"
        return r
    r["max_abs"] = float(np.max(np.abs(mt - hf)))
    agree = int(np.sum(mt.argmax(-1) == hf.argmax(-1)))
    r["top1"] = f"{agree}/{len(ids)}"
    r["top1_ok"] = agree == len(ids)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moetool", required=True, help="path of the moetool binary")
    ap.add_argument("--shared", default="/work/shared", help="shared directory (models/, data/)")
    ap.add_argument("--keep", help="work in this directory and keep it (default: a temporary one, removed)")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--only", help="run only the output kinds whose description contains this text")
    args = ap.parse_args()
    versions = check_versions()
    torch.manual_seed(0)
    moetool = os.path.abspath(args.moetool)
    tiny = os.path.join(args.shared, "models", "tinystories-656k")
    calib = os.path.join(args.shared, "data", "tinystories-calib.txt")

    work = args.keep or tempfile.mkdtemp(prefix="moetool-interop-")
    os.makedirs(work, exist_ok=True)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert not os.path.abspath(work).startswith(repo + os.sep), "never write model files into the repository"

    jobs = []  # (kind, command producing dir, dir)

    def out(name):
        d = os.path.join(work, name)
        shutil.rmtree(d, ignore_errors=True)
        return d

    for fam in FAMILIES:
        d = out(f"synth-{fam}")
        jobs.append((f"synth --family {fam}", [moetool, "synth", "--family", fam, "-o", d, "-q"], d))
    for fam in ["llama", "qwen3_moe"]:
        d = out(f"synth-{fam}-sharded")
        jobs.append((f"synth --family {fam} --max-shard-size 20KB",
                     [moetool, "synth", "--family", fam, "--max-shard-size", "20KB", "-o", d, "-q"], d))
    for dt in ["bf16", "f16"]:
        d = out(f"synth-llama-{dt}")
        jobs.append((f"synth --family llama --dtype {dt}",
                     [moetool, "synth", "--family", "llama", "--dtype", dt, "-o", d, "-q"], d))

    conv = has_convert(moetool)
    src_of = {"llama": tiny, "mistral": os.path.join(work, "synth-mistral"),
              "qwen2": os.path.join(work, "synth-qwen2"), "qwen3": os.path.join(work, "synth-qwen3")}
    name_of = {"llama": "tinystories (llama)", "mistral": "mistral synth", "qwen2": "qwen2 synth",
               "qwen3": "qwen3 synth"}
    # The conversions moetool writes (docs/convert.md, "Targets and refusals"): source family → targets.
    # Every other (source, target) pair is refused by design (q/k norms, MLA, biases, no shared expert);
    # REFUSALS below checks a few of those are refused rather than written wrong.
    WRITES = {"llama": ["mixtral", "qwen2_moe"], "mistral": ["mixtral", "qwen2_moe"],
              "qwen2": ["qwen2_moe"], "qwen3": ["qwen3_moe"]}
    SHARED = {"qwen2_moe", "deepseek_v3"}  # targets with a shared expert
    calib_args = ["--calib-text", calib, "--max-calib-tokens", "2048"]
    refusals = []
    if conv:
        cases = []  # (kind, source, args, tag)
        for sf, tgts in WRITES.items():
            src, sname = src_of[sf], name_of[sf]
            for tgt in tgts:
                cases.append((f"upcycle {sname} → {tgt}", src, ["upcycle", "--to", tgt, "--noise", "0.01"],
                              f"{sf}-{tgt}"))
                if tgt in SHARED:
                    cases.append((f"upcycle {sname} → {tgt} --shared-expert", src,
                                  ["upcycle", "--to", tgt, "--noise", "0.01", "--shared-expert"],
                                  f"{sf}-{tgt}-shared"))
                cases.append((f"factorize {sname} → {tgt}", src, ["factorize", "--to", tgt], f"{sf}-{tgt}"))
                if tgt in SHARED:
                    cases.append((f"factorize {sname} → {tgt} --shared-neurons 25 (calib)", src,
                                  ["factorize", "--to", tgt, "--shared-neurons", "25", *calib_args],
                                  f"{sf}-{tgt}-shared"))
        cases.append(("upcycle tinystories (llama) → qwen2_moe --granularity 2 --shared-expert", tiny,
                      ["upcycle", "--to", "qwen2_moe", "--granularity", "2", "--shared-expert"], "g2"))
        cases.append(("upcycle tinystories (llama) → mixtral --max-shard-size 100KB", tiny,
                      ["upcycle", "--to", "mixtral", "--max-shard-size", "100KB"], "sharded"))
        cases.append(("factorize tinystories (llama) → qwen2_moe --split coactivation --router fit (calib)",
                      tiny, ["factorize", "--to", "qwen2_moe", "--split", "coactivation", "--router", "fit",
                             "--shared-neurons", "25", *calib_args], "coact-fit"))
        cases.append(("factorize tinystories (llama) → mixtral --split random --router random", tiny,
                      ["factorize", "--to", "mixtral", "--split", "random", "--router", "random"], "random"))
        for kind, src, a, tag in cases:
            d = out(f"{a[0]}-{tag}")
            jobs.append((kind, [moetool, "convert", a[0], src, *a[1:], "-o", d, "-q"], d))
        for sf, tgt, extra in [("llama", "qwen3_moe", []), ("llama", "olmoe", []), ("llama", "deepseek_v3", []),
                               ("qwen3", "mixtral", []), ("qwen3", "olmoe", []), ("qwen2", "mixtral", []),
                               ("qwen3", "qwen3_moe", ["--shared-expert"]),
                               ("llama", "mixtral", ["--shared-expert"])]:
            refusals.append((f"upcycle {name_of[sf]} → {tgt} {' '.join(extra)}".strip(),
                             [moetool, "convert", "upcycle", src_of[sf], "--to", tgt, *extra,
                              "-o", out(f"refused-{sf}-{tgt}"), "-q"]))

    jobs += compress_jobs(moetool, args.shared, work, out)
    if args.only:
        # keep what the selected outputs are made from (their sources are written first)
        wanted = [j for j in jobs if args.only in j[0]]
        srcs = {c for _, cmd, _ in wanted for c in map(str, cmd)}
        jobs = [j for j in jobs if j in wanted or j[2] in srcs]
        refusals = [r for r in refusals if args.only in r[0]]
    results = []
    for kind, cmd, d in jobs:
        print(f"== {kind}", file=sys.stderr, flush=True)
        try:
            run(cmd)
        except Exception as e:
            results.append({"kind": kind, "loads": False, "error": f"moetool failed to write it: {e}",
                             "max_abs": None, "top1": None})
            continue
        r = compare(moetool, d, work)
        r["kind"] = kind
        r["cmd"] = " ".join(os.path.relpath(c, work) if c.startswith(work) else c for c in map(str, cmd))
        results.append(r)
        print(f"   loads={r['loads']} max|Δ|={r['max_abs']} top1={r['top1']} {r['error'][:200]}",
              file=sys.stderr, flush=True)

    # Table
    print(f"moetool: {moetool} ({run([moetool, '--version']).strip()}); convert: {'yes' if conv else 'no'}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    print("| output kind | loads? | max \\|Δlogit\\| | top-1 agreement | verdict |")
    print("|---|---|---|---|---|")
    nbad = 0
    for r in results:
        ok = r["loads"] and not r["error"] and r["max_abs"] is not None and r["max_abs"] <= TOL and r.get("top1_ok")
        nbad += not ok
        loads = "yes" if r["loads"] else "no: " + r["error"].replace("|", "\\|").replace("\n", " ")[:300]
        if r["loads"] and r["error"]:
            loads += " (" + r["error"].replace("|", "\\|").replace("\n", " ")[:300] + ")"
        ma = "—" if r["max_abs"] is None else f"{r['max_abs']:.2e}"
        print(f"| {r['kind']} | {loads} | {ma} | {r['top1'] or '—'} | {'ok' if ok else 'FAIL'} |")
    print()
    print(f"{len(results) - nbad}/{len(results)} agree (max |Δ| ≤ {TOL}, identical top-1)")
    refused = []
    for kind, cmd in refusals:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        msg = (p.stderr or p.stdout).strip().splitlines()
        refused.append({"kind": kind, "rc": p.returncode, "message": msg[-1] if msg else ""})
    if refused:
        print()
        print("Refused by design (documented in docs/convert.md; nothing is written):")
        print()
        print("| conversion | exit | moetool's message |")
        print("|---|---|---|")
        for r in refused:
            nbad += r["rc"] == 0
            print(f"| {r['kind']} | {r['rc']}{' (WROTE IT: FAIL)' if r['rc'] == 0 else ''} | "
                  f"{r['message'].replace('|', chr(92) + '|')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": versions, "results": results, "refused": refused}, f, indent=1)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if nbad else 0


if __name__ == "__main__":
    sys.exit(main())
