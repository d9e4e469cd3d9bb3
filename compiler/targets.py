"""Targets: what dsc can compile for, as plain data (a table, not a hierarchy).

A target names a CPU (LLVM triple, CPU name, features) and optionally a GPU
(CUDA SM). `reference` runs the NumPy reference evaluator: the oracle.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from dsc.runtime.errors import TargetError


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    triple: str | None = None  # None: the host's
    cpu: str | None = None  # None: the host's
    features: str = ""
    sm: str | None = None  # e.g. "sm_87"
    reference: bool = False
    unified_memory: bool = False  # CPU and GPU share DRAM (Jetson): transfers are cheap

    @property
    def has_gpu(self) -> bool:
        return self.sm is not None


_X86 = "x86_64-unknown-linux-gnu"
_ARM = "aarch64-unknown-linux-gnu"

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("reference", "NumPy reference evaluator (the oracle; slow)", reference=True),
        Target("host", "this machine's CPU with all its features"),
        Target("x86-64", "any x86-64 CPU (SSE2)", _X86, "x86-64"),
        Target("x86-64-v3", "x86-64 with AVX2 and FMA (Haswell, Zen 1 and newer)", _X86, "x86-64-v3"),
        Target("x86-64-v4", "x86-64 with AVX-512 (Skylake-X, Zen 4 and newer)", _X86, "x86-64-v4"),
        Target("aarch64", "any ARMv8-A CPU (NEON)", _ARM, "generic"),
        Target("cortex-a78ae", "ARM Cortex-A78AE (ARMv8.2-A: NEON, dotprod, fp16)", _ARM, "cortex-a78ae"),
        Target("orin-cpu", "Jetson Orin's CPU only (Cortex-A78AE)", _ARM, "cortex-a78ae"),
        Target("orin", "Jetson Orin: Cortex-A78AE CPU + Ampere sm_87 GPU", _ARM, "cortex-a78ae", sm="sm_87", unified_memory=True),
        Target("cuda", "this machine's CPU + an NVIDIA GPU (PTX for sm_80, JIT-able on newer GPUs)", sm="sm_80"),
        *(Target(sm, f"this machine's CPU + an NVIDIA {sm} GPU", sm=sm) for sm in ("sm_80", "sm_86", "sm_87", "sm_89", "sm_90")),
        Target("sm_90a", "this machine's CPU + an NVIDIA Hopper GPU (H100, H200), Hopper's own instructions (wgmma): runs on compute capability 9.0 only", sm="sm_90a"),
    ]
}


def get_target(name: str) -> Target:
    if name in TARGETS:
        return TARGETS[name]
    close = difflib.get_close_matches(name, TARGETS, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise TargetError(f"unknown target '{name}'", hint=f"{hint}known targets: {', '.join(TARGETS)} (`dsc targets` describes them)")
