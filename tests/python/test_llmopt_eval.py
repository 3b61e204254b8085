"""llmopt-eval against NumPy / ONNX Runtime on the tiny test models (no real models, fast).

Perplexity: the tiny Llama (vocab 256) with a byte-level BPE tokenizer.json written here (a
256-entry byte vocabulary, no merges, so token id == UTF-8 byte); ORT computes the logits of
the same windows and NumPy the perplexity, which llmopt-eval must match to 1e-4 relative.
Reference figures: the model against itself (KL 0, top-1 1) and llmopt's int4 quantization
against the original (KL > 0, checked against ORT). Embeddings: the tiny BERT with a small
WordPiece tokenizer.json written here, against itself (cosine 1) and another seed (vs ORT).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
EVAL = BUILD / "bin" / "llmopt-eval"
LLMOPT = BUILD / "bin" / "llmopt"
TOKENIZE = BUILD / "bin" / "llmopt-tokenize"
MODELS = REPO / "tools" / "models"

pytestmark = pytest.mark.skipif(not EVAL.exists(), reason=f"{EVAL} not built")

TEXT = (
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void; and darkness was upon the face of the deep. And the Spirit of God moved upon "
    "the face of the waters. And God said, Let there be light: and there was light. And God "
    "saw the light, that it was good: and God divided the light from the darkness. Café, "
    "naïve, 東京 — 123 456!\n\n"
)
SENTENCES = [
    "In the beginning God created the heaven and the earth.",
    "And the earth was without form, and void.",
    "And God said, Let there be light: and there was light.",
    "And God saw the light, that it was good.",
    "And God called the light Day, and the darkness he called Night.",
    "The evening and the morning were the first day.",
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by ByteLevel pre-tokenizers."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_tokenizer() -> dict:
    """Byte-level BPE with no merges: every UTF-8 byte is one token, id == byte value."""
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": bl, "post_processor": bl, "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {ch: b for b, ch in _bytes_to_unicode().items()}, "merges": []},
    }


def wordpiece_tokenizer() -> dict:
    """A BERT-style WordPiece tokenizer over a small vocabulary (ids < 512, the tiny BERT's)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w.strip(".,:;").lower() for s in SENTENCES for w in s.split()} - {""})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab_list = specials + list(".,:;!?") + letters + ["##" + c for c in letters] + words
    vocab = {t: i for i, t in enumerate(vocab_list)}
    assert len(vocab) < 512
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(specials)]

    def special(name: str) -> dict:
        return {"SpecialToken": {"id": name, "type_id": 0}}

    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
            "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]"),
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {n: {"id": n, "ids": [vocab[n]], "tokens": [n]} for n in ("[CLS]", "[SEP]")},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("eval")
    f = {"llama": d / "llama.onnx", "bert": d / "bert.onnx", "bert1": d / "bert1.onnx",
         "q4": d / "llama-q4.onnx", "btok": d / "bytes.json", "wtok": d / "wordpiece.json",
         "text": d / "text.txt", "lines": d / "lines.txt"}
    gen = [(MODELS / "gen_tiny_llama.py", f["llama"], []), (MODELS / "gen_tiny_bert.py", f["bert"], []),
           (MODELS / "gen_tiny_bert.py", f["bert1"], ["--seed", "1"])]
    for script, out, extra in gen:
        subprocess.run([sys.executable, str(script), "-o", str(out), *extra], check=True)
    f["btok"].write_text(json.dumps(byte_tokenizer()))
    f["wtok"].write_text(json.dumps(wordpiece_tokenizer()))
    f["text"].write_text(TEXT, encoding="utf-8")
    f["lines"].write_text("\n".join(SENTENCES) + "\n")
    if LLMOPT.exists():
        subprocess.run([str(LLMOPT), str(f["llama"]), "-passes=quant-int4", "-o", str(f["q4"])],
                       check=True, capture_output=True)
    return f


def _eval(*args: str | Path, expect_rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(EVAL), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == expect_rc, f"rc {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _json(*args: str | Path) -> dict:
    return json.loads(_eval(*args, "--json").stdout)


def _ids() -> np.ndarray:
    return np.frombuffer(TEXT.rstrip("\n").encode("utf-8"), np.uint8).astype(np.int64)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


def _windows(n: int, context: int, stride: int) -> list[tuple[int, int]]:
    """(begin, first scored position) of each full window, HF's sliding-window convention."""
    out, scored_to, begin = [], 0, 0
    while begin + context <= n:
        out.append((begin, max(1, scored_to - begin)))
        scored_to = begin + context
        begin += stride
    return out


def _ort_logprobs(model: Path, ids: np.ndarray, context: int, stride: int):
    """Per window: the log-probabilities of its rows and the window's ids and first scored row."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for begin, first in _windows(len(ids), context, stride):
        win = ids[begin:begin + context]
        (logits,) = sess.run(["logits"], {"input_ids": win[None, :]})
        yield _log_softmax(logits[0, :-1]), win, first, logits[0, :-1]


def _ort_ppl(model: Path, context: int, stride: int) -> tuple[float, int]:
    nll, n = 0.0, 0
    for logp, win, first, _ in _ort_logprobs(model, _ids(), context, stride):
        rows = np.arange(first - 1, len(win) - 1)
        nll -= float(logp[rows, win[rows + 1]].sum())
        n += len(rows)
    return math.exp(nll / n), n


@pytest.mark.parametrize("context,stride", [(64, 64), (64, 24), (100, 100)])
def test_ppl_matches_ort(files, context, stride):
    got = _json(files["llama"], "--ppl", files["text"], "--tokenizer", files["btok"],
                "--context", str(context), "--stride", str(stride))
    want, n = _ort_ppl(files["llama"], context, stride)
    assert got["text_tokens"] == len(_ids())
    assert got["tokens_scored"] == n
    assert got["windows"] == len(_windows(len(_ids()), context, stride))
    assert got["ppl"] == pytest.approx(want, rel=1e-4)
    assert got["context"] == context and got["stride"] == stride
    assert got["tokenizer"] == str(files["btok"]) and got["reference"] is None


def test_max_tokens_and_text_output(files):
    proc = _eval(files["llama"], "--ppl", files["text"], "--tokenizer", files["btok"],
                 "--context", "64", "--max-tokens", "130")
    assert "126 tokens scored in 2 windows (context 64, stride 64)" in proc.stdout
    assert "perplexity:" in proc.stdout
    # stderr is not a TTY here: plain progress lines (ir/Progress.h), here only the last.
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppl: 2/2 ") and "tok/s" in lines[0]
    quiet = _eval(files["llama"], "--ppl", files["text"], "--tokenizer", files["btok"],
                  "--context", "64", "--max-tokens", "130", "--quiet")
    assert quiet.stderr == "" and "perplexity:" in quiet.stdout


def test_reference_self_is_exact(files):
    got = _json(files["llama"], "--ppl", files["text"], "--tokenizer", files["btok"],
                "--context", "64", "--reference", files["llama"])
    assert got["kl_mean"] < 1e-9
    assert got["top1"] == 1.0
    assert got["max_abs_logit_diff"] == 0.0
    assert got["ref_ppl"] == got["ppl"]


def test_reference_quantized_matches_ort(files):
    if not files["q4"].exists():
        pytest.skip(f"{LLMOPT} not built")
    got = _json(files["q4"], "--ppl", files["text"], "--tokenizer", files["btok"],
                "--context", "64", "--reference", files["llama"])
    assert got["kl_mean"] > 1e-6
    assert 0.1 < got["top1"] < 1.0  # random weights: int4 flips many close calls
    kl = top1 = n = 0
    maxdiff = 0.0
    ref = list(_ort_logprobs(files["llama"], _ids(), 64, 64))
    mine = list(_ort_logprobs(files["q4"], _ids(), 64, 64))
    for (lq, _, _, zq), (lp, _, _, zp) in zip(ref, mine):
        kl += float((np.exp(lq) * (lq - lp)).sum())
        top1 += int((lq.argmax(-1) == lp.argmax(-1)).sum())
        maxdiff = max(maxdiff, float(np.abs(zq - zp).max()))
        n += len(lq)
    assert got["tokens_scored"] == n
    assert got["kl_mean"] == pytest.approx(kl / n, rel=1e-3)
    assert got["top1"] == pytest.approx(top1 / n, abs=2 / n)
    assert got["max_abs_logit_diff"] == pytest.approx(maxdiff, rel=1e-3)
    assert got["ref_ppl"] == pytest.approx(_ort_ppl(files["llama"], 64, 64)[0], rel=1e-4)


def test_embed_self(files):
    got = _json(files["bert"], "--embed", files["lines"], "--tokenizer", files["wtok"],
                "--reference", files["bert"])
    assert got["lines"] == len(SENTENCES)
    assert got["dim"] == 64
    assert got["cos_mean"] == pytest.approx(1.0, abs=1e-9)
    assert got["nn_agree"] == 1.0


def _tokenize(tok: Path, lines: list[str]) -> list[list[int]]:
    proc = subprocess.run([str(TOKENIZE), "--tokenizer", str(tok), "--add-special"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    return [[int(t) for t in line.split()] for line in proc.stdout.splitlines()]


def _ort_embed(model: Path, ids: list[list[int]]) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = []
    for row in ids:
        x = np.asarray([row], np.int64)
        feeds = {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)}
        (h,) = sess.run(["last_hidden_state"], feeds)
        out.append(h[0].astype(np.float64).mean(0))
    return np.stack(out)


def test_embed_vs_other_model_matches_ort(files):
    if not TOKENIZE.exists():
        pytest.skip(f"{TOKENIZE} not built")
    got = _json(files["bert1"], "--embed", files["lines"], "--tokenizer", files["wtok"],
                "--reference", files["bert"], "--max-lines", "5")
    ids = _tokenize(files["wtok"], SENTENCES[:5])
    assert all(row[0] == 2 and row[-1] == 3 and 1 not in row for row in ids)  # [CLS] ... [SEP], no [UNK]
    assert got["lines"] == 5 and got["tokens"] == sum(map(len, ids))
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    a, b = unit(_ort_embed(files["bert1"], ids)), unit(_ort_embed(files["bert"], ids))
    cos = (a * b).sum(-1)

    def nn(u):
        c = u @ u.T
        np.fill_diagonal(c, -2)
        return c.argmax(1)

    assert got["cos_mean"] == pytest.approx(cos.mean(), abs=1e-5)
    assert got["cos_min"] == pytest.approx(cos.min(), abs=1e-5)
    assert got["cos_mean"] < 0.999
    assert got["nn_agree"] == pytest.approx(float(np.mean(nn(a) == nn(b))))


@pytest.mark.parametrize("case,needle", [
    ("missing-model", "nope.onnx: no such file"),
    ("missing-tokenizer", "nope.json: no such file"),
    ("no-tokenizer", "--tokenizer"),
    ("no-logits", "no output named 'logits'"),
    ("both-modes", "exactly one of --ppl"),
    ("bad-stride", "--stride 65 is larger than --context 64"),
    ("bad-number", "--context x: expected an integer"),
])
def test_errors(files, tmp_path, case, needle):
    base = [files["llama"], "--ppl", files["text"], "--tokenizer", files["btok"]]
    args = {
        "missing-model": [tmp_path / "nope.onnx", "--ppl", files["text"], "--tokenizer", files["btok"]],
        "missing-tokenizer": [files["llama"], "--ppl", files["text"], "--tokenizer", tmp_path / "nope.json"],
        "no-tokenizer": [files["llama"], "--ppl", files["text"]],
        "no-logits": [files["bert"], "--ppl", files["text"], "--tokenizer", files["btok"]],
        "both-modes": base + ["--embed", files["lines"]],
        "bad-stride": base + ["--context", "64", "--stride", "65"],
        "bad-number": base + ["--context", "x"],
    }[case]
    proc = _eval(*args, expect_rc=1)
    assert needle in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
