"""An `onnx.backend.base.Backend` over dsc, so onnx's own backend test suite runs on it.

`prepare` imports the model into the graph dialect; `run` evaluates it with
the reference evaluator (the `reference` target). Later targets plug in here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from dsc.frontends.onnx import import_onnx
from dsc.reference import run_module


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


class DscBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> bool:
        return device == "CPU"

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> DscBackendRep:
        super().prepare(model, device, **kwargs)
        module = import_onnx(model)
        inits = {t.name for t in model.graph.initializer}
        n = sum(1 for i in model.graph.input if i.name not in inits)
        return DscBackendRep(module, n)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Sequence[np.ndarray], device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)


prepare = DscBackend.prepare
run_model = DscBackend.run_model
supports_device = DscBackend.supports_device
