#!/usr/bin/env python3
"""Baselines for docs/results.md: fp32 and ONNX Runtime-quantized SmolLM2-135M and MiniLM.

Run by hand (not CI), after the one-command preparations:

    .venv/bin/python tools/models/convert_smollm2.py
    .venv/bin/python tools/models/convert_minilm.py
    .venv/bin/python tools/models/prepare_text.py
    .venv/bin/python scripts/baselines.py [--json OUT.json] [--windows N] [--methods ...]

HQQ rows need ``torch`` (ONNX Runtime's HQQ quantizer imports it); torch is not in
requirements.txt, so run with a venv that has the lock *and* torch for those rows (see
docs/results.md); without torch they are skipped with a message.

**Quantization** uses ONNX Runtime's own ``MatMulNBitsQuantizer`` on the fp32 ``model.onnx``
(MatMul weights only, its default; MatMulNBits, 4 bits, ``accuracy_level`` unset unless
``--accuracy-level``):

* ``rtn-{sym,asym}-b{32,128}``: ``DefaultWeightOnlyQuantConfig`` (ORT's built-in round-to-nearest,
  the quantizer's default algorithm);
* ``hqq-b{32,128}``: ``HQQWeightOnlyQuantConfig`` (half-quadratic, asymmetric, float zero points);
* ``gptq-{sym,asym}-b128``: ``GPTQWeightOnlyQuantConfig`` with ``--gptq-samples`` windows of
  512 tokens from kjv-calib.txt as calibration data.

**Perplexity** (SmolLM2, ONNX Runtime CPU): the evaluation file is read whole, the trailing
newline stripped, and tokenized with SmolLM2's tokenizer.json (no special tokens, no BOS:
SmolLM2 adds none). The ids are cut into ``floor(T / 512)`` consecutive, non-overlapping windows of
512 tokens (context 512, stride 512; the tail shorter than a window is dropped). Each window is
one independent ``[1, 512]`` forward pass; its loss is the mean NLL of tokens 2..512 of the window
given their prefix (511 predictions; the first token of each window is context only). This is
what HF's sliding-window recipe gives with ``stride == max_length``. ppl = exp(total NLL / total
predictions). **KL** = mean over the same predictions of KL(p_fp32 || p_quant) in nats; **top-1**
= fraction of them where the argmax agrees with fp32's.

**bpw** = bytes of all initializers (weights incl. scales/zero points, norms, embedding/LM head)
x 8 / the fp32 model's parameter count. The ORT quantizer leaves the tied embedding/LM head in
fp32 (the LM head's B is a Transpose, not an initializer, and Gather is not in its default
op types), so ``bpw_linear`` gives the same figure over the quantized linear layers only.

**MiniLM**: sentence embeddings of the evaluation verses by the fp32 and quantized encoders:
mean / min cosine vs fp32 and nearest-neighbour agreement (for each verse, is its nearest other
verse the same as under fp32).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools" / "models"))

from cache_paths import model_dir, text_dir  # noqa: E402

CONTEXT = 512
SMOL_METHODS = ["rtn-asym-b32", "rtn-asym-b128", "rtn-sym-b32", "rtn-sym-b128", "hqq-b32",
                "hqq-b128", "gptq-sym-b128"]
MINILM_METHODS = ["rtn-asym-b32", "rtn-asym-b128", "rtn-sym-b32", "rtn-sym-b128", "hqq-b32",
                  "hqq-b128"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ quantization


def _parse(method: str) -> tuple[str, bool, int]:
    """``rtn-sym-b32`` -> ("rtn", True, 32); ``hqq-b128`` -> ("hqq", False, 128)."""
    parts = method.split("-")
    algo, block = parts[0], int(parts[-1].lstrip("b"))
    sym = "sym" in parts[1:-1]
    if algo not in ("rtn", "hqq", "gptq") or (algo == "hqq" and sym):
        raise ValueError(f"unknown method {method!r}")
    return algo, sym, block


class _WindowReader:
    """CalibrationDataReader over ``[1, CONTEXT]`` windows of token ids (for GPTQ)."""

    def __init__(self, windows: list[np.ndarray]) -> None:
        self.windows = windows
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.windows):
            return None
        self.i += 1
        return {"input_ids": self.windows[self.i - 1][None, :]}

    def rewind(self) -> None:
        self.i = 0

    def __iter__(self):  # ORT's GPTQ path iterates the reader
        self.rewind()
        while (item := self.get_next()) is not None:
            yield item


def quantize(src: Path, dst: Path, method: str, accuracy_level: int | None,
             calib_windows: Callable[[], list[np.ndarray]] | None = None) -> float:
    """Write ``dst`` = ORT-quantized ``src``; returns the seconds it took."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    logging.getLogger().setLevel(logging.WARNING)  # the module sets up INFO logging per node
    algo, sym, block = _parse(method)
    t0 = time.perf_counter()
    if algo == "rtn":
        cfg: Any = mnq.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=sym,
                                                    accuracy_level=accuracy_level)
    elif algo == "hqq":
        import torch  # noqa: F401  (ORT's HQQ imports it; fail early with a clear message)

        cfg = mnq.HQQWeightOnlyQuantConfig(block_size=block, bits=4)
    else:
        if calib_windows is None:
            raise ValueError("GPTQ needs calibration windows")
        cfg = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=_WindowReader(calib_windows()),
                                            block_size=128)
    # GPTQ gets the ModelProto, not the path: given a path with a config.json beside it, ORT's
    # bundled neural_compressor code imports transformers (AutoConfig), which we do not install.
    model: Any = str(src)
    if algo == "gptq":
        import onnx

        model = onnx.load(str(src))
    q = mnq.MatMulNBitsQuantizer(model, block_size=block, is_symmetric=sym,
                                 accuracy_level=accuracy_level, algo_config=cfg)
    q.process()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    q.model.save_model_to_file(str(tmp), use_external_data_format=False)
    os.replace(tmp, dst)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------ size figures


def weight_figures(path: Path, n_params: int, linear_params: int | None = None) -> dict[str, Any]:
    """File size, bpw over all initializers, and bpw over the linear layers' initializers."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    total = linear = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        if t.data_type in (onnx.TensorProto.UINT4, onnx.TensorProto.INT4):
            nbytes = (n + 1) // 2
        else:
            nbytes = n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        total += nbytes
        if _is_linear(t.name):
            linear += nbytes
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
    out = {"file_mb": size / 1e6, "weight_bytes": total, "bpw": total * 8 / n_params}
    if linear_params:
        out["bpw_linear"] = linear * 8 / linear_params
    return out


def _is_linear(name: str) -> bool:
    """Initializers of SmolLM2's / MiniLM's linear layers (fp32 weights or their quantized form)."""
    keys = ("_proj.weight", "attention.self.query.weight", "attention.self.key.weight",
            "attention.self.value.weight", "dense.weight")
    return any(k in name for k in keys)


# ------------------------------------------------------------------------------ SmolLM2 eval


def session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def token_windows(text_path: Path, tokenizer_path: Path) -> tuple[list[np.ndarray], int]:
    """Non-overlapping CONTEXT-token windows of the whole file, and the file's token count."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    ids = np.asarray(tok.encode(text_path.read_text(encoding="utf-8").rstrip("\n"),
                                add_special_tokens=False).ids, np.int64)
    n = len(ids) // CONTEXT
    return [ids[i * CONTEXT:(i + 1) * CONTEXT] for i in range(n)], len(ids)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp of fp32 logits ``[n, vocab]`` (one exp pass; sums in fp64)."""
    m = x.max(-1, keepdims=True)
    return m[:, 0].astype(np.float64) + np.log(np.exp(x - m).sum(-1, dtype=np.float64))


def eval_smollm2(fp32: Path, quantized: dict[str, Path], windows: list[np.ndarray]
                 ) -> dict[str, dict[str, float]]:
    """ppl of every model, KL / top-1 vs fp32 for the quantized ones; all models in lockstep.

    Per window and model, with logits ``z`` and ``lse = logsumexp(z)`` per position:
    NLL = ``lse - z[target]``; with the fp32 distribution ``p`` and ``H = sum p log p``,
    KL(p || q) = ``H - (sum p z_q - lse_q sum p)``, so each quantized model costs one
    exp pass and one dot product per position; fp32 sums are accumulated in fp64.
    """
    sessions = {"fp32": session(fp32), **{k: session(p) for k, p in quantized.items()}}
    acc = {k: {"nll": 0.0, "kl": 0.0, "top1": 0, "n": 0, "seconds": 0.0} for k in sessions}
    t_start = time.perf_counter()
    for w, ids in enumerate(windows):
        feeds = {"input_ids": ids[None, :]}
        target = ids[1:]
        rows = np.arange(len(target))
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            (logits,) = sess.run(["logits"], feeds)
            acc[name]["seconds"] += time.perf_counter() - t0
            z = logits[0, :-1]  # predictions for tokens 2..CONTEXT
            lse = _logsumexp(z)
            a = acc[name]
            a["nll"] += float((lse - z[rows, target]).sum())
            a["n"] += len(target)
            if name == "fp32":
                p = np.exp(z - lse[:, None].astype(np.float32))  # fp32 softmax
                psum = p.sum(-1, dtype=np.float64)  # 1 up to rounding; kept exact below
                neg_entropy = (p * z).sum(-1, dtype=np.float64) - lse * psum  # sum p log p
                ref_top = z.argmax(-1)
            else:
                cross = (p * z).sum(-1, dtype=np.float64) - lse * psum  # sum p log q
                a["kl"] += float((neg_entropy - cross).sum())
                a["top1"] += int((z.argmax(-1) == ref_top).sum())
        done = w + 1
        el = time.perf_counter() - t_start
        log(f"  window {done}/{len(windows)}  fp32 ppl so far "
            f"{math.exp(acc['fp32']['nll'] / acc['fp32']['n']):.3f}  "
            f"({el:.0f} s, ~{el / done * (len(windows) - done):.0f} s left)")
    out = {}
    for name, a in acc.items():
        row = {"ppl": math.exp(a["nll"] / a["n"]), "predictions": a["n"],
               "eval_seconds": a["seconds"]}
        if name != "fp32":
            row["kl"] = a["kl"] / a["n"]
            row["top1"] = a["top1"] / a["n"]
        out[name] = row
    return out


# ------------------------------------------------------------------------------ MiniLM eval


def eval_minilm(fp32: Path, quantized: dict[str, Path], sentences: list[str],
                tokenizer_path: Path) -> dict[str, dict[str, float]]:
    """Cosine of each quantized model's sentence embeddings vs fp32's; neighbour agreement."""
    from convert_minilm import embed, tokenizer

    tok = tokenizer(tokenizer_path)
    t0 = time.perf_counter()
    ref = embed(session(fp32), tok, sentences)
    out: dict[str, dict[str, float]] = {"fp32": {"eval_seconds": time.perf_counter() - t0}}

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def neighbours(x: np.ndarray) -> np.ndarray:
        u = unit(x)
        cos = u @ u.T
        np.fill_diagonal(cos, -2.0)
        return cos.argmax(1)

    ref_nn = neighbours(ref)
    for name, path in quantized.items():
        t0 = time.perf_counter()
        emb = embed(session(path), tok, sentences)
        cos = np.sum(unit(emb) * unit(ref), -1)
        out[name] = {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                     "nn_agree": float(np.mean(neighbours(emb) == ref_nn)),
                     "eval_seconds": time.perf_counter() - t0}
    return out


# ------------------------------------------------------------------------------ main


def _have_torch() -> bool:
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def _quantize_all(src: Path, out_root: Path, methods: list[str], args: argparse.Namespace,
                  calib: Callable[[], list[np.ndarray]] | None) -> tuple[dict[str, Path],
                                                                         dict[str, Any]]:
    paths: dict[str, Path] = {}
    info: dict[str, Any] = {}
    for m in methods:
        algo, _, _ = _parse(m)
        if algo == "hqq" and not _have_torch():
            log(f"skip {m}: ONNX Runtime's HQQ quantizer needs torch, which this venv lacks")
            info[m] = {"skipped": "needs torch"}
            continue
        if algo == "gptq" and calib is None:
            info[m] = {"skipped": "no calibration data"}
            continue
        dst = out_root / m / "model.onnx"
        if dst.exists() and args.reuse:
            log(f"reuse {dst}")
            paths[m] = dst
            info[m] = {"quantize_seconds": None}
            continue
        log(f"quantize {src.parent.name} -> {m}")
        try:
            secs = quantize(src, dst, m, args.accuracy_level, calib)
        except Exception as e:  # report and go on with the other methods
            log(f"  {m} FAILED: {type(e).__name__}: {e}")
            info[m] = {"skipped": f"{type(e).__name__}: {e}"}
            continue
        log(f"  {secs:.1f} s")
        paths[m] = dst
        info[m] = {"quantize_seconds": secs}
    return paths, info


def markdown(res: dict[str, Any]) -> str:
    """The results tables as Markdown."""
    lines = []
    s = res.get("smollm2")
    if s:
        lines += [f"SmolLM2-135M-Instruct on kjv-eval.txt ({s['predictions']} predicted tokens, "
                  f"{s['windows']} windows of {CONTEXT}):", "",
                  "| model | ppl | mean KL vs fp32 (nats) | top-1 vs fp32 | file MB | bpw "
                  "| bpw (linear layers) | quantize s | eval s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in s["rows"].items():
            if "skipped" in r:
                lines.append(f"| {name} | — (not run: {r['skipped']}) | | | | | | | |")
                continue
            kl = f"{r['kl']:.4f}" if "kl" in r else "—"
            top1 = f"{r['top1'] * 100:.2f}%" if "top1" in r else "—"
            qs = f"{r['quantize_seconds']:.0f}" if r.get("quantize_seconds") else "—"
            lines.append(f"| {name} | {r['ppl']:.3f} | {kl} | {top1} | {r['file_mb']:.1f} | "
                         f"{r['bpw']:.2f} | {r.get('bpw_linear', 0):.2f} | {qs} | "
                         f"{r['eval_seconds']:.0f} |")
        lines.append("")
    m = res.get("minilm")
    if m:
        lines += [f"all-MiniLM-L6-v2 sentence embeddings of {m['sentences']} kjv-eval verses:", "",
                  "| model | mean cosine vs fp32 | min cosine | nearest-neighbour agreement "
                  "| file MB | bpw | bpw (linear layers) |", "|---|---|---|---|---|---|---|"]
        for name, r in m["rows"].items():
            if "skipped" in r:
                lines.append(f"| {name} | — (not run: {r['skipped']}) | | | | | |")
                continue
            if name == "fp32":
                lines.append(f"| fp32 | 1 | 1 | 100% | {r['file_mb']:.1f} | {r['bpw']:.2f} | "
                             f"{r.get('bpw_linear', 0):.2f} |")
                continue
            lines.append(f"| {name} | {r['cos_mean']:.5f} | {r['cos_min']:.4f} | "
                         f"{r['nn_agree'] * 100:.1f}% | {r['file_mb']:.1f} | {r['bpw']:.2f} | "
                         f"{r.get('bpw_linear', 0):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="*", default=SMOL_METHODS,
                    help=f"SmolLM2 methods (default: {' '.join(SMOL_METHODS)})")
    ap.add_argument("--minilm-methods", nargs="*", default=MINILM_METHODS)
    ap.add_argument("--windows", type=int, default=0,
                    help="evaluate only the first N windows (default: all)")
    ap.add_argument("--gptq-samples", type=int, default=8,
                    help="GPTQ calibration windows of 512 tokens from kjv-calib.txt")
    ap.add_argument("--accuracy-level", type=int, default=None,
                    help="MatMulNBits accuracy_level (default: unset = fp32 compute)")
    ap.add_argument("--reuse", action="store_true", help="reuse quantized models already written")
    ap.add_argument("--quantize-only", action="store_true",
                    help="write the quantized models and stop (evaluate later with --reuse)")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    smol, mini, text = model_dir("smollm2-135m"), model_dir("all-minilm-l6-v2"), text_dir()
    for need, cmd in ((smol / "model.onnx", "tools/models/convert_smollm2.py"),
                      (mini / "model.onnx", "tools/models/convert_minilm.py"),
                      (text / "kjv-eval.txt", "tools/models/prepare_text.py")):
        if not need.exists():
            log(f"baselines: {need} is missing; run {cmd} first")
            return 2
    res: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": _cpu_name(), "onnxruntime": ort.__version__,
                    "python": platform.python_version(), "torch": _have_torch()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    t_all = time.perf_counter()

    if not args.skip_smollm2:
        cfg = json.loads((smol / "config.json").read_text())
        import onnx

        fp32_model = onnx.load(str(smol / "model.onnx"))
        n_params = sum(int(np.prod(t.dims)) for t in fp32_model.graph.initializer)
        n_linear = sum(int(np.prod(t.dims)) for t in fp32_model.graph.initializer
                       if _is_linear(t.name))
        del fp32_model
        windows, n_tokens = token_windows(text / "kjv-eval.txt", smol / "tokenizer.json")
        if args.windows:
            windows = windows[:args.windows]

        def calib() -> list[np.ndarray]:
            w, _ = token_windows(text / "kjv-calib.txt", smol / "tokenizer.json")
            step = max(1, len(w) // args.gptq_samples)  # spread over the calibration books
            return w[::step][:args.gptq_samples]

        paths, qinfo = _quantize_all(smol / "model.onnx", model_dir("smollm2-135m-ort"),
                                     args.methods, args, calib)
        if args.quantize_only:
            print(json.dumps(qinfo, indent=2))
            return 0
        log(f"SmolLM2: {len(windows)} windows of {CONTEXT} tokens ({n_tokens} tokens in file)")
        rows = eval_smollm2(smol / "model.onnx", paths, windows)
        table: dict[str, Any] = {}
        for name in ["fp32", *args.methods]:
            r = {**qinfo.get(name, {}), **rows.get(name, {})}
            if name in rows:
                r.update(weight_figures(smol / "model.onnx" if name == "fp32" else paths[name],
                                        n_params, n_linear))
            table[name] = r
        res["smollm2"] = {"params": n_params, "linear_params": n_linear, "tokens": n_tokens,
                          "windows": len(windows), "predictions": len(windows) * (CONTEXT - 1),
                          "rows": table, "config": cfg.get("llmopt_source")}

    if not args.skip_minilm:
        import onnx

        fp32_model = onnx.load(str(mini / "model.onnx"))
        n_params = sum(int(np.prod(t.dims)) for t in fp32_model.graph.initializer)
        n_linear = sum(int(np.prod(t.dims)) for t in fp32_model.graph.initializer
                       if _is_linear(t.name))
        del fp32_model
        sentences = (text / "kjv-eval.txt").read_text(encoding="utf-8").splitlines()
        paths, qinfo = _quantize_all(mini / "model.onnx", model_dir("all-minilm-l6-v2-ort"),
                                     args.minilm_methods, args, None)
        log(f"MiniLM: {len(sentences)} sentences")
        rows = eval_minilm(mini / "model.onnx", paths, sentences, mini / "tokenizer.json")
        table = {}
        for name in ["fp32", *args.minilm_methods]:
            r = {**qinfo.get(name, {}), **rows.get(name, {})}
            if name in rows:
                r.update(weight_figures(mini / "model.onnx" if name == "fp32" else paths[name],
                                        n_params, n_linear))
            table[name] = r
        res["minilm"] = {"params": n_params, "sentences": len(sentences), "rows": table}

    res["total_seconds"] = time.perf_counter() - t_all
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(markdown(res))
    log(f"total {res['total_seconds']:.0f} s")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
