"""distill-* end to end on the bundled tiny Llama, in ONNX Runtime.

* distill-targets: the file llmopt (C++) writes reads back with tools/distill/softlabels.py
  (NumPy), and holds the top-k of log softmax(logits / T) of ORT's logits on the same
  windows; softlabels.write / read round-trip;
* distill-expose: passes onnx.checker, lists its outputs in metadata_props; in ORT
  teacher.logits equals logits and the final RMSNorm + LM head of teacher.hidden.3 (NumPy)
  gives the logits again;
* distill-student<keep=0,2>: runs in ORT and equals the NumPy Llama forward of a 2-layer
  model built from the teacher's layers 0 and 2;
* distill-reconstruct after prune-magnitude: runs in ORT, keeps the zeros, and is closer to
  the teacher than the pruned model on held-out ids.
"""

from __future__ import annotations

import dataclasses
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
LLMOPT = BUILD / "bin" / "llmopt"
sys.path.insert(0, str(REPO / "tools" / "models"))
sys.path.insert(0, str(REPO / "tools" / "distill"))

import softlabels  # noqa: E402
from gen_tiny_llama import TINY_LLAMA, tiny_llama_weights  # noqa: E402
from llama_ref import forward  # noqa: E402

pytestmark = pytest.mark.skipif(not LLMOPT.exists(), reason=f"{LLMOPT} not built")

#: ORT vs the NumPy forward (f32), relative to max |ORT|.
REL_TOL = 1e-4


def _llmopt(*args: str) -> str:
    proc = subprocess.run([str(LLMOPT), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _ort(path: Path, ids: np.ndarray) -> dict[str, np.ndarray]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, {"input_ids": ids})))


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("distill") / "calib.ids"
    ids = np.random.RandomState(3).randint(0, TINY_LLAMA.vocab_size, size=2048)
    path.write_text(" ".join(map(str, ids)))
    return path


def test_targets_read_in_python_match_ort(llama, calib, tmp_path):
    out = tmp_path / "t.soft"
    _llmopt(str(llama), "-passes=distill-targets<topk=8;temperature=2;out=" + str(out) + ">",
            "--calib", str(calib), "--calib-samples", "3", "--calib-seqlen", "16", "-q")
    sl = softlabels.read(out)
    h = sl.header
    assert (h["vocab"], h["topk"], h["temperature"], h["positions"], h["windows"]) == (256, 8, 2.0, 48, 3)
    assert h["model_hash"] != 0
    windows = sl.windows()
    assert [len(w) for w in windows] == [16, 16, 16]
    for w in windows:
        tokens = w["token"].astype(np.int64)
        logits = _ort(llama, tokens[None])["logits"][0]
        ids, logp = softlabels.top_k_log_probs(logits, 8, 2.0)
        np.testing.assert_array_equal(w["pos"], np.arange(16))
        np.testing.assert_allclose(w["logp"], logp, atol=1e-4)
        # Ids agree except where ORT's logits are within rounding of a tie.
        srt = np.sort(logits, axis=-1)[:, ::-1]
        near_tie = (np.abs(np.diff(srt[:, :9], axis=-1)) < 1e-4).any(axis=-1)
        np.testing.assert_array_equal(w["ids"][~near_tie], ids[~near_tie])
    # The Python writer makes the same layout; its output reads back exactly.
    again = tmp_path / "py.soft"
    logits0 = _ort(llama, windows[0]["token"].astype(np.int64)[None])["logits"][0]
    softlabels.write(again, [(windows[0]["token"], logits0)], 8, 2.0, h["model_hash"])
    back = softlabels.read(again)
    assert back.header == {**h, "positions": 16, "windows": 1}
    ids, logp = softlabels.top_k_log_probs(logits0, 8, 2.0)
    np.testing.assert_array_equal(back.records["ids"], ids)
    np.testing.assert_array_equal(back.records["logp"], logp)
    assert not list(tmp_path.glob("*.tmp.*"))
    with pytest.raises(ValueError, match="not a soft-label file"):
        softlabels.read(llama)


def test_expose_runs_in_ort(llama, tmp_path):
    out = tmp_path / "teacher.onnx"
    _llmopt(str(llama), "-passes=distill-expose", "-o", str(out), "-q")
    model = onnx.load(out)
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    names = [f"teacher.hidden.{i}" for i in range(TINY_LLAMA.num_layers)] + ["teacher.logits"]
    assert meta["llmopt.distill.outputs"] == ",".join(names)
    ids = np.random.RandomState(5).randint(0, 256, size=(2, 11)).astype(np.int64)
    got = _ort(out, ids)
    assert list(got) == ["logits", *names]
    np.testing.assert_array_equal(got["teacher.logits"], got["logits"])
    w = tiny_llama_weights()
    h = got[f"teacher.hidden.{TINY_LLAMA.num_layers - 1}"].astype(np.float64)
    normed = h / np.sqrt((h * h).mean(-1, keepdims=True) + TINY_LLAMA.rms_norm_eps) * w["model.norm.weight"]
    assert _rel(got["logits"], normed @ w["model.embed_tokens.weight"].T) < REL_TOL
    # The first block's output is not the last one's (each block is exposed, not one value).
    assert _rel(got["teacher.hidden.0"], got[f"teacher.hidden.{TINY_LLAMA.num_layers - 1}"]) > 1e-2


def test_student_runs_in_ort_and_equals_a_two_layer_llama(llama, tmp_path):
    out = tmp_path / "student.onnx"
    report = _llmopt(str(llama), "-passes=distill-student<keep=0,2>", "-o", str(out), "--report")
    assert "distill-student: kept blocks 0,2 of 4" in report
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert {p.key: p.value for p in model.metadata_props}["llmopt.distill.layer_map"] == "0:0,1:2"
    teacher = tiny_llama_weights()
    weights = {k: v for k, v in teacher.items() if ".layers." not in k}
    for student, src in ((0, 0), (1, 2)):
        for k, v in teacher.items():
            if k.startswith(f"model.layers.{src}."):
                weights[k.replace(f"layers.{src}.", f"layers.{student}.")] = v
    cfg = dataclasses.replace(TINY_LLAMA, num_layers=2)
    ids = np.random.RandomState(6).randint(0, 256, size=(2, 9)).astype(np.int64)
    assert _rel(_ort(out, ids)["logits"], forward(cfg, weights, ids)) < REL_TOL


def test_reconstruct_runs_in_ort_and_moves_towards_the_teacher(llama, calib, tmp_path):
    pruned, rec = tmp_path / "pruned.onnx", tmp_path / "rec.onnx"
    _llmopt(str(llama), "-passes=prune-magnitude<sparsity=0.5>", "-o", str(pruned), "-q")
    _llmopt(str(pruned), f"-passes=distill-reconstruct<teacher={llama}>", "--calib", str(calib),
            "--calib-samples", "32", "--calib-seqlen", "64", "-o", str(rec), "-q")
    onnx.checker.check_model(onnx.load(rec))
    inits = lambda p: {t.name: numpy_helper.to_array(t) for t in onnx.load(p).graph.initializer}  # noqa: E731
    a, b = inits(pruned), inits(rec)
    for name in a:
        if name.endswith("proj.weight"):
            np.testing.assert_array_equal(a[name] == 0, b[name] == 0, err_msg=name)
    ids = np.random.RandomState(8).randint(0, 256, size=(2, 64)).astype(np.int64)
    t = _ort(llama, ids)["logits"]
    before = float(((_ort(pruned, ids)["logits"] - t) ** 2).sum())
    after = float(((_ort(rec, ids)["logits"] - t) ** 2).sum())
    assert after < 0.9 * before, (before, after)
