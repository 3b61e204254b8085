"""Perplexity, KL and top-1 agreement to a teacher of decoder models, run in ONNX Runtime.

The ORT counterpart of ``llmopt-eval A.onnx B.onnx --ppl TEXT --reference TEACHER
--max-tokens N`` (same windows: non-overlapping 512-token windows of the tokenized text,
the first N tokens), so the figures of distill-reconstruct / KD students in
docs/distillation.md can be checked outside llmopt's interpreter and every produced model is
shown to run in ORT. Uses scripts/baselines.py's evaluation (fp64 sums).

    .venv/bin/python tools/distill/ort_eval.py --teacher $S/model.onnx --text kjv-eval.txt \\
        --tokenizer $S/tokenizer.json --max-tokens 4096 s25.onnx s25.rec.onnx
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import baselines  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="+", help="ONNX decoders (input_ids -> logits)")
    ap.add_argument("--teacher", type=Path, required=True, help="the reference model")
    ap.add_argument("--text", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json")
    ap.add_argument("--max-tokens", type=int, default=4096, help="first N tokens of the text")
    a = ap.parse_args(argv)
    for p in [a.teacher, a.text, a.tokenizer, *a.models]:
        if not p.is_file():
            sys.exit(f"ort_eval: {p}: no such file")
    windows, _ = baselines.token_windows(a.text, a.tokenizer)
    windows = windows[:max(1, a.max_tokens // baselines.CONTEXT)]
    res = baselines.eval_smollm2(a.teacher, {str(m): m for m in a.models}, windows)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
