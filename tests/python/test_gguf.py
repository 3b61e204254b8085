"""Tests for the GGUF reading path (tools/models/gguf_llama.py, smollm2_tokenizer.py).

All synthetic and small (CI): ggml Q4_1 / Q8_0 block layouts against ``gguf.quants`` and against
hand-built blocks, llama.cpp's Q/K row permutation against the RoPE it exists for, and a tiny
Llama written to a real GGUF file (quantized, Q/K permuted, with a byte-level BPE vocabulary)
that must come back as the HF weights, run in ONNX Runtime like the NumPy reference, and give a
``tokenizer.json`` that the ``tokenizers`` package loads and round-trips.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf.quants import dequantize as gguf_dequantize  # noqa: E402
from gguf.quants import quantize as gguf_quantize  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "models"))

import gen_tiny_llama  # noqa: E402
import gguf_llama as G  # noqa: E402
import llama_onnx  # noqa: E402
import llama_ref  # noqa: E402
import smollm2_tokenizer  # noqa: E402


def _random_q4_1(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random but valid Q4_1 bytes: finite fp16 d > 0 and m, random nibbles."""
    rng = np.random.default_rng(seed)
    nb = cols // 32
    d = rng.uniform(1e-3, 0.1, size=(rows, nb, 1)).astype(np.float16)
    m = rng.uniform(-1, 0, size=(rows, nb, 1)).astype(np.float16)
    qs = rng.integers(0, 256, size=(rows, nb, 16), dtype=np.uint8)
    return np.concatenate([d.view(np.uint8), m.view(np.uint8), qs], -1).reshape(rows, nb * 20)


# ------------------------------------------------------------------------------ Q4_1 / Q8_0


def test_q4_1_layout_low_nibble_j_high_nibble_j_plus_16() -> None:
    """One hand-built block: element j is the low nibble of byte j, element j+16 the high one."""
    d, m = np.float16(0.5), np.float16(-2.0)
    lo = np.arange(16, dtype=np.uint8)          # elements 0..15 -> 0..15
    hi = (15 - np.arange(16)).astype(np.uint8)  # elements 16..31 -> 15..0
    block = np.concatenate([np.array([d]).view(np.uint8), np.array([m]).view(np.uint8),
                            lo | (hi << 4)])
    x = G.dequant_q4_1(block[None, :], 32)[0]
    want = np.concatenate([0.5 * np.arange(16) - 2.0, 0.5 * (15 - np.arange(16)) - 2.0])
    np.testing.assert_array_equal(x, want.astype(np.float32))
    # Not MatMulNBits' adjacent pairs: element 1 comes from byte 1's low nibble, not byte 0's high.
    assert x[1] == np.float32(0.5 * 1 - 2.0) and x[16] == np.float32(0.5 * 15 - 2.0)


@pytest.mark.parametrize("rows,cols", [(1, 32), (3, 64), (7, 576), (5, 1536)])
def test_q4_1_matches_gguf_dequantizer(rows: int, cols: int) -> None:
    raw = _random_q4_1(rows, cols, seed=rows * cols)
    mine = G.dequant_q4_1(raw, cols)
    theirs = gguf_dequantize(raw, QT.Q4_1).reshape(rows, cols)
    np.testing.assert_array_equal(mine, theirs)


def test_q4_1_quantize_round_trip() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 128)).astype(np.float32)
    for raw in (G.quant_q4_1(x), np.asarray(gguf_quantize(x, QT.Q4_1))):
        back = G.dequant_q4_1(raw, 128)
        np.testing.assert_array_equal(back, gguf_dequantize(raw, QT.Q4_1).reshape(x.shape))
        # error within half a step (+ fp16 rounding of d and m)
        step = (x.reshape(6, 4, 32).max(-1) - x.reshape(6, 4, 32).min(-1)) / 15
        err = np.abs(back - x).reshape(6, 4, 32).max(-1)
        assert np.all(err <= 0.5 * step * 1.01 + 2e-3)


def test_q8_0_matches_gguf_dequantizer() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 96)).astype(np.float32)
    raw = np.asarray(gguf_quantize(x, QT.Q8_0))
    mine = G.dequant_q8_0(raw, 96)
    np.testing.assert_array_equal(mine, gguf_dequantize(raw, QT.Q8_0).reshape(x.shape))
    assert np.max(np.abs(mine - x)) < np.abs(x).max() / 127


def test_dequant_rejects_partial_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        G.dequant_q4_1(np.zeros((1, 20), np.uint8), 48)


# ------------------------------------------------------------------------------ Q/K rows


def test_permute_qk_small_example() -> None:
    """One head of size 4: HF rows [r0 r1 r2 r3] -> GGUF rows [r0 r2 r1 r3]."""
    w = np.arange(4 * 3).reshape(4, 3)
    np.testing.assert_array_equal(G.permute_qk(w, 1), w[[0, 2, 1, 3]])
    np.testing.assert_array_equal(G.unpermute_qk(G.permute_qk(w, 1), 1), w)
    w2 = np.arange(2 * 6 * 2).reshape(12, 2)  # two heads of 6: per head [0 3 1 4 2 5]
    np.testing.assert_array_equal(G.permute_qk(w2, 2), w2[[0, 3, 1, 4, 2, 5,
                                                           6, 9, 7, 10, 8, 11]])


@pytest.mark.parametrize("n_head,d", [(9, 64), (3, 64), (4, 16), (1, 2)])
def test_unpermute_inverts_permute(n_head: int, d: int) -> None:
    w = np.random.default_rng(n_head).standard_normal((n_head * d, 5)).astype(np.float32)
    np.testing.assert_array_equal(G.unpermute_qk(G.permute_qk(w, n_head), n_head), w)
    np.testing.assert_array_equal(G.permute_qk(G.unpermute_qk(w, n_head), n_head), w)


def test_unpermute_rejects_odd_heads() -> None:
    with pytest.raises(ValueError):
        G.unpermute_qk(np.zeros((9, 2)), 3)


def test_permutation_turns_rotate_half_into_adjacent_pair_rope() -> None:
    """Why the permutation exists: llama.cpp's RoPE on GGUF rows (pairs 2i, 2i+1) equals HF's
    rotate-half RoPE on HF rows (pairs i, i+d/2), up to the same row permutation."""
    n_head, d, hidden, pos = 3, 8, 10, 5
    rng = np.random.default_rng(3)
    w_hf = rng.standard_normal((n_head * d, hidden))
    x = rng.standard_normal(hidden)
    theta = pos * 10000.0 ** (-np.arange(0, d, 2) / d)  # [d/2]
    cos, sin = np.cos(theta), np.sin(theta)

    q = (w_hf @ x).reshape(n_head, d)  # HF: rotate (i, i + d/2)
    a, b = q[:, :d // 2], q[:, d // 2:]
    hf = np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    g = (G.permute_qk(w_hf, n_head) @ x).reshape(n_head, d)  # llama.cpp: rotate (2i, 2i+1)
    e, o = g[:, 0::2], g[:, 1::2]
    cc = np.empty_like(g)
    cc[:, 0::2], cc[:, 1::2] = e * cos - o * sin, o * cos + e * sin

    np.testing.assert_allclose(G.unpermute_qk(cc.reshape(-1, 1), n_head).reshape(n_head, d), hf,
                               rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ a tiny GGUF


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "n d", "Ġa nd"]


def _tiny_vocab() -> tuple[list[str], list[int]]:
    byte_tokens = sorted(set(_bytes_to_unicode().values()), key=lambda c: ord(c))
    merged = ["".join(m.split(" ")) for m in MERGES]
    tokens = SPECIALS + byte_tokens + merged
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, types


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """The tiny test Llama as llama.cpp would store it: Q/K permuted, linear layers Q4_1, the
    embedding Q8_0, norms F32, plus a byte-level BPE vocabulary with the SmolLM pre-tokenizer."""
    tokens, types = _tiny_vocab()
    cfg = llama_onnx.LlamaConfig(**{**gen_tiny_llama.TINY_LLAMA.__dict__,
                                    "vocab_size": len(tokens)})
    hf = gen_tiny_llama.random_llama_weights(cfg, seed=4)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    expected: dict[str, np.ndarray] = {}
    inv = {v: k for k, v in {"token_embd.weight": "model.embed_tokens.weight",
                             "output_norm.weight": "model.norm.weight"}.items()}
    to_gguf = {hf_part: g for g, hf_part in G._GGUF_TO_HF.items()}
    for name, arr in hf.items():
        if name in inv:
            gname = inv[name]
        else:
            _, _, i, *rest = name.split(".")
            gname = f"blk.{i}.{to_gguf['.'.join(rest[:-1])]}.weight"
        stored = arr
        if name.endswith("q_proj.weight"):
            stored = G.permute_qk(arr, cfg.num_heads)
        elif name.endswith("k_proj.weight"):
            stored = G.permute_qk(arr, cfg.num_kv_heads)
        if arr.ndim == 1:
            w.add_tensor(gname, stored.astype(np.float32))
            expected[name] = stored
            continue
        qtype = QT.Q8_0 if name == "model.embed_tokens.weight" else QT.Q4_1
        raw = np.asarray(gguf_quantize(stored.astype(np.float32), qtype))
        w.add_tensor(gname, raw, raw_dtype=qtype)
        back = gguf_dequantize(raw, qtype).reshape(stored.shape)
        if name.endswith("q_proj.weight"):
            back = G.unpermute_qk(back, cfg.num_heads)
        elif name.endswith("k_proj.weight"):
            back = G.unpermute_qk(back, cfg.num_kv_heads)
        expected[name] = back.astype(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, expected


def test_read_config_and_weights(tiny_gguf: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, expected = tiny_gguf
    reader = gguf.GGUFReader(str(path))
    cfg = G.read_config(reader)
    tiny = gen_tiny_llama.TINY_LLAMA
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
            cfg.intermediate_size) == (tiny.num_layers, tiny.hidden_size, tiny.num_heads,
                                       tiny.num_kv_heads, tiny.head_dim, tiny.intermediate_size)
    assert cfg.tie_word_embeddings and cfg.rms_norm_eps == tiny.rms_norm_eps
    weights, types = G.read_weights(reader, cfg)
    assert set(weights) == set(expected)
    for name, arr in expected.items():
        np.testing.assert_array_equal(weights[name], arr, err_msg=name)
    assert types["model.embed_tokens.weight"] == "Q8_0"
    assert types["model.layers.0.self_attn.q_proj.weight"] == "Q4_1"
    assert types["model.norm.weight"] == "F32"


def test_gguf_weights_run_in_onnx_like_the_reference(
        tiny_gguf: tuple[Path, dict[str, np.ndarray]]) -> None:
    ort = pytest.importorskip("onnxruntime")
    reader = gguf.GGUFReader(str(tiny_gguf[0]))
    cfg = G.read_config(reader)
    weights, _ = G.read_weights(reader, cfg)
    model = llama_onnx.build_model(cfg, weights)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, size=(2, 11), dtype=np.int64)
    (logits,) = sess.run(None, {"input_ids": ids})
    ref = llama_ref.forward(cfg, weights, ids, dtype=np.float64)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-5)


def test_tokenizer_json_from_gguf(tiny_gguf: tuple[Path, dict[str, np.ndarray]],
                                  tmp_path: Path) -> None:
    import json

    pytest.importorskip("tokenizers")
    out = smollm2_tokenizer.write_tokenizer_json(tiny_gguf[0], tmp_path / "tokenizer.json")
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["model"]["type"] == "BPE" and data["model"]["merges"] == MERGES
    assert [t["content"] for t in data["added_tokens"]] == SPECIALS
    assert all(t["special"] and not t["normalized"] for t in data["added_tokens"])
    assert data["pre_tokenizer"]["pretokenizers"][0] == {"type": "Digits",
                                                         "individual_digits": True}
    assert data["decoder"]["type"] == "ByteLevel"
    tok = smollm2_tokenizer.check_tokenizer(out)  # round trips, digits, special ids 0/1/2
    enc = tok.encode("in the and 42", add_special_tokens=False)
    assert enc.tokens == ["in", "Ġthe", "Ġand", "Ġ", "4", "2"]
    assert tok.encode("<|im_start|>hi", add_special_tokens=False).ids[0] == 1


def test_tokenizer_rejects_non_bpe_gguf(tmp_path: Path) -> None:
    path = tmp_path / "spm.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "a"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="byte-level BPE"):
        smollm2_tokenizer.tokenizer_dict(path)
