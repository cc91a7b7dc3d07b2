#!/usr/bin/env python3
"""tests/tools/ggml_quant_oracle.py — independent oracle for moetool's ggml block quantizers.

Generates seeded float32 rows with an integer LCG that tests/quant_blocks_test.cc reproduces
bit for bit, quantizes them with an implementation that is not moetool's, and prints what the C++
test hard-codes: the hex bytes of a short input and an FNV-1a-64 digest of a long one, per type.

Backends:
  numpy  the `gguf` package's gguf/quants.py (pip install gguf): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 —
         numpy ports that gguf-py documents as bit-exact with ggml's reference quantizers.
  ggml   the ggml library bundled by llama-cpp-python (pip install llama-cpp-python), through
         ctypes: ggml_quantize_chunk with no importance matrix = ggml's quantize_row_*_ref, for
         every type including Q4_K, Q5_K and Q6_K.

Usage: python3 tests/tools/ggml_quant_oracle.py [--backend numpy|ggml|both]
"""
import argparse
import ctypes
import glob
import os
import sys

import numpy as np

MASK64 = (1 << 64) - 1

# (name, ggml type id, block size, bytes per block)
TYPES = {
    "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24),
    "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176), "Q6_K": (14, 256, 210),
}


def lcg_rows(seed: int, rows: int, cols: int) -> np.ndarray:
    """Row r, column c: a sum of four 24-bit LCG draws, centred, times a per-row scale.

    state ← state·6364136223846793005 + 1442695040888963407 (mod 2^64); u = state >> 40.
    x = (float32(u1+u2+u3+u4) · 2^-24 − 2) · scale_r, scale_r = float32(0.37) · 2^((r % 7) − 3),
    all in float32 with round-to-nearest-even (what the C++ test computes).
    """
    state = seed & MASK64
    out = np.empty((rows, cols), dtype=np.float32)
    for r in range(rows):
        scale = np.float32(np.float32(0.37) * np.float32(2.0 ** ((r % 7) - 3)))
        vals = []
        for _ in range(cols):
            s = 0
            for _ in range(4):
                state = (state * 6364136223846793005 + 1442695040888963407) & MASK64
                s += state >> 40
            vals.append(s)
        f = np.array(vals, dtype=np.int64).astype(np.float32)
        f = (f * np.float32(2.0 ** -24) - np.float32(2.0)).astype(np.float32)
        out[r] = (f * scale).astype(np.float32)
    return out


def fnv1a64(b: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in b:
        h ^= byte
        h = (h * 0x100000001B3) & MASK64
    return h


def numpy_quantize(name: str, x: np.ndarray) -> bytes:
    from gguf import quants
    from gguf.constants import GGMLQuantizationType
    q = quants.quantize(x, GGMLQuantizationType[name])
    return q.tobytes()


_ggml = None


def ggml_lib():
    global _ggml
    if _ggml is None:
        import llama_cpp  # noqa: F401  (locates the bundled libraries)
        libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
        cands = sorted(glob.glob(os.path.join(libdir, "libggml-base.so*"))) + \
            sorted(glob.glob(os.path.join(libdir, "libggml.so*")))
        if not cands:
            raise RuntimeError(f"no libggml in {libdir}")
        lib = ctypes.CDLL(cands[0])
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        if hasattr(lib, "ggml_quantize_init"):
            lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        _ggml = lib
    return _ggml


def ggml_quantize(name: str, x: np.ndarray) -> bytes:
    tid, bs, tsz = TYPES[name]
    lib = ggml_lib()
    if hasattr(lib, "ggml_quantize_init"):
        lib.ggml_quantize_init(tid)
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, cols = x.shape
    out = np.zeros(rows * cols // bs * tsz, dtype=np.uint8)
    n = lib.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, rows, cols, None)
    assert n == out.size, (n, out.size)
    return out.tobytes()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["numpy", "ggml", "both"], default="numpy")
    args = ap.parse_args()
    backends = ["numpy", "ggml"] if args.backend == "both" else [args.backend]
    small = lcg_rows(1, 2, 64)      # hex-coded in full (32-blocks) ...
    small_k = lcg_rows(2, 1, 256)   # ... and one super-block for K-quants
    big = lcg_rows(3, 64, 512)      # digest only
    print(f"input small[0][:4] = {small[0][:4].tolist()} big digest of f32 = {fnv1a64(big.tobytes()):016x}")
    results = {}
    for be in backends:
        for name in TYPES:
            if be == "numpy" and name not in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
                continue
            fn = numpy_quantize if be == "numpy" else ggml_quantize
            s = fn(name, small_k if TYPES[name][1] == 256 else small)
            b = fn(name, big)
            results.setdefault(name, {})[be] = (s.hex(), fnv1a64(b))
            print(f"{be:5s} {name}: small = {s.hex()}")
            print(f"{be:5s} {name}: big fnv1a64 = 0x{fnv1a64(b):016x}")
    if len(backends) == 2:
        for name, r in results.items():
            if len(r) == 2 and r["numpy"] != r["ggml"]:
                print(f"MISMATCH between backends for {name}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
