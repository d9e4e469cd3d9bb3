"""ONNX → graph dialect: loading, checking, and the walk over nodes.

Each ONNX op type has one converter, registered with `@converter("OpType")`
in a file of its family (elementwise.py, nn.py, shape.py, ...). A converter
receives a `NodeBuilder` and returns one SSA value per node output.

The importer keeps shapes static: graph inputs need concrete dimensions
(or `input_shapes` overrides), and anything computed only from constants
(the Shape → Gather → Concat → Reshape chains torch exports) is evaluated at
import with the reference evaluator and becomes a `graph.constant`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Region, SSAValue
from xdsl.utils.exceptions import VerifyException

from dsc.dialects import graph as g
from dsc.dialects.tensor_types import Sig, name_loc, sanitize_key, sig_of, tensor_type, type_str
from dsc.runtime.errors import DscError, ModelError, ShapeError, UnsupportedOpError

Converter = Callable[["NodeBuilder"], Sequence[SSAValue | None] | SSAValue]
CONVERTERS: dict[str, Converter] = {}
# Results up to this many elements are computed at import when all operands are constant.
FOLD_LIMIT = 1 << 16


def converter(*op_types: str):
    """Register the converter of one or more ONNX op types (default domain)."""

    def register(fn: Converter) -> Converter:
        for t in op_types:
            CONVERTERS[t] = fn
        return fn

    return register


def supported_ops() -> set[str]:
    _load_converters()
    return set(CONVERTERS)


def _load_converters() -> None:
    from dsc.frontends.onnx import elementwise, nn, reduce, shape, tensor  # noqa: F401


class NodeBuilder:
    """What a converter sees: the node, its inputs as SSA values, and emit()."""

    def __init__(self, imp: Importer, node: onnx.NodeProto, index: int):
        self.imp = imp
        self.node = node
        self.op_type = node.op_type
        self.name = node.name or f"{node.op_type}_{index}"
        self.opset = imp.opset
        self._attrs = {a.name: a for a in node.attribute}

    # -- inputs
    @property
    def num_inputs(self) -> int:
        return len(self.node.input)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def input(self, i: int) -> SSAValue:
        if not self.has_input(i):
            raise self.error(f"input {i} is required")
        return self.imp.value(self.node.input[i], self)

    def inputs(self) -> list[SSAValue]:
        return [self.input(i) for i in range(self.num_inputs) if self.has_input(i)]

    def opt_input(self, i: int) -> SSAValue | None:
        return self.input(i) if self.has_input(i) else None

    def sig(self, i: int) -> Sig:
        return sig_of(self.input(i).type)

    def maybe_const(self, i: int) -> np.ndarray | None:
        """The value of input i if it is a constant (after import-time folding)."""
        if not self.has_input(i):
            return None
        v = self.input(i)
        return v.owner.array if isinstance(v.owner, g.ConstantOp) else None

    def const(self, i: int, what: str = "") -> np.ndarray:
        arr = self.maybe_const(i)
        if arr is None:
            raise self.error(
                f"input {i}{' (' + what + ')' if what else ''} must be a constant for dsc to know shapes statically",
                hint="export the model with fixed input shapes, or pass --input-shape",
                cls=UnsupportedOpError,
            )
        return arr

    # -- attributes
    def attr(self, name: str, default=None):
        a = self._attrs.get(name)
        if a is None:
            return default
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, onnx.TensorProto):
            return numpy_helper.to_array(v)
        if isinstance(v, list) and v and isinstance(v[0], bytes):
            return [x.decode() for x in v]
        return v

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    # -- output
    def emit(self, op_cls: type[g.GraphOp], operands: Sequence[SSAValue], result_types=None, **attrs) -> SSAValue:
        """Create, place and (if all operands are constant and small) fold an op."""
        try:
            op = op_cls.make(operands, result_types=result_types, **attrs)
        except (VerifyException, ValueError, KeyError) as e:
            shapes = ", ".join(type_str(v.type) for v in operands)
            raise self.error(f"cannot build {op_cls.name} from operands ({shapes}): {e}", cls=ShapeError) from None
        op.location = name_loc(self.name)
        return self.imp.insert(op)

    def constant(self, array: np.ndarray, hint: str | None = None) -> SSAValue:
        return self.imp.constant(np.asarray(array), hint or f"{self.name}_cst")

    def error(self, msg: str, hint: str | None = None, cls: type[DscError] = ModelError) -> DscError:
        return cls(f"{self.imp.source}: node '{self.name}' ({self.op_type}): {msg}", hint=hint)


class Importer:
    def __init__(self, model: onnx.ModelProto, source: str, input_shapes: Mapping[str, Sequence[int]] | None):
        self.model = model
        self.source = source
        self.input_shapes = dict(input_shapes or {})
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.values: dict[str, SSAValue] = {}
        self.block: Block | None = None
        self._keys: set[str] = set()

    def value(self, name: str, nb: NodeBuilder | None = None) -> SSAValue:
        if name not in self.values:
            where = f"node '{nb.name}' ({nb.op_type})" if nb else "the graph outputs"
            raise ModelError(f"{self.source}: {where} uses '{name}', which no node, input or initializer defines", hint="the model is malformed; re-export it")
        return self.values[name]

    def fresh_key(self, hint: str) -> str:
        key = base = sanitize_key(hint)
        n = 0
        while key in self._keys:
            n += 1
            key = f"{base}_{n}"
        self._keys.add(key)
        return key

    def constant(self, array: np.ndarray, hint: str) -> SSAValue:
        op = g.ConstantOp.from_array(array, self.fresh_key(hint))
        self.block.add_op(op)
        return op.result

    def insert(self, op: g.GraphOp) -> SSAValue:
        if (
            all(isinstance(o.owner, g.ConstantOp) for o in op.operands)
            and all(sig_of(r.type).dtype != np.dtype("O") for r in op.results)
            and sum(int(np.prod(sig_of(r.type).shape)) for r in op.results) <= FOLD_LIMIT
        ):
            from dsc.reference.evaluator import evaluate_op
            from dsc.reference import kernels as _  # noqa: F401

            outs = evaluate_op(op, [o.owner.array for o in op.operands])
            return self.constant(outs[0], f"{op.name.split('.')[-1]}")
        self.block.add_op(op)
        return op.results[0]

    # -- the walk
    def run(self) -> ModuleOp:
        graph = self.model.graph
        _load_converters()
        unsupported: dict[str, list[str]] = {}
        for i, n in enumerate(graph.node):
            if n.domain not in ("", "ai.onnx") or n.op_type not in CONVERTERS:
                key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                unsupported.setdefault(key, []).append(n.name or f"#{i}")
        if unsupported:
            lines = "; ".join(f"{t} (nodes: {', '.join(ns[:5])}{', ...' if len(ns) > 5 else ''})" for t, ns in sorted(unsupported.items()))
            raise UnsupportedOpError(
                f"{self.source}: {len(unsupported)} unsupported op type(s): {lines}",
                hint="`dsc check MODEL` lists what dsc supports; file an issue for the missing ops",
            )
        inits = {t.name: t for t in graph.initializer}
        arg_types, arg_names = [], []
        for vi in graph.input:
            if vi.name in inits:
                continue
            arg_types.append(self._input_type(vi))
            arg_names.append(vi.name)
        self.block = Block(arg_types=arg_types)
        for name, arg in zip(arg_names, self.block.args):
            self.values[name] = arg
        for name, t in inits.items():
            try:
                arr = numpy_helper.to_array(t, base_dir=os.path.dirname(self.source) if os.path.exists(self.source) else "")
            except Exception as e:
                raise ModelError(f"{self.source}: initializer '{name}' cannot be read: {e}", hint="keep external data files next to the model") from None
            self.values[name] = self.constant(arr, name)
        for i, node in enumerate(graph.node):
            self._convert(node, i)
        outs = [self.value(o.name) for o in graph.output]
        self.block.add_op(func.ReturnOp(*outs))
        ftype = (arg_types, [v.type for v in outs])
        f = func.FuncOp("main", ftype, Region(self.block))
        f.arg_attrs = ArrayAttr([DictionaryAttr({"dsc.name": StringAttr(n)}) for n in arg_names])
        f.res_attrs = ArrayAttr([DictionaryAttr({"dsc.name": StringAttr(o.name)}) for o in graph.output])
        module = ModuleOp([f])
        try:
            module.verify()
        except VerifyException as e:
            raise ModelError(f"{self.source}: the imported IR does not verify: {e}") from None
        return module

    def _input_type(self, vi: onnx.ValueInfoProto):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise UnsupportedOpError(f"{self.source}: input '{vi.name}' is not a tensor (sequences and maps are not supported)")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if vi.name in self.input_shapes:
            shape = tuple(int(d) for d in self.input_shapes[vi.name])
        else:
            if not tt.HasField("shape"):
                raise ShapeError(f"{self.source}: input '{vi.name}' has no declared shape", hint=f"pass --input-shape {vi.name}=D0xD1x...")
            shape = []
            for ax, d in enumerate(tt.shape.dim):
                if not d.HasField("dim_value") or d.dim_value < 0:
                    sym = d.dim_param or "?"
                    raise ShapeError(
                        f"{self.source}: input '{vi.name}' has a symbolic dimension '{sym}' at axis {ax}; dsc compiles static shapes",
                        hint=f"pass --input-shape {vi.name}=" + "x".join(str(x.dim_value) if x.HasField("dim_value") else "N" for x in tt.shape.dim),
                    )
                shape.append(d.dim_value)
        return tensor_type(shape, dtype)

    def _convert(self, node: onnx.NodeProto, index: int) -> None:
        nb = NodeBuilder(self, node, index)
        try:
            res = CONVERTERS[node.op_type](nb)
        except DscError:
            raise
        except Exception as e:  # a converter bug: still name the node
            raise nb.error(f"import failed: {type(e).__name__}: {e}") from e
        if isinstance(res, SSAValue):
            res = [res]
        res = list(res)
        for name, v in zip(node.output, res):
            if name and v is not None:
                self.values[name] = v
        for name in node.output[len(res) :]:
            if name:
                raise nb.error(f"output '{name}' is not produced by dsc's converter", cls=UnsupportedOpError)


def load_model(path_or_model) -> tuple[onnx.ModelProto, str]:
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, path_or_model.graph.name or "<model>"
    path = os.fspath(path_or_model)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file", hint="check the path to the .onnx model")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})", hint="the file may be truncated or not ONNX; re-export or re-download it") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(f"{path}: the file holds no ONNX graph", hint="the file may be truncated or not an ONNX model")
    return model, path


def import_onnx(path_or_model, *, input_shapes: Mapping[str, Sequence[int]] | None = None) -> ModuleOp:
    """Import an ONNX model (a path or ModelProto) into a graph-dialect module."""
    model, source = load_model(path_or_model)
    try:
        from onnx import external_data_helper

        if os.path.exists(source):
            external_data_helper.load_external_data_for_model(model, os.path.dirname(source))
    except Exception as e:
        raise ModelError(f"{source}: external weight data cannot be loaded: {e}") from None
    return Importer(model, source, input_shapes).run()
