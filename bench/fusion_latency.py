#!/usr/bin/env python3
"""ONNX Runtime latency of a decoder before and after fusion (issue 5), side by side.

    python bench/fusion_latency.py --model ~/.cache/llmopt/models/smollm2-135m \
        [--llmopt build/bin/llmopt] [--threads 2] [--runs 5] [--seq 512] [--out DIR]

Three forms of the same model, each timed on a 512-token forward (``model.onnx``, input
[1, seq]) and on one decode step (``model_past.onnx``: one new token after a cache of
seq - 1 positions, the cache taken from the original model's prefill):

* ``original``: the model as written, ORT's default graph optimization level;
* ``ort-optimizer``: after ``onnxruntime.transformers.optimizer.optimize_model`` with each
  model type in --model-types (the best one that runs and matches is reported; all tried
  are printed);
* ``llmopt``: after ``llmopt -passes=fuse-llm --target=ort``.

Every session uses the CPU provider with the same intra-op thread count and ORT's default
optimization level. The forms take turns run by run after two warm-up runs each (so drift
on a shared machine hits them alike); the median is reported with its ratio to the
original's. Each form's logits (and the decode step's present cache) are compared with the
original's as max |a - b| / max |b|.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def ort_optimize(src: Path, out: Path, model_type: str, heads: int, hidden: int) -> Path | None:
    """ORT's transformer optimizer on `src`; None when it fails for this model type."""
    from onnxruntime.transformers.optimizer import optimize_model

    if out.exists():  # made by an earlier run with the same --out
        return out
    try:
        m = optimize_model(str(src), model_type=model_type, num_heads=heads, hidden_size=hidden,
                           opt_level=0, use_gpu=False)
        m.save_model_to_file(str(out), use_external_data_format=True)
        return out
    except Exception as e:  # noqa: BLE001 - any failure means "does not apply"
        print(f"  ort-optimizer {model_type}: failed ({type(e).__name__}: {str(e)[:120]})")
        return None


def llmopt_fuse(llmopt: Path, src: Path, out: Path, reuse: bool) -> Path:
    if reuse and out.exists():
        return out
    subprocess.run([str(llmopt), str(src), "-passes=fuse-llm", "--target=ort", "-o", str(out),
                    "--quiet"], check=True)
    return out


def time_forms(forms: dict[str, ort.InferenceSession], feeds: dict[str, np.ndarray],
               runs: int) -> dict[str, float]:
    """Median seconds per run, the forms taking turns."""
    times: dict[str, list[float]] = {k: [] for k in forms}
    for _ in range(2):
        for s in forms.values():
            s.run(None, feeds)
    for _ in range(runs):
        for k, s in forms.items():
            t = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True,
                    help="folder with model.onnx, model_past.onnx and config.json")
    ap.add_argument("--llmopt", type=Path, default=REPO / "build" / "bin" / "llmopt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--model-types", default="gpt2,gpt_neox,qwen3",
                    help="ORT optimizer model types to try (comma-separated)")
    ap.add_argument("--out", type=Path, default=None, help="where to keep the converted models")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the fused model found in --out (ORT's are always reused)")
    ap.add_argument("--only", choices=["forward", "decode"], default=None)
    args = ap.parse_args(argv)

    import json

    cfg = json.loads((args.model / "config.json").read_text())
    heads = int(cfg.get("num_attention_heads", 0))
    hidden = int(cfg.get("hidden_size", 0))
    kv_heads = int(cfg.get("num_key_value_heads", heads))
    head_dim = hidden // heads
    layers = int(cfg["num_hidden_layers"])
    out = args.out or Path(tempfile.mkdtemp(prefix="fusion-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"threads {args.threads}, runs {args.runs}, seq {args.seq}, ORT {ort.__version__}, "
          f"models in {out}")

    rng = np.random.default_rng(0)
    ids = rng.integers(0, int(cfg.get("vocab_size", 1000)), size=(1, args.seq), dtype=np.int64)
    report = []
    for kind, name in (("forward", "model.onnx"), ("decode", "model_past.onnx")):
        if args.only and kind != args.only:
            continue
        src = args.model / name
        paths = {"original": src}
        for mt in args.model_types.split(","):
            p = ort_optimize(src, out / f"{src.stem}.ort-{mt}.onnx", mt, heads, hidden)
            if p:
                paths[f"ort-optimizer:{mt}"] = p
        paths["llmopt"] = llmopt_fuse(args.llmopt, src, out / f"{src.stem}.fused.onnx", args.reuse)
        sessions = {k: session(p, args.threads) for k, p in paths.items()}
        if kind == "forward":
            feeds = {"input_ids": ids}
        else:
            empty = np.zeros((1, kv_heads, 0, head_dim), np.float32)
            past = {f"past_key_values.{i}.{k}": empty for i in range(layers) for k in ("key", "value")}
            prefill = sessions["original"].run(None, {"input_ids": ids[:, :-1], **past})
            names = [o.name for o in sessions["original"].get_outputs()]
            feeds = {"input_ids": ids[:, -1:],
                     **{n.replace("present", "past_key_values"): v
                        for n, v in zip(names[1:], prefill[1:])}}
        ref = sessions["original"].run(None, feeds)
        ok = {}
        for k, s in sessions.items():
            got = s.run(None, feeds)
            err = max(rel(g, r) for g, r in zip(got, ref))
            ok[k] = err
        times = time_forms(sessions, feeds, args.runs)
        base = times["original"]
        opt = [k for k in times if k.startswith("ort-optimizer") and ok[k] < 1e-3]
        best = min(opt, key=lambda k: times[k]) if opt else None
        print(f"\n{kind} ({name}):")
        for k in sessions:
            mark = " (best ORT optimizer type)" if k == best else ""
            print(f"  {k:24s} {times[k] * 1e3:9.1f} ms  x{base / times[k]:5.2f} vs original  "
                  f"max rel err {ok[k]:.1e}{mark}")
        report.append((kind, times, ok, best))
    print("\nratios (original / form; > 1 is faster):")
    for kind, times, ok, best in report:
        line = f"  {kind:8s} llmopt x{times['original'] / times['llmopt']:.2f}"
        if best:
            line += (f", {best} x{times['original'] / times[best]:.2f}, llmopt vs it "
                     f"x{times[best] / times['llmopt']:.2f}")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
