"""quant-w8a8 (SmoothQuant + int8 weights + int8 activations at run time) end to end.

On the bundled tiny Llama, calibrated on 4 windows of 32 random token ids:

* every form (act=block: MatMulNBits bits=8 accuracy_level 4 / blocked DequantizeLinear;
  act=tensor: DynamicQuantizeMatMul / DynamicQuantizeLinear + MatMulInteger) passes
  onnx.checker, runs in ONNX Runtime, and ORT's optimized model computes every weight
  product with int8 activations (MatMulNBits, DynamicQuantizeMatMul or
  MatMulIntegerToFloat: no MatMulInteger, DequantizeLinear or f32 MatMul left for them);
* ORT and llmopt's interpreter agree: node by node on the same activations within 1e-5
  relative (max |diff| / max |ORT|; the integer arithmetic is exact on both sides, measured
  ~1e-7), and on whole models by cosine >= 0.9999 (a 1-ulp difference upstream can move an
  activation across an int8 rounding boundary, as at accuracy_level 4 in test_quant_ort.py).
  The plain-ONNX act=block form (DequantizeLinear + MatMul) means f32 activations, which the
  interpreter computes: it matches ORT told to fuse at accuracy_level 0 within 1e-4;
* logits stay close to fp32 (cosine printed with pytest -s, bounded below);
* the interpreter's DynamicQuantizeMatMul follows ORT's kernel on single nodes with
  outliers, per-tensor and per-column scales, zero points, uint8 B and bias (<= 1e-6).

That smoothing alone keeps the fp32 function is checked in tests/unit/quant_w8a8_test.cc.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ortcheck import cos as _cos, rel as _rel  # noqa: E402
import ortcheck  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
LLMOPT = BUILD / "bin" / "llmopt"
RUNNER = BUILD / "bin" / "llmopt-run"
MODELS = REPO / "tools" / "models"

#: Node by node, same activations: the int8 dots are exact on both sides.
NODE_TOL = 1e-5
#: Logits cosine vs fp32, worst input (measured 0.9975 .. 0.9990 on this random model).
MIN_COS_FP32 = 0.995

FORMS = [("quant-w8a8", "ort"), ("quant-w8a8", "onnx"), ("quant-w8a8<act=tensor>", "ort"),
         ("quant-w8a8<act=tensor>", "onnx"), ("quant-w8a8<smooth=0.8;block=32>", "ort"),
         ("quant-w8a8<tensor;nosmooth>", "ort")]

pytestmark = pytest.mark.skipif(not (LLMOPT.exists() and RUNNER.exists()),
                                reason=f"{LLMOPT} or {RUNNER} not built")


def _calib(d: Path) -> Path:
    """4 windows of 32 token ids below the tiny model's vocabulary (256)."""
    path = d / "calib.ids"
    path.write_text(" ".join(str(i) for i in np.random.default_rng(7).integers(0, 256, size=4 * 32)))
    return path


def _llmopt(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(LLMOPT), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"llmopt {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _quantize(src: Path, pipeline: str, target: str, d: Path) -> tuple[Path, str]:
    out = d / "q.onnx"
    proc = _llmopt(str(src), f"-passes={pipeline}", f"--target={target}", "--verify-each", "--calib",
                   str(_calib(d)), "--calib-samples", "4", "--calib-seqlen", "32", "-o", str(out), "--report")
    return out, proc.stdout


def _feeds(seq: int, seed: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.random.default_rng(seed).integers(0, 256, size=(2, seq), dtype=np.int64)}


def _session(model: Path | onnx.ModelProto, optimized: Path | None = None,
             config: dict[str, str] | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    if optimized:
        so.optimized_model_filepath = str(optimized)
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])








def test_without_calibration_data_the_pass_says_what_it_needs(llama, tmp_path):
    proc = _llmopt(str(llama), "-passes=quant-w8a8", "-o", str(tmp_path / "x.onnx"), check=False)
    assert proc.returncode == 1
    assert "quant-w8a8" in proc.stderr and "--calib" in proc.stderr and "nosmooth" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
    # nosmooth needs no data.
    _llmopt(str(llama), "-passes=quant-w8a8<nosmooth>", "-o", str(tmp_path / "y.onnx"))


@pytest.mark.parametrize("pipeline,target", FORMS)
def test_output_runs_in_ort_with_int8_activations(llama, tmp_path, pipeline, target):
    out, report = _quantize(llama, pipeline, target, tmp_path)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    tensor = "tensor" in pipeline
    if target == "onnx":
        assert not any(n.domain == "com.microsoft" for n in model.graph.node)
        want = {"DynamicQuantizeLinear": 28, "MatMulInteger": 28} if tensor else {"DequantizeLinear": 28}
    else:
        want = {"DynamicQuantizeMatMul": 28} if tensor else {"MatMulNBits": 28}
    assert {k: ops[k] for k in want} == want, ops
    for n in model.graph.node:
        if n.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in n.attribute}
            assert attrs["bits"] == 8 and attrs["accuracy_level"] == 4
    if "nosmooth" not in pipeline:
        assert "12 of 16 activations smoothed" in report, report

    opt = tmp_path / "optimized.onnx"
    sess = _session(out, optimized=opt)
    optimized = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
    int8 = optimized["MatMulNBits"] + optimized["DynamicQuantizeMatMul"] + optimized["MatMulIntegerToFloat"]
    assert int8 == 28, optimized
    assert optimized["MatMulInteger"] == 0 and optimized["DequantizeLinear"] == 0

    ref = _session(llama)
    worst = 1.0
    for seq, seed in ((1, 0), (7, 1), (19, 2)):
        feeds = _feeds(seq, seed)
        got = sess.run(None, feeds)[0]
        assert np.isfinite(got).all()
        worst = min(worst, _cos(got, ref.run(None, feeds)[0]))
        mine = _interp(out, feeds, tmp_path / "run")[0]
        if target == "onnx" and not tensor:
            # Plain ONNX means f32 activations here (DequantizeLinear + MatMul), which the
            # interpreter computes; ORT's fusion into MatMulNBits adds the int8 activations.
            exact = _session(out, config={"session.qdq_matmulnbits_accuracy_level": "0"}).run(None, feeds)[0]
            assert _rel(mine, exact) <= 1e-4, (pipeline, target, seq)
            assert _cos(got, exact) >= 0.999, (pipeline, target, seq)
        else:
            # The same int8 arithmetic on both sides, see the module docstring.
            assert _cos(mine, got) >= 0.9999, (pipeline, target, seq)
    print(f"\n[w8a8] {pipeline} --target={target}: logits cosine vs fp32 in ORT {worst:.6f}; "
          f"ORT optimized: {dict((k, v) for k, v in optimized.items() if k in ('MatMulNBits', 'DynamicQuantizeMatMul', 'MatMulIntegerToFloat'))}")
    assert worst >= MIN_COS_FP32, (pipeline, target, worst)


def _exposed(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for name in names:
        if name not in known:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
    return m


def _one_node_model(nodes, inits, x: str, a: np.ndarray, out: str, opsets) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "one", [helper.make_tensor_value_info(x, TensorProto.FLOAT, a.shape)],
                          [helper.make_empty_tensor_value_info(out)], inits)
    m = helper.make_model(g, opset_imports=list(opsets))
    m.ir_version = 10
    return m


@pytest.mark.parametrize("pipeline,target", [("quant-w8a8<act=tensor>", "ort"), ("quant-w8a8<act=tensor>", "onnx"),
                                             ("quant-w8a8", "ort")])
def test_each_int8_product_matches_the_interpreter_on_the_same_activations(llama, tmp_path, pipeline, target):
    out, _ = _quantize(llama, pipeline, target, tmp_path)
    model = onnx.load(str(out))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    # (nodes computing one weight product, its activation input, its output)
    units = []
    for n in model.graph.node:
        if n.op_type in ("DynamicQuantizeMatMul", "MatMulNBits"):
            units.append(([n], n.input[0], n.output[0]))
        elif n.op_type == "Mul" and n.input[0] in producers and producers[n.input[0]].op_type == "Cast":
            cast = producers[n.input[0]]
            mi = producers[cast.input[0]]
            dql = producers[mi.input[0]]
            scale = producers[n.input[1]]
            units.append(([dql, mi, cast, scale, n], dql.input[0], n.output[0]))
    assert len(units) == 28
    feeds = _feeds(9, 3)
    acts = sorted({u[1] for u in units})
    values = _session(_exposed(model, acts)).run(None, feeds)
    act = dict(zip([o.name for o in model.graph.output] + acts, values))
    worst = 0.0
    for nodes, x, y in units:
        a = act[x]
        used = [inits[i] for n in nodes for i in n.input if i in inits]
        one = _one_node_model(nodes, used, x, a, y, model.opset_import)
        path = tmp_path / "one.onnx"
        onnx.save(one, str(path))
        want = _session(path).run(None, {x: a})[0]
        got = _interp(path, {x: a}, tmp_path / "run")[0]
        worst = max(worst, _rel(got, want))
        assert _rel(got, want) <= NODE_TOL, (pipeline, target, y)
    print(f"\n[w8a8] {pipeline} --target={target}: 28 int8 products, ORT vs llmopt on the same "
          f"activations: max rel err {worst:.2e}")


@pytest.mark.parametrize("case", ["per-tensor", "per-column", "zero-points", "uint8-b", "bias", "batched-a"])
def test_dynamic_quantize_matmul_kernel_follows_ort(tmp_path, case):
    rng = np.random.default_rng(5)
    K, N = 96, 40
    a = rng.standard_normal((3, 7, K) if case == "batched-a" else (11, K)).astype(np.float32)
    a[..., 5] *= 30  # an outlier channel: per-tensor quantization feels it
    a = a - (0.7 if case == "zero-points" else 0.0)
    signed = case != "uint8-b"
    b = rng.integers(-127, 128, size=(K, N)) if signed else rng.integers(0, 256, size=(K, N))
    b = b.astype(np.int8 if signed else np.uint8)
    scale = (rng.random(N) * 0.02 + 0.001).astype(np.float32) if case != "per-tensor" else np.array(0.01, np.float32)
    inputs = ["A", "B", "S"]
    inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(scale, "S")]
    if case in ("zero-points", "uint8-b", "bias"):
        zp = (rng.integers(-5, 6, size=N) if signed else rng.integers(120, 136, size=N)).astype(b.dtype)
        inits.append(numpy_helper.from_array(zp, "Z"))
        inputs.append("Z")
    if case == "bias":
        inits.append(numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "bias"))
        inputs.append("bias")
    node = helper.make_node("DynamicQuantizeMatMul", inputs, ["Y"], domain="com.microsoft")
    m = _one_node_model([node], inits, "A", a, "Y", [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    path = tmp_path / "dqmm.onnx"
    onnx.save(m, str(path))
    want = _session(path).run(None, {"A": a})[0]
    got = _interp(path, {"A": a}, tmp_path / "run")[0]
    assert got.shape == want.shape
    assert _rel(got, want) <= 1e-6, (case, _rel(got, want))
    # And it is int8 arithmetic, not f32: the outlier channel costs accuracy.
    ref = a.astype(np.float64) @ ((b.astype(np.float64) - (zp if "Z" in inputs else 0)) * scale)
    if case == "bias":
        ref = ref + numpy_helper.to_array(inits[-1])
    assert _rel(want, ref) > 1e-4


def _interp(model: Path, feeds: dict, work: Path) -> list[np.ndarray]:
    return ortcheck.interp(RUNNER, model, feeds, work)
