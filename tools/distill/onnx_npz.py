"""Move a model's float initializers between ONNX and .npz, for training outside ONNX.

    python tools/distill/onnx_npz.py export student.onnx student.npz
    python tools/distill/onnx_npz.py import student.onnx trained.npz student.kd.onnx

``export`` writes every float initializer (external data loaded) by name; ``import`` replaces
the initializers the .npz names (same shapes required) and writes a new model, through a
temporary file renamed into place. Runs with the project's .venv (``onnx``); train_kd.py,
which needs torch, reads and writes the .npz under Debian's /usr/bin/python3.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def export(model: Path, out: Path) -> int:
    m = onnx.load(model)
    arrays = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    np.savez(out, **arrays)
    print(f"{out}: {len(arrays)} arrays, {sum(a.size for a in arrays.values())} values")
    return 0


def import_(model: Path, weights: Path, out: Path) -> int:
    m = onnx.load(model)
    new = np.load(weights)
    done = 0
    for t in m.graph.initializer:
        if t.name not in new.files:
            continue
        a = new[t.name]
        old = numpy_helper.to_array(t)
        if a.shape != old.shape:
            sys.exit(f"{weights}: '{t.name}' has shape {a.shape}, the model's is {old.shape}")
        t.CopyFrom(numpy_helper.from_array(a.astype(old.dtype), t.name))
        done += 1
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".tmp.", dir=out.parent)
    os.close(fd)
    try:
        onnx.save(m, tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"{out}: replaced {done} of {len(new.files)} arrays")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("model", type=Path)
    e.add_argument("out", type=Path)
    i = sub.add_parser("import")
    i.add_argument("model", type=Path)
    i.add_argument("weights", type=Path)
    i.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    return export(a.model, a.out) if a.cmd == "export" else import_(a.model, a.weights, a.out)


if __name__ == "__main__":
    sys.exit(main())
