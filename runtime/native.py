"""Loading native object code and running it on all cores.

The object is loaded with llvmlite's MCJIT (`add_object_file`): no C compiler
or linker on the machine. N-1 worker threads each make one ctypes call,
`dsc_worker(ctl, tid)`, and stay parked in native code (ctypes releases the
GIL); an inference is one call, `dsc_dispatch`, which hands the job to the
workers, runs thread 0's share and returns when all are done. The steps of
`dsc_run` synchronize with the generated code's own barrier. See
backends/cpu/workers.py.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref

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
_DISPATCH = ctypes.CFUNCTYPE(
    None, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p
)
_WORKER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
_STOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_DISPATCH = ctypes.CFUNCTYPE(
    None,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
)
_WORKER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
_STOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
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
        # Workers are parked inside native code (dsc_worker); an inference is one native
        # call (dsc_dispatch). One inference at a time owns them; a concurrent call runs
        # single-threaded in its caller's thread instead.
        self._pool_lock = threading.Lock()
        self._ctl = np.zeros(32, dtype=np.int64)
        self._workers: list[threading.Thread] = []
        if self.num_threads > 1:
            self._dispatch = _DISPATCH(self._engine.get_function_address("dsc_dispatch"))
            stop = _STOP(self._engine.get_function_address("dsc_stop"))
            worker = _WORKER(self._engine.get_function_address("dsc_worker"))
            ctl = self._ctl.ctypes.data
            for t in range(1, self.num_threads):
                th = threading.Thread(target=worker, args=(ctl, t), name=f"dsc-worker-{t}", daemon=True)
                th.start()
                self._workers.append(th)
            weakref.finalize(self, _shutdown, stop, ctl, self._workers, self._ctl, self._engine)

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
        if not self._workers or not self._pool_lock.acquire(blocking=False):
            fn(*args, 0, 1, bar)
            return
        try:
            self._dispatch(*args, self.num_threads, bar, self._ctl.ctypes.data, ctypes.cast(fn, ctypes.c_void_p).value)
        finally:
            self._pool_lock.release()


def _shutdown(stop, ctl: int, workers: list, keep_alive, engine) -> None:
    """Release the parked workers (they return from dsc_worker) before the code is freed."""
    stop(ctl)
    for th in workers:
        th.join(timeout=1.0)
    del keep_alive, engine
