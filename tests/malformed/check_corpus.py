#!/usr/bin/env python3
"""Runs llmopt on every case of the malformed corpus (make_corpus.py writes it afresh).

Each case must exit with status 1, print exactly one line to stderr ("llmopt: error: ...")
that contains the case's expected strings (the problem and where: file, node, tensor), print
no sanitizer report, and leave nothing at the -o path: no model, no temporary file.

Usage: check_corpus.py --llmopt PATH --tmp DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def check(llmopt: str, root: Path, case: dict) -> list[str]:
    model = root / case["model"]
    d = model.parent
    out = d / "out.onnx"
    args = [a.replace("{dir}", str(d)) for a in case["args"]]
    cmd = [llmopt, str(model), *args, "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    problems = []
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if r.returncode != 1:
        problems.append(f"exit status {r.returncode}, expected 1")
    if len(lines) != 1 or not lines[0].startswith("llmopt: error: "):
        problems.append(f"stderr is not one 'llmopt: error:' line: {r.stderr!r}")
    elif str(model) not in lines[0]:
        problems.append(f"message does not name the file: {lines[0]!r}")
    for want in case["expect"]:
        if want.lower() not in r.stderr.lower():
            problems.append(f"message lacks {want!r}: {r.stderr.strip()!r}")
    if "Sanitizer" in r.stderr or "runtime error:" in r.stderr:
        problems.append("sanitizer report")
    leftovers = sorted(p.name for p in d.iterdir() if p.name.startswith("out.onnx"))
    if leftovers:
        problems.append(f"left files behind: {leftovers}")
    return [f"{case['name']}: {p}  [{' '.join(cmd)}]" for p in problems]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llmopt", required=True)
    ap.add_argument("--tmp", required=True, type=Path)
    a = ap.parse_args()
    shutil.rmtree(a.tmp, ignore_errors=True)
    subprocess.run([sys.executable, str(HERE / "make_corpus.py"), str(a.tmp)], check=True,
                   stdout=subprocess.DEVNULL)
    cases = json.loads((a.tmp / "cases.json").read_text())
    failures = []
    for case in cases:
        failures += check(a.llmopt, a.tmp, case)
    for f in failures:
        print("FAIL", f)
    bad = len({f.split(":")[0] for f in failures})
    print(f"malformed corpus: {len(cases)} cases, {len(cases) - bad} exit 1 with one line naming "
          f"the problem and no output file, {bad} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
