"""Benchmarks: dsc against onnxruntime on the same machine, interleaved in one run.

    python -m dsc.tools.bench                 # the zoo at batch 1 (make bench)
    python -m dsc.tools.bench --models resnet50,bert_base --batch 1,8
    dsc bench model.onnx --compare onnxruntime

Each round runs dsc once then onnxruntime once (A B A B ...), with the same
thread count, so machine noise hits both alike; the table gives medians, the
ratio dsc/onnxruntime (< 1 is faster) and dsc's GFLOP/s. Neither runtime's
threads spin between runs (onnxruntime: allow_spinning=0; dsc: parked
workers spin briefly, then yield and sleep), so one does not slow the other.

Memory (on by default, --no-memory skips it): each runtime's peak resident set
(VmHWM in /proc/self/status) in a fresh process of its own that imports the
runtime, loads the model (dsc: the compiled .dsc file, so compiling does not
count; onnxruntime: an InferenceSession with the settings above) and runs it
10 times. "dsc MiB"/"ort MiB" are those peaks; the "own" columns subtract
the process's resident set after `import numpy` and the runtime, before the
model loads (the interpreter and the runtime's own code). About 0.5-8 s per
model and batch (two interpreter starts; 10 runs each, or at least 3 within ~3 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


# Run in a fresh interpreter: python -c _RSS_CHILD {dsc|ort} MODEL_FILE FEEDS.npz THREADS RUNS BUDGET_S
# (RUNS runs, or fewer but at least 3 once BUDGET_S seconds went by: the peak comes with the first runs)
_RSS_CHILD = r"""
import json, sys, time
def rss():
    with open("/proc/self/status") as f:
        d = dict(l.split(":", 1) for l in f if ":" in l)
    return int(d["VmRSS"].split()[0]) / 1024, int(d["VmHWM"].split()[0]) / 1024
kind, path, feeds, threads, runs, budget_s = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
import numpy as np
if kind == "dsc":
    import dsc.runtime
else:
    import onnxruntime as ort
with np.load(feeds) as z:
    x = {k: z[k] for k in z.files}
base = rss()[0]
if kind == "dsc":
    sess = dsc.runtime.load(path, num_threads=threads)
else:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
loaded = rss()[0]
t0, done = time.perf_counter(), 0
while done < runs and (done < 3 or time.perf_counter() - t0 < budget_s):
    sess.run(None, x)
    done += 1
now, peak = rss()
print(json.dumps({"base_mib": base, "loaded_mib": loaded, "final_mib": now, "peak_mib": peak, "runs": done}))
"""


def peak_rss(kind: str, model_file: str, feeds: dict[str, np.ndarray], threads: int, runs: int = 10, budget_s: float = 3.0) -> dict:
    """Peak resident memory (MiB) of a fresh process that loads `model_file` and runs it `runs` times
    (at least 3, fewer than `runs` when they take more than budget_s seconds).

    kind "dsc" (a .dsc artifact, dsc.runtime) or "ort" (a .onnx, onnxruntime with the bench's
    settings). Returns base_mib (after `import numpy` and the runtime, inputs loaded, before
    the model), loaded_mib (after loading), final_mib and peak_mib (VmHWM: the high-water mark).
    """
    with tempfile.TemporaryDirectory(prefix="dsc-rss-") as tmp:
        npz = os.path.join(tmp, "feeds.npz")
        np.savez(npz, **feeds)
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, kind, os.path.abspath(model_file), npz, str(threads), str(runs), str(budget_s)], check=False, capture_output=True, text=True, cwd=tmp)  # cwd: no stray ./dsc folder shadows the package
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement of {kind} {model_file} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_one(model, data: bytes, threads: int, runs: int = 10, compare: bool = True) -> dict:
    """Peak RSS of dsc (from the artifact `data`) and of onnxruntime (from `model`), each in its own process."""
    from dsc.tools import zoo

    feeds = zoo.example_inputs(model)
    with tempfile.TemporaryDirectory(prefix="dsc-mem-") as tmp:
        art, onx = os.path.join(tmp, "model.dsc"), os.path.join(tmp, "model.onnx")
        with open(art, "wb") as f:
            f.write(data)
        d = peak_rss("dsc", art, feeds, threads, runs)
        o = None
        if compare:
            with open(onx, "wb") as f:
                f.write(model.SerializeToString())
            o = peak_rss("ort", onx, feeds, threads, runs)
    nan = float("nan")
    return {
        "dsc_mib": d["peak_mib"],
        "dsc_base_mib": d["base_mib"],
        "ort_mib": o["peak_mib"] if o else nan,
        "ort_base_mib": o["base_mib"] if o else nan,
    }


MAX_ROUNDS = 20000


def bench_one(model, name: str, threads: int, rounds: int, warmup: int = 3, compare: bool = True, memory: bool = False, min_seconds: float = 2.0) -> dict:
    """One model: compile, check against onnxruntime, then `rounds` interleaved rounds (dsc, onnxruntime)
    and more until `min_seconds` of rounds have run (a 0.1 ms model gets thousands: a median of 20
    such rounds moves by 30% with one wake-up of a worker thread), medians."""
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
    start = time.perf_counter()
    while len(td) < rounds or (time.perf_counter() - start < min_seconds and len(td) < MAX_ROUNDS):
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
    row = {"model": name, "dsc_ms": md * 1e3, "ort_ms": mo * 1e3, "ratio": md / mo if to else float("nan"), "gflops": flops / md / 1e9 if flops else float("nan"), "compile_s": compile_s, "max_err": err}
    if memory:
        row.update(memory_one(model, data, threads, compare=compare))
    return row


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


def format_row(r: dict, memory: bool) -> str:
    line = f"{r['model']:<22} {r['dsc_ms']:>9.3f} {r['ort_ms']:>9.3f} {r['ratio']:>8.2f} {r['gflops']:>8.1f} {r['compile_s']:>10.2f} {r['max_err']:>10.2e}"
    if memory:
        nan = float("nan")
        d, o = r.get("dsc_mib", nan), r.get("ort_mib", nan)
        line += f" {d:>8.1f} {o:>8.1f} {d / o:>8.2f} {d - r.get('dsc_base_mib', nan):>8.1f} {o - r.get('ort_base_mib', nan):>8.1f}"
    return line


def format_table(rows: list[dict], threads: int) -> str:
    memory = any("dsc_mib" in r for r in rows)
    head = f"{'model':<22} {'dsc ms':>9} {'ort ms':>9} {'dsc/ort':>8} {'GFLOP/s':>8} {'compile s':>10} {'max |err|':>10}"
    lines = [f"threads {threads}, medians of interleaved runs (dsc, onnxruntime, dsc, ...)"]
    if memory:
        lines[0] += "; peak RSS (VmHWM) in MiB, each runtime in a fresh process; own: above its import baseline"
        head += f" {'dsc MiB':>8} {'ort MiB':>8} {'dsc/ort':>8} {'dsc own':>8} {'ort own':>8}"
    lines.append(head)
    lines += [format_row(r, memory) for r in rows]
    if memory and rows:
        r = rows[0]
        lines.append(f"import baselines: dsc.runtime {r.get('dsc_base_mib', float('nan')):.1f} MiB, onnxruntime {r.get('ort_base_mib', float('nan')):.1f} MiB (python + numpy + the runtime, inputs loaded)")
    return "\n".join(lines)


def main(argv=None) -> int:
    from dsc.runtime.errors import DscError
    from dsc.tools import zoo

    p = argparse.ArgumentParser(prog="python -m dsc.tools.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="an ONNX model (default: the zoo)")
    p.add_argument("--models", default=",".join(ZOO_ORDER), help="zoo models, comma-separated")
    p.add_argument("--batch", default="1", help="batch sizes for zoo models, comma-separated")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds at least (default 20)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="and rounds until this long (default 2.0: tiny models get thousands)")
    p.add_argument("--compare", choices=["onnxruntime", "none"], default="onnxruntime")
    p.add_argument("--profile", action="store_true", help="print the slowest steps of each model instead of the comparison")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True, help="peak resident memory of each runtime, each in a fresh process (default on; --no-memory skips it)")
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

            rows.append(bench_one(onnx.load(args.model), os.path.basename(args.model), args.threads, args.rounds, compare=args.compare != "none", memory=args.memory, min_seconds=args.min_seconds))
        else:
            for b in [int(x) for x in args.batch.split(",")]:
                for name in args.models.split(","):
                    model = zoo.build(name, batch=b)
                    rows.append(bench_one(model, f"{name} b{b}", args.threads, args.rounds, compare=args.compare != "none", memory=args.memory, min_seconds=args.min_seconds))
                    print(format_row(rows[-1], args.memory), file=sys.stderr, flush=True)
    except DscError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(rows, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
