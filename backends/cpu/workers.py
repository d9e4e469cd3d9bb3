"""Persistent worker threads parked in native code: dispatch without Python in the loop.

The runtime starts N-1 threads that each call `dsc_worker(ctl, tid)` once
(through ctypes, so the GIL is released) and never return until
`dsc_stop(ctl)`. An inference is one native call, `dsc_dispatch(...)`: it
publishes the job in `ctl`, bumps the generation the workers wait on, runs
thread 0's share of `dsc_run` itself and waits until every worker is done.
Waiting spins with a pause hint, then yields the CPU (`sched_yield`), then
sleeps, so idle workers cost nothing and a busy machine is not starved by
spinners. A worker idle between inferences sleeps on a futex (Linux) on the
generation word and `dsc_dispatch` wakes it in one system call (waking from
a polling sleep would add up to its period to every inference that follows
a pause); a wait inside an inference sleeps in short `usleep`s.

ctl (i64 words): 0 generation, 1 stop, 2 inputs, 3 outputs, 4 weights,
5 arena, 6 nthreads, 7 barrier, 8 entry (dsc_run, or a CPU segment of a
CPU+GPU artifact: any function of dsc_run's type), 16 finished workers,
17 workers asleep on the generation futex.
"""

from __future__ import annotations

from llvmlite import ir

from dsc.backends.cpu.irb import I8P, I32, I64, VOID, const_i64, declare_function

SPIN = 300  # pause-spins before yielding, inside an inference (between steps)
IDLE_SPIN = 1000  # pause-spins of a worker waiting for the next inference
YIELD = 20000  # yields before sleeping, inside an inference (a few ms: the partner step is running)
IDLE_YIELD = 200  # yields of an idle worker before it sleeps
SLEEP_US = 50
CTL_WORDS = 24
SLEEPERS = 17  # ctl word: workers asleep on the generation futex
SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129


def _futex(module: ir.Module, b: ir.IRBuilder, arch: str, word, op: int, val):
    """syscall(SYS_futex, word, op, val, NULL): wait while the 32-bit *word == val, or wake val waiters."""
    syscall = module.globals.get("syscall") or ir.Function(module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
    nr = SYS_FUTEX["aarch64" if arch.startswith(("aarch64", "arm64")) else "x86_64"]
    b.call(syscall, [const_i64(nr), b.bitcast(word, I8P), const_i64(op), val, ir.Constant(I8P, None)])


def emit_futex_wake(module: ir.Module, b: ir.IRBuilder, arch: str, ctl) -> None:
    """After bumping the generation (seq_cst): wake the workers asleep on it, if any."""
    asleep = b.load_atomic(b.gep(ctl, [const_i64(SLEEPERS)], inbounds=True), "seq_cst", 8)
    with b.if_then(b.icmp_signed(">", asleep, const_i64(0)), likely=False):
        _futex(module, b, arch, b.gep(ctl, [const_i64(0)], inbounds=True), FUTEX_WAKE_PRIVATE, const_i64(2**31 - 1))


def _relax(module: ir.Module, b: ir.IRBuilder, arch: str) -> None:
    if arch.startswith("x86"):
        b.call(module.declare_intrinsic("llvm.x86.sse2.pause", (), ir.FunctionType(VOID, [])), [])
    elif arch.startswith(("aarch64", "arm64")):
        b.call(module.declare_intrinsic("llvm.aarch64.hint", (), ir.FunctionType(VOID, [I32])), [ir.Constant(I32, 1)])


def emit_wait(module: ir.Module, arch: str, idle: bool = False) -> ir.Function:
    """`void dsc_wait_ne(i64* p, i64 v)`: wait until *p != v (spin, then yield, then sleep).

    The idle variant (a worker between inferences) spins briefly, so parked
    workers do not steal the cores from whatever the process runs next."""
    spins = IDLE_SPIN if idle else SPIN
    yields = IDLE_YIELD if idle else YIELD
    fn = declare_function(module, "dsc_wait_idle" if idle else "dsc_wait_ne", VOID, [I64.as_pointer(), I64])
    if fn.blocks:
        return fn
    fn.linkage = "internal"
    p, v = fn.args
    sched_yield = declare_function(module, "sched_yield", I32, [])
    usleep = declare_function(module, "usleep", I32, [I32])
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("loop")
    relax = fn.append_basic_block("relax")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    n = b.phi(I64, "n")
    n.add_incoming(const_i64(0), entry)
    cur = b.load_atomic(p, "acquire", 8)
    b.cbranch(b.icmp_signed("!=", cur, v), done, relax)
    b.position_at_end(relax)
    spin = fn.append_basic_block("spin")
    slow = fn.append_basic_block("slow")
    nxt = fn.append_basic_block("next")
    b.cbranch(b.icmp_signed("<", n, const_i64(spins)), spin, slow)
    b.position_at_end(spin)
    _relax(module, b, arch)
    b.branch(nxt)
    b.position_at_end(slow)
    yield_b = fn.append_basic_block("yield")
    sleep_b = fn.append_basic_block("sleep")
    b.cbranch(b.icmp_signed("<", n, const_i64(spins + yields)), yield_b, sleep_b)
    b.position_at_end(yield_b)
    b.call(sched_yield, [])
    b.branch(nxt)
    b.position_at_end(sleep_b)
    if idle:
        # p is ctl's generation word: register as a sleeper, re-check, sleep until dsc_dispatch wakes us
        sleepers = b.gep(p, [const_i64(SLEEPERS)], inbounds=True)
        b.atomic_rmw("add", sleepers, const_i64(1), "seq_cst")
        still = b.icmp_signed("==", b.load_atomic(p, "seq_cst", 8), v)
        with b.if_then(still):
            _futex(module, b, arch, p, FUTEX_WAIT_PRIVATE, b.and_(v, const_i64(0xFFFFFFFF)))
        b.atomic_rmw("sub", sleepers, const_i64(1), "seq_cst")
    else:
        b.call(usleep, [ir.Constant(I32, SLEEP_US)])
    b.branch(nxt)
    b.position_at_end(nxt)
    n.add_incoming(b.add(n, const_i64(1)), nxt)
    b.branch(loop)
    b.position_at_end(done)
    b.ret_void()
    return fn


def emit_workers(module: ir.Module, run: ir.Function, arch: str, single: bool = False) -> None:
    """Emit dsc_worker, dsc_dispatch and dsc_stop; the job's entry has `run`'s type.

    single: dsc_dispatch runs the whole job on the calling thread and leaves the workers
    asleep (models too small to pay for waking a second thread: ~40 us on a VM)."""
    wait = emit_wait(module, arch)
    idle_wait = emit_wait(module, arch, idle=True)
    i64p = I64.as_pointer()
    i8pp = I8P.as_pointer()

    def word(b, ctl, i):
        return b.gep(ctl, [const_i64(i)], inbounds=True)

    # void dsc_worker(i64* ctl, i64 tid)
    fn = ir.Function(module, ir.FunctionType(VOID, [i64p, I64]), "dsc_worker")
    ctl, tid = fn.args
    entry = fn.append_basic_block("entry")
    loop = fn.append_basic_block("loop")
    work = fn.append_basic_block("work")
    leave = fn.append_basic_block("leave")
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    # the generation starts at 0: a worker that starts late still sees the first job
    seen = b.phi(I64, "seen")
    seen.add_incoming(const_i64(0), entry)
    b.call(idle_wait, [word(b, ctl, 0), seen])
    gen = b.load_atomic(word(b, ctl, 0), "acquire", 8)
    stop = b.load_atomic(word(b, ctl, 1), "acquire", 8)
    b.cbranch(b.icmp_signed("!=", stop, const_i64(0)), leave, work)
    b.position_at_end(work)
    args = [b.load(word(b, ctl, i)) for i in range(2, 8)]
    target = b.inttoptr(b.load(word(b, ctl, 8)), run.type)
    b.call(
        target,
        [
            b.inttoptr(args[0], i8pp),
            b.inttoptr(args[1], i8pp),
            b.inttoptr(args[2], I8P),
            b.inttoptr(args[3], I8P),
            tid,
            args[4],
            b.inttoptr(args[5], i64p),
        ],
    )
    b.atomic_rmw("add", word(b, ctl, 16), const_i64(1), "acq_rel")
    seen.add_incoming(gen, work)
    b.branch(loop)
    b.position_at_end(leave)
    b.ret_void()

    # void dsc_dispatch(i8** ins, i8** outs, i8* weights, i8* arena, i64 nthreads, i64* barrier, i64* ctl, i8* entry)
    fn = ir.Function(module, ir.FunctionType(VOID, [i8pp, i8pp, I8P, I8P, I64, i64p, i64p, I8P]), "dsc_dispatch")
    ins, outs, weights, arena, nthreads, barrier, ctl, entry_p = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    for i, v in zip(range(2, 9), [ins, outs, weights, arena, None, barrier, entry_p]):
        b.store(nthreads if v is None else b.ptrtoint(v, I64), word(b, ctl, i))
    job = b.bitcast(entry_p, run.type)
    if single:
        b.call(job, [ins, outs, weights, arena, const_i64(0), const_i64(1), barrier])
        b.ret_void()
        _emit_stop(module, arch, word)
        return
    b.store_atomic(const_i64(0), word(b, ctl, 16), "release", 8)
    b.atomic_rmw("add", word(b, ctl, 0), const_i64(1), "seq_cst")  # release the job to the workers
    emit_futex_wake(module, b, arch, ctl)
    b.call(job, [ins, outs, weights, arena, const_i64(0), nthreads, barrier])
    # wait for the nthreads-1 workers: spin on the finished count
    expect = b.sub(nthreads, const_i64(1))
    head = fn.append_basic_block("head")
    body = fn.append_basic_block("body")
    done = fn.append_basic_block("done")
    b.branch(head)
    b.position_at_end(head)
    fin = b.load_atomic(word(b, ctl, 16), "acquire", 8)
    b.cbranch(b.icmp_signed("<", fin, expect), body, done)
    b.position_at_end(body)
    b.call(wait, [word(b, ctl, 16), fin])
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()

    _emit_stop(module, arch, word)


def _emit_stop(module: ir.Module, arch: str, word) -> None:
    """void dsc_stop(i64* ctl): workers return from dsc_worker."""
    fn = ir.Function(module, ir.FunctionType(VOID, [I64.as_pointer()]), "dsc_stop")
    (ctl,) = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    b.store_atomic(const_i64(1), word(b, ctl, 1), "release", 8)
    b.atomic_rmw("add", word(b, ctl, 0), const_i64(1), "seq_cst")
    emit_futex_wake(module, b, arch, ctl)
    b.ret_void()


def emit_barrier(module: ir.Module, arch: str) -> ir.Function:
    """`void dsc_barrier(i64* state, i64 nthreads)`: a sense-reversing spin barrier.

    state[0] counts arrivals, state[1] is the generation. The last thread to
    arrive resets the count and bumps the generation; the others spin on it.
    seq_cst atomics make every kernel's stores visible to the next kernel.
    """
    fn = declare_function(module, "dsc_barrier", VOID, [I64.as_pointer(), I64])
    if fn.blocks:
        return fn
    fn.linkage = "internal"
    state, n = fn.args
    entry = fn.append_basic_block("entry")
    b = ir.IRBuilder(entry)
    count_p = b.gep(state, [const_i64(0)], inbounds=True)
    gen_p = b.gep(state, [const_i64(1)], inbounds=True)
    gen = b.load_atomic(gen_p, "seq_cst", 8)
    arrived = b.add(b.atomic_rmw("add", count_p, const_i64(1), "seq_cst"), const_i64(1))
    last = fn.append_basic_block("last")
    wait = fn.append_basic_block("wait")
    done = fn.append_basic_block("done")
    b.cbranch(b.icmp_signed("==", arrived, n), last, wait)
    b.position_at_end(last)
    b.store_atomic(const_i64(0), count_p, "seq_cst", 8)
    b.atomic_rmw("add", gen_p, const_i64(1), "seq_cst")
    b.branch(done)
    b.position_at_end(wait)
    b.call(emit_wait(module, arch), [gen_p, gen])  # spin, then yield, then sleep
    b.branch(done)
    b.position_at_end(done)
    b.ret_void()
    return fn
