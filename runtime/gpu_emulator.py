"""A GPU emulator for testing: runs the host build of an artifact's GPU kernels on the CPU.

Artifacts compiled with GPU emulation (`dsc.driver.codegen(..., gpu_emulation=True)`,
used by the tests) carry `gpu/emu-<arch>.o`: every kernel built for this
CPU with one more argument, `i64* ctx` (see dsc/backends/cuda/gpubuilder.py).
`EmuDriver` implements the executor's driver interface over host memory:
"device" allocations are host buffers, copies are memmoves, and a launch runs
the grid block by block, each block with one OS thread per GPU thread
(`__syncthreads` and warp shuffles are pthread barriers). It is slow and
exists so that kernels, the schedule, transfers and graph replay can be
tested numerically on machines without a GPU.
"""

from __future__ import annotations

import ctypes
import queue
import threading

import numpy as np

from dsc.runtime.errors import DscError

CTX_SLOTS = 16
XCHG_WORDS = 7  # = dsc.backends.cuda.gpubuilder.XCHG_WORDS (the runtime does not import the compiler)
BARRIER_BYTES = 32  # sizeof(pthread_barrier_t), glibc x86-64 / aarch64
LIBM_SYMBOLS = ("log2f", "exp2f", "logf", "expf", "powf", "floorf", "ceilf", "sqrtf", "fmaf", "fmaxf", "fminf", "copysignf", "tanhf", "erff")

_libc = ctypes.CDLL(None, use_errno=True)
try:
    _libm = ctypes.CDLL("libm.so.6")
except OSError:  # pragma: no cover - non-glibc
    _libm = _libc
_libc.pthread_barrier_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
_libc.pthread_barrier_destroy.argtypes = [ctypes.c_void_p]


class _Worker(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.q: queue.Queue = queue.Queue()
        self.start()

    def run(self):
        while True:
            job = self.q.get()
            if job is None:
                return
            fn, args, done = job
            try:
                fn(*args)
            finally:
                done()


class _Pool:
    """Persistent worker threads: a block's threads must all run at once (they meet at barriers)."""

    def __init__(self):
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()

    def run_all(self, calls: list[tuple], timeout: float = 600.0) -> None:
        with self.lock:
            while len(self.workers) < len(calls):
                self.workers.append(_Worker())
            left = [len(calls)]
            cv = threading.Condition()

            def done():
                with cv:
                    left[0] -= 1
                    if left[0] == 0:
                        cv.notify()

            for w, (fn, args) in zip(self.workers, calls):
                w.q.put((fn, args, done))
            with cv:
                if not cv.wait_for(lambda: left[0] == 0, timeout):
                    raise DscError("GPU emulator: a block did not finish (threads stuck at a barrier?)")


_POOL = _Pool()


class EmuFunction:
    def __init__(self, name: str, addr: int):
        self.name = name
        self.addr = addr
        self.cfuncs: dict[int, object] = {}

    def cfunc(self, nargs: int):
        if nargs not in self.cfuncs:
            self.cfuncs[nargs] = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * (nargs + 1)))(self.addr)
        return self.cfuncs[nargs]


class EmuStream:
    handle = 0


class EmuDriver:
    """The executor's driver interface, on the host CPU (see GpuExecutor)."""

    kind = "emu"

    def __init__(self):
        self._buffers: list[np.ndarray] = []
        self._engine = None
        self._recording: list | None = None

    # ---------------------------------------------------------- device
    def device_info(self) -> dict:
        return {"name": "dsc GPU emulator", "compute_capability": (9, 0), "driver_version": 13000}

    def load(self, image: bytes) -> None:
        import llvmlite.binding as llvm

        from dsc.runtime.native import _init_llvm

        _init_llvm(llvm)
        for name in ("pthread_barrier_wait",):
            llvm.add_symbol(name, ctypes.cast(getattr(_libc, name), ctypes.c_void_p).value)
        for name in LIBM_SYMBOLS:
            try:
                llvm.add_symbol(name, ctypes.cast(getattr(_libm, name), ctypes.c_void_p).value)
            except AttributeError:
                pass
        target = llvm.Target.from_default_triple()
        self._tm = target.create_target_machine(reloc="pic", codemodel="default")
        empty = llvm.parse_assembly("")
        empty.triple = llvm.get_process_triple()
        self._engine = llvm.create_mcjit_compiler(empty, self._tm)
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(image))
        self._engine.finalize_object()

    def function(self, name: str) -> EmuFunction:
        addr = self._engine.get_function_address(name)
        if not addr:
            raise DscError(f"GPU emulator: no kernel {name} in the emulation code")
        return EmuFunction(name, addr)

    def stream(self):
        return EmuStream()

    def alloc(self, nbytes: int) -> int:
        buf = np.zeros(max(int(nbytes), 64) + 64, np.uint8)
        self._buffers.append(buf)
        return (buf.ctypes.data + 63) // 64 * 64

    def pinned(self, nbytes: int) -> np.ndarray:
        return np.zeros(max(int(nbytes), 1), np.uint8)

    # ---------------------------------------------------------- work (executed at once, or recorded)
    def _do(self, fn, *args):
        if self._recording is not None:
            self._recording.append((fn, args))
        else:
            fn(*args)

    def htod(self, dst: int, host: np.ndarray, stream) -> None:
        self._do(lambda: ctypes.memmove(dst, host.ctypes.data, host.nbytes))

    def dtoh(self, host: np.ndarray, src: int, stream) -> None:
        self._do(lambda: ctypes.memmove(host.ctypes.data, src, host.nbytes))

    def dtod(self, dst: int, src: int, nbytes: int, stream) -> None:
        self._do(lambda: ctypes.memmove(dst, src, nbytes))

    def htod_sync(self, dst: int, host: np.ndarray) -> None:
        ctypes.memmove(dst, host.ctypes.data, host.nbytes)

    def launch(self, f: EmuFunction, grid, block, args: list[int], smem: int, stream) -> None:
        self._do(self._run_grid, f, tuple(grid), tuple(block), list(args), int(smem))

    def synchronize(self, stream) -> None:
        pass

    # ---------------------------------------------------------- graphs (recorded lists)
    def graph_begin(self, stream) -> None:
        self._recording = []

    def graph_end(self, stream):
        ops, self._recording = self._recording, None
        return ops

    def graph_launch(self, graph, stream) -> None:
        for fn, args in graph:
            fn(*args)

    # ---------------------------------------------------------- the emulated grid
    def _run_grid(self, f: EmuFunction, grid, block, args, smem) -> None:
        T = block[0] * block[1] * block[2]
        if block[1] != 1 or block[2] != 1:
            raise DscError("GPU emulator: 1-D thread blocks only")
        nwarps = (T + 31) // 32
        bar = np.zeros(BARRIER_BYTES, np.uint8)
        wbar = np.zeros(BARRIER_BYTES * nwarps, np.uint8)
        shared = np.zeros(max(smem, 16), np.uint8)
        xchg = np.zeros(XCHG_WORDS * T, np.int32)  # see GpuBuilder: shuffles and MMAs exchange through it
        ctxs = np.zeros((T, CTX_SLOTS), np.int64)
        for t in range(T):
            ctxs[t, 0:3] = (t, 0, 0)
            ctxs[t, 3:6] = (T, 1, 1)
            ctxs[t, 9:12] = grid
            ctxs[t, 12] = bar.ctypes.data
            ctxs[t, 13] = wbar.ctypes.data
            ctxs[t, 14] = shared.ctypes.data
            ctxs[t, 15] = xchg.ctypes.data
        cf = f.cfunc(len(args))
        cargs = [ctypes.c_void_p(a) for a in args]
        for z in range(grid[2]):
            for y in range(grid[1]):
                for x in range(grid[0]):
                    ctxs[:, 6:9] = (x, y, z)
                    _libc.pthread_barrier_init(bar.ctypes.data, None, T)
                    for w in range(nwarps):
                        _libc.pthread_barrier_init(wbar.ctypes.data + w * BARRIER_BYTES, None, min(32, T - 32 * w))
                    shared[:] = 0xFF  # uninitialized shared memory: make stale reads visible
                    if T == 1:
                        cf(*cargs, ctypes.c_void_p(ctxs[0].ctypes.data))
                    else:
                        _POOL.run_all([(cf, (*cargs, ctypes.c_void_p(ctxs[t].ctypes.data))) for t in range(T)])
                    _libc.pthread_barrier_destroy(bar.ctypes.data)
                    for w in range(nwarps):
                        _libc.pthread_barrier_destroy(wbar.ctypes.data + w * BARRIER_BYTES)
