"""The quantization passes end to end, for --target=ort and --target=onnx.

Every pass's output passes onnx.checker and runs in ONNX Runtime, and ORT and llmopt's
interpreter agree on the same quantized model:

* with f32 compute on both sides (MatMulNBits accuracy_level 0; ORT's DequantizeLinear ->
  MatMulNBits fusion told to use level 0), the whole model agrees within 1e-4 relative
  (max |ORT - llmopt| / max |ORT|), and the interpreter on the in-memory IR (printed with
  --print-ir-full) agrees with both: the writer's lowering is what the IR means;
* with accuracy_level 4 (ORT's int8 compute, the default llmopt writes), each MatMulNBits
  and GatherBlockQuantized node agrees within 1e-4 on the same activations. Whole models
  are only compared by cosine: level 4 quantizes activations to int8 per block, so a
  1-ulp difference upstream (ORT and llmopt reduce sums in different orders) can flip one
  rounding and move an output by ~1e-3 -- a property of the arithmetic, not a format bug.

--target=onnx models must have every DequantizeLinear -> MatMul fused into MatMulNBits
in ORT's optimized model, and RTN weights must be byte-identical to ORT's own MLAS
quantizer. File sizes are printed (pytest -s) and bounded.
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
from onnx import helper, numpy_helper

from ortcheck import cos as _cos, rel as _rel  # noqa: E402
import ortcheck  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
LLMOPT = BUILD / "bin" / "llmopt"
RUNNER = BUILD / "bin" / "llmopt-run"
MODELS = REPO / "tools" / "models"

#: Whole-model agreement with f32 compute on both sides (relative to max |reference|).
REL_TOL = 1e-4

PASSES = [
    "quant-int4",
    "quant-int4<asym;block=16>",
    "quant-int4<method=hqq>",
    "quant-int4<bits=3>",
    "quant-int4<bits=8;block=64>",
    "quant-int8",
    "quant-int8<asym>",
    "quant-fp16",
    "quant-bf16",
    "quant-embed",
    "quant-embed,quant-int4<block=128>",  # K = 192 is not a multiple of 128: padded blocks
    "quant-int4<bits=2>",  # packed 4 to a byte for ORT (MatMulNBits bits=2)
    # Calibrated methods (the calibration file comes from _quantize):
    "quant-int4<method=gptq>",
    "quant-int4<method=gptq;actorder;asym;block=64>",
    "quant-int4<method=awq;block=64>",
    "quant-mixed<bpw=7>",
    "quant-embed,quant-mixed<bpw=6;candidates=2,4,8,16;method=rtn;metric=weight>",
    # the table allocated too; sym and asym formats; 3 probe windows
    "quant-mixed<bpw=6;candidates=2,4,8,16;metric=kl;embed;mode=both;probe-windows=3>",
    # every format probed end to end
    "quant-mixed<bpw=7.5;candidates=2,4,8;blocks=32,64;metric=kl;probe=all>",
]

pytestmark = pytest.mark.skipif(not (LLMOPT.exists() and RUNNER.exists()),
                                reason=f"{LLMOPT} or {RUNNER} not built")


def _llmopt(*args: str) -> str:
    proc = subprocess.run([str(LLMOPT), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"llmopt {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def _quantize(src: Path, pipeline: str, target: str, out_dir: Path) -> tuple[Path, Path]:
    """Writes OUT.onnx and the quantized IR as OUT.llir. Passes that calibrate get 8
    windows of 32 random token ids (the tiny model's weights are random too)."""
    out = out_dir / "q.onnx"
    ir = out_dir / "q.llir"
    calib = out_dir / "calib.ids"
    ids = np.random.default_rng(7).integers(0, 256, size=8 * 32)
    calib.write_text(" ".join(str(i) for i in ids))
    ir.write_text(_llmopt(str(src), f"-passes={pipeline}", f"--target={target}", "--verify-each",
                          "--calib", str(calib), "--calib-samples", "8", "--calib-seqlen", "32",
                          "-o", str(out), "--print-ir-full"))
    return out, ir


def _feeds(seq: int, seed: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.random.default_rng(seed).integers(0, 256, size=(2, seq), dtype=np.int64)}


def _ort(model: Path | onnx.ModelProto, feeds: dict, config: dict[str, str] | None = None,
         optimized: Path | None = None) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    if optimized:
        so.optimized_model_filepath = str(optimized)
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)








def _with_accuracy_level(path: Path, level: int) -> onnx.ModelProto:
    m = onnx.load(str(path))
    for n in m.graph.node:
        for a in n.attribute:
            if n.op_type == "MatMulNBits" and a.name == "accuracy_level":
                a.i = level
    return m


@pytest.mark.parametrize("target", ["ort", "onnx"])
@pytest.mark.parametrize("pipeline", PASSES)
def test_output_runs_in_ort_and_matches_the_interpreter(llama, tmp_path, pipeline, target):
    out, ir = _quantize(llama, pipeline, target, tmp_path)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    ops = collections.Counter(n.op_type for n in model.graph.node)
    if target == "onnx":
        assert not any(n.domain == "com.microsoft" for n in model.graph.node)
        if "int4" in pipeline or "embed" in pipeline:
            assert opsets[""] == 21 and model.ir_version >= 10
    elif "int" in pipeline or "embed" in pipeline:
        assert ops["MatMulNBits"] > 0 and ops["DequantizeLinear"] == 0
        assert opsets.get("com.microsoft") == 1

    # f32 compute on both sides: the packing, scales and zero points ORT reads are exactly
    # the ones the interpreter reads, and what the IR means.
    exact = tmp_path / "exact.onnx"
    onnx.save(_with_accuracy_level(out, 0), str(exact))
    level0 = {"session.qdq_matmulnbits_accuracy_level": "0"}
    for seq, seed in ((1, 0), (7, 1), (19, 2)):
        feeds = _feeds(seq, seed)
        want = _ort(exact, feeds, level0)[0]
        assert np.isfinite(want).all()
        assert _rel(_interp(exact, feeds, tmp_path / "run")[0], want) <= REL_TOL, (pipeline, target, seq)
        assert _rel(_interp(ir, feeds, tmp_path / "run")[0], want) <= REL_TOL, (pipeline, target, seq)
        # As written (accuracy_level 4 where MatMulNBits is used): close, see the docstring.
        got = _ort(out, feeds)[0]
        assert _cos(got, want) >= 0.999, (pipeline, target, seq)


@pytest.mark.parametrize("level", [0, 4])
def test_accuracy_level_flag_is_written_to_every_matmulnbits(llama, tmp_path, level):
    out = tmp_path / "q.onnx"
    _llmopt(str(llama), "-passes=quant-int8", f"--accuracy-level={level}", "-o", str(out))
    nodes = [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) >= 28
    for n in nodes:
        assert [a.i for a in n.attribute if a.name == "accuracy_level"] == [level], n.name


def _exposed(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for name in names:
        if name not in known:
            m.graph.output.append(helper.make_empty_tensor_value_info(name))
    return m


@pytest.mark.parametrize("pipeline", ["quant-int4", "quant-int4<asym;block=16>", "quant-int4<method=hqq>",
                                      "quant-int4<bits=8>", "quant-int8<asym>",
                                      "quant-embed<asym>,quant-int4<block=128>", "quant-int4<bits=2>",
                                      "quant-int4<bits=2;asym;block=16>",
                                      "quant-int4<bits=2;asym>", "quant-int4<bits=2;block=16>"])
def test_each_quantized_node_matches_the_interpreter_at_accuracy_level_4(llama, tmp_path, pipeline):
    out, _ = _quantize(llama, pipeline, "ort", tmp_path)
    model = onnx.load(str(out))
    nodes = [n for n in model.graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")]
    assert nodes
    for n in nodes:
        assert n.op_type != "MatMulNBits" or any(a.name == "accuracy_level" and a.i == 4 for a in n.attribute)
    # The activations each node reads, as ORT computes them.
    feeds = _feeds(9, 3)
    inputs = sorted({n.input[0] if n.op_type == "MatMulNBits" else n.input[1] for n in nodes})
    so_outs = _ort(_exposed(model, inputs), feeds)
    acts = dict(zip([o.name for o in model.graph.output] + inputs, so_outs))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    worst = 0.0
    for n in nodes:
        data_in = n.input[0] if n.op_type == "MatMulNBits" else n.input[1]
        sub_nodes, sub_inits = [], []
        for name in n.input:
            if name in inits:
                sub_inits.append(inits[name])
            elif name in producers and name != data_in:  # GatherBlockQuantized's Reshape of B
                p = producers[name]
                sub_nodes.append(p)
                sub_inits += [inits[i] for i in p.input if i in inits]
        a = acts[data_in]
        g = helper.make_graph(sub_nodes + [n], "one",
                              [helper.make_tensor_value_info(data_in, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)],
                              [helper.make_empty_tensor_value_info(n.output[0])], sub_inits)
        one = helper.make_model(g, opset_imports=list(model.opset_import))
        one.ir_version = model.ir_version
        path = tmp_path / "one.onnx"
        onnx.save(one, str(path))
        want = _ort(path, {data_in: a})[0]
        got = _interp(path, {data_in: a}, tmp_path / "run")[0]
        worst = max(worst, _rel(got, want))
        assert _rel(got, want) <= REL_TOL, (pipeline, n.name)
    print(f"\n[quant] {pipeline}: {len(nodes)} quantized nodes, ORT vs llmopt at accuracy_level 4 on the "
          f"same activations: max rel err {worst:.2e}")


def _dq_feeding_matmul(model: onnx.ModelProto) -> int:
    consumers = collections.defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    return sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear"
               and all(c.op_type == "MatMul" and c.input[1] == n.output[0] for c in consumers[n.output[0]]))


@pytest.mark.parametrize("pipeline", [
    "quant-int4", "quant-int4<asym;block=16>", "quant-int4<method=hqq>", "quant-int4<bits=8>",
    "quant-embed,quant-int4",  # the tied LM head: DequantizeLinear(Transpose(q), ...) -> MatMul
    "quant-int8<asym>",  # per output channel: ORT 1.32 repeats each scale over blocks of 32
])
def test_ort_fuses_target_onnx_dequantize_matmul(llama, tmp_path, pipeline):
    out, _ = _quantize(llama, pipeline, "onnx", tmp_path)
    model = onnx.load(str(out))
    quantized = _dq_feeding_matmul(model)
    assert quantized >= 28
    opt = tmp_path / "optimized.onnx"
    _ort(out, _feeds(5, 0), optimized=opt)
    optimized = onnx.load(str(opt))
    counts = collections.Counter(n.op_type for n in optimized.graph.node)
    print(f"\n[quant] {pipeline} --target=onnx: {quantized} DequantizeLinear->MatMul written, ORT's "
          f"optimized model has {counts['MatMulNBits']} MatMulNBits")
    assert counts["MatMulNBits"] == quantized
    assert _dq_feeding_matmul(optimized) == 0


@pytest.mark.parametrize("pipeline,sym", [("quant-int4", True), ("quant-int4<asym>", False),
                                          ("quant-int4<block=128>", True), ("quant-int8<asym;block=64>", False)])
def test_rtn_weights_are_byte_identical_to_ort_quantizer(llama, tmp_path, pipeline, sym):
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    out, _ = _quantize(llama, pipeline, "ort", tmp_path)
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(llama)).graph.initializer}
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    checked = 0
    for n in model.graph.node:
        if n.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in n.attribute}
        w = fp32[n.input[1][: -len("_nbits")]].astype(np.float32)
        rows, cols = w.shape
        bs, bits = attrs["block_size"], attrs["bits"]
        kb, per = (rows + bs - 1) // bs, 8 // bits
        packed = np.zeros((cols, kb, bs * bits // 8), np.uint8)
        scales = np.zeros((cols, kb), np.float32)
        zp = np.zeros((cols, (kb + per - 1) // per), np.uint8)
        quant = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
        quant(packed, np.pad(w, ((0, kb * bs - rows), (0, 0))), scales, zp, bs, cols, rows, sym)
        np.testing.assert_array_equal(inits[n.input[1]], packed, err_msg=n.name)
        np.testing.assert_array_equal(inits[n.input[2]].reshape(cols, kb), scales, err_msg=n.name)
        if not sym:
            np.testing.assert_array_equal(inits[n.input[3]].reshape(zp.shape), zp, err_msg=n.name)
        checked += 1
    assert checked == 28


def test_padded_gather_table_runs_in_ort(tmp_path):
    """A table whose hidden size (48) is not a multiple of the block (32): padded rows."""
    src = REPO / "tests" / "text" / "quant" / "quant-export.llir"
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32),
             "ids": np.array([3, 17], np.int64)}
    for target in ("ort", "onnx"):
        out, ir = _quantize(src, "infer-shapes,quant-embed<asym>,quant-int4", target, tmp_path)
        onnx.checker.check_model(onnx.load(str(out)), full_check=True)
        exact = tmp_path / "exact.onnx"
        onnx.save(_with_accuracy_level(out, 0), str(exact))
        want = _ort(exact, feeds, {"session.qdq_matmulnbits_accuracy_level": "0"})[0]
        assert _rel(_interp(exact, feeds, tmp_path / "run")[0], want) <= REL_TOL
        assert _rel(_interp(ir, feeds, tmp_path / "run")[0], want) <= REL_TOL


#: (pipeline, target, largest file size allowed as a fraction of the fp32 file). The tiny
#: model's graph (shape arithmetic, names) is ~9% of its fp32 file and does not shrink.
BOUNDS = [("quant-embed,quant-int4", "ort", 0.27), ("quant-embed,quant-int4", "onnx", 0.27),
          ("quant-embed<block=64>,quant-int4<block=64>", "ort", 0.25),
          ("quant-embed<bits=8>,quant-int8", "ort", 0.40), ("quant-embed<bits=8>,quant-int8", "onnx", 0.40),
          ("quant-fp16", "ort", 0.56), ("quant-bf16", "ort", 0.56)]


def test_sizes_shrink_as_the_formats_say(llama, tmp_path):
    base = tmp_path / "fp32.onnx"
    _llmopt(str(llama), "-passes=dce", "-o", str(base))
    fp32 = base.stat().st_size
    weights = [i for i in onnx.load(str(llama)).graph.initializer if len(i.dims) == 2]
    params = sum(int(np.prod(i.dims)) for i in weights)
    rows = []
    # (pipeline, target, max size vs fp32)
    for pipeline, target, _ in BOUNDS:
        d = tmp_path / f"{len(rows)}"
        d.mkdir()
        out, _ = _quantize(llama, pipeline, target, d)
        size = out.stat().st_size
        # Every initializer a matrix weight became (W_nbits, W_nbits_scales, W_quant, ...).
        weight_bytes = sum(len(i.raw_data) for i in onnx.load(str(out)).graph.initializer
                           if any(i.name.startswith(w.name) for w in weights))
        rows.append((pipeline, target, size, 8.0 * weight_bytes / params))
    print(f"\n[quant] tiny Llama fp32: {fp32} bytes, {params} matrix weights")
    for pipeline, target, size, bpw in rows:
        print(f"[quant] {pipeline:45s} {target:4s}: {size:8d} bytes ({size / fp32:.3f} of fp32), "
              f"{bpw:.2f} bits per weight (all bytes of the weights incl. scales, zero points, padding)")
    for (pipeline, target, size, bpw), (_, _, bound) in zip(rows, BOUNDS):
        assert size <= bound * fp32, (pipeline, target, size, fp32)


def _interp(model: Path, feeds: dict, work: Path) -> list[np.ndarray]:
    return ortcheck.interp(RUNNER, model, feeds, work)
