"""`dsc compile` and `dsc opt`: run pipelines, stop at phases, dump IR between passes.

    dsc compile model.onnx --compile-to fusion --print-ir-after-all
    dsc compile model.onnx --dump-ir-dir ir/ --timing
    dsc compile --compile-from graph-opt ir/05-dce.mlir --compile-to memory-planning
    dsc opt ir/05-dce.mlir -p 'fuse-conv-bn-relu,outline-kernels'
"""

from __future__ import annotations

import argparse
import sys

from dsc.runtime.errors import DscError


def add_dump_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("IR dumps")
    d.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass (to stderr)")
    d.add_argument("--print-ir-before", default="", metavar="PASS[,PASS]", help="print the IR before these passes")
    d.add_argument("--print-ir-after", default="", metavar="PASS[,PASS]", help="print the IR after these passes")
    d.add_argument("--print-ir-after-change", action="store_true", help="print the IR after each pass that changed it")
    d.add_argument("--dump-ir-dir", metavar="DIR", help="write one numbered file per pass (00-import.mlir, 01-canonicalize.mlir, ...)")
    d.add_argument("--elide-constants-larger-than", type=int, metavar="N", default=None, help="print constants of more than N elements as dense_resource<__elided__> (readable, not resumable)")
    d.add_argument("--timing", action="store_true", help="print a table of time and op count per pass")


def add_compile_args(c: argparse.ArgumentParser) -> None:
    from dsc.pipeline import PHASES

    c.add_argument("model", nargs="?", help="an ONNX model (.onnx), or with --compile-from an IR file (.mlir, '-' for stdin)")
    c.add_argument("--input-shape", type=_shape_arg, action="append", default=[], metavar="NAME=D0xD1x..", help="fix the shape of an input with symbolic dimensions (repeatable)")
    c.add_argument("--target", default="host", help="target name (see `dsc targets`; default: host)")
    c.add_argument("--compile-to", choices=PHASES, metavar="PHASE", help=f"stop after this phase and print or write its IR ({', '.join(PHASES)}; default: codegen, which writes the .dsc artifact; lowering prints LLVM IR)")
    c.add_argument("--compile-from", choices=PHASES, metavar="PHASE", help="the input is IR text produced after PHASE; resume from there")
    c.add_argument("--emit", choices=["graph"], help="shorthand: --emit graph = --compile-to import")
    c.add_argument("--print-pipeline", action="store_true", help="print the pass pipeline for the target and exit")
    c.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="mixed precision: compute type of matmul/conv (default fp32)")
    c.add_argument("--tf32", action="store_true", help="GPU targets: run float32 matmul/conv on tensor cores with tf32 inputs (~1e-3 relative error; like torch's allow_tf32)")
    c.add_argument("--amp-level", choices=["O0", "O1", "O2"], default="O1", help="O0 none; O1 (autocast) matmul/conv reduced, range-sensitive ops (softmax, norms, reductions, exp, ...) fp32, the rest follow their inputs; O2 all but the range-sensitive ops")
    c.add_argument("--place", action="append", default=[], metavar="NODE_OR_OP=DEVICE", help="force a node or op type onto a device (cpu or gpu); repeatable")
    c.add_argument("--explain-fusion", action="store_true", help="print, per ONNX node, its kernel or why it was not fused")
    c.add_argument("--memory-report", action="store_true", help="print the memory plan: arena size, no-reuse sum, lower bound")
    c.add_argument("-o", "--output", help="where to write the artifact (default: MODEL.dsc) or, with --compile-to, the IR")
    add_dump_args(c)


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=D0xD1x..., got '{text}'")
    try:
        return name, tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"dimensions must be integers separated by 'x', got '{dims}'") from None


def dump_options(args):
    from dsc.pipeline import DumpOptions

    def names(s: str) -> frozenset[str]:
        return frozenset(x.strip() for x in s.split(",") if x.strip())

    return DumpOptions(
        print_after_all=args.print_ir_after_all,
        print_before=names(args.print_ir_before),
        print_after=names(args.print_ir_after),
        print_after_change=args.print_ir_after_change,
        dump_dir=args.dump_ir_dir,
        elide=args.elide_constants_larger_than,
        timing=args.timing,
    )


def _read_ir(path: str):
    from dsc.dialects.asm import parse_module

    if path == "-":
        return parse_module(sys.stdin.read(), "<stdin>")
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise DscError(f"{path}: cannot read the IR file: {e.strerror}") from None
    return parse_module(text, path)


def _emit(module, args, elide_default: int | None) -> None:
    from dsc.dialects.asm import print_module

    elide = args.elide_constants_larger_than
    if args.output:
        with open(args.output, "w") as f:
            f.write(print_module(module, elide_larger_than=elide))
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(print_module(module, elide_larger_than=elide if elide is not None else elide_default))


def cmd_compile(args) -> int:
    from dsc.driver import codegen, source_hash
    from dsc.pipeline import PASS_PHASES, CompileOptions, check_phase, parse_passes, pipeline_for, run_pipeline, select
    from dsc.targets import get_target

    target = get_target(args.target)
    options = CompileOptions(precision=args.precision, amp_level=args.amp_level, place=tuple(args.place), tf32=args.tf32)
    stages = pipeline_for(target, options)
    if args.print_pipeline:
        print(f"pipeline for target '{target.name}':")
        print(f"  {'import':<16} (ONNX frontend)")
        for phase, spec in stages:
            print(f"  {phase:<16} {spec}")
        print(f"  {'lowering':<16} kernel IR -> LLVM IR (backends/cpu)")
        print(f"  {'codegen':<16} LLVM IR -> object code, packed into the .dsc artifact")
        return 0
    if not args.model:
        raise DscError("no model given", hint="dsc compile MODEL.onnx [options]; see dsc compile --help")
    stop = check_phase("import" if args.emit == "graph" else args.compile_to or "codegen")
    if args.compile_from:
        module = _read_ir(args.model)
    else:
        from dsc.frontends.onnx import import_onnx

        module = import_onnx(args.model, input_shapes=dict(args.input_shape))
    chosen = select(stages, args.compile_from, stop if stop in PASS_PHASES else "memory-planning")
    passes = parse_passes(",".join(spec for _, spec in chosen)) if chosen else []
    run_pipeline(module, passes, dump_options(args))
    if args.explain_fusion:
        from dsc.passes.explain_fusion import explain_fusion, format_explanation

        nodes = None
        if not args.compile_from:
            from dsc.frontends.onnx import load_model

            model, _ = load_model(args.model)
            nodes = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]
        print(format_explanation(explain_fusion(module, nodes)), file=sys.stderr)
    if args.memory_report:
        from dsc.passes.plan_memory import format_memory_report, memory_report

        print(format_memory_report(memory_report(module)), file=sys.stderr)
    if stop in PASS_PHASES:
        if args.output or not (args.explain_fusion or args.memory_report or args.timing) or args.compile_to or args.emit:
            _emit(module, args, elide_default=64)
        return 0
    if stop == "lowering":
        from dsc.backends.cpu.codegen import generate
        from dsc.backends.cpu.target import cpu_target_for

        text = generate(module, cpu_target_for(target)).llvm_ir
        if args.output:
            with open(args.output, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    data = codegen(module, target, None if args.compile_from else source_hash(args.model), options)
    out = args.output or _default_output(args.model)
    with open(out, "wb") as f:
        f.write(data)
    print(f"wrote {out} ({len(data) / 1e6:.1f} MB, target {target.name})", file=sys.stderr)
    return 0


def _default_output(model: str) -> str:
    import os

    base = os.path.splitext(os.path.basename(model))[0] if model != "-" else "model"
    return base + ".dsc"


def cmd_opt(args) -> int:
    from dsc.pipeline import parse_passes, run_pipeline

    module = _read_ir(args.file)
    passes = parse_passes(args.passes) if args.passes else []
    run_pipeline(module, passes, dump_options(args))
    _emit(module, args, elide_default=None)
    return 0


def add_opt_args(o: argparse.ArgumentParser) -> None:
    o.add_argument("file", help="IR text file (.mlir), or '-' for stdin")
    o.add_argument("-p", "--passes", default="", metavar="PIPELINE", help="passes to run, e.g. 'canonicalize,fold-batchnorm,plan-memory' or 'place-devices{gpu=sm_87}'")
    o.add_argument("-o", "--output", help="write the IR here instead of stdout")
    add_dump_args(o)
