#!/usr/bin/env python3
"""Write llmopt's bundled tiny BERT encoder test model (random weights, deterministic per seed).

    python tools/models/gen_tiny_bert.py -o tiny_bert.onnx [--seed 0] [--no-token-type-ids]

Shape: 2 layers, hidden 64, 4 heads of 16, GELU MLP 256, vocab 512, 128 positions, 2 token
types; inputs input_ids / attention_mask / token_type_ids, output last_hidden_state.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bert_onnx import BertConfig, build_model, save_model, weight_shapes  # noqa: E402

TINY_BERT = BertConfig(
    vocab_size=512,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    intermediate_size=256,
    max_position_embeddings=128,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
)


def random_bert_weights(cfg: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-named fp32 weights drawn from ``default_rng(seed)`` in :func:`weight_shapes` order.

    Embedding tables N(0, 0.2^2); Linear ``[out, in]`` N(0, 1/in) (query/key 1.5x that, so
    attention is not flat); biases and LayerNorm betas N(0, 0.02^2); gammas 1 + N(0, 0.05^2).
    """
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in weight_shapes(cfg).items():
        noise = rng.standard_normal(shape, dtype=np.float32)
        if "LayerNorm" in name:
            w = 1.0 + 0.05 * noise if name.endswith(".weight") else 0.02 * noise
        elif name.startswith("embeddings."):
            w = 0.2 * noise
        elif name.endswith(".bias"):
            w = 0.02 * noise
        else:
            gain = 1.5 if (".query." in name or ".key." in name) else 1.0
            w = (gain / np.sqrt(shape[1])) * noise
        weights[name] = np.asarray(w, dtype=np.float32)
    return weights


def tiny_bert_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """The bundled model's weights for ``seed``."""
    return random_bert_weights(TINY_BERT, seed)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True, help="output .onnx path")
    ap.add_argument("--seed", type=int, default=0, help="weight RNG seed (default 0)")
    ap.add_argument("--no-token-type-ids", action="store_true",
                    help="omit the token_type_ids input (all tokens type 0)")
    ap.add_argument("--external-data", action="store_true",
                    help="store weights in OUTPUT.data beside the model")
    args = ap.parse_args(argv)

    model = build_model(TINY_BERT, tiny_bert_weights(args.seed),
                        with_token_type_ids=not args.no_token_type_ids)
    save_model(model, args.output, external_data=True if args.external_data else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
