"""The CPU worker pool: workers that fell asleep between inferences (futex on the generation word) wake for
the next one; models too small to pay for a wake-up run on the calling thread alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_sleeping_workers_wake_for_the_next_inference():
    # in a subprocess with a timeout: a lost wake-up would hang, not fail
    code = textwrap.dedent(
        """
        import time
        import numpy as np
        import dsc, dsc.runtime
        from dsc.tools import zoo

        mdl = zoo.build("mlp", batch=8)  # enough work for the workers (tiny models keep them asleep)
        feeds = zoo.example_inputs(mdl)
        sess = dsc.runtime.load(dsc.compile(mdl), num_threads=2)
        want = sess.run(None, feeds)
        for pause in (0.0, 0.02, 0.0, 0.05, 0.001, 0.02):
            time.sleep(pause)  # long enough for the idle worker to spin, yield, then sleep on the futex
            got = sess.run(None, feeds)
            assert all(np.array_equal(a, b) for a, b in zip(got, want))
        print("ok")
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-2000:]


def test_tiny_models_run_on_the_calling_thread():
    """The MLP at batch 1 (1.3 MFLOP) keeps its workers asleep; at batch 8 they take their shares. Same results."""
    import numpy as np

    import dsc
    import dsc.runtime
    from dsc.backends.cpu import codegen
    from dsc.tools import zoo

    seen = []
    real = codegen.Codegen.run

    def spy(self):
        prog = real(self)
        seen.append(prog.single_thread)
        return prog

    codegen.Codegen.run = spy
    try:
        for batch, single in ((1, True), (8, False)):
            mdl = zoo.build("mlp", batch=batch)
            feeds = zoo.example_inputs(mdl)
            one = dsc.runtime.load(dsc.compile(mdl), num_threads=1).run(None, feeds)
            two = dsc.runtime.load(dsc.compile(mdl), num_threads=2).run(None, feeds)
            assert seen[-1] is single
            assert all(np.array_equal(a, b) for a, b in zip(one, two))
    finally:
        codegen.Codegen.run = real
