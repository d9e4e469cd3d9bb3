"""Phases, per-target pipelines (plain data), and the pass runner with IR dumps.

The phase list a user can stop at:

    import → graph-opt → fusion → placement → memory-planning → lowering → codegen

`pipeline_for(target)` returns `[(phase, pass spec), ...]`: what
`dsc compile --print-pipeline` shows and what `run_pipeline` executes. The
runner prints or dumps IR around passes (`DumpOptions`), times each pass,
and counts ops, so every stage can be inspected, edited and resumed
(`dsc opt`, `dsc compile --compile-from PHASE FILE.mlir`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.arg_spec import parse_pipeline
from xdsl.utils.exceptions import VerifyException

from dsc.dialects.asm import print_module
from dsc.passes.registry import PASSES, pass_class
from dsc.runtime.errors import DscError, IRError
from dsc.targets import Target

PHASES = ("import", "graph-opt", "fusion", "placement", "memory-planning", "lowering", "codegen")
# Phases that are xDSL passes (the rest, lowering and codegen, are the backend's).
PASS_PHASES = ("import", "graph-opt", "fusion", "placement", "memory-planning")


@dataclass(frozen=True)
class CompileOptions:
    precision: str = "fp32"  # fp32 | fp16 | bf16
    amp_level: str = "O1"  # O0 | O1 | O2
    place: tuple[str, ...] = ()  # NODE_OR_OP=device overrides
    profile: bool = False  # CPU code records a timestamp per step (dsc bench --profile)
    tf32: bool = False  # GPU: float32 GEMMs and convolutions on tensor cores with tf32 inputs


def pipeline_for(target: Target, options: CompileOptions = CompileOptions()) -> list[tuple[str, str]]:
    """The passes of each phase for a target, as (phase, pass spec) pairs."""
    stages = [
        ("graph-opt", "canonicalize"),
        ("graph-opt", "fold-constants"),
        ("graph-opt", "fold-batchnorm"),
        ("graph-opt", "cse"),
        ("graph-opt", "dce"),
    ]
    if options.precision != "fp32" and options.amp_level != "O0":
        stages.append(("graph-opt", f"lower-precision{{precision={options.precision} level={options.amp_level}}}"))
    stages += [
        ("fusion", "fuse-conv-bn-relu"),
        ("fusion", "fuse-matmul-epilogue"),
        ("fusion", "fuse-reductions"),
        ("fusion", "fuse-elementwise"),
        ("fusion", "outline-kernels"),
    ]
    if target.has_gpu:
        overrides = ",".join(options.place)
        spec = f'place-devices{{gpu="{target.sm}"' + (f' overrides="{overrides}"' if overrides else "") + (" shared_memory=true" if target.unified_memory else "") + "}"
        stages.append(("placement", spec))
    stages.append(("memory-planning", "plan-memory"))
    return stages


def check_phase(name: str) -> str:
    if name not in PHASES:
        raise DscError(f"unknown phase '{name}'", hint=f"phases: {', '.join(PHASES)}")
    return name


def select(stages: list[tuple[str, str]], start_after: str | None, stop_after: str | None) -> list[tuple[str, str]]:
    """The stages strictly after phase `start_after` up to and including `stop_after`."""
    lo = PHASES.index(start_after) if start_after else 0
    hi = PHASES.index(stop_after) if stop_after else len(PHASES) - 1
    return [(ph, spec) for ph, spec in stages if lo < PHASES.index(ph) <= hi]


def parse_passes(spec: str) -> list[ModulePass]:
    """'a,b{opt=1}' -> pass instances, with a DscError naming unknown passes or options."""
    try:
        specs = list(parse_pipeline(spec))
    except Exception as e:
        raise DscError(f"cannot parse the pass pipeline '{spec}': {e}", hint="write passes as 'pass-a,pass-b{option=value}'") from None
    unknown = [s.name for s in specs if s.name not in PASSES]
    if unknown:
        raise DscError(f"unknown pass(es): {', '.join(unknown)}", hint=f"known passes: {', '.join(PASSES)}")
    out = []
    for s in specs:
        try:
            out.append(pass_class(s.name).from_pass_spec(s))
        except Exception as e:
            raise DscError(f"bad options for pass '{s.name}': {e}") from None
    return out


@dataclass
class DumpOptions:
    print_after_all: bool = False
    print_before: frozenset[str] = frozenset()
    print_after: frozenset[str] = frozenset()
    print_after_change: bool = False
    dump_dir: str | None = None
    elide: int | None = None
    timing: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)


@dataclass
class PassRecord:
    name: str
    seconds: float
    ops: int
    changed: bool


def count_ops(module: ModuleOp) -> int:
    return sum(1 for _ in module.walk()) - 1


def _fingerprint(module: ModuleOp) -> str:
    return print_module(module, elide_larger_than=0)


def run_pipeline(module: ModuleOp, passes: list[ModulePass], dump: DumpOptions | None = None, ctx: Context | None = None, first_index: int = 1) -> list[PassRecord]:
    """Apply passes in order, verifying after each and dumping IR as asked."""
    from dsc.dialects.asm import make_context

    dump = dump or DumpOptions()
    ctx = ctx or make_context()
    if dump.dump_dir:
        os.makedirs(dump.dump_dir, exist_ok=True)
        if first_index == 1:
            _write(dump, os.path.join(dump.dump_dir, "00-import.mlir"), module)
    want_change = dump.print_after_change
    records = []
    for i, p in enumerate(passes, start=first_index):
        if p.name in dump.print_before:
            _print(dump, f"IR Dump Before {p.name}", module)
        before = _fingerprint(module) if want_change else None
        t0 = time.perf_counter()
        p.apply(ctx, module)
        dt = time.perf_counter() - t0
        try:
            module.verify()
        except VerifyException as e:
            raise IRError(f"pass '{p.name}' produced IR that does not verify: {e}", hint="this is a dsc bug; rerun with --dump-ir-dir to see the IR") from None
        changed = before is None or _fingerprint(module) != before
        records.append(PassRecord(p.name, dt, count_ops(module), changed))
        if dump.print_after_all or p.name in dump.print_after or (want_change and changed):
            _print(dump, f"IR Dump After {p.name}", module)
        if dump.dump_dir:
            _write(dump, os.path.join(dump.dump_dir, f"{i:02d}-{p.name}.mlir"), module)
    if dump.timing:
        print_timing(records, dump.stream)
    return records


def _print(dump: DumpOptions, title: str, module: ModuleOp) -> None:
    dump.stream.write(f"// -----// {title} //----- //\n")
    dump.stream.write(print_module(module, elide_larger_than=dump.elide))
    dump.stream.flush()


def _write(dump: DumpOptions, path: str, module: ModuleOp) -> None:
    with open(path, "w") as f:
        f.write(print_module(module, elide_larger_than=dump.elide))


def print_timing(records: list[PassRecord], stream: TextIO) -> None:
    total = sum(r.seconds for r in records)
    stream.write(f"{'pass':<28} {'time (ms)':>10} {'%':>6} {'ops after':>10}\n")
    for r in records:
        pct = 100 * r.seconds / total if total else 0.0
        stream.write(f"{r.name:<28} {r.seconds * 1000:>10.2f} {pct:>6.1f} {r.ops:>10}\n")
    stream.write(f"{'total':<28} {total * 1000:>10.2f}\n")
