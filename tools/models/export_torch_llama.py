#!/usr/bin/python3
"""Check fuse-llm on a graph written by a real exporter: torch.onnx.export of a small
Llama-style module (run by hand, not in CI: CI must not depend on torch).

    /usr/bin/python3 tools/models/export_torch_llama.py [-o DIR] [--layers 2] [--opset 17]
        [--llmopt build-fuse/bin/llmopt] [--python .venv/bin/python]

Needs Debian's python3-torch (`apt-get install python3-torch`, torch 1.13) in the system
python3, and onnxruntime in the `--python` interpreter (the repository's venv). Steps:

1. builds the module below (HF's eager LlamaForCausalLM written out: RMSNorm in f32,
   rotate-half RoPE with cos/sin computed from `inv_freq @ positions`, GQA with repeat_kv
   and a causal `where(k_pos <= q_pos, 0, min)` mask, SwiGLU MLP; random weights, seed 0),
2. exports it with torch.onnx.export (dynamic batch and sequence axes),
3. runs `llmopt OUT.onnx -passes=fuse-llm --report-json` and reads the pass lines,
4. runs the exported and the fused model in ONNX Runtime (the `--python` interpreter, as a
   subprocess) and compares both with torch's logits: max |a - b| / max |b| < 1e-4,
5. checks every instance was found: 2L+1 RMSNorms, L attentions, L SwiGLUs, 2L RoPEs.

Exits non-zero when a check fails. See docs/fusion.md ("A torch.onnx.export graph").
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
REL_TOL = 1e-4


class Config:
    vocab = 256
    hidden = 64
    inter = 192
    heads = 4
    kv_heads = 2
    head_dim = 16
    theta = 10000.0
    eps = 1e-5

    def __init__(self, layers: int) -> None:
        self.layers = layers


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        var = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    b, kv, s, d = x.shape
    if n_rep == 1:
        return x
    x = x[:, :, None, :, :].expand(b, kv, n_rep, s, d)
    return x.reshape(b, kv * n_rep, s, d)


class Attention(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, -1, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, -1, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, -1, c.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, c.heads // c.kv_heads)
        v = repeat_kv(v, c.heads // c.kv_heads)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(c.head_dim)
        w = w + mask
        w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        y = torch.matmul(w, v).transpose(1, 2).contiguous().reshape(b, s, -1)
        return self.o_proj(y)


class Mlp(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.inter, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.inter, bias=False)
        self.down_proj = nn.Linear(cfg.inter, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.eps)
        self.mlp = Mlp(cfg)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Llama(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        inv = 1.0 / (cfg.theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float()
                                   / cfg.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        h = self.embed_tokens(input_ids)
        position_ids = torch.arange(0, s, dtype=torch.int64).unsqueeze(0)
        # HF's LlamaRotaryEmbedding: [1, H/2, 1] @ [1, 1, S] -> [1, S, H/2], duplicated.
        inv = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        freqs = (inv @ position_ids[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        k_pos = torch.arange(0, s, dtype=torch.int64)
        q_pos = torch.arange(0, s, dtype=torch.int64)
        mask = torch.where(k_pos[None, :] <= q_pos[:, None], 0.0, torch.finfo(torch.float32).min)
        mask = mask[None, None, :, :]
        for layer in self.layers:
            h = layer(h, cos, sin, mask)
        return self.lm_head(self.norm(h))


def build(cfg: Config, seed: int) -> Llama:
    torch.manual_seed(seed)
    model = Llama(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.05 * torch.randn_like(p))
            elif name.startswith("embed_tokens"):
                p.copy_(0.2 * torch.randn_like(p))
            else:  # Linear [out, in]: keeps the residual stream O(1)
                gain = 1.5 if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
                p.copy_(gain / math.sqrt(p.shape[1]) * torch.randn_like(p))
    return model


ORT_SCRIPT = r"""
import sys, numpy as np, onnxruntime as ort
ids, want = np.load(sys.argv[1]), np.load(sys.argv[2])
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
for path in sys.argv[3:]:
    got = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids})[0]
    rel = float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())
    print(path, rel)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out-dir", type=Path, default=None, help="where the models go (default: a temp dir)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llmopt", type=Path, default=REPO / "build" / "bin" / "llmopt")
    ap.add_argument("--python", type=Path, default=REPO / ".venv" / "bin" / "python")
    args = ap.parse_args()

    out = args.out_dir or Path(tempfile.mkdtemp(prefix="torch_llama_"))
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config(args.layers)
    model = build(cfg, args.seed)
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, cfg.vocab, size=(2, 11)).astype(np.int64))
    with torch.no_grad():
        logits = model(ids)
    src, fused = out / "torch_llama.onnx", out / "torch_llama.fused.onnx"
    torch.onnx.export(model, (ids,), str(src), input_names=["input_ids"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                    "logits": {0: "batch", 1: "seq"}},
                      opset_version=args.opset, do_constant_folding=True)
    print(f"torch {torch.__version__}: wrote {src} (opset {args.opset}, {cfg.layers} layers)")

    report = out / "report.json"
    proc = subprocess.run([str(args.llmopt), str(src), "-passes=fuse-llm", "--report-json", str(report),
                           "-o", str(fused)], capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        return 1
    lines = json.loads(report.read_text())["passes"]
    for line in lines:
        print("  " + line)

    def count(pass_name: str) -> int:
        for line in lines:
            m = re.match(rf"{pass_name}: (\d+) ", line)
            if m:
                return int(m.group(1))
        return 0

    L = cfg.layers
    want = {"fuse-rmsnorm": 2 * L + 1, "fuse-attention": L, "fuse-swiglu": L, "fuse-rope": 2 * L}
    ok = True
    for p, n in want.items():
        got = count(p)
        print(f"{p}: found {got}, expected {n}{'' if got == n else '  <-- MISSING'}")
        ok &= got == n

    np.save(out / "ids.npy", ids.numpy())
    np.save(out / "logits.npy", logits.numpy())
    proc = subprocess.run([str(args.python), "-c", ORT_SCRIPT, str(out / "ids.npy"), str(out / "logits.npy"),
                           str(src), str(fused)], capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        return 1
    for line in proc.stdout.split("\n"):
        if not line:
            continue
        path, rel = line.rsplit(" ", 1)
        good = float(rel) < REL_TOL
        print(f"ORT {Path(path).name} vs torch logits: max rel diff {float(rel):.2e}"
              f"{'' if good else '  <-- over ' + str(REL_TOL)}")
        ok &= good
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
