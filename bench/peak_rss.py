#!/usr/bin/env python3
"""Peak RSS of `llmopt in.onnx -passes=PIPELINE -o out.onnx` on synthetic Llamas of growing size.

    python bench/peak_rss.py [--gib 1 2 4] [--passes quant-int4] [--llmopt build/bin/llmopt]
                             [--tmp DIR] [--keep]

Not part of CI (minutes, several GiB of disk). For each size it writes a model with
tools/models/make_synthetic_llama.py into a fresh temporary folder (after checking the free
disk: the weights plus 25% for the output), runs llmopt under `/usr/bin/time -v`, and prints
one Markdown table row: input bytes, layers, peak RSS, wall time, output bytes. The folder is
deleted after each size (also on failure) unless --keep. The page cache is not dropped: the
first read of each model comes from the cache the generator just filled, as it would after a
download.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "models" / "make_synthetic_llama.py"


def dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.iterdir() if f.is_file())


def measure(gib: float, args: argparse.Namespace) -> dict[str, str]:
    base = Path(args.tmp)
    need = gib * (1 << 30) * 1.25
    free = shutil.disk_usage(base).free
    if free < need:
        raise SystemExit(f"peak_rss: {base}: {free / 2**30:.1f} GiB free, need {need / 2**30:.1f}")
    work = Path(tempfile.mkdtemp(prefix=f"llmopt-rss-{gib:g}g-", dir=base))
    try:
        model = work / "in" / "model.onnx"
        gen = subprocess.run([sys.executable, str(GENERATOR), "--gib", str(gib), "-o", str(model)],
                             check=True, capture_output=True, text=True)
        layers = re.search(r"(\d+) layers", gen.stdout).group(1)
        in_bytes = dir_bytes(model.parent)
        (work / "out").mkdir()
        out = work / "out" / "model.onnx"
        cmd = ["/usr/bin/time", "-v", args.llmopt, str(model), f"-passes={args.passes}",
               "-o", str(out)] + args.extra
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"peak_rss: {' '.join(cmd)} failed ({run.returncode}):\n{run.stderr}")
        rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
        wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", run.stderr).group(1)
        return {"gib": f"{gib:g}", "layers": layers, "in": f"{in_bytes / 2**30:.2f} GiB",
                "rss": f"{rss_kb / 1024:.0f} MiB", "wall": wall,
                "out": f"{dir_bytes(out.parent) / 2**20:.0f} MiB",
                "ratio": f"{rss_kb * 1024 / in_bytes:.3f}"}
    finally:
        if args.keep:
            print(f"peak_rss: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, nargs="+", default=[1, 2, 4])
    ap.add_argument("--passes", default="quant-int4")
    ap.add_argument("--llmopt", default=str(ROOT / "build" / "bin" / "llmopt"))
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    ap.add_argument("extra", nargs="*", help="more llmopt arguments (after --)")
    args = ap.parse_args()
    print(f"llmopt -passes={args.passes} {' '.join(args.extra)}".rstrip())
    print("| fp32 size | layers | input (model + data) | peak RSS | RSS / input | wall | output |")
    print("|---|---|---|---|---|---|---|")
    for gib in args.gib:
        r = measure(gib, args)
        print(f"| {r['gib']} GiB | {r['layers']} | {r['in']} | {r['rss']} | {r['ratio']} "
              f"| {r['wall']} | {r['out']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
