"""CPU target descriptions for the llvmlite backend: triple, CPU, features, vector width.

A table of capabilities, not a class hierarchy: the emitters read
`vector_width` (f32 lanes of the widest useful vector register) and
`registers` (vector registers the micro-kernels may block over).
"""

from __future__ import annotations

from dataclasses import dataclass

import llvmlite.binding as llvm

from dsc.runtime.errors import TargetError

_initialized = False


def init_llvm() -> None:
    global _initialized
    if not _initialized:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
        _initialized = True


@dataclass(frozen=True)
class CpuTarget:
    name: str
    triple: str
    cpu: str
    features: str  # LLVM feature string, "+avx2,+fma,..."
    vector_width: int  # f32 lanes
    registers: int  # vector registers

    @property
    def arch(self) -> str:
        return self.triple.split("-")[0]

    def required_features(self) -> list[str]:
        """The CPU features a machine must have to run code for this target (for the manifest)."""
        want = {"avx512f", "avx2", "fma", "avx", "sse4.2", "neon", "dotprod", "fullfp16"}
        return sorted(f[1:] for f in self.features.split(",") if f.startswith("+") and f[1:] in want)

    def target_machine(self):
        init_llvm()
        t = llvm.Target.from_triple(self.triple)
        return t.create_target_machine(cpu=self.cpu, features=self.features, opt=3, reloc="pic", codemodel="default")


_X86_LEVELS = {
    "x86-64": ("x86-64", "+sse2", 4, 16),
    "x86-64-v3": ("x86-64-v3", "+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+movbe,+sse4.2,+popcnt", 8, 16),
    "x86-64-v4": ("x86-64-v4", "+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+sse4.2,+popcnt,+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd", 16, 32),
}
_ARM = {
    "generic": ("+neon", 4, 32),
    "cortex-a78ae": ("+neon,+dotprod,+fullfp16,+v8.2a", 4, 32),
}


def host_target() -> CpuTarget:
    init_llvm()
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    feats = llvm.get_host_cpu_features()
    features = feats.flatten()
    if triple.startswith(("x86_64", "i686")):
        width = 16 if feats.get("avx512f") else 8 if feats.get("avx2") or feats.get("avx") else 4
        regs = 32 if feats.get("avx512f") else 16
    else:
        width, regs = 4, 32
    return CpuTarget("host", triple, cpu, features, width, regs)


def cpu_target_for(target) -> CpuTarget:
    """The CPU half of a dsc Target (see dsc.targets)."""
    if target.triple is None:
        t = host_target()
        return CpuTarget(target.name, t.triple, t.cpu, t.features, t.vector_width, t.registers)
    if target.triple.startswith("x86_64"):
        cpu, features, width, regs = _X86_LEVELS[target.cpu]
        return CpuTarget(target.name, target.triple, cpu, features, width, regs)
    if target.triple.startswith("aarch64"):
        features, width, regs = _ARM[target.cpu]
        return CpuTarget(target.name, target.triple, target.cpu, features, width, regs)
    raise TargetError(f"no CPU backend for target '{target.name}' ({target.triple})")
