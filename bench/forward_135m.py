#!/usr/bin/env python3
"""Time one forward pass of a 512-token sequence through a 135M-parameter Llama-shaped
model (SmolLM2-135M's shapes, random weights: timing only, not quality) in llmopt's
reference interpreter (`llmopt-run`) and in ONNX Runtime, measured in the same run.

Run by hand:  .venv/bin/python bench/forward_135m.py [--seq 512] [--repeat 3]
Prints seconds per forward for both and their ratio (interpreter / ORT).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "models"))
from gen_tiny_llama import random_llama_weights  # noqa: E402
from llama_onnx import LlamaConfig, build_model, save_model  # noqa: E402

SMOLLM2_135M = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                           num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0,
                           rms_norm_eps=1e-5, max_position_embeddings=8192, tie_word_embeddings=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build", default=os.environ.get("LLMOPT_BUILD", str(REPO / "build")))
    args = ap.parse_args()
    work = Path(tempfile.gettempdir()) / "llmopt-bench"
    work.mkdir(exist_ok=True)
    model = work / "llama-135m-random.onnx"
    if not model.exists():
        weights = random_llama_weights(SMOLLM2_135M, seed=0)
        save_model(build_model(SMOLLM2_135M, weights), model)
    ids = np.random.default_rng(0).integers(0, SMOLLM2_135M.vocab_size, size=(1, args.seq), dtype=np.int64)
    np.save(work / "ids.npy", ids)

    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 2
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    sess.run(None, {"input_ids": ids})  # warm-up
    ort_times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        sess.run(None, {"input_ids": ids})
        ort_times.append(time.perf_counter() - t)

    run = Path(args.build) / "bin" / "llmopt-run"
    llm_times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run([str(run), str(model), "--inputs", str(work / "ids.npy")], check=True,
                       capture_output=True)
        llm_times.append(time.perf_counter() - t)
    o, l = min(ort_times), min(llm_times)
    print(f"model: SmolLM2-135M shapes, random weights, {model.stat().st_size / 1e6:.0f} MB, seq {args.seq}, "
          f"{os.cpu_count()} threads")
    print(f"onnxruntime {ort.__version__}: {o:.3f} s per forward (best of {args.repeat})")
    print(f"llmopt-run (incl. load):  {l:.3f} s per forward (best of {args.repeat})")
    print(f"ratio llmopt / ORT: {l / o:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
