"""The bench tool's memory measurement, and what keeps the runtime small: no LLVM in the process.

Not timed: the numbers are only checked to be sane.
"""

import subprocess
import sys

import numpy as np
import pytest

import dsc
import dsc.runtime
from dsc.runtime import native
from dsc.tools import bench, zoo

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


@pytest.fixture(scope="module")
def mlp():
    model = zoo.build("mlp", small=True)
    return model, dsc.compile(model)


def test_memory_one_on_the_mlp(mlp):
    model, data = mlp
    row = bench.memory_one(model, data, threads=2, runs=3)
    for who in ("dsc", "ort"):
        base, peak = row[f"{who}_base_mib"], row[f"{who}_mib"]
        assert 5 < base < 2048 and base <= peak < 4096, row
    # the table shows them
    text = bench.format_table([{"model": "mlp b1", "dsc_ms": 1.0, "ort_ms": 1.0, "ratio": 1.0, "gflops": 1.0, "compile_s": 0.1, "max_err": 0.0, **row}], 2)
    assert "dsc MiB" in text and "ort MiB" in text and "import baselines" in text


def test_peak_rss_reports_the_high_water_mark(mlp, tmp_path):
    model, data = mlp
    (tmp_path / "m.dsc").write_bytes(data)
    r = bench.peak_rss("dsc", str(tmp_path / "m.dsc"), zoo.example_inputs(model), threads=1, runs=2)
    assert 0 < r["base_mib"] <= r["loaded_mib"] <= r["peak_mib"] and r["final_mib"] <= r["peak_mib"]


def test_runtime_does_not_load_llvm(mlp, tmp_path):
    """On x86-64 Linux the runtime loads the object itself: llvmlite (~40 MiB resident) stays out."""
    if not native.native_loader_available():
        pytest.skip("the ELF loader is for x86-64 Linux (elsewhere MCJIT loads the code)")
    _, data = mlp
    (tmp_path / "m.dsc").write_bytes(data)
    code = (
        "import sys, numpy as np, dsc.runtime\n"
        f"s = dsc.runtime.load({str(tmp_path / 'm.dsc')!r}, num_threads=2)\n"
        "s.run(None, {s.get_inputs()[0].name: np.zeros(s.get_inputs()[0].shape, np.float32)})\n"
        "assert s._native.loader == 'elf', s._native.loader\n"
        "bad = [m for m in sys.modules if m.startswith('llvmlite')]\n"
        "assert not bad, bad\n"
    )
    p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr


def test_elf_loader_and_mcjit_agree(mlp, monkeypatch):
    model, data = mlp
    feeds = zoo.example_inputs(model)
    elf = dsc.runtime.load(data, num_threads=2)
    monkeypatch.setenv("DSC_LOADER", "mcjit")
    jit = dsc.runtime.load(data, num_threads=2)
    assert jit._native.loader == "mcjit"
    if native.native_loader_available():
        assert elf._native.loader == "elf"
    for a, b in zip(elf.run(None, feeds), jit.run(None, feeds)):
        np.testing.assert_array_equal(a, b)


def test_elf_loader_refuses_what_it_does_not_know():
    with pytest.raises(native.Unsupported):
        native.ElfImage(b"not an object file" * 8)


def test_weights_and_arena_are_aligned(mlp):
    _, data = mlp
    sess = dsc.runtime.load(data, num_threads=1)
    assert sess._weights.ctypes.data % 64 == 0
    arena = sess._take_arena()
    assert arena.ctypes.data % 64 == 0 and arena.nbytes == sess._arena_bytes
