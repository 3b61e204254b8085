"""Small helpers shared by the model builders: a torch-export-style graph builder and a saver.

The builders in this directory write ONNX the way ``torch.onnx.export`` (TorchScript
exporter) does for Hugging Face models: node names are module scopes plus the op type
(``/model/layers.0/self_attn/q_proj/MatMul``, then ``..._1``, ``..._2`` on repeats), node
outputs are ``<node name>_output_<k>``, small scalars and shape pieces are ``Constant``
nodes, and weights are initializers named after the state dict.

Only ``onnx.helper`` / ``onnx.numpy_helper`` are used (no torch). Models are written at
IR version 8 and opset 17 (default domain only), which is what libonnx 1.12 reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: IR version and opset every builder here writes (libonnx 1.12 reads IR <= 8, opset <= 17).
IR_VERSION = 8
OPSET = 17

#: Above this many bytes of initializers, :func:`save_model` writes weights as external data
#: (protobuf cannot serialize a message over 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

#: The value exporters use for masked attention scores (``torch.finfo(torch.float32).min``).
MASK_MIN = float(np.finfo(np.float32).min)

#: ``INT64_MAX``: the ``end`` torch writes for an open-ended slice such as ``x[..., n:]``.
INT64_MAX = int(np.iinfo(np.int64).max)

_NUMPY_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}


def onnx_dtype(dtype: np.dtype | type) -> int:
    """The ``TensorProto`` element type for a NumPy dtype."""
    return _NUMPY_TO_ONNX[np.dtype(dtype)]


class GraphBuilder:
    """Accumulates nodes and initializers, naming them the way the torch exporter does."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._init_names: set[str] = set()

    def _node_name(self, scope: str, op_type: str) -> str:
        key = (scope, op_type)
        k = self._counts.get(key, 0)
        self._counts[key] = k + 1
        return f"{scope}/{op_type}" + (f"_{k}" if k else "")

    def op(
        self,
        scope: str,
        op_type: str,
        inputs: Sequence[str],
        *,
        outputs: Sequence[str] | None = None,
        **attrs: Any,
    ) -> str:
        """Add one single-output node under ``scope``; returns its output name.

        ``outputs`` overrides the generated output name (for graph outputs such as ``logits``).
        """
        name = self._node_name(scope, op_type)
        outs = list(outputs) if outputs is not None else [f"{name}_output_0"]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0]

    def const(self, scope: str, value: Any, dtype: np.dtype | type) -> str:
        """Add a ``Constant`` node holding ``value`` (scalar or array) as ``dtype``."""
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        return self.op(scope, "Constant", [], value=tensor)

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add a weight initializer (stored as raw little-endian data); returns its name."""
        if name in self._init_names:
            raise ValueError(f"duplicate initializer {name!r}")
        self._init_names.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name=name))
        return name

    def add_input(self, name: str, dtype: np.dtype | type, shape: Sequence[int | str]) -> str:
        """Declare a graph input; string dims are symbolic (``dim_param``)."""
        self.inputs.append(helper.make_tensor_value_info(name, onnx_dtype(dtype), list(shape)))
        return name

    def add_output(self, name: str, dtype: np.dtype | type, shape: Sequence[int | str]) -> None:
        """Declare a graph output; string dims are symbolic (``dim_param``)."""
        self.outputs.append(helper.make_tensor_value_info(name, onnx_dtype(dtype), list(shape)))

    # Shape plumbing the way torch exports ``x.size(i)`` with dynamic axes.
    def dim(self, scope: str, shape: str, index: int) -> str:
        """``Unsqueeze(Gather(shape, index), [0])``: one dimension of a ``Shape`` as a 1-D tensor."""
        d = self.op(scope, "Gather", [shape, self.const(scope, index, np.int64)], axis=0)
        return self.op(scope, "Unsqueeze", [d, self.const(scope, [0], np.int64)])

    def make_model(
        self, graph_name: str, metadata: dict[str, str] | None = None, doc: str = ""
    ) -> onnx.ModelProto:
        """Assemble the ModelProto at :data:`IR_VERSION` / :data:`OPSET`."""
        graph = helper.make_graph(
            self.nodes, graph_name, self.inputs, self.outputs, initializer=self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="llmopt-tools",
            producer_version="0.1",
            doc_string=doc,
        )
        for key, value in sorted((metadata or {}).items()):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        return model


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Total bytes of the model's (in-memory) initializers."""
    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        total += n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return total


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str],
               external_data: bool | None = None) -> None:
    """Write ``model`` to ``path`` atomically (temp file + rename).

    ``external_data``: ``True`` writes weights to ``<name>.data`` beside the model, ``False``
    keeps them inline, ``None`` (default) chooses external data above
    :data:`EXTERNAL_DATA_THRESHOLD` bytes. With external data the ModelProto is modified in
    place (its tensors now point at the file), as ``onnx.save_model`` does.
    """
    path = Path(path)
    if external_data is None:
        external_data = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if external_data:
        location = path.name + ".data"
        data_path = path.with_name(location)
        # onnx appends to an existing data file; start from an empty one.
        data_path.unlink(missing_ok=True)
        onnx.save_model(model, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=1024, convert_attribute=False)
    else:
        onnx.save_model(model, tmp)
    os.replace(tmp, path)
