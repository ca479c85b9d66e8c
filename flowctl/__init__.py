"""flowctl: normalizing flows for particle physics and astronomy (library + CLI).

The flow library lives in :mod:`flowctl.flows` (``from flowctl.flows import build``), the
trainer in :mod:`flowctl.training`, the command line in :mod:`flowctl.cli`.
"""

__version__ = "0.1.0"
