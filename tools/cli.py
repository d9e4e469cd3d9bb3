"""The `dsc` command line: compile, check, run, targets, zoo.

Every `DscError` becomes one line, `error: <what, where>` (plus a `hint:`
line saying what to do), and exit code 1; never a traceback. `--traceback`
shows the Python traceback for dsc's own debugging.
"""

from __future__ import annotations

import argparse
import sys
import time

from dsc.runtime.errors import DscError
from dsc.tools import compile_cmd

EPILOG = "Run `dsc COMMAND --help` for a command's options. Docs: README.md."


def _input_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got '{text}'")
    return name, path


def _add_model_args(p: argparse.ArgumentParser, what: str = "an ONNX model file (.onnx)") -> None:
    p.add_argument("model", help=what)
    p.add_argument("--input-shape", type=compile_cmd._shape_arg, action="append", default=[], metavar="NAME=D0xD1x..", help="fix the shape of an input with symbolic dimensions (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsc", description="dsc: a graph compiler for neural networks.", epilog=EPILOG)
    p.add_argument("--traceback", action="store_true", help="show Python tracebacks of errors (for debugging dsc)")
    p.add_argument("--version", action="store_true", help="print dsc's version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("compile", help="compile a model through the phases; print or write the IR", description="Import a model and run the pipeline of the target up to a phase (default: the last available); print or write its IR.")
    compile_cmd.add_compile_args(c)

    o = sub.add_parser("opt", help="run passes on IR text (like mlir-opt)", description="Parse IR text, run the given passes, print the result.")
    compile_cmd.add_opt_args(o)

    k = sub.add_parser("check", help="list the model's op types and whether dsc supports each")
    _add_model_args(k)

    r = sub.add_parser("run", help="run a model and print or save its outputs")
    _add_model_args(r, "an ONNX model (.onnx) or a compiled artifact (.dsc)")
    r.add_argument("--target", default="host", help="target to compile for and run on (default: host; reference = NumPy)")
    r.add_argument("--input", type=_input_arg, action="append", default=[], metavar="NAME=FILE.npy", help="an input array (repeatable); missing inputs are random (seed 0)")
    r.add_argument("-o", "--output", help="save the outputs to this .npz file")
    r.add_argument("--compare", choices=["onnxruntime"], help="also run onnxruntime and report the largest differences")
    r.add_argument("--rtol", type=float, default=1e-4)
    r.add_argument("--atol", type=float, default=1e-4)

    sub.add_parser("bench", help="time a model (or the zoo) against onnxruntime, interleaved (see dsc bench --help)")

    i = sub.add_parser("inspect", help="print an artifact's manifest readably")
    i.add_argument("artifact", help="a compiled artifact (.dsc)")
    i.add_argument("-v", "--verbose", action="store_true", help="also list the execution plan's steps")

    sub.add_parser("targets", help="list the targets dsc knows")

    z = sub.add_parser("zoo", help="write a model of dsc's benchmark zoo (built with random weights) as .onnx")
    z.add_argument("name", help="resnet18, resnet50, mobilenetv2, efficientnet_b0, bert_base or mlp")
    z.add_argument("-o", "--output", required=True)
    z.add_argument("--batch", type=int, default=1)
    z.add_argument("--small", action="store_true", help="the small variant used by the tests")
    return p


def cmd_check(args) -> int:
    from collections import Counter

    from dsc.frontends.onnx import load_model, supported_ops

    model, _ = load_model(args.model)
    ok = supported_ops()
    counts = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
    print(f"{args.model}: {len(model.graph.node)} nodes, {len(counts)} op types, opset {opset}")
    width = max(len(t) for t in counts)
    missing = 0
    for t, n in sorted(counts.items()):
        good = t in ok
        missing += not good
        print(f"  {t:<{width}}  {n:>5}  {'supported' if good else 'NOT SUPPORTED'}")
    print("all op types are supported" if not missing else f"{missing} op type(s) not supported")
    return 0 if not missing else 1


def _random_feeds(specs, given: dict[str, str]):
    """Inputs for `dsc run`: from .npy files where given, else random (seed 0)."""
    import numpy as np

    names = [n for n, _, _ in specs]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise DscError(f"--input names {unknown} are not inputs of the model", hint=f"the inputs are {names}")
    rng = np.random.default_rng(0)
    feeds = {}
    for name, shape, dtype in specs:
        if name in given:
            try:
                feeds[name] = np.load(given[name])
            except OSError as e:
                raise DscError(f"--input {name}: cannot read {given[name]}: {e}") from None
        elif dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = np.ones(shape, dtype=bool)
        else:
            feeds[name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def cmd_run(args) -> int:
    import numpy as np

    import dsc.runtime
    from dsc.targets import get_target

    target = get_target(args.target)
    is_artifact = args.model.endswith(".dsc")
    t0 = time.perf_counter()
    if is_artifact or not target.reference:
        if is_artifact:
            sess = dsc.runtime.load(args.model)
            how = f"artifact {args.model} (target {sess.manifest['target']['name']})"
        else:
            from dsc.driver import compile as dsc_compile

            sess = dsc.runtime.load(dsc_compile(args.model, target.name, input_shapes=dict(args.input_shape)))
            how = f"target {target.name}, compiled in {time.perf_counter() - t0:.2f} s"
        specs = [(a.name, tuple(a.shape), a.dtype) for a in sess.get_inputs()]
        feeds = _random_feeds(specs, dict(args.input))
        sess.run(None, feeds)  # warm up
        t1 = time.perf_counter()
        outs = sess.run(None, feeds)
        dt = time.perf_counter() - t1
        onames = [a.name for a in sess.get_outputs()]
    else:
        from dsc.dialects.tensor_types import sig_of
        from dsc.frontends.onnx import import_onnx
        from dsc.reference import run_module
        from dsc.reference.evaluator import arg_names, main_func, result_names

        module = import_onnx(args.model, input_shapes=dict(args.input_shape))
        f = main_func(module)
        specs = [(n, sig_of(a.type).shape, sig_of(a.type).dtype) for n, a in zip(arg_names(f), f.body.block.args)]
        feeds = _random_feeds(specs, dict(args.input))
        t1 = time.perf_counter()
        outs = run_module(module, feeds)
        dt = time.perf_counter() - t1
        onames = result_names(f)
        how = "target reference (NumPy)"
    for n, o in zip(onames, outs):
        print(f"{n}: {o.dtype} {list(o.shape)}  mean {float(np.mean(o)):.6g}  std {float(np.std(o)):.6g}")
    print(f"ran in {dt * 1000:.2f} ms on {how}")
    if args.output:
        np.savez(args.output, **dict(zip(onames, outs)))
    if args.compare:
        if is_artifact:
            raise DscError("--compare needs the ONNX model, not an artifact", hint="dsc run model.onnx --compare onnxruntime")
        import onnxruntime as ort

        sess_ref = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
        ref = sess_ref.run(None, feeds)
        bad = 0
        for n, o, r in zip(onames, outs, ref):
            err = float(np.max(np.abs(o.astype(np.float64) - r))) if o.size else 0.0
            ok = np.allclose(o, r, rtol=args.rtol, atol=args.atol)
            bad += not ok
            print(f"{n}: max |dsc - onnxruntime| = {err:.3g}  {'OK' if ok else 'MISMATCH'} (rtol {args.rtol}, atol {args.atol})")
        return 1 if bad else 0
    return 0


def cmd_inspect(args) -> int:
    from dsc.runtime.artifact import read_artifact

    art = read_artifact(args.artifact)
    m = art.manifest
    t = m["target"]
    print(f"{args.artifact}: dsc artifact v{m['format_version']}, built by dsc {m['dsc_version']}")
    print(f"  target     {t['name']} ({t['triple']}, cpu {t['cpu']}, needs {', '.join(t['cpu_features']) or 'no special features'})")
    for kind in ("inputs", "outputs"):
        for a in m[kind]:
            print(f"  {kind[:-1]:<10} {a['name']}: {a['dtype']} {a['shape']}")
    print(f"  arena      {m['arena_bytes'] / 1e6:.2f} MB")
    print(f"  weights    {m['weights']['bytes'] / 1e6:.2f} MB  sha256 {m['weights']['sha256'][:16]}...")
    code = ", ".join(f"{k}: {v['member']} ({v['bytes'] / 1e3:.0f} kB)" for k, v in m["code"].items())
    print(f"  code       {code}")
    print(f"  source     sha256 {str(m.get('source_model_sha256'))[:16]}...")
    print(f"  options    {m.get('options')}")
    gpu = m.get("gpu")
    if gpu:
        print(f"  gpu        {gpu['sm']}, PTX ISA {gpu['ptx_isa']}: {gpu['member']} ({len(art.objects[gpu['member']]) / 1e3:.0f} kB), {gpu['kernels']} kernels, device arena {gpu['arena_bytes'] / 1e6:.2f} MB")
    steps = m["plan"]["steps"]
    sched = m["plan"].get("schedule")
    if sched is None:
        print(f"  plan       {len(steps)} steps")
    else:
        count = {op: sum(1 for s in sched if s["op"] == op) for op in ("cpu", "copy", "launch")}
        print(f"  plan       {count['launch']} GPU launches, {count['copy']} transfers, {count['cpu']} CPU segments ({len(steps)} CPU steps)")
    if args.verbose:
        if sched is None:
            for i, s in enumerate(steps):
                print(f"    {i:4d}  {s}")
        else:
            for i, s in enumerate(sched):
                what = {"cpu": lambda: f"cpu    {s['entry']}: {len(s['steps'])} steps", "copy": lambda: f"copy   {s['label']} ({s['bytes']} bytes)", "launch": lambda: f"launch {s['kernel']} grid {s['grid']} block {s['block'][0]}"}[s["op"]]()
                print(f"    {i:4d}  {what}")
    return 0


def cmd_targets(args) -> int:
    from dsc.targets import TARGETS

    for t in TARGETS.values():
        print(f"  {t.name:<13} {t.description}")
    return 0


def cmd_zoo(args) -> int:
    import onnx

    from dsc.tools import zoo

    model = zoo.build(args.name, batch=args.batch, small=args.small)
    onnx.save(model, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


COMMANDS = {"compile": compile_cmd.cmd_compile, "opt": compile_cmd.cmd_opt, "check": cmd_check, "run": cmd_run, "inspect": cmd_inspect, "targets": cmd_targets, "zoo": cmd_zoo}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own parser (python -m dsc.tools.bench)
        from dsc.tools.bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from dsc import __version__

        print(f"dsc {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except DscError as e:
        if args.traceback:
            raise
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
