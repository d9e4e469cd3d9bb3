"""The onnx package's backend test suite, run on dsc's reference backend (import + NumPy evaluation).

Node tests of the ops in `onnx_backend_excludes.INCLUDED_OPS` and the nine
light real models run; the exceptions, with reasons, are listed in that file.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from onnx_backend_suite import make_suite  # noqa: E402

from dsc.onnx_backend import DscBackend  # noqa: E402

globals().update(make_suite(DscBackend, __name__))
