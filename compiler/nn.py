"""`dsc.nn`: layers for traced code (see dsc.frontends.trace.nn); `dsc.nn.functional` holds the ops."""

from dsc.frontends.trace.nn import *  # noqa: F401,F403
from dsc.frontends.trace.nn import __all__  # noqa: F401
from dsc.frontends.trace import functional  # noqa: F401
