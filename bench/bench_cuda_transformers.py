#!/usr/bin/env python3
# bench/bench_cuda_transformers.py — teacher-forced logits throughput of Hugging Face transformers
# and of moetool's CUDA engine on the same checkpoint, GPU and context, in one run (issue 6's
# acceptance: moetool ≥ 2× transformers). Also checks that the two agree (NMSE of the logits, top-1).
#
#   python3 bench/bench_cuda_transformers.py --moetool build/moetool --bench build/bench_cuda \
#       --ctx 2048 --dtype bf16 MODEL_DIR [MODEL_DIR ...]
#
# MODEL_DIR: e.g. `moetool synth --family llama --preset bench -o /tmp/llama-bench` and the same for
# mixtral. Prints one JSON object per model.
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def bench_transformers(model_dir, tokens, dtype, reps):
    import torch
    from transformers import AutoModelForCausalLM

    td = torch.bfloat16 if dtype == "bf16" else torch.float32
    if dtype == "f32":
        torch.backends.cuda.matmul.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=td).cuda().eval()
    ids = torch.tensor([tokens], device="cuda")
    with torch.no_grad():
        logits = model(ids).logits[0].float().cpu().numpy()  # warm-up, and the logits to compare
        times = []
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(ids)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    del model
    torch.cuda.empty_cache()
    return sorted(times)[len(times) // 2], logits


def moetool_logits(moetool, model, tokens, dtype):
    """Teacher-forced logits of `moetool logits --device cuda` [tokens, vocab]."""
    with tempfile.TemporaryDirectory() as td:
        npy = os.path.join(td, "l.npy")
        subprocess.run([moetool, "logits", model, "--tokens", ",".join(map(str, tokens)), "-o", npy, "--device", "cuda",
                        "--dtype", dtype], check=True, capture_output=True)
        return np.load(npy)


def agreement(ref, got):
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    return float(((got - ref) ** 2).sum() / (ref ** 2).sum()), float((got.argmax(-1) == ref.argmax(-1)).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--moetool", default="build/moetool")
    ap.add_argument("--bench", default="build/bench_cuda")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--f32-ctx", type=int, default=256, help="context of the float32 agreement check")
    a = ap.parse_args()
    for m in a.models:
        cfg = json.load(open(os.path.join(m, "config.json")))
        rng = np.random.default_rng(1)
        toks = rng.integers(0, cfg["vocab_size"], size=a.ctx).tolist()
        hf_s, hf_logits = bench_transformers(m, toks, a.dtype, a.reps)
        out = subprocess.run([a.bench, "--ctx", str(a.ctx), "--dtype", a.dtype, "--reps", str(a.reps), "--svd", "0", m],
                             check=True, capture_output=True, text=True)
        mt = json.loads(out.stdout)["models"][0]
        nmse, top1 = agreement(hf_logits, moetool_logits(a.moetool, m, toks, a.dtype))
        # The same in float32 on a shorter context: agreement without bf16 noise on either side.
        short = toks[: a.f32_ctx]
        _, hf32 = bench_transformers(m, short, "f32", 1)
        nmse32, top132 = agreement(hf32, moetool_logits(a.moetool, m, short, "f32"))
        print(json.dumps({"model": m, "ctx": a.ctx, "dtype": a.dtype, "transformers_s": hf_s,
                          "moetool_s": mt["median_s"], "speedup": hf_s / mt["median_s"],
                          "moetool_with_host_copy_s": mt.get("median_with_host_copy_s"),
                          "moetool_attention_s": mt.get("attention_s"), "moetool_tflops": mt["tflops"],
                          "nmse_vs_transformers": nmse, "top1_vs_transformers": top1,
                          "f32_ctx": len(short), "f32_nmse_vs_transformers": nmse32, "f32_top1_vs_transformers": top132}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
