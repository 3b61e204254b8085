#!/usr/bin/env python3
"""Runs two ONNX models in ONNX Runtime on the same random inputs and prints how far
their outputs are apart (max abs / max rel error, cosine). Exit 1 past tolerance."""
import argparse
import sys

import numpy as np
import onnxruntime as ort


def make_inputs(sess, rng, batch, seq):
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (batch if "batch" in str(d) else seq) for d in i.shape]
        if "int64" in i.type:
            feeds[i.name] = rng.integers(0, 64, size=shape, dtype=np.int64)
        elif "int32" in i.type:
            feeds[i.name] = rng.integers(0, 64, size=shape, dtype=np.int32)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("reference")
    ap.add_argument("candidate")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-5)
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--min-cosine", type=float, default=None,
                    help="judge by cosine >= this instead of elementwise tolerance (quantized models)")
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(args.reference, so, providers=["CPUExecutionProvider"])
    cand = ort.InferenceSession(args.candidate, so, providers=["CPUExecutionProvider"])
    feeds = make_inputs(ref, np.random.default_rng(0), 2, args.seq)
    ok = True
    for name, a, b in zip([o.name for o in ref.get_outputs()], ref.run(None, feeds), cand.run(None, feeds)):
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        err = np.abs(a - b)
        rel = float(err.max() / max(np.abs(a).max(), 1e-30))
        cos = float((a * b).sum() / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
        if args.min_cosine is not None:
            good = cos >= args.min_cosine
        else:
            good = np.allclose(b, a, rtol=args.rtol, atol=args.atol)
        ok &= bool(good)
        print(f"onnxruntime {ort.__version__}: output {name} {list(a.shape)}: max abs err {err.max():.3g}, "
              f"max rel err {rel:.3g}, cosine {cos:.9f} -> {'OK' if good else 'MISMATCH'} "
              + (f"(cosine >= {args.min_cosine})" if args.min_cosine is not None
                 else f"(rtol {args.rtol}, atol {args.atol})"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
