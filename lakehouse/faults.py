"""Named crash points for fault-injection tests: `LAKEHOUSE_FAULT=<name>` kills the process there (SIGKILL)."""

from __future__ import annotations

import os
import signal

VARIABLE = "LAKEHOUSE_FAULT"


def point(name: str) -> None:
    """Kill this process with SIGKILL when `LAKEHOUSE_FAULT` names this point; otherwise do nothing."""
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
