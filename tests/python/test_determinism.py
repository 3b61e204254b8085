"""Deterministic output: the same input and pipeline give the same bytes, at any thread count.

On the bundled tiny Llama, each pipeline runs three times: twice with --threads 1 and once
with --threads 2. All three outputs (the .onnx file and, with --external-data, its data
file) must be byte-identical. A model read with external data (weights mmapped, quantized
weights spilled to disk, output streamed to external data) gives the same weights as the
same model read inline. Data-free passes (RTN, HQQ, magnitude pruning) and the
calibrated ones (GPTQ, SparseGPT, Wanda, AWQ on a fixed .ids file) are covered: calibration
sums the activation statistics and Hessians in a fixed order (rows in window order, the GEMM
splitting the output, not the reduction, across threads; see docs/notes.md), so they are
bit-reproducible too.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "tools" / "models"
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
LLMOPT = BUILD / "bin" / "llmopt"

#: Calibration: 8 windows of 32 tokens (the whole .ids file below).
SAMPLES, SEQLEN = 8, 32

DATA_FREE = [
    "quant-int4",
    "quant-int4<method=hqq;block=32>",
    "quant-int8",
    "prune-magnitude<sparsity=0.5>",
    "prune-magnitude,quant-int4",
]
CALIBRATED = [
    "quant-int4<method=gptq;block=32>",
    "quant-int4<method=awq>",
    "prune-sparsegpt<sparsity=0.5>",
    "prune-wanda<sparsity=0.5>",
]

pytestmark = pytest.mark.skipif(not LLMOPT.exists(), reason=f"{LLMOPT} not built")


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.ids"
    ids = np.random.default_rng(11).integers(0, 256, size=SAMPLES * SEQLEN)
    path.write_text("\n".join(" ".join(str(i) for i in row) for row in ids.reshape(-1, 16)) + "\n")
    return path


def _digest(out: Path) -> dict[str, str]:
    """sha256 of the model file and of every file written beside it."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(out.parent.iterdir()) if f.is_file()}


def _run(src: Path, pipeline: str, threads: int, out_dir: Path, extra: list[str]) -> dict[str, str]:
    out_dir.mkdir()
    out = out_dir / "out.onnx"
    proc = subprocess.run([str(LLMOPT), str(src), f"-passes={pipeline}", "--threads", str(threads),
                           "-o", str(out)] + extra, capture_output=True, text=True)
    assert proc.returncode == 0, f"llmopt -passes={pipeline} failed:\n{proc.stderr}"
    return _digest(out)


def _check(src: Path, pipeline: str, tmp_path: Path, extra: list[str]) -> None:
    first = _run(src, pipeline, 1, tmp_path / "t1a", extra)
    again = _run(src, pipeline, 1, tmp_path / "t1b", extra)
    two = _run(src, pipeline, 2, tmp_path / "t2", extra)
    assert first == again, f"{pipeline}: two runs at --threads 1 differ"
    assert first == two, f"{pipeline}: --threads 1 and --threads 2 differ"


@pytest.mark.parametrize("pipeline", DATA_FREE)
def test_data_free_passes_are_bit_reproducible(llama, tmp_path, pipeline):
    _check(llama, pipeline, tmp_path, [])


def test_external_data_is_bit_reproducible(llama, tmp_path):
    _check(llama, "quant-int4", tmp_path, ["--external-data"])


@pytest.mark.parametrize("pipeline", CALIBRATED)
def test_calibrated_passes_are_bit_reproducible(llama, calib, tmp_path, pipeline):
    _check(llama, pipeline, tmp_path,
           ["--calib", str(calib), "--calib-samples", str(SAMPLES), "--calib-seqlen", str(SEQLEN)])


@pytest.mark.parametrize("pipeline", ["quant-int4", "quant-int4<method=hqq>,quant-embed",
                                      "prune-magnitude"])
def test_external_data_input_gives_the_same_weights(llama, tmp_path, pipeline):
    ext = tmp_path / "ext" / "tiny-llama.onnx"
    subprocess.run([sys.executable, str(MODELS / "gen_tiny_llama.py"), "-o", str(ext),
                    "--external-data"], check=True)
    _run(llama, pipeline, 2, tmp_path / "inline", [])
    _run(ext, pipeline, 2, tmp_path / "streamed", [])
    assert (tmp_path / "streamed" / "out.onnx.data").exists()  # the input's form is kept
    a, b = (onnx.load(str(tmp_path / d / "out.onnx")) for d in ("inline", "streamed"))
    assert [n.SerializeToString() for n in a.graph.node] == \
        [n.SerializeToString() for n in b.graph.node]
    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert wa.keys() == wb.keys()
    for name, arr in wa.items():
        assert arr.dtype == wb[name].dtype and np.array_equal(arr, wb[name]), name
