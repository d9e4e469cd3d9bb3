"""The onnx package's backend test suite, run on dsc's ONNX backend.

Node tests of the ops in `onnx_backend_excludes.INCLUDED_OPS` and the nine
light real models run; the exceptions, with reasons, are listed in that file.
"""

import os
import sys

import onnx.backend.test

sys.path.insert(0, os.path.dirname(__file__))
from onnx_backend_excludes import EXCLUDED, INCLUDED_OPS, LIGHT_MODELS  # noqa: E402

from dsc.onnx_backend import DscBackend  # noqa: E402

backend_test = onnx.backend.test.BackendTest(DscBackend, __name__)
for op in INCLUDED_OPS:
    backend_test.include(rf"^test_{op}(_.*)?_cpu$")
for m in LIGHT_MODELS:
    backend_test.include(rf"^test_{m}_cpu$")
for pattern in EXCLUDED:
    backend_test.exclude(pattern)

# Keep only the included tests (the runner would report every other onnx test as skipped).
for _items in backend_test._test_items.values():
    for _name in [n for n in _items if not any(p.search(n) for p in backend_test._include_patterns)]:
        del _items[_name]

globals().update(backend_test.test_cases)
