"""Write a BERT encoder as ONNX in the decomposed form torch.onnx exports (opset < 17 style).

Input: a :class:`BertConfig` and fp32 NumPy weights named as in a Hugging Face ``BertModel``
state dict (no ``bert.`` prefix; Linear ``[out, in]``; see :func:`weight_shapes`), e.g.
sentence-transformers' all-MiniLM-L6-v2 without its pooler. Output: an ``onnx.ModelProto`` at
IR 8 / opset 17 with inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``), all
int64 ``[batch, seq]``, and output ``last_hidden_state`` float ``[batch, seq, hidden]``.

The graph spells out what the fusion passes lift:

* LayerNorm: ``Add(Mul(Div(Sub(x, m), Sqrt(Add(ReduceMean(Pow(Sub(x, m), 2)), eps))), g), b)``
  with ``m = ReduceMean(x)`` (torch writes ``LayerNormalization`` only from opset 17 on; this is
  the older, decomposed form fuse-layernorm must handle);
* Linear: ``Add(bias, MatMul(x, W))``, ``W`` stored ``[in, out]`` under the HF name;
* attention: heads by ``Reshape(Concat(Slice(Shape(x)), [h, d]))`` + ``Transpose``, scores
  ``MatMul(q, Transpose(k)) / sqrt(d) + (1 - mask) * finfo.min``, ``Softmax``, ``MatMul`` with v;
* GELU (erf form): ``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)``.

With ``pooling="mean"`` the model also outputs ``sentence_embedding`` float ``[batch, hidden]``,
sentence-transformers' ``Pooling(mean)`` as torch exports it: ``Div(ReduceSum(Mul(h, m), 1),
Clip(ReduceSum(m, 1), 1e-9))`` with ``m = Cast(Expand(Unsqueeze(attention_mask, -1), Shape(h)))``;
with ``normalize=True`` then its ``Normalize`` module (``F.normalize``: ``Div(x, Expand(Clip(
Sqrt(ReduceSum(Pow(x, 2), 1, keepdims)), 1e-12), Shape(x)))``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import onnx

from onnx_graph import MASK_MIN, GraphBuilder, save_model

__all__ = ["BertConfig", "weight_shapes", "check_weights", "build_model", "save_model"]


@dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT encoder."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        for field in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                      "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, field) <= 0:
                raise ValueError(f"BertConfig.{field} must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> "BertConfig":
        """Build from a Hugging Face ``config.json`` dict (``BertConfig`` field names)."""
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=int(cfg["num_attention_heads"]),
            intermediate_size=int(cfg["intermediate_size"]),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 512)),
            type_vocab_size=int(cfg.get("type_vocab_size", 2)),
            layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as stored in the model's metadata."""
        return json.dumps(asdict(self), sort_keys=True)


def weight_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    """HF ``BertModel`` state-dict names and shapes (Linear ``[out, in]``), in a fixed order."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (cfg.vocab_size, h),
        "embeddings.position_embeddings.weight": (cfg.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (cfg.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        for lin, (out, inp) in (("attention.self.query", (h, h)), ("attention.self.key", (h, h)),
                                ("attention.self.value", (h, h)),
                                ("attention.output.dense", (h, h)),
                                ("intermediate.dense", (inter, h)), ("output.dense", (h, inter))):
            shapes[p + lin + ".weight"] = (out, inp)
            shapes[p + lin + ".bias"] = (out,)
            if lin in ("attention.output.dense", "output.dense"):
                ln = p + lin.replace("dense", "LayerNorm")
                shapes[ln + ".weight"] = (h,)
                shapes[ln + ".bias"] = (h,)
    return shapes


def check_weights(cfg: BertConfig, weights: Mapping[str, np.ndarray]) -> None:
    """Raise ``ValueError`` unless ``weights`` has exactly the names and shapes of the config."""
    expected = weight_shapes(cfg)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"weights do not match config: missing {missing[:5]}, extra {extra[:5]}")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"{name}: shape {tuple(weights[name].shape)}, expected {shape}")


def _layer_norm(g: GraphBuilder, scope: str, x: str, prefix: str,
                weights: Mapping[str, np.ndarray], eps: float, output: str | None = None) -> str:
    """Decomposed ``nn.LayerNorm`` over the last axis; ``prefix`` names ``.weight``/``.bias``."""
    gamma = g.initializer(prefix + ".weight", np.asarray(weights[prefix + ".weight"], np.float32))
    beta = g.initializer(prefix + ".bias", np.asarray(weights[prefix + ".bias"], np.float32))
    mean = g.op(scope, "ReduceMean", [x], axes=[-1], keepdims=1)
    centered = g.op(scope, "Sub", [x, mean])
    var = g.op(scope, "ReduceMean", [g.op(scope, "Pow", [centered, g.const(scope, 2.0, np.float32)])],
               axes=[-1], keepdims=1)
    std = g.op(scope, "Sqrt", [g.op(scope, "Add", [var, g.const(scope, eps, np.float32)])])
    scaled = g.op(scope, "Mul", [g.op(scope, "Div", [centered, std]), gamma])
    return g.op(scope, "Add", [scaled, beta], outputs=[output] if output else None)


def _linear(g: GraphBuilder, scope: str, x: str, weights: Mapping[str, np.ndarray],
            prefix: str) -> str:
    """``Add(bias, MatMul(x, W^T))``, the HF ``[out, in]`` weight stored as ``[in, out]``."""
    w = g.initializer(prefix + ".weight", np.asarray(weights[prefix + ".weight"], np.float32).T)
    b = g.initializer(prefix + ".bias", np.asarray(weights[prefix + ".bias"], np.float32))
    return g.op(scope, "Add", [b, g.op(scope, "MatMul", [x, w])])


def _split_heads(g: GraphBuilder, scope: str, x: str, cfg: BertConfig) -> str:
    """``transpose_for_scores``: ``[b, s, H]`` -> view ``x.size()[:-1] + (h, d)`` -> ``[b, h, s, d]``."""
    lead = g.op(scope, "Slice", [g.op(scope, "Shape", [x]), g.const(scope, [0], np.int64),
                                 g.const(scope, [-1], np.int64), g.const(scope, [0], np.int64)])
    shape = g.op(scope, "Concat", [lead, g.const(scope, [cfg.num_heads], np.int64),
                                   g.const(scope, [cfg.head_dim], np.int64)], axis=0)
    return g.op(scope, "Transpose", [g.op(scope, "Reshape", [x, shape])], perm=[0, 2, 1, 3])


def _self_attention(g: GraphBuilder, layer: int, x: str, mask: str, cfg: BertConfig,
                    weights: Mapping[str, np.ndarray]) -> str:
    """BertSelfAttention (eager); returns the context ``[b, s, H]``."""
    sc = f"/encoder/layer.{layer}/attention/self"
    wp = f"encoder.layer.{layer}.attention.self."
    q = _split_heads(g, sc, _linear(g, sc + "/query", x, weights, wp + "query"), cfg)
    k = _split_heads(g, sc, _linear(g, sc + "/key", x, weights, wp + "key"), cfg)
    v = _split_heads(g, sc, _linear(g, sc + "/value", x, weights, wp + "value"), cfg)
    scores = g.op(sc, "MatMul", [q, g.op(sc, "Transpose", [k], perm=[0, 1, 3, 2])])
    scores = g.op(sc, "Div", [scores, g.const(sc, math.sqrt(cfg.head_dim), np.float32)])
    probs = g.op(sc, "Softmax", [g.op(sc, "Add", [scores, mask])], axis=-1)
    ctx = g.op(sc, "Transpose", [g.op(sc, "MatMul", [probs, v])], perm=[0, 2, 1, 3])
    lead = g.op(sc, "Slice", [g.op(sc, "Shape", [ctx]), g.const(sc, [0], np.int64),
                              g.const(sc, [-2], np.int64), g.const(sc, [0], np.int64)])
    shape = g.op(sc, "Concat", [lead, g.const(sc, [cfg.hidden_size], np.int64)], axis=0)
    return g.op(sc, "Reshape", [ctx, shape])


def _gelu(g: GraphBuilder, scope: str, x: str) -> str:
    """Exact GELU as torch exports it: ``x * (erf(x / sqrt(2)) + 1) * 0.5``."""
    erf = g.op(scope, "Erf", [g.op(scope, "Div", [x, g.const(scope, math.sqrt(2.0), np.float32)])])
    plus = g.op(scope, "Add", [erf, g.const(scope, 1.0, np.float32)])
    return g.op(scope, "Mul", [g.op(scope, "Mul", [x, plus]), g.const(scope, 0.5, np.float32)])


def _embeddings(g: GraphBuilder, cfg: BertConfig, weights: Mapping[str, np.ndarray],
                input_ids: str, token_type_ids: str | None) -> str:
    """BertEmbeddings: word + token type + position (sliced ``position_ids`` buffer), LayerNorm."""
    sc = "/embeddings"

    def table(name: str) -> str:
        return g.initializer(f"embeddings.{name}.weight",
                             np.asarray(weights[f"embeddings.{name}.weight"], np.float32))

    words = g.op(sc + "/word_embeddings", "Gather", [table("word_embeddings"), input_ids])
    types_idx = token_type_ids if token_type_ids else g.const(sc, 0, np.int64)
    types = g.op(sc + "/token_type_embeddings", "Gather", [table("token_type_embeddings"),
                                                          types_idx])
    e = g.op(sc, "Add", [words, types])
    seq = g.op(sc, "Unsqueeze", [
        g.op(sc, "Gather", [g.op(sc, "Shape", [input_ids]), g.const(sc, 1, np.int64)], axis=0),
        g.const(sc, [0], np.int64)])
    position_ids = g.const(sc, np.arange(cfg.max_position_embeddings).reshape(1, -1), np.int64)
    pos = g.op(sc, "Slice", [position_ids, g.const(sc, [0], np.int64), seq,
                             g.const(sc, [1], np.int64), g.const(sc, [1], np.int64)])
    e = g.op(sc, "Add", [e, g.op(sc + "/position_embeddings", "Gather",
                                 [table("position_embeddings"), pos])])
    return _layer_norm(g, sc + "/LayerNorm", e, "embeddings.LayerNorm", weights,
                       cfg.layer_norm_eps)


def _mean_pooling(g: GraphBuilder, hidden: str, attention_mask: str, normalize: bool) -> str:
    """sentence-transformers ``Pooling(mean)`` (+ ``Normalize``); returns ``sentence_embedding``."""
    sc = "/pooling"
    m = g.op(sc, "Unsqueeze", [attention_mask, g.const(sc, [-1], np.int64)])
    m = g.op(sc, "Cast", [g.op(sc, "Expand", [m, g.op(sc, "Shape", [hidden])])],
             to=onnx.TensorProto.FLOAT)
    one = g.const(sc, [1], np.int64)
    total = g.op(sc, "ReduceSum", [g.op(sc, "Mul", [hidden, m]), one], keepdims=0)
    count = g.op(sc, "ReduceSum", [m, one], keepdims=0)
    count = g.op(sc, "Clip", [count, g.const(sc, 1e-9, np.float32)])
    out = "sentence_embedding"
    pooled = g.op(sc, "Div", [total, count], outputs=None if normalize else [out])
    if not normalize:
        return pooled
    sc = "/normalize"
    sq = g.op(sc, "ReduceSum", [g.op(sc, "Pow", [pooled, g.const(sc, 2.0, np.float32)]),
                                g.const(sc, [1], np.int64)], keepdims=1)
    norm = g.op(sc, "Clip", [g.op(sc, "Sqrt", [sq]), g.const(sc, 1e-12, np.float32)])
    norm = g.op(sc, "Expand", [norm, g.op(sc, "Shape", [pooled])])
    return g.op(sc, "Div", [pooled, norm], outputs=[out])


def build_model(cfg: BertConfig, weights: Mapping[str, np.ndarray],
                with_token_type_ids: bool = True, pooling: str | None = None,
                normalize: bool = False) -> onnx.ModelProto:
    """Build the ONNX encoder for ``cfg`` from HF-named fp32 ``weights`` (see module doc).

    Without ``with_token_type_ids`` the model has no ``token_type_ids`` input and uses type 0.
    ``pooling="mean"`` adds the ``sentence_embedding`` output (masked mean of the last hidden
    state), L2-normalized when ``normalize``.
    """
    check_weights(cfg, weights)
    if pooling not in (None, "mean"):
        raise ValueError(f"pooling must be None or 'mean', got {pooling!r}")
    if normalize and pooling is None:
        raise ValueError("normalize needs pooling='mean'")
    g = GraphBuilder()
    input_ids = g.add_input("input_ids", np.int64, ["batch", "seq"])
    attention_mask = g.add_input("attention_mask", np.int64, ["batch", "seq"])
    token_type_ids = (g.add_input("token_type_ids", np.int64, ["batch", "seq"])
                      if with_token_type_ids else None)
    g.add_output("last_hidden_state", np.float32, ["batch", "seq", cfg.hidden_size])
    if pooling:
        g.add_output("sentence_embedding", np.float32, ["batch", cfg.hidden_size])

    h = _embeddings(g, cfg, weights, input_ids, token_type_ids)
    # get_extended_attention_mask: (1 - mask[:, None, None, :]) * finfo.min
    m = g.op("", "Unsqueeze", [attention_mask, g.const("", [1], np.int64)])
    m = g.op("", "Cast", [g.op("", "Unsqueeze", [m, g.const("", [2], np.int64)])],
             to=onnx.TensorProto.FLOAT)
    m = g.op("", "Sub", [g.const("", 1.0, np.float32), m])
    mask = g.op("", "Mul", [m, g.const("", MASK_MIN, np.float32)])

    eps = cfg.layer_norm_eps
    for i in range(cfg.num_layers):
        ls, wp = f"/encoder/layer.{i}", f"encoder.layer.{i}."
        last = i == cfg.num_layers - 1
        ctx = _self_attention(g, i, h, mask, cfg, weights)
        att = _linear(g, ls + "/attention/output/dense", ctx, weights,
                      wp + "attention.output.dense")
        h = _layer_norm(g, ls + "/attention/output/LayerNorm",
                        g.op(ls + "/attention/output", "Add", [att, h]),
                        wp + "attention.output.LayerNorm", weights, eps)
        inter = _linear(g, ls + "/intermediate/dense", h, weights, wp + "intermediate.dense")
        inter = _gelu(g, ls + "/intermediate/intermediate_act_fn", inter)
        out = _linear(g, ls + "/output/dense", inter, weights, wp + "output.dense")
        h = _layer_norm(g, ls + "/output/LayerNorm", g.op(ls + "/output", "Add", [out, h]),
                        wp + "output.LayerNorm", weights, eps,
                        output="last_hidden_state" if last else None)

    if pooling == "mean":
        _mean_pooling(g, h, attention_mask, normalize)
    return g.make_model("main_graph", metadata={"model_type": "bert", "config": cfg.to_json()},
                        doc="BERT encoder in torch-export decomposed form (llmopt tools/models)")
