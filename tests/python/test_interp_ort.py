"""llmopt's reference interpreter (through `llmopt-run`) against ONNX Runtime on the
bundled multi-op models: the tiny Llama decoder and the tiny BERT encoder.

Inputs are made here with NumPy, passed to llmopt-run as .npy files, and the outputs it
dumps (.pb) are compared with ORT's on the same inputs: max relative error <= 1e-4
(|diff| / max |ORT output|) and elementwise rtol 1e-4 / atol 1e-5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
RUN = BUILD / "bin" / "llmopt-run"
MODELS = REPO / "tools" / "models"

pytestmark = pytest.mark.skipif(not RUN.exists(), reason=f"{RUN} not built")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    paths = {"llama": out / "tiny-llama.onnx", "bert": out / "tiny-bert.onnx"}
    subprocess.run([sys.executable, str(MODELS / "gen_tiny_llama.py"), "-o", str(paths["llama"])], check=True)
    subprocess.run([sys.executable, str(MODELS / "gen_tiny_bert.py"), "-o", str(paths["bert"])], check=True)
    return paths


def _inputs(name: str, batch: int, seq: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ids = rng.integers(0, 250, size=(batch, seq), dtype=np.int64)
    if name == "llama":
        return {"input_ids": ids}
    mask = np.ones((batch, seq), np.int64)
    mask[0, max(1, seq // 2):] = 0  # a padded row
    types = rng.integers(0, 2, size=(batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("name", ["llama", "bert"])
@pytest.mark.parametrize("seq", [1, 8, 33])
def test_interpreter_matches_onnxruntime(models, tmp_path, name, seq):
    rng = np.random.default_rng(seq)
    sess = ort.InferenceSession(str(models[name]), providers=["CPUExecutionProvider"])
    feeds = _inputs(name, 2, seq, rng)
    feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
    files = []
    for k, v in feeds.items():
        f = tmp_path / f"{k}.npy"
        np.save(f, v)
        files.append(str(f))
    dump = tmp_path / "out"
    proc = subprocess.run([str(RUN), str(models[name]), "--inputs", *files, "--dump-outputs", str(dump)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    expected = sess.run(None, feeds)
    for i, want in enumerate(expected):
        t = onnx.TensorProto()
        t.ParseFromString((dump / f"output_{i}.pb").read_bytes())
        got = numpy_helper.to_array(t)
        assert got.shape == want.shape
        rel = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
        assert rel <= 1e-4, rel
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_llmopt_run_expect_detects_a_mismatch(models, tmp_path):
    """--expect passes on the interpreter's own dump and fails (exit 1) on a perturbed one."""
    dump = tmp_path / "d"
    subprocess.run([str(RUN), str(models["llama"]), "--random-inputs", "--dims", "batch=1,seq=4",
                    "--dump-outputs", str(dump)], check=True, capture_output=True)
    ok = subprocess.run([str(RUN), str(models["llama"]), "--inputs", str(dump / "input_0.pb"),
                         "--expect", str(dump / "output_0.pb")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    t = onnx.TensorProto()
    t.ParseFromString((dump / "output_0.pb").read_bytes())
    arr = numpy_helper.to_array(t).copy()
    arr.flat[3] += 0.5
    bad = tmp_path / "bad.npy"
    np.save(bad, arr)
    res = subprocess.run([str(RUN), str(models["llama"]), "--inputs", str(dump / "input_0.pb"),
                          "--expect", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "MISMATCH" in res.stdout
