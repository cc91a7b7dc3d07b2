#!/usr/bin/env python3
"""tests/tools/ggml_imatrix_oracle.py — oracle for moetool's importance-weighted (imatrix) ggml
quantizers: ggml itself (the libggml-base bundled by llama-cpp-python, through ctypes), i.e.
ggml_quantize_chunk with a quant_weights vector = ggml's quantize_row_*_impl.

Input: the rows of ggml_quant_oracle.py's lcg_rows(3, 64, 512); importance: a = 8·lcg_rows(5, 1, 512)[0],
imp = a·a·a·a (float32, products only), a heavy-tailed vector spanning several orders of magnitude.
Prints, per type, the FNV-1a-64 digest of the quantized bytes and the first 32 bytes in hex, which
tests/quant_imatrix_test.cc hard-codes.

Usage: python3 tests/tools/ggml_imatrix_oracle.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ggml_quant_oracle import TYPES, fnv1a64, ggml_lib, lcg_rows  # noqa: E402


def importance(cols: int) -> np.ndarray:
    a = (lcg_rows(5, 1, cols)[0] * np.float32(8)).astype(np.float32)
    return (((a * a).astype(np.float32) * a).astype(np.float32) * a).astype(np.float32)


def ggml_quantize_imatrix(name: str, x: np.ndarray, imp: np.ndarray) -> bytes:
    tid, bs, tsz = TYPES[name]
    lib = ggml_lib()
    if hasattr(lib, "ggml_quantize_init"):
        lib.ggml_quantize_init(tid)
    x = np.ascontiguousarray(x, dtype=np.float32)
    imp = np.ascontiguousarray(imp, dtype=np.float32)
    rows, cols = x.shape
    out = np.zeros(rows * cols // bs * tsz, dtype=np.uint8)
    n = lib.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, rows, cols, imp.ctypes.data)
    assert n == out.size, (n, out.size)
    return out.tobytes()


def main() -> int:
    x = lcg_rows(3, 64, 512)
    imp = importance(512)
    print(f"importance digest = 0x{fnv1a64(imp.tobytes()):016x} min {imp.min():.3g} max {imp.max():.3g}")
    for name in TYPES:
        b = ggml_quantize_imatrix(name, x, imp)
        print(f"{name}: fnv1a64 = 0x{fnv1a64(b):016x} head = {b[:32].hex()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
