"""`onnx.backend.base.Backend`s over dsc, so onnx's own backend test suite runs on it.

`DscBackend` imports the model and evaluates it with the reference evaluator
(the `reference` target). `DscCompiledBackend` compiles it for the host
(the whole pipeline, llvmlite code generation, the .dsc artifact) and runs it
with the runtime, exactly as a user would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from dsc.frontends.onnx import import_onnx
from dsc.reference import run_module


def _n_inputs(model: onnx.ModelProto) -> int:
    inits = {t.name for t in model.graph.initializer}
    return sum(1 for i in model.graph.input if i.name not in inits)


class DscBackendRep(BackendRep):
    def __init__(self, module, n_inputs: int):
        self.module = module
        self.n_inputs = n_inputs

    def run(self, inputs, **kwargs) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if isinstance(inputs, dict):
            return tuple(run_module(self.module, inputs))
        return tuple(run_module(self.module, list(inputs)[: self.n_inputs]))


class DscCompiledRep(BackendRep):
    def __init__(self, session):
        self.session = session
        self.names = [a.name for a in session.get_inputs()]

    def run(self, inputs, **kwargs) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        feeds = dict(inputs) if isinstance(inputs, dict) else dict(zip(self.names, inputs))
        return tuple(self.session.run(None, feeds))


class DscBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> bool:
        return device == "CPU"

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> BackendRep:
        super().prepare(model, device, **kwargs)
        return DscBackendRep(import_onnx(model), _n_inputs(model))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Sequence[np.ndarray], device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)


class DscCompiledBackend(DscBackend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> BackendRep:
        import dsc.runtime
        from dsc.driver import compile as dsc_compile

        Backend.prepare(model, device, **kwargs)
        return DscCompiledRep(dsc.runtime.load(dsc_compile(model, "host"), num_threads=2))


prepare = DscBackend.prepare
run_model = DscBackend.run_model
supports_device = DscBackend.supports_device
