#!/usr/bin/env python3
# tests/tools/ct_check.py — does the `compressed-tensors` package read what `moetool quantize --format
# compressed-tensors` (and `--format fp8 --fp8-channel`) writes? For each output directory given:
#   1. every packed (or FP8 float-quantized) linear is decompressed by the package's own PackedQuantizationCompressor with the
#      scheme the package's matching (match_targets / ignore) assigns to the module, from the
#      quantization_config parsed by its QuantizationConfig;
#   2. those weights replace the packed tensors in a float checkpoint that transformers loads, and its
#      logits are compared with `moetool logits` of the compressed directory itself (max |Δ|, top-1);
#   3. transformers loads the compressed directory directly (compressed-tensors integration) where it can,
#      and the same comparison is made.
# Usage: /tmp/golden-venv/bin/python tests/tools/ct_check.py --moetool build/moetool DIR... [--work W]
#   req: compressed-tensors==0.20.1 (with the versions of tests/golden/interop.py)
import argparse
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file, save_file
import compressed_tensors
from compressed_tensors.compressors import FloatQuantizationCompressor
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationConfig
from compressed_tensors.utils.match import is_match, match_targets
from transformers import AutoModelForCausalLM

SEQ = [1, 17, 300, 45, 9, 1023, 77, 5, 600, 12, 88, 2000, 3, 44, 150, 999]


def scheme_of(qc, name):
    lin = torch.nn.Linear(1, 1)
    if any(is_match(name, lin, [i]) for i in (qc.ignore or [])):
        return None
    best = None
    for g in qc.config_groups.values():
        m = match_targets(name, lin, g.targets)
        if m:
            rank = 0 if not m[0].startswith("re:") and m[0] != "Linear" else (1 if m[0].startswith("re:") else 2)
            if best is None or rank < best[0]:
                best = (rank, g)
    return best[1] if best else None


def logits_of(d, vocab):
    ids = [i % vocab for i in SEQ]
    with torch.no_grad():
        model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                                           output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        return model(torch.tensor([ids])).logits[0].float().numpy(), bad, ids


def check(moetool, d, work):
    cfg = json.load(open(os.path.join(d, "config.json")))
    qc = QuantizationConfig.model_validate(cfg["quantization_config"])
    st = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            st.update(load_file(os.path.join(d, f)))
    mods = sorted(k[: -len(".weight_packed")] for k in st if k.endswith(".weight_packed"))
    # float-quantized (FP8 per channel): "<m>.weight" E4M3 beside "<m>.weight_scale"
    fmods = sorted(k[: -len(".weight_scale")] for k in st
                   if k.endswith(".weight_scale") and st.get(k[: -len("_scale")], torch.empty(0)).dtype == torch.float8_e4m3fn)
    dense = {k: v for k, v in st.items() if not k.endswith((".weight_packed", ".weight_scale", ".weight_shape"))}
    for m in mods:
        s = scheme_of(qc, m)
        assert s is not None, f"{m}: stored packed but the package assigns it no scheme"
        sd = {"weight_packed": st[m + ".weight_packed"], "weight_scale": st[m + ".weight_scale"],
              "weight_shape": st[m + ".weight_shape"]}
        dense[m + ".weight"] = PackedQuantizationCompressor.decompress(sd, s)["weight"].float().contiguous()
    for m in fmods:
        s = scheme_of(qc, m)
        assert s is not None and s.weights.type == "float", f"{m}: stored FP8 but the package assigns it {s}"
        sd = {"weight": st[m + ".weight"], "weight_scale": st[m + ".weight_scale"]}
        dense[m + ".weight"] = FloatQuantizationCompressor.decompress(sd, s)["weight"].float().contiguous()
    mods = mods + fmods
    flt = os.path.join(work, os.path.basename(d) + "-decompressed")
    shutil.rmtree(flt, ignore_errors=True)
    os.makedirs(flt)
    for f in os.listdir(d):
        if f.endswith(".json") and f != "model.safetensors.index.json":
            shutil.copy(os.path.join(d, f), flt)
    c2 = dict(cfg)
    del c2["quantization_config"]
    json.dump(c2, open(os.path.join(flt, "config.json"), "w"), indent=2)
    save_file(dense, os.path.join(flt, "model.safetensors"), metadata={"format": "pt"})
    vocab = cfg.get("vocab_size")
    ref, bad, ids = logits_of(flt, vocab)
    npy = os.path.join(work, os.path.basename(d) + ".npy")
    subprocess.run([moetool, "logits", d, "--tokens", ",".join(map(str, ids)), "-o", npy], check=True,
                   capture_output=True)
    mt = np.load(npy)
    row = {"dir": os.path.basename(d), "packed_linears": len(mods), "loading_issues": bad,
           "package_max_abs": float(np.abs(mt - ref).max()),
           "package_top1": f"{int((mt.argmax(-1) == ref.argmax(-1)).sum())}/{len(ids)}"}
    try:
        direct, bad2, _ = logits_of(d, vocab)
        row["transformers_direct_max_abs"] = float(np.abs(mt - direct).max())
        row["transformers_direct_top1"] = f"{int((mt.argmax(-1) == direct.argmax(-1)).sum())}/{len(ids)}"
        row["transformers_direct_issues"] = bad2
    except Exception as e:  # record why
        row["transformers_direct"] = f"{type(e).__name__}: {str(e)[:200]}"
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moetool", required=True)
    ap.add_argument("--work")
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="moetool-ct-")
    print(f"compressed-tensors {compressed_tensors.__version__}, torch {torch.__version__}")
    ok = True
    for d in a.dirs:
        r = check(os.path.abspath(a.moetool), os.path.abspath(d), work)
        print(json.dumps(r))
        ok = ok and r["package_max_abs"] <= 1e-4 and not r["loading_issues"]
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
