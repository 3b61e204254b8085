"""The fusion passes end to end in ONNX Runtime (docs/fusion.md).

On the bundled tiny Llama (with and without a KV cache) and tiny BERT, written by the same
code as the real SmolLM2 / MiniLM conversions: every fuse-* pass and fuse-llm, for
--target=ort and --target=onnx, gives a model that passes onnx.checker, contains the fused
ops it should, and whose outputs in ORT match the original's in ORT within 1e-4 relative
(max |fused - original| / max |original|). The KV-cache model is also run as a decode
loop (prefill, then one token at a time) through GroupQueryAttention's present outputs.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest

from ortcheck import rel as _rel  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
LLMOPT = BUILD / "bin" / "llmopt"
MODELS = REPO / "tools" / "models"
sys.path.insert(0, str(MODELS))

import gen_tiny_llama  # noqa: E402

REL_TOL = 1e-4


def _gen(script: str, out: Path, *args: str) -> Path:
    subprocess.run([sys.executable, str(MODELS / script), "-o", str(out), *args], check=True)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fusion")
    return {"llama": _gen("gen_tiny_llama.py", d / "llama.onnx"),
            "llama_past": _gen("gen_tiny_llama.py", d / "llama_past.onnx", "--with-past"),
            "bert": _gen("gen_tiny_bert.py", d / "bert.onnx")}


def _fuse(src: Path, passes: str, out: Path, target: str = "ort") -> onnx.ModelProto:
    proc = subprocess.run([str(LLMOPT), str(src), f"-passes={passes}", f"--target={target}",
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(str(out))
    _check(model)
    return model


def _check(model: onnx.ModelProto) -> None:
    """onnx.checker, except that ORT's default-domain SimplifiedLayerNormalization (which
    ORT's own transformer optimizer writes the same way) is checked as a custom-domain op:
    the checker has no schema for it."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for n in copy.graph.node:
        if n.op_type == "SimplifiedLayerNormalization" and n.domain in ("", "ai.onnx"):
            n.domain = "com.microsoft"
    if not any(o.domain == "com.microsoft" for o in copy.opset_import):
        copy.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(copy)


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _feeds(name: str, batch: int = 2, seq: int = 9) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 256, size=(batch, seq), dtype=np.int64)
    if name == "bert":
        mask = np.ones((batch, seq), np.int64)
        mask[1, seq - 3:] = 0  # padding in the second row
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    feeds = {"input_ids": ids}
    if name == "llama_past":
        cfg = gen_tiny_llama.TINY_LLAMA
        empty = np.zeros((batch, cfg.num_kv_heads, 0, cfg.head_dim), np.float32)
        feeds.update({f"past_key_values.{i}.{k}": empty for i in range(cfg.num_layers)
                      for k in ("key", "value")})
    return feeds


def _counts(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node)


LAYERS = gen_tiny_llama.TINY_LLAMA.num_layers
CASES = [
    ("llama", "fuse-rmsnorm", {"SimplifiedLayerNormalization": 1,
                               "SkipSimplifiedLayerNormalization": 2 * LAYERS}),
    ("llama", "fuse-swiglu", {"Sigmoid": LAYERS}),
    ("llama", "fuse-rope", {"RotaryEmbedding": 2 * LAYERS}),
    ("llama", "fuse-rope,fuse-attention", {"GroupQueryAttention": LAYERS, "Softmax": 0}),
    ("llama", "fuse-llm", {"GroupQueryAttention": LAYERS, "SkipSimplifiedLayerNormalization": 2 * LAYERS}),
    ("llama_past", "fuse-llm", {"GroupQueryAttention": LAYERS, "Softmax": 0}),
    ("bert", "fuse-layernorm", {"LayerNormalization": 1, "SkipLayerNormalization": 4}),
    ("bert", "fuse-gelu", {"Gelu": 2, "Erf": 0}),
    ("bert", "fuse-matmul-bias", {"MatMulBias": 0, "MatMul": 16}),
    ("bert", "fuse-attention", {"MultiHeadAttention": 2, "Softmax": 0}),
    ("bert", "fuse-llm", {"MultiHeadAttention": 2, "SkipLayerNormalization": 4, "Gelu": 2}),
]


@pytest.mark.parametrize("name,passes,want", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_fused_matches_original_in_ort(models: dict[str, Path], tmp_path: Path, name: str,
                                       passes: str, want: dict[str, int]) -> None:
    fused = _fuse(models[name], passes, tmp_path / "fused.onnx")
    counts = _counts(fused)
    for op, n in want.items():
        assert counts[op] == n, (op, counts)
    feeds = _feeds(name)
    ref = _session(models[name]).run(None, feeds)
    got = _session(tmp_path / "fused.onnx").run(None, feeds)
    for r, g in zip(ref, got):
        assert g.shape == r.shape
        assert _rel(g, r) < REL_TOL, (passes, _rel(g, r))


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_onnx_target_is_standard(models: dict[str, Path], tmp_path: Path, name: str) -> None:
    """fuse-llm --target=onnx writes only default-domain ops (RotaryEmbedding, the fused
    attention and the norms are written back as standard ops) and runs as the original."""
    fused = _fuse(models[name], "fuse-llm", tmp_path / "std.onnx", target="onnx")
    assert all(n.domain in ("", "ai.onnx") for n in fused.graph.node)
    feeds = _feeds(name)
    ref = _session(models[name]).run(None, feeds)
    got = _session(tmp_path / "std.onnx").run(None, feeds)
    for r, g in zip(ref, got):
        assert _rel(g, r) < REL_TOL


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_decode_loop_through_gqa_cache(models: dict[str, Path], tmp_path: Path, target: str) -> None:
    """Prefill 5 tokens then decode 4 one at a time on the fused KV-cache model (ORT's
    GroupQueryAttention, or its standard-op form written back for --target=onnx): logits
    and the cache match the original model's run the same way."""
    fused = _fuse(models["llama_past"], "fuse-llm", tmp_path / "fused.onnx", target=target)
    if target == "onnx":
        assert all(n.domain in ("", "ai.onnx") for n in fused.graph.node)
    ref_s, got_s = _session(models["llama_past"]), _session(tmp_path / "fused.onnx")
    names = [o.name for o in ref_s.get_outputs()]
    ids = np.random.default_rng(5).integers(0, 256, size=(2, 9), dtype=np.int64)
    past_r = past_g = {k: v for k, v in _feeds("llama_past").items() if k != "input_ids"}
    for chunk in [ids[:, :5]] + [ids[:, t:t + 1] for t in range(5, 9)]:
        ro = ref_s.run(None, {"input_ids": chunk, **past_r})
        go = got_s.run(None, {"input_ids": chunk, **past_g})
        for r, g in zip(ro, go):
            assert _rel(g, r) < REL_TOL
        past_r = {n.replace("present", "past_key_values"): v for n, v in zip(names[1:], ro[1:])}
        past_g = {n.replace("present", "past_key_values"): v for n, v in zip(names[1:], go[1:])}


@pytest.mark.parametrize("order", ["quant-int4,fuse-llm", "fuse-llm,quant-int4"])
def test_fusion_and_int4_compose(models: dict[str, Path], tmp_path: Path, order: str) -> None:
    """Fusion before or after quant-int4 (the Llama has no biases, so fuse-matmul-bias
    leaves the MatMuls to quantize): MatMulNBits and GroupQueryAttention in one model,
    logits as quant-int4 alone's (f32 compute, accuracy_level 0: at level 4 ORT rounds
    activations to int8 and 1-ulp upstream differences move outputs by ~1e-2 here)."""
    def run(passes: str, out: Path) -> np.ndarray:
        proc = subprocess.run([str(LLMOPT), str(models["llama"]), f"-passes={passes}",
                               "--accuracy-level=0", "-o", str(out)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return _session(out).run(None, _feeds("llama"))[0]

    want = run("quant-int4", tmp_path / "q.onnx")
    got = run(order, tmp_path / "qf.onnx")
    counts = _counts(onnx.load(str(tmp_path / "qf.onnx")))
    assert counts["MatMulNBits"] > 0 and counts["GroupQueryAttention"] == LAYERS, counts
    assert _rel(got, want) < REL_TOL


# Interleaved RoPE (GPT-J's rotate_every_two) on q [B, N, S, H], cos/sin computed from the
# positions 0..S-1 with each frequency repeated twice in a row.
INTERLEAVED_ROPE = """
<ir_version: 8, opset_import: ["" : 17]>
rope (float[2,4,S,16] q) => (float[2,4,S,16] y)
<int64 i0 = {0}, int64 i1 = {1}, int64 i2 = {2}, int64[1] z = {0}, int64[1] o = {1},
 int64[1] last = {-1}, int64[1] ax = {3}, int64[1] two = {2}, int64[1] big = {9223372036854775807},
 int64[3] fs = {1, -1, 16}, int64[4] xs = {2, 4, -1, 16}, float[8] inv = {INV}>
{
  sh = Shape(q)
  s = Gather(sh, i2)
  r = Range(i0, s, i1)
  rf = Cast<to = 1>(r)
  ru = Unsqueeze(rf, last)
  f2 = Mul(ru, inv)
  f = Unsqueeze(f2, z)
  fu = Unsqueeze(f, last)
  fc = Concat<axis = -1>(fu, fu)
  emb = Reshape(fc, fs)
  c0 = Cos(emb)
  s0 = Sin(emb)
  cos = Unsqueeze(c0, o)
  sin = Unsqueeze(s0, o)
  xe = Slice(q, z, big, ax, two)
  xo = Slice(q, o, big, ax, two)
  xon = Neg(xo)
  u1 = Unsqueeze(xon, last)
  u2 = Unsqueeze(xe, last)
  pc = Concat<axis = -1>(u1, u2)
  rot = Reshape(pc, xs)
  a = Mul(q, cos)
  b = Mul(rot, sin)
  y = Add(a, b)
}
"""


@pytest.mark.parametrize("target", ["ort", "onnx"])
def test_interleaved_rope_in_ort(tmp_path: Path, target: str) -> None:
    """fuse-rope lifts the interleaved form to RotaryEmbedding{interleaved=1}; ORT's kernel
    (--target=ort) and the standard ops written back (--target=onnx) give the original's
    outputs (positions up to 40, so the rotation matters)."""
    inv = 1.0 / (10000.0 ** (np.arange(0, 16, 2) / 16))
    text = INTERLEAVED_ROPE.replace("INV", ", ".join(f"{v:.9g}" for v in inv))
    src = tmp_path / "rope.onnx"
    onnx.save(onnx.parser.parse_model(text), str(src))
    fused = _fuse(src, "fuse-rope", tmp_path / "fused.onnx", target=target)
    ropes = [n for n in fused.graph.node if n.op_type == "RotaryEmbedding"]
    if target == "onnx":
        assert not ropes and all(n.domain in ("", "ai.onnx") for n in fused.graph.node)
    else:
        assert len(ropes) == 1 and _counts(fused)["Neg"] == 0, _counts(fused)
        attr = next(a for a in ropes[0].attribute if a.name == "interleaved")
        assert onnx.helper.get_attribute_value(attr) == 1
    q = np.random.default_rng(7).standard_normal((2, 4, 41, 16)).astype(np.float32)
    want = _session(src).run(None, {"q": q})[0]
    got = _session(tmp_path / "fused.onnx").run(None, {"q": q})[0]
    assert _rel(got, want) < REL_TOL, _rel(got, want)
