"""Running an artifact's GPU plan: PTX through pycuda, one device arena, CUDA graphs.

    sess = dsc.runtime.load("model.dsc")      # a CPU+GPU artifact (--target cuda / sm_90 / orin)
    outs = sess.run(None, {"input": x})       # x: numpy (pinned staging) or a device array

At load (`GpuExecutor.__init__`), after `gpu_preflight` accepted the GPU and
the driver: the PTX is JIT-compiled by the driver (`module_from_buffer`),
one device arena is allocated (plan-memory's "cuda:0" arena plus the
emitters' scratch), the weights are copied to the device once, and the host
side gets pinned buffers: the CPU arena, a staging buffer per input and per
output. The schedule (manifest plan.schedule) is resolved into calls with
fixed pointers:

* `launch`: kernel, grid, block, packed pointer arguments;
* `copy`: a transfer; host memory is always pinned, so every copy is async;
* `cpu`: a CPU segment (`dsc_seg<i>`) of the native code, on the runtime's threads.

Runs of GPU work between CPU segments are captured once as CUDA graphs
(stream capture through cuda-bindings' driver API on pycuda's stream; pycuda
has no graph API) and replayed with one `cuGraphLaunch` each: a ResNet-50
placed whole on the GPU is one graph. Without cuda-bindings, or when
capture fails, the launches are issued one by one. Input transfers stay
outside the graphs, so an input given as a device array
(`__cuda_array_interface__`: PyTorch, CuPy, Numba) is copied device to device
instead of from host memory.

pycuda is optional (`pip install dsc[cuda]`): `import dsc.runtime` and CPU
artifacts never import it.
"""

from __future__ import annotations

import atexit

import struct
import threading

import numpy as np

from dsc.runtime.errors import DscError, TargetError

INSTALL_HINT = "install the CUDA extra: pip install dsc[cuda] (pycuda; a CUDA driver and GPU are needed to run)"


# ------------------------------------------------------------ preflight


def parse_isa(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def driver_ptx_isa(driver_version: int) -> tuple[int, int]:
    """The newest PTX ISA a driver (cuDriverGetVersion, e.g. 12040) reads."""
    from bisect import bisect_right

    table = sorted((v, isa) for isa, v in _ISA_DRIVER.items())
    i = bisect_right([v for v, _ in table], driver_version)
    return table[i - 1][1] if i else (0, 0)


# PTX ISA -> first CUDA driver version reading it (the same table as dsc/backends/cuda/target.py)
_ISA_DRIVER = {
    (6, 0): 9000, (6, 3): 10000, (6, 4): 10010, (6, 5): 10020, (7, 0): 11000, (7, 1): 11010, (7, 2): 11020,
    (7, 3): 11030, (7, 4): 11040, (7, 5): 11050, (7, 6): 11060, (7, 7): 11070, (7, 8): 11080, (8, 0): 12000,
    (8, 1): 12010, (8, 2): 12020, (8, 3): 12030, (8, 4): 12040, (8, 5): 12050, (8, 6): 12070, (8, 7): 12080,
    (8, 8): 12090, (9, 0): 13000,
}


def _ver(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def gpu_preflight(gpu: dict, compute_capability: tuple[int, int], driver_version: int, device_name: str = "this GPU", path: str = "the artifact") -> None:
    """Refuse an artifact whose SM or PTX ISA this GPU or driver cannot run, saying what to do."""
    sm = gpu["sm"]
    exact = sm.endswith("a")  # architecture-specific PTX (sm_90a): this compute capability alone
    want = int(sm.split("_")[1].rstrip("a"))
    have = compute_capability[0] * 10 + compute_capability[1]
    if have < want or (exact and have != want):
        newer = "" if exact else " or newer"
        also = f" (or --target sm_{want}, which runs on newer GPUs too)" if exact and have > want else " (or --target cuda, PTX for sm_80 that newer GPUs run)"
        raise TargetError(
            f"{path} was compiled for {sm} (compute capability {want // 10}.{want % 10}{' only' if exact else ''}); {device_name} is sm_{have} (compute capability {compute_capability[0]}.{compute_capability[1]})",
            hint=f"recompile for this GPU with --target sm_{have}{also}, or run the artifact on a GPU of compute capability {want // 10}.{want % 10}{newer}",
        )
    isa = parse_isa(gpu["ptx_isa"])
    readable = driver_ptx_isa(driver_version)
    if isa > readable:
        need = gpu.get("min_driver") or _ISA_DRIVER.get(isa, 0)
        raise TargetError(
            f"{path} holds PTX ISA {isa[0]}.{isa[1]} for {sm}; the CUDA driver here ({_ver(driver_version)}) reads PTX up to {readable[0]}.{readable[1]}",
            hint=f"update the NVIDIA driver to CUDA {_ver(need)} or newer, or recompile for an older SM (e.g. --target cuda)",
        )


# ------------------------------------------------------------ the pycuda driver


def _pop_contexts(cuda) -> None:
    try:
        while cuda.Context.get_current() is not None:
            cuda.Context.pop()
    except Exception:  # CUDA may already be shutting down
        pass


class PycudaDriver:
    """The executor's driver interface over pycuda (+ cuda-bindings for CUDA graphs)."""

    kind = "cuda"

    def __init__(self, device: int = 0):
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            raise DscError(f"this artifact runs on an NVIDIA GPU and needs pycuda, which is not installed ({e})", hint=INSTALL_HINT) from None
        self.cuda = cuda
        cuda.init()
        if cuda.Device.count() <= device:
            raise TargetError("this artifact runs on an NVIDIA GPU, and this machine has none that CUDA can see", hint="run it on a machine with an NVIDIA GPU and driver, or recompile for its CPU (--target host)")
        self.dev = cuda.Device(device)
        # the primary context: the one PyTorch, CuPy and Numba use, so their device arrays are valid here
        self.ctx = self.dev.retain_primary_context()
        self.ctx.push()
        # pycuda aborts the process if a context is still pushed when it unloads
        atexit.register(_pop_contexts, cuda)
        self._allocs = []
        self._cu = None
        self._graph_error = None

    def activate(self) -> bool:
        """Make the context current in this thread (a run from another thread); True if pushed."""
        cur = self.cuda.Context.get_current()
        if cur is not None and cur.handle == self.ctx.handle:
            return False
        self.ctx.push()
        return True

    def deactivate(self) -> None:
        self.cuda.Context.pop()

    def device_info(self) -> dict:
        return {"name": self.dev.name(), "compute_capability": tuple(self.dev.compute_capability()), "driver_version": int(self.cuda.get_driver_version())}

    def load(self, image: bytes) -> None:
        if not image.strip(b"\0 \n"):  # every kernel was placed on the CPU: nothing to load
            self.module = None
            return
        data = image if image.endswith(b"\0") else image + b"\0"
        try:
            self.module = self.cuda.module_from_buffer(data)
        except self.cuda.Error as e:
            raise TargetError(f"the CUDA driver could not load the artifact's PTX: {e}", hint="update the NVIDIA driver, or recompile for this GPU's SM") from None

    def function(self, name: str):
        return self.module.get_function(name)

    def stream(self):
        return self.cuda.Stream()

    def alloc(self, nbytes: int) -> int:
        a = self.cuda.mem_alloc(max(int(nbytes), 256))
        self._allocs.append(a)
        return int(a)

    def pinned(self, nbytes: int) -> np.ndarray:
        return self.cuda.pagelocked_empty(max(int(nbytes), 1), np.uint8)

    def htod(self, dst: int, host: np.ndarray, stream) -> None:
        self.cuda.memcpy_htod_async(dst, host, stream)

    def dtoh(self, host: np.ndarray, src: int, stream) -> None:
        self.cuda.memcpy_dtoh_async(host, src, stream)

    def dtod(self, dst: int, src: int, nbytes: int, stream) -> None:
        self.cuda.memcpy_dtod_async(dst, src, nbytes, stream)

    def htod_sync(self, dst: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod(dst, host)

    def _allow_smem(self, f, smem: int) -> None:
        """Kernels carve their shared memory from the dynamic allocation; above 48 KiB the function must opt in."""
        if smem > 48 * 1024 and getattr(f, "_dsc_smem", 0) < smem:
            try:
                f.set_attribute(self.cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, int(smem))
            except self.cuda.Error as e:
                raise TargetError(f"a kernel needs {smem} bytes of shared memory per block, which this GPU does not grant: {e}", hint="recompile for this GPU's SM (--target sm_XX)") from None
            f._dsc_smem = smem

    def launch(self, f, grid, block, args: list[int], smem: int, stream) -> None:
        self._allow_smem(f, smem)
        f._launch_kernel(tuple(grid), tuple(block), struct.pack(f"{len(args)}P", *args), int(smem), stream)

    def packed_launch(self, f, grid, block, args: list[int], smem: int = 0):
        """A launch with its argument buffer packed once: call it with the stream."""
        self._allow_smem(f, smem)
        buf = struct.pack(f"{len(args)}P", *args)
        grid, block, smem = tuple(grid), tuple(block), int(smem)
        lk = f._launch_kernel
        return lambda stream: lk(grid, block, buf, smem, stream)

    def synchronize(self, stream) -> None:
        stream.synchronize()

    # ---------------------------------------------------------- graphs through cuda-bindings
    def _driver_api(self):
        if self._cu is None:
            try:
                from cuda.bindings import driver as cu
            except ImportError:
                try:
                    from cuda import cuda as cu  # cuda-python < 12.6
                except ImportError:
                    cu = False
            self._cu = cu
        return self._cu

    def graphs_available(self) -> bool:
        return bool(self._driver_api())

    def _check(self, ret, what: str):
        cu = self._cu
        err = ret[0] if isinstance(ret, tuple) else ret
        if err != cu.CUresult.CUDA_SUCCESS:
            raise DscError(f"CUDA graph: {what} failed: {err}")
        return ret[1] if isinstance(ret, tuple) and len(ret) > 1 else None

    def graph_begin(self, stream) -> None:
        cu = self._driver_api()
        self._check(cu.cuStreamBeginCapture(cu.CUstream(stream.handle), cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture")

    def graph_end(self, stream):
        cu = self._cu
        graph = self._check(cu.cuStreamEndCapture(cu.CUstream(stream.handle)), "cuStreamEndCapture")
        gexec = self._check(cu.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        return (graph, gexec)

    def graph_launch(self, graph, stream) -> None:
        cu = self._cu
        self._check(cu.cuGraphLaunch(graph[1], cu.CUstream(stream.handle)), "cuGraphLaunch")

    def graph_launcher(self, graph):
        cu = self._cu
        gexec = graph[1]
        launch = cu.cuGraphLaunch
        ok = cu.CUresult.CUDA_SUCCESS
        streams = {}

        def run(stream):
            h = streams.get(id(stream))
            if h is None:
                h = streams[id(stream)] = cu.CUstream(stream.handle)
            (err,) = launch(gexec, h)
            if err != ok:
                raise DscError(f"CUDA graph: cuGraphLaunch failed: {err}")

        return run


# ------------------------------------------------------------ the executor


class GpuExecutor:
    """Runs a CPU+GPU artifact's schedule (see the module docstring)."""

    @classmethod
    def prepare(cls, artifact, driver=None, use_graphs: bool = True):
        """Open the GPU and check the artifact against it; returns `make(native) -> GpuExecutor`."""
        if driver is None:
            driver = PycudaDriver()
        info = driver.device_info()
        gpu_preflight(artifact.manifest["gpu"], info["compute_capability"], info["driver_version"], info["name"], artifact.path)
        return lambda native: cls(artifact, native, driver, use_graphs)

    def __init__(self, artifact, native, driver=None, use_graphs: bool = True):
        self.artifact = artifact
        m = artifact.manifest
        self.gpu = m["gpu"]
        if driver is None:
            driver = PycudaDriver()
        self.driver = driver
        info = driver.device_info()
        self.device_info = info
        gpu_preflight(self.gpu, info["compute_capability"], info["driver_version"], info["name"], artifact.path)
        if driver.kind == "emu":
            member = self.gpu.get("emulation")
            if not member:
                raise DscError(f"{artifact.path} has no emulation build of its GPU kernels", hint="compile it with gpu_emulation=True to run it on the GPU emulator")
            image = artifact.objects[member]
        else:
            image = artifact.objects[self.gpu["member"]]
        driver.load(image)
        self.native = native
        self.stream = driver.stream()
        self.lock = threading.Lock()
        # device memory: the arena and the weights (uploaded once)
        self.d_arena = driver.alloc(self.gpu["arena_bytes"])
        weights = np.frombuffer(artifact.weights, np.uint8) if artifact.weights else np.zeros(64, np.uint8)
        self.h_weights = weights
        self.d_weights = driver.alloc(weights.nbytes)
        if artifact.weights:
            src = driver.pinned(weights.nbytes)
            src[:] = weights
            driver.htod_sync(self.d_weights, src)
        # host memory: pinned arena, input and output staging
        self.h_arena = driver.pinned(max(int(m["arena_bytes"]), 64))
        self.in_specs = m["inputs"]
        self.out_specs = m["outputs"]
        self.h_in = [_pinned_array(driver, s) for s in self.in_specs]
        self.h_out = [_pinned_array(driver, s) for s in self.out_specs]
        self.functions: dict[str, object] = {}
        self.use_graphs = use_graphs and (driver.kind == "emu" or getattr(driver, "graphs_available", lambda: False)())
        self.graph_note = None
        self._compile_schedule(m["plan"]["schedule"])

    # ---------------------------------------------------------- schedule -> runs
    def _host(self, ref: dict) -> np.ndarray:
        """The host bytes of a buffer reference."""
        n = _nbytes(ref)
        kind, i = ref["kind"], ref["index"]
        if kind == "input":
            return self.h_in[i].reshape(-1).view(np.uint8)[:n]
        if kind == "output":
            return self.h_out[i].reshape(-1).view(np.uint8)[:n]
        if kind == "arena":
            return self.h_arena[i : i + n]
        if kind == "weight":
            return self.h_weights[i : i + n]
        raise DscError(f"a transfer reads or writes host buffer kind {kind!r}")

    def _dev(self, ref: dict) -> int:
        kind, i = ref["kind"], ref["index"]
        if kind == "gpu":
            return self.d_arena + i
        if kind == "weight":
            return self.d_weights + i
        raise DscError(f"a GPU kernel argument of kind {kind!r}: the plan is broken")

    def _function(self, name: str):
        if name not in self.functions:
            self.functions[name] = self.driver.function(name)
        return self.functions[name]

    def _compile_schedule(self, schedule: list[dict]) -> None:
        """Items: ("cpu", entry) | ("input", input index, dev ptr, nbytes) | ("gpu", [ops])."""
        d = self.driver
        items: list = []
        run: list | None = None
        self.n_launches = 0
        self.run_info: dict[int, list[dict]] = {}  # GPU run index in items -> what each of its ops is
        for st in schedule:
            op = st["op"]
            if op == "cpu":
                run = None
                items.append(("cpu", st["entry"]))
            elif op == "copy" and st["src"]["kind"] == "input":
                run = None
                items.append(("input", st["src"]["index"], self._dev(st["dst"]), st["bytes"], self._host(st["src"])))
            else:
                if run is None:
                    run = []
                    self.run_info[len(items)] = []
                    items.append(("gpu", run))
                self.run_info[len(items) - 1].append({k: st[k] for k in ("op", "label", "kernel", "grid", "block", "bytes") if k in st})
                if op == "launch":
                    f = self._function(st["kernel"])
                    args = [self._dev(a) for a in st["args"]]
                    if hasattr(d, "packed_launch"):
                        run.append(d.packed_launch(f, st["grid"], st["block"], args, st.get("smem", 0)))
                    else:
                        run.append(lambda s, f=f, g=st["grid"], b=st["block"], a=args, sm=st.get("smem", 0): d.launch(f, g, b, a, sm, s))
                    self.n_launches += 1
                elif op == "copy":
                    src, dst = st["src"], st["dst"]
                    if src["kind"] == "gpu" and dst["kind"] != "gpu":
                        host = self._host(dst)
                        dev = self._dev(src)
                        run.append(lambda s, h=host, p=dev: d.dtoh(h, p, s))
                    elif dst["kind"] == "gpu" and src["kind"] != "gpu":
                        host = self._host(src)
                        dev = self._dev(dst)
                        run.append(lambda s, h=host, p=dev: d.htod(p, h, s))
                    else:
                        a, b, n = self._dev(dst), self._dev(src), st["bytes"]
                        run.append(lambda s, a=a, b=b, n=n: d.dtod(a, b, n, s))
                else:
                    raise DscError(f"unknown schedule op {op!r}", hint="recompile the model with this version of dsc")
        self.items = items
        self.graphs: dict[int, object] = {}
        self.all_gpu = not any(it[0] == "cpu" for it in items)

    # ---------------------------------------------------------- running
    def _gpu_run(self, idx: int, ops: list) -> None:
        d, s = self.driver, self.stream
        if self.use_graphs:
            g = self.graphs.get(idx)
            if g is None:
                try:
                    d.graph_begin(s)
                    try:
                        for f in ops:
                            f(s)
                    finally:
                        graph = d.graph_end(s)
                    g = d.graph_launcher(graph) if hasattr(d, "graph_launcher") else (lambda st, graph=graph: d.graph_launch(graph, st))
                    self.graphs[idx] = g
                except Exception as e:  # capture failed: issue the launches one by one from now on
                    self.use_graphs = False
                    self.graph_note = f"CUDA graphs off: {e}"
                    for f in ops:
                        f(s)
                    return
            g(s)
            return
        for f in ops:
            f(s)

    def run(self, inputs: list) -> list[np.ndarray]:
        """inputs: numpy arrays (checked, contiguous) or device arrays, in the model's input order."""
        d = self.driver
        with self.lock:
            pushed = d.activate() if hasattr(d, "activate") else False
            try:
                return self._run(inputs)
            finally:
                if pushed:
                    d.deactivate()

    def _run(self, inputs: list) -> list[np.ndarray]:
        d, s = self.driver, self.stream
        dev_inputs: dict[int, int] = {}
        for i, x in enumerate(inputs):
            if isinstance(x, np.ndarray):
                np.copyto(self.h_in[i], x)
            else:
                dev_inputs[i] = device_pointer(x, self.in_specs[i])
        for idx, it in enumerate(self.items):
            kind = it[0]
            if kind == "input":
                _, i, dptr, nbytes, host = it
                if i in dev_inputs:
                    d.dtod(dptr, dev_inputs[i], nbytes, s)
                else:
                    d.htod(dptr, host, s)
            elif kind == "gpu":
                self._gpu_run(idx, it[1])
            else:
                d.synchronize(s)
                self.native.run(self.h_in, self.h_out, self.h_weights, self.h_arena, entry=it[1])
        d.synchronize(s)
        return [o.copy() for o in self.h_out]


def device_pointer(x, spec: dict) -> int:
    """The device address of a CUDA array (`__cuda_array_interface__`), checked against the input spec."""
    from dsc.runtime.errors import ShapeError

    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        raise ShapeError(f"input '{spec['name']}' is neither a numpy array nor a CUDA array", hint="pass a numpy array or a device array (PyTorch, CuPy) with __cuda_array_interface__")
    shape = list(cai["shape"])
    dt = np.dtype(cai["typestr"])
    if shape != list(spec["shape"]) or dt != np.dtype(spec["dtype"]):
        raise ShapeError(f"input '{spec['name']}' is a {dt} {shape} device array, the model takes {spec['dtype']} {spec['shape']}")
    strides = cai.get("strides")
    if strides is not None and tuple(strides) != tuple(np.empty(shape, dt).strides):
        raise ShapeError(f"input '{spec['name']}' is a non-contiguous device array", hint="make it contiguous first (x.contiguous())")
    return int(cai["data"][0])


def _pinned_array(driver, spec: dict) -> np.ndarray:
    dt = np.dtype(spec["dtype"])
    n = max(_nbytes(spec), 8 * dt.itemsize)
    return driver.pinned(n).view(dt)[: _numel(spec)].reshape(spec["shape"])


def _numel(spec: dict) -> int:
    return int(np.prod(spec["shape"], dtype=np.int64))


def _nbytes(spec: dict) -> int:
    return _numel(spec) * np.dtype(spec["dtype"]).itemsize
