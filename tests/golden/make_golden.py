#!/usr/bin/env python3
# tests/golden/make_golden.py — golden references from Hugging Face transformers itself (issue 7):
# tiny random models of every family moetool supports, built with transformers' own config classes,
# saved with save_pretrained (safetensors, float32) under tests/data/golden/<name>/ together with the
# logits transformers computes for fixed token sequences; and the token ids Hugging Face gives for the
# TinyStories tokenizer on fixed strings (tests/data/golden/tinystories_tokenizer.json).
# tests/golden_test.cc compares moetool with these files in CI, without Python.
#
# Regenerate (CPU is enough; see tests/data/golden/README.md):
#
#   python3 -m venv /tmp/golden-venv
#   /tmp/golden-venv/bin/pip install -r <(sed -n 's/^#   req: //p' tests/golden/make_golden.py)
#   /tmp/golden-venv/bin/python tests/golden/make_golden.py [--shared ../shared] [--out tests/data/golden]
#
# Pinned versions (the assertions below refuse others: regenerated files must say which
# transformers produced them):
#   req: torch==2.15.0
#   req: transformers==5.23.0
#   req: safetensors==0.8.0
#   req: tokenizers==0.23.3
#   req: numpy==2.4.6
#   req: accelerate==1.16.0
# (accelerate: transformers refuses to load FP8 checkpoints without it, also on the CPU.)
import argparse
import hashlib
import json
import math
import os
import shutil
import sys

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from safetensors.numpy import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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


SEQ_LEN = 20
N_SEQ = 2
MIN_MARGIN = 1e-3  # routing / top-1 margins below this could flip under float32 rounding differences

# ---------------------------------------------------------------------------------------------------
# The models. Each entry: name, model_type, config kwargs (transformers' config class), what it exercises.
# rope_parameters is transformers v5's spelling (rope_theta inside); save_pretrained writes it as such.


def rope(theta, **kw):
    return {"rope_theta": theta, "rope_type": kw.pop("rope_type", "default"), **kw}


COMMON = dict(max_position_embeddings=128, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)

VARIANTS = [
    dict(
        name="llama_gqa_bias_llama3",
        model_type="llama",
        exercises="GQA (4 q heads / 2 kv heads), attention_bias (q/k/v/o biases), mlp_bias, llama3 RoPE scaling "
        "(factor 8, low 1, high 4, original_max_position_embeddings 32: scaled, smoothed and unscaled bands)",
        config=dict(vocab_size=192, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                    rms_norm_eps=1e-6,
                    rope_parameters=rope(10000.0, rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0, original_max_position_embeddings=32)),
    ),
    dict(
        name="llama_linear_tied_headdim",
        model_type="llama",
        exercises="MHA, linear RoPE scaling (factor 2.5), tied embeddings, explicit head_dim 12 (heads*head_dim "
        "48 != hidden 32), rms_norm_eps 1e-5",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, head_dim=12, rms_norm_eps=1e-5,
                    tie_word_embeddings=True,
                    rope_parameters=rope(10000.0, rope_type="linear", factor=2.5)),
    ),
    dict(
        name="mistral_sliding_mqa",
        model_type="mistral",
        exercises="sliding_window 6 < sequence length 20 (every layer), MQA (1 kv head), head_dim 16 with "
        "hidden 48, rope_theta 1e6",
        config=dict(vocab_size=160, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=6,
                    rope_parameters=rope(1000000.0)),
    ),
    dict(
        name="qwen2_sliding_yarn",
        model_type="qwen2",
        exercises="q/k/v biases, GQA (6/2), use_sliding_window with sliding_window 5 and max_window_layers 1 "
        "(layers 1-2 slide, layer 0 full), yarn RoPE (factor 4, original_max_position_embeddings 32)",
        config=dict(vocab_size=160, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                    num_attention_heads=6, num_key_value_heads=2, use_sliding_window=True, sliding_window=5,
                    max_window_layers=1,
                    rope_parameters=rope(10000.0, rope_type="yarn", factor=4.0,
                                         original_max_position_embeddings=32)),
    ),
    dict(
        name="qwen3_tied_bias",
        model_type="qwen3",
        exercises="per-head q/k RMSNorm, head_dim 16 (heads*head_dim 64 != hidden 32), GQA (4/2), "
        "attention_bias (q/k/v/o biases), tied embeddings",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, attention_bias=True,
                    tie_word_embeddings=True, rope_parameters=rope(1000000.0)),
    ),
    dict(
        name="mixtral_top2",
        model_type="mixtral",
        exercises="8 experts top-2 softmax routing (always renormalised), GQA (4/2), no sliding window",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
                    sliding_window=None, rms_norm_eps=1e-5, rope_parameters=rope(1000000.0)),
    ),
    dict(
        name="mixtral_sliding_top3",
        model_type="mixtral",
        exercises="6 experts top-3, sliding_window 7 < sequence length, MQA",
        config=dict(vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, num_local_experts=6, num_experts_per_tok=3,
                    sliding_window=7, rms_norm_eps=1e-5, rope_parameters=rope(1000000.0)),
    ),
    dict(
        name="qwen2_moe_shared_mlponly",
        model_type="qwen2_moe",
        exercises="gated shared expert (width 48), norm_topk_prob false, 8 experts top-2, mlp_only_layers [1] "
        "(layer 1 a dense FFN of intermediate_size 64), q/k/v biases, GQA",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, num_experts=8, num_experts_per_tok=2,
                    moe_intermediate_size=16, shared_expert_intermediate_size=48, norm_topk_prob=False,
                    decoder_sparse_step=1, mlp_only_layers=[1], rope_parameters=rope(10000.0)),
    ),
    dict(
        name="qwen2_moe_sparse_step_norm",
        model_type="qwen2_moe",
        exercises="decoder_sparse_step 2 (only layer 1 MoE; layers 0 and 2 dense), norm_topk_prob true, "
        "qkv_bias false, use_sliding_window (window 4, max_window_layers 3: layers 0 and 2 slide), shared expert",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=4, num_experts=6, num_experts_per_tok=2,
                    moe_intermediate_size=16, shared_expert_intermediate_size=32, norm_topk_prob=True,
                    decoder_sparse_step=2, qkv_bias=False, use_sliding_window=True, sliding_window=4,
                    max_window_layers=3, rope_parameters=rope(10000.0)),
    ),
    dict(
        name="qwen3_moe_norm",
        model_type="qwen3_moe",
        exercises="norm_topk_prob true, 8 experts top-2, per-head q/k norms, head_dim 16 with hidden 32, GQA",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8,
                    num_experts_per_tok=2, moe_intermediate_size=16, norm_topk_prob=True,
                    rope_parameters=rope(1000000.0)),
    ),
    dict(
        name="qwen3_moe_nonorm_mlponly_sliding",
        model_type="qwen3_moe",
        exercises="norm_topk_prob false, 6 experts top-3, mlp_only_layers [0] (layer 0 dense), "
        "use_sliding_window (window 7, every layer), attention_bias",
        config=dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=6,
                    num_experts_per_tok=3, moe_intermediate_size=16, norm_topk_prob=False, mlp_only_layers=[0],
                    use_sliding_window=True, sliding_window=7, attention_bias=True,
                    rope_parameters=rope(1000000.0)),
    ),
    dict(
        name="olmoe_clip",
        model_type="olmoe",
        exercises="clip_qkv 1.0 (about half of the q/k/v values clamped), full-width q/k RMSNorm, "
        "norm_topk_prob false, 8 experts top-2",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, num_experts=8, num_experts_per_tok=2,
                    clip_qkv=1.0, norm_topk_prob=False, rope_parameters=rope(10000.0)),
    ),
    dict(
        name="olmoe_bias_norm_gqa",
        model_type="olmoe",
        exercises="norm_topk_prob true, attention_bias (q/k/v/o biases), GQA (4/2: k_norm over kv width), "
        "6 experts top-3, no clip",
        config=dict(vocab_size=128, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, num_experts=6, num_experts_per_tok=3,
                    norm_topk_prob=True, attention_bias=True, rope_parameters=rope(10000.0)),
    ),
    dict(
        name="deepseek_v3_yarn_groups",
        model_type="deepseek_v3",
        exercises="MLA with q LoRA (q_lora_rank 16, kv_lora_rank 16, nope 8 / rope 8 / v 8), interleaved rope, "
        "yarn RoPE (factor 4, mscale 0.8, mscale_all_dim 1.0: cos/sin and softmax scale), sigmoid routing with "
        "random e_score_correction_bias, group-limited top-k (n_group 4, topk_group 2, top-3 of 8), "
        "norm_topk_prob true, routed_scaling_factor 2.5, 2 shared experts, first_k_dense_replace 1",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=16,
                    qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8,
                    num_experts_per_tok=3, n_group=4, topk_group=2, moe_intermediate_size=16,
                    n_shared_experts=2, first_k_dense_replace=1, norm_topk_prob=True,
                    routed_scaling_factor=2.5, rope_interleave=True,
                    rope_parameters=rope(10000.0, rope_type="yarn", factor=4.0,
                                         original_max_position_embeddings=32, beta_fast=32.0, beta_slow=1.0,
                                         mscale=0.8, mscale_all_dim=1.0)),
    ),
    dict(
        name="deepseek_v3_plainq_nonorm",
        model_type="deepseek_v3",
        exercises="MLA with a plain q_proj (q_lora_rank null), rope_interleave false, no RoPE scaling, "
        "norm_topk_prob false, routed_scaling_factor 1.5, group-limited top-2 (n_group 2 of 4 experts each, "
        "topk_group 1: the per-group top-2 sum decides), 1 shared expert, first_k_dense_replace 0 (all MoE)",
        config=dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=16,
                    qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=8,
                    num_experts_per_tok=2, n_group=2, topk_group=1, moe_intermediate_size=16,
                    n_shared_experts=1, first_k_dense_replace=0, norm_topk_prob=False,
                    routed_scaling_factor=1.5, rope_interleave=False, rope_parameters=rope(10000.0)),
    ),
]

# Block-FP8 checkpoints in the layout of Qwen3's / DeepSeek-V3's FP8 releases, quantized by transformers' own
# FP8 quantizer (Fp8Quantize) and run by transformers' CPU FP8 loader (dequantize=True); the float32 source
# is kept beside them (f32/) so tests can check moetool's quantizer gives the same bytes.
FP8_VARIANTS = [
    dict(
        name="qwen3_moe_fp8_block",
        model_type="qwen3_moe",
        fp8_block=[16, 16],
        exercises="block FP8 (F8_E4M3 weights, weight_scale_inv per 16x16 block, quant_method fp8, routers and "
        "lm_head in modules_to_not_convert) as transformers quantizes and dequantizes it; 8 experts top-2",
        config=dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8,
                    num_experts_per_tok=2, moe_intermediate_size=16, norm_topk_prob=True,
                    rope_parameters=rope(1000000.0)),
    ),
]

# ---------------------------------------------------------------------------------------------------


def seed_of(name, attempt):
    return int(hashlib.sha256(f"{name}/{attempt}".encode()).hexdigest()[:8], 16)


@torch.no_grad()
def init_weights(model, gen):
    """Non-degenerate random weights: linear N(0, 0.25/sqrt(in/32)), router N(0, 0.6), embeddings N(0, 0.8),
    norms 1 + N(0, 0.1), biases N(0, 0.1), deepseek correction bias N(0, 0.05)."""
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        elif p.dim() == 1:  # RMSNorm weights
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        elif name.endswith("mlp.gate.weight"):  # routers
            p.copy_(0.6 * torch.randn(p.shape, generator=gen))
        elif "embed_tokens" in name:
            p.copy_(0.8 * torch.randn(p.shape, generator=gen))
        else:  # linear weights [out, in], fused experts [E, out, in]
            fan_in = p.shape[-1]
            p.copy_((0.25 / math.sqrt(fan_in / 32.0)) * torch.randn(p.shape, generator=gen))
    for name, b in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            b.copy_(0.05 * torch.randn(b.shape, generator=gen))


class RouterProbe:
    """Captures every router's input to measure how far routing decisions are from ties."""

    def __init__(self, model):
        self.inputs = []
        self.handles = []
        for name, m in model.named_modules():
            if type(m).__name__.lower().endswith("topkrouter"):
                self.handles.append(m.register_forward_pre_hook(self._hook(name, m)))

    def _hook(self, name, m):
        def f(_mod, args):
            self.inputs.append((name, m, args[0].detach().reshape(-1, args[0].shape[-1]).clone()))
        return f

    def close(self):
        for h in self.handles:
            h.remove()

    @torch.no_grad()
    def margins(self):
        """Smallest gap between the k-th and (k+1)-th candidate over all tokens and routers. "expert": in
        router logits (= log-probability gap; softmax is monotone, so this is what decides torch.topk and is
        scale-free), "expert_prob": the same gap in softmax probabilities; deepseek: in the sigmoid + bias
        scores torch.topk compares, and "group" at the topk_group boundary of the group scores."""
        out = {"expert": math.inf, "expert_prob": math.inf, "group": None}
        for _name, m, x in self.inputs:
            logits = torch.nn.functional.linear(x.float(), m.weight.float())
            k = m.top_k
            if hasattr(m, "e_score_correction_bias"):
                s = logits.sigmoid() + m.e_score_correction_bias
                E, G = s.shape[-1], m.num_group
                gs = s.view(-1, G, E // G).topk(2, dim=-1)[0].sum(-1)
                srt = gs.sort(dim=-1, descending=True)[0]
                gm = (srt[:, m.topk_group - 1] - srt[:, m.topk_group]).min().item()
                out["group"] = gm if out["group"] is None else min(out["group"], gm)
                gidx = gs.topk(m.topk_group, dim=-1)[1]
                mask = torch.zeros_like(gs).scatter_(1, gidx, 1).bool()
                mask = mask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
                cands = [s.masked_fill(~mask, -math.inf)]
            else:
                cands = [logits, logits.softmax(-1)]
            for key, c in zip(("expert", "expert_prob"), cands):
                srt = c.sort(dim=-1, descending=True)[0]
                kth, nxt = srt[:, k - 1], srt[:, k]
                gap = torch.where(torch.isinf(nxt), torch.full_like(kth, math.inf), kth - nxt)
                out[key] = min(out[key], gap.min().item())
        for key in ("expert", "expert_prob"):
            if out[key] == math.inf:
                out[key] = None
        return out


def config_highlights(cfg):
    d = cfg.to_dict()
    keys = ["model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "attention_bias", "mlp_bias", "qkv_bias",
            "tie_word_embeddings", "sliding_window", "use_sliding_window", "max_window_layers", "layer_types",
            "rope_parameters", "num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok",
            "moe_intermediate_size", "shared_expert_intermediate_size", "n_shared_experts", "norm_topk_prob",
            "decoder_sparse_step", "mlp_only_layers", "clip_qkv", "n_group", "topk_group",
            "first_k_dense_replace", "routed_scaling_factor", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
            "qk_rope_head_dim", "v_head_dim", "rope_interleave", "rms_norm_eps"]
    return {k: d[k] for k in keys if k in d}


@torch.no_grad()
def build_one(v, out_root, versions):
    name = v["name"]
    cfg_cls = AutoConfig.for_model(v["model_type"]).__class__
    for attempt in range(20):
        seed = seed_of(name, attempt)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        cfg = cfg_cls(**{**COMMON, **v["config"]})
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        init_weights(model, gen)
        tgen = torch.Generator().manual_seed(seed ^ 0x5EED)
        tokens = torch.randint(0, cfg.vocab_size, (N_SEQ, SEQ_LEN), generator=tgen)

        probe = RouterProbe(model)
        logits = torch.stack([model(input_ids=tokens[i:i + 1]).logits[0] for i in range(N_SEQ)])
        margins = probe.margins()
        probe.close()
        top2 = logits.topk(2, dim=-1)[0]
        top1_margin = (top2[..., 0] - top2[..., 1]).min().item()
        small = [m for m in (margins["expert"], margins["group"], top1_margin) if m is not None and m < MIN_MARGIN]
        if small:
            print(f"  {name}: seed attempt {attempt} has a margin < {MIN_MARGIN} ({margins}, top1 {top1_margin}); "
                  "re-seeding", flush=True)
            continue
        break
    else:
        raise SystemExit(f"{name}: no seed without near-ties")

    d = os.path.join(out_root, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    model.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):  # moetool does not need it; keep the fixtures minimal
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)

    # The saved checkpoint, loaded back by transformers, must give the same logits (proves the files, not
    # just the in-memory model, are what the logits belong to).
    reloaded = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
    relogits = torch.stack([reloaded(input_ids=tokens[i:i + 1]).logits[0] for i in range(N_SEQ)])
    reload_diff = (relogits - logits).abs().max().item()
    assert reload_diff == 0.0, f"{name}: reloaded model differs by {reload_diff}"

    # Clipping share (olmoe): how much clip_qkv actually bites.
    clip_share = None
    if getattr(cfg, "clip_qkv", None):
        vals = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: vals.append(o.detach().abs().flatten()))
                 for n, m in model.named_modules() if n.endswith(("q_proj", "k_proj", "v_proj"))]
        model(input_ids=tokens[:1])
        for h in hooks:
            h.remove()
        allv = torch.cat(vals)
        clip_share = float((allv > cfg.clip_qkv).float().mean())

    np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))
    with open(os.path.join(d, "tokens.json"), "w") as f:
        json.dump(tokens.tolist(), f)
    st = load_file(os.path.join(d, "model.safetensors"))
    fused = any(k.endswith("gate_up_proj") for k in st)
    per_expert = any(".experts.0." in k for k in st)
    layout = "fused" if fused else ("per-expert" if per_expert else "dense")
    meta = {
        "name": name,
        "model_type": v["model_type"],
        "exercises": v["exercises"],
        "versions": versions,
        "seed": seed,
        "seed_attempt": attempt,
        "init": init_weights.__doc__.strip(),
        "attn_implementation": "eager",
        "dtype": "float32",
        "logits_shape": list(logits.shape),
        "min_router_topk_margin": margins["expert"],
        "min_router_topk_margin_prob": margins["expert_prob"],
        "min_group_topk_margin": margins["group"],
        "min_top1_logit_margin": top1_margin,
        "clip_qkv_share_clamped": clip_share,
        "expert_layout_on_disk": layout,
        "n_params": sum(p.numel() for p in model.parameters()),
        "safetensors_bytes": os.path.getsize(os.path.join(d, "model.safetensors")),
        "config": config_highlights(cfg),
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"  {name}: seed {seed} (attempt {attempt}), {meta['n_params']} params, {meta['safetensors_bytes']} bytes, "
          f"{layout} experts, router margin {margins['expert']}, group margin {margins['group']}, "
          f"top-1 margin {top1_margin:.4g}" + (f", clip share {clip_share:.2f}" if clip_share is not None else ""),
          flush=True)
    return meta


def fp8_convertible(key, t):
    """The linears an FP8 release stores in FP8: every 2-D projection, not embeddings, lm_head or routers."""
    return (key.endswith(".weight") and t.dim() == 2 and "embed_tokens" not in key and not key.startswith("lm_head")
            and not key.endswith("mlp.gate.weight"))


@torch.no_grad()
def build_fp8(v, out_root, versions):
    """A float32 model saved (f32/), its linears quantized by transformers' Fp8Quantize into the FP8 checkpoint,
    and the logits transformers computes when it loads that checkpoint (FP8 dequantized on the CPU)."""
    from safetensors.torch import load_file as load_torch, save_file
    from types import SimpleNamespace
    from transformers import FineGrainedFP8Config
    from transformers.integrations.finegrained_fp8 import Fp8Quantize

    name = v["name"]
    d = os.path.join(out_root, name)
    cfg_cls = AutoConfig.for_model(v["model_type"]).__class__
    for attempt in range(20):
        seed = seed_of(name, attempt)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        cfg = cfg_cls(**{**COMMON, **v["config"]})
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        init_weights(model, gen)
        if os.path.exists(d):
            shutil.rmtree(d)
        src = os.path.join(d, "f32")
        model.save_pretrained(src, safe_serialization=True)
        os.remove(os.path.join(src, "generation_config.json"))
        f32 = load_torch(os.path.join(src, "model.safetensors"))
        not_convert = sorted(k[:-len(".weight")] for k, t in f32.items()
                             if k.endswith(".weight") and t.dim() == 2 and not fp8_convertible(k, t)
                             and "embed_tokens" not in k)
        qc = FineGrainedFP8Config(weight_block_size=tuple(v["fp8_block"]), modules_to_not_convert=not_convert)
        op = Fp8Quantize(SimpleNamespace(quantization_config=qc))
        out = {}
        for k, t in f32.items():
            out.update(op._quantize_one(k, t) if fp8_convertible(k, t) else {k: t})
        assert sum(t.dtype == torch.float8_e4m3fn for t in out.values()) > 0
        save_file(out, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(src, "config.json")) as f:
            cj = json.load(f)
        cj["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": v["fp8_block"], "modules_to_not_convert": not_convert}
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cj, f, indent=2)
            f.write("\n")
        fp8 = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
        tgen = torch.Generator().manual_seed(seed ^ 0x5EED)
        tokens = torch.randint(0, cfg.vocab_size, (N_SEQ, SEQ_LEN), generator=tgen)
        probe = RouterProbe(fp8)
        logits = torch.stack([fp8(input_ids=tokens[i:i + 1]).logits[0] for i in range(N_SEQ)])
        margins = probe.margins()
        probe.close()
        top2 = logits.topk(2, dim=-1)[0]
        top1_margin = (top2[..., 0] - top2[..., 1]).min().item()
        # The loader really dequantized: its weights differ from the float32 ones, by FP8's rounding only.
        w8 = dict(fp8.named_parameters())
        k0 = next(k for k in w8 if k.endswith("self_attn.q_proj.weight"))
        dq = (w8[k0] - model.get_parameter(k0)).abs().max().item()
        assert 0 < dq < 0.1 * model.get_parameter(k0).abs().max().item(), f"{name}: q_proj dequantized by {dq}"
        small = [m for m in (margins["expert"], top1_margin) if m is not None and m < MIN_MARGIN]
        if not small:
            break
        print(f"  {name}: seed attempt {attempt} has a margin < {MIN_MARGIN}; re-seeding", flush=True)
    else:
        raise SystemExit(f"{name}: no seed without near-ties")
    np.save(os.path.join(d, "logits.npy"), logits.numpy().astype(np.float32))
    with open(os.path.join(d, "tokens.json"), "w") as f:
        json.dump(tokens.tolist(), f)
    meta = {
        "name": name, "model_type": v["model_type"], "exercises": v["exercises"], "versions": versions,
        "seed": seed, "seed_attempt": attempt, "init": init_weights.__doc__.strip(),
        "attn_implementation": "eager", "dtype": "float32 (FP8 weights dequantized by transformers on the CPU)",
        "fp8_block": v["fp8_block"], "quantizer": "transformers.integrations.finegrained_fp8.Fp8Quantize",
        "fp8_tensors": sum(t.dtype == torch.float8_e4m3fn for t in out.values()),
        "modules_to_not_convert": not_convert, "logits_shape": list(logits.shape),
        "min_router_topk_margin": margins["expert"], "min_top1_logit_margin": top1_margin,
        "max_abs_dequantized_minus_f32_q_proj0": dq,
        "expert_layout_on_disk": "per-expert",
        "safetensors_bytes": os.path.getsize(os.path.join(d, "model.safetensors")),
        "config": config_highlights(cfg),
    }
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"  {name}: seed {seed} (attempt {attempt}), {meta['fp8_tensors']} FP8 tensors, "
          f"{meta['safetensors_bytes']} bytes, router margin {margins['expert']}, top-1 margin {top1_margin:.4g}",
          flush=True)
    return meta


# ---------------------------------------------------------------------------------------------------
# Tokenizer golden ids.

TOKENIZER_STRINGS = [
    "Once upon a time, there was a little girl named Lily.",
    "Hello world",
    "  two  spaces  between   words ",
    " leading space",
    "trailing space ",
    "<|start_story|>Once upon a time",
    "She said hi.<|end_story|><|start_story|>He said bye.",
    "a<|start_story|>b",
    "x <|start_story|> y",
    "line one\nline two\n\nline four\n",
    "price: 5€ or £3",
    "emoji 😀 and 🐶!",
    "日本語のテキスト",
    "héllo wörld — naïve café",
    "\t tab and\r\nCRLF",
    "<unk> literal and <|end_story|>",
    "The cat's toy wasn't there... \"Why?\" asked Tom.",
    " ",
    "",
]


def make_tokenizer_golden(shared, out_root, versions):
    d = os.path.join(shared, "models", "tinystories-656k")
    raw = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(d)
    cases = []
    n_auto_diff = 0
    for s in TOKENIZER_STRINGS:
        c = {"text": s}
        for add in (True, False):
            key = "with_special" if add else "without_special"
            ids = raw.encode(s, add_special_tokens=add).ids
            a = auto(s, add_special_tokens=add)["input_ids"]
            c[key] = ids
            c["auto_" + key] = a
            n_auto_diff += ids != a
        cases.append(c)
    out = {
        "source": "tinystories-656k tokenizer.json + tokenizer_config.json from ../shared (not copied here)",
        "versions": versions,
        "with_special / without_special": "tokenizers.Tokenizer.from_file(tokenizer.json).encode(text, "
        "add_special_tokens=...).ids — the semantics of the tokenizer.json file (what moetool implements)",
        "auto_with_special / auto_without_special": "transformers.AutoTokenizer.from_pretrained(dir)(text, "
        "add_special_tokens=...)['input_ids'] — transformers " + versions["transformers"] + " rebuilds this "
        "tokenizer as its LlamaTokenizer class (tokenizer_class LlamaTokenizer, legacy false): Metaspace "
        "pre-tokenizer with prepend_scheme 'first' instead of the file's Prepend/Replace normalizer, and no "
        "unk token (unknown characters vanish). Recorded for information; differs from the file's semantics.",
        "auto_tokenizer_class": type(auto).__name__,
        "n_auto_differences": int(n_auto_diff),
        "cases": cases,
    }
    path = os.path.join(out_root, "tinystories_tokenizer.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"  tokenizer: {len(cases)} strings, AutoTokenizer differs from tokenizer.json semantics in "
          f"{n_auto_diff} of {2 * len(cases)} encodings", flush=True)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.abspath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(repo, "tests", "data", "golden"))
    ap.add_argument("--shared", default=os.environ.get("MOETOOL_SHARED", os.path.join(repo, "..", "shared")))
    ap.add_argument("--only", nargs="*", help="model names to regenerate (default: all, and the tokenizer)")
    args = ap.parse_args()
    versions = check_versions()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    summary = []
    for v in VARIANTS:
        if args.only and v["name"] not in args.only:
            continue
        summary.append(build_one(v, args.out, versions))
    for v in FP8_VARIANTS:
        if args.only and v["name"] not in args.only:
            continue
        summary.append(build_fp8(v, args.out, versions))
    if not args.only:
        make_tokenizer_golden(args.shared, args.out, versions)
    total = 0
    for root, _dirs, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"total size of {args.out}: {total} bytes")


if __name__ == "__main__":
    main()
