"""NumPy reference forward of the Llama decoder that :mod:`llama_onnx` writes.

Written from the HF ``LlamaForCausalLM`` eager code, not from the ONNX graph, so that comparing
the two checks the builder. Weights are the same HF-named dict (Linear ``[out, in]``).
Computation runs in ``dtype`` (fp32 mirrors the exported model; fp64 gives a tighter truth).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from llama_onnx import LlamaConfig, check_weights

KVCache = list[tuple[np.ndarray, np.ndarray]]


def _inv_freq(cfg: LlamaConfig, dtype: np.dtype) -> np.ndarray:
    exponent = np.arange(0, cfg.head_dim, 2, dtype=np.int64).astype(dtype) / dtype.type(cfg.head_dim)
    return (dtype.type(1.0) / (dtype.type(cfg.rope_theta) ** exponent)).astype(dtype)


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(x * x, axis=-1, keepdims=True)
    return w * (x / np.sqrt(var + x.dtype.type(eps)))


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (x.dtype.type(1.0) + np.exp(-x))


def forward(
    cfg: LlamaConfig,
    weights: Mapping[str, np.ndarray],
    input_ids: np.ndarray,
    *,
    dtype: type | np.dtype = np.float32,
    past_key_values: KVCache | None = None,
    return_present: bool = False,
) -> np.ndarray | tuple[np.ndarray, KVCache]:
    """Logits ``[batch, seq, vocab]`` for int ``input_ids`` ``[batch, seq]``.

    ``past_key_values``: per layer ``(key, value)`` ``[batch, kv_heads, past, head_dim]`` (keys
    after RoPE). With ``return_present`` also returns the updated cache.
    """
    check_weights(cfg, weights)
    dt = np.dtype(dtype)
    W = {k: np.asarray(v, dtype=dt) for k, v in weights.items()}
    ids = np.asarray(input_ids, dtype=np.int64)
    b, s = ids.shape
    nh, kvh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]

    pos = np.arange(past_len, past_len + s, dtype=np.int64)
    freqs = pos.astype(dt)[:, None] * _inv_freq(cfg, dt)[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb)[None, None], np.sin(emb)[None, None]  # [1, 1, s, d]
    key_pos = np.arange(past_len + s)
    mask = np.where(key_pos[None, :] <= pos[:, None], 0.0, np.finfo(dt).min).astype(dt)

    h = W["model.embed_tokens.weight"][ids]
    present: KVCache = []
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        x = _rms_norm(h, W[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = (x @ W[p + "self_attn.q_proj.weight"].T).reshape(b, s, nh, d).transpose(0, 2, 1, 3)
        k = (x @ W[p + "self_attn.k_proj.weight"].T).reshape(b, s, kvh, d).transpose(0, 2, 1, 3)
        v = (x @ W[p + "self_attn.v_proj.weight"].T).reshape(b, s, kvh, d).transpose(0, 2, 1, 3)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if past_key_values is not None:
            k = np.concatenate([np.asarray(past_key_values[i][0], dt), k], axis=2)
            v = np.concatenate([np.asarray(past_key_values[i][1], dt), v], axis=2)
        present.append((k, v))
        k, v = np.repeat(k, cfg.n_rep, axis=1), np.repeat(v, cfg.n_rep, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / dt.type(np.sqrt(d)) + mask
        ctx = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, s, nh * d)
        h = h + ctx @ W[p + "self_attn.o_proj.weight"].T

        x = _rms_norm(h, W[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        act = _silu(x @ W[p + "mlp.gate_proj.weight"].T) * (x @ W[p + "mlp.up_proj.weight"].T)
        h = h + act @ W[p + "mlp.down_proj.weight"].T

    h = _rms_norm(h, W["model.norm.weight"], cfg.rms_norm_eps)
    head = W["model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"]
    logits = h @ head.T
    return (logits, present) if return_present else logits
