#!/usr/bin/python3
"""Quick self-test of the reference (no llama.cpp needed). Prints 'N passed, N failed'.

  /usr/bin/python3 tests/ref/selftest.py [--model /work/shared/models/qwen3moe-dev-trained-f16.gguf]
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_ref as R  # noqa: E402

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   %s %s" % (name, detail))
    else:
        failed += 1
        print("FAIL %s %s" % (name, detail))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(HERE, "..", "..", "..", "shared", "models",
                                                    "qwen3moe-dev-trained-f16.gguf"))
    a = ap.parse_args()
    if not os.path.exists(a.model):
        a.model = "/work/shared/models/qwen3moe-dev-trained-f16.gguf"

    # activation quantizers on hand-made inputs
    x = np.zeros((1, 256))
    x[0, :32] = np.linspace(-1, 1, 32)
    x[0, 40] = 127.0
    x[0, 41] = 0.5            # exact tie in a block whose scale is 1 -> roundf gives 1
    q, d16, _ = R.quant_q8_0(x)
    check("q8_0 tie rounds away", q[0, 41] == 1.0 and q[0, 40] == 127.0)
    check("q8_0 zero block", np.all(q[0, 64:] == 0))
    qk = R.quant_q8_k(x)
    check("q8_k max maps to -127*d", abs(qk[0, 40] - 127.0) < 1e-5, "(%g)" % qk[0, 40])
    check("bf16 rne", R.to_bf16(np.array([1.0 + 2 ** -8]))[0] == 1.0 and
          R.to_bf16(np.array([1.0 + 3 * 2 ** -8]))[0] == 1.0 + 2 ** -6)

    if os.path.exists(a.model):
        m = R.Model(a.model)
        prompt = [13547, 320, 34, 8, 220]
        check("tokens of 'Copyright (C) '", R.detokenize(m.g, prompt) == "Copyright (C) ")
        cache = m.new_cache()
        lg = m.forward(prompt, 0, cache)
        gen = []
        last = lg[-1]
        for j in range(8):
            t = int(np.argmax(last))
            gen.append(t)
            last = m.forward([t], len(prompt) + j, cache)[-1]
        text = R.detokenize(m.g, gen)
        check("trained model greedy 'Copyright (C) ' -> 2000...", text.startswith("2000"), repr(text))
        # chunked prompt == whole prompt
        c2 = m.new_cache()
        lg2 = np.concatenate([m.forward(prompt[:2], 0, c2), m.forward(prompt[2:], 2, c2)])
        check("chunked prefill == batched prefill", np.abs(lg - lg2).max() < 1e-9, "(%.2g)" % np.abs(lg - lg2).max())
    else:
        print("skip trained-model checks: %s not found" % a.model)

    with tempfile.TemporaryDirectory() as td:
        for arch in ("llama", "mixtral", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "olmoe"):
            path = os.path.join(td, arch + ".gguf")
            subprocess.check_call([sys.executable, os.path.join(HERE, "make_tiny_gguf.py"), "--arch", arch,
                                   "--out", path, "--type", "f16"], stderr=subprocess.DEVNULL)
            m = R.Model(path)
            lg = m.forward([1, 2, 3, 4], 0, m.new_cache())
            check("tiny %s forward" % arch, lg.shape == (4, 512) and np.all(np.isfinite(lg)))
            t = m.g.tensors["blk.0.attn_q.weight"]
            check("tiny %s parse" % arch, t.ne == (64, 64) and t.type == 1)

    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
