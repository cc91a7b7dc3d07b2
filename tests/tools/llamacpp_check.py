#!/usr/bin/env python3
"""tests/tools/llamacpp_check.py — prove that llama.cpp loads and runs moetool's GGUF files.

One command (not part of the default test run; it needs `pip install gguf llama-cpp-python` and a
built moetool):

    python3 tests/tools/llamacpp_check.py --moetool build/moetool [--shared ../shared] [--out DIR]

What it does:
  1. Exports with `moetool quantize`: TinyStories-656K (the shared real model) to f16, q8_0, q4_0,
     q4_k_m, importance-weighted, --bpw mixes, GPTQ and AutoRound over ggml blocks (--method gptq|autoround); synthetic models written by `moetool synth` (llama, qwen2, qwen3, mixtral, qwen2_moe;
     tiny and small presets) to f32 / q8_0 / q4_k_m; tinymoe-3domain pruned by `moetool prune` (keep
     4, keep 6 with --slim, keep 2) and merged by `moetool merge` (4 and 6 experts) to f32 / q8_0.
  2. Reads every file with the `gguf` package's GGUFReader (tensor count, architecture).
  3. Loads every file with llama.cpp (llama-cpp-python), evaluates a token sequence with all
     logits, and compares them with `moetool logits` on the same GGUF file and tokens (max |Δ|,
     relative to the largest logit, and top-1 agreement).
  4. Byte identity with llama.cpp's own quantizer: llama_model_quantize (llama-quantize's code,
     no importance matrix) turns moetool's F32 export into q8_0 / q4_0 / q4_k_m / q5_k_m / q6_k,
     and every tensor (name, type, shape, bytes) is compared with moetool's direct export.
Prints a Markdown report (docs/quantize.md records one) and exits 1 when a check fails.
"""
import argparse
import ctypes
import os
import subprocess
import sys
import tempfile

import numpy as np


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r


def moetool_logits(moetool, model, tokens, out):
    run([moetool, "logits", model, "--tokens", ",".join(map(str, tokens)), "-o", out])
    return np.load(out)


def llamacpp_logits(path, tokens):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=path, logits_all=True, n_ctx=max(64, len(tokens)), n_batch=len(tokens),
                          n_threads=os.cpu_count() or 2, verbose=False, seed=0)
    llm.reset()
    llm.eval(tokens)
    n_vocab = llm.n_vocab()
    scores = np.array(llm.scores[: len(tokens)], dtype=np.float32).reshape(len(tokens), n_vocab)
    del llm
    return scores


def reader_check(path):
    import gguf
    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    return arch, len(r.tensors)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def compare(a, b):
    """max |a − b|, that relative to max |a|, top-1 agreement, mean KL(softmax a ‖ softmax b)."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    top1 = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    la, lb = log_softmax(a), log_softmax(b)
    kld = float(np.mean(np.sum(np.exp(la) * (la - lb), axis=1)))
    return float(d.max()), float(d.max() / max(1e-12, np.abs(a).max())), top1, kld


def llama_quantize(src, dst, ftype):
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src}, {ftype}) returned {rc}")


def tensor_table(path):
    import gguf
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), bytes(t.data.tobytes())) for t in r.tensors}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moetool", default="build/moetool")
    ap.add_argument("--shared", default=os.environ.get("MOETOOL_SHARED", "../shared"))
    ap.add_argument("--out", default=None, help="keep the files here (default: a temporary directory)")
    ap.add_argument("--min-top1", type=float, default=0.9)
    ap.add_argument("--only", help="run only the files whose label contains this text (and skip the byte-identity part)")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="llamacpp-check-")
    os.makedirs(out, exist_ok=True)
    mt = os.path.abspath(args.moetool)
    failures = []

    models = []  # (label, source dir, gguf path, tokens)
    ts = os.path.join(args.shared, "models/tinystories-656k")
    calib = os.path.join(args.shared, "data/tinystories-calib.txt")
    if os.path.isdir(ts):
        toks = [1] + [int(x) for x in run([mt, "tokenize", ts, "--text",
                      "Once upon a time, there was a little girl named Lily. She loved to play in the park with her dog.",
                      "--no-special"]).stdout.split()]
        for t in ["f16", "q8_0", "q4_0", "q4_k_m"]:
            g = os.path.join(out, f"tinystories.{t}.gguf")
            run([mt, "quantize", ts, "-o", g, "--type", t, "--force", "-q"])
            models.append((f"TinyStories-656K {t}", ts, g, toks))
        # Importance-weighted rounding and --bpw mixes (per-tensor types chosen by the knapsack).
        for label, extra in [("q4_0 + importance", ["--type", "q4_0"]),
                             ("--bpw 6.0 --output-type q5_0", ["--bpw", "6.0", "--bpw-all", "--output-type", "q5_0"]),
                             # GPTQ over ggml blocks: the same types and blocks, levels chosen by GPTQ.
                             ("q4_0 --method gptq", ["--type", "q4_0", "--method", "gptq"]),
                             ("q4_k_m --method gptq --act-order", ["--type", "q4_k_m", "--method", "gptq",
                                                                  "--act-order"]),
                             ("--bpw 6.17 --output-type q5_1 --method gptq",
                              ["--bpw", "6.17", "--bpw-all", "--output-type", "q5_1", "--method", "gptq"]),
                             # AutoRound over ggml blocks: tuned levels and d/m fields, standard blocks.
                             ("q4_0 --method autoround", ["--type", "q4_0", "--method", "autoround"]),
                             ("q4_k_m --method autoround", ["--type", "q4_k_m", "--method", "autoround"])]:
            g = os.path.join(out, "tinystories." + label.replace(" ", "_").replace("-", "") + ".gguf")
            run([mt, "quantize", ts, "-o", g, "--calib-text", calib, "--ctx", "128", "--force", "-q"] + extra)
            models.append((f"TinyStories-656K {label}", ts, g, toks))
    synth = [("llama", "tiny", ["f32", "q8_0"]), ("qwen2", "tiny", ["q8_0"]), ("qwen3", "tiny", ["q8_0"]),
             ("mixtral", "tiny", ["f32", "q8_0"]), ("qwen2_moe", "tiny", ["f32", "q8_0"]),
             ("mixtral", "small", ["q4_k_m"]), ("qwen2_moe", "small", ["q4_k_m"])]
    for fam, preset, types in synth:
        d = os.path.join(out, f"synth-{fam}-{preset}")
        run([mt, "synth", "--family", fam, "--preset", preset, "-o", d, "--force", "-q"])
        rng = np.random.default_rng(0)
        import json
        vocab = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
        toks = [int(x) for x in rng.integers(0, vocab, 32)]
        for t in types:
            g = os.path.join(out, f"synth-{fam}-{preset}.{t}.gguf")
            run([mt, "quantize", d, "-o", g, "--type", t, "--force", "-q"])
            models.append((f"synth {fam} ({preset}) {t}", d, g, toks))
        if preset == "small":  # per-expert-tensor mixed types from --bpw over the experts
            g = os.path.join(out, f"synth-{fam}-{preset}.bpw5.gguf")
            run([mt, "quantize", d, "-o", g, "--bpw", "5.0", "--calib-text", calib, "--ctx", "128", "--chunks", "8",
                 "--force", "-q"])
            models.append((f"synth {fam} ({preset}) --bpw 5.0 (experts, importance)", d, g, toks))
            # GPTQ over K-quant blocks, stacked experts (own, pooled Hessians).
            g = os.path.join(out, f"synth-{fam}-{preset}.q4_k_m-gptq.gguf")
            run([mt, "quantize", d, "-o", g, "--type", "q4_k_m", "--method", "gptq", "--calib-text", calib, "--ctx",
                 "128", "--chunks", "8", "--force", "-q"])
            models.append((f"synth {fam} ({preset}) q4_k_m --method gptq", d, g, toks))
            g = os.path.join(out, f"synth-{fam}-{preset}.q4_k_m-autoround.gguf")
            run([mt, "quantize", d, "-o", g, "--type", "q4_k_m", "--method", "autoround", "--calib-text", calib,
                 "--ctx", "128", "--chunks", "8", "--iters", "50", "--force", "-q"])
            models.append((f"synth {fam} ({preset}) q4_k_m --method autoround --iters 50", d, g, toks))

    # Pruned models (moetool prune writes the same family with fewer / narrower experts; its GGUF export
    # must carry the new expert count and width that llama.cpp reads from the metadata).
    moe3 = os.path.join(args.shared, "models/tinymoe-3domain")
    code = os.path.join(args.shared, "data/moe3-calib-code.txt")
    if os.path.isdir(moe3):
        toks = [1] + [int(x) for x in run([mt, "tokenize", moe3, "--text",
                      "def read_config(path):\n    with open(path) as f:\n        return json.load(f)\n",
                      "--no-special"]).stdout.split()]
        def compressed(cmd, what, variants):  # `moetool CMD` outputs of tinymoe-3domain, exported to f32 / q8_0
            for label, extra in variants:
                d = os.path.join(out, f"{what}-" + label.replace(" ", "").replace("-", ""))
                run([mt, cmd, moe3, "-o", d, "--calib-text", code, "--ctx", "128", "--force", "-q"] + extra)
                for t in ["f32", "q8_0"]:
                    g = d + f".{t}.gguf"
                    run([mt, "quantize", d, "-o", g, "--type", t, "--force", "-q"])
                    models.append((f"tinymoe-3domain {what} {label} (code) {t}", d, g, toks))

        compressed("prune", "pruned", [("--keep 4 --method reap", ["--keep", "4", "--method", "reap"]),
                                       ("--keep 6 --method easy-ep --slim 0.25",
                                        ["--keep", "6", "--method", "easy-ep", "--slim", "0.25"]),
                                       ("--keep 2 --method frequency", ["--keep", "2", "--method", "frequency"])])
        # Merged: K experts, each a frequency-weighted average of its group.
        compressed("merge", "merged", [("--experts 4 --method msmoe", ["--experts", "4", "--method", "msmoe"]),
                                       ("--experts 6 --method hc", ["--experts", "6", "--method", "hc"])])

    print("## llama.cpp runs moetool's GGUF files\n")
    print("| file | arch (gguf reader) | tensors | llama.cpp vs moetool on the GGUF: max abs Δ | rel | top-1 | KLD | "
          "moetool: GGUF vs original checkpoint, top-1 | KLD |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, src, g, toks in models:
        if args.only and args.only not in label:
            continue
        try:
            arch, nt = reader_check(g)
            lm = moetool_logits(mt, g, toks, os.path.join(out, "m.npy"))
            lo = moetool_logits(mt, src, toks, os.path.join(out, "o.npy"))
            lc = llamacpp_logits(g, toks)
            d, rel, top1, kld = compare(lm, lc)
            _, _, top1_orig, kld_orig = compare(lo, lm)
            print(f"| {label} | {arch} | {nt} | {d:.2e} | {rel:.2e} | {top1:.3f} | {kld:.1e} | {top1_orig:.3f} | "
                  f"{kld_orig:.1e} |")
            if top1 < args.min_top1:
                failures.append(f"{label}: top-1 agreement {top1:.3f} < {args.min_top1}")
        except Exception as e:  # noqa: BLE001 — report and go on
            print(f"| {label} | FAILED: {str(e).splitlines()[0][:120]} | | | | | | | |")
            failures.append(f"{label}: {e}")

    if args.only:
        print()
        if failures:
            print("FAILED:\n" + "\n".join("- " + f for f in failures))
            return 1
        print("all checks passed")
        return 0
    # Byte identity with llama.cpp's quantizer (llama-quantize without an importance matrix).
    print("\n## moetool quantize vs llama.cpp's llama_model_quantize on the same F32 GGUF\n")
    print("| model | type | tensors | identical (type, shape, bytes) | differing |")
    print("|---|---|---|---|---|")
    import llama_cpp
    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
              "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
              "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K, "q5_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0}
    cmp_models = []
    if os.path.isdir(ts):
        cmp_models.append(("TinyStories-656K", ts))
    cmp_models.append(("synth mixtral (small)", os.path.join(out, "synth-mixtral-small")))
    cmp_models.append(("synth qwen2_moe (small)", os.path.join(out, "synth-qwen2_moe-small")))
    for label, d in cmp_models:
        f32 = os.path.join(out, "cmp.f32.gguf")
        run([mt, "quantize", d, "-o", f32, "--type", "f32", "--force", "-q"])
        for t, ft in ftypes.items():
            ours = os.path.join(out, f"cmp.{t}.moetool.gguf")
            theirs = os.path.join(out, f"cmp.{t}.llamacpp.gguf")
            try:
                run([mt, "quantize", d, "-o", ours, "--type", t, "--force", "-q"])
                llama_quantize(f32, theirs, ft)
                a, b = tensor_table(ours), tensor_table(theirs)
                same = [n for n in a if n in b and a[n] == b[n]]
                diff = [f"{n} ({a[n][0]} vs {b[n][0]})" if n in b else f"{n} (missing)" for n in a if n not in same]
                diff += [f"{n} (only in llama.cpp's)" for n in b if n not in a]
                print(f"| {label} | {t} | {len(a)} | {len(same)} | {', '.join(diff[:6]) or '—'} |")
                if diff:
                    failures.append(f"{label} {t}: {len(diff)} tensors differ from llama.cpp's quantizer")
            except Exception as e:  # noqa: BLE001
                print(f"| {label} | {t} | FAILED: {str(e).splitlines()[0][:120]} | | |")
                failures.append(f"{label} {t}: {e}")

    print()
    if failures:
        print("FAILED:\n" + "\n".join("- " + f for f in failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
