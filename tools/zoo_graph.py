"""Small ONNX graph-building helpers shared by the model-zoo builders.

`GraphBuilder` accumulates nodes and initializers and names them the way
``torch.onnx.export`` does: nodes are called ``<scope>/<OpType>`` (with ``_1``,
``_2`` ... appended on repeats), node outputs ``<node name>_output_0`` and
parameters by their dotted module path (``layer1.0.conv1.weight``).  `Scope`
tracks both spellings of a module's position in the model.

All random weights come from one seeded ``numpy.random.default_rng`` and are
drawn directly as float32, so building the same model with the same arguments
gives a byte-identical ``ModelProto``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what torch.onnx emits at opset 17; onnxruntime >= 1.14 loads it
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@dataclass(frozen=True)
class Scope:
    """A module's position: ``node`` is torch's node-name scope, ``param`` the
    dotted state-dict prefix, ``seg`` the last scope segment."""

    node: str = ""
    param: str = ""
    seg: str = ""

    def sub(self, attr: str) -> "Scope":
        """The child module stored as attribute `attr`."""
        return Scope(f"{self.node}/{attr}", _join(self.param, attr), attr)

    def idx(self, i: int) -> "Scope":
        """Element `i` of this module when it is an ``nn.Sequential``."""
        seg = f"{self.seg}.{i}"
        return Scope(f"{self.node}/{seg}", _join(self.param, str(i)), seg)

    def item(self, attr: str, i: int) -> "Scope":
        """Element `i` of the ``nn.ModuleList`` attribute `attr` (no scope of its own)."""
        seg = f"{attr}.{i}"
        return Scope(f"{self.node}/{seg}", _join(self.param, seg), seg)

    def p(self, leaf: str) -> str:
        """The full name of this module's parameter or buffer `leaf`."""
        return _join(self.param, leaf)


class GraphBuilder:
    """Accumulates one ONNX graph; `build` turns it into a ``ModelProto``."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        # Initializers are written straight into the final proto: copying a
        # 400 MB graph through make_graph/make_model would double build time.
        self.model = onnx.ModelProto()
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._values: set[str] = set()
        self._node_names: set[str] = set()

    # -- graph interface -------------------------------------------------
    def add_input(self, name: str, elem_type: int, shape: list[int]) -> str:
        self._claim(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def add_output(self, name: str, elem_type: int, shape: list[int]) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    # -- initializers ----------------------------------------------------
    def param(self, name: str, array: np.ndarray) -> str:
        """Adds `array` as the initializer `name` (names must be unique)."""
        self._claim(name)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        tensor = self.model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.tobytes()
        return name

    def randn(self, name: str, shape, std: float, mean: float = 0.0) -> str:
        arr = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        arr *= np.float32(std)
        if mean:
            arr += np.float32(mean)
        return self.param(name, arr)

    def uniform(self, name: str, shape, low: float, high: float) -> str:
        arr = self.rng.random(tuple(shape), dtype=np.float32)
        arr *= np.float32(high - low)
        arr += np.float32(low)
        return self.param(name, arr)

    # -- nodes -----------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], scope: Scope, *,
           output: str | None = None, **attrs) -> str:
        """Appends one single-output node and returns its output name."""
        name = self._node_name(f"{scope.node}/{op_type}")
        out = output or f"{name}_output_0"
        self._claim(out)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def constant(self, scope: Scope, value, dtype=np.float32) -> str:
        """A torch-style ``Constant`` node holding `value` (a scalar or a list)."""
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        return self.op("Constant", [], scope, value=tensor)

    def build(self, doc: str = "", metadata: dict[str, str] | None = None) -> onnx.ModelProto:
        """Finishes the model; call once."""
        model, graph = self.model, self.model.graph
        graph.name = "main_graph"
        graph.node.extend(self.nodes)
        graph.input.extend(self.inputs)
        graph.output.extend(self.outputs)
        model.ir_version = IR_VERSION
        model.opset_import.append(helper.make_opsetid("", OPSET))
        model.producer_name, model.producer_version = "dsc.tools.zoo", "0.1"
        model.doc_string = doc
        for key, value in sorted((metadata or {}).items()):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
        return model

    # -- helpers ---------------------------------------------------------
    def _claim(self, name: str) -> None:
        if name in self._values:
            raise ValueError(f"duplicate value name {name!r}")
        self._values.add(name)

    def _node_name(self, base: str) -> str:
        name, k = base, 0
        while name in self._node_names:
            k += 1
            name = f"{base}_{k}"
        self._node_names.add(name)
        return name
