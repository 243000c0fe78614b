#!/usr/bin/python3
"""Write small random-weight GGUF models of each supported architecture (for testing the
engine and the reference on architectures no shipped model covers).

  /usr/bin/python3 tests/ref/make_tiny_gguf.py --arch qwen2moe --out /tmp/t.gguf [--type f16]

The tokenizer is a minimal byte-level gpt2 vocabulary (the 256 byte symbols, then filler
tokens up to --n-vocab, no merges), so ids 0..255 are single bytes.  Weight tensors are F32,
F16 or BF16 (--type); norms, biases and routers are F32.  Other weight types can be made from
these files with llama.cpp's quantizer.
"""

import argparse
import struct
import sys
import os

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_ref as R  # noqa: E402

_VT = {"u32": 4, "i32": 5, "f32": 6, "bool": 7, "str": 8, "arr": 9, "u64": 10}


class Writer:
    def __init__(self):
        self.kv = []
        self.tensors = []

    def add(self, key, vtype, value):
        self.kv.append((key, vtype, value))

    def add_tensor(self, name, arr, ttype):
        """arr: numpy array in numpy (row-major) shape; ne = reversed shape."""
        arr = np.ascontiguousarray(arr)
        if ttype == 0:
            data = arr.astype("<f4").tobytes()
        elif ttype == 1:
            data = arr.astype("<f2").tobytes()
        elif ttype == 30:
            f = arr.astype(np.float32)
            u = f.view(np.uint32).astype(np.uint64)
            data = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")).tobytes()
        else:
            raise ValueError(ttype)
        self.tensors.append((name, tuple(reversed(arr.shape)), ttype, data))

    @staticmethod
    def _s(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _val(self, vtype, v):
        if vtype == "u32":
            return struct.pack("<I", v)
        if vtype == "i32":
            return struct.pack("<i", v)
        if vtype == "u64":
            return struct.pack("<Q", v)
        if vtype == "f32":
            return struct.pack("<f", v)
        if vtype == "bool":
            return struct.pack("<B", 1 if v else 0)
        if vtype == "str":
            return self._s(v)
        if vtype.startswith("arr:"):
            et = vtype[4:]
            out = struct.pack("<IQ", _VT[et], len(v))
            return out + b"".join(self._val(et, x) for x in v)
        raise ValueError(vtype)

    def write(self, path, alignment=32):
        head = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kv))
        for k, vt, v in self.kv:
            t = _VT["arr"] if vt.startswith("arr:") else _VT[vt]
            head += self._s(k) + struct.pack("<I", t) + self._val(vt, v)
        off = 0
        offs = []
        for name, ne, tt, data in self.tensors:
            offs.append(off)
            off += (len(data) + alignment - 1) // alignment * alignment
        for (name, ne, tt, data), o in zip(self.tensors, offs):
            head += self._s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
            head += struct.pack("<IQ", tt, o)
        pad = (-len(head)) % alignment
        with open(path, "wb") as f:
            f.write(head + b"\0" * pad)
            for name, ne, tt, data in self.tensors:
                f.write(data)
                f.write(b"\0" * ((-len(data)) % alignment))


def byte_tokens():
    bd = R._byte_decoder()            # unicode char -> byte
    inv = {b: c for c, b in bd.items()}
    return [inv[b] for b in range(256)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=("llama", "mixtral", "qwen2", "qwen2moe", "qwen3",
                                                      "qwen3moe", "olmoe"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", choices=("f32", "f16", "bf16"), default="f32")
    ap.add_argument("--n-vocab", type=int, default=512)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-head-kv", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=0, help="default n_embd/n_head")
    ap.add_argument("--n-rot", type=int, default=0, help="rope.dimension_count (default head_dim)")
    ap.add_argument("--n-ff", type=int, default=96)
    ap.add_argument("--n-expert", type=int, default=8)
    ap.add_argument("--n-expert-used", type=int, default=2)
    ap.add_argument("--n-ff-exp", type=int, default=32)
    ap.add_argument("--n-ff-shexp", type=int, default=64)
    ap.add_argument("--tied", action="store_true", help="omit output.weight")
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--rope-scaling", choices=("none", "linear", "yarn"), default="none")
    ap.add_argument("--rope-factor", type=float, default=4.0)
    ap.add_argument("--rope-orig-ctx", type=int, default=64)
    ap.add_argument("--scale", type=float, default=0.25, help="weight std")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    if a.arch == "olmoe" and a.n_head_kv != a.n_head:
        # OLMoE has no GQA; llama.cpp expects attn_k_norm of n_embd values
        print("olmoe: using n_head_kv = n_head = %d" % a.n_head, file=sys.stderr)
        a.n_head_kv = a.n_head
    arch = "llama" if a.arch == "mixtral" else a.arch
    moe = a.arch in ("mixtral", "qwen2moe", "qwen3moe", "olmoe")
    E = a.n_embd
    hd = a.head_dim or E // a.n_head
    tt = {"f32": 0, "f16": 1, "bf16": 30}[a.type]
    W = Writer()
    W.add("general.architecture", "str", arch)
    W.add("general.name", "str", "tiny random %s" % a.arch)
    W.add("general.alignment", "u32", 32)
    W.add(arch + ".context_length", "u32", 512)
    W.add(arch + ".embedding_length", "u32", E)
    W.add(arch + ".block_count", "u32", a.n_layer)
    W.add(arch + ".feed_forward_length", "u32", a.n_ff_exp if a.arch in ("mixtral", "olmoe") else a.n_ff)
    W.add(arch + ".attention.head_count", "u32", a.n_head)
    W.add(arch + ".attention.head_count_kv", "u32", a.n_head_kv)
    W.add(arch + ".attention.layer_norm_rms_epsilon", "f32", 1e-5)
    W.add(arch + ".rope.freq_base", "f32", a.rope_base)
    if a.head_dim:
        W.add(arch + ".attention.key_length", "u32", hd)
        W.add(arch + ".attention.value_length", "u32", hd)
    if a.n_rot:
        W.add(arch + ".rope.dimension_count", "u32", a.n_rot)
    elif arch == "llama":
        W.add(arch + ".rope.dimension_count", "u32", hd)
    if a.rope_scaling != "none":
        W.add(arch + ".rope.scaling.type", "str", a.rope_scaling)
        W.add(arch + ".rope.scaling.factor", "f32", a.rope_factor)
        W.add(arch + ".rope.scaling.original_context_length", "u32", a.rope_orig_ctx)
    if moe:
        W.add(arch + ".expert_count", "u32", a.n_expert)
        W.add(arch + ".expert_used_count", "u32", a.n_expert_used)
        if a.arch in ("qwen2moe", "qwen3moe"):
            W.add(arch + ".expert_feed_forward_length", "u32", a.n_ff_exp)
        if a.arch == "qwen2moe":
            W.add(arch + ".expert_shared_feed_forward_length", "u32", a.n_ff_shexp)
    toks = byte_tokens() + ["<filler%d>" % i for i in range(a.n_vocab - 256)]
    W.add("tokenizer.ggml.model", "str", "gpt2")
    W.add("tokenizer.ggml.pre", "str", "default")
    W.add("tokenizer.ggml.tokens", "arr:str", toks)
    W.add("tokenizer.ggml.token_type", "arr:i32", [1] * 256 + [4] * (a.n_vocab - 256))
    W.add("tokenizer.ggml.merges", "arr:str", [])
    W.add("tokenizer.ggml.bos_token_id", "u32", a.n_vocab - 1)
    W.add("tokenizer.ggml.eos_token_id", "u32", a.n_vocab - 2)
    W.add("tokenizer.ggml.add_bos_token", "bool", False)

    s = a.scale

    def mat(*shape):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    nq, nkv = a.n_head * hd, a.n_head_kv * hd
    W.add_tensor("token_embd.weight", mat(a.n_vocab, E) * 4, tt)
    W.add_tensor("output_norm.weight", norm(E), 0)
    if not a.tied:
        W.add_tensor("output.weight", mat(a.n_vocab, E), tt)
    for il in range(a.n_layer):
        p = "blk.%d." % il
        W.add_tensor(p + "attn_norm.weight", norm(E), 0)
        W.add_tensor(p + "attn_q.weight", mat(nq, E), tt)
        W.add_tensor(p + "attn_k.weight", mat(nkv, E), tt)
        W.add_tensor(p + "attn_v.weight", mat(nkv, E), tt)
        W.add_tensor(p + "attn_output.weight", mat(E, nq), tt)
        if a.arch in ("qwen2", "qwen2moe"):
            W.add_tensor(p + "attn_q.bias", mat(nq), 0)
            W.add_tensor(p + "attn_k.bias", mat(nkv), 0)
            W.add_tensor(p + "attn_v.bias", mat(nkv), 0)
        if a.arch in ("qwen3", "qwen3moe"):
            W.add_tensor(p + "attn_q_norm.weight", norm(hd), 0)
            W.add_tensor(p + "attn_k_norm.weight", norm(hd), 0)
        if a.arch == "olmoe":
            W.add_tensor(p + "attn_q_norm.weight", norm(nq), 0)
            W.add_tensor(p + "attn_k_norm.weight", norm(nkv), 0)
        W.add_tensor(p + "ffn_norm.weight", norm(E), 0)
        if moe:
            X, F = a.n_expert, a.n_ff_exp
            W.add_tensor(p + "ffn_gate_inp.weight", mat(X, E) * 4, 0)
            W.add_tensor(p + "ffn_gate_exps.weight", mat(X, F, E), tt)
            W.add_tensor(p + "ffn_up_exps.weight", mat(X, F, E), tt)
            W.add_tensor(p + "ffn_down_exps.weight", mat(X, E, F), tt)
            if a.arch == "qwen2moe":
                Fs = a.n_ff_shexp
                W.add_tensor(p + "ffn_gate_inp_shexp.weight", mat(E), 0)
                W.add_tensor(p + "ffn_gate_shexp.weight", mat(Fs, E), tt)
                W.add_tensor(p + "ffn_up_shexp.weight", mat(Fs, E), tt)
                W.add_tensor(p + "ffn_down_shexp.weight", mat(E, Fs), tt)
        else:
            W.add_tensor(p + "ffn_gate.weight", mat(a.n_ff, E), tt)
            W.add_tensor(p + "ffn_up.weight", mat(a.n_ff, E), tt)
            W.add_tensor(p + "ffn_down.weight", mat(E, a.n_ff), tt)
    W.write(a.out)
    print("wrote %s (%s, %d tensors)" % (a.out, a.arch, len(W.tensors)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
