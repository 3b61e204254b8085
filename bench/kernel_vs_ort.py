"""llmopt's int4 kernels (backend/cpu/kernels) against ONNX Runtime's MatMulNBits, one table.

    .venv/bin/python bench/kernel_vs_ort.py [--build build-kern] [--quick]

For each K x N (4096x4096, 4096x11008, 11008x4096, 768x3072), int4 block 32 and 128
(symmetric), M = 1, 32, 128 and two cases:
  - dram:  calls rotate through enough weight copies that the working set passes
           --dram-mib (default 1200 MiB; L3 is far smaller), so weights come from DRAM
           (M in --dram-ms, default 1 and 32: M=128 is compute-bound);
  - cache: one copy, called again and again (it stays in L3 where it fits).
llmopt: `llmopt_kernel_bench` (int8 and f32 compute). ORT: one session per accuracy_level
(0 and 4) whose graph holds as many MatMulNBits nodes as copies, all reading the same A,
outputs bound once with IOBinding; time per node = time per run / nodes. Both use 2
threads (--threads). The machine's read bandwidth (2 GiB streamed by as many threads) is
measured first.
Ratios are ORT's best setting over llmopt's best (x > 1: llmopt is faster). Prints the load
average before and after: numbers taken under load are marked as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (768, 3072)]


def nbits_bytes(k: int, n: int, bs: int) -> int:
    blocks = -(-k // bs)
    return n * blocks * (bs // 2 + 4)


def ort_model(k: int, n: int, bs: int, acc: int, copies: int):
    """`copies` MatMulNBits nodes on one input A, each with its own (distinct) weights."""
    blocks = -(-k // bs)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, size=(n, blocks, bs // 2), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.02, size=(n * blocks,)).astype(np.float32)
    nodes, inits, outs = [], [], []
    for i in range(copies):
        b = np.bitwise_xor(base, np.uint8(i % 256))
        inits.append(helper.make_tensor(f"B{i}", TensorProto.UINT8, b.shape, b.tobytes(), raw=True))
        inits.append(helper.make_tensor(f"S{i}", TensorProto.FLOAT, [n, blocks],
                                        (scales * (1 + i * 1e-3)).astype(np.float32).tobytes(), raw=True))
        nodes.append(helper.make_node("MatMulNBits", ["A", f"B{i}", f"S{i}"], [f"Y{i}"],
                                      domain="com.microsoft", K=k, N=n, bits=4, block_size=bs,
                                      accuracy_level=acc))
        outs.append(helper.make_tensor_value_info(f"Y{i}", TensorProto.FLOAT, ["M", n]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])],
                          outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    return m


def ort_times(k, n, bs, acc, copies, ms, min_time, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(ort_model(k, n, bs, acc, copies).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    out = {}
    for m in ms:
        a = np.random.default_rng(2).uniform(-1, 1, size=(m, k)).astype(np.float32)
        bind = sess.io_binding()
        bind.bind_cpu_input("A", a)
        ys = [ort.OrtValue.ortvalue_from_numpy(np.empty((m, n), np.float32)) for _ in range(copies)]
        for i, y in enumerate(ys):
            bind.bind_ortvalue_output(f"Y{i}", y)
        sess.run_with_iobinding(bind)  # warm-up (and one full rotation)
        t0 = time.perf_counter()
        sess.run_with_iobinding(bind)
        per_run = time.perf_counter() - t0
        # Best of 5 timed batches of about min_time/5 each (at least one run).
        runs = max(1, math.ceil(min_time / 5 / per_run))
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(runs):
                sess.run_with_iobinding(bind)
            best = min(best, (time.perf_counter() - t0) / runs)
        out[m] = best / copies * 1e6
    del sess
    return out


def llmopt_times(binary, k, n, bs, ms, cases, dram_mib, min_time, threads):
    cmd = [str(binary), "--k", str(k), "--n", str(n), "--block", str(bs), "--ms",
           ",".join(map(str, ms)), "--computes", "int8,f32", "--cases", ",".join(cases),
           "--dram-mib", str(dram_mib), "--min-time", str(min_time), "--threads", str(threads)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=str(ROOT / "build"), help="build dir with bin/llmopt_kernel_bench")
    ap.add_argument("--quick", action="store_true", help="block 32, M 1 and 128, 4096x4096 and 4096x11008")
    ap.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES), help="KxN list")
    ap.add_argument("--blocks", default="32,128")
    ap.add_argument("--ms", default="1,32,128")
    ap.add_argument("--cases", default="dram,cache")
    ap.add_argument("--dram-ms", default="1,32",
                    help="M values also timed in the dram case (M=128 is compute-bound: cache only)")
    ap.add_argument("--dram-mib", type=float, default=1200)
    ap.add_argument("--min-time", type=float, default=0.4)
    ap.add_argument("--threads", type=int, default=2, help="llmopt threads and ORT intra-op threads")
    args = ap.parse_args()
    binary = Path(args.build) / "bin" / "llmopt_kernel_bench"
    if not binary.exists():
        sys.exit(f"kernel_vs_ort: {binary} not found (cmake --build {args.build} --target llmopt_kernel_bench)")
    shapes = [tuple(int(x) for x in sh.split("x")) for sh in args.shapes.split(",")]
    blocks = [int(b) for b in args.blocks.split(",")]
    ms = [int(m) for m in args.ms.split(",")]
    if args.quick:
        shapes, blocks, ms = SHAPES[:2], [32], [1, 128]
    cases = args.cases.split(",")
    dram_ms = [int(m) for m in args.dram_ms.split(",")]

    load0 = os.getloadavg()[0]
    bw = json.loads(subprocess.run([str(binary), "--bandwidth-mib", "2048", "--threads", str(args.threads)], check=True,
                                   capture_output=True, text=True).stdout)["bandwidth_gbps"]
    rows = []
    for k, n in shapes:
        for bs in blocks:
            ours = []
            for case in cases:
                case_ms = [m for m in ms if case == "cache" or m in dram_ms]
                if not case_ms:
                    continue
                ours += llmopt_times(binary, k, n, bs, case_ms, [case], args.dram_mib, args.min_time,
                                     args.threads)
                copies = 1 if case == "cache" else math.ceil(args.dram_mib * 2**20 / nbits_bytes(k, n, bs))
                ort_us = {acc: ort_times(k, n, bs, acc, copies, case_ms, args.min_time, args.threads)
                          for acc in (0, 4)}
                for m in case_ms:
                    mine = {r["compute"]: r for r in ours if r["case"] == case and r["m"] == m}
                    rows.append(dict(k=k, n=n, bs=bs, m=m, case=case, copies=copies,
                                     int8=mine["int8"]["us"], f32=mine["f32"]["us"],
                                     bytes=mine["int8"]["weight_bytes"], ort0=ort_us[0][m], ort4=ort_us[4][m],
                                     ort_bytes=nbits_bytes(k, n, bs)))
                    print(".", end="", flush=True, file=sys.stderr)
    load1 = os.getloadavg()[0]
    print(file=sys.stderr)

    print(f"read bandwidth (2 GiB, {args.threads} threads): {bw:.1f} GB/s; onnxruntime {ort.__version__}; "
          f"{args.threads} threads; "
          f"load average {load0:.2f} before, {load1:.2f} after"
          + ("  ** measured under load **" if max(load0, load1) >= 1.0 else ""))
    hdr = (f"{'K x N':>12} {'bs':>4} {'M':>4} {'case':>5} | {'llmopt i8':>10} {'llmopt f32':>10} | "
           f"{'ORT acc0':>10} {'ORT acc4':>10} | {'best GB/s':>9} {'%bw':>5} {'ORT GB/s':>8} {'%bw':>5} | "
           f"{'ORT/llmopt':>10}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        best = min(r["int8"], r["f32"])
        ort_best = min(r["ort0"], r["ort4"])
        gbps, ogbps = r["bytes"] / best / 1e3, r["ort_bytes"] / ort_best / 1e3
        print(f"{r['k']:>5} x {r['n']:<5} {r['bs']:>4} {r['m']:>4} {r['case']:>5} | {r['int8']:>10.1f} "
              f"{r['f32']:>10.1f} | {r['ort0']:>10.1f} {r['ort4']:>10.1f} | {gbps:>9.1f} {100 * gbps / bw:>4.0f}% "
              f"{ogbps:>8.1f} {100 * ogbps / bw:>4.0f}% | {ort_best / best:>9.2f}x")
    print("times in microseconds per call (ORT: per node); GB/s = weight bytes (data + scales) / time; "
          "ORT/llmopt = ORT's best accuracy_level over llmopt's best compute mode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
