"""Test helpers for the CUDA backend: tiny ONNX models, compiled for a GPU target, run on the emulator or a GPU.

`compile_gpu(model)` compiles for a CPU+GPU target with every kernel forced
onto the GPU (`*=gpu`) and, by default, the emulation build of the kernels;
`run_gpu(data, feeds, device)` runs the artifact on dsc's GPU emulator
("emulate") or on the real GPU (None); `ort(model, feeds)` is the reference.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper

import dsc
import dsc.runtime
from dsc.pipeline import CompileOptions

ALL_GPU = ("*=gpu",)


def have_ptxas() -> bool:
    return shutil.which("ptxas") is not None


def have_gpu() -> bool:
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False


GPU_REASON = "needs a CUDA GPU and pycuda"
PTXAS_REASON = "needs CUDA's ptxas on the PATH"


def compile_gpu(model: onnx.ModelProto, target: str = "sm_90", place=ALL_GPU, emulate: bool = True) -> bytes:
    return dsc.compile(model, target, options=CompileOptions(place=tuple(place)), gpu_emulation=emulate)


def run_gpu(data: bytes, feeds: dict, device="emulate") -> list[np.ndarray]:
    return dsc.runtime.load(data, gpu=device).run(None, feeds)


def ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as rt

    return rt.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def check(model: onnx.ModelProto, feeds: dict, rtol=1e-4, atol=1e-4, device="emulate", target="sm_90", place=ALL_GPU) -> None:
    got = run_gpu(compile_gpu(model, target, place, emulate=device == "emulate"), feeds, device)
    want = ort(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


# ------------------------------------------------------------ tiny models


def model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    """inputs/outputs: [(name, elem type, shape)]; inits: [(name, array)]."""
    vi = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    vo = [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs]
    ts = [helper.make_tensor(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape, a.reshape(-1).tolist()) for n, a in inits]
    g = helper.make_graph(nodes, "g", vi, vo, ts)
    # IR version 8: what torch exports and every onnxruntime (the GPU machine's too) reads
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


F = TensorProto.FLOAT
I64 = TensorProto.INT64


def rand(*shape, seed=0, scale=1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
