"""The CPU worker pool: workers that fell asleep between inferences (futex on the generation word) wake for the next one."""

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

        mdl = zoo.build("mlp", small=True)
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
