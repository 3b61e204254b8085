#!/usr/bin/env python3
"""--emit=cpp on SmolLM2-135M: greedy tokens of the generated code vs llmopt's interpreter,
and decode-step latency of the generated code vs ONNX Runtime running llmopt's own
MatMulNBits model (same pipeline, same intra-op threads). Not a test: prints one table.

    python bench/codegen_smollm2.py --model ~/.cache/llmopt/models/smollm2-135m \
        [--build build] [--passes 'fuse-llm,quant-int4<block=32>'] [--threads 2] \
        [--context 128] [--steps 32] [--rounds 3] [--new-tokens 8] [--level 4] [--out DIR]
        [--reuse] [--skip-greedy]

Greedy: 5 prompts, --new-tokens each; the interpreter (llmopt-run on the same pipeline's
ONNX, MatMulNBits at --level) re-runs the whole sequence per token. Latency: after a
prefill of --context random tokens, --steps single-token decode steps (median per round);
the generated code and ORT take turns for --rounds rounds; the median round and the best
round are printed. ORT runs model_past.onnx after the same pipeline, feeding present back
as past each step. Figures: docs/codegen.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "The capital of France is",
    "In the beginning God created",
    "def fibonacci(n):",
    "Once upon a time, there was a little",
    "The three primary colors are",
]


def sh(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def interp_greedy(run: Path, model: Path, ids: list[int], n: int, tmp: Path) -> list[int]:
    out = []
    for _ in range(n):
        np.save(tmp / "ids.npy", np.array([ids + out], dtype=np.int64))
        sh(run, model, "--inputs", tmp / "ids.npy", "--dump-outputs", tmp / "ref", "--threads", "2")
        logits = numpy_helper.to_array(onnx.load_tensor(str(tmp / "ref" / "output_0.pb")))
        out.append(int(logits[0, -1].argmax()))
    return out


def ort_decode_ms(model: Path, cfg: dict, ids: np.ndarray, steps: int, threads: int) -> float:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    layers, kvh = cfg["num_layers"], cfg["num_kv_heads"]
    hd = cfg["head_dim"]
    empty = np.zeros((1, kvh, 0, hd), np.float32)
    feeds = {"input_ids": ids, **{f"past_key_values.{i}.{k}": empty for i in range(layers) for k in ("key", "value")}}
    names = [o.name for o in s.get_outputs()]
    res = s.run(None, feeds)
    times = []
    for _ in range(steps):
        nxt = np.array([[int(res[0][0, -1].argmax())]], np.int64)
        feeds = {"input_ids": nxt, **{n.replace("present", "past_key_values"): v for n, v in zip(names[1:], res[1:])}}
        t0 = time.perf_counter()
        res = s.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/llmopt/models/smollm2-135m")
    ap.add_argument("--build", type=Path, default=REPO / "build")
    ap.add_argument("--passes", default="fuse-llm,quant-int4<block=32>")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--level", type=int, default=4, help="accuracy level of both sides (4 int8, 0 f32)")
    ap.add_argument("--skip-greedy", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="keep the project and ONNX files already in --out")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import json

    cfg = json.loads((args.model / "config.json").read_text())
    cfg = {"num_layers": cfg.get("num_hidden_layers"), "num_kv_heads": cfg.get("num_key_value_heads"),
           "head_dim": cfg.get("hidden_size") // cfg.get("num_attention_heads"), "vocab": cfg.get("vocab_size")}
    out = args.out or Path(tempfile.mkdtemp(prefix="codegen-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    llmopt, run = args.build / "bin" / "llmopt", args.build / "bin" / "llmopt-run"
    passes = f"-passes={args.passes}"
    proj = out / "proj"
    demo = proj / "build" / "llmopt_model_demo"
    if not (args.reuse and demo.exists()):
        t0 = time.perf_counter()
        sh(llmopt, args.model / "model.onnx", passes, "--emit=cpp", f"--accuracy-level={args.level}", "-o", proj,
           "--quiet")
        emit_s = time.perf_counter() - t0
        sh("cmake", "-S", proj, "-B", proj / "build", "-DCMAKE_BUILD_TYPE=Release")
        sh("cmake", "--build", proj / "build", "-j2")
        print(f"emitted {proj} in {emit_s:.1f} s; weights.bin {(proj / 'weights.bin').stat().st_size / 2**20:.1f} MiB")

    env = dict(os.environ, LLMOPT_ACCURACY_LEVEL=str(args.level))
    if not args.skip_greedy:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
        q4 = out / f"model.q4-{args.level}.onnx"
        if not (args.reuse and q4.exists()):
            sh(llmopt, args.model / "model.onnx", passes, f"--accuracy-level={args.level}", "-o", q4, "--quiet")
        same = 0
        for p in PROMPTS:
            ids = tok.encode(p).ids
            gen = [int(t) for t in sh(demo, proj / "weights.bin", "--ids", ",".join(map(str, ids)), "--mode", "decode",
                                      "--generate", args.new_tokens, "--threads", args.threads, env=env).stdout.split()]
            ref = interp_greedy(run, q4, ids, args.new_tokens, out)
            same += gen == ref
            print(f"{'same' if gen == ref else 'DIFF'}  {p!r}: generated {gen} {tok.decode(gen)!r}; interpreter {ref}")
        print(f"greedy: {same}/{len(PROMPTS)} prompts give the same {args.new_tokens} tokens (level {args.level})")

    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg["vocab"], size=(1, args.context), dtype=np.int64)
    past = out / f"model_past.q4-{args.level}.onnx"
    if not (args.reuse and past.exists()):
        sh(llmopt, args.model / "model_past.onnx", passes, f"--accuracy-level={args.level}", "-o", past, "--quiet")
    # The two take turns (--rounds), so load on a shared machine hits both alike.
    gen, ortt = [], []
    for _ in range(args.rounds):
        r = sh(demo, proj / "weights.bin", "--ids", ",".join(map(str, ids[0])), "--mode", "decode",
               "--bench-steps", args.steps, "--threads", args.threads, env=env).stdout
        gen.append(float(r.split("median")[1].split()[0]))
        ortt.append(round(ort_decode_ms(past, cfg, ids, args.steps, args.threads), 3))
    gen_ms, ort_ms = statistics.median(gen), statistics.median(ortt)
    load = os.getloadavg()[0]
    print(f"decode step after {args.context} tokens, {args.threads} threads, median of {args.rounds} rounds x "
          f"{args.steps} steps, load average {load:.2f} (rounds: generated {gen}, ORT {ortt}):")
    print(f"| ORT {ort.__version__} (llmopt MatMulNBits model, accuracy_level {args.level}) | {ort_ms:.2f} ms "
          f"| best round {min(ortt):.2f} ms |")
    print(f"| generated C++ (--emit=cpp) | {gen_ms:.2f} ms | best round {min(gen):.2f} ms | "
          f"x{ort_ms / gen_ms:.2f} (best rounds x{min(ortt) / min(gen):.2f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
