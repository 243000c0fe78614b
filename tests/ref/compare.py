#!/usr/bin/python3
"""Compare two logit files (raw little-endian float32, row-major (n_rows, n_vocab)).

  /usr/bin/python3 tests/ref/compare.py REF.f32 TEST.f32 --n-vocab V [--atol X] [--rtol Y]

A is the reference. Prints max |diff|, max |diff| / max|A row|, and top-1 agreement.
Exit 1 if any element has |A-B| > atol + rtol*max|A row|, or if the top-1 token differs at a
row where the reference's top-2 margin is above twice the row's tolerance (a near tie may
legitimately flip).
Exit 2 on shape problems.
"""

import argparse
import sys

import numpy as np


def load(path, n_vocab):
    a = np.fromfile(path, dtype="<f4")
    if a.size % n_vocab:
        raise SystemExit("%s: %d floats is not a multiple of n_vocab %d" % (path, a.size, n_vocab))
    return a.reshape(-1, n_vocab).astype(np.float64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="reference logits")
    ap.add_argument("b", help="logits to test")
    ap.add_argument("--n-vocab", type=int, required=True)
    ap.add_argument("--atol", type=float, default=1e-2)
    ap.add_argument("--rtol", type=float, default=0.0)
    ap.add_argument("--rows", type=int, default=0, help="compare only the first N rows (0 = all; files must then have equal rows)")
    ap.add_argument("-v", "--verbose", action="store_true", help="per-row report")
    a = ap.parse_args(argv)

    A = load(a.a, a.n_vocab)
    B = load(a.b, a.n_vocab)
    if a.rows:
        if A.shape[0] < a.rows or B.shape[0] < a.rows:
            print("fewer than %d rows: %d vs %d" % (a.rows, A.shape[0], B.shape[0]))
            return 2
        A, B = A[:a.rows], B[:a.rows]
    elif A.shape != B.shape:
        print("shape mismatch: %s vs %s" % (A.shape, B.shape))
        return 2
    if not np.all(np.isfinite(B)):
        print("test file has non-finite values")
        return 1
    D = np.abs(A - B)
    rowmax = np.abs(A).max(axis=1)
    rel = D.max(axis=1) / np.maximum(rowmax, 1e-30)
    bad_elem = D > (a.atol + a.rtol * rowmax[:, None])
    top_a = A.argmax(axis=1)
    top_b = B.argmax(axis=1)
    srt = np.sort(A, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    agree = top_a == top_b
    bad_top = (~agree) & (margin > 2 * (a.atol + a.rtol * rowmax))
    n = A.shape[0]
    if a.verbose:
        for r in range(n):
            print("row %3d  max|d| %.3e  rel %.3e  top1 %d/%d  margin %.3g%s" % (
                r, D[r].max(), rel[r], top_a[r], top_b[r], margin[r],
                "  BAD" if bad_elem[r].any() or bad_top[r] else ""))
    print("rows %d  vocab %d" % (n, a.n_vocab))
    print("max |diff|            %.6e  (row %d)" % (D.max(), int(D.max(axis=1).argmax())))
    print("max |diff|/max|row|   %.6e" % rel.max())
    print("mean |diff|           %.6e" % D.mean())
    print("top-1 agreement       %d/%d" % (agree.sum(), n))
    if (~agree).any():
        for r in np.nonzero(~agree)[0]:
            print("  row %d: ref %d test %d (ref top-2 margin %.4g)%s" % (
                r, top_a[r], top_b[r], margin[r], "  <- beyond 2x tolerance" if bad_top[r] else ""))
    fail = bad_elem.any() or bad_top.any()
    if bad_elem.any():
        print("elements over tolerance: %d (atol %g, rtol %g)" % (bad_elem.sum(), a.atol, a.rtol))
    print("FAIL" if fail else "PASS")
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
