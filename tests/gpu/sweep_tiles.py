"""Tile sweep on the GPU machine: one zoo model compiled with several tensor-core GEMM variants, timed interleaved.

    python tests/gpu/sweep_tiles.py --out DIR [--model resnet50] [--batch 32] [--precision fp16] [--variants base,bk64,...]

Each variant patches dsc.backends.cuda's tiling constants (PipeConfigs, the
bytes of k per stage row, the shared-memory limit) in a fresh worker process
before compiling, so the product code keeps one set of constants and this
script explores around them. For every variant: the CUDA-graph replay's
median over interleaved rounds (A B C A B C ...), the largest difference of
its output from the base variant's, and the per-kernel profile (top kernels,
and time summed by kernel kind) written to DIR/sweep.json. The table is
printed last. A dev tool for the lent H200, not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

TARGET = ("", "target")  # a variant's GPU target (default sm_90: mma.sync)
# variant -> patches: (module, attribute) -> value; PipeConfig values as tuples (BM, BN, WM, WN, stages, min_blocks)
VARIANTS = {
    "base": {},
    "rows64": {("mma", "DEEP_SMEM"): 1 << 30},  # 64-byte stage rows everywhere (before 128-byte rows on sm_90)
    "big_w64": {("mma_pipe", "PIPE_BIG"): (128, 128, 64, 64, 3, 1)},
    "wide_4st": {("mma_pipe", "PIPE_WIDE"): (64, 128, 32, 64, 4, 2), ("mma_pipe", "PIPE_MID"): (64, 64, 32, 32, 5, 4)},
    "big_4st": {("mma_pipe", "PIPE_BIG"): (128, 128, 64, 32, 4, 1)},
    "balance": {("gemm", "choose_mma_tiling"): "balanced_tiling"},
    "old_layouts": {("codegen", "channels_last_values"): "pairs_only_layouts"},
    "no_runs": {("mma_pipe", "RUN"): 1 << 30},  # the channels-last epilogue element by element
    "tf32_trunc": {("mma_pipe", "ROUND_TF32"): False},  # tf32 fragments as the raw f32 bits (truncated by the MMA)
    # sm_90a: Hopper's wgmma (wgmma.py), stages and batches left in flight, the stem, the run epilogue
    "wg": {TARGET: "sm_90a"},
    "wg_s4i1": {TARGET: "sm_90a", ("wgmma", "STAGES"): 4, ("wgmma", "INFLIGHT"): 1},
    "wg_ru2": {TARGET: "sm_90a", ("mma_pipe", "RUN_UNROLL"): 2},
    "wg_rows64": {TARGET: "sm_90a", ("mma", "DEEP_SMEM"): 1 << 30},
    "wg_nchw_pool": {TARGET: "sm_90a", ("data", "pool_channels_last"): "no_pool_nhwc"},  # pools read/write NCHW
    "wg_tf32_round": {TARGET: "sm_90a", ("wgmma", "KINDS"): "no_tf32"},  # tf32 on mma.sync (rounded)
}


def pairs_only_layouts(gpu_kernels, tf32, smem_limit):
    """The layout rule before residuals and pools read channels-last: a conv output is stored so only when
    every reader is a convolution that would otherwise copy its input channels-last."""
    from types import SimpleNamespace

    from dsc.backends.cuda import conv
    from dsc.backends.cuda.codegen import kernel_group

    groups = {kop: kernel_group(kop, ins, outs, consts, lambda op: None)[0] for kop, ins, outs, consts in gpu_kernels}
    ctx = SimpleNamespace(tf32=tf32, smem_limit=smem_limit)
    found = set()
    for kop, grp in groups.items():
        if not conv.writes_channels_last(ctx, grp):
            continue
        yields = list(kop.body.block.last_op.operands)
        for i, v in enumerate(kop.outputs):
            users = [u.operation for u in v.uses]
            if yields[i] not in grp.outputs or yields.count(yields[i]) > 1 or not users:
                continue
            ok = True
            for u in users:
                if u not in groups or not conv.match_conv(groups[u]):
                    ok = False
                    break
                arg = u.body.block.args[u.operands.index(v)]
                c = groups[u].ops[0]
                if c.input is not arg or any(x.operation is not c or x.index != 0 for x in arg.uses) or not conv._channels_last(ctx, groups[u]) or conv._stem_channels(ctx, groups[u]):
                    ok = False
                    break
            if ok:
                found.add(v)
    return found


no_tf32 = ("f16", "bf16")


def no_pool_nhwc(grp):
    return 0


def balanced_tiling(M, N, K, Z, sms, configs):
    """Big, wide or mid by how evenly their blocks fill whole waves of `sms`, times a guess of each tile's
    relative efficiency; small with split-K as before when none fills the machine."""
    from dsc.backends.cuda.mma import choose_mma_tiling

    big, wide, mid, small = configs
    eff = {id(big): 1.0, id(wide): 0.92, id(mid): 0.8}
    best, score = None, 0.0
    for c in (big, wide, mid):
        blocks = Z * -(-M // c.BM) * -(-N // c.BN)
        waste = (Z * -(-M // c.BM) * c.BM * -(-N // c.BN) * c.BN) / (Z * M * N)
        if waste >= 1.34 or blocks < sms // 2:
            continue
        s = blocks / (-(-blocks // sms) * sms) * eff[id(c)] / waste
        if s > score:
            best, score = c, s
    return (best, 1) if best is not None else choose_mma_tiling(M, N, K, Z, sms, configs)


def apply_patches(patches: dict) -> None:
    import importlib

    from dsc.backends.cuda import mma_pipe

    for (mod, attr), val in patches.items():
        if (mod, attr) == TARGET:
            continue
        m = importlib.import_module(f"dsc.backends.cuda.{mod}")
        if isinstance(val, tuple):
            val = mma_pipe.PipeConfig(*val)
        elif isinstance(val, str):
            val = globals()[val]
        setattr(m, attr, val)
    mma_pipe.PIPE_CONFIGS[:] = [mma_pipe.PIPE_BIG, mma_pipe.PIPE_WIDE, mma_pipe.PIPE_MID, mma_pipe.PIPE_SMALL]


def compile_variant(name: str, model: str, batch: int, precision: str, path: str) -> dict:
    t = time.time()
    try:
        apply_patches(VARIANTS[name])
        import dsc
        from dsc.pipeline import CompileOptions
        from dsc.tools import zoo

        mdl = zoo.build(model, batch=batch)
        opts = CompileOptions(tf32=True) if precision == "tf32" else CompileOptions(precision=precision, amp_level="O2")
        with open(path, "wb") as f:
            f.write(dsc.compile(mdl, VARIANTS[name].get(TARGET, "sm_90"), options=opts))
        return {"ok": True, "seconds": round(time.time() - t, 1)}
    except Exception as e:  # recorded, the sweep goes on
        import traceback

        return {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "sweep_out"))
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--show", default="base", help="the variant whose slowest kernels are listed")
    ap.add_argument("--torch", action="store_true", help="also time PyTorch eager captured as a CUDA graph")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    names = args.variants.split(",")
    work = "/tmp/dsc_sweep"
    os.makedirs(work, exist_ok=True)
    pool = ProcessPoolExecutor(max_workers=min(len(names), 8), mp_context=mp.get_context("spawn"))
    futs = {n: pool.submit(compile_variant, n, args.model, args.batch, args.precision, f"{work}/{n}.dsc") for n in names}
    comp = {n: f.result() for n, f in futs.items()}
    pool.shutdown()
    for n, r in comp.items():
        print(f"compile {n}: {r.get('seconds')} s" if r["ok"] else f"compile {n}: FAILED {r['error']}\n{r['trace']}", flush=True)

    import torch

    import dsc.runtime
    from dsc.tools.gpu_check import profile_kernels

    sessions, outs, graphs = {}, {}, {}
    x = None
    for n in names:
        if not comp[n]["ok"]:
            continue
        s = dsc.runtime.load(f"{work}/{n}.dsc")
        inp = s.get_inputs()[0]
        if x is None:
            torch.manual_seed(0)
            x = torch.randn(*inp.shape, device="cuda")
        outs[n] = s.run(None, {inp.name: x})[0].astype(np.float32)
        ex = s.gpu_executor
        g = next(iter(ex.graphs.values())) if ex.use_graphs and ex.graphs else None
        sessions[n], graphs[n] = s, g
    times = {n: [] for n in sessions}
    for _ in range(args.rounds):
        for n, s in sessions.items():
            ex = s.gpu_executor
            g = graphs[n]
            ex.driver.synchronize(ex.stream)
            t = time.perf_counter()
            for _ in range(5):
                g(ex.stream)
            ex.driver.synchronize(ex.stream)
            times[n].append((time.perf_counter() - t) / 5 * 1000)
    res = {"model": args.model, "batch": args.batch, "precision": args.precision, "variants": {}}
    base = outs.get("base")
    for n in sessions:
        prof = profile_kernels(f"{work}/{n}.dsc", reps=3)
        by_kind: dict = {}
        for r in prof["top"]:
            lab = r.get("label", "")
            kind = lab.split(": ", 1)[-1].split(" [")[0]
            by_kind[kind] = round(by_kind.get(kind, 0.0) + r["ms"], 4)
        diff = float(np.max(np.abs(outs[n] - base))) if base is not None else None
        res["variants"][n] = {"replay_ms": float(np.median(times[n])), "min_ms": float(np.min(times[n])), "max_abs_diff_vs_base": diff, "profile_sum_ms": prof["sum_ms"], "by_kind": by_kind, "top": prof["top"], "compile": comp[n]}
    if args.torch:
        from dsc.tools.gpu_check import torch_bench

        res["torch"] = torch_bench(args.model, args.batch, modes=("cuda_graph",), precision=args.precision)
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n{args.model} batch {args.batch} {args.precision}: CUDA-graph replay, median of {args.rounds} interleaved rounds")
    for n, v in res["variants"].items():
        print(f"{n:12s} {v['replay_ms']:7.3f} ms (min {v['min_ms']:.3f})  kernels {v['profile_sum_ms']:.3f} ms  max|diff| {v['max_abs_diff_vs_base']}")
    if "torch" in res:
        print(f"torch cuda graph: {res['torch']}")
    for show in args.show.split(","):
        if show not in res["variants"]:
            continue
        print(f"\n{show}, slowest kernels:")
        for r in res["variants"][show]["top"][:25]:
            print(f"  {r['ms']:.4f} {r.get('label', '')} grid {r.get('grid')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
