"""Loading native object code and calling `dsc_run` on a pool of threads.

The object is loaded with llvmlite's MCJIT (`add_object_file`): no C compiler
or linker on the machine. `dsc_run(inputs, outputs, weights, arena, tid,
nthreads, barrier)` is called once per thread per inference through ctypes,
which releases the GIL, so the threads run the generated code in parallel;
the generated code synchronizes its steps with its own spin barrier.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_RUN = ctypes.CFUNCTYPE(
    None,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_void_p,
)
_llvm_lock = threading.Lock()
_llvm_ready = False


def _init_llvm(llvm) -> None:
    global _llvm_ready
    with _llvm_lock:
        if not _llvm_ready:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _llvm_ready = True


class NativeModule:
    """An object file loaded into this process; `run` calls its dsc_run."""

    def __init__(self, object_code: bytes, num_threads: int | None = None):
        import llvmlite.binding as llvm

        _init_llvm(llvm)
        target = llvm.Target.from_default_triple()
        self._tm = target.create_target_machine(reloc="pic", codemodel="default")
        empty = llvm.parse_assembly("")
        empty.triple = llvm.get_process_triple()
        self._engine = llvm.create_mcjit_compiler(empty, self._tm)
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(object_code))
        self._engine.finalize_object()
        addr = self._engine.get_function_address("dsc_run")
        if not addr:
            from dsc.runtime.errors import ArtifactError

            raise ArtifactError("the artifact's native code has no dsc_run entry point", hint="recompile the model with this version of dsc")
        self._fn = _RUN(addr)
        self._entries = {"dsc_run": self._fn}
        self.num_threads = max(1, num_threads or os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(self.num_threads - 1, thread_name_prefix="dsc") if self.num_threads > 1 else None
        # One inference at a time owns the pool (the steps of a call spin-wait for all its
        # threads, so two calls sharing workers could deadlock); a concurrent call runs
        # single-threaded in its caller's thread instead.
        self._pool_lock = threading.Lock()

    def entry(self, name: str):
        """Another entry point with dsc_run's signature (e.g. a CPU segment `dsc_seg0` of a CPU+GPU artifact)."""
        fn = self._entries.get(name)
        if fn is None:
            addr = self._engine.get_function_address(name)
            if not addr:
                from dsc.runtime.errors import ArtifactError

                raise ArtifactError(f"the artifact's native code has no {name} entry point", hint="recompile the model with this version of dsc")
            fn = self._entries[name] = _RUN(addr)
        return fn

    def run(self, inputs: list[np.ndarray], outputs: list[np.ndarray], weights: np.ndarray, arena: np.ndarray, entry: str = "dsc_run") -> None:
        fn = self._fn if entry == "dsc_run" else self.entry(entry)
        ins = (ctypes.c_void_p * max(len(inputs), 1))(*[a.ctypes.data for a in inputs])
        outs = (ctypes.c_void_p * max(len(outputs), 1))(*[a.ctypes.data for a in outputs])
        barrier = np.zeros(8, dtype=np.int64)  # count, generation (own cache line per call)
        args = (ins, outs, weights.ctypes.data, arena.ctypes.data)
        bar = barrier.ctypes.data
        if self._pool is None or not self._pool_lock.acquire(blocking=False):
            fn(*args, 0, 1, bar)
            return
        try:
            n = self.num_threads
            futures = [self._pool.submit(fn, *args, t, n, bar) for t in range(1, n)]
            fn(*args, 0, n, bar)
            for f in futures:
                f.result()
        finally:
            self._pool_lock.release()
