"""Write a Llama-architecture decoder as ONNX in the decomposed form torch.onnx / optimum export.

Input: a :class:`LlamaConfig` and a dict of fp32 NumPy weights named and laid out as in a
Hugging Face ``LlamaForCausalLM`` state dict (Linear weights ``[out, in]``; see
:func:`weight_shapes`). Output: an ``onnx.ModelProto`` at IR 8 / opset 17 with

* input ``input_ids`` int64 ``[batch, seq]``, output ``logits`` float ``[batch, seq, vocab]``;
* with ``with_past=True`` also inputs ``past_key_values.{i}.key|value`` and outputs
  ``present.{i}.key|value``, float ``[batch, num_kv_heads, past_seq|total_seq, head_dim]``
  (keys stored after RoPE, as HF's cache does).

Every block is spelled out in primitive ops, as the TorchScript exporter writes HF's eager code:

* RMSNorm: ``Mul(w, Mul(x, Div(1, Sqrt(Add(ReduceMean(Pow(x, 2)), eps)))))``;
* Linear: ``MatMul(x, W)`` with ``W`` stored transposed ``[in, out]`` under the HF name;
* heads: ``Reshape`` to ``[b, s, h, d]`` with the shape ``Concat``-ed from ``Shape``/``Gather``/
  ``Unsqueeze`` of the input, ``Transpose`` to ``[b, h, s, d]``;
* RoPE (rotate-half form): ``q*cos + Concat(Neg(q[..., d/2:]), q[..., :d/2])*sin``, with cos/sin
  computed once from ``Range`` positions and an ``inv_freq`` constant (``/model/rotary_emb``);
* GQA: HF ``repeat_kv`` = ``Unsqueeze`` + ``Expand`` + ``Reshape`` of K and V;
* attention: ``Softmax(MatMul(q, Transpose(k)) / sqrt(d) + mask) @ v``, the causal mask built
  in-graph (``Range`` + ``LessOrEqual`` + ``Where(.., 0, finfo.min)``);
* MLP: ``down(SiLU(gate(x)) * up(x))`` with SiLU as ``Mul(x, Sigmoid(x))``;
* tied LM head: ``MatMul(h, Transpose(model.embed_tokens.weight))`` — one initializer.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import onnx

from onnx_graph import INT64_MAX, MASK_MIN, GraphBuilder, save_model

__all__ = [
    "LlamaConfig",
    "weight_shapes",
    "check_weights",
    "rope_inv_freq",
    "build_model",
    "save_model",
]


@dataclass(frozen=True)
class LlamaConfig:
    """Hyper-parameters of a Llama decoder (names follow the brief, not HF's config.json)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        for field in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                      "num_heads", "num_kv_heads", "head_dim"):
            if getattr(self, field) <= 0:
                raise ValueError(f"LlamaConfig.{field} must be positive")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for rotate-half RoPE")

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (GQA group size)."""
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any]) -> "LlamaConfig":
        """Build from a Hugging Face ``config.json`` dict (``LlamaConfig`` field names)."""
        heads = int(cfg["num_attention_heads"])
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as stored in the model's metadata."""
        return json.dumps(asdict(self), sort_keys=True)


def weight_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """HF state-dict names and shapes (Linear ``[out, in]``), in a fixed order."""
    h, d = cfg.hidden_size, cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, h)}
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "self_attn.q_proj.weight"] = (cfg.num_heads * d, h)
        shapes[p + "self_attn.k_proj.weight"] = (cfg.num_kv_heads * d, h)
        shapes[p + "self_attn.v_proj.weight"] = (cfg.num_kv_heads * d, h)
        shapes[p + "self_attn.o_proj.weight"] = (h, cfg.num_heads * d)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (cfg.intermediate_size, h)
        shapes[p + "mlp.up_proj.weight"] = (cfg.intermediate_size, h)
        shapes[p + "mlp.down_proj.weight"] = (h, cfg.intermediate_size)
    shapes["model.norm.weight"] = (h,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, h)
    return shapes


def check_weights(cfg: LlamaConfig, weights: Mapping[str, np.ndarray]) -> None:
    """Raise ``ValueError`` unless ``weights`` has exactly the names and shapes of the config."""
    expected = weight_shapes(cfg)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"weights do not match config: missing {missing[:5]}, extra {extra[:5]}")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"{name}: shape {tuple(weights[name].shape)}, expected {shape}")


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """``1 / theta^(2i/d)`` in fp32, computed the way HF's default RoPE init does."""
    exponent = np.arange(0, cfg.head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(
        cfg.head_dim)
    return (np.float32(1.0) / (np.float32(cfg.rope_theta) ** exponent)).astype(np.float32)


# --------------------------------------------------------------------------- graph pieces


def _rms_norm(g: GraphBuilder, scope: str, x: str, weight: str, eps: float) -> str:
    """HF LlamaRMSNorm: ``weight * (x * rsqrt(mean(x^2, -1) + eps))``; rsqrt = Div(1, Sqrt)."""
    sq = g.op(scope, "Pow", [x, g.const(scope, 2.0, np.float32)])
    mean = g.op(scope, "ReduceMean", [sq], axes=[-1], keepdims=1)
    var = g.op(scope, "Add", [mean, g.const(scope, eps, np.float32)])
    root = g.op(scope, "Sqrt", [var])
    inv = g.op(scope, "Div", [g.const(scope, 1.0, np.float32), root])
    normed = g.op(scope, "Mul", [x, inv])
    return g.op(scope, "Mul", [weight, normed])


def _linear(g: GraphBuilder, scope: str, x: str, weights: Mapping[str, np.ndarray],
            name: str) -> str:
    """``MatMul(x, W^T)``: the HF ``[out, in]`` weight stored as an ``[in, out]`` initializer."""
    w = g.initializer(name, np.asarray(weights[name], dtype=np.float32).T)
    return g.op(scope, "MatMul", [x, w])


def _rotate_half_rope(g: GraphBuilder, scope: str, x: str, cos: str, sin: str, half: int) -> str:
    """``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x[..., h:], x[..., :h])``."""
    axes = g.const(scope, [-1], np.int64)
    x1 = g.op(scope, "Slice", [x, g.const(scope, [0], np.int64), g.const(scope, [half], np.int64),
                               axes, g.const(scope, [1], np.int64)])
    x2 = g.op(scope, "Slice", [x, g.const(scope, [half], np.int64),
                               g.const(scope, [INT64_MAX], np.int64), axes,
                               g.const(scope, [1], np.int64)])
    rotated = g.op(scope, "Concat", [g.op(scope, "Neg", [x2]), x1], axis=-1)
    return g.op(scope, "Add", [g.op(scope, "Mul", [x, cos]), g.op(scope, "Mul", [rotated, sin])])


def _repeat_kv(g: GraphBuilder, scope: str, x: str, cfg: LlamaConfig) -> str:
    """HF ``repeat_kv``: ``[b, kv, t, d]`` -> ``[b, kv*n_rep, t, d]`` via Unsqueeze/Expand/Reshape."""
    if cfg.n_rep == 1:
        return x
    shape = g.op(scope, "Shape", [x])
    b, t = g.dim(scope, shape, 0), g.dim(scope, shape, 2)
    kv = g.const(scope, [cfg.num_kv_heads], np.int64)
    rep = g.const(scope, [cfg.n_rep], np.int64)
    d = g.const(scope, [cfg.head_dim], np.int64)
    expanded = g.op(scope, "Expand", [
        g.op(scope, "Unsqueeze", [x, g.const(scope, [2], np.int64)]),
        g.op(scope, "Concat", [b, kv, rep, t, d], axis=0)])
    heads = g.const(scope, [cfg.num_heads], np.int64)
    return g.op(scope, "Reshape", [expanded, g.op(scope, "Concat", [b, heads, t, d], axis=0)])


def _attention(g: GraphBuilder, layer: int, x: str, cfg: LlamaConfig,
               weights: Mapping[str, np.ndarray], rope: tuple[str, str], mask: str,
               past: tuple[str, str] | None) -> str:
    """LlamaAttention (eager) on the normed hidden state ``x``; returns o_proj's output."""
    sa = f"/model/layers.{layer}/self_attn"
    wp = f"model.layers.{layer}.self_attn."
    q = _linear(g, sa + "/q_proj", x, weights, wp + "q_proj.weight")
    k = _linear(g, sa + "/k_proj", x, weights, wp + "k_proj.weight")
    v = _linear(g, sa + "/v_proj", x, weights, wp + "v_proj.weight")

    shape = g.op(sa, "Shape", [x])
    b, s = g.dim(sa, shape, 0), g.dim(sa, shape, 1)
    d = g.const(sa, [cfg.head_dim], np.int64)

    def heads(t: str, n: int) -> str:
        shp = g.op(sa, "Concat", [b, s, g.const(sa, [n], np.int64), d], axis=0)
        return g.op(sa, "Transpose", [g.op(sa, "Reshape", [t, shp])], perm=[0, 2, 1, 3])

    q, k, v = heads(q, cfg.num_heads), heads(k, cfg.num_kv_heads), heads(v, cfg.num_kv_heads)

    # apply_rotary_pos_emb: cos/sin [1, s, d] -> [1, 1, s, d].
    cos = g.op(sa, "Unsqueeze", [rope[0], g.const(sa, [1], np.int64)])
    sin = g.op(sa, "Unsqueeze", [rope[1], g.const(sa, [1], np.int64)])
    q = _rotate_half_rope(g, sa, q, cos, sin, cfg.head_dim // 2)
    k = _rotate_half_rope(g, sa, k, cos, sin, cfg.head_dim // 2)

    if past is not None:  # cache update: present = cat(past, new) along the sequence axis
        k = g.op(sa, "Concat", [past[0], k], axis=2, outputs=[f"present.{layer}.key"])
        v = g.op(sa, "Concat", [past[1], v], axis=2, outputs=[f"present.{layer}.value"])
    k, v = _repeat_kv(g, sa, k, cfg), _repeat_kv(g, sa, v, cfg)

    kt = g.op(sa, "Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.op(sa, "MatMul", [q, kt])
    scores = g.op(sa, "Div", [scores, g.const(sa, math.sqrt(cfg.head_dim), np.float32)])
    scores = g.op(sa, "Add", [scores, mask])
    probs = g.op(sa, "Softmax", [scores], axis=-1)
    ctx = g.op(sa, "Transpose", [g.op(sa, "MatMul", [probs, v])], perm=[0, 2, 1, 3])
    out_shape = g.op(sa, "Concat", [b, s, g.const(sa, [cfg.num_heads * cfg.head_dim], np.int64)],
                     axis=0)
    ctx = g.op(sa, "Reshape", [ctx, out_shape])
    return _linear(g, sa + "/o_proj", ctx, weights, wp + "o_proj.weight")


def _mlp(g: GraphBuilder, layer: int, x: str, weights: Mapping[str, np.ndarray]) -> str:
    """LlamaMLP: ``down(silu(gate(x)) * up(x))``, SiLU exported as ``Mul(x, Sigmoid(x))``."""
    scope = f"/model/layers.{layer}/mlp"
    wp = f"model.layers.{layer}.mlp."
    gate = _linear(g, scope + "/gate_proj", x, weights, wp + "gate_proj.weight")
    act = g.op(scope + "/act_fn", "Mul", [gate, g.op(scope + "/act_fn", "Sigmoid", [gate])])
    up = _linear(g, scope + "/up_proj", x, weights, wp + "up_proj.weight")
    return _linear(g, scope + "/down_proj", g.op(scope, "Mul", [act, up]), weights,
                   wp + "down_proj.weight")


def _positions_and_mask(g: GraphBuilder, cfg: LlamaConfig, input_ids: str,
                        past_key0: str | None) -> tuple[str, str, str]:
    """Query positions, RoPE cos/sin ``[1, s, d]`` and the additive causal mask ``[1, 1, s, t]``.

    Positions run from the past length to past + seq; key positions from 0 to past + seq; a key
    is visible iff its position <= the query's.
    """
    scope = "/model"
    seq = g.op(scope, "Gather", [g.op(scope, "Shape", [input_ids]), g.const(scope, 1, np.int64)],
               axis=0)
    one = g.const(scope, 1, np.int64)
    if past_key0 is None:
        q_pos = g.op(scope, "Range", [g.const(scope, 0, np.int64), seq, one])
        k_pos = q_pos
    else:
        past_len = g.op(scope, "Gather", [g.op(scope, "Shape", [past_key0]),
                                          g.const(scope, 2, np.int64)], axis=0)
        total = g.op(scope, "Add", [past_len, seq])
        q_pos = g.op(scope, "Range", [past_len, total, one])
        k_pos = g.op(scope, "Range", [g.const(scope, 0, np.int64), total, one])

    visible = g.op(scope, "LessOrEqual", [
        g.op(scope, "Unsqueeze", [k_pos, g.const(scope, [0], np.int64)]),
        g.op(scope, "Unsqueeze", [q_pos, g.const(scope, [1], np.int64)])])
    mask2d = g.op(scope, "Where", [visible, g.const(scope, 0.0, np.float32),
                                   g.const(scope, MASK_MIN, np.float32)])
    mask = g.op(scope, "Unsqueeze", [mask2d, g.const(scope, [0, 1], np.int64)])

    # LlamaRotaryEmbedding: freqs = (inv_freq[None, :, None] @ pos[None, None, :]).transpose(1, 2)
    rs = "/model/rotary_emb"
    inv_freq = g.const(rs, rope_inv_freq(cfg).reshape(1, -1, 1), np.float32)
    pos = g.op(rs, "Unsqueeze", [g.op(rs, "Cast", [q_pos], to=onnx.TensorProto.FLOAT),
                                 g.const(rs, [0, 1], np.int64)])
    freqs = g.op(rs, "Transpose", [g.op(rs, "MatMul", [inv_freq, pos])], perm=[0, 2, 1])
    emb = g.op(rs, "Concat", [freqs, freqs], axis=-1)
    return g.op(rs, "Cos", [emb]), g.op(rs, "Sin", [emb]), mask


def build_model(cfg: LlamaConfig, weights: Mapping[str, np.ndarray],
                with_past: bool = False) -> onnx.ModelProto:
    """Build the ONNX decoder for ``cfg`` from HF-named fp32 ``weights`` (see module doc)."""
    check_weights(cfg, weights)
    g = GraphBuilder()
    kvh, d = cfg.num_kv_heads, cfg.head_dim
    input_ids = g.add_input("input_ids", np.int64, ["batch", "seq"])
    pasts: list[tuple[str, str]] = []
    if with_past:
        for i in range(cfg.num_layers):
            key, value = (g.add_input(f"past_key_values.{i}.{kind}", np.float32,
                                      ["batch", kvh, "past_seq", d]) for kind in ("key", "value"))
            pasts.append((key, value))
    g.add_output("logits", np.float32, ["batch", "seq", cfg.vocab_size])
    if with_past:
        for i in range(cfg.num_layers):
            for kind in ("key", "value"):
                g.add_output(f"present.{i}.{kind}", np.float32, ["batch", kvh, "total_seq", d])

    embed = g.initializer("model.embed_tokens.weight",
                          np.asarray(weights["model.embed_tokens.weight"], dtype=np.float32))
    h = g.op("/model/embed_tokens", "Gather", [embed, input_ids])
    cos, sin, mask = _positions_and_mask(g, cfg, input_ids, pasts[0][0] if with_past else None)

    for i in range(cfg.num_layers):
        ls, wp = f"/model/layers.{i}", f"model.layers.{i}."
        ln1 = g.initializer(wp + "input_layernorm.weight",
                            np.asarray(weights[wp + "input_layernorm.weight"], np.float32))
        x = _rms_norm(g, ls + "/input_layernorm", h, ln1, cfg.rms_norm_eps)
        attn = _attention(g, i, x, cfg, weights, (cos, sin), mask, pasts[i] if with_past else None)
        h = g.op(ls, "Add", [h, attn])
        ln2 = g.initializer(wp + "post_attention_layernorm.weight",
                            np.asarray(weights[wp + "post_attention_layernorm.weight"], np.float32))
        x = _rms_norm(g, ls + "/post_attention_layernorm", h, ln2, cfg.rms_norm_eps)
        h = g.op(ls, "Add", [h, _mlp(g, i, x, weights)])

    norm = g.initializer("model.norm.weight", np.asarray(weights["model.norm.weight"], np.float32))
    h = _rms_norm(g, "/model/norm", h, norm, cfg.rms_norm_eps)
    if cfg.tie_word_embeddings:  # the LM head reads the embedding initializer itself
        head = g.op("/lm_head", "Transpose", [embed], perm=[1, 0])
    else:
        head = g.initializer("lm_head.weight",
                             np.asarray(weights["lm_head.weight"], dtype=np.float32).T)
    g.op("/lm_head", "MatMul", [h, head], outputs=["logits"])

    return g.make_model("main_graph", metadata={"model_type": "llama", "config": cfg.to_json()},
                        doc="Llama decoder in torch-export decomposed form (llmopt tools/models)")
