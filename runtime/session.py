"""Sessions: run a compiled artifact with onnxruntime's habits.

    sess = dsc.runtime.load("model.dsc")
    sess.get_inputs()[0].name, .shape, .type
    outputs = sess.run(None, {"input": x})

Inputs are checked before any native call: names, shapes and dtypes
(converted when NumPy can cast safely, refused otherwise), made contiguous.
`run` is safe from several threads at once: each call gets its own arena.
The weights are the artifact's one aligned copy (read straight from the file);
an arena, 64-byte aligned, is kept between calls for the next one (a fresh
arena each call would fault in its pages every time), so memory stays at the
weights, the code and one arena per concurrent caller.

Artifacts for a CPU+GPU target run through `GpuExecutor`
(dsc/runtime/cuda_executor.py: pycuda, one device arena, CUDA graphs); their
inputs may also be device arrays (`__cuda_array_interface__`). `gpu="emulate"`
runs their GPU kernels on dsc's CPU emulator instead (artifacts compiled with
gpu_emulation=True; for tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dsc.runtime.artifact import Artifact, aligned_empty, preflight, read_artifact
from dsc.runtime.errors import ShapeError

_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)", "int64": "tensor(int64)", "int32": "tensor(int32)", "int8": "tensor(int8)", "uint8": "tensor(uint8)", "bool": "tensor(bool)"}


_KEEP_ARENAS = 2  # idle arenas a session keeps (more concurrent callers allocate theirs per call)


@dataclass(frozen=True)
class NodeArg:
    """An input or output: name, shape, type (as onnxruntime's NodeArg) and NumPy dtype."""

    name: str
    shape: list[int]
    type: str
    dtype: np.dtype


def _args(specs: list[dict]) -> list[NodeArg]:
    return [NodeArg(s["name"], list(s["shape"]), _ORT_TYPES.get(s["dtype"], s["dtype"]), np.dtype(s["dtype"])) for s in specs]


class Session:
    def __init__(self, artifact: Artifact, num_threads: int | None = None, gpu: str | object | None = None):
        from dsc.runtime.native import NativeModule

        preflight(artifact)
        self.artifact = artifact
        self.manifest = artifact.manifest
        self._inputs = _args(self.manifest["inputs"])
        self._outputs = _args(self.manifest["outputs"])
        self._weights = np.frombuffer(artifact.weights, dtype=np.uint8) if artifact.weights else np.zeros(64, np.uint8)
        self._arena_bytes = max(int(self.manifest["arena_bytes"]), 64)
        self._idle_arenas: list[np.ndarray] = []  # arenas of finished calls, for the next ones
        self._arena_lock = threading.Lock()
        self._gpu = None
        if "gpu" in self.manifest:
            from dsc.runtime.cuda_executor import GpuExecutor

            driver = gpu
            if gpu == "emulate":
                from dsc.runtime.gpu_emulator import EmuDriver

                driver = EmuDriver()
            # the GPU check (and pycuda's) comes before any native code loads
            self._gpu = GpuExecutor.prepare(artifact, driver)
        self._native = NativeModule(artifact.cpu_object, num_threads)
        if self._gpu is not None:
            self._gpu = self._gpu(self._native)
        self._sources = self.manifest["plan"]["output_sources"]

    @property
    def gpu_executor(self):
        """The GpuExecutor of a CPU+GPU artifact (None for CPU artifacts)."""
        return self._gpu

    @property
    def num_threads(self) -> int:
        return self._native.num_threads

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def _check(self, feeds: Mapping[str, object]) -> list[np.ndarray]:
        names = [a.name for a in self._inputs]
        unknown = sorted(set(feeds) - set(names))
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            raise ShapeError(
                f"inputs do not match the model: {'missing ' + str(missing) if missing else ''}{'; ' if missing and unknown else ''}{'unknown ' + str(unknown) if unknown else ''}",
                hint=f"the model takes {', '.join(f'{a.name} {a.shape} {a.dtype}' for a in self._inputs)}",
            )
        out = []
        for a in self._inputs:
            x = feeds[a.name]
            if self._gpu is not None and not isinstance(x, np.ndarray) and hasattr(x, "__cuda_array_interface__"):
                out.append(x)  # a device array: checked by the GPU executor, copied device to device
                continue
            x = np.asarray(x)
            if x.dtype != a.dtype:
                if not np.can_cast(x.dtype, a.dtype, "safe"):
                    raise ShapeError(f"input '{a.name}' has dtype {x.dtype}, the model takes {a.dtype}", hint=f"convert it first: x.astype(np.{a.dtype})")
                x = x.astype(a.dtype)
            if list(x.shape) != a.shape:
                raise ShapeError(f"input '{a.name}' has shape {list(x.shape)}, the model takes {a.shape}", hint="recompile with --input-shape for another shape")
            out.append(np.ascontiguousarray(x))
        return out

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, object]) -> list[np.ndarray]:
        ins = self._check(input_feed)
        if self._gpu is not None:
            outs = self._gpu.run(ins)
        else:
            outs = [np.empty(a.shape, a.dtype) for a in self._outputs]
            arena = self._take_arena()
            try:
                self._native.run(ins, outs, self._weights, arena)
            finally:
                self._give_arena(arena)
        for j, src in enumerate(self._sources):
            if src is not None:  # an output that is an input, a weight or another output
                outs[j][...] = self._buffer(src, ins, outs)
        if output_names is None:
            return outs
        index = {a.name: j for j, a in enumerate(self._outputs)}
        bad = [n for n in output_names if n not in index]
        if bad:
            raise ShapeError(f"unknown output names {bad}", hint=f"the outputs are {list(index)}")
        return [outs[index[n]] for n in output_names]

    def _take_arena(self) -> np.ndarray:
        with self._arena_lock:
            if self._idle_arenas:
                return self._idle_arenas.pop()
        return aligned_empty(self._arena_bytes)

    def _give_arena(self, arena: np.ndarray) -> None:
        with self._arena_lock:
            if len(self._idle_arenas) < _KEEP_ARENAS:
                self._idle_arenas.append(arena)

    def profile(self, input_feed: Mapping[str, object], repeats: int = 10) -> list[tuple[str, float]]:
        """Median seconds per step (needs an artifact compiled with profiling, e.g. `dsc bench --profile`)."""
        off = self.manifest["plan"].get("profile_offset")
        if off is None:
            raise ShapeError("this artifact was compiled without profiling", hint="compile with CompileOptions(profile=True) or use `dsc bench --profile`")
        steps = self.manifest["plan"]["steps"]
        ins = self._check(input_feed)
        outs = [np.empty(a.shape, a.dtype) for a in self._outputs]
        arena = aligned_empty(self._arena_bytes)
        ticks, walls = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self._native.run(ins, outs, self._weights, arena)
            walls.append(time.perf_counter() - t0)
            stamps = arena[off : off + 8 * (len(steps) + 1)].view(np.int64)
            ticks.append(np.diff(stamps))
        per_step = np.median(np.array(ticks), axis=0)
        # cycle counter ticks -> seconds, calibrated on the whole run's wall time
        scale = float(np.median(walls)) / max(float(per_step.sum()), 1.0)
        return [(label, float(t) * scale) for label, t in zip(steps, per_step)]

    def _buffer(self, src: dict, ins, outs) -> np.ndarray:
        dt, shape = np.dtype(src["dtype"]), tuple(src["shape"])
        if src["kind"] == "input":
            return ins[src["index"]].reshape(shape)
        if src["kind"] == "output":
            return outs[src["index"]].reshape(shape)
        n = int(np.prod(shape)) * dt.itemsize
        return np.frombuffer(self._weights[src["index"] : src["index"] + n].tobytes(), dt).reshape(shape)


def load(path_or_bytes, num_threads: int | None = None, gpu: str | object | None = None) -> Session:
    """Load a compiled artifact (.dsc path, or its bytes) for inference; num_threads defaults to all cores.

    `gpu` (CPU+GPU artifacts only): None runs on CUDA device 0 through pycuda;
    "emulate" on dsc's GPU emulator (artifacts built with gpu_emulation=True).
    """
    return Session(read_artifact(path_or_bytes), num_threads, gpu)
