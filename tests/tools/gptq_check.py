#!/usr/bin/env python3
"""tests/tools/gptq_check.py — independent Python oracles for moetool's GPTQ ("v1") checkpoints.

Not part of the default test run; it needs its own venv (tests/tools/requirements-gptq.txt):

    python3 -m venv /tmp/gptq-venv && /tmp/gptq-venv/bin/pip install -r tests/tools/requirements-gptq.txt
    /tmp/gptq-venv/bin/python tests/tools/gptq_check.py MODEL_ORIG GPTQ_DIR [--moetool build/moetool] \
        [--text FILE] [--ctx N] [--chunks N] [--json OUT]

The layout it checks (docs/gptq.md): per quantized linear `<m>.qweight` int32 [in·bits/32, out] (input rows as a
little-endian bit stream: row i at bits i·bits… of the stream of 32-bit words), `<m>.qzeros` int32
[ngroups, out·bits/32] (zero − 1, same bit stream along the output dim), `<m>.scales` f16 [ngroups, out],
`<m>.g_idx` int32 [in]; w[o, i] = scales[g_idx[i], o] · (q[i, o] − (qzeros[g_idx[i], o] + 1)).
config.json `quantization_config`: quant_method "gptq", bits, group_size, desc_act, sym, checkpoint_format "gptq",
optional `dynamic` {"+:REGEX": {"bits": b, "group_size": g, ...}, "-:REGEX": {}} — first pattern (in order) whose
regex matches the module name from its start (Python re.match, as GPTQModel and vLLM do) decides.

What it does (prints a Markdown table, exits 1 when a check fails, 2 on bad input):
  0. structure: every quantized module's four tensors have the shapes its (dynamic) bits/group size imply, g_idx is
     within range (and i // group_size unless desc_act), in/out features match MODEL_ORIG's weight; v1 zero fields
     holding 2^bits − 1 (zero = 0, which GPTQModel's v1→v2 conversion carries into the next field) are counted.
  1. `deq`: an independent numpy dequantizer (written from the layout above) rebuilds a float32 HF checkpoint in a
     temporary directory; transformers runs it; `moetool logits GPTQ_DIR --tokens …` must agree (max |Δ|, top-1).
  2. `hf-gptq`: transformers loads GPTQ_DIR itself (optimum + gptqmodel kernels on CPU, float32) and
     `gptqmodel`: GPTQModel.load(GPTQ_DIR) (honours `dynamic`); each is compared with `deq` and with moetool.
     transformers ignores `dynamic` (optimum builds every block linear with the base bits), so with per-module
     widths that row is reported as expected to fail and does not count.
  3. `deq` vs MODEL_ORIG (both in transformers): KLD mean, top-1 agreement — a sanity figure for the quantization.

Two helper modes:
  --self-test MODEL_ORIG       closed-form bit-packing vectors, then packs MODEL_ORIG with this file's own RTN
                               packer (mixed 2/3/4/8 bits via `dynamic`, desc_act permutation, asymmetric zeros)
                               into a temporary directory and runs the check on it (GPTQModel's kernels are the
                               independent side there).
  --make-ref MODEL_ORIG OUT    quantizes MODEL_ORIG with GPTQModel (real GPTQ, CPU) into OUT, the reference
                               checkpoint that moetool's reader is tested on (--bits, --group-size, --desc-act,
                               --asym, --dynamic JSON, --calib FILE).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

SHARED = os.environ.get("MOETOOL_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
DEFAULT_TEXT = os.path.join(SHARED, "data", "tinystories-calib.txt")
GPTQ_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


# ----------------------------------------------------------------------------------------------------------------
# bit streams (written from the layout, not from moetool's code)

def unpack_stream(words, bits, count, axis):
    """words: int32/uint32 array; along `axis` a little-endian stream of 32-bit words holding `count` fields of
    `bits` bits each (field k at stream bits [k·bits, k·bits+bits)). Returns int64 array with that axis = count."""
    w = np.moveaxis(np.asarray(words).astype(np.uint32).astype(np.uint64), axis, -1)  # [..., W]
    nwords = w.shape[-1]
    if nwords * 32 < count * bits:
        raise ValueError(f"{nwords} words hold {nwords * 32} bits, need {count}·{bits}")
    w = np.concatenate([w, np.zeros(w.shape[:-1] + (1,), np.uint64)], axis=-1)  # [..., W+1] (spill word)
    off = np.arange(count, dtype=np.int64) * bits
    lo = off // 32
    sh = (off % 32).astype(np.uint64)
    pair = w[..., lo] | (w[..., lo + 1] << np.uint64(32))  # [..., count] 64-bit window
    vals = (pair >> sh) & np.uint64((1 << bits) - 1)
    return np.moveaxis(vals.astype(np.int64), -1, axis)


def pack_stream(vals, bits, axis):
    """Inverse of unpack_stream: int array with fields in [0, 2^bits) along `axis` -> int32 words (count·bits/32
    rounded up) along `axis`. Used only by the self-test packer."""
    v = np.moveaxis(np.asarray(vals, dtype=np.int64), axis, -1)
    if v.min() < 0 or v.max() >= (1 << bits):
        raise ValueError(f"field out of range for {bits} bits")
    count = v.shape[-1]
    nwords = (count * bits + 31) // 32
    out = np.zeros(v.shape[:-1] + (nwords + 1,), np.uint64)
    for k in range(count):  # small models only; clarity over speed
        off = k * bits
        x = v[..., k].astype(np.uint64) << np.uint64(off % 32)
        out[..., off // 32] |= x & np.uint64(0xFFFFFFFF)
        out[..., off // 32 + 1] |= x >> np.uint64(32)
    words = out[..., :nwords].astype(np.uint32).view(np.int32)
    return np.moveaxis(words, -1, axis)


def bitstream_vectors():
    """Closed-form checks of the layout: (name, ok, detail)."""
    res = []
    # 4 bits: rows 0..7 with values 0..7 -> one word 0x76543210 (row k at bit 4k).
    w = unpack_stream(np.array([[0x76543210]], np.uint32).view(np.int32), 4, 8, axis=0)[:, 0]
    res.append(("4-bit word 0x76543210 -> 0..7", list(w) == list(range(8)), str(list(w))))
    # 2 bits: 16 fields, value k%4 -> 0b11100100 repeated = 0xE4E4E4E4.
    w = unpack_stream(np.array([0xE4E4E4E4], np.uint32).view(np.int32), 2, 16, axis=0)
    res.append(("2-bit 0xE4E4E4E4 -> 0,1,2,3,…", list(w) == [k % 4 for k in range(16)], str(list(w))))
    # 8 bits: little-endian bytes.
    w = unpack_stream(np.array([0x04030201, 0x08070605], np.uint32).view(np.int32), 8, 8, axis=0)
    res.append(("8-bit bytes little-endian", list(w) == list(range(1, 9)), str(list(w))))
    # 3 bits: 32 fields in 3 words; field 10 straddles words 0/1 (bits 30,31 | bit 0), field 21 straddles
    # words 1/2 (bit 31 | bits 0,1) — vLLM/AutoGPTQ's 3-bit unpack table. Fields all 7 except 10 = 0b101 and
    # 21 = 0b011: word0 = 0x7FFFFFFF (bit31 = field10 bit1 = 0), word1 bit0 = 1 (field 10 bit 2),
    # bits 1..30 = fields 11..20 = all ones, bit 31 = field 21 bit 0 = 1 -> 0xFFFFFFFF; word2 bits 0,1 = field 21
    # bits 1,2 = 1,0 -> 0b01, rest ones -> 0xFFFFFFFD.
    f = [7] * 32
    f[10], f[21] = 5, 3
    words = np.array([0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFD], np.uint32).view(np.int32)
    w = unpack_stream(words, 3, 32, axis=0)
    res.append(("3-bit straddling fields 10 and 21", list(w) == f, str(list(w))))
    packed = pack_stream(np.array(f), 3, axis=0)
    res.append(("3-bit pack of the same fields", list(packed.view(np.uint32)) == list(words.view(np.uint32)),
                str([hex(x) for x in packed.view(np.uint32)])))
    rng = np.random.default_rng(7)
    for b in (2, 3, 4, 8):
        v = rng.integers(0, 1 << b, size=(96, 5))
        ok = np.array_equal(unpack_stream(pack_stream(v, b, 0), b, 96, 0), v) and \
            np.array_equal(unpack_stream(pack_stream(v.T, b, 1), b, 96, 1), v.T)
        res.append((f"{b}-bit random round trip, both axes", ok, ""))
    return res


# ----------------------------------------------------------------------------------------------------------------
# checkpoint reading

def read_tensors(d):
    """All tensors of a (possibly sharded) safetensors checkpoint as numpy arrays (f16/bf16 kept as stored)."""
    from safetensors import safe_open
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    if not files:
        raise SystemExit(f"gptq_check: error: {d}: no .safetensors files")
    out = {}
    for f in files:
        with safe_open(os.path.join(d, f), "pt") as h:  # "pt" handles bf16, numpy does not
            for k in h.keys():
                out[k] = h.get_tensor(k)
    return out


def to_np(t):
    import torch
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def module_override(qcfg, name):
    """(quantized?, overrides dict) for module `name` under quantization_config.dynamic (first match wins,
    re.match = anchored at the start only)."""
    for pat, ov in (qcfg.get("dynamic") or {}).items():
        if pat.startswith("-:"):
            if re.match(pat[2:], name):
                return False, {}
        else:
            if re.match(pat[2:] if pat.startswith("+:") else pat, name):
                return True, dict(ov)
    return True, {}


def dequantize(name, t, qcfg, problems, zero_overflow):
    """float64 weight [out, in] of GPTQ module `name` from its four tensors in `t`."""
    quant, ov = module_override(qcfg, name)
    if not quant:
        problems.append(f"{name}: GPTQ tensors present but dynamic excludes the module ('-:' rule)")
    bits = int(ov.get("bits", qcfg["bits"]))
    gsz = int(ov.get("group_size", qcfg["group_size"]))
    desc = bool(ov.get("desc_act", qcfg.get("desc_act", False)))
    qw, qz, sc, gi = (to_np(t[f"{name}.{s}"]) for s in GPTQ_SUFFIXES)
    if qw.dtype != np.int32 or qz.dtype != np.int32 or gi.dtype != np.int32:
        problems.append(f"{name}: qweight/qzeros/g_idx dtypes {qw.dtype}/{qz.dtype}/{gi.dtype}, expected int32")
    if sc.dtype != np.float16:
        problems.append(f"{name}: scales dtype {sc.dtype}, expected float16")
    n_in = gi.shape[0]
    n_out = sc.shape[1]
    ngroups = sc.shape[0]
    want_groups = (n_in + gsz - 1) // gsz if gsz > 0 else 1
    exp = {"qweight": (n_in * bits // 32, n_out), "qzeros": (ngroups, n_out * bits // 32),
           "scales": (want_groups, n_out), "g_idx": (n_in,)}
    for s, shape in exp.items():
        got = tuple(t[f"{name}.{s}"].shape)
        if got != shape:
            problems.append(f"{name}.{s}: shape {list(got)}, expected {list(shape)} (bits {bits}, group {gsz})")
    if (n_in * bits) % 32 or (n_out * bits) % 32:
        problems.append(f"{name}: in {n_in} / out {n_out} times {bits} bits is not a whole number of int32 words")
    if gi.min() < 0 or gi.max() >= ngroups:
        problems.append(f"{name}.g_idx: values in [{gi.min()}, {gi.max()}], groups {ngroups}")
        gi = np.clip(gi, 0, ngroups - 1)
    if not desc and gsz > 0 and not np.array_equal(gi, np.arange(n_in) // gsz):
        problems.append(f"{name}.g_idx: desc_act false but g_idx != i // {gsz}")
    q = unpack_stream(qw, bits, n_in, axis=0)                   # [in, out]
    zs = unpack_stream(qz, bits, n_out, axis=1)                 # [ngroups, out] stored zero − 1
    zero_overflow[name] = int((zs == (1 << bits) - 1).sum())
    z = zs + 1                                                  # v1: zero = stored + 1 (no wrap)
    s = sc.astype(np.float64)
    w = s[gi, :] * (q - z[gi, :])                               # [in, out]
    return w.T.copy(), bits, gsz                                # [out, in]


def quantized_modules(t):
    return sorted({k.rsplit(".", 1)[0] for k in t if k.endswith(".qweight")})


# GPTQ_DIR names that differ from the float checkpoint's: transformers 5 (and so GPTQModel 7.7, which quantizes
# the transformers modules) names Mixtral's experts mlp.experts.E.{gate,up,down}_proj and its router mlp.gate,
# where Mixtral checkpoints say block_sparse_moe.experts.E.{w1,w3,w2} / block_sparse_moe.gate.
RENAMES = [
    (r"\.mlp\.experts\.(\d+)\.gate_proj\.", r".block_sparse_moe.experts.\1.w1."),
    (r"\.mlp\.experts\.(\d+)\.up_proj\.", r".block_sparse_moe.experts.\1.w3."),
    (r"\.mlp\.experts\.(\d+)\.down_proj\.", r".block_sparse_moe.experts.\1.w2."),
    (r"\.mlp\.gate\.", ".block_sparse_moe.gate."),
]


def orig_name(k, orig):
    """The float checkpoint's name for GPTQ_DIR tensor name k (k itself unless a rename finds it in orig)."""
    if k in orig:
        return k
    for pat, rep in RENAMES:
        c = re.sub(pat, rep, k)
        if c != k and c in orig:
            return c
    return k


def dequantized_checkpoint(orig_dir, gptq_dir, out_dir, problems, summary):
    """Writes out_dir: config.json without quantization_config + float32 model.safetensors."""
    import torch
    from safetensors.torch import save_file
    with open(os.path.join(gptq_dir, "config.json")) as f:
        cfg = json.load(f)
    qcfg = cfg.get("quantization_config")
    if not qcfg:
        raise SystemExit(f"gptq_check: error: {gptq_dir}/config.json has no quantization_config")
    for k, want in (("quant_method", "gptq"),):
        if qcfg.get(k) != want:
            problems.append(f"quantization_config.{k} = {qcfg.get(k)!r}, expected {want!r}")
    for k in ("bits", "group_size", "desc_act", "sym"):
        if k not in qcfg:
            problems.append(f"quantization_config.{k} missing")
    fmt = qcfg.get("checkpoint_format", qcfg.get("format", "gptq"))
    if fmt != "gptq":
        problems.append(f"quantization_config.checkpoint_format = {fmt!r}; this oracle reads v1 ('gptq') only")
    t = read_tensors(gptq_dir)
    orig = read_tensors(orig_dir)
    out = {}
    zero_overflow = {}
    mods = quantized_modules(t)
    widths = {}
    for m in mods:
        missing = [s for s in GPTQ_SUFFIXES if f"{m}.{s}" not in t]
        if missing:
            problems.append(f"{m}: missing {missing}")
            continue
        w, bits, gsz = dequantize(m, t, qcfg, problems, zero_overflow)
        widths[m] = (bits, gsz)
        ow = orig.get(orig_name(f"{m}.weight", orig))
        if ow is not None and tuple(ow.shape) != w.shape:
            problems.append(f"{m}: dequantized [out, in] {list(w.shape)} != original weight {list(ow.shape)}")
        if f"{m}.weight" in t:
            problems.append(f"{m}: both GPTQ tensors and a float weight")
        out[f"{m}.weight"] = torch.from_numpy(w.astype(np.float32))
        if f"{m}.bias" in t:
            out[f"{m}.bias"] = t[f"{m}.bias"].float()
    for k, v in t.items():
        if k.rsplit(".", 1)[0] in mods:
            continue
        if not v.is_floating_point():
            problems.append(f"{k}: non-float tensor {v.dtype} outside a GPTQ module")
            continue
        out[k] = v.float().contiguous()
    # Which original linears (2-D weights inside decoder layers) were left float? (routers, norms are 1-D or
    # routers by name; reported, not failed — keeping a module float is the writer's choice.)
    float_linears = sorted(k[:-7] for k, v in t.items() if k.endswith(".weight") and v.dim() == 2
                           and ".layers." in k and k[:-7] not in mods)
    summary["modules"] = len(mods)
    summary["widths"] = sorted({f"{b}b/g{g}" for b, g in widths.values()})
    summary["float_linears_in_layers"] = float_linears
    summary["zero_overflow_fields"] = int(sum(zero_overflow.values()))
    summary["has_dynamic"] = bool(qcfg.get("dynamic"))
    summary["per_expert"] = any(re.search(r"\.experts\.\d+\.", m) for m in mods)
    # dynamic rules that match no module are suspicious (a regex that misses its targets).
    for pat in (qcfg.get("dynamic") or {}):
        rx = pat[2:] if pat[:2] in ("+:", "-:") else pat
        if not any(re.match(rx, m) for m in mods) and not pat.startswith("-:"):
            problems.append(f"dynamic pattern {pat!r} matches no quantized module")
    renamed = {orig_name(k, orig): v for k, v in out.items()}
    summary["renamed"] = sum(1 for k in out if orig_name(k, orig) != k)
    os.makedirs(out_dir, exist_ok=True)
    save_file(renamed, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    dcfg = dict(cfg)
    dcfg.pop("quantization_config", None)
    dcfg["torch_dtype"] = "float32"
    dcfg.pop("dtype", None)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dcfg, f, indent=2)
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# logits

def token_chunks(model_dir, text_file, ctx, nchunks):
    """nchunks lists of ctx ids each: BOS + ctx−1 consecutive text tokens (as moetool verify chunks)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "config.json")) as f:
        bos = json.load(f).get("bos_token_id")
    with open(text_file, encoding="utf-8") as f:
        ids = tok.encode(f.read(), add_special_tokens=False).ids
    ids = [i for i in ids if i != bos]
    need = (ctx - 1) * nchunks
    if len(ids) < need:
        raise SystemExit(f"gptq_check: error: {text_file}: {len(ids)} tokens, need {need}")
    head = [bos] if bos is not None else []
    return [head + ids[c * (ctx - 1):(c + 1) * (ctx - 1)] for c in range(nchunks)]


def hf_logits(model, chunks):
    import torch
    outs = []
    with torch.no_grad():
        for ids in chunks:
            outs.append(model(torch.tensor([ids])).logits[0].float().numpy())
    return np.stack(outs)  # [chunks, ctx, vocab]


def checked_load(d, **kw):
    """from_pretrained that fails on missing / unexpected / mismatched keys (transformers would otherwise
    initialise the missing weights randomly with only a warning)."""
    from transformers import AutoModelForCausalLM
    m, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True, **kw)
    bad = {k: sorted(map(str, v))[:4] + (["…"] if len(v) > 4 else []) for k, v in info.items()
           if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise RuntimeError(f"{d}: transformers loading info {bad}")
    return m.eval()


def hf_load_float(d):
    import torch
    return checked_load(d, dtype=torch.float32, attn_implementation="eager")


def moetool_logits(moetool, model_dir, chunks, tmp):
    outs = []
    for c, ids in enumerate(chunks):
        path = os.path.join(tmp, f"moetool_{c}.npy")
        r = subprocess.run([moetool, "logits", model_dir, "--tokens", ",".join(map(str, ids)), "-o", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"moetool logits exited {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
        outs.append(np.load(path))
    return np.stack(outs)


def compare(a, b):
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    top = float((a.argmax(-1) == b.argmax(-1)).mean())
    return float(d.max()), float(np.abs(b).max()), top


def kld(base, cand):
    def logsm(x):
        x = x.astype(np.float64)
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    lp, lq = logsm(base), logsm(cand)
    k = (np.exp(lp) * (lp - lq)).sum(-1)
    return float(k.mean()), float(k.max()), float((base.argmax(-1) == cand.argmax(-1)).mean())


# ----------------------------------------------------------------------------------------------------------------
# GPTQ kernels (optional)

def hf_gptq_load(d):
    import torch
    return checked_load(d, dtype=torch.float32, device_map="cpu")


def gptqmodel_load(d):
    """GPTQModel's portable torch kernel (TorchLinear: 2/3/4/8 bits; f16/bf16 activations only). The CPU default
    (TorchFusedLinear) takes 4-bit only and refuses mixed widths."""
    import torch
    from gptqmodel import GPTQModel
    from gptqmodel.utils.backend import BACKEND
    m = GPTQModel.load(d, device="cpu", backend=BACKEND.GPTQ_TORCH, dtype=torch.float16)
    return m.model.eval()


def gptqmodel_refuses(qc):
    """GPTQModel 7.7 loads a sym=False v1 checkpoint only when meta.quantizer lists "gptqmodel:<version ≥ 0.9.0>"
    (models/loader.py: 'Loading of a sym=False model with format=gptq is only supported if produced by gptqmodel
    version >= 0.9.0')."""
    if qc.get("sym", True):
        return False
    q = (qc.get("meta") or {}).get("quantizer") or []
    return not any(str(x).lower().startswith("gptqmodel:") for x in (q if isinstance(q, list) else [q]))


def versions():
    v = {"python": sys.version.split()[0], "numpy": np.__version__}
    for mod in ("torch", "transformers", "safetensors", "tokenizers", "optimum", "gptqmodel"):
        try:
            from importlib.metadata import version
            v[mod] = version(mod)
        except Exception:
            v[mod] = "absent"
    return v


# ----------------------------------------------------------------------------------------------------------------

def check(args):
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # gptqmodel 7.7.0 refuses a 1-worker CPU pool (2 cores)
    rows = []   # (check, result, detail, ok or None for informational)
    problems = []
    summary = {}
    tmp = tempfile.mkdtemp(prefix="gptq_check_")
    failed = False
    try:
        deq_dir = os.path.join(tmp, "deq")
        cfg = dequantized_checkpoint(args.orig, args.gptq, deq_dir, problems, summary)
        qc = cfg["quantization_config"]
        rows.append(("structure", "ok" if not problems else f"{len(problems)} problem(s)",
                     f"{summary['modules']} GPTQ modules, widths {', '.join(summary['widths'])}; "
                     f"float 2-D weights in layers: {len(summary['float_linears_in_layers'])}; "
                     f"zero fields = 2^bits−1: {summary['zero_overflow_fields']}; tensors renamed to the float "
                     f"checkpoint's names: {summary['renamed']}", not problems))
        chunks = token_chunks(args.orig, args.text, args.ctx, args.chunks)
        deq = hf_logits(hf_load_float(deq_dir), chunks)
        orig = hf_logits(hf_load_float(args.orig), chunks)
        mk, mx, top = kld(orig, deq)
        ok = top >= args.min_top1_orig
        rows.append(("deq (transformers) vs original (transformers)", f"KLD mean {mk:.5f}, max {mx:.4f}",
                     f"top-1 {top:.4f}", ok))
        mt = None
        if args.moetool:
            try:
                mt = moetool_logits(args.moetool, args.gptq, chunks, tmp)
                d, scale, top = compare(mt, deq)
                ok = d <= args.tol * max(1.0, scale) and top >= args.min_top1
                rows.append(("moetool logits GPTQ_DIR vs deq (transformers)", f"max |Δ| {d:.3g} (max |logit| "
                             f"{scale:.3g})", f"top-1 {top:.4f}", ok))
                mk, mx, top = kld(orig, mt)
                rows.append(("moetool GPTQ_DIR vs original (transformers)", f"KLD mean {mk:.5f}, max {mx:.4f}",
                             f"top-1 {top:.4f}", None))
            except Exception as e:  # noqa: BLE001 - reported as a failed row
                rows.append(("moetool logits GPTQ_DIR", "error", str(e).splitlines()[-1][:300], False))
        else:
            rows.append(("moetool logits GPTQ_DIR", "skipped", "no --moetool", None))
        kernels = []
        if not args.skip_kernels:
            # transformers ignores `dynamic` and cannot place per-expert GPTQ tensors (its MoE experts are fused
            # 3-D parameters, optimum replaces nn.Linear only): both are reported, not failed.
            hf_known_bad = summary["has_dynamic"] or summary["per_expert"]
            kernels = [("hf-gptq: transformers from_pretrained(GPTQ_DIR) (optimum+gptqmodel, CPU)", hf_gptq_load,
                        hf_known_bad),
                       ("gptqmodel: GPTQModel.load(GPTQ_DIR) (CPU)", gptqmodel_load, gptqmodel_refuses(qc))]
        for label, loader, expected_bad in kernels:
            try:
                model = loader(args.gptq)
                kinds = sorted({f"{type(m).__name__}" for m in model.modules() if hasattr(m, "qweight")})
                label += f" [{', '.join(kinds) or 'no GPTQ modules'}, {model.dtype}]".replace("torch.", "")
                lg = hf_logits(model, chunks)
            except Exception as e:  # noqa: BLE001
                msg = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}"
                rows.append((label, "load failed", msg, None if expected_bad or args.allow_kernel_failure else False))
                continue
            d, scale, top = compare(lg, deq)
            ok = d <= args.kernel_tol * max(1.0, scale) and top >= args.min_top1
            note = " (expected to differ: see docs/gptq.md, informational)" if expected_bad else ""
            rows.append((label + " vs deq", f"max |Δ| {d:.3g}", f"top-1 {top:.4f}{note}",
                         None if expected_bad else ok))
            if mt is not None:
                d, scale, top = compare(lg, mt)
                ok = d <= args.kernel_tol * max(1.0, scale) and top >= args.min_top1
                rows.append((label + " vs moetool", f"max |Δ| {d:.3g}", f"top-1 {top:.4f}{note}",
                             None if expected_bad else ok))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n### gptq_check: {args.gptq}\n")
    print(f"quantization_config: bits {qc.get('bits')}, group_size {qc.get('group_size')}, desc_act "
          f"{qc.get('desc_act')}, sym {qc.get('sym')}, checkpoint_format "
          f"{qc.get('checkpoint_format', qc.get('format'))}, dynamic rules {len(qc.get('dynamic') or {})}; "
          f"{args.chunks} chunk(s) × {args.ctx} tokens of {os.path.basename(args.text)}\n")
    print("| check | result | detail | pass |\n|---|---|---|---|")
    for name, res, det, ok in rows:
        print(f"| {name} | {res} | {det} | {'—' if ok is None else ('yes' if ok else '**NO**')} |")
        failed |= ok is False
    for p in problems:
        print(f"- problem: {p}")
    print(f"\nversions: {versions()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "problems": problems, "summary": summary, "versions": versions()}, f, indent=1)
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------------------------
# self-test packer: RTN GPTQ v1 from a float checkpoint (independent of moetool and of GPTQModel)

def self_test_dynamic(names):
    """Per-module widths for the self-test: 8 bits on the last linear, 3 bits (group 64) on the second, 2 bits on
    the third — anchored, escaped literal names (the form docs/gptq.md recommends)."""
    lit = lambda n: "+:^" + re.escape(n) + "$"  # noqa: E731
    return {lit(names[-1]): {"bits": 8}, lit(names[1]): {"bits": 3, "group_size": 64}, lit(names[2]): {"bits": 2}}


def rtn_pack(w, bits, gsz, desc_act, sym, rng):
    """w: float [out, in] -> dict of the four GPTQ tensors (v1). Groups follow a random input permutation when
    desc_act (g_idx non-monotone), zeros asymmetric in [1, 2^bits − 1] (never 0, see docs/gptq.md)."""
    n_out, n_in = w.shape
    maxq = (1 << bits) - 1
    ng = n_in // gsz
    perm = rng.permutation(n_in) if desc_act else np.arange(n_in)
    g_idx = np.empty(n_in, np.int32)
    g_idx[perm] = np.arange(n_in) // gsz                          # input perm[j] belongs to group j // gsz
    scales = np.zeros((ng, n_out), np.float16)
    zeros = np.zeros((ng, n_out), np.int64)
    for g in range(ng):
        cols = np.nonzero(g_idx == g)[0]
        blk = w[:, cols].astype(np.float64)                       # [out, gsz]
        if sym:
            s = np.maximum(np.abs(blk).max(1), 1e-8) * 2 / maxq
            z = np.full(n_out, (maxq + 1) // 2)
        else:
            lo, hi = np.minimum(blk.min(1), 0), np.maximum(blk.max(1), 0)
            s = np.maximum(hi - lo, 1e-8) / maxq
            z = np.clip(np.round(-lo / s), 1, maxq)
        scales[g] = s.astype(np.float16)
        zeros[g] = z
    s_full = scales.astype(np.float64)[g_idx, :]                  # [in, out]
    z_full = zeros[g_idx, :]
    q = np.clip(np.round(w.T / s_full) + z_full, 0, maxq).astype(np.int64)  # [in, out]
    return {"qweight": pack_stream(q, bits, 0), "qzeros": pack_stream(zeros - 1, bits, 1),
            "scales": scales, "g_idx": g_idx}


def self_test_linears(t):
    """Names of the linears the self-test packer quantizes: 2-D weights in decoder layers named *proj or w1/w2/w3
    (attention, dense MLP, per-expert MLP); routers, norms, embeddings and lm_head stay float."""
    return sorted(k[:-7] for k, v in t.items() if k.endswith(".weight") and v.dim() == 2 and ".layers." in k
                  and re.search(r"(proj|\.w[123])$", k[:-7]))


def make_self_test_checkpoint(orig_dir, out_dir, bits=4, gsz=32, desc_act=True, sym=False, dynamic=False, seed=3):
    import torch
    from safetensors.torch import save_file
    rng = np.random.default_rng(seed)
    t = read_tensors(orig_dir)
    names = self_test_linears(t)
    dynamic = self_test_dynamic(names) if dynamic else {}
    qcfg = {"quant_method": "gptq", "bits": bits, "group_size": gsz, "desc_act": desc_act, "sym": sym,
            "checkpoint_format": "gptq", "lm_head": False, "dynamic": dynamic,
            "meta": {"quantizer": ["gptq_check.py:self-test"]}}
    out = {}
    for k, v in t.items():
        m = k[:-7] if k.endswith(".weight") else None
        if m in names:
            quant, ov = module_override(qcfg, m)
            if quant:
                p = rtn_pack(to_np(v).astype(np.float64), int(ov.get("bits", bits)),
                             int(ov.get("group_size", gsz)), desc_act, sym, rng)
                for s, a in p.items():
                    out[f"{m}.{s}"] = torch.from_numpy(np.ascontiguousarray(a))
                continue
        out[k] = v.contiguous()
    os.makedirs(out_dir, exist_ok=True)
    save_file(out, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(orig_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = qcfg
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for f in os.listdir(orig_dir):
        if f.startswith("tokenizer") or f in ("special_tokens_map.json", "generation_config.json"):
            shutil.copy(os.path.join(orig_dir, f), out_dir)


def self_test(args):
    print("### bit-stream vectors\n")
    bad = 0
    for name, ok, det in bitstream_vectors():
        print(f"- {'ok ' if ok else 'FAIL'} {name} {det if not ok else ''}")
        bad += not ok
    if bad:
        return 1
    rc = 0
    base = tempfile.mkdtemp(prefix="gptq_selftest_")
    try:
        for tag, kw in (("sym-desc-dynamic", {"sym": True, "dynamic": True}), ("asym-desc", {"sym": False})):
            d = os.path.join(base, tag)
            make_self_test_checkpoint(args.orig, d, **kw)
            args.gptq = d
            rc |= check(args)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return rc


# ----------------------------------------------------------------------------------------------------------------
# GPTQModel reference checkpoint

def make_ref(args):
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")  # gptqmodel 7.7.0 refuses a 1-worker CPU pool (2 cores)
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig
    with open(args.calib, encoding="utf-8") as f:
        text = f.read()
    stories = [s.strip() for s in text.split("<|start_story|>") if s.strip()]
    calib = ["<|start_story|>" + s for s in stories[:args.calib_n]]
    dyn = json.loads(args.dynamic) if args.dynamic else None
    qc = QuantizeConfig(bits=args.bits, group_size=args.group_size, desc_act=args.desc_act, sym=not args.asym,
                        dynamic=dyn, offload_to_disk=False)
    torch.manual_seed(0)
    m = GPTQModel.load(args.orig, qc, dtype=torch.float32)
    m.quantize(calib, batch_size=1)
    m.save(args.out)
    with open(os.path.join(args.out, "config.json")) as f:
        q = json.load(f)["quantization_config"]
    print(json.dumps({k: v for k, v in q.items() if k != "meta"}, indent=1))
    print(f"versions: {versions()}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("orig", metavar="MODEL_ORIG", help="the float checkpoint the GPTQ one was made from")
    ap.add_argument("gptq", metavar="GPTQ_DIR", nargs="?", help="GPTQ checkpoint directory")
    ap.add_argument("--moetool", help="moetool binary (compares `moetool logits GPTQ_DIR`)")
    ap.add_argument("--text", default=DEFAULT_TEXT, help="evaluation text (default shared tinystories-calib.txt)")
    ap.add_argument("--ctx", type=int, default=128, help="tokens per chunk, BOS included")
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--tol", type=float, default=2e-4,
                    help="moetool vs deq: max |Δlogit| ≤ tol·max(1, max|logit|)")
    ap.add_argument("--kernel-tol", type=float, default=2e-3, help="the same for GPTQ-kernel rows")
    ap.add_argument("--min-top1", type=float, default=0.99, help="top-1 agreement of the exactness rows")
    ap.add_argument("--min-top1-orig", type=float, default=0.0, help="top-1 of deq vs original (sanity)")
    ap.add_argument("--skip-kernels", action="store_true", help="do not load GPTQ_DIR with transformers/gptqmodel")
    ap.add_argument("--allow-kernel-failure", action="store_true",
                    help="a GPTQ-kernel loader that fails to load is reported, not failed")
    ap.add_argument("--keep", action="store_true", help="keep temporary directories")
    ap.add_argument("--json", help="write the rows as JSON")
    ap.add_argument("--self-test", action="store_true", help="vectors + the built-in packer on MODEL_ORIG")
    ap.add_argument("--make-ref", metavar="OUT", help="quantize MODEL_ORIG with GPTQModel into OUT")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--desc-act", action="store_true")
    ap.add_argument("--asym", action="store_true")
    ap.add_argument("--dynamic", help="JSON dict of GPTQModel dynamic rules (make-ref)")
    ap.add_argument("--calib", default=DEFAULT_TEXT)
    ap.add_argument("--calib-n", type=int, default=48, help="calibration stories")
    args = ap.parse_args()
    if args.make_ref:
        args.out = args.make_ref
        return make_ref(args)
    if args.self_test:
        return self_test(args)
    if not args.gptq:
        ap.error("GPTQ_DIR is required")
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
