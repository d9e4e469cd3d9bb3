"""`onnx.backend.base.Backend`s over dsc, so onnx's own backend test suite runs on it.

`DscBackend` imports the model and evaluates it with the reference evaluator
(the `reference` target). `DscCompiledBackend` compiles it for the host
(the whole pipeline, llvmlite code generation, the .dsc artifact) and runs it
with the runtime, exactly as a user would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep

from dsc.frontends.onnx import import_onnx
from dsc.reference import run_module
from dsc.runtime.errors import UnsupportedOpError


# ops all of whose operands describe shapes (others: every operand but the first may)
_ALL_STATIC = {"Range", "ConstantOfShape"}


def _shape_operands(model: onnx.ModelProto) -> set[str]:
    names: set[str] = set()
    for n in model.graph.node:
        names.update(n.input if n.op_type in _ALL_STATIC else n.input[1:])
    return names


def _input_names(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


class DscRep(BackendRep):
    """Runs a prepared model. dsc compiles static shapes: a model whose shape operands
    (Reshape's shape, Slice's starts, ...) are graph inputs is specialized at run time,
    those inputs becoming constants with this run's values."""

    def __init__(self, model: onnx.ModelProto, compiled: bool):
        self.model = model
        self.compiled = compiled
        self.names = _input_names(model)
        self.static: set[str] = set()
        try:
            self.runner = self._build(model)
        except UnsupportedOpError as e:
            if not re.search(r"must be (a )?constant", str(e)):
                raise
            self.runner = None
            self.static = _shape_operands(model) & set(self.names)

    def _build(self, model: onnx.ModelProto):
        if self.compiled:
            import dsc.runtime
            from dsc.driver import compile as dsc_compile

            sess = dsc.runtime.load(dsc_compile(model, "host"), num_threads=2)
            return lambda feeds: sess.run(None, feeds)
        module = import_onnx(model)
        return lambda feeds: run_module(module, feeds)

    def run(self, inputs, **kwargs) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        feeds = dict(inputs) if isinstance(inputs, dict) else dict(zip(self.names, inputs))
        runner = self.runner
        if runner is None:
            frozen = onnx.ModelProto.FromString(self.model.SerializeToString())
            frozen.graph.initializer.extend(numpy_helper.from_array(np.asarray(feeds[n]), n) for n in self.static)
            runner = self._build(frozen)
            feeds = {k: v for k, v in feeds.items() if k not in self.static}
        return tuple(runner(feeds))


class DscBackend(Backend):
    """Reference path: import + NumPy evaluation."""

    compiled = False

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> bool:
        return device == "CPU"

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> BackendRep:
        super().prepare(model, device, **kwargs)
        return DscRep(model, cls.compiled)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Sequence[np.ndarray], device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)


class DscCompiledBackend(DscBackend):
    """Compiled path: pipeline, llvmlite code for the host, artifact, runtime."""

    compiled = True


prepare = DscBackend.prepare
run_model = DscBackend.run_model
supports_device = DscBackend.supports_device
