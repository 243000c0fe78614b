#!/usr/bin/python3
"""Independent numpy reference for moed: GGUF v3 parser, dequantizer, activation-
quantization emulation and float64 forward pass for llama / mixtral / qwen2 /
qwen2moe / qwen3 / qwen3moe / olmoe.

Written from the GGUF format description, ggml's block layouts and the Hugging Face
model definitions -- NOT from moed's C sources -- so it can serve as the oracle the
C engine and kernels are tested against.  Only the standard library and numpy.

Run with Debian's interpreter:  /usr/bin/python3 tests/ref/gguf_ref.py --help
"""

import argparse
import math
import struct
import sys
import time

import numpy as np

# ----------------------------------------------------------------------------------
# GGUF container
# ----------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"

# metadata value types
_VT_UINT8, _VT_INT8, _VT_UINT16, _VT_INT16, _VT_UINT32, _VT_INT32, _VT_FLOAT32, \
    _VT_BOOL, _VT_STRING, _VT_ARRAY, _VT_UINT64, _VT_INT64, _VT_FLOAT64 = range(13)

_VT_SCALAR = {
    _VT_UINT8: "<u1", _VT_INT8: "<i1", _VT_UINT16: "<u2", _VT_INT16: "<i2",
    _VT_UINT32: "<u4", _VT_INT32: "<i4", _VT_FLOAT32: "<f4", _VT_BOOL: "<u1",
    _VT_UINT64: "<u8", _VT_INT64: "<i8", _VT_FLOAT64: "<f8",
}

# ggml tensor types: id -> (name, block size in values, block size in bytes)
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    20: ("IQ4_NL", 32, 18),
    23: ("IQ4_XS", 256, 136),
    30: ("BF16", 1, 2),
}
TYPE_ID = {v[0]: k for k, v in GGML_TYPES.items()}


class TensorInfo:
    __slots__ = ("name", "ne", "type", "offset", "nbytes", "shape")

    def __init__(self, name, ne, ttype, offset):
        self.name = name
        self.ne = tuple(ne)          # ggml order: ne[0] innermost
        self.type = ttype
        self.offset = offset         # relative to the data section
        self.shape = tuple(reversed(self.ne))  # numpy (row-major) shape
        n = 1
        for d in ne:
            n *= d
        if ttype not in GGML_TYPES:
            self.nbytes = None
        else:
            _, bs, ts = GGML_TYPES[ttype]
            if ne[0] % bs:
                raise ValueError("tensor %s: ne[0]=%d not a multiple of block %d" % (name, ne[0], bs))
            self.nbytes = n // bs * ts

    @property
    def type_name(self):
        return GGML_TYPES.get(self.type, ("type%d" % self.type,))[0]

    @property
    def n_elements(self):
        n = 1
        for d in self.ne:
            n *= d
        return n


class GGUFFile:
    """Parses a GGUF (v2/v3) file. Tensor data is accessed through a read-only memmap."""

    def __init__(self, path):
        self.path = path
        self.mm = np.memmap(path, dtype=np.uint8, mode="r")
        self._pos = 0
        magic = bytes(self.mm[0:4])
        if magic != GGUF_MAGIC:
            raise ValueError("%s: not a GGUF file (magic %r)" % (path, magic))
        self._pos = 4
        self.version = self._u32()
        if self.version not in (2, 3):
            raise ValueError("unsupported GGUF version %d" % self.version)
        n_tensors = self._u64()
        n_kv = self._u64()
        self.metadata = {}
        self.metadata_types = {}
        for _ in range(n_kv):
            key = self._str()
            vt = self._u32()
            self.metadata[key] = self._value(vt)
            self.metadata_types[key] = vt
        self.tensors = {}
        self.tensor_order = []
        for _ in range(n_tensors):
            name = self._str()
            n_dims = self._u32()
            ne = [self._u64() for _ in range(n_dims)]
            ttype = self._u32()
            off = self._u64()
            self.tensors[name] = TensorInfo(name, ne, ttype, off)
            self.tensor_order.append(name)
        self.alignment = int(self.metadata.get("general.alignment", 32))
        self.data_offset = (self._pos + self.alignment - 1) // self.alignment * self.alignment
        for t in self.tensors.values():
            if t.offset % self.alignment:
                raise ValueError("tensor %s misaligned" % t.name)
            if t.nbytes is not None and self.data_offset + t.offset + t.nbytes > len(self.mm):
                raise ValueError("tensor %s extends past end of file" % t.name)

    # --- primitive readers
    def _take(self, n):
        b = self.mm[self._pos:self._pos + n]
        if len(b) != n:
            raise ValueError("unexpected end of file")
        self._pos += n
        return b

    def _u32(self):
        return struct.unpack("<I", bytes(self._take(4)))[0]

    def _u64(self):
        return struct.unpack("<Q", bytes(self._take(8)))[0]

    def _str(self):
        n = self._u64()
        return bytes(self._take(n)).decode("utf-8", errors="surrogateescape")

    def _value(self, vt):
        if vt in _VT_SCALAR:
            dt = np.dtype(_VT_SCALAR[vt])
            v = np.frombuffer(bytes(self._take(dt.itemsize)), dtype=dt)[0]
            if vt == _VT_BOOL:
                return bool(v)
            return v.item()
        if vt == _VT_STRING:
            return self._str()
        if vt == _VT_ARRAY:
            et = self._u32()
            n = self._u64()
            if et in _VT_SCALAR:
                dt = np.dtype(_VT_SCALAR[et])
                a = np.frombuffer(bytes(self._take(n * dt.itemsize)), dtype=dt)
                return a.astype(bool) if et == _VT_BOOL else a
            if et == _VT_STRING:
                # fast path for big vocab arrays
                out = []
                mm = self.mm
                pos = self._pos
                for _ in range(n):
                    ln = int(mm[pos:pos + 8].view("<u8")[0])
                    pos += 8
                    out.append(bytes(mm[pos:pos + ln]).decode("utf-8", errors="surrogateescape"))
                    pos += ln
                self._pos = pos
                return out
            return [self._value(et) for _ in range(n)]   # nested arrays
        raise ValueError("bad metadata value type %d" % vt)

    # --- tensor data
    def raw(self, name):
        t = self.tensors[name]
        if t.nbytes is None:
            raise ValueError("tensor %s has unsupported type %d" % (name, t.type))
        s = self.data_offset + t.offset
        return self.mm[s:s + t.nbytes]

    def dequant(self, name, dtype=np.float64):
        """Dequantized tensor, numpy shape = reversed ne."""
        t = self.tensors[name]
        return dequantize(self.raw(name), t.type, t.n_elements).reshape(t.shape).astype(dtype, copy=False)

    def dequant_rows(self, name, rows):
        """Dequantize selected rows (index into the outermost dim of a 2D tensor)."""
        t = self.tensors[name]
        _, bs, ts = GGML_TYPES[t.type]
        row_bytes = t.ne[0] // bs * ts
        raw = self.raw(name)
        out = np.empty((len(rows), t.ne[0]), dtype=np.float64)
        for i, r in enumerate(rows):
            out[i] = dequantize(raw[r * row_bytes:(r + 1) * row_bytes], t.type, t.ne[0])
        return out

    def dequant_slice(self, name, index):
        """Dequantize sub-tensor `index` of the outermost dimension (e.g. one expert of a 3D tensor)."""
        t = self.tensors[name]
        _, bs, ts = GGML_TYPES[t.type]
        per = t.n_elements // t.ne[-1]
        nb = per // bs * ts
        raw = self.raw(name)[index * nb:(index + 1) * nb]
        return dequantize(raw, t.type, per).reshape(t.shape[1:])


# ----------------------------------------------------------------------------------
# Dequantization (vectorised over all blocks of a tensor)
# ----------------------------------------------------------------------------------

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                          1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float64)


def _f16(blocks, off):
    return np.ascontiguousarray(blocks[:, off:off + 2]).view("<f2")[:, 0].astype(np.float64)


def _f32(blocks, off):
    return np.ascontiguousarray(blocks[:, off:off + 4]).view("<f4")[:, 0].astype(np.float64)


def _u32(blocks, off):
    return np.ascontiguousarray(blocks[:, off:off + 4]).view("<u4")[:, 0]


def _nibbles_32(qs):
    """qs: (nb,16) -> (nb,32) ints: low nibbles then high nibbles (ggml's 32-block order)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int64)


def _high_bits_32(qh32):
    """qh32: (nb,) uint32 -> (nb,32) 0/1: bit j is the 5th bit of value j."""
    return ((qh32[:, None] >> np.arange(32, dtype=np.uint32)[None, :]) & 1).astype(np.int64)


def _scale_min_k4(sc):
    """sc: (nb,12) uint8 -> (scales (nb,8), mins (nb,8)) 6-bit values (Q4_K/Q5_K packing)."""
    sc = sc.astype(np.int64)
    d = np.empty((sc.shape[0], 8), dtype=np.int64)
    m = np.empty((sc.shape[0], 8), dtype=np.int64)
    d[:, :4] = sc[:, 0:4] & 63
    m[:, :4] = sc[:, 4:8] & 63
    d[:, 4:] = (sc[:, 8:12] & 0x0F) | ((sc[:, 0:4] >> 6) << 4)
    m[:, 4:] = (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)
    return d, m


def dequant_blocks(raw, ttype, split_min=False):
    """raw: uint8 array of whole blocks. Returns (nb, block) float64.
    With split_min=True for Q4_1/Q5_1, returns (d*q part (nb,32), m (nb,))."""
    name, bs, ts = GGML_TYPES[ttype]
    raw = np.asarray(raw, dtype=np.uint8)
    if name == "F32":
        return raw.view("<f4").astype(np.float64).reshape(-1, 1)
    if name == "F16":
        return raw.view("<f2").astype(np.float64).reshape(-1, 1)
    if name == "BF16":
        u = raw.view("<u2").astype(np.uint32) << 16
        return u.view("<f4").astype(np.float64).reshape(-1, 1)
    b = raw.reshape(-1, ts)
    nb = b.shape[0]
    if name == "Q4_0":
        d = _f16(b, 0)
        q = _nibbles_32(b[:, 2:18]) - 8
        return d[:, None] * q
    if name == "Q4_1":
        d, m = _f16(b, 0), _f16(b, 2)
        q = _nibbles_32(b[:, 4:20])
        if split_min:
            return d[:, None] * q, m
        return d[:, None] * q + m[:, None]
    if name == "Q5_0":
        d = _f16(b, 0)
        q = (_nibbles_32(b[:, 6:22]) | (_high_bits_32(_u32(b, 2)) << 4)) - 16
        return d[:, None] * q
    if name == "Q5_1":
        d, m = _f16(b, 0), _f16(b, 2)
        q = _nibbles_32(b[:, 8:24]) | (_high_bits_32(_u32(b, 4)) << 4)
        if split_min:
            return d[:, None] * q, m
        return d[:, None] * q + m[:, None]
    if name == "Q8_0":
        d = _f16(b, 0)
        return d[:, None] * b[:, 2:34].view(np.int8).astype(np.float64)
    if name == "Q8_1":
        d = _f16(b, 0)   # b[:,2:4] is s = d*sum(q), not needed to dequantize
        return d[:, None] * b[:, 4:36].view(np.int8).astype(np.float64)
    if name == "IQ4_NL":
        d = _f16(b, 0)
        idx = np.concatenate([b[:, 2:18] & 0x0F, b[:, 2:18] >> 4], axis=1)
        return d[:, None] * KVALUES_IQ4NL[idx]
    if name == "Q8_K":
        d = _f32(b, 0)
        return d[:, None] * b[:, 4:260].view(np.int8).astype(np.float64)
    if name == "Q2_K":
        # scales[16] qs[64] d dmin ; value p = 128h + 32j + l (l<32): sub-block 8h+2j+l//16,
        # q = (qs[32h+l] >> 2j) & 3 ; x = d*(sc&15)*q - dmin*(sc>>4)
        sc = b[:, 0:16].astype(np.int64)
        qs = b[:, 16:80].reshape(nb, 2, 1, 32).astype(np.int64)
        d, dmin = _f16(b, 80), _f16(b, 82)
        q = (qs >> (2 * np.arange(4)).reshape(1, 1, 4, 1)) & 3            # (nb,2,4,32)
        sc = sc.reshape(nb, 2, 4, 2, 1)                                     # [h][j][l//16]
        q = q.reshape(nb, 2, 4, 2, 16)
        out = d[:, None, None, None, None] * (sc & 15) * q - dmin[:, None, None, None, None] * (sc >> 4)
        return out.reshape(nb, 256)
    if name == "Q3_K":
        # hmask[32] qs[64] scales[12] d
        hm = b[:, 0:32].astype(np.int64)
        qs = b[:, 32:96].reshape(nb, 2, 1, 32).astype(np.int64)
        s = b[:, 96:108].astype(np.int64)
        d = _f16(b, 108)
        j = np.arange(16)
        low = np.where(j < 8, s[:, j % 8] & 0x0F, s[:, j % 8] >> 4)       # (nb,16)
        high = (s[:, 8 + (j % 4)] >> (2 * (j // 4))) & 3
        scales = (low | (high << 4)) - 32                                   # (nb,16) index 8h+2j+l//16
        shifts = (2 * np.arange(4)).reshape(1, 1, 4, 1)
        q = (qs >> shifts) & 3                                              # (nb,2,4,32)
        hbit = (4 * np.arange(2)).reshape(1, 2, 1, 1) + np.arange(4).reshape(1, 1, 4, 1)
        hset = (hm.reshape(nb, 1, 1, 32) >> hbit) & 1
        q = q - np.where(hset == 1, 0, 4)
        out = d[:, None, None, None, None] * scales.reshape(nb, 2, 4, 2, 1) * q.reshape(nb, 2, 4, 2, 16)
        return out.reshape(nb, 256)
    if name in ("Q4_K", "Q5_K"):
        # d dmin scales[12] (qh[32]) qs[128]; value p = 64g + 32s + l: scale index 2g+s,
        # q = (qs[32g+l] >> 4s) & 15  (+16 if qh[l] bit (2g+s))
        d, dmin = _f16(b, 0), _f16(b, 2)
        sc, mn = _scale_min_k4(b[:, 4:16])
        if name == "Q4_K":
            qs = b[:, 16:144]
        else:
            qh = b[:, 16:48].astype(np.int64)
            qs = b[:, 48:176]
        qs = qs.reshape(nb, 4, 1, 32).astype(np.int64)
        q = (qs >> (4 * np.arange(2)).reshape(1, 1, 2, 1)) & 15           # (nb,4,2,32)
        if name == "Q5_K":
            bit = np.arange(8).reshape(1, 4, 2, 1)
            q = q + (((qh.reshape(nb, 1, 1, 32) >> bit) & 1) << 4)
        out = (d[:, None] * sc)[:, :, None] * q.reshape(nb, 8, 32) \
            - (dmin[:, None] * mn)[:, :, None]
        return out.reshape(nb, 256)
    if name == "Q6_K":
        # ql[128] qh[64] scales[16](int8) d ; value p = 128h + 32k + l:
        # low = ql[64h + 32(k&1) + l] >> 4(k>>1) & 15 ; high = qh[32h+l] >> 2k & 3 ; scale sc[8h + 2k + l//16]
        ql = b[:, 0:128].reshape(nb, 2, 2, 32).astype(np.int64)         # [h][k&1][l]
        qh = b[:, 128:192].reshape(nb, 2, 1, 32).astype(np.int64)       # [h][.][l]
        sc = b[:, 192:208].view(np.int8).astype(np.int64).reshape(nb, 2, 4, 2, 1)
        d = _f16(b, 208)
        k = np.arange(4)
        low = (ql[:, :, k & 1, :] >> (4 * (k >> 1)).reshape(1, 1, 4, 1)) & 15   # (nb,2,4,32)
        high = (qh >> (2 * k).reshape(1, 1, 4, 1)) & 3
        q = (low | (high << 4)) - 32
        out = d[:, None, None, None, None] * sc * q.reshape(nb, 2, 4, 2, 16)
        return out.reshape(nb, 256)
    if name == "IQ4_XS":
        # d scales_h(u16) scales_l[4] qs[128]; sub-block ib: ls = (scales_l[ib/2] >> 4(ib%2) & 15) | ((scales_h >> 2ib) & 3) << 4
        d = _f16(b, 0)
        sh = np.ascontiguousarray(b[:, 2:4]).view("<u2")[:, 0].astype(np.int64)
        sl = b[:, 4:8].astype(np.int64)
        ib = np.arange(8)
        ls = ((sl[:, ib // 2] >> (4 * (ib % 2))) & 15) | (((sh[:, None] >> (2 * ib)) & 3) << 4)
        qs = b[:, 8:136].reshape(nb, 8, 16)
        idx = np.concatenate([qs & 0x0F, qs >> 4], axis=2)                # (nb,8,32)
        out = (d[:, None] * (ls - 32))[:, :, None] * KVALUES_IQ4NL[idx]
        return out.reshape(nb, 256)
    raise ValueError("dequantization of %s not implemented" % name)


def dequantize(raw, ttype, n_elements):
    out = dequant_blocks(raw, ttype).reshape(-1)
    if out.size != n_elements:
        raise ValueError("size mismatch: %d vs %d" % (out.size, n_elements))
    return out


# ----------------------------------------------------------------------------------
# Activation quantization emulation (the weight type's vec_dot_type)
# ----------------------------------------------------------------------------------

VEC_DOT_TYPE = {
    "F32": "F32", "F16": "F16", "BF16": "BF16",
    "Q4_0": "Q8_0", "Q5_0": "Q8_0", "Q8_0": "Q8_0", "IQ4_NL": "Q8_0",
    "Q4_1": "Q8_1", "Q5_1": "Q8_1",
    "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K",
    "IQ4_XS": "Q8_K",
    "Q8_1": "Q8_1", "Q8_K": "Q8_K",   # not used for weights in practice
}


# How Q8_0/Q8_1 activation quantization rounds exact .5 ties: "away" = roundf, as ggml's
# quantize_row_q8_0_ref / q8_1_ref; "even" = what ggml's x86 SIMD quantize_row_q8_0/q8_1 do
# (_mm256_round_ps with _MM_ROUND_NEAREST).  Set with --q8-ties.
Q8_TIES = "away"


def round_half_away(v):
    """C roundf on float values (computed in float64, exact for float32 inputs)."""
    v = np.asarray(v, dtype=np.float64)
    if Q8_TIES == "even":
        return np.rint(v)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def to_f16(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float16).astype(np.float64)


def to_bf16(x):
    f = np.ascontiguousarray(np.asarray(x, dtype=np.float64).astype(np.float32))
    u = f.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    nan = np.isnan(f)
    r = np.where(nan, (u | 0x400000) >> 16 << 16, r)
    return r.astype(np.uint32).view(np.float32).astype(np.float64)


def quant_q8_0(x):
    """x (T, n) -> (dequantized (T,n) float64, d16 (T,nb), q (T,nb,32))."""
    T, n = x.shape
    xf = x.astype(np.float32).reshape(T, n // 32, 32)
    amax = np.max(np.abs(xf), axis=2)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
    v = (xf * idv[:, :, None]).astype(np.float32)
    q = round_half_away(v)
    d16 = d.astype(np.float16).astype(np.float64)
    return (q * d16[:, :, None]).reshape(T, n), d16, q


def quant_q8_1(x):
    """Like Q8_0 plus s = f16(d * sum(q)) per block (d the float32 scale)."""
    xdq, d16, q = quant_q8_0(x)
    T, n = x.shape
    amax = np.max(np.abs(x.astype(np.float32).reshape(T, n // 32, 32)), axis=2)
    d = (amax / np.float32(127)).astype(np.float32)
    s = (q.sum(axis=2).astype(np.float32) * d).astype(np.float32)   # sum*d in float
    s16 = s.astype(np.float16).astype(np.float64)
    return xdq, s16


def quant_q8_k(x):
    T, n = x.shape
    xf = x.astype(np.float32).reshape(T, n // 256, 256)
    idx = np.argmax(np.abs(xf), axis=2)                      # first of the largest |x|
    mx = np.take_along_axis(xf, idx[:, :, None], axis=2)[:, :, 0]
    nz = mx != 0
    safe = np.where(nz, mx, np.float32(1)).astype(np.float32)
    iscale = (np.float32(-127) / safe).astype(np.float32)
    v = (iscale[:, :, None] * xf).astype(np.float32)
    q = np.minimum(np.rint(v), np.float32(127)).astype(np.float64)   # rint: half to even
    d = (np.float32(1) / iscale).astype(np.float32).astype(np.float64)
    q = np.where(nz[:, :, None], q, 0.0)
    d = np.where(nz, d, 0.0)
    return (q * d[:, :, None]).reshape(T, n)


# ----------------------------------------------------------------------------------
# Weights with cached dequantization and emulated matmul
# ----------------------------------------------------------------------------------

class Weight:
    """A 2D weight (n_out, n_in) dequantized once to float64."""

    def __init__(self, ttype, raw, n_out, n_in):
        self.type = ttype
        self.tname = GGML_TYPES[ttype][0]
        self.n_out, self.n_in = n_out, n_in
        self.vdt = VEC_DOT_TYPE[self.tname]
        if self.tname in ("Q4_1", "Q5_1"):
            dq, m = dequant_blocks(raw, ttype, split_min=True)
            self.Wq = dq.reshape(n_out, n_in)              # d*q part
            self.Mb = m.reshape(n_out, n_in // 32)         # per-block min
            self.W = self.Wq + np.repeat(self.Mb, 32, axis=1)
        else:
            self.W = dequant_blocks(raw, ttype).reshape(n_out, n_in)

    def matmul(self, x, act_quant=True):
        """x (T, n_in) float64 -> (T, n_out) float64."""
        x = np.atleast_2d(x)
        if not act_quant or self.vdt == "F32":
            return x @ self.W.T
        if self.vdt == "F16":
            return to_f16(x) @ self.W.T
        if self.vdt == "BF16":
            return to_bf16(x) @ self.W.T
        if self.vdt == "Q8_0":
            return quant_q8_0(x)[0] @ self.W.T
        if self.vdt == "Q8_1":
            xdq, s = quant_q8_1(x)
            if hasattr(self, "Wq"):
                return xdq @ self.Wq.T + s @ self.Mb.T
            return xdq @ self.W.T
        if self.vdt == "Q8_K":
            return quant_q8_k(x) @ self.W.T
        raise ValueError(self.vdt)


# ----------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------

ARCHS = ("llama", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "olmoe")
NEOX_ARCHS = ("qwen2", "qwen2moe", "qwen3", "qwen3moe", "olmoe")


class Model:
    def __init__(self, path, act_quant=True, kv="f32"):
        self.g = GGUFFile(path)
        self.act_quant = act_quant
        self.kv = kv
        md = self.g.metadata
        arch = md.get("general.architecture")
        if arch not in ARCHS:
            raise ValueError("unsupported architecture %r" % arch)
        self.arch = arch

        def k(name, default=None):
            return md.get("%s.%s" % (arch, name), default)

        self.n_embd = int(k("embedding_length"))
        self.n_layer = int(k("block_count"))
        self.n_head = int(k("attention.head_count"))
        hkv = k("attention.head_count_kv", self.n_head)
        if isinstance(hkv, np.ndarray):       # per-layer array form
            hkv = int(hkv[0])
        self.n_head_kv = int(hkv)
        self.head_dim = int(k("attention.key_length", self.n_embd // self.n_head))
        self.head_dim_v = int(k("attention.value_length", self.head_dim))
        self.eps = float(k("attention.layer_norm_rms_epsilon", 1e-5))
        self.rope_base = float(k("rope.freq_base", 10000.0))
        self.n_rot = int(k("rope.dimension_count", self.head_dim))
        self.n_ctx_train = int(k("context_length", 2048))
        st = k("rope.scaling.type", "none")
        self.rope_scaling = st if st else "none"
        self.rope_factor = float(k("rope.scaling.factor", 1.0) or 1.0)
        if self.rope_scaling == "none":
            self.rope_factor = 1.0
        self.n_ctx_orig = int(k("rope.scaling.original_context_length", self.n_ctx_train) or self.n_ctx_train)
        self.n_expert = int(k("expert_count", 0) or 0)
        self.n_expert_used = int(k("expert_used_count", 0) or 0)
        self.n_ff = k("feed_forward_length", None)
        self.n_ff_exp = k("expert_feed_forward_length", None)
        self.n_ff_shexp = k("expert_shared_feed_forward_length", None)
        self.neox = arch in NEOX_ARCHS
        self.norm_topk = arch in ("llama", "qwen3moe")
        self.n_vocab = self.g.tensors["token_embd.weight"].ne[1]
        self.out_name = "output.weight" if "output.weight" in self.g.tensors else "token_embd.weight"
        self._w = {}
        self._vec = {}
        self._build_rope_tables()

    # --- tensors
    def has(self, name):
        return name in self.g.tensors

    def weight(self, name):
        w = self._w.get(name)
        if w is None:
            t = self.g.tensors[name]
            if len(t.ne) == 1:
                n_in, n_out = t.ne[0], 1
            else:
                n_in, n_out = t.ne[0], t.ne[1]
                assert len(t.ne) == 2, name
            w = Weight(t.type, self.g.raw(name), n_out, n_in)
            self._w[name] = w
        return w

    def expert_weight(self, name, e):
        key = (name, e)
        w = self._w.get(key)
        if w is None:
            t = self.g.tensors[name]
            _, bs, ts = GGML_TYPES[t.type]
            n_in, n_out = t.ne[0], t.ne[1]
            nb = n_in * n_out // bs * ts
            w = Weight(t.type, self.g.raw(name)[e * nb:(e + 1) * nb], n_out, n_in)
            self._w[key] = w
        return w

    def vec(self, name):
        v = self._vec.get(name)
        if v is None:
            v = self.g.dequant(name).reshape(-1)
            self._vec[name] = v
        return v

    def mm(self, name, x):
        return self.weight(name).matmul(x, self.act_quant)

    def rmsnorm(self, x, wname):
        w = self.vec(wname)
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def _rmsnorm_w(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    # --- RoPE
    def _build_rope_tables(self):
        n_rot = self.n_rot
        i = np.arange(n_rot // 2, dtype=np.float64)
        self.inv_freq = self.rope_base ** (-2.0 * i / n_rot)
        if self.rope_scaling == "yarn":
            freq_scale = 1.0 / self.rope_factor
            beta_fast, beta_slow, ext_factor, attn_factor = 32.0, 1.0, 1.0, 1.0

            def corr_dim(r):
                return n_rot * math.log(self.n_ctx_orig / (r * 2 * math.pi)) / (2 * math.log(self.rope_base))
            low = max(0.0, math.floor(corr_dim(beta_fast)))
            high = min(n_rot - 1.0, math.ceil(corr_dim(beta_slow)))
            ramp = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)
            self.yarn_mix = ramp * ext_factor
            self.yarn_freq_scale = freq_scale
            self.mscale = attn_factor * (1.0 + 0.1 * math.log(1.0 / freq_scale))
        else:
            self.mscale = 1.0

    def rope_cos_sin(self, pos):
        pos = np.asarray(pos, dtype=np.float64)[:, None]
        if self.rope_scaling == "yarn":
            th_ex = pos * self.inv_freq[None, :]
            th_in = self.yarn_freq_scale * th_ex
            th = th_in * (1 - self.yarn_mix) + th_ex * self.yarn_mix
        elif self.rope_scaling == "linear":
            th = (pos / self.rope_factor) * self.inv_freq[None, :]
        else:
            th = pos * self.inv_freq[None, :]
        return np.cos(th) * self.mscale, np.sin(th) * self.mscale

    def apply_rope(self, x, cos, sin):
        """x (T, H, D); cos/sin (T, n_rot/2)."""
        n_rot = self.n_rot
        out = x.copy()
        c = cos[:, None, :]
        s = sin[:, None, :]
        if self.neox:
            a = x[:, :, 0:n_rot // 2]
            b = x[:, :, n_rot // 2:n_rot]
            out[:, :, 0:n_rot // 2] = a * c - b * s
            out[:, :, n_rot // 2:n_rot] = a * s + b * c
        else:
            a = x[:, :, 0:n_rot:2]
            b = x[:, :, 1:n_rot:2]
            out[:, :, 0:n_rot:2] = a * c - b * s
            out[:, :, 1:n_rot:2] = a * s + b * c
        return out

    # --- blocks
    def attention(self, il, xn, pos, cache):
        p = "blk.%d." % il
        T = xn.shape[0]
        q = self.mm(p + "attn_q.weight", xn)
        kk = self.mm(p + "attn_k.weight", xn)
        v = self.mm(p + "attn_v.weight", xn)
        if self.has(p + "attn_q.bias"):
            q = q + self.vec(p + "attn_q.bias")
        if self.has(p + "attn_k.bias"):
            kk = kk + self.vec(p + "attn_k.bias")
        if self.has(p + "attn_v.bias"):
            v = v + self.vec(p + "attn_v.bias")
        per_head_norm = self.arch in ("qwen3", "qwen3moe")
        if not per_head_norm and self.has(p + "attn_q_norm.weight"):   # olmoe: whole projection
            q = self.rmsnorm(q, p + "attn_q_norm.weight")
            kk = self.rmsnorm(kk, p + "attn_k_norm.weight")
        q = q.reshape(T, self.n_head, self.head_dim)
        kk = kk.reshape(T, self.n_head_kv, self.head_dim)
        v = v.reshape(T, self.n_head_kv, self.head_dim_v)
        if per_head_norm and self.has(p + "attn_q_norm.weight"):
            q = self.rmsnorm(q, p + "attn_q_norm.weight")
            kk = self.rmsnorm(kk, p + "attn_k_norm.weight")
        cos, sin = self.rope_cos_sin(pos)
        q = self.apply_rope(q, cos, sin)
        kk = self.apply_rope(kk, cos, sin)
        if self.kv in ("f16", "f16-ggml"):
            kk = to_f16(kk)
            v = to_f16(v)
        ck, cv, cpos = cache
        ck.append(kk)
        cv.append(v)
        cpos.append(np.asarray(pos))
        K = np.concatenate(ck, axis=0)            # (S, Hkv, D)
        V = np.concatenate(cv, axis=0)
        P = np.concatenate(cpos)
        grp = self.n_head // self.n_head_kv
        Kh = np.repeat(K, grp, axis=1)            # query head j -> kv head j // grp
        Vh = np.repeat(V, grp, axis=1)
        if self.kv == "f16-ggml":
            q = to_f16(q)
        scores = np.einsum("thd,shd->hts", q, Kh) / math.sqrt(self.head_dim)
        mask = P[None, :] > np.asarray(pos)[:, None]          # (T, S) causal
        scores = np.where(mask[None, :, :], -np.inf, scores)
        scores -= scores.max(axis=2, keepdims=True)
        w = np.exp(scores)
        w /= w.sum(axis=2, keepdims=True)
        if self.kv == "f16-ggml":
            w = to_f16(w)
        o = np.einsum("hts,shd->thd", w, Vh).reshape(T, self.n_head * self.head_dim_v)
        return self.mm(p + "attn_output.weight", o)

    def ffn_dense(self, p, x, sfx=""):
        g = self.mm(p + "ffn_gate%s.weight" % sfx, x)
        u = self.mm(p + "ffn_up%s.weight" % sfx, x)
        h = g / (1.0 + np.exp(-g)) * u
        return self.mm(p + "ffn_down%s.weight" % sfx, h)

    def expert_ffn(self, p, e, x):
        if self.has(p + "ffn_gate_exps.weight"):
            aq = self.act_quant
            g = self.expert_weight(p + "ffn_gate_exps.weight", e).matmul(x, aq)
            u = self.expert_weight(p + "ffn_up_exps.weight", e).matmul(x, aq)
            h = g / (1.0 + np.exp(-g)) * u
            return self.expert_weight(p + "ffn_down_exps.weight", e).matmul(h, aq)
        return self.ffn_dense(p, x, ".%d" % e)        # old per-expert tensor layout

    def ffn_moe(self, il, x, trace=None):
        p = "blk.%d." % il
        T = x.shape[0]
        logits = self.mm(p + "ffn_gate_inp.weight", x)                # (T, n_expert)
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        k = self.n_expert_used
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]       # ties -> lower index
        wts = np.take_along_axis(probs, order, axis=1)
        if self.norm_topk:
            wts = wts / wts.sum(axis=1, keepdims=True)
        if trace is not None:
            trace.append((il, self._cur_pos.copy(), order.copy(), wts.copy()))
        out = np.zeros((T, self.n_embd))
        for e in np.unique(order):
            rows, slot = np.nonzero(order == e)
            y = self.expert_ffn(p, int(e), x[rows])
            out[rows] += wts[rows, slot][:, None] * y
        if self.has(p + "ffn_gate_inp_shexp.weight"):
            gs = self.mm(p + "ffn_gate_inp_shexp.weight", x)[:, 0]
            ys = self.ffn_dense(p, x, "_shexp")
            out += (1.0 / (1.0 + np.exp(-gs)))[:, None] * ys
        return out

    def new_cache(self):
        return [([], [], []) for _ in range(self.n_layer)]

    def forward(self, tokens, pos0, cache, trace=None):
        """Feed tokens at positions pos0.. ; returns logits (T, n_vocab) float64."""
        tokens = list(tokens)
        pos = np.arange(pos0, pos0 + len(tokens))
        self._cur_pos = pos
        x = self.g.dequant_rows("token_embd.weight", tokens)
        for il in range(self.n_layer):
            p = "blk.%d." % il
            h = x + self.attention(il, self.rmsnorm(x, p + "attn_norm.weight"), pos, cache[il])
            xn = self.rmsnorm(h, p + "ffn_norm.weight")
            if self.has(p + "ffn_gate_inp.weight"):
                x = h + self.ffn_moe(il, xn, trace)
            else:
                x = h + self.ffn_dense(p, xn)
        xn = self.rmsnorm(x, "output_norm.weight")
        return self.weight(self.out_name).matmul(xn, self.act_quant)

    def info(self):
        g = self.g
        lines = [
            "file: %s (GGUF v%d, %d tensors, %d kv, alignment %d, data offset %d)" % (
                g.path, g.version, len(g.tensors), len(g.metadata), g.alignment, g.data_offset),
            "arch: %s" % self.arch,
            "n_vocab: %d" % self.n_vocab,
            "n_embd: %d" % self.n_embd,
            "n_layer: %d" % self.n_layer,
            "n_head: %d  n_head_kv: %d  head_dim: %d  head_dim_v: %d" % (
                self.n_head, self.n_head_kv, self.head_dim, self.head_dim_v),
            "rms_eps: %g" % self.eps,
            "rope: base %g  n_rot %d  %s  scaling %s factor %g  n_ctx_orig %d" % (
                self.rope_base, self.n_rot, "neox" if self.neox else "adjacent-pairs",
                self.rope_scaling, self.rope_factor, self.n_ctx_orig),
            "context_length: %d" % self.n_ctx_train,
            "n_ff: %s  n_ff_exp: %s  n_ff_shexp: %s" % (self.n_ff, self.n_ff_exp, self.n_ff_shexp),
            "n_expert: %d  n_expert_used: %d  renormalize top-k: %s" % (
                self.n_expert, self.n_expert_used, self.norm_topk),
            "output: %s" % ("output.weight" if self.out_name == "output.weight" else "tied to token_embd"),
            "act quant: %s  kv: %s" % (self.act_quant, self.kv),
        ]
        types = {}
        for t in g.tensors.values():
            types[t.type_name] = types.get(t.type_name, 0) + 1
        lines.append("tensor types: " + ", ".join("%s x%d" % kv for kv in sorted(types.items())))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------
# Tokens -> text (byte-level BPE pieces), for display only
# ----------------------------------------------------------------------------------

def _byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def detokenize(g, ids):
    toks = g.metadata.get("tokenizer.ggml.tokens")
    if toks is None:
        return None
    model = g.metadata.get("tokenizer.ggml.model", "gpt2")
    if model == "gpt2":
        bd = _byte_decoder()
        out = bytearray()
        for i in ids:
            piece = toks[i]
            if all(ch in bd for ch in piece):
                out += bytes(bd[ch] for ch in piece)
            else:
                out += piece.encode("utf-8")
        return out.decode("utf-8", errors="replace")
    # sentencepiece (llama)
    s = "".join(toks[i] for i in ids).replace("\u2581", " ")
    return s


def token_lookup(g, text_pieces):
    toks = g.metadata.get("tokenizer.ggml.tokens") or []
    idx = {t: i for i, t in enumerate(toks)}
    return [idx.get(p) for p in text_pieces]


# ----------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------

def greedy_argmax(row):
    return int(np.argmax(row))      # first index of the maximum = lowest id on ties


def run_cli(argv=None):
    ap = argparse.ArgumentParser(
        description="Independent numpy reference forward pass for GGUF MoE/dense models.",
        epilog="Logits file: raw little-endian float32, row-major (n_rows, n_vocab), one row per "
               "token FED to the model in order. Without --greedy n_rows = n_prompt. With --greedy N, "
               "the prompt is fed, then each generated token except the last is fed back, so "
               "n_rows = n_prompt + N - 1 (row i holds the logits after token i; row n_prompt-1+j "
               "produced generated token j). The generated ids are printed on one stdout line, "
               "comma-separated.")
    ap.add_argument("model")
    ap.add_argument("--tokens", help="comma-separated prompt token ids")
    ap.add_argument("--kv", choices=("f32", "f16", "f16-ggml"), default="f32",
                    help="f16: round K (after RoPE) and V to float16 as an f16 KV cache would")
    ap.add_argument("--no-act-quant", action="store_true",
                    help="do not emulate activation quantization (pure float64 matmuls)")
    ap.add_argument("--q8-ties", choices=("away", "even"), default="away",
                    help="rounding of exact .5 ties when quantizing activations to Q8_0/Q8_1: "
                         "away (roundf, ggml's reference quantizer; default) or even (ggml's x86 SIMD path)")
    ap.add_argument("--greedy", type=int, default=0, metavar="N", help="generate N tokens greedily")
    ap.add_argument("--batch", type=int, default=0,
                    help="feed the prompt in chunks of this many tokens (default: all at once)")
    ap.add_argument("--out", help="output file (logits, or the dequantized tensor with --dequant)")
    ap.add_argument("--dequant", metavar="TENSOR", help="dump TENSOR dequantized as float32 (GGUF order)")
    ap.add_argument("--info", action="store_true", help="print hyperparameters")
    ap.add_argument("--list", action="store_true", help="list tensors")
    ap.add_argument("--experts", action="store_true", help="print the selected experts (in top-k order) and their gate weights per position and layer to stderr")
    ap.add_argument("--detok", action="store_true", help="also print the generated text to stderr")
    a = ap.parse_args(argv)
    global Q8_TIES
    Q8_TIES = a.q8_ties

    if a.dequant:
        g = GGUFFile(a.model)
        t = g.tensors[a.dequant]
        arr = dequantize(g.raw(a.dequant), t.type, t.n_elements).astype("<f4")
        if not a.out:
            ap.error("--dequant needs --out")
        arr.tofile(a.out)
        print("%s: type %s ne %s -> %d float32 values written to %s" % (
            t.name, t.type_name, list(t.ne), arr.size, a.out), file=sys.stderr)
        return 0
    if a.list:
        g = GGUFFile(a.model)
        for n in g.tensor_order:
            t = g.tensors[n]
            print("%-40s %-7s ne=%s off=%d" % (n, t.type_name, list(t.ne), t.offset))
        return 0

    m = Model(a.model, act_quant=not a.no_act_quant, kv=a.kv)
    if a.info:
        print(m.info())
        if not a.tokens:
            return 0
    if not a.tokens:
        ap.error("--tokens required")
    prompt = [int(s) for s in a.tokens.replace(" ", "").split(",") if s != ""]
    if not prompt:
        ap.error("empty prompt")
    for t in prompt:
        if not 0 <= t < m.n_vocab:
            ap.error("token id %d out of range" % t)
    t0 = time.time()
    cache = m.new_cache()
    trace = [] if a.experts else None
    rows = []
    bsz = a.batch if a.batch > 0 else len(prompt)
    for s in range(0, len(prompt), bsz):
        rows.append(m.forward(prompt[s:s + bsz], s, cache, trace))
    logits = np.concatenate(rows, axis=0)
    rows = [logits]
    gen = []
    if a.greedy > 0:
        last = logits[-1]
        n_past = len(prompt)
        for j in range(a.greedy):
            tok = greedy_argmax(last)
            gen.append(tok)
            if j == a.greedy - 1:
                break
            last = m.forward([tok], n_past, cache, trace)
            rows.append(last)
            last = last[-1]
            n_past += 1
        logits = np.concatenate(rows, axis=0)
        print(",".join(str(t) for t in gen))
        if a.detok:
            print("prompt: %r" % detokenize(m.g, prompt), file=sys.stderr)
            print("generated: %r" % detokenize(m.g, gen), file=sys.stderr)
    if trace is not None:
        recs = []
        for il, pos, order, wts in trace:
            for r in range(order.shape[0]):
                recs.append((int(pos[r]), il, order[r].tolist(), wts[r].tolist()))
        for p_, il, ex, w in sorted(recs, key=lambda t: (t[0], t[1])):
            print("pos %d layer %d experts %s weights %s" % (
                p_, il, ",".join(str(e) for e in ex), ",".join("%.6f" % v for v in w)), file=sys.stderr)
    if a.out:
        logits.astype("<f4").tofile(a.out)
    print("%d rows x %d vocab in %.2fs" % (logits.shape[0], m.n_vocab, time.time() - t0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli())
