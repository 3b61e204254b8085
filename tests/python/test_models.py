"""Tests for the Python model tooling in tools/models (tiny Llama and BERT test models).

Checks that the generated ONNX is valid at IR 8 / opset 17, that ONNX Runtime agrees with the
NumPy references, that generation is byte-deterministic, and that the graphs keep the
decomposed (unfused) form the llmopt fusion passes are meant to lift.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "tools" / "models"
sys.path.insert(0, str(MODELS))

import bert_onnx  # noqa: E402
import bert_ref  # noqa: E402
import gen_tiny_bert  # noqa: E402
import gen_tiny_llama  # noqa: E402
import llama_onnx  # noqa: E402
import llama_ref  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5

#: Ops an exporter's fused or contrib forms would use; the decomposed graphs must have none.
FUSED_OPS = {
    "LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "RMSNormalization", "Attention", "MultiHeadAttention",
    "GroupQueryAttention", "RotaryEmbedding", "Gelu", "FastGelu", "BiasGelu", "QuickGelu",
    "Gemm", "FusedMatMul", "MatMulNBits", "Trilu", "Einsum",
}

LLAMA_OPS = {
    "Constant", "Gather", "Shape", "Unsqueeze", "Concat", "Reshape", "Transpose", "Slice",
    "Expand", "Range", "Cast", "LessOrEqual", "Where", "MatMul", "Mul", "Add", "Div", "Pow",
    "ReduceMean", "Sqrt", "Neg", "Cos", "Sin", "Softmax", "Sigmoid",
}


def _session(model: onnx.ModelProto | str | Path, opt: str = "disable") -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt]
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _op_counts(model: onnx.ModelProto) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in model.graph.node)


def _gen(script: str, out: Path, *args: str) -> Path:
    subprocess.run([sys.executable, str(MODELS / script), "-o", str(out), *args], check=True)
    return out


# ------------------------------------------------------------------------------ Llama


@pytest.fixture(scope="module")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _gen("gen_tiny_llama.py", tmp_path_factory.mktemp("llama") / "tiny_llama.onnx")


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_path: Path) -> onnx.ModelProto:
    return onnx.load(str(tiny_llama_path))


def test_llama_checker_ir_and_opset(tiny_llama: onnx.ModelProto) -> None:
    onnx.checker.check_model(tiny_llama, full_check=True)
    assert tiny_llama.ir_version == 8
    assert [(o.domain, o.version) for o in tiny_llama.opset_import] == [("", 17)]
    assert all(n.domain == "" for n in tiny_llama.graph.node)


def test_llama_io_signature(tiny_llama: onnx.ModelProto) -> None:
    def dims(vi: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    (inp,), (out,) = tiny_llama.graph.input, tiny_llama.graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == ("input_ids", onnx.TensorProto.INT64)
    assert dims(inp) == ["batch", "seq"]
    assert (out.name, out.type.tensor_type.elem_type) == ("logits", onnx.TensorProto.FLOAT)
    assert dims(out) == ["batch", "seq", gen_tiny_llama.TINY_LLAMA.vocab_size]


@pytest.mark.parametrize("opt", ["disable", "all"])
def test_llama_matches_reference(tiny_llama_path: Path, opt: str) -> None:
    cfg, weights = gen_tiny_llama.TINY_LLAMA, gen_tiny_llama.tiny_llama_weights(0)
    sess = _session(tiny_llama_path, opt)
    rng = np.random.default_rng(123)
    for seq in (1, 7, 33):
        ids = rng.integers(0, cfg.vocab_size, size=(2, seq), dtype=np.int64)
        (logits,) = sess.run(None, {"input_ids": ids})
        assert logits.shape == (2, seq, cfg.vocab_size) and logits.dtype == np.float32
        ref64 = llama_ref.forward(cfg, weights, ids, dtype=np.float64)
        np.testing.assert_allclose(logits, ref64, rtol=RTOL, atol=ATOL)
        ref32 = llama_ref.forward(cfg, weights, ids, dtype=np.float32)
        np.testing.assert_allclose(logits, ref32, rtol=RTOL, atol=ATOL)
    # Not degenerate: logits spread out and depend on the input.
    assert 0.5 < float(logits.std(axis=-1).mean()) < 5.0
    assert not np.allclose(logits[0, -1], logits[1, -1], atol=1e-2)


def test_llama_causal(tiny_llama_path: Path) -> None:
    """Changing a later token must not change earlier logits."""
    sess = _session(tiny_llama_path)
    ids = np.random.default_rng(5).integers(0, 256, size=(1, 12), dtype=np.int64)
    ids2 = ids.copy()
    ids2[0, 8:] = (ids2[0, 8:] + 1) % 256
    a, b = sess.run(None, {"input_ids": ids})[0], sess.run(None, {"input_ids": ids2})[0]
    np.testing.assert_array_equal(a[:, :8], b[:, :8])
    assert not np.allclose(a[:, 8:], b[:, 8:])


def test_llama_generator_deterministic(tiny_llama_path: Path, tmp_path: Path) -> None:
    again = _gen("gen_tiny_llama.py", tmp_path / "again.onnx", "--seed", "0")
    assert again.read_bytes() == tiny_llama_path.read_bytes()
    other = _gen("gen_tiny_llama.py", tmp_path / "seed1.onnx", "--seed", "1")
    assert other.read_bytes() != tiny_llama_path.read_bytes()


def test_llama_tied_embedding_single_initializer(tiny_llama: onnx.ModelProto) -> None:
    cfg = gen_tiny_llama.TINY_LLAMA
    inits = {t.name: t for t in tiny_llama.graph.initializer}
    big = [t.name for t in inits.values()
           if sorted(t.dims) == sorted([cfg.vocab_size, cfg.hidden_size])]
    assert big == ["model.embed_tokens.weight"]
    assert "lm_head.weight" not in inits
    nodes = {n.name: n for n in tiny_llama.graph.node}
    head, tr = nodes["/lm_head/MatMul"], nodes["/lm_head/Transpose"]
    assert head.output == ["logits"] and head.input[1] == tr.output[0]
    assert tr.input == ["model.embed_tokens.weight"]
    assert nodes["/model/embed_tokens/Gather"].input[0] == "model.embed_tokens.weight"


def test_llama_decomposed_pattern(tiny_llama: onnx.ModelProto) -> None:
    cfg = gen_tiny_llama.TINY_LLAMA
    n_layers = cfg.num_layers
    counts = _op_counts(tiny_llama)
    assert set(counts) <= LLAMA_OPS, set(counts) - LLAMA_OPS
    assert not set(counts) & FUSED_OPS
    assert counts["Softmax"] == n_layers
    assert counts["Sigmoid"] == n_layers
    # 7 projections + 2 attention products per layer, the LM head and RoPE's inv_freq @ pos.
    assert counts["MatMul"] == 9 * n_layers + 2
    for op in ("Pow", "ReduceMean", "Sqrt"):  # 2 RMSNorms per layer + the final norm
        assert counts[op] == 2 * n_layers + 1
    assert counts["Neg"] == 2 * n_layers  # rotate_half on q and k
    assert counts["Expand"] == 2 * n_layers  # repeat_kv on k and v (GQA)
    assert counts["Range"] == 1 and counts["Cos"] == 1 and counts["Sin"] == 1
    assert counts["Where"] == 1 and counts["LessOrEqual"] == 1


def test_llama_names_and_layouts(tiny_llama: onnx.ModelProto) -> None:
    cfg = gen_tiny_llama.TINY_LLAMA
    nodes = {n.name: n for n in tiny_llama.graph.node}
    inits = {t.name: list(t.dims) for t in tiny_llama.graph.initializer}
    kv = cfg.num_kv_heads * cfg.head_dim
    for i in range(cfg.num_layers):
        for proj, shape in (("self_attn/q_proj", [cfg.hidden_size, cfg.num_heads * cfg.head_dim]),
                            ("self_attn/k_proj", [cfg.hidden_size, kv]),
                            ("self_attn/v_proj", [cfg.hidden_size, kv]),
                            ("self_attn/o_proj", [cfg.num_heads * cfg.head_dim, cfg.hidden_size]),
                            ("mlp/gate_proj", [cfg.hidden_size, cfg.intermediate_size]),
                            ("mlp/up_proj", [cfg.hidden_size, cfg.intermediate_size]),
                            ("mlp/down_proj", [cfg.intermediate_size, cfg.hidden_size])):
            node = nodes[f"/model/layers.{i}/{proj}/MatMul"]
            weight = f"model.layers.{i}.{proj.replace('/', '.')}.weight"
            assert node.input[1] == weight and inits[weight] == shape  # stored [in, out]
        assert nodes[f"/model/layers.{i}/input_layernorm/Pow"].op_type == "Pow"
        assert nodes[f"/model/layers.{i}/self_attn/Softmax"].op_type == "Softmax"
    assert inits["model.norm.weight"] == [cfg.hidden_size]
    # Every initializer is a weight of the HF state dict (one tensor per parameter).
    assert set(inits) == set(llama_onnx.weight_shapes(cfg))


def _small_cfg(**kw: object) -> llama_onnx.LlamaConfig:
    base = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                num_kv_heads=4, head_dim=8, rope_theta=500.0, rms_norm_eps=1e-6,
                tie_word_embeddings=False)
    base.update(kw)
    return llama_onnx.LlamaConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("cfg", [
    _small_cfg(),                                    # MHA (no repeat_kv), untied LM head
    _small_cfg(num_kv_heads=1, head_dim=12, tie_word_embeddings=True),  # MQA, hidden != h*d
], ids=["mha_untied", "mqa_tied"])
def test_llama_other_configs(cfg: llama_onnx.LlamaConfig) -> None:
    weights = gen_tiny_llama.random_llama_weights(cfg, seed=3)
    model = llama_onnx.build_model(cfg, weights)
    onnx.checker.check_model(model, full_check=True)
    counts = _op_counts(model)
    assert counts["Expand"] == (0 if cfg.n_rep == 1 else 2 * cfg.num_layers)
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    if cfg.tie_word_embeddings:
        assert "lm_head.weight" not in inits
    else:
        assert inits["lm_head.weight"] == [cfg.hidden_size, cfg.vocab_size]
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(2, 9), dtype=np.int64)
    (logits,) = _session(model).run(None, {"input_ids": ids})
    ref = llama_ref.forward(cfg, weights, ids, dtype=np.float64)
    np.testing.assert_allclose(logits, ref, rtol=RTOL, atol=ATOL)


def test_llama_rejects_bad_weights() -> None:
    cfg = _small_cfg()
    weights = gen_tiny_llama.random_llama_weights(cfg)
    del weights["model.norm.weight"]
    with pytest.raises(ValueError, match="missing"):
        llama_onnx.build_model(cfg, weights)
    weights = gen_tiny_llama.random_llama_weights(cfg)
    weights["model.layers.0.self_attn.q_proj.weight"] = np.zeros((32, 31), np.float32)
    with pytest.raises(ValueError, match="q_proj"):
        llama_onnx.build_model(cfg, weights)


def test_llama_with_past_decode_matches_full(tiny_llama_path: Path) -> None:
    cfg, weights = gen_tiny_llama.TINY_LLAMA, gen_tiny_llama.tiny_llama_weights(0)
    model = llama_onnx.build_model(cfg, weights, with_past=True)
    onnx.checker.check_model(model, full_check=True)
    names = [o.name for o in model.graph.output]
    assert names[0] == "logits" and names[1:3] == ["present.0.key", "present.0.value"]
    dec = _session(model)
    full = _session(tiny_llama_path)

    b, prompt, steps = 2, 5, 6
    ids = np.random.default_rng(9).integers(0, cfg.vocab_size, size=(b, prompt + steps),
                                            dtype=np.int64)
    (want,) = full.run(None, {"input_ids": ids})

    empty = np.zeros((b, cfg.num_kv_heads, 0, cfg.head_dim), np.float32)
    past = {f"past_key_values.{i}.{k}": empty for i in range(cfg.num_layers)
            for k in ("key", "value")}
    got = []
    chunks = [ids[:, :prompt]] + [ids[:, t:t + 1] for t in range(prompt, prompt + steps)]
    for chunk in chunks:  # prefill (from an empty cache), then one token at a time
        outs = dec.run(None, {"input_ids": chunk, **past})
        got.append(outs[0])
        past = {n.replace("present", "past_key_values"): v for n, v in zip(names[1:], outs[1:])}
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, rtol=RTOL, atol=ATOL)
    total = prompt + steps
    assert past["past_key_values.0.key"].shape == (b, cfg.num_kv_heads, total, cfg.head_dim)

    # The cache matches the reference's (keys after RoPE).
    _, ref_cache = llama_ref.forward(cfg, weights, ids, dtype=np.float64, return_present=True)
    for i, (k, v) in enumerate(ref_cache):
        np.testing.assert_allclose(past[f"past_key_values.{i}.key"], k, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(past[f"past_key_values.{i}.value"], v, rtol=RTOL, atol=ATOL)


def test_llama_external_data(tmp_path: Path, tiny_llama_path: Path) -> None:
    out = _gen("gen_tiny_llama.py", tmp_path / "ext.onnx", "--external-data")
    data = tmp_path / "ext.onnx.data"
    assert data.exists()
    proto = onnx.load(str(out), load_external_data=False)
    for t in proto.graph.initializer:  # all but the small norm vectors live in the data file
        external = t.data_location == onnx.TensorProto.EXTERNAL
        assert external == (np.prod(t.dims) * 4 >= 1024), t.name
    # Byte-deterministic, including the data file (which must not be appended to).
    first = (out.read_bytes(), data.read_bytes())
    _gen("gen_tiny_llama.py", tmp_path / "ext.onnx", "--external-data")
    assert (out.read_bytes(), data.read_bytes()) == first
    onnx.checker.check_model(str(out), full_check=True)
    ids = np.arange(10, dtype=np.int64).reshape(2, 5)
    a = _session(out).run(None, {"input_ids": ids})[0]
    b = _session(tiny_llama_path).run(None, {"input_ids": ids})[0]
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------- BERT


@pytest.fixture(scope="module")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _gen("gen_tiny_bert.py", tmp_path_factory.mktemp("bert") / "tiny_bert.onnx")


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_path: Path) -> onnx.ModelProto:
    return onnx.load(str(tiny_bert_path))


def test_bert_checker_ir_and_opset(tiny_bert: onnx.ModelProto) -> None:
    onnx.checker.check_model(tiny_bert, full_check=True)
    assert tiny_bert.ir_version == 8
    assert [(o.domain, o.version) for o in tiny_bert.opset_import] == [("", 17)]
    assert [i.name for i in tiny_bert.graph.input] == ["input_ids", "attention_mask",
                                                       "token_type_ids"]
    assert [o.name for o in tiny_bert.graph.output] == ["last_hidden_state"]


@pytest.mark.parametrize("opt", ["disable", "all"])
def test_bert_matches_reference(tiny_bert_path: Path, opt: str) -> None:
    cfg, weights = gen_tiny_bert.TINY_BERT, gen_tiny_bert.tiny_bert_weights(0)
    sess = _session(tiny_bert_path, opt)
    rng = np.random.default_rng(7)
    for seq in (1, 6, 19):
        ids = rng.integers(0, cfg.vocab_size, size=(2, seq), dtype=np.int64)
        mask = np.ones((2, seq), np.int64)
        mask[1, max(1, seq - 3):] = 0  # right padding in the second row
        types = np.zeros((2, seq), np.int64)
        types[:, seq // 2:] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (hidden,) = sess.run(None, feeds)
        assert hidden.shape == (2, seq, cfg.hidden_size) and hidden.dtype == np.float32
        ref = bert_ref.forward(cfg, weights, ids, mask, types, dtype=np.float64)
        np.testing.assert_allclose(hidden, ref, rtol=RTOL, atol=ATOL)
    # Padding changes nothing for the unpadded tokens of a row.
    short = {k: v[1:, : seq - 3] for k, v in feeds.items()}
    np.testing.assert_allclose(sess.run(None, short)[0], hidden[1:, : seq - 3],
                               rtol=RTOL, atol=ATOL)


def test_bert_generator_deterministic(tiny_bert_path: Path, tmp_path: Path) -> None:
    again = _gen("gen_tiny_bert.py", tmp_path / "again.onnx")
    assert again.read_bytes() == tiny_bert_path.read_bytes()


def test_bert_decomposed_pattern(tiny_bert: onnx.ModelProto) -> None:
    n_layers = gen_tiny_bert.TINY_BERT.num_layers
    counts = _op_counts(tiny_bert)
    assert not set(counts) & FUSED_OPS
    assert counts["Softmax"] == n_layers
    assert counts["Erf"] == n_layers
    n_ln = 2 * n_layers + 1  # two LayerNorms per layer + the embedding LayerNorm
    assert counts["ReduceMean"] == 2 * n_ln
    assert counts["Sqrt"] == n_ln and counts["Pow"] == n_ln and counts["Sub"] == n_ln + 1
    assert counts["MatMul"] == 8 * n_layers  # 6 Linear + 2 attention products per layer
    nodes = {n.name: n for n in tiny_bert.graph.node}
    q = nodes["/encoder/layer.0/attention/self/query/MatMul"]
    assert q.input[1] == "encoder.layer.0.attention.self.query.weight"
    assert nodes["/encoder/layer.0/attention/self/query/Add"].input[0] == \
        "encoder.layer.0.attention.self.query.bias"
    inits = {t.name for t in tiny_bert.graph.initializer}
    assert inits == set(bert_onnx.weight_shapes(gen_tiny_bert.TINY_BERT))


def test_bert_without_token_type_ids() -> None:
    cfg, weights = gen_tiny_bert.TINY_BERT, gen_tiny_bert.tiny_bert_weights(2)
    model = bert_onnx.build_model(cfg, weights, with_token_type_ids=False)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    ids = np.random.default_rng(4).integers(0, cfg.vocab_size, size=(2, 8), dtype=np.int64)
    mask = np.ones_like(ids)
    (hidden,) = _session(model).run(None, {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(hidden, bert_ref.forward(cfg, weights, ids, dtype=np.float64),
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("normalize", [False, True])
def test_bert_mean_pooling_output(normalize: bool) -> None:
    """``pooling="mean"``: sentence-transformers' masked mean (+ L2 normalization) as an extra
    ``sentence_embedding`` output; padding does not change a row's embedding."""
    cfg, weights = gen_tiny_bert.TINY_BERT, gen_tiny_bert.tiny_bert_weights(3)
    model = bert_onnx.build_model(cfg, weights, pooling="mean", normalize=normalize)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["last_hidden_state", "sentence_embedding"]
    assert not set(_op_counts(model)) & FUSED_OPS
    rng = np.random.default_rng(11)
    ids = rng.integers(0, cfg.vocab_size, size=(3, 9), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    hidden, emb = _session(model).run(None, feeds)
    assert emb.shape == (3, cfg.hidden_size)
    ref_h = bert_ref.forward(cfg, weights, ids, mask, dtype=np.float64)
    np.testing.assert_allclose(hidden, ref_h, rtol=RTOL, atol=ATOL)
    ref = bert_ref.mean_pooling(ref_h, mask, normalize)
    np.testing.assert_allclose(emb, ref, rtol=RTOL, atol=ATOL)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
    short = {k: v[1:2, :5] for k, v in feeds.items()}
    np.testing.assert_allclose(_session(model).run(None, short)[1], emb[1:2], rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError):
        bert_onnx.build_model(cfg, weights, normalize=True)
    with pytest.raises(ValueError):
        bert_onnx.build_model(cfg, weights, pooling="cls")
