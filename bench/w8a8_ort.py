"""The measurements behind quant-w8a8's emission choice (docs/quantization.md, "W8A8").

    python bench/w8a8_ort.py kernels          # one weight product, ORT CPU kernels
    python bench/w8a8_ort.py smollm2 A.onnx…  # KL / top-1 / ppl / forward time vs fp32

`kernels`: for SmolLM2's shapes (K x N = 576 x 1536 and 1536 x 576) and M = 1, 32, 256
rows, the time of f32 MatMul, MatMulNBits bits=8 (block 32 / 128, accuracy_level 4 and 0)
and DynamicQuantizeMatMul (int8 per column), best of 5 x reps, 2 threads; and which of them
quantize A to int8 (their output vs an emulation of per-block int8 / per-tensor uint8 A).
`smollm2`: llmopt-written models scored against the fp32 SmolLM2-135M on 4 windows x 128
tokens of the held-out KJV text (short: a choice, not the closing evaluation).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SMOL = Path.home() / ".cache/llmopt/models/smollm2-135m"
EVAL_TEXT = Path.home() / ".cache/llmopt/text/kjv-eval.txt"


def _session(model, threads: int = 2) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _one(node, inits, K: int, N: int):
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", N])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    return _session(m)


def _nbits8(W: np.ndarray, bs: int, level: int):
    """MatMulNBits bits=8, symmetric RTN as MLAS (scale = the largest-|w| value / -128)."""
    K, N = W.shape
    kb = (K + bs - 1) // bs
    blocks = np.pad(W, ((0, kb * bs - K), (0, 0))).T.reshape(N, kb, bs)
    m = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
    scale = (m / -128).astype(np.float32)
    inv = np.where(scale != 0, 1 / np.where(scale == 0, 1, scale), 0).astype(np.float32)
    q = np.clip(np.floor(blocks * inv[..., None] + 128.5), 0, 255).astype(np.uint8)
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=K, N=N, bits=8,
                            block_size=bs, accuracy_level=level)
    return _one(node, [numpy_helper.from_array(q, "B"), numpy_helper.from_array(scale.ravel(), "S")], K, N), (q, scale)


def _dqmm(W: np.ndarray):
    s = (np.abs(W).max(0) / 127).astype(np.float32)
    q = np.clip(np.rint(W / s), -127, 127).astype(np.int8)
    node = helper.make_node("DynamicQuantizeMatMul", ["A", "B", "S"], ["Y"], domain="com.microsoft")
    return _one(node, [numpy_helper.from_array(q, "B"), numpy_helper.from_array(s, "S")], *W.shape), (q, s)


def _emulate_block(A, q, scale, bs):
    M, K = A.shape
    N, kb, _ = q.shape
    Ab = np.pad(A, ((0, 0), (0, kb * bs - K))).reshape(M, kb, bs)
    amax = np.abs(Ab).max(-1)
    inv = np.where(amax != 0, 127 / np.where(amax == 0, 1, amax), 0).astype(np.float32)
    dots = np.einsum("mkb,nkb->mnk", np.rint(Ab * inv[..., None]).astype(np.int64), q.astype(np.int64) - 128)
    return (dots.astype(np.float32) * ((amax / 127).astype(np.float32)[:, None, :] * scale[None])).sum(-1, dtype=np.float32)


def _emulate_tensor(A, q, s):
    lo, hi = min(A.min(), 0), max(A.max(), 0)
    sc = np.float32((hi - lo) / 255)
    zp = np.rint(np.clip(-lo / sc, 0, 255))
    qa = np.clip(np.rint(A / sc) + zp, 0, 255).astype(np.int64) - zp.astype(np.int64)
    return ((qa @ q.astype(np.int64)).astype(np.float32) * (sc * s)).astype(np.float32)


def _time(s: ort.InferenceSession, A: np.ndarray, reps: int) -> float:
    s.run(None, {"A": A})
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            s.run(None, {"A": A})
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e6


def kernels() -> None:
    rng = np.random.default_rng(0)
    for K, N in ((576, 1536), (1536, 576)):
        W = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
        A = rng.standard_normal((64, K)).astype(np.float32)
        A[:, :4] *= 20  # outlier channels
        rel = lambda y, r: float(np.abs(y - r).max() / np.abs(r).max())
        for bs in (32, 128):
            s, (q, sc) = _nbits8(W, bs, 4)
            y = s.run(None, {"A": A})[0]
            print(f"K={K} N={N} MatMulNBits bits=8 block {bs} level 4: vs per-block int8 A emulation "
                  f"{rel(y, _emulate_block(A, q, sc, bs)):.1e}, vs f32 {rel(y, A @ W):.1e}")
        s, (q, sc) = _dqmm(W)
        y = s.run(None, {"A": A})[0]
        print(f"K={K} N={N} DynamicQuantizeMatMul: vs per-tensor uint8 A emulation "
              f"{rel(y, _emulate_tensor(A, q, sc)):.1e}, vs f32 {rel(y, A @ W):.1e}")
    print("time per product (us), best of 5, 2 threads:")
    for K, N in ((576, 1536), (1536, 576)):
        W = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
        forms = {"f32 MatMul": _one(helper.make_node("MatMul", ["A", "W"], ["Y"]), [numpy_helper.from_array(W, "W")], K, N),
                 "NBits8 b32 L4": _nbits8(W, 32, 4)[0], "NBits8 b128 L4": _nbits8(W, 128, 4)[0],
                 "NBits8 b128 L0": _nbits8(W, 128, 0)[0], "DynQuantMatMul": _dqmm(W)[0]}
        for M in (1, 32, 256):
            A = rng.standard_normal((M, K)).astype(np.float32)
            row = " | ".join(f"{k} {_time(s, A, 200 if M < 64 else 20):7.1f}" for k, s in forms.items())
            print(f"K={K} N={N} M={M}: {row}")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def smollm2(paths: list[str]) -> None:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(SMOL / "tokenizer.json")).encode(EVAL_TEXT.read_text()[:400000]).ids
    step = len(ids) // 4
    windows = [np.array([ids[i * step:i * step + 128]], np.int64) for i in range(4)]
    ref = _session(SMOL / "model.onnx")
    refs = [ref.run(None, {"input_ids": w})[0] for w in windows]
    for p in [str(SMOL / "model.onnx"), *paths]:
        s = _session(p)
        outs = [s.run(None, {"input_ids": w})[0] for w in windows]
        kl = np.mean([(np.exp(_log_softmax(r)) * (_log_softmax(r) - _log_softmax(o))).sum(-1).mean()
                      for o, r in zip(outs, refs)])
        top1 = np.mean([(o.argmax(-1) == r.argmax(-1)).mean() for o, r in zip(outs, refs)])
        nll = np.mean([-np.take_along_axis(_log_softmax(o)[0, :-1], w[0, 1:, None], -1).mean()
                       for o, w in zip(outs, windows)])
        times = []
        for m in (128, 1):
            w = windows[0][:, :m]
            s.run(None, {"input_ids": w})
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                s.run(None, {"input_ids": w})
                best = min(best, time.perf_counter() - t)
            times.append(best * 1e3)
        print(f"{Path(p).name:28s} KL {kl:.4f}  top-1 {top1:.3f}  ppl {np.exp(nll):.3f}  "
              f"forward 128 tokens {times[0]:.0f} ms, 1 token {times[1]:.1f} ms")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "kernels":
        kernels()
    elif len(sys.argv) >= 2 and sys.argv[1] == "smollm2":
        smollm2(sys.argv[2:])
    else:
        sys.exit(__doc__)
