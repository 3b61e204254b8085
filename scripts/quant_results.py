#!/usr/bin/env python3
"""llmopt's own quantization (and pruning) rows for docs/results.md (run by hand, not CI).

Writes each model with ``build/bin/llmopt`` (the pipelines below; calibrated ones read
``--calib-samples`` windows of 512 tokens of kjv-calib.txt), then evaluates them exactly as
``scripts/baselines.py`` evaluates ONNX Runtime's quantizer (same windows, same ppl / KL /
top-1 / bpw definitions; see its docstring) in ONNX Runtime, all models in lockstep, and
with ``--interp`` also in llmopt's interpreter with ``llmopt-eval`` (one lockstep run, the
fp32 reference computed once per window) to show that the two agree.

    .venv/bin/python scripts/quant_results.py --json quant.json [--only NAME...] [--interp]

Models go to ``$LLMOPT_CACHE/models/smollm2-135m-llmopt/NAME/model.onnx`` (and
``all-minilm-l6-v2-llmopt``); ``--reuse`` keeps those already written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "models"))
sys.path.insert(0, str(REPO / "scripts"))

from baselines import (_is_linear, eval_minilm, eval_smollm2, log, token_windows,  # noqa: E402
                       weight_figures)
from cache_paths import model_dir, text_dir  # noqa: E402

LLMOPT = REPO / "build" / "bin" / "llmopt"
EVAL = REPO / "build" / "bin" / "llmopt-eval"

#: name -> (pipeline [extra llmopt flags], needs calibration). Block 128 rows sit beside
#: ORT's block-128 rows. llmopt writes MatMulNBits with accuracy_level 4 (int8 activations)
#: unless a row says --accuracy-level=0; ORT's quantizer rows in docs/results.md are level 0.
SMOL = {
    "int8-b128": ("quant-int8<block=128>", False),
    # Weight-only int8 as weight-only: f32 activations (MatMulNBits accuracy_level 0).
    "int8-b128-acc0": ("quant-int8<block=128> --accuracy-level=0", False),
    "rtn-sym-b128-acc0": ("quant-int4<block=128> --accuracy-level=0", False),
    "gptq-sym-b128-acc0": ("quant-int4<method=gptq;block=128> --accuracy-level=0", True),
    "fp16": ("quant-fp16", False),
    "bf16": ("quant-bf16", False),
    "w8a8-b128": ("quant-w8a8", True),
    "rtn-sym-b128": ("quant-int4<block=128>", False),
    "hqq-b128": ("quant-int4<method=hqq;block=128>", False),
    "gptq-sym-b128": ("quant-int4<method=gptq;block=128>", True),
    "gptq-asym-b128": ("quant-int4<method=gptq;asym;block=128>", True),
    "awq-sym-b128": ("quant-int4<method=awq;block=128>", True),
    # Mixed at the whole-model bpw of uniform int4 block 128 with the embedding in f32
    # (10.1143 for SmolLM2, as the gptq-sym-b128 file measures).
    "mixed-kl-b128": ("quant-mixed<bpw=10.1143;metric=kl;candidates=2,4,8,16>", True),
    "mixed-kl-blocks": ("quant-mixed<bpw=10.1143;metric=kl;candidates=2,4,8;blocks=32,64,128,256>",
                        True),
    "mixed-hessian-b128": ("quant-mixed<bpw=10.1143;metric=hessian>", True),
    # Pruning (issue 7): 50% unstructured and 2:4, by magnitude, Wanda and SparseGPT.
    "prune-magnitude-50": ("prune-magnitude", False),
    "prune-wanda-50": ("prune-wanda", True),
    "prune-sparsegpt-50": ("prune-sparsegpt", True),
    "prune-nm24-magnitude": ("prune-nm", False),
    "prune-nm24-wanda": ("prune-nm<method=wanda>", True),
    "prune-nm24-sparsegpt": ("prune-nm<method=sparsegpt>", True),
    "mixed-relative-b128": ("quant-mixed<bpw=10.1143;metric=relative>", True),
}
MINI = {
    "int8-b128": ("quant-int8<block=128>", False),
    "rtn-sym-b128": ("quant-int4<block=128>", False),
    "gptq-sym-b128": ("quant-int4<method=gptq;block=128>", True),
    "awq-sym-b128": ("quant-int4<method=awq;block=128>", True),
    "mixed-kl-blocks": ("quant-mixed<bpw={bpw};metric=kl;candidates=2,4,8;blocks=32,64,128,256>",
                        True),
    # every format probed end to end, sym and asym formats
    "mixed-kl-both-all": ("quant-mixed<bpw={bpw};metric=kl;candidates=2,4,8;blocks=32,64,128,256;"
                          "mode=both;probe=all>", True),
}


def run_llmopt(src: Path, dst: Path, pipeline: str, calib: bool, tokenizer: Path,
               samples: int, seqlen: int) -> dict[str, Any]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    pipeline, *flags = pipeline.split(" ")
    cmd = [str(LLMOPT), str(src), f"-passes={pipeline}", *flags, "-o", str(dst), "--report=json"]
    if calib:
        cmd += ["--calib", str(text_dir() / "kjv-calib.txt"), "--tokenizer", str(tokenizer),
                "--calib-samples", str(samples), "--calib-seqlen", str(seqlen)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"llmopt failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    report = json.loads(proc.stdout)
    return {"pipeline": pipeline, "quantize_seconds": secs, "command": " ".join(cmd),
            "report": report.get("passes", report.get("pipeline", {}))}


def llmopt_eval(fp32: Path, models: dict[str, Path], tokenizer: Path, max_tokens: int) -> dict:
    names = list(models)
    cmd = [str(EVAL), *[str(models[n]) for n in names], "--reference", str(fp32), "--ppl",
           str(text_dir() / "kjv-eval.txt"), "--tokenizer", str(tokenizer), "--json"]
    if max_tokens:
        cmd += ["--max-tokens", str(max_tokens)]
    log("llmopt-eval: " + " ".join(cmd))
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    rows = [out, *out.get("more", [])]
    res = {"fp32": {"ppl": out["ref_ppl"], "predictions": out["tokens_scored"]}}
    for name, r in zip(names, rows):
        res[name] = {k: r.get(k) for k in ("ppl", "kl_mean", "top1", "max_abs_logit_diff",
                                             "tokens_scored")}
    res["seconds"] = out["seconds"]
    return res


def markdown(table: dict[str, dict[str, Any]], interp: dict | None) -> str:
    lines = ["| model | ppl (ORT) | ppl (llmopt-eval) | mean KL | top-1 | file MB | bpw | "
             "bpw (linear) | quantize s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in table.items():
        ip = interp.get(name, {}).get("ppl") if interp else None
        lines.append("| {} | {:.3f} | {} | {} | {} | {:.1f} | {:.2f} | {} | {} |".format(
            name, r["ppl"], f"{ip:.3f}" if ip else "—",
            f"{r['kl']:.4f}" if "kl" in r else "—",
            f"{100 * r['top1']:.2f}%" if "top1" in r else "—", r["file_mb"], r["bpw"],
            f"{r['bpw_linear']:.2f}" if "bpw_linear" in r else "—",
            f"{r['quantize_seconds']:.0f}" if "quantize_seconds" in r else "—"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="SmolLM2 rows to run (default all)")
    ap.add_argument("--minilm", action="store_true", help="also the MiniLM rows")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--windows", type=int, default=0, help="ORT: first N windows only")
    ap.add_argument("--interp", action="store_true", help="also evaluate with llmopt-eval")
    ap.add_argument("--interp-tokens", type=int, default=0,
                    help="llmopt-eval: first N tokens only (default: the whole text)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    smol, text = model_dir("smollm2-135m"), text_dir()
    res: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv])}
    import onnx

    fp32 = onnx.load(str(smol / "model.onnx"), load_external_data=False)
    n_params = sum(int(np.prod(t.dims)) for t in fp32.graph.initializer)
    n_linear = sum(int(np.prod(t.dims)) for t in fp32.graph.initializer if _is_linear(t.name))
    del fp32
    names = args.only or list(SMOL)
    paths, info = {}, {}
    for name in names:
        pipeline, calib = SMOL[name]
        dst = model_dir("smollm2-135m-llmopt") / name / "model.onnx"
        if not (args.reuse and dst.exists()):
            log(f"SmolLM2 {name}: {pipeline}")
            info[name] = run_llmopt(smol / "model.onnx", dst, pipeline, calib,
                                    smol / "tokenizer.json", args.calib_samples, 512)
        paths[name] = dst
    windows, n_tokens = token_windows(text / "kjv-eval.txt", smol / "tokenizer.json")
    if args.windows:
        windows = windows[:args.windows]
    rows = eval_smollm2(smol / "model.onnx", paths, windows)
    table = {}
    for name in ["fp32", *names]:
        r = {**info.get(name, {}), **rows[name]}
        r.update(weight_figures(smol / "model.onnx" if name == "fp32" else paths[name], n_params,
                                n_linear))
        table[name] = r
    interp = llmopt_eval(smol / "model.onnx", paths, smol / "tokenizer.json",
                         args.interp_tokens) if args.interp else None
    res["smollm2"] = {"rows": table, "llmopt_eval": interp, "windows": len(windows),
                      "tokens": n_tokens}
    print(markdown(table, interp))

    if args.minilm:
        mini = model_dir("all-minilm-l6-v2")
        m = onnx.load(str(mini / "model.onnx"))
        mp = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
        ml = sum(int(np.prod(t.dims)) for t in m.graph.initializer if _is_linear(t.name))
        del m
        # Mixed at the bpw the uniform int4 block-128 file has.
        mpaths, minfo = {}, {}
        for name, (pipeline, calib) in MINI.items():
            if "{bpw}" in pipeline:
                bpw = weight_figures(mpaths["rtn-sym-b128"], mp, ml)["bpw"]
                pipeline = pipeline.format(bpw=f"{bpw:.4f}")
            dst = model_dir("all-minilm-l6-v2-llmopt") / name / "model.onnx"
            if not (args.reuse and dst.exists()):
                log(f"MiniLM {name}: {pipeline}")
                minfo[name] = run_llmopt(mini / "model.onnx", dst, pipeline, calib,
                                         mini / "tokenizer.json", args.calib_samples, 128)
            mpaths[name] = dst
        sentences = (text / "kjv-eval.txt").read_text(encoding="utf-8").splitlines()
        mrows = eval_minilm(mini / "model.onnx", mpaths, sentences, mini / "tokenizer.json")
        mtable = {}
        for name in MINI:
            r = {**minfo.get(name, {}), **mrows[name]}
            r.update(weight_figures(mpaths[name], mp, ml))
            mtable[name] = r
            print(f"MiniLM {name}: cos mean {r['cos_mean']:.5f} min {r['cos_min']:.4f} "
                  f"NN {r['nn_agree']:.4f} bpw {r['bpw']:.2f} file {r['file_mb']:.1f} MB")
        res["minilm"] = {"rows": mtable}
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
