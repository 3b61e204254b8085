#!/usr/bin/env python3
"""Writes the malformed-input corpus: models llmopt must refuse with exit 1 and one line.

Every case is built with onnx.helper from a small valid model and then broken in one way,
so each file has exactly one fault. Writes DIR/<case>/... plus DIR/cases.json, a list of
{"name", "model", "args", "expect"}: run `llmopt <model> <args>` and expect exit status 1,
one stderr line containing every string in "expect" and no file at the -o path.

Usage: make_corpus.py DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def weight(name: str, shape, seed: int = 0) -> TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def model(nodes, inputs, outputs, inits=(), opsets=OPSET, name="g") -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(inits))
    return helper.make_model(g, opset_imports=list(opsets), ir_version=8)


def x_in(shape=(1, 8)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def y_out(shape=(1, 8)):
    return helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))


def linear(w: TensorProto | None = None) -> onnx.ModelProto:
    """y = MatMul(x, W) with an 8x8 weight: the valid model most cases break."""
    w = w if w is not None else weight("W", (8, 8))
    return model([helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")], [x_in()], [y_out()], [w])


def external(name: str, location: str, offset: int, length: int, dims=(8, 8)) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims))
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


class Corpus:
    def __init__(self, root: Path):
        self.root = root
        self.cases: list[dict] = []

    def add(self, name: str, m: onnx.ModelProto | bytes, expect: list[str], args=None,
            files: dict[str, bytes] | None = None, suffix=".onnx") -> None:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        path = d / ("model" + suffix)
        path.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
        for rel, data in (files or {}).items():
            (d / rel).write_bytes(data)
        self.cases.append({"name": name, "model": str(path.relative_to(self.root)),
                           "args": args or [], "expect": expect})


def build(c: Corpus) -> None:
    good = linear().SerializeToString()
    # File-level damage.
    c.add("truncated-protobuf", good[: len(good) // 2], ["truncated or corrupt"])
    c.add("truncated-header", good[:3], ["truncated or corrupt"])
    c.add("empty-file", b"", ["file is empty"])
    c.add("not-onnx", b"this is a text file, not a model\n", ["not a valid ONNX protobuf"])

    # External data: the weight W lives in w.data (256 bytes).
    data = np.arange(64, dtype=np.float32).tobytes()
    c.add("external-offset", linear(external("W", "w.data", 4096, 256)), ["tensor 'W'", "offset 4096"],
          files={"w.data": data})
    c.add("external-length", linear(external("W", "w.data", 0, 100)), ["tensor 'W'", "length 100"],
          files={"w.data": data})
    c.add("external-short-file", linear(external("W", "w.data", 128, 256)), ["tensor 'W'", "does not fit"],
          files={"w.data": data})
    c.add("external-escape", linear(external("W", "../../etc/passwd", 0, 256)),
          ["tensor 'W'", "../../etc/passwd", "escapes the model's directory"])
    c.add("external-absolute", linear(external("W", "/etc/passwd", 0, 256)),
          ["tensor 'W'", "/etc/passwd", "must be a relative path"])
    c.add("external-missing", linear(external("W", "absent.data", 0, 256)), ["tensor 'W'", "absent.data"])

    # Graph structure.
    relu = lambda i, o, n: helper.make_node("Relu", [i], [o], name=n)  # noqa: E731
    add = helper.make_node("Add", ["x", "b"], ["a"], name="add_a")
    c.add("cyclic-graph", model([add, relu("a", "b", "relu_b"), relu("a", "y", "relu_y")],
                                [x_in()], [y_out()]), ["cycle", "node '"])
    c.add("dangling-input", model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")],
                                  [x_in()], [y_out()]),
          ["node 'add_ghost'", "input 'ghost' is not defined"])
    c.add("dangling-output", model([relu("x", "y", "relu")], [x_in()],
                                   [y_out(), helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])]),
          ["output 'z' is not produced"])
    c.add("duplicate-node-output", model([relu("x", "y", "first"), relu("x", "y", "second")],
                                         [x_in()], [y_out()]),
          ["'y' is produced by two nodes", "first", "second"])
    c.add("duplicate-initializer",
          model([helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")], [x_in()], [y_out()],
                [weight("W", (8, 8)), weight("W", (8, 8), 1)]),
          ["initializer 'W' is defined twice"])
    c.add("duplicate-input", model([relu("x", "y", "relu")], [x_in(), x_in()], [y_out()]),
          ["input 'x' is declared twice"])
    c.add("duplicate-attribute",
          model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=1)], [x_in()], [y_out()]),
          ["node 'sm'", "attribute 'axis' appears twice"])
    sm = c.cases[-1]
    # Duplicate attributes cannot be made through make_node's keywords: append a second one.
    m = onnx.load_from_string((c.root / sm["model"]).read_bytes())
    m.graph.node[0].attribute.append(helper.make_attribute("axis", 0))
    (c.root / sm["model"]).write_bytes(m.SerializeToString())

    # Types and shapes.
    short = numpy_helper.from_array(np.zeros((8, 8), np.float32), "W")
    short.raw_data = short.raw_data[:100]
    c.add("initializer-size-mismatch", linear(short), ["tensor 'W'"])
    mm = helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")
    c.add("shape-mismatch", model([mm], [x_in()], [y_out()], [weight("W", (5, 8))]),
          ["node 'proj'", "MatMul"], args=["-passes=infer-shapes"])
    c.add("type-mismatch",
          model([helper.make_node("Add", ["x", "k"], ["y"], name="add_k")], [x_in()], [y_out()],
                [numpy_helper.from_array(np.ones((1, 8), np.int64), "k")]),
          ["node 'add_k'", "Add"], args=["-passes=infer-shapes"])
    c.add("unknown-elem-type", model([relu("x", "y", "relu")],
                                     [helper.make_tensor_value_info("x", 77, [1, 8])], [y_out()]),
          ["input 'x'", "unknown element type code 77"])
    c.add("opset-missing",
          model([helper.make_node("Mystery", ["x"], ["y"], name="m", domain="com.example")],
                [x_in()], [y_out()]),
          ["node 'm'", "com.example", "no opset import"])

    # Ops llmopt cannot run or that do not exist.
    c.add("unknown-onnx-op",
          model([helper.make_node("FlyToTheMoon", ["x"], ["y"], name="moon")], [x_in()], [y_out()]),
          ["node 'moon'", "FlyToTheMoon", "unsupported op"])
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seq", 32])
    lm = model([helper.make_node("Gather", ["E", "input_ids"], ["h"], name="embed"),
                helper.make_node("Mystery", ["h"], ["h2"], name="mystery", domain="com.example"),
                helper.make_node("MatMul", ["h2", "W"], ["logits"], name="lm_head")],
               [ids], [logits], [weight("E", (16, 32)), weight("W", (32, 32), 1)],  # quant-int4 skips K or N < 16
               opsets=OPSET + [helper.make_opsetid("com.example", 1)])
    c.add("unsupported-op-calibration", lm, ["unsupported op", "com.example", "mystery"],
          args=["-passes=quant-int4<method=gptq>", "--calib", "{dir}/ids.ids", "--calib-samples", "2",
                "--calib-seqlen", "4"],
          files={"ids.ids": b"1 2 3 4 5 6 7 8 9 10\n"})

    # Weights.
    for name, bad in (("nan-weight", math.nan), ("inf-weight", math.inf)):
        w = np.ones((8, 8), np.float32)
        w[3, 5] = bad
        c.add(name, linear(numpy_helper.from_array(w, "W")),
              ["tensor 'W'", "nan" if math.isnan(bad) else "inf", "[3, 5]"])
    w16 = np.ones((8, 8), np.float16)
    w16[0, 1] = -np.inf
    c.add("inf-weight-f16", model([helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")],
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 8])],
                                  [numpy_helper.from_array(w16, "W")]),
          ["tensor 'W'", "inf", "[0, 1]"])

    # Sizes.
    c.add("huge-declared-dim", model([relu("x", "y", "relu")], [x_in((1, 1 << 50))], [y_out()]),
          ["'x'", "out of range"])
    huge = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1 << 31, 1 << 31])
    c.add("huge-initializer", linear(huge), ["tensor 'W'"])
    over = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1 << 62, 1 << 62])
    c.add("overflowing-initializer", linear(over), ["tensor 'W'"])
    c.add("negative-dim", model([relu("x", "y", "relu")], [x_in((1, -3))], [y_out()]),
          ["input 'x'", "negative dimension -3"])

    # Empty.
    c.add("empty-graph", model([], [], []), ["graph 'g'", "no outputs"])
    no_graph = onnx.ModelProto(ir_version=8)
    no_graph.opset_import.add().version = 17
    c.add("no-graph", no_graph, ["model has no graph"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    root = ap.parse_args().dir
    root.mkdir(parents=True, exist_ok=True)
    c = Corpus(root)
    build(c)
    (root / "cases.json").write_text(json.dumps(c.cases, indent=1) + "\n")
    print(f"wrote {len(c.cases)} cases to {os.fspath(root)}")


if __name__ == "__main__":
    main()
