"""Fine-tune a student on a teacher's soft labels with the KD loss (an example; not in CI).

Runs under Debian's /usr/bin/python3 with python3-torch (1.13) and NumPy; the model's weights
come in and go out as .npz (tools/distill/onnx_npz.py moves them to and from ONNX with the
project's .venv). The student is a Llama in the form tools/models/llama_onnx.py writes
(weights ``[in, out]`` under Hugging Face names, tied embedding), as distill-student or
prune-struct leave it: layers may be missing (``model.layers.0, 2, 4``) and heads / MLP
channels fewer; the sizes are read from the weights, RoPE and the norm epsilon from
``config.json``.

Loss per position (the soft-label file, docs/formats.md: top-k ids and teacher log-probs at
temperature T):  T^2 * sum_k p_t(k) * (log p_t(k) - log q_s(k)),  q_s = softmax(z_s / T)
over the whole vocabulary; the teacher mass outside the top-k is left out. The embedding /
LM head stays frozen (tied, and most of the parameters); everything else trains with AdamW.

    S=~/.cache/llmopt/models/smollm2-135m
    llmopt $S/model.onnx -passes='distill-targets<topk=32;temperature=2;out=t.soft>' \\
        --calib kjv-calib.txt --tokenizer $S/tokenizer.json
    llmopt $S/model.onnx -passes='distill-student<ratio=0.5>' -o student.onnx
    .venv/bin/python tools/distill/onnx_npz.py export student.onnx student.npz
    /usr/bin/python3 tools/distill/train_kd.py student.npz t.soft --config $S/config.json \\
        --steps 60 --seq 128 -o student.kd.npz
    .venv/bin/python tools/distill/onnx_npz.py import student.onnx student.kd.npz student.kd.onnx
    llmopt-eval student.onnx student.kd.onnx --ppl kjv-eval.txt --tokenizer $S/tokenizer.json \\
        --reference $S/model.onnx          # KL to the teacher on held-out text
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import softlabels  # noqa: E402


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Llama(torch.nn.Module):
    """The decoder llama_onnx.py writes, sizes read from the weights (pruned or not)."""

    def __init__(self, weights: dict[str, np.ndarray], cfg: dict):
        super().__init__()
        self.eps = float(cfg.get("rms_norm_eps", 1e-5))
        self.head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
        self.theta = float(cfg.get("rope_theta", 10000.0))
        self.params = torch.nn.ParameterDict()
        for name, a in weights.items():
            frozen = name == "model.embed_tokens.weight"
            self.params[name.replace(".", "__")] = torch.nn.Parameter(
                torch.tensor(np.ascontiguousarray(a, dtype=np.float32)), requires_grad=not frozen)
        self.layers = sorted({int(m.group(1)) for n in weights
                              if (m := re.match(r"model\.layers\.(\d+)\.", n))})

    def w(self, name: str) -> torch.Tensor:
        return self.params[name.replace(".", "__")]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        b, s = ids.shape
        d = self.head_dim
        inv = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        f = torch.arange(s, dtype=torch.float32)[:, None] * inv[None]
        emb = torch.cat([f, f], dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = torch.full((s, s), float("-inf")).triu(1)
        h = self.w("model.embed_tokens.weight")[ids]
        for i in self.layers:
            p = f"model.layers.{i}."
            x = rms_norm(h, self.w(p + "input_layernorm.weight"), self.eps)
            q, k, v = (x @ self.w(p + f"self_attn.{n}_proj.weight") for n in "qkv")
            nh, kvh = q.shape[-1] // d, k.shape[-1] // d
            q = q.view(b, s, nh, d).transpose(1, 2)
            k = k.view(b, s, kvh, d).transpose(1, 2)
            v = v.view(b, s, kvh, d).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = k.repeat_interleave(nh // kvh, dim=1), v.repeat_interleave(nh // kvh, dim=1)
            att = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5 + mask, dim=-1)
            h = h + (att @ v).transpose(1, 2).reshape(b, s, nh * d) @ self.w(p + "self_attn.o_proj.weight")
            x = rms_norm(h, self.w(p + "post_attention_layernorm.weight"), self.eps)
            g = x @ self.w(p + "mlp.gate_proj.weight")
            h = h + (torch.nn.functional.silu(g) * (x @ self.w(p + "mlp.up_proj.weight"))) @ self.w(
                p + "mlp.down_proj.weight")
        h = rms_norm(h, self.w("model.norm.weight"), self.eps)
        return h @ self.w("model.embed_tokens.weight").T


def kd_loss(logits: torch.Tensor, ids: torch.Tensor, logp: torch.Tensor, t: float) -> torch.Tensor:
    """Mean over positions of T^2 * KL(teacher top-k || student) at temperature T."""
    q = torch.log_softmax(logits / t, dim=-1).gather(-1, ids)
    p = logp.exp()
    return (t * t) * (p * (logp - q)).sum(-1).mean()


def chunks(sl: softlabels.SoftLabels, seq: int) -> list[np.ndarray]:
    """Consecutive runs of `seq` records inside one window (a chunk restarts its context)."""
    out = []
    for w in sl.windows():
        for i in range(0, len(w) - seq + 1, seq):
            out.append(np.asarray(w[i:i + seq]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("student", type=Path, help="student weights (.npz from onnx_npz.py export)")
    ap.add_argument("soft", type=Path, help="soft-label file from distill-targets")
    ap.add_argument("--config", type=Path, required=True, help="the teacher's config.json")
    ap.add_argument("-o", "--out", type=Path, required=True, help="trained weights (.npz)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seq", type=int, default=128, help="tokens per step")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    sl = softlabels.read(a.soft)
    t = float(sl.header["temperature"])
    data = chunks(sl, a.seq)
    if not data:
        sys.exit(f"{a.soft}: no window has {a.seq} positions")
    weights = dict(np.load(a.student))
    model = Llama(weights, json.loads(a.config.read_text()))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
    order = np.random.RandomState(a.seed).permutation(len(data))
    start = time.time()
    for step in range(a.steps):
        c = data[order[step % len(order)]]
        logits = model(torch.tensor(c["token"].astype(np.int64))[None])[0]
        loss = kd_loss(logits, torch.tensor(c["ids"].astype(np.int64)), torch.tensor(c["logp"]), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step + 1}/{a.steps}  kd loss {loss.item():.4f}  {time.time() - start:.0f} s", flush=True)
    out = {n: model.w(n).detach().numpy() for n in weights}
    np.savez(a.out, **out)
    print(f"wrote {a.out} ({a.steps} steps of {a.seq} tokens, T={t:g}, {time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
