"""A lower CPU priority for a service that shares its host with the gateway (`CPU_NICE`).

WeCom waits for the callback's answer and retries it when that is slow; everything behind the
gateway waits for the LLM anyway. When the box is busy, the gateway's answer should run first.
On Linux that takes two steps: `setpriority` (threads started afterwards inherit it, so it is set
before telemetry and gRPC start theirs) and, because the kernel's autogroup scheduling shares
the CPU between sessions before nice values count, the nice value of the process's autogroup —
written only when the process leads its own session (a supervisor started it with
`start_new_session`), so a service run from a terminal never lowers the terminal's priority.
In Kubernetes the CPU requests of the pods weigh them instead (the chart gives the gateway the
largest).
"""

from __future__ import annotations

import os
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")


def lower_cpu_priority(nice: int) -> list[str]:
    """Lower this process's CPU priority by `nice` (0–19); returns what was done, for the log."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return []
    done: list[str] = []
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
        done.append("process")
    except OSError:
        pass
    if os.getsid(0) == os.getpid() and AUTOGROUP.exists():
        try:
            AUTOGROUP.write_text(str(min(19, nice)))
            done.append("autogroup")
        except OSError:
            pass  # read-only /proc (some containers): the cgroup's CPU weight decides there
    return done
