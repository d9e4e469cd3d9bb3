"""The compiler driver: model in, artifact out.

    data = dsc.compile("model.onnx", target="host")          # bytes of a .dsc file
    dsc.compile("model.onnx", target="x86-64-v3", output="model.dsc")

It runs import, the target's pipeline (see dsc.pipeline) and the backend,
and packs the result (see dsc/runtime/artifact.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

import onnx
from xdsl.dialects.builtin import ModuleOp

from dsc.pipeline import CompileOptions, DumpOptions, parse_passes, pipeline_for, run_pipeline, select
from dsc.runtime.errors import DscError, TargetError
from dsc.targets import Target, get_target


def source_hash(model) -> str | None:
    if isinstance(model, onnx.ModelProto):
        return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    if isinstance(model, str | os.PathLike) and os.path.exists(model):
        with open(model, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    return None


def optimize(module: ModuleOp, target: Target, options: CompileOptions = CompileOptions(), dump: DumpOptions | None = None, start_after: str | None = None) -> ModuleOp:
    """Run the target's pipeline through memory planning on an imported module."""
    stages = select(pipeline_for(target, options), start_after, "memory-planning")
    run_pipeline(module, parse_passes(",".join(spec for _, spec in stages)) if stages else [], dump)
    return module


def codegen(module: ModuleOp, target: Target, source: str | None = None, options: CompileOptions = CompileOptions(), gpu_emulation: bool = False) -> bytes:
    """Planned kernel IR -> artifact bytes.

    CPU+GPU targets (cuda, sm_XY, orin) go through the CUDA backend: CPU
    kernels as native code in segments, GPU kernels as PTX, and a schedule
    (dsc/backends/cuda/codegen.py). `gpu_emulation` also packs the GPU
    kernels built for this CPU, which dsc's GPU emulator runs (tests).
    """
    from dsc.artifact_writer import build_artifact
    from dsc.backends.cpu.codegen import generate
    from dsc.backends.cpu.target import cpu_target_for
    from dsc.reference.evaluator import arg_names, main_func, result_names

    _check_codegen(target, options)
    cpu = cpu_target_for(target)
    f = main_func(module)
    opts = {"precision": options.precision, "amp_level": options.amp_level, "place": list(options.place)}
    if options.tf32:
        opts["tf32"] = True
    if target.has_gpu:
        from dsc.backends.cuda.codegen import generate as generate_hetero
        from dsc.backends.cuda.target import gpu_target

        hp = generate_hetero(module, cpu, gpu_target(target.sm, tf32=options.tf32), emulate=gpu_emulation)
        return build_artifact(hp.cpu, cpu, target.name, arg_names(f), result_names(f), source, opts, gpu=hp.gpu, segments=hp.segments)
    prog = generate(module, cpu, profile=options.profile)
    if options.profile:
        opts["profile"] = True
    return build_artifact(prog, cpu, target.name, arg_names(f), result_names(f), source, opts)


def _check_codegen(target: Target, options: CompileOptions = CompileOptions()) -> None:
    """Refuse, before any work, a target (or option) this version cannot produce an artifact for."""
    if options.tf32 and not target.has_gpu:
        raise TargetError(f"--tf32 selects GPU tensor cores, and target '{target.name}' has no GPU", hint="drop --tf32, or compile for a GPU target (--target cuda, sm_80 ... sm_90, orin)")
    if target.reference:
        raise TargetError("the reference target evaluates with NumPy and produces no artifact", hint="use `dsc run MODEL --target reference`, or compile for host")
    if target.has_gpu:
        from dsc.backends.cuda.target import PTX_ISA

        if target.sm not in PTX_ISA:
            raise TargetError(f"GPU code generation for {target.sm} (target '{target.name}') is not available", hint=_cpu_only_hint(target))


def _cpu_only_hint(target: Target) -> str:
    from dsc.targets import TARGETS

    same_cpu = [t.name for t in TARGETS.values() if not t.has_gpu and t.triple is not None and (t.triple, t.cpu) == (target.triple, target.cpu)]
    if same_cpu:
        return f"compile for its CPU alone with --target {same_cpu[-1]} (every kernel on the CPU; the artifact runs there with dsc.runtime)"
    return "compile for a CPU target (host, x86-64-v3, aarch64, ...) for now"


def compile_module(
    module: ModuleOp,
    target: str = "host",
    *,
    options: CompileOptions = CompileOptions(),
    dump: DumpOptions | None = None,
    source: str | None = None,
    gpu_emulation: bool = False,
) -> bytes:
    """Compile a graph-dialect module (from any frontend) to artifact bytes."""
    tgt = get_target(target)
    _check_codegen(tgt, options)
    optimize(module, tgt, options, dump)
    return codegen(module, tgt, source, options, gpu_emulation)


def compile(
    model,
    target: str = "host",
    *,
    output: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    options: CompileOptions = CompileOptions(),
    dump: DumpOptions | None = None,
    gpu_emulation: bool = False,
) -> bytes:
    """Compile an ONNX model (path or ModelProto) for a target; returns (and optionally writes) the artifact."""
    from dsc.frontends.onnx import import_onnx

    get_target(target)  # an unknown target fails before the import work
    module = import_onnx(model, input_shapes=input_shapes)
    data = compile_module(module, target, options=options, dump=dump, source=source_hash(model), gpu_emulation=gpu_emulation)
    if output:
        try:
            with open(output, "wb") as f:
                f.write(data)
        except OSError as e:
            raise DscError(f"{output}: cannot write the artifact: {e.strerror}") from None
    return data
