#!/usr/bin/env python3
"""RTN quantization throughput: llmopt vs ONNX Runtime's quantizer on the same weights.

A synthetic model holds LAYERS x (DIM x DIM) fp32 MatMul weights (default 16 x 4096^2 =
1 GiB, beyond the 260 MiB L3, so the weights stream from DRAM). Both tools quantize every
weight to 4-bit symmetric blocks of --block along K, end to end (load, quantize, write):

* llmopt:  ``llmopt in.onnx -passes=quant-int4<block=B> --threads T -o out.onnx --time-passes``
  (the pass's own time is read from --time-passes);
* ORT:     ``MatMulNBitsQuantizer(model, block_size=B, is_symmetric=True)`` in Python, whose
  kernel is MLAS's ``quantize_matmul_4bits`` (timed alone as well).

Prints GB/s of fp32 weights for each and the ratios llmopt / ORT, measured in the same run.
``--gptq`` also times llmopt's GPTQ on SmolLM2-135M (calibration + algorithm), which needs
the prepared model and text (tools/models/convert_smollm2.py, prepare_text.py).

Run by hand:  .venv/bin/python bench/quant_throughput.py [--layers 16 --dim 4096] [--gptq]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "models"))


def synthetic(path: Path, layers: int, dim: int) -> int:
    """x -> MatMul(W_0) -> ... -> MatMul(W_{layers-1}); returns the weight bytes."""
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((dim, dim), dtype=np.float32) * 0.02).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"y{i}"], name=f"mm{i}"))
        prev = f"y{i}"
    g = helper.make_graph(nodes, "rtn_bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, dim])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + ".data")
    return layers * dim * dim * 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gptq", action="store_true", help="also time GPTQ on SmolLM2-135M")
    ap.add_argument("--build", default=os.environ.get("LLMOPT_BUILD", str(REPO / "build")))
    args = ap.parse_args()
    llmopt = Path(args.build) / "bin" / "llmopt"
    work = Path(tempfile.gettempdir()) / "llmopt-bench"
    work.mkdir(exist_ok=True)
    src = work / f"rtn-{args.layers}x{args.dim}.onnx"
    nbytes = args.layers * args.dim * args.dim * 4
    if not src.exists():
        synthetic(src, args.layers, args.dim)
    gb = nbytes / 1e9
    print(f"weights: {args.layers} x {args.dim}x{args.dim} fp32 = {nbytes / 2**30:.2f} GiB; "
          f"4-bit sym, block {args.block}; {args.threads} threads")

    out = work / "rtn-llmopt.onnx"
    t0 = time.perf_counter()
    proc = subprocess.run([str(llmopt), str(src), f"-passes=quant-int4<block={args.block}>", "--threads",
                           str(args.threads), "--time-passes", "-o", str(out)],
                          capture_output=True, text=True, check=True)
    ll_total = time.perf_counter() - t0
    m = re.search(r"([\d.]+)s\s+[\d.]+%\s+quant-int4", proc.stderr)
    ll_pass = float(m.group(1)) if m else float("nan")

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)

    # MLAS kernel alone, over the same weights (one at a time, as the quantizer calls it).
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((args.dim, args.dim), dtype=np.float32) * 0.02).astype(np.float32)
    kb = (args.dim + args.block - 1) // args.block
    packed = np.zeros((args.dim, kb, args.block // 2), np.uint8)
    scales = np.zeros((args.dim * kb,), np.float32)
    zp = np.zeros((args.dim * ((kb + 1) // 2),), np.uint8)
    t0 = time.perf_counter()
    for _ in range(args.layers):
        quantize_matmul_4bits(packed, w, scales, zp, args.block, args.dim, args.dim, True)
    ort_kernel = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = onnx.load(str(src))
    cfg = DefaultWeightOnlyQuantConfig(block_size=args.block, is_symmetric=True)
    q = MatMulNBitsQuantizer(model, block_size=args.block, is_symmetric=True, algo_config=cfg)
    q.process()
    ort_out = work / "rtn-ort.onnx"
    q.model.save_model_to_file(str(ort_out), use_external_data_format=True)
    ort_total = time.perf_counter() - t0

    print(f"llmopt end to end (load, quantize, write): {ll_total:7.2f} s  {gb / ll_total:6.2f} GB/s")
    print(f"llmopt quant-int4 pass alone:              {ll_pass:7.2f} s  {gb / ll_pass:6.2f} GB/s")
    print(f"ORT MatMulNBitsQuantizer end to end:       {ort_total:7.2f} s  {gb / ort_total:6.2f} GB/s")
    print(f"ORT quantize_matmul_4bits kernel alone:    {ort_kernel:7.2f} s  {gb / ort_kernel:6.2f} GB/s")
    print(f"ratio llmopt / ORT: end to end {ort_total / ll_total:.2f}x faster, "
          f"quantization step {ort_kernel / ll_pass:.2f}x faster")

    if args.gptq:
        from cache_paths import model_dir, text_dir

        smol = model_dir("smollm2-135m")
        t0 = time.perf_counter()
        proc = subprocess.run([str(llmopt), str(smol / "model.onnx"), "-passes=quant-int4<method=gptq;block=128>",
                               "--calib", str(text_dir() / "kjv-calib.txt"), "--tokenizer",
                               str(smol / "tokenizer.json"), "--threads", str(args.threads),
                               "--time-passes", "--report", "-o", str(work / "gptq.onnx")],
                              capture_output=True, text=True, check=True)
        total = time.perf_counter() - t0
        cal = re.search(r"calibrated on .*?; ([\d.]+) s with the pass", proc.stdout)
        print(f"GPTQ SmolLM2-135M (32 x 512 calibration tokens, block 128): {total:.1f} s end to end"
              + (f"; calibration + GPTQ inside the pass {cal.group(1)} s" if cal else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
