"""GPU target descriptions: SM -> PTX ISA version, and LLVM's NVPTX target machine.

The PTX ISA version is the lowest one LLVM's NVPTX back end accepts for the
SM (`+ptxNN`): the lower the version, the older the driver that can JIT it.
CUDA 13.0's ptxas and the CUDA 12/13 drivers of Jetson Orin and H200 boards
take all of these; NVRTC 13.5 would write PTX 9.5, which they refuse.

    sm_80 (A100)          PTX 7.0   CUDA 11.0
    sm_86 (RTX 30, A10)   PTX 7.1   CUDA 11.1
    sm_87 (Jetson Orin)   PTX 7.4   CUDA 11.4
    sm_89 (RTX 40, L4)    PTX 7.8   CUDA 11.8
    sm_90 (H100, H200)    PTX 7.8   CUDA 11.8
    sm_90a (H100, H200)   PTX 8.0   CUDA 12.0   Hopper's own instructions (wgmma)

PTX compiled for sm_XY runs (JIT-compiled by the driver) on any GPU of
compute capability >= X.Y; the runtime's preflight checks both the GPU and
the driver (see dsc/runtime/cuda_executor.py). An architecture-specific
target (sm_90a) runs on compute capability 9.0 alone: its tensor-core
kernels use `wgmma.mma_async` (backends/cuda/wgmma.py), which no other
generation has.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsc.runtime.errors import TargetError

TRIPLE = "nvptx64-nvidia-cuda"
DATALAYOUT = "e-p6:32:32-i64:64-i128:128-v16:16-v32:32-n16:32:64"

# SM -> (PTX ISA major, minor): the lowest version NVPTX accepts for that SM.
PTX_ISA: dict[str, tuple[int, int]] = {
    "sm_80": (7, 0),
    "sm_86": (7, 1),
    "sm_87": (7, 4),
    "sm_89": (7, 8),
    "sm_90": (7, 8),
    "sm_90a": (8, 0),
}

# PTX ISA version -> the first CUDA release (driver API version, as cuDriverGetVersion reports it) that reads it.
PTX_ISA_DRIVER: dict[tuple[int, int], int] = {
    (7, 0): 11000, (7, 1): 11010, (7, 2): 11020, (7, 3): 11030, (7, 4): 11040, (7, 5): 11050,
    (7, 6): 11060, (7, 7): 11070, (7, 8): 11080, (8, 0): 12000, (8, 1): 12010, (8, 2): 12020,
    (8, 3): 12030, (8, 4): 12040, (8, 5): 12050, (8, 6): 12070, (8, 7): 12080, (8, 8): 12090,
    (9, 0): 13000,
}

# Dynamic shared memory per block a kernel may take (opted in above 48 KiB), by target: what every GPU
# that can run the target's PTX grants. sm_80 is the portable default (`--target cuda`), whose PTX also
# runs on sm_86/sm_89 parts (99 KiB); sm_87 (Orin) grants 163 KiB, sm_90 227 KiB.
SMEM_LIMIT = {"sm_80": 99 * 1024, "sm_86": 99 * 1024, "sm_87": 163 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024, "sm_90a": 227 * 1024}

# Multiprocessors of a typical part per SM: used to size grids (any count runs correctly).
SM_COUNT = {"sm_80": 108, "sm_86": 84, "sm_87": 16, "sm_89": 128, "sm_90": 132, "sm_90a": 132}


@dataclass(frozen=True)
class GpuTarget:
    sm: str  # "sm_90"
    tf32: bool = False  # float32 GEMMs on tensor cores with tf32 inputs (CompileOptions.tf32)

    @property
    def ptx_isa(self) -> tuple[int, int]:
        return PTX_ISA[self.sm]

    @property
    def ptx_isa_str(self) -> str:
        return "%d.%d" % self.ptx_isa

    @property
    def compute_capability(self) -> tuple[int, int]:
        n = int(self.sm.split("_")[1].rstrip("a"))
        return n // 10, n % 10

    @property
    def arch_specific(self) -> bool:
        """sm_90a: PTX for exactly this compute capability (no newer GPU runs it)."""
        return self.sm.endswith("a")

    @property
    def wgmma(self) -> bool:
        """Hopper's warpgroup tensor-core instructions are available (sm_90a)."""
        return self.sm == "sm_90a"

    @property
    def features(self) -> str:
        major, minor = self.ptx_isa
        return f"+ptx{major}{minor}"

    @property
    def min_driver(self) -> int:
        return PTX_ISA_DRIVER[self.ptx_isa]

    @property
    def sm_count(self) -> int:
        return SM_COUNT.get(self.sm, 80)

    @property
    def smem_limit(self) -> int:
        return SMEM_LIMIT.get(self.sm, 99 * 1024)

    def target_machine(self):
        from dsc.backends.cpu.target import init_llvm
        import llvmlite.binding as llvm

        init_llvm()
        return llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=self.sm, features=self.features, opt=3)


def gpu_target(sm: str, tf32: bool = False) -> GpuTarget:
    if sm not in PTX_ISA:
        raise TargetError(f"no CUDA code generation for {sm}", hint=f"GPU targets: {', '.join(PTX_ISA)}")
    return GpuTarget(sm, tf32)
