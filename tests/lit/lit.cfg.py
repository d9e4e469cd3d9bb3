"""lit configuration of dsc's IR tests: one .mlir file per pass, checked with filecheck."""

import os
import sys

import lit.formats

config.name = "dsc-ir"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(__file__)
config.excludes = ["lit.cfg.py", "Output"]
config.substitutions.append(("%dsc", f"{sys.executable} -m dsc"))
config.substitutions.append(("%filecheck", f"{sys.executable} -m filecheck"))
config.environment["PYTHONWARNINGS"] = "ignore"
