#!/usr/bin/env python3
"""Parameters, file size, ONNX Runtime latency and perplexity of a model and its
structurally pruned variants (prune-struct), side by side.

    python bench/prune_struct_latency.py BASE.onnx PRUNED10.onnx PRUNED25.onnx \
        --tokenizer tokenizer.json --eval kjv-eval.txt [--threads 2] [--runs 10] [--seq 512]

Latency: one forward of a [1, seq] input (random ids) per run, in ONNX Runtime's CPU
provider with the default graph optimization level and the same intra-op thread count for
every model; the models take turns run by run (so drift on a shared machine hits them alike)
after two warm-up runs each; the median is reported, and its ratio to the first model's.
Perplexity: the first --ppl-tokens tokens of --eval, cut into windows of --seq tokens
without overlap, every next token scored (as llmopt-eval does). Parameters: elements of
the float initializers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def params_and_bytes(path: Path) -> tuple[int, int]:
    """Float initializer elements, and bytes on disk (model file + external data)."""
    m = onnx.load(str(path), load_external_data=False)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    n = sum(int(np.prod(t.dims)) for t in m.graph.initializer if t.data_type in floats)
    files = {path} | {path.parent / e.value for t in m.graph.initializer for e in t.external_data
                      if e.key == "location"}
    return n, sum(f.stat().st_size for f in files)


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def feeds_for(sess: ort.InferenceSession, ids: np.ndarray) -> dict[str, np.ndarray]:
    """input_ids plus empty KV-cache inputs (past length 0) when the model has them."""
    feeds = {"input_ids": ids}
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values"):
            feeds[i.name] = np.zeros((ids.shape[0], i.shape[1], 0, i.shape[3]), np.float32)
    return feeds


def perplexity(sess: ort.InferenceSession, ids: list[int], seq: int) -> float:
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, seq):
        window = np.array(ids[start:start + seq], dtype=np.int64)[None]
        if window.shape[1] < 2:
            break
        logits = sess.run(None, feeds_for(sess, window))[0][0].astype(np.float64)
        logits -= logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll -= logp[np.arange(window.shape[1] - 1), window[0, 1:]].sum()
        count += window.shape[1] - 1
    return float(np.exp(nll / count))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="the base model first, then pruned ones")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer.json (for --eval)")
    ap.add_argument("--eval", type=Path, help="held-out text for perplexity")
    ap.add_argument("--ppl-tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seq", type=int, default=512)
    args = ap.parse_args()

    sessions = [session(m, args.threads) for m in args.models]
    ids = np.random.default_rng(0).integers(0, 1000, size=(1, args.seq), dtype=np.int64)
    for s in sessions:
        for _ in range(2):
            s.run(None, feeds_for(s, ids))
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(args.runs):
        for s, t in zip(sessions, times):
            f = feeds_for(s, ids)
            t0 = time.perf_counter()
            s.run(None, f)
            t.append(time.perf_counter() - t0)
    tokens: list[int] = []
    if args.eval and args.tokenizer:
        from tokenizers import Tokenizer
        tokens = Tokenizer.from_file(str(args.tokenizer)).encode(args.eval.read_text()).ids[:args.ppl_tokens]

    base = statistics.median(times[0])
    print(f"ORT {ort.__version__}, CPU, {args.threads} intra-op threads, default optimization; "
          f"[1, {args.seq}] forward, median of {args.runs}")
    print(f"{'model':<40} {'params':>12} {'bytes':>12} {'latency ms':>11} {'ratio':>6} {'ppl':>9}")
    p0 = None
    for path, s, t in zip(args.models, sessions, times):
        n, size = params_and_bytes(path)
        p0 = p0 or n
        med = statistics.median(t)
        ppl = f"{perplexity(s, tokens, args.seq):9.3f}" if tokens else f"{'-':>9}"
        print(f"{path.name:<40} {n:>12} {size:>12} {med * 1e3:>11.1f} {med / base:>6.3f} {ppl}"
              f"   ({n / p0:.3f} of the parameters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
