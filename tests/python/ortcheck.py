"""Helpers the ONNX Runtime comparison tests share: run a model in llmopt's interpreter
(`llmopt-run`) and compare arrays with the stated relative-error and cosine measures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def interp(runner: Path, model: Path, feeds: dict[str, np.ndarray], work: Path) -> list[np.ndarray]:
    """Every output of `model` run by `llmopt-run` on `feeds` (written as TensorProto files)."""
    work.mkdir(parents=True, exist_ok=True)
    ins = []
    for i, (name, value) in enumerate(feeds.items()):
        p = work / f"input_{i}.pb"
        p.write_bytes(numpy_helper.from_array(value, name).SerializeToString())
        ins.append(str(p))
    dump = work / "out"
    for old in dump.glob("output_*.pb"):
        old.unlink()
    proc = subprocess.run([str(runner), str(model), "--inputs", *ins, "--dump-outputs", str(dump)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    outs = []
    for i in range(len(list(dump.glob("output_*.pb")))):
        t = onnx.TensorProto()
        t.ParseFromString((dump / f"output_{i}.pb").read_bytes())
        outs.append(numpy_helper.to_array(t))
    return outs


def rel(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (in f64)."""
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def cos(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the flattened arrays (in f64)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
