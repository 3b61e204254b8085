"""ORT fuses llmopt's --target=onnx weight quantization back into MatMulNBits.

llmopt writes plain ONNX for --target=onnx: DequantizeLinear(q, scale[, zero_point]) + MatMul
(opset 21 blocks along K, or per output channel for quant-int8). ONNX Runtime's level-2 QDQ
transformer (DQMatMulToMatMulNBits) turns each DequantizeLinear -> MatMul into one
com.microsoft::MatMulNBits. These tests save ORT's optimized model
(SessionOptions.optimized_model_filepath) and check, for every form the passes emit on the
tiny Llama, at ORT_ENABLE_EXTENDED and ORT_ENABLE_ALL:

* the number of MatMulNBits nodes equals the number of DequantizeLinear -> MatMul pairs
  written (a DequantizeLinear with one consumer, a MatMul reading it as B), and no such
  pair is left;
* each fused node says what the DequantizeLinear said (K, N, bits, block_size);
* the fused model computes what the unfused one does (f32 compute:
  session.qdq_matmulnbits_accuracy_level=0, vs ORT_DISABLE_ALL) within 1e-4 relative.

And what ORT 1.32 does not fuse (docs/quantization.md says why): anything at
ORT_ENABLE_BASIC, a MatMul whose output feeds a Relu, a DequantizeLinear read by two
MatMuls, and two DequantizeLinears sharing initializers.
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

from ortcheck import rel as _rel  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
LLMOPT = BUILD / "bin" / "llmopt"
MODELS = REPO / "tools" / "models"

pytestmark = pytest.mark.skipif(not LLMOPT.exists(), reason=f"{LLMOPT} not built")

LEVELS = {"extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}

#: (pipeline, DequantizeLinear -> MatMul pairs written on the tiny Llama)
PIPELINES = [
    ("quant-int4<block=32>", 28),
    ("quant-int4<block=128>", 28),  # K = 192 is not a multiple of 128: scale rows = ceil(K / 128)
    ("quant-int4<asym>", 28),  # uint4 with zero points
    ("quant-int4<asym;block=16>", 28),
    ("quant-int4<method=hqq>", 28),  # zero points rounded to uint4 for DequantizeLinear
    ("quant-int4<bits=3;asym>", 28),  # 3-bit values in 4-bit containers
    ("quant-int4<bits=8;block=64>", 28),  # blocked int8
    ("quant-int8", 28),  # per output channel (axis 1, no block_size)
    ("quant-int8<asym>", 28),
    ("quant-embed,quant-int4", 29),  # + the tied LM head: DequantizeLinear(Transpose(q)) -> MatMul
    ("quant-w8a8", 28),  # SmoothQuant + blocked int8 (calibrated)
]


def _llmopt_onnx(src: Path, pipeline: str, out: Path) -> onnx.ModelProto:
    calib = out.parent / "calib.ids"
    calib.write_text(" ".join(str(i) for i in np.random.default_rng(7).integers(0, 256, size=4 * 32)))
    proc = subprocess.run([str(LLMOPT), str(src), f"-passes={pipeline}", "--target=onnx", "--verify-each",
                           "--calib", str(calib), "--calib-samples", "4", "--calib-seqlen", "32", "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return onnx.load(str(out))


def _session(model: Path, level, optimized: Path | None = None, config: dict | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = level
    if optimized:
        so.optimized_model_filepath = str(optimized)
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out = collections.defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            out[i].append(n)
    return out


def _dq_matmul_pairs(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """MatMul output name -> the DequantizeLinear it reads as B, where that DequantizeLinear
    has no other consumer and is not a graph output."""
    consumers = _consumers(model)
    outputs = {o.name for o in model.graph.output}
    pairs = {}
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear" or n.output[0] in outputs:
            continue
        users = consumers[n.output[0]]
        if len(users) == 1 and users[0].op_type == "MatMul" and users[0].input[1] == n.output[0]:
            pairs[users[0].output[0]] = n
    return pairs


def _optimized(model_path: Path, level, tmp: Path) -> onnx.ModelProto:
    opt = tmp / "optimized.onnx"
    _session(model_path, level, optimized=opt)
    return onnx.load(str(opt))




@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("pipeline,pairs", PIPELINES)
def test_every_dequantize_matmul_pair_becomes_matmulnbits(llama, tmp_path, pipeline, pairs, level):
    path = tmp_path / "q.onnx"
    model = _llmopt_onnx(llama, pipeline, path)
    assert not any(n.domain == "com.microsoft" for n in model.graph.node)
    written = _dq_matmul_pairs(model)
    assert len(written) == pairs, pipeline
    shapes = {}
    for i in model.graph.initializer:
        shapes[i.name] = (list(i.dims), i.data_type)

    optimized = _optimized(path, LEVELS[level], tmp_path)
    fused = {n.output[0]: n for n in optimized.graph.node if n.op_type == "MatMulNBits"}
    print(f"\n[fusion] {pipeline} --target=onnx, ORT {level}: {len(written)} DequantizeLinear->MatMul "
          f"written, {len(fused)} MatMulNBits in ORT's optimized model")
    assert len(fused) == len(written), (pipeline, level)
    assert set(fused) == set(written)  # each pair became the MatMulNBits that writes its output
    assert not _dq_matmul_pairs(optimized)
    for out, dq in written.items():
        attrs = {a.name: a.i for a in fused[out].attribute}
        dq_attrs = {a.name: a.i for a in dq.attribute}
        q = dq.input[0]
        if q not in shapes:  # the tied head: DequantizeLinear(Transpose(q)), ORT folds the Transpose
            src = next(n for n in model.graph.node if n.output[0] == q)
            dims, dtype = shapes[src.input[0]]
            dims = dims[::-1]
        else:
            dims, dtype = shapes[q]
        bits = 8 if dtype in (TensorProto.INT8, TensorProto.UINT8) else 4
        assert (attrs["K"], attrs["N"], attrs["bits"]) == (dims[0], dims[1], bits), (pipeline, out)
        if "block_size" in dq_attrs:
            assert attrs["block_size"] == dq_attrs["block_size"], (pipeline, out)
        else:  # per channel: ORT repeats each column's scale over blocks of its choosing
            assert attrs["block_size"] >= 16 and attrs["block_size"] & (attrs["block_size"] - 1) == 0

    # Fused and unfused compute the same thing (f32 compute in the fused MatMulNBits).
    feeds = {"input_ids": np.random.default_rng(1).integers(0, 256, size=(2, 11), dtype=np.int64)}
    want = _session(path, ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, feeds)[0]
    got = _session(path, LEVELS[level], config={"session.qdq_matmulnbits_accuracy_level": "0"}).run(None, feeds)[0]
    assert _rel(got, want) <= 1e-4, (pipeline, level, _rel(got, want))


def test_basic_level_does_not_fuse(llama, tmp_path):
    """DQMatMulToMatMulNBits is a level-2 (extended) transformer."""
    path = tmp_path / "q.onnx"
    model = _llmopt_onnx(llama, "quant-int4", path)
    assert len(_dq_matmul_pairs(model)) == 28
    optimized = _optimized(path, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, tmp_path)
    ops = collections.Counter(n.op_type for n in optimized.graph.node)
    assert ops["MatMulNBits"] == 0 and len(_dq_matmul_pairs(optimized)) == 28


def _two_matmul_model(path: Path, between: str, shared: bool) -> None:
    """x -> MatMul(W) -> `between` -> MatMul(W or V) -> y, W and V 64 x 64."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((64, 64)) * 0.1).astype(np.float32), "W")
    v = numpy_helper.from_array((rng.standard_normal((64, 64)) * 0.1).astype(np.float32), "V")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="first"),
             helper.make_node(between, ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "W" if shared else "V"], ["y"], name="second")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], [w] if shared else [w, v])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


@pytest.mark.parametrize("between,shared,fused_first,fused_second", [
    ("Sigmoid", False, True, True),  # the control: both fuse
    ("Relu", False, False, True),  # MatMul -> Relu: ORT looks for a QuantizeLinear after the Relu
    ("Sigmoid", True, False, False),  # one DequantizeLinear read by two MatMuls
])
def test_what_ort_does_not_fuse(tmp_path, between, shared, fused_first, fused_second):
    src = tmp_path / "two.onnx"
    _two_matmul_model(src, between, shared)
    path = tmp_path / "q.onnx"
    model = _llmopt_onnx(src, "quant-int4", path)
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == (1 if shared else 2)
    optimized = _optimized(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, tmp_path)
    fused = {n.output[0] for n in optimized.graph.node if n.op_type == "MatMulNBits"}
    assert ("h" in fused, "y" in fused) == (fused_first, fused_second)


def test_dequantize_nodes_sharing_initializers_do_not_fuse(tmp_path):
    """Two DequantizeLinears reading the same initializers, one MatMul each: ORT fuses
    neither (each needs initializers of its own), so llmopt keeps one DequantizeLinear per
    shared weight rather than writing it twice."""
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, size=(64, 64))
    inits = [helper.make_tensor("q", TensorProto.INT4, [64, 64], q.ravel().tolist()),
             numpy_helper.from_array((rng.random((2, 64)) * 0.01).astype(np.float32), "s")]
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w0"], axis=0, block_size=32, name="dq0"),
             helper.make_node("MatMul", ["x", "w0"], ["h"], name="first"),
             helper.make_node("Sigmoid", ["h"], ["a"], name="act"),
             helper.make_node("DequantizeLinear", ["q", "s"], ["w1"], axis=0, block_size=32, name="dq1"),
             helper.make_node("MatMul", ["a", "w1"], ["y"], name="second")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    path = tmp_path / "shared.onnx"
    onnx.save(m, str(path))
    optimized = _optimized(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, tmp_path)
    assert collections.Counter(n.op_type for n in optimized.graph.node)["MatMulNBits"] == 0
