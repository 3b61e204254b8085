"""End-to-end checks of the llmopt CLI against the real tools: the latest `onnx`
checker from PyPI and ONNX Runtime.

Each pipeline's output must pass onnx.checker (full_check) and give the same outputs as
the original model in ONNX Runtime; writes must be deterministic and atomic.
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

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
LLMOPT = BUILD / "bin" / "llmopt"
MODELS = REPO / "tools" / "models"

CLEANUP = "fold-shapes,fixpoint(const-fold,cse,canonicalize,dce)"
# Outputs of a cleanup pipeline must equal the original's up to float reassociation.
RTOL, ATOL = 1e-5, 1e-6

pytestmark = pytest.mark.skipif(not LLMOPT.exists(), reason=f"{LLMOPT} not built")


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(LLMOPT), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"llmopt {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    paths = {"llama": out / "tiny-llama.onnx", "bert": out / "tiny-bert.onnx"}
    subprocess.run([sys.executable, str(MODELS / "gen_tiny_llama.py"), "-o", str(paths["llama"])], check=True)
    subprocess.run([sys.executable, str(MODELS / "gen_tiny_bert.py"), "-o", str(paths["bert"])], check=True)
    return paths


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _feeds(sess: ort.InferenceSession, seq: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else (2 if "batch" in str(d) else seq) for d in i.shape]
        if i.name == "attention_mask":
            mask = np.ones(shape, np.int64)
            mask[0, seq // 2:] = 0  # padding in the first row
            feeds[i.name] = mask
        elif "int" in i.type:
            feeds[i.name] = rng.integers(0, 2 if "type" in i.name else 200, size=shape, dtype=np.int64)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _assert_same_outputs(reference: Path, candidate: Path) -> None:
    ref, cand = _session(reference), _session(candidate)
    assert [o.name for o in ref.get_outputs()] == [o.name for o in cand.get_outputs()]
    assert [i.name for i in ref.get_inputs()] == [i.name for i in cand.get_inputs()]
    rng = np.random.default_rng(0)
    for seq in (1, 7, 19):
        feeds = _feeds(ref, seq, rng)
        for a, b in zip(ref.run(None, feeds), cand.run(None, feeds)):
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["llama", "bert"])
@pytest.mark.parametrize("pipeline", [CLEANUP, "opset<to=21>," + CLEANUP, "dce,cse", "opset<to=18>,opset<to=17>"])
def test_pipeline_output_is_valid_and_equivalent(models, tmp_path, name, pipeline):
    src = models[name]
    out = tmp_path / "out.onnx"
    _run(str(src), f"-passes={pipeline}", "--verify-each", "-o", str(out))
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["llmopt.pipeline"] == pipeline
    assert meta["llmopt.input_hash"].startswith("fnv1a64:")
    if "opset<to=21>" in pipeline:
        assert {o.domain: o.version for o in model.opset_import}.get("", 0) == 21
        assert model.ir_version >= 10
    _assert_same_outputs(src, out)


def test_cleanup_shrinks_the_tiny_llama(models, tmp_path):
    out = tmp_path / "clean.onnx"
    _run(str(models["llama"]), f"-passes={CLEANUP}", "-o", str(out))
    before = len(onnx.load(str(models["llama"])).graph.node)
    after = len(onnx.load(str(out)).graph.node)
    # Constant nodes become initializers, duplicated shape chains merge.
    assert after < before * 0.7, (before, after)


def test_output_is_deterministic(models, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for path in (a, b):
        _run(str(models["llama"]), f"-passes={CLEANUP}", "-o", str(path))
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("pipeline", ["quant-int4<method=hqq>", "quant-int4<method=gptq;actorder>",
                                      "quant-int4<method=awq>", "quant-mixed<bpw=7>"])
def test_quantized_output_does_not_depend_on_threads(models, tmp_path, pipeline):
    ids = tmp_path / "calib.ids"
    ids.write_text(" ".join(str(i) for i in np.random.default_rng(3).integers(0, 256, 256)))
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}.onnx"
        _run(str(models["llama"]), f"-passes={pipeline}", "--threads", str(threads), "--calib",
             str(ids), "--calib-samples", "4", "--calib-seqlen", "64", "-o", str(out))
        outs.append(out.read_bytes())
    assert outs[0] == outs[1], pipeline


def test_external_data_output_runs(models, tmp_path):
    out = tmp_path / "ext.onnx"
    _run(str(models["llama"]), "-passes=dce", "--external-data", "-o", str(out))
    assert (tmp_path / "ext.onnx.data").stat().st_size > 800_000
    assert out.stat().st_size < 200_000
    onnx.checker.check_model(str(out), full_check=True)
    _assert_same_outputs(models["llama"], out)


def test_failed_run_leaves_no_output(models, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(models["llama"].read_bytes()[:5000])
    out = tmp_path / "never.onnx"
    proc = _run(str(bad), "-passes=dce", "-o", str(out), check=False)
    assert proc.returncode == 1
    assert "bad.onnx" in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists()
    assert not list(tmp_path.glob("never.onnx*"))
