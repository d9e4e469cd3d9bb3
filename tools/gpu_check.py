"""The GPU check: dsc's CUDA backend on a real GPU, correctness and speed, in one time-boxed run.

    bash tests/gpu/run_gpu.sh            # on the GPU machine, from the repo root (installs, then runs this)
    python -m dsc.tools.gpu_check --out DIR [--budget SECONDS] [--quick]

Phases (each model on its own: a failure is recorded and the run goes on):

1. environment: GPU, driver, pycuda, cuda-bindings, torch;
2. compiles in the background (worker processes): the full-size zoo at batch 1
   for sm_90a (--sm; Hopper's wgmma kernels), and the benchmark models at batch 32;
3. `pytest tests/test_cuda_gpu.py` (every kernel kind and the small zoo on the GPU);
4. full-size ResNet-18/50, MobileNetV2, EfficientNet-B0, BERT-base: dsc on the
   GPU against onnxruntime on the CPU (fp32, rtol 1e-3 / atol 1e-3);
5. benchmark, batch 1 and 32, in three precisions — fp32 with TF32 off (exact
   fp32 FMA), tf32 (dsc --tf32; torch allow_tf32) and fp16 (dsc --precision
   fp16; torch .half()): dsc (end to end `run` with a device input, and the
   CUDA graph replay alone) against PyTorch on the same GPU (eager, eager
   captured as a CUDA graph, torch.compile(mode="reduce-overhead"), torchvision
   models with random weights); median milliseconds.

Writes DIR/gpu_results.md (tables), DIR/gpu_results.json and DIR/pytest_gpu.txt.
Everything stops by --budget seconds (default 510: the whole command, installs
included, must finish within 9 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback

T0 = time.time()
FULL = ["resnet18", "resnet50", "mobilenetv2", "efficientnet_b0", "bert_base"]
BENCH = ["resnet50", "mobilenetv2"]
BATCHES = [1, 32]
PRECISIONS = ["fp32", "fp16", "tf32"]  # benchmark variants (also: bf16); fp32 means TF32 off on both sides


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


# ------------------------------------------------------------ compile jobs (worker processes)


def compile_job(name: str, batch: int, target: str, path: str, precision: str = "fp32") -> dict:
    """Build the zoo model and compile it to `path` (runs in a worker process)."""
    t = time.time()
    try:
        import dsc
        from dsc.pipeline import CompileOptions
        from dsc.tools import zoo

        mdl = zoo.build(name, batch=batch)
        # fp16: every op but the range-sensitive ones in float16 (O2), as PyTorch's .half() model is
        opts = CompileOptions(tf32=True) if precision == "tf32" else CompileOptions(precision=precision, amp_level="O1" if precision == "fp32" else "O2")
        data = dsc.compile(mdl, target, options=opts)
        with open(path, "wb") as f:
            f.write(data)
        return {"ok": True, "seconds": time.time() - t, "bytes": len(data)}
    except Exception as e:
        return {"ok": False, "seconds": time.time() - t, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}


# ------------------------------------------------------------ timing


def median_ms(fn, sync, budget_s: float = 2.0, warmup: int = 5, max_iters: int = 300) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < max_iters and (len(times) < 10 or time.perf_counter() < end):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    return 1000 * times[len(times) // 2]


def torch_models():
    import torchvision

    return {"resnet50": lambda: torchvision.models.resnet50(weights=None), "mobilenetv2": lambda: torchvision.models.mobilenet_v2(weights=None), "resnet18": lambda: torchvision.models.resnet18(weights=None)}


def torch_bench(name: str, batch: int, modes=("eager", "cuda_graph"), precision: str = "fp32") -> dict:
    import torch

    half = {"fp16": "half", "bf16": "bfloat16"}.get(precision)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.benchmark = True
    m = torch_models()[name]().cuda().eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    if half:
        m, x = getattr(m, half)(), getattr(x, half)()
    out = {}
    sync = torch.cuda.synchronize
    with torch.no_grad():
        if "eager" in modes:
            out["eager"] = median_ms(lambda: m(x), sync)
        if "cuda_graph" in modes:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    m(x)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                m(x)
            out["cuda_graph"] = median_ms(g.replay, sync)
        if "compile" in modes:
            t = time.time()
            c = torch.compile(m, mode="reduce-overhead")
            for _ in range(3):
                c(x)
            sync()
            out["compile_seconds"] = time.time() - t
            out["torch_compile"] = median_ms(lambda: c(x), sync)
    return out


def torch_compile_subprocess(name: str, batch: int, timeout: float, precision: str = "fp32") -> dict:
    code = f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import gpu_check; print('RESULT', json.dumps(gpu_check.torch_bench({name!r}, {batch}, ('compile',), {precision!r})))"
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"torch.compile did not finish within {timeout:.0f} s (skipped)"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (p.stderr or p.stdout)[-800:]}


def dsc_bench(path: str, batch: int) -> dict:
    import numpy as np
    import torch

    import dsc.runtime

    sess = dsc.runtime.load(path)
    ex = sess.gpu_executor
    name = sess.get_inputs()[0].name
    x = torch.randn(*sess.get_inputs()[0].shape, device="cuda")
    xn = x.cpu().numpy()
    out = {"launches": ex.n_launches, "graphs": bool(ex.use_graphs), "graph_note": ex.graph_note}
    out["run_device_input"] = median_ms(lambda: sess.run(None, {name: x}), lambda: None)
    out["run_numpy_input"] = median_ms(lambda: sess.run(None, {name: xn}), lambda: None)
    gpu_items = [it for it in ex.items if it[0] == "gpu"]
    if ex.use_graphs and len(gpu_items) == 1 and ex.graphs:
        g = next(iter(ex.graphs.values()))
        out["graph_replay"] = median_ms(lambda: g(ex.stream), lambda: ex.driver.synchronize(ex.stream))
    # launches one by one, no graph
    ops = gpu_items[0][1] if len(gpu_items) == 1 else None
    if ops is not None:
        out["launches_no_graph"] = median_ms(lambda: [f(ex.stream) for f in ops], lambda: ex.driver.synchronize(ex.stream), budget_s=1.0)
    del np
    return out


def fp16_error(name: str, path: str) -> float:
    import numpy as np
    import onnxruntime as ort

    import dsc.runtime
    from dsc.tools import zoo

    mdl = zoo.build(name)
    feeds = zoo.example_inputs(mdl)
    got = dsc.runtime.load(path).run(None, feeds)[0]
    want = ort.InferenceSession(mdl.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return float(np.max(np.abs(got.astype(np.float32) - want)))


def profile_kernels(path: str, reps: int = 5, top: int = 400) -> dict:
    """Per-launch GPU time (CUDA events around each op of the GPU runs, launched one by one)."""
    import pycuda.driver as cuda

    import dsc.runtime

    sess = dsc.runtime.load(path)
    ex = sess.gpu_executor
    feeds = {a.name: __import__("numpy").zeros(a.shape, a.dtype) for a in sess.get_inputs()}
    sess.run(None, feeds)
    acc: dict = {}
    total = 0.0
    for _ in range(reps):
        for idx, it in enumerate(ex.items):
            if it[0] != "gpu":
                continue
            ops = it[1]
            evs = [cuda.Event() for _ in range(len(ops) + 1)]
            evs[0].record(ex.stream)
            for i, f in enumerate(ops):
                f(ex.stream)
                evs[i + 1].record(ex.stream)
            evs[-1].synchronize()
            for i in range(len(ops)):
                ms = evs[i].time_till(evs[i + 1])
                acc[(idx, i)] = acc.get((idx, i), 0.0) + ms / reps
                total += ms / reps
    rows = []
    for (idx, i), ms in sorted(acc.items(), key=lambda kv: -kv[1]):
        info = ex.run_info[idx][i]
        rows.append({"ms": round(ms, 4), **info})
    return {"sum_ms": round(total, 3), "launches": ex.n_launches, "top": rows[:top]}


# ------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_out"))
    ap.add_argument("--budget", type=float, default=510.0, help="seconds for the whole check (default 510)")
    ap.add_argument("--quick", action="store_true", help="only the small-zoo tests and ResNet-50 batch 1")
    ap.add_argument("--jobs", type=int, default=0, help="compile worker processes (default: cores / 2, at most 8)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help=f"benchmark variants, comma-separated (default {','.join(PRECISIONS)})")
    ap.add_argument("--no-correctness", action="store_true", help="skip the full-size correctness phase (benchmark only)")
    ap.add_argument("--sm", default="sm_90a", help="the GPU target compiled for (default sm_90a: Hopper's wgmma; sm_90: mma.sync)")
    ap.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (a minute or more per variant)")
    args = ap.parse_args(argv)
    deadline = T0 + args.budget
    os.makedirs(args.out, exist_ok=True)
    workdir = "/tmp/dsc_gpu_artifacts"  # artifacts stay out of $OUT (only results come back)
    os.makedirs(workdir, exist_ok=True)
    results: dict = {"sm": args.sm, "env": {}, "pytest": {}, "correctness": {}, "bench": {}, "compile": {}, "notes": []}

    def left() -> float:
        return deadline - time.time()

    def save() -> None:
        with open(os.path.join(args.out, "gpu_results.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        with open(os.path.join(args.out, "gpu_results.md"), "w") as f:
            f.write(report(results))

    # ---- 1. environment
    env = results["env"]
    try:
        import llvmlite
        import numpy

        env["python"] = sys.version.split()[0]
        env["numpy"] = numpy.__version__
        env["llvmlite"] = llvmlite.__version__
        import pycuda
        import pycuda.driver as cuda

        cuda.init()
        d = cuda.Device(0)
        env.update(gpu=d.name(), compute_capability=list(d.compute_capability()), driver=cuda.get_driver_version(), pycuda=pycuda.VERSION_TEXT)
    except Exception as e:
        env["error"] = f"{type(e).__name__}: {e}"
    try:
        from cuda.bindings import driver as _cu  # noqa: F401

        env["cuda_bindings"] = True
    except Exception as e:
        env["cuda_bindings"] = f"no ({e})"
    try:
        import torch

        env["torch"] = torch.__version__
    except Exception as e:
        env["torch"] = f"no ({e})"
    log(f"environment: {json.dumps(env)}")
    save()

    # ---- 2. background compiles
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    jobs = {}
    models = [] if args.no_correctness else ["resnet50"] if args.quick else FULL
    precisions = ["fp32"] if args.quick else args.precisions.split(",")
    variants = [(n, b, p) for p in precisions for n in (["resnet50"] if args.quick else BENCH) for b in ([1] if args.quick else BATCHES)]
    todo = [(n, 1, args.sm, "fp32") for n in models]
    todo += [(n, b, args.sm, p) for n, b, p in variants if (n, b, p) != (n, 1, "fp32") or n not in models]
    ncpu = os.cpu_count() or 4
    pool = ProcessPoolExecutor(max_workers=args.jobs or max(1, min(8, ncpu // 2)), mp_context=mp.get_context("spawn"))
    for n, b, t, prec in todo:
        path = os.path.join(workdir, f"{n}_b{b}_{t}_{prec}.dsc")
        jobs[(n, b, prec)] = (pool.submit(compile_job, n, b, t, path, prec), path)
    log(f"compiling {len(jobs)} artifacts in the background")

    # ---- 3. GPU tests, in the background while the full-size models are checked
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings", "-rfEs", "tests/test_cuda_gpu.py"]
    if args.quick:
        cmd += ["-k", "small_zoo or device_array"]
    pytest_log = open(os.path.join(args.out, "pytest_gpu.txt"), "w")
    pytest_t0 = time.time()
    pytest_proc = subprocess.Popen(cmd, stdout=pytest_log, stderr=subprocess.STDOUT, text=True)
    log("pytest tests/test_cuda_gpu.py started")

    def finish_pytest(limit: float) -> None:
        if results["pytest"]:
            return
        try:
            rc = pytest_proc.wait(timeout=max(1.0, limit))
        except subprocess.TimeoutExpired:
            pytest_proc.kill()
            rc = None
        pytest_log.close()
        text = open(os.path.join(args.out, "pytest_gpu.txt")).read()
        summary = [l for l in text.splitlines() if l.strip()]
        results["pytest"] = {"returncode": rc, "summary": (summary[-1].strip("= ") if summary else "(no output)") + ("" if rc is not None else " (killed: out of time)"), "seconds": round(time.time() - pytest_t0, 1)}
        log(f"pytest tests/test_cuda_gpu.py: {results['pytest']['summary']}")
        for line in text.splitlines():
            if line.startswith(("FAILED", "ERROR")):
                log("  " + line[:300])
        save()

    def artifact(n, b, prec="fp32"):
        fut, path = jobs[(n, b, prec)]
        r = fut.result(timeout=max(1.0, left() - 30))
        results["compile"][f"{n}_b{b}_{prec}"] = {k: v for k, v in r.items() if k != "trace"}
        if not r["ok"]:
            raise RuntimeError(f"compile failed: {r['error']}\n{r.get('trace', '')}")
        return path

    # ---- 4. full-size correctness
    import numpy as np

    for n in models:
        if left() < 150:
            results["notes"].append(f"correctness of {n} skipped: out of time")
            continue
        rec = results["correctness"].setdefault(n, {})
        try:
            path = artifact(n, 1)
            import onnxruntime as ort

            from dsc.tools import zoo

            import dsc.runtime

            mdl = zoo.build(n)
            feeds = zoo.example_inputs(mdl)
            t = time.time()
            sess = dsc.runtime.load(path)
            rec["load_seconds"] = round(time.time() - t, 2)
            got = sess.run(None, feeds)
            want = ort.InferenceSession(mdl.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
            errs = []
            ok = True
            for g, w in zip(got, want):
                err = float(np.max(np.abs(g.astype(np.float64) - w))) if g.size else 0.0
                errs.append({"max_abs": err, "max_ref": float(np.max(np.abs(w))) if w.size else 0.0})
                ok = ok and bool(np.allclose(g, w, rtol=1e-3, atol=1e-3))
            ex = sess.gpu_executor
            again = sess.run(None, feeds)
            rec.update(ok=ok, errors=errs, launches=ex.n_launches, graphs=bool(ex.use_graphs), graph_note=ex.graph_note, replay_equal=all(np.array_equal(a, b) for a, b in zip(again, got)), segments=sum(1 for it in ex.items if it[0] == "cpu"))
            rec["run_ms"] = median_ms(lambda: sess.run(None, feeds), lambda: None, budget_s=1.0)
            log(f"{n}: {'OK' if ok else 'MISMATCH'} max abs err {max(e['max_abs'] for e in errs):.3g}, {ex.n_launches} launches, graphs {ex.use_graphs} {ex.graph_note or ''}, run {rec['run_ms']:.2f} ms")
            del sess
        except Exception as e:
            rec.update(ok=False, error=f"{type(e).__name__}: {e}", trace=traceback.format_exc()[-2500:])
            log(f"{n}: FAILED {type(e).__name__}: {str(e)[:500]}")
        save()

    finish_pytest(min(240.0, left() - 200))

    # ---- 5. benchmark: every (model, batch, precision) variant; torch.compile last (a minute or more each)
    bench = results["bench"]
    for n, b, prec in variants:
        if left() < 60:
            results["notes"].append(f"benchmark {n} batch {b} {prec} skipped: out of time")
            continue
        key = f"{n}_b{b}" + ("" if prec == "fp32" else f"_{prec}")
        rec = bench.setdefault(key, {})
        try:
            path = artifact(n, b, prec)
            rec["dsc"] = dsc_bench(path, b)
            if prec != "fp32" and b == 1:
                rec["dsc"]["max_abs_err_vs_fp32_ort"] = fp16_error(n, path)
        except Exception as e:
            rec["dsc"] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
        try:
            if left() > 120 and prec != "tf32":
                rec["profile"] = profile_kernels(artifact(n, b, prec))
                log(f"  kernel time sum {rec['profile']['sum_ms']} ms; top: " + "; ".join(f"{r['ms']:.3f} {r.get('label', '')} {r.get('grid', '')}x{r.get('block', [''])[0]}" for r in rec["profile"]["top"][:8]))
        except Exception as e:
            rec["profile"] = {"error": f"{type(e).__name__}: {e}"}
        try:
            rec["torch"] = torch_bench(n, b, precision=prec)
        except Exception as e:
            rec["torch"] = {"error": f"{type(e).__name__}: {e}"}
        log(f"bench {key}: dsc {json.dumps({k: v for k, v in rec['dsc'].items() if k != 'trace'})} torch {json.dumps(rec['torch'])}")
        save()

    def torch_compile(key, n, b, prec, reserve):
        if key not in bench or "error" in bench[key].get("torch", {}) or "torch_compile" in bench[key]["torch"]:
            return
        tmo = left() - reserve
        if tmo < 45:
            bench[key]["torch"]["torch_compile_note"] = "skipped: out of time"
            return
        log(f"torch.compile {key} (up to {tmo:.0f} s)")
        r = torch_compile_subprocess(n, b, tmo, prec)
        bench[key]["torch"].update(r)
        log(f"  {json.dumps(r)[:400]}")
        save()

    pool.shutdown(wait=False, cancel_futures=True)
    for n, b, prec in [] if args.no_torch_compile else variants:
        torch_compile(f"{n}_b{b}" + ("" if prec == "fp32" else f"_{prec}"), n, b, prec, 15)
    save()
    log(f"done; results in {args.out}/gpu_results.md")
    print(report(results))
    return 0


def _cell(v) -> str:
    return " ".join(str(v).split()).replace("|", "/")


def report(r: dict) -> str:
    env = r.get("env", {})
    lines = ["# dsc on the GPU", "", f"GPU: {env.get('gpu')} (cc {env.get('compute_capability')}), driver {env.get('driver')}, pycuda {env.get('pycuda')}, torch {env.get('torch')}, cuda-bindings {env.get('cuda_bindings')}" + (f"; error: {_cell(env['error'])}" if env.get("error") else ""), ""]
    pt = r.get("pytest", {})
    lines += [f"pytest tests/test_cuda_gpu.py: {pt.get('summary')}", ""]
    lines += [f"## Full-size models, batch 1, {r.get('sm', 'sm_90')}, fp32: dsc on the GPU vs onnxruntime (CPU)", "", "| model | result | max abs err | max abs ref | launches | CUDA graph | run (ms) |", "|---|---|---|---|---|---|---|"]
    for n, c in r.get("correctness", {}).items():
        if "error" in c:
            lines.append(f"| {n} | ERROR: {_cell(c['error'])[:160]} | | | | | |")
            continue
        e = max(c.get("errors", [{}]), key=lambda x: x.get("max_abs", 0)) if c.get("errors") else {}
        lines.append(f"| {n} | {'pass' if c.get('ok') else 'FAIL'} (rtol/atol 1e-3) | {e.get('max_abs', float('nan')):.2e} | {e.get('max_ref', float('nan')):.3g} | {c.get('launches')} | {c.get('graphs')} | {c.get('run_ms', float('nan')):.3f} |")
    lines += ["", "## Benchmark: median ms, fp32 (TF32 off) unless marked fp16, bf16 or tf32, same GPU", "", "| model | batch | dsc run (device input) | dsc run (numpy input) | dsc graph replay | dsc launches (no graph) | torch eager | torch CUDA graph | torch.compile reduce-overhead |", "|---|---|---|---|---|---|---|---|---|"]

    def f(v):
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else _cell(v)[-80:])

    for key, b in r.get("bench", {}).items():
        n, bs, prec = re.fullmatch(r"(.*)_b(\d+)(?:_(\w+))?", key).groups()  # resnet50_b32_bf16
        bs += f" {prec}" if prec else ""
        d, t = b.get("dsc", {}), b.get("torch", {})
        tc = t.get("torch_compile", t.get("error") or t.get("torch_compile_note"))
        lines.append(f"| {n} | {bs} | {f(d.get('run_device_input', d.get('error')))} | {f(d.get('run_numpy_input'))} | {f(d.get('graph_replay'))} | {f(d.get('launches_no_graph'))} | {f(t.get('eager', t.get('error')))} | {f(t.get('cuda_graph'))} | {f(tc)} |")
    for key, b in r.get("bench", {}).items():
        p = b.get("profile") or {}
        if p.get("top"):
            lines += ["", f"### {key}: GPU time per launch (CUDA events, launches one by one): sum {p.get('sum_ms')} ms over {p.get('launches')} launches; slowest:", "", "| ms | kernel | grid | block |", "|---|---|---|---|"]
            lines += [f"| {x['ms']:.4f} | {_cell(x.get('label', x.get('op')))} | {x.get('grid', '')} | {x.get('block', '')} |" for x in p["top"][:12]]
    if r.get("compile"):
        lines += ["", "Compile times (s, one worker process each): " + ", ".join(f"{k} {v.get('seconds', 0):.0f}" + ("" if v.get("ok") else " FAILED") for k, v in r["compile"].items())]
    for note in r.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
