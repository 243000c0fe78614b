#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Compares moed's logits (raw float32 rows) with llama.cpp golden data (JSON
written by a logits-dump tool linked against libllama; see
tests/data/golden/README.md).

usage: golden_compare.py GOLDEN.json MOED.f32 --rtol R [--atol A]

For every position, the golden top-k logits must match moed's logits for the
same ids within atol + rtol * max|golden row top|, and moed's argmax must equal
llama.cpp's wherever llama.cpp's top-2 margin exceeds twice that tolerance.
Exit 0 on agreement, 1 otherwise.
"""
import argparse
import json
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("golden")
    ap.add_argument("moed")
    ap.add_argument("--rtol", type=float, required=True)
    ap.add_argument("--atol", type=float, default=1e-5)
    a = ap.parse_args()
    g = json.load(open(a.golden))
    V = g["n_vocab"]
    m = np.fromfile(a.moed, dtype="<f4")
    if m.size % V:
        print("moed file size is not a multiple of n_vocab %d" % V)
        return 1
    m = m.reshape(-1, V)
    pos = g["positions"]
    if m.shape[0] < len(pos):
        print("moed has %d rows, golden %d positions" % (m.shape[0], len(pos)))
        return 1
    worst = 0.0
    bad = 0
    for r, p in enumerate(pos):
        top = p["top"]
        ids = np.array([t[0] for t in top])
        gv = np.array([t[1] for t in top], dtype=np.float64)
        scale = np.abs(gv).max()
        tol = a.atol + a.rtol * scale
        d = np.abs(m[r, ids] - gv)
        worst = max(worst, d.max() / scale)
        if (d > tol).any():
            bad += 1
            print("row %d: max |diff| %.4g > tol %.4g" % (r, d.max(), tol))
        margin = gv[0] - gv[1] if len(gv) > 1 else np.inf
        if int(m[r].argmax()) != p["argmax"] and margin > 2 * tol:
            bad += 1
            print("row %d: argmax moed %d, llama.cpp %d (margin %.4g)" % (r, m[r].argmax(), p["argmax"], margin))
    print("positions %d  worst |diff|/max %.3e  failures %d" % (len(pos), worst, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
