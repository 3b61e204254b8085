"""prune-struct end to end on the bundled tiny Llama (GQA 4 query / 2 KV heads of 16, MLP 192).

* ratio 0 is the identity: the same initializers, bit-identical ORT and interpreter outputs;
* dropping one head (MHA variant), one KV group, or one query head per KV group removes
  exactly those q/k/v columns and o_proj rows: every initializer equals the NumPy
  reference (``np.delete`` on the dense weights, compared bit for bit);
* dropping MLP channels equals a NumPy forward of the Llama with those channels deleted
  (and with them zeroed), within 1e-4 relative (f32, sums in a different order);
* with ``ratio``: the units chosen by ``metric=magnitude`` equal a NumPy port of the
  scoring (per-parameter scores relative to each group's mean, lowest first, one unit kept
  per group), and the pruned model equals the NumPy forward with those units deleted;
* every pruned model (every unit kind, metric, GQA rule, after quant-int4 / quant-int8, and
  the KV-cache variant) passes onnx.checker, runs in ONNX Runtime and agrees with
  llmopt's interpreter within 1e-4 relative (max |ORT - llmopt| / max |ORT|);
* the KV-cache model's past / present shapes follow the heads kept, and decoding one token
  with the pruned cache equals the full forward;
* after quant-int4, output columns and whole blocks are cut from the MatMulNBits blobs bit
  for bit.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from ortcheck import rel as _rel  # noqa: E402
import ortcheck  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
LLMOPT = BUILD / "bin" / "llmopt"
RUNNER = BUILD / "bin" / "llmopt-run"
MODELS = REPO / "tools" / "models"
sys.path.insert(0, str(MODELS))

from gen_tiny_llama import TINY_LLAMA, random_llama_weights  # noqa: E402
from llama_onnx import LlamaConfig, build_model, save_model  # noqa: E402

#: ORT vs the interpreter, and ORT vs the NumPy forward (f32), relative to max |ORT|.
REL_TOL = 1e-4
SAMPLES, SEQLEN = 4, 32
D = TINY_LLAMA.head_dim

pytestmark = pytest.mark.skipif(not (LLMOPT.exists() and RUNNER.exists()),
                                reason=f"{LLMOPT} or {RUNNER} not built")


# ---------------------------------------------------------------- fixtures and helpers

def _model(tmp_path_factory, name: str, cfg: LlamaConfig, seed: int, with_past: bool = False) -> Path:
    path = tmp_path_factory.mktemp("models") / name
    save_model(build_model(cfg, random_llama_weights(cfg, seed), with_past=with_past), str(path))
    return path


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return _model(tmp_path_factory, "tiny-llama.onnx", TINY_LLAMA, 0)


@pytest.fixture(scope="module")
def llama_past(tmp_path_factory) -> Path:
    return _model(tmp_path_factory, "tiny-llama-past.onnx", TINY_LLAMA, 0, with_past=True)


@pytest.fixture(scope="module")
def mha(tmp_path_factory) -> Path:
    """The tiny Llama without GQA (4 KV heads), so that one head is a unit on its own."""
    cfg = LlamaConfig(**{**TINY_LLAMA.__dict__, "num_kv_heads": 4})
    return _model(tmp_path_factory, "tiny-mha.onnx", cfg, 1)


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.ids"
    ids = np.random.default_rng(7).integers(0, 256, size=SAMPLES * SEQLEN)
    path.write_text(" ".join(str(i) for i in ids) + "\n")
    return path


def _prune(src: Path, pipeline: str, out: Path, calib: Path | None = None) -> str:
    """Runs llmopt; returns the prune-struct report line."""
    cmd = [str(LLMOPT), str(src), f"-passes={pipeline}", "--verify-each", "--target=ort", "-o", str(out),
           "--report"]
    if calib:
        cmd += ["--calib", str(calib), "--calib-samples", str(SAMPLES), "--calib-seqlen", str(SEQLEN)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"llmopt -passes={pipeline} failed:\n{proc.stderr}"
    return next(ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("prune-struct ("))


def _inits(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _interp(path: Path, feeds: dict[str, np.ndarray], work: Path) -> list[np.ndarray]:
    """Every output of `path` run by llmopt-run on `feeds`."""
    return ortcheck.interp(RUNNER, path, feeds, work)


def _ids(seed: int, batch: int = 2, seq: int = 11) -> dict[str, np.ndarray]:
    return {"input_ids": np.random.default_rng(seed).integers(0, 256, size=(batch, seq), dtype=np.int64)}


def _removed(report: str) -> float:
    return float(re.search(r"parameters \(([\d.]+)%\)", report).group(1)) / 100


# ---------------------------------------------------------------- NumPy reference

def _rms(x, w):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(TINY_LLAMA.rms_norm_eps)))


def _rotate(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def forward(W: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """The Llama forward on llmopt-layout weights (W [in, out]), each layer's head and
    channel counts read from its weights; a layer whose weights are gone is skipped."""
    cfg = TINY_LLAMA
    b, s = ids.shape
    pos = np.arange(s)
    inv = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, D, 2).astype(np.float32) / D))).astype(np.float32)
    emb = np.concatenate([pos[:, None] * inv[None], pos[:, None] * inv[None]], axis=-1).astype(np.float32)
    cos, sin = np.cos(emb)[None, None], np.sin(emb)[None, None]
    mask = np.where(pos[None, :] <= pos[:, None], 0.0, np.finfo(np.float32).min).astype(np.float32)
    h = W["model.embed_tokens.weight"][ids]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        if p + "self_attn.q_proj.weight" in W:
            x = _rms(h, W[p + "input_layernorm.weight"])
            nh, kvh = W[p + "self_attn.q_proj.weight"].shape[1] // D, W[p + "self_attn.k_proj.weight"].shape[1] // D
            q = (x @ W[p + "self_attn.q_proj.weight"]).reshape(b, s, nh, D).transpose(0, 2, 1, 3)
            k = (x @ W[p + "self_attn.k_proj.weight"]).reshape(b, s, kvh, D).transpose(0, 2, 1, 3)
            v = (x @ W[p + "self_attn.v_proj.weight"]).reshape(b, s, kvh, D).transpose(0, 2, 1, 3)
            q, k = q * cos + _rotate(q) * sin, k * cos + _rotate(k) * sin
            k, v = np.repeat(k, nh // kvh, axis=1), np.repeat(v, nh // kvh, axis=1)
            a = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(D)) + mask
            a = np.exp(a - a.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            h = h + (a @ v).transpose(0, 2, 1, 3).reshape(b, s, nh * D) @ W[p + "self_attn.o_proj.weight"]
        if p + "mlp.gate_proj.weight" in W:
            x = _rms(h, W[p + "post_attention_layernorm.weight"])
            g = x @ W[p + "mlp.gate_proj.weight"]
            h = h + (g / (1 + np.exp(-g)) * (x @ W[p + "mlp.up_proj.weight"])) @ W[p + "mlp.down_proj.weight"]
    h = _rms(h, W["model.norm.weight"])
    return h @ W["model.embed_tokens.weight"].T


def delete_heads(W: dict[str, np.ndarray], layer: int, q_heads: list[int], kv_heads: list[int]) -> dict:
    """W with query heads (q columns, o rows) and KV heads (k, v columns) of `layer` deleted."""
    W = dict(W)
    p = f"model.layers.{layer}.self_attn."
    cols = lambda heads: [h * D + d for h in heads for d in range(D)]  # noqa: E731
    W[p + "q_proj.weight"] = np.delete(W[p + "q_proj.weight"], cols(q_heads), axis=1)
    W[p + "o_proj.weight"] = np.delete(W[p + "o_proj.weight"], cols(q_heads), axis=0)
    for n in ("k_proj.weight", "v_proj.weight"):
        W[p + n] = np.delete(W[p + n], cols(kv_heads), axis=1)
    return W


def delete_channels(W: dict[str, np.ndarray], layer: int, channels: list[int]) -> dict:
    W = dict(W)
    p = f"model.layers.{layer}.mlp."
    W[p + "gate_proj.weight"] = np.delete(W[p + "gate_proj.weight"], channels, axis=1)
    W[p + "up_proj.weight"] = np.delete(W[p + "up_proj.weight"], channels, axis=1)
    W[p + "down_proj.weight"] = np.delete(W[p + "down_proj.weight"], channels, axis=0)
    return W


def assert_same_initializers(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    floats = {k: v for k, v in got.items() if v.dtype == np.float32}
    assert set(floats) == {k for k, v in want.items() if v.dtype == np.float32}
    for name, w in floats.items():
        assert w.shape == want[name].shape, (name, w.shape, want[name].shape)
        np.testing.assert_array_equal(w, want[name], err_msg=name)


# ---------------------------------------------------------------- tests

def test_ratio_zero_is_the_identity(llama, tmp_path):
    out = tmp_path / "same.onnx"
    report = _prune(llama, "prune-struct<ratio=0>", out)
    assert "ratio 0, nothing removed" in report
    assert_same_initializers(_inits(out), _inits(llama))
    feeds = _ids(0)
    np.testing.assert_array_equal(_ort(out, feeds)[0], _ort(llama, feeds)[0])
    np.testing.assert_array_equal(_interp(out, feeds, tmp_path / "a")[0], _interp(llama, feeds, tmp_path / "b")[0])


HEAD_CASES = [  # (model, drop=, layer, query heads, KV heads removed)
    ("mha", "attn1.q2", 1, [2], [2]),
    ("llama", "attn1.kv1", 1, [2, 3], [1]),
    ("llama", "attn2.q0,attn2.q3", 2, [0, 3], []),
]


@pytest.mark.parametrize("model,drop,layer,q,kv", HEAD_CASES, ids=[c[1] for c in HEAD_CASES])
def test_dropping_heads_removes_exactly_their_rows_and_columns(request, tmp_path, model, drop, layer, q, kv):
    src = request.getfixturevalue(model)
    out = tmp_path / "pruned.onnx"
    report = _prune(src, f"prune-struct<drop={drop}>", out)
    dense = _inits(src)
    want = delete_heads(dense, layer, q, kv)
    assert_same_initializers(_inits(out), want)
    for seed, seq in ((1, 1), (2, 9), (3, 33)):
        feeds = _ids(seed, seq=seq)
        got = _ort(out, feeds)[0]
        assert _rel(got, forward(want, feeds["input_ids"])) <= REL_TOL, (drop, seq)
        assert _rel(_interp(out, feeds, tmp_path / "run")[0], got) <= REL_TOL, (drop, seq)
    if model == "llama":
        assert "GQA rule: as listed in drop=" in report


def test_mlp_channel_pruning_equals_a_numpy_forward_with_the_channels_deleted(llama, tmp_path):
    out = tmp_path / "pruned.onnx"
    drop = {0: [3, 100], 2: [7], 3: [0, 191]}
    _prune(llama, "prune-struct<drop=" + ",".join(f"mlp{l}.c{c}" for l, cs in drop.items() for c in cs) + ">", out)
    dense = _inits(llama)
    want, zeroed = dict(dense), dict(dense)
    for layer, chans in drop.items():
        want = delete_channels(want, layer, chans)
        p = f"model.layers.{layer}.mlp.down_proj.weight"
        zeroed[p] = zeroed[p].copy()
        zeroed[p][chans] = 0
    assert_same_initializers(_inits(out), want)
    for seed, seq in ((4, 5), (5, 17)):
        feeds = _ids(seed, seq=seq)
        ref = forward(want, feeds["input_ids"])
        assert _rel(forward(zeroed, feeds["input_ids"]), ref) <= 1e-5  # deleting == zeroing
        assert _rel(_ort(out, feeds)[0], ref) <= REL_TOL


def _magnitude_plan(W: dict[str, np.ndarray], ratio: float) -> tuple[dict, dict]:
    """NumPy port of prune-struct's magnitude selection for unit=head,channel, gqa=kv:
    score / params relative to the group's mean, lowest first, one unit kept per group."""
    cfg = TINY_LLAMA
    total = sum(v.size for v in W.values() if v.dtype == np.float32)
    rep = cfg.num_heads // cfg.num_kv_heads
    cands = []  # (rel, order, group kind, layer, index, params)
    for layer in range(cfg.num_layers):  # MLP groups first, as the pass lists them
        p = f"model.layers.{layer}.mlp."
        s = (np.abs(W[p + "gate_proj.weight"]).astype(np.float64).sum(0) + np.abs(W[p + "up_proj.weight"]).sum(0)
             + np.abs(W[p + "down_proj.weight"]).astype(np.float64).sum(1))
        params = 3 * cfg.hidden_size
        dens = s / params
        cands += [(d / dens.mean(), layer, c, "mlp", params) for c, d in enumerate(dens)]
    for layer in range(cfg.num_layers):
        p = f"model.layers.{layer}.self_attn."
        per_head = lambda w, axis: np.abs(w).astype(np.float64).sum(axis).reshape(-1, D).sum(1)  # noqa: E731
        q = per_head(W[p + "q_proj.weight"], 0) + per_head(W[p + "o_proj.weight"], 1)
        kv = per_head(W[p + "k_proj.weight"], 0) + per_head(W[p + "v_proj.weight"], 0)
        s = np.array([q[g * rep:(g + 1) * rep].sum() + kv[g] for g in range(cfg.num_kv_heads)])
        params = rep * 2 * D * cfg.hidden_size + 2 * D * cfg.hidden_size
        dens = s / params
        cands += [(d / dens.mean(), layer, g, "attn", params) for g, d in enumerate(dens)]
    cands.sort(key=lambda c: (c[0], c[1], c[2]))
    target, removed = math.ceil(ratio * total), 0
    chans = {l: [] for l in range(cfg.num_layers)}
    groups = {l: [] for l in range(cfg.num_layers)}
    for _, layer, i, kind, params in cands:
        if removed >= target:
            break
        taken = chans[layer] if kind == "mlp" else groups[layer]
        if len(taken) + 1 >= (cfg.intermediate_size if kind == "mlp" else cfg.num_kv_heads):
            continue
        taken.append(i)
        removed += params
    return chans, groups


@pytest.mark.parametrize("ratio", [0.25, 0.4])
def test_magnitude_choice_matches_numpy_and_the_pruned_model_its_forward(llama, tmp_path, ratio):
    out = tmp_path / "pruned.onnx"
    report = _prune(llama, f"prune-struct<ratio={ratio}>", out)
    dense = _inits(llama)
    chans, groups = _magnitude_plan(dense, ratio)
    want = dict(dense)
    for layer in range(TINY_LLAMA.num_layers):
        want = delete_channels(want, layer, sorted(chans[layer]))
        kv = sorted(groups[layer])
        want = delete_heads(want, layer, [g * 2 + r for g in kv for r in range(2)], kv)
    assert_same_initializers(_inits(out), want)
    assert _removed(report) >= ratio
    feeds = _ids(6, seq=13)
    assert _rel(_ort(out, feeds)[0], forward(want, feeds["input_ids"])) <= REL_TOL
    print(f"\n[prune-struct] {report}")


PIPELINES = [  # (pipeline, ratio or None, needs calibration)
    ("prune-struct", 0.25, False),
    ("prune-struct<ratio=0.1;unit=head>", 0.1, False),
    ("prune-struct<ratio=0.05;unit=head;gqa=query>", 0.05, False),
    ("prune-struct<ratio=0.3;unit=channel;metric=wanda>", 0.3, True),
    ("prune-struct<ratio=0.15;metric=activation>", 0.15, True),
    ("prune-struct<ratio=0.2;unit=layer>", 0.2, False),
    ("prune-struct<ratio=0.2;unit=layer;metric=activation>", 0.2, True),
    ("quant-int4,prune-struct", 0.25, False),
    ("quant-int4<method=hqq;asym>,prune-struct<ratio=0.1;unit=head;metric=wanda>", 0.1, True),
    ("quant-int8,prune-struct<ratio=0.2>", 0.2, False),
]


@pytest.mark.parametrize("pipeline,ratio,needs_calib", PIPELINES, ids=[p[0] for p in PIPELINES])
def test_pruned_model_runs_in_ort_and_matches_the_interpreter(llama, calib, tmp_path, pipeline, ratio, needs_calib):
    out = tmp_path / "pruned.onnx"
    report = _prune(llama, pipeline, out, calib if needs_calib else None)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert _removed(report) >= ratio, report
    assert out.stat().st_size < llama.stat().st_size
    if "quant-int4" in pipeline:
        assert "re-quantized where K was cut" in report and "prune before quantizing" in report
    # Quantized: up to 17 tokens, where ORT's MatMulNBits (accuracy_level 4) is what the
    # interpreter reproduces; longer inputs take another ORT kernel (see docs/pruning.md).
    for seed, seq in ((0, 1), (1, 9), (2, 17 if "quant" in pipeline else 33)):
        feeds = _ids(seed, seq=seq)
        want = _ort(out, feeds)[0]
        assert np.isfinite(want).all()
        assert _rel(_interp(out, feeds, tmp_path / "run")[0], want) <= REL_TOL, (pipeline, seq)
    print(f"\n[prune-struct] {pipeline}: {report}")


def _past_feeds(model: Path, ids: np.ndarray, past: list[np.ndarray] | None) -> dict[str, np.ndarray]:
    feeds = {"input_ids": ids}
    inputs = [i for i in onnx.load(str(model)).graph.input if i.name.startswith("past_key_values")]
    for k, i in enumerate(inputs):
        dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = past[k] if past is not None else np.zeros((ids.shape[0], dims[1], 0, dims[3]), np.float32)
    return feeds


@pytest.mark.parametrize("pipeline", ["prune-struct<drop=attn1.kv0,attn3.kv1,mlp0.c9>",
                                      "prune-struct<ratio=0.05;unit=head;gqa=query>",
                                      "prune-struct<unit=layer;drop=layer2>"])
def test_kv_cache_shapes_follow_and_decoding_matches_the_full_forward(llama_past, tmp_path, pipeline):
    out = tmp_path / "pruned.onnx"
    report = _prune(llama_past, pipeline, out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    q = _inits(out)
    for i in range(TINY_LLAMA.num_layers):
        kv = q[f"model.layers.{i}.self_attn.k_proj.weight"].shape[1] // D if f"model.layers.{i}.self_attn.k_proj.weight" in q else None
        for io in list(model.graph.input) + list(model.graph.output):
            if re.fullmatch(rf"(past_key_values|present)\.{i}\.(key|value)", io.name):
                assert kv is not None, io.name
                assert io.type.tensor_type.shape.dim[1].dim_value == kv, (io.name, kv)
    if "layer2" in pipeline:
        names = {v.name for v in list(model.graph.input) + list(model.graph.output)}
        assert not names & {"past_key_values.2.key", "present.2.value"}, report
    ids = np.random.default_rng(3).integers(0, 256, size=(2, 7), dtype=np.int64)
    full = _ort(out, _past_feeds(out, ids, None))
    prefix = _ort(out, _past_feeds(out, ids[:, :6], None))
    step = _ort(out, _past_feeds(out, ids[:, 6:], prefix[1:]))
    assert _rel(step[0][:, -1], full[0][:, -1]) <= REL_TOL
    feeds = _past_feeds(out, ids[:, 6:], prefix[1:])
    got = _interp(out, feeds, tmp_path / "run")
    for g, w in zip(got, step):
        assert _rel(g, w) <= REL_TOL


def test_quantized_columns_and_whole_blocks_are_cut_bit_for_bit(llama, tmp_path):
    q, qp = tmp_path / "q.onnx", tmp_path / "qp.onnx"
    subprocess.run([str(LLMOPT), str(llama), "-passes=quant-int4", "-o", str(q)], check=True)
    report = _prune(llama, "quant-int4,prune-struct<drop=attn1.kv0>", qp)
    assert "quantized: 4 cut directly (whole columns / blocks), 0 re-quantized" in report, report
    a, b = _inits(q), _inits(qp)
    blobs = lambda inits, name: {k: v for k, v in inits.items() if k.startswith(name)}  # noqa: E731
    qa, qb = blobs(a, "model.layers.1.self_attn.q_proj.weight"), blobs(b, "model.layers.1.self_attn.q_proj.weight")
    assert qa.keys() == qb.keys() and qa
    for k in qa:  # MatMulNBits B [N, blocks, blob] and scales: columns 32..63 stay
        np.testing.assert_array_equal(qb[k], qa[k].reshape(64, -1)[32:].reshape(qb[k].shape), err_msg=k)
    oa, ob = blobs(a, "model.layers.1.self_attn.o_proj.weight"), blobs(b, "model.layers.1.self_attn.o_proj.weight")
    for k in oa:  # K 64 -> 32: block 0 of every column goes
        if oa[k].ndim == 3:
            np.testing.assert_array_equal(ob[k], oa[k][:, 1:], err_msg=k)
        else:
            np.testing.assert_array_equal(ob[k].reshape(64, -1), oa[k].reshape(64, 2)[:, 1:], err_msg=k)


def test_bert_heads_and_channels_with_biases_equal_zeroing_their_outputs(tmp_path):
    """The tiny BERT (MHA, biases on every projection, GELU MLP, LayerNorm): removing head 1
    of layer 0 and channels 5, 77 of layer 1 slices the biases too, and equals zeroing the
    rows that read them in the dense model (ORT, exactly: only zero terms are left out)."""
    src = tmp_path / "tiny-bert.onnx"
    subprocess.run([sys.executable, str(MODELS / "gen_tiny_bert.py"), "-o", str(src)], check=True)
    out = tmp_path / "pruned.onnx"
    report = _prune(src, "prune-struct<drop=attn0.q1,mlp1.c5,mlp1.c77>", out)
    assert "4 sliced constants" in report, report
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    m = onnx.load(str(src))
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init).copy()
        if init.name == "encoder.layer.0.attention.output.dense.weight":
            a[16:32] = 0
        elif init.name == "encoder.layer.1.output.dense.weight":
            a[[5, 77]] = 0
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(a, init.name))
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 100, (2, 13)).astype(np.int64),
             "attention_mask": np.ones((2, 13), np.int64),
             "token_type_ids": rng.integers(0, 2, (2, 13)).astype(np.int64)}
    feeds["attention_mask"][1, 9:] = 0
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = _ort(out, feeds)[0]
    assert _rel(got, want) <= 1e-6
    assert _rel(_interp(out, feeds, tmp_path / "run")[0], got) <= REL_TOL
