"""Runs the IR tests (tests/lit/*.mlir: `dsc opt` + filecheck) from pytest, one test per file."""

import glob
import os
import subprocess
import sys

import pytest

HERE = os.path.join(os.path.dirname(__file__), "lit")
FILES = sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "**", "*.mlir"), recursive=True))


@pytest.mark.parametrize("path", FILES)
def test_ir(path):
    p = subprocess.run([sys.executable, "-c", "from lit.main import main; main()", "-v", os.path.join(HERE, path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
