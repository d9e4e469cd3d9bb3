"""Benchmarks: dsc against onnxruntime on the same machine, interleaved in one run.

    python -m dsc.tools.bench                 # the zoo at batch 1 (make bench)
    python -m dsc.tools.bench --models resnet50,bert_base --batch 1,8
    dsc bench model.onnx --compare onnxruntime

Each round runs dsc once then onnxruntime once (A B A B ...), with the same
thread count, so machine noise hits both alike; the table gives medians, the
ratio dsc/onnxruntime (< 1 is faster) and dsc's GFLOP/s. Neither runtime's
threads spin between runs (onnxruntime: allow_spinning=0; dsc: parked
workers spin briefly, then yield and sleep), so one does not slow the other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

ZOO_ORDER = ["mlp", "resnet18", "resnet50", "mobilenetv2", "efficientnet_b0", "bert_base"]


def model_flops(model) -> float:
    """2 x multiply-adds of the convolutions and matrix products, from dsc's static shapes."""
    from dsc.dialects import graph as g
    from dsc.dialects.tensor_types import sig_of
    from dsc.frontends.onnx import import_onnx

    total = 0
    for op in import_onnx(model).walk():
        if isinstance(op, g.ConvOp):
            w = sig_of(op.weight.type).shape
            total += 2 * np.prod(sig_of(op.result.type).shape) * np.prod(w[1:])
        elif isinstance(op, g.GemmOp | g.MatMulOp):
            a = sig_of(op.operands[0].type).shape
            k = a[0] if isinstance(op, g.GemmOp) and op.py_attrs()["trans_a"] else a[-1]
            total += 2 * np.prod(sig_of(op.result.type).shape) * k
    return float(total)


def bench_one(model, name: str, threads: int, rounds: int, warmup: int = 3, compare: bool = True) -> dict:
    import onnxruntime as ort

    import dsc
    import dsc.runtime
    from dsc.tools import zoo

    t0 = time.perf_counter()
    data = dsc.compile(model)
    compile_s = time.perf_counter() - t0
    sess = dsc.runtime.load(data, num_threads=threads)
    feeds = zoo.example_inputs(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # interleaved runs: a runtime whose idle threads keep spinning steals the cores from the
    # other's next run, so onnxruntime's threads (like dsc's) stop spinning between runs
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ref = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]) if compare else None
    ours = sess.run(None, feeds)
    if ref is not None:
        want = ref.run(None, feeds)
        err = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(ours, want))
    else:
        err = float("nan")
    for _ in range(warmup):
        sess.run(None, feeds)
        if ref is not None:
            ref.run(None, feeds)
    td, to = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        sess.run(None, feeds)
        td.append(time.perf_counter() - t)
        if ref is not None:
            t = time.perf_counter()
            ref.run(None, feeds)
            to.append(time.perf_counter() - t)
    flops = model_flops(model)
    md = statistics.median(td)
    mo = statistics.median(to) if to else float("nan")
    return {"model": name, "dsc_ms": md * 1e3, "ort_ms": mo * 1e3, "ratio": md / mo if to else float("nan"), "gflops": flops / md / 1e9 if flops else float("nan"), "compile_s": compile_s, "max_err": err}


def profile_one(model, name: str, threads: int, top: int = 15) -> str:
    """Per-step medians of a profiling build: where the time goes."""
    import dsc.runtime
    from dsc.driver import compile as dsc_compile
    from dsc.pipeline import CompileOptions
    from dsc.tools import zoo

    sess = dsc.runtime.load(dsc_compile(model, options=CompileOptions(profile=True)), num_threads=threads)
    steps = sess.profile(zoo.example_inputs(model), repeats=10)
    total = sum(t for _, t in steps)
    lines = [f"{name}: {total * 1e3:.3f} ms in {len(steps)} steps; top {top}:"]
    for label, t in sorted(steps, key=lambda x: -x[1])[:top]:
        lines.append(f"  {t * 1e3:8.3f} ms  {100 * t / total:5.1f}%  {label}")
    return "\n".join(lines)


def format_table(rows: list[dict], threads: int) -> str:
    lines = [
        f"threads {threads}, medians of interleaved runs (dsc, onnxruntime, dsc, ...)",
        f"{'model':<22} {'dsc ms':>9} {'ort ms':>9} {'dsc/ort':>8} {'GFLOP/s':>8} {'compile s':>10} {'max |err|':>10}",
    ]
    for r in rows:
        lines.append(f"{r['model']:<22} {r['dsc_ms']:>9.3f} {r['ort_ms']:>9.3f} {r['ratio']:>8.2f} {r['gflops']:>8.1f} {r['compile_s']:>10.2f} {r['max_err']:>10.2e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from dsc.runtime.errors import DscError
    from dsc.tools import zoo

    p = argparse.ArgumentParser(prog="python -m dsc.tools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="an ONNX model (default: the zoo)")
    p.add_argument("--models", default=",".join(ZOO_ORDER), help="zoo models, comma-separated")
    p.add_argument("--batch", default="1", help="batch sizes for zoo models, comma-separated")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--compare", choices=["onnxruntime", "none"], default="onnxruntime")
    p.add_argument("--profile", action="store_true", help="print the slowest steps of each model instead of the comparison")
    args = p.parse_args(argv)
    if args.profile:
        import onnx

        for name in [args.model] if args.model else args.models.split(","):
            model = onnx.load(name) if args.model else zoo.build(name, batch=int(args.batch.split(",")[0]))
            print(profile_one(model, name, args.threads))
        return 0
    rows = []
    try:
        if args.model:
            import onnx

            rows.append(bench_one(onnx.load(args.model), os.path.basename(args.model), args.threads, args.rounds, compare=args.compare != "none"))
        else:
            for b in [int(x) for x in args.batch.split(",")]:
                for name in args.models.split(","):
                    model = zoo.build(name, batch=b)
                    rows.append(bench_one(model, f"{name} b{b}", args.threads, args.rounds, compare=args.compare != "none"))
                    print(format_table(rows[-1:], args.threads).split("\n")[-1], file=sys.stderr, flush=True)
    except DscError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(rows, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
