#!/usr/bin/python3
"""Optional self-check of gguf_ref.py against a llama.cpp/ggml build (NOT needed to use the
reference; moed's own code is not involved).  Uses ctypes on libggml-base / libggml-cpu:

  * ggml_quantize_chunk makes blocks of every weight type from random data; ggml's to_float and
    gguf_ref.dequant_blocks must agree (ggml dequantizes in float32, so up to float32 rounding);
  * the CPU backend's from_float for each vec_dot_type (Q8_0, Q8_1, Q8_K, F16, BF16) is compared
    with gguf_ref's activation-quantization emulation;
  * ggml's vec_dot (weight row x quantized activations) is compared with Weight.matmul.

  /usr/bin/python3 tests/ref/crosscheck_ggml.py [--lib-dir /work/llamacpp/build/bin]
"""

import argparse
import ctypes as C
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_ref as R  # noqa: E402


class TypeTraits(C.Structure):
    _fields_ = [("type_name", C.c_char_p), ("blck_size", C.c_int64), ("blck_size_interleave", C.c_int64),
                ("type_size", C.c_size_t), ("is_quantized", C.c_bool), ("to_float", C.c_void_p),
                ("from_float_ref", C.c_void_p)]


class TypeTraitsCPU(C.Structure):
    _fields_ = [("from_float", C.c_void_p), ("vec_dot", C.c_void_p), ("vec_dot_type", C.c_int),
                ("nrows", C.c_int64)]


TO_FLOAT = C.CFUNCTYPE(None, C.c_void_p, C.POINTER(C.c_float), C.c_int64)
FROM_FLOAT = C.CFUNCTYPE(None, C.POINTER(C.c_float), C.c_void_p, C.c_int64)
VEC_DOT = C.CFUNCTYPE(None, C.c_int, C.POINTER(C.c_float), C.c_size_t, C.c_void_p, C.c_size_t,
                      C.c_void_p, C.c_size_t, C.c_int)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib-dir", default=os.environ.get("GGML_LIB_DIR", "/work/llamacpp/build/bin"))
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    base = C.CDLL(os.path.join(a.lib_dir, "libggml-base.so"), mode=C.RTLD_GLOBAL)
    cpu = C.CDLL(os.path.join(a.lib_dir, "libggml-cpu.so"), mode=C.RTLD_GLOBAL)
    base.ggml_get_type_traits.restype = C.POINTER(TypeTraits)
    base.ggml_get_type_traits.argtypes = [C.c_int]
    cpu.ggml_get_type_traits_cpu.restype = C.POINTER(TypeTraitsCPU)
    cpu.ggml_get_type_traits_cpu.argtypes = [C.c_int]
    base.ggml_quantize_chunk.restype = C.c_size_t
    base.ggml_quantize_chunk.argtypes = [C.c_int, C.c_void_p, C.c_void_p, C.c_int64, C.c_int64, C.c_int64,
                                         C.c_void_p]
    cpu.ggml_cpu_init()

    rng = np.random.default_rng(a.seed)
    nr, nc = a.rows, a.cols
    fails = 0

    def to_float(tid, raw, n):
        tr = base.ggml_get_type_traits(tid).contents
        out = np.empty(n, dtype=np.float32)
        TO_FLOAT(tr.to_float)(raw.ctypes.data, out.ctypes.data_as(C.POINTER(C.c_float)), n)
        return out

    def from_float_cpu(tid, x32):
        tr = cpu.ggml_get_type_traits_cpu(tid).contents
        _, bs, ts = R.GGML_TYPES[tid]
        out = np.zeros(x32.size // bs * ts, dtype=np.uint8)
        FROM_FLOAT(tr.from_float)(x32.ctypes.data_as(C.POINTER(C.c_float)), out.ctypes.data, x32.size)
        return out

    # activations: a mix of scales, some exact zeros, some blocks all zero
    X = (rng.standard_normal((4, nc)) * np.array([[1.0], [0.01], [30.0], [1.0]])).astype(np.float32)
    X[3, :256] = 0
    X[3, 300] = 0.5
    X = X.astype(np.float64)

    # --- activation quantization: ggml CPU from_float vs emulation
    for vname in ("Q8_0", "Q8_1", "Q8_K"):
        tid = R.TYPE_ID[vname]
        nbad = 0
        for r in range(X.shape[0]):
            raw = from_float_cpu(tid, X[r].astype(np.float32))
            theirs = R.dequant_blocks(raw, tid).reshape(-1)
            if vname == "Q8_0":
                mine = R.quant_q8_0(X[r:r + 1])[0][0]
            elif vname == "Q8_1":
                mine, s16 = R.quant_q8_1(X[r:r + 1])
                mine = mine[0]
                b = raw.reshape(-1, 36)
                s_theirs = np.ascontiguousarray(b[:, 2:4]).view("<f2")[:, 0].astype(np.float64)
                ds = np.abs(s_theirs - s16[0])
                if ds.max() > 0:
                    print("  %s row %d: s differs in %d blocks (max %g)" % (vname, r, (ds > 0).sum(), ds.max()))
            else:
                mine = R.quant_q8_k(X[r:r + 1])[0]
            nbad += int((mine != theirs).sum())
        print("act quant %-5s: %d values differ from ggml CPU from_float" % (vname, nbad))
        fails += nbad > 0

    for vname, fn in (("F16", R.to_f16), ("BF16", R.to_bf16)):
        tid = R.TYPE_ID[vname]
        nbad = 0
        for r in range(X.shape[0]):
            raw = from_float_cpu(tid, X[r].astype(np.float32))
            nbad += int((R.dequant_blocks(raw, tid).reshape(-1) != fn(X[r])).sum())
        print("act quant %-5s: %d values differ from ggml CPU from_float" % (vname, nbad))
        fails += nbad > 0

    # exact .5 ties: the reference follows quantize_row_q8_0_ref (roundf, half away from zero);
    # a SIMD from_float may round ties to even. Informational only.
    xt = np.zeros(nc)
    xt[0::32] = 127.0
    xt[1::32] = 0.5
    xt[2::32] = 2.5
    xt[3::32] = -0.5
    for vname in ("Q8_0", "Q8_1"):
        tid = R.TYPE_ID[vname]
        theirs = R.dequant_blocks(from_float_cpu(tid, xt.astype(np.float32)), tid).reshape(-1)
        mine = R.quant_q8_0(xt[None, :])[0][0]
        print("ties %s: ggml CPU gives %s for (0.5, 2.5, -0.5); reference %s" % (
            vname, theirs[1:4].tolist(), mine[1:4].tolist()))

    # --- weight types
    wtypes = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
              "IQ4_NL", "IQ4_XS", "F16", "BF16", "F32"]
    W = rng.standard_normal((nr, nc)).astype(np.float32) * 0.05
    W[0, :64] += 0.3        # some offset blocks (min terms)
    for tn in wtypes:
        tid = R.TYPE_ID[tn]
        _, bs, ts = R.GGML_TYPES[tid]
        raw = np.zeros(nr * nc // bs * ts, dtype=np.uint8)
        if tn == "F32":
            raw = W.reshape(-1).view(np.uint8).copy()
            theirs = W.reshape(-1).astype(np.float64)
        else:
            n = base.ggml_quantize_chunk(tid, W.ctypes.data, raw.ctypes.data, 0, nr, nc, None)
            assert n == raw.size, (tn, n, raw.size)
            theirs = to_float(tid, raw, nr * nc).astype(np.float64)
        mine = R.dequant_blocks(raw, tid).reshape(-1)
        err = np.abs(mine - theirs).max()
        rel = err / max(1e-30, np.abs(theirs).max())
        exact = int((mine.astype(np.float32) == theirs.astype(np.float32)).sum())
        ok = rel < 1e-6
        fails += not ok
        # vec_dot against emulated matmul
        trc = cpu.ggml_get_type_traits_cpu(tid).contents
        vdt = trc.vec_dot_type
        vname = R.GGML_TYPES[vdt][0]
        if vname != R.VEC_DOT_TYPE[tn]:
            print("  vec_dot_type mismatch for %s: ggml %s, ref %s" % (tn, vname, R.VEC_DOT_TYPE[tn]))
            fails += 1
        w = R.Weight(tid, raw, nr, nc)
        ref = w.matmul(X)                                   # (T, nr)
        row_bytes = nc // bs * ts
        got = np.zeros_like(ref)
        vd = VEC_DOT(trc.vec_dot)
        for t in range(X.shape[0]):
            xq = from_float_cpu(vdt, X[t].astype(np.float32)) if vname != "F32" else X[t].astype(np.float32)
            xq = np.ascontiguousarray(xq).view(np.uint8)
            s = C.c_float()
            for r in range(nr):
                vd(nc, C.byref(s), 0, raw.ctypes.data + r * row_bytes, 0, xq.ctypes.data, 0, 1)
                got[t, r] = s.value
        scale = np.abs(ref).max(axis=1, keepdims=True) + 1e-30
        vrel = (np.abs(got - ref) / scale).max()
        okv = vrel < 2e-5
        fails += not okv
        print("%-7s dequant max|d|=%.3g rel=%.2g exact-f32 %d/%d %s | vec_dot(%s) max rel %.2g %s" % (
            tn, err, rel, exact, nr * nc, "ok" if ok else "FAIL", vname, vrel, "ok" if okv else "FAIL"))
    print("crosscheck: %s" % ("all ok" if not fails else "%d FAILURES" % fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
