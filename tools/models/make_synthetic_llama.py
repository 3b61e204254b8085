#!/usr/bin/env python3
"""Write a synthetic Llama-shaped ONNX model of a given fp32 size, weights as external data.

    python tools/models/make_synthetic_llama.py --gib 4 -o /tmp/x/model.onnx [--seed 0]

For the scale measurements (bench/peak_rss.py): TinyLlama-1.1B's layer shape (hidden 2048,
GQA 32/4 heads of 64, SwiGLU 5632, vocab 32000, tied embedding) with as many layers as make
the fp32 weights about ``--gib`` GiB (at least one layer). Same graph as
``tools/models/llama_onnx.py`` writes for real models, so llmopt sees what it would see on a
real export. Weights are deterministic (``numpy.random.default_rng([seed, index])`` per
tensor, scaled as gen_tiny_llama.py does) and streamed to ``<model>.data`` one tensor at a
time, so the generator's memory follows the largest tensor, not the model. The free disk
space is checked first (the weights plus 10%).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import onnx_graph  # noqa: E402
from llama_onnx import LlamaConfig, build_model, weight_shapes  # noqa: E402

#: TinyLlama-1.1B's shape; num_layers is set from the requested size.
BASE = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_layers=1,
                   num_heads=32, num_kv_heads=4, head_dim=64, rope_theta=10000.0,
                   rms_norm_eps=1e-5, max_position_embeddings=2048, tie_word_embeddings=True)

ALIGN = 64  # external tensors start on 64-byte boundaries, as llmopt's writer aligns them


def config_for_bytes(target: int) -> LlamaConfig:
    """BASE with the layer count whose fp32 weights come closest to ``target`` bytes."""
    def total(layers: int) -> int:
        shapes = weight_shapes(replace(BASE, num_layers=layers))
        return 4 * sum(int(np.prod(s)) for s in shapes.values())
    per_layer = total(2) - total(1)
    layers = max(1, round((target - (total(1) - per_layer)) / per_layer))
    return replace(BASE, num_layers=layers)


class LazyWeight:
    """A weight generated only when numpy reads it (``np.asarray``); ``.shape`` is free."""

    def __init__(self, name: str, shape: tuple[int, ...], seed: int, index: int) -> None:
        self.name, self.shape, self._seed, self._index = name, shape, seed, index

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rng = np.random.default_rng([self._seed, self._index])
        if self.name.endswith("norm.weight"):
            w = 1.0 + 0.05 * rng.standard_normal(self.shape, dtype=np.float32)
        elif self.name == "model.embed_tokens.weight":
            w = 0.2 * rng.standard_normal(self.shape, dtype=np.float32)
        else:  # Linear [out, in]: N(0, 1/in)
            w = rng.standard_normal(self.shape, dtype=np.float32)
            w *= np.float32(1.0 / np.sqrt(self.shape[1]))
        return w.astype(dtype or np.float32, copy=False)


class StreamingInitializers:
    """Replaces GraphBuilder.initializer: each weight goes straight to the data file."""

    def __init__(self, data_path: Path) -> None:
        self.location = data_path.name
        self.file = open(data_path, "wb")
        self.offset = 0

    def __call__(self, builder: onnx_graph.GraphBuilder, name: str, array: np.ndarray) -> str:
        if name in builder._init_names:
            raise ValueError(f"duplicate initializer {name!r}")
        builder._init_names.add(name)
        a = np.ascontiguousarray(array, dtype=np.float32)
        pad = (-self.offset) % ALIGN
        self.file.write(b"\0" * pad)
        self.offset += pad
        self.file.write(memoryview(a).cast("B"))
        t = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=a.shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(self.offset)),
                           ("length", str(a.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.offset += a.nbytes
        builder.initializers.append(t)
        return name


def write_model(cfg: LlamaConfig, path: Path, seed: int) -> int:
    """Writes ``path`` and ``path.data``; returns the data file's size in bytes."""
    shapes = weight_shapes(cfg)
    weights = {n: LazyWeight(n, s, seed, i) for i, (n, s) in enumerate(shapes.items())}
    sink = StreamingInitializers(path.with_name(path.name + ".data"))
    saved = onnx_graph.GraphBuilder.initializer
    onnx_graph.GraphBuilder.initializer = lambda self, n, a: sink(self, n, a)
    try:
        model = build_model(cfg, weights)
    finally:
        onnx_graph.GraphBuilder.initializer = saved
        sink.file.close()
    onnx.save_model(model, path)
    return sink.offset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, required=True, help="fp32 weight size in GiB (about)")
    ap.add_argument("-o", "--output", required=True, type=Path, help="model file (.onnx)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = config_for_bytes(int(args.gib * (1 << 30)))
    need = 4 * sum(int(np.prod(s)) for s in weight_shapes(cfg).values())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.output.parent).free
    if free < need * 1.1:
        print(f"make_synthetic_llama: {args.output.parent}: {free / 2**30:.1f} GiB free, "
              f"need {need * 1.1 / 2**30:.1f} GiB", file=sys.stderr)
        return 1
    size = write_model(cfg, args.output, args.seed)
    print(f"{args.output}: {cfg.num_layers} layers, {need // 4} parameters, "
          f"{size} bytes of external data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
