"""onnx's backend test suite through the compiled path: pipeline, llvmlite code, artifact, runtime.

The same tests as test_onnx_backend.py (the reference path), less the ones
listed in `onnx_backend_excludes.COMPILED_EXCLUDED` with their reasons.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import onnx_backend_excludes  # noqa: E402
from onnx_backend_suite import make_suite  # noqa: E402

from dsc.onnx_backend import DscCompiledBackend  # noqa: E402

globals().update({f"Compiled{k}": v for k, v in make_suite(DscCompiledBackend, __name__, getattr(onnx_backend_excludes, "COMPILED_EXCLUDED", {})).items()})
