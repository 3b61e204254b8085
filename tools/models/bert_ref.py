"""NumPy reference forward of the BERT encoder that :mod:`bert_onnx` writes.

Written from HF ``BertModel``'s eager code (not from the ONNX graph). Weights are the same
HF-named dict (Linear ``[out, in]``). Computation runs in ``dtype`` (fp32 or fp64); ``erf`` comes
from ``math.erf`` in fp64, as NumPy has none.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from bert_onnx import BertConfig, check_weights

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + x.dtype.type(eps)) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(x.dtype)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def forward(
    cfg: BertConfig,
    weights: Mapping[str, np.ndarray],
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    token_type_ids: np.ndarray | None = None,
    *,
    dtype: type | np.dtype = np.float32,
) -> np.ndarray:
    """``last_hidden_state`` ``[batch, seq, hidden]`` for int ``[batch, seq]`` inputs.

    A missing ``attention_mask`` means all ones, missing ``token_type_ids`` all zeros.
    """
    check_weights(cfg, weights)
    dt = np.dtype(dtype)
    W = {k: np.asarray(v, dtype=dt) for k, v in weights.items()}
    ids = np.asarray(input_ids, dtype=np.int64)
    b, s = ids.shape
    nh, d = cfg.num_heads, cfg.head_dim
    mask = np.ones((b, s)) if attention_mask is None else np.asarray(attention_mask)
    types = np.zeros((b, s), np.int64) if token_type_ids is None else np.asarray(token_type_ids)
    add_mask = ((1.0 - mask.astype(dt)) * np.finfo(dt).min)[:, None, None, :]

    def linear(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ W[prefix + ".weight"].T + W[prefix + ".bias"]

    def heads(x: np.ndarray) -> np.ndarray:
        return x.reshape(b, s, nh, d).transpose(0, 2, 1, 3)

    h = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.token_type_embeddings.weight"][types]
         + W["embeddings.position_embeddings.weight"][np.arange(s)][None])
    h = _layer_norm(h, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"],
                    cfg.layer_norm_eps)
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        q = heads(linear(h, p + "attention.self.query"))
        k = heads(linear(h, p + "attention.self.key"))
        v = heads(linear(h, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / dt.type(math.sqrt(d)) + add_mask
        ctx = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, s, nh * d)
        h = _layer_norm(linear(ctx, p + "attention.output.dense") + h,
                        W[p + "attention.output.LayerNorm.weight"],
                        W[p + "attention.output.LayerNorm.bias"], cfg.layer_norm_eps)
        inter = _gelu(linear(h, p + "intermediate.dense"))
        h = _layer_norm(linear(inter, p + "output.dense") + h, W[p + "output.LayerNorm.weight"],
                        W[p + "output.LayerNorm.bias"], cfg.layer_norm_eps)
    return h


def mean_pooling(hidden: np.ndarray, attention_mask: np.ndarray | None = None,
                 normalize: bool = False) -> np.ndarray:
    """sentence-transformers ``Pooling(mean)`` of ``hidden`` ``[batch, seq, h]`` over the
    unmasked tokens (``sum(h * m) / max(sum(m), 1e-9)``), then ``F.normalize`` (L2, eps 1e-12)
    when ``normalize``."""
    b, s, _ = hidden.shape
    mask = np.ones((b, s)) if attention_mask is None else np.asarray(attention_mask)
    m = mask.astype(hidden.dtype)[:, :, None]
    pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), hidden.dtype.type(1e-9))
    if normalize:
        norm = np.sqrt((pooled * pooled).sum(axis=1, keepdims=True))
        pooled = pooled / np.maximum(norm, hidden.dtype.type(1e-12))
    return pooled
