"""CPU_NICE lowers a service's priority where the scheduler looks: its own nice value and, when it
leads its session (as the stack starts it), its autogroup's — never the autogroup of a terminal
it was started from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wxbot_devkit.launch import autogroup_settable

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="Linux with autogroup scheduling"),
]

PROBE = """
import json, os
from pathlib import Path
from wxbot_common.cpu_priority import lower_cpu_priority
done = lower_cpu_priority(int(os.environ["NICE"]))
fields = Path("/proc/self/autogroup").read_text().split()
print(json.dumps({"done": done, "nice": os.getpriority(os.PRIO_PROCESS, 0),
                  "autogroup": fields[-1] if fields else ""}))
"""


def probe(nice: int, new_session: bool) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "NICE": str(nice)},
        start_new_session=new_session,
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def own_autogroup_nice() -> str:
    """The nice value of this process's autogroup; "" where the process is in none (the kernel
    prints nothing for a session kept in the root group, as a CI container's shell is)."""
    fields = Path("/proc/self/autogroup").read_text().split()
    return fields[-1] if fields else ""


def test_a_service_leading_its_session_lowers_itself_and_its_autogroup() -> None:
    if not autogroup_settable():
        pytest.skip("this host does not let a process set its autogroup's nice value")
    start = os.getpriority(os.PRIO_PROCESS, 0)
    seen = probe(7, new_session=True)
    assert seen == {"done": ["process", "autogroup"], "nice": min(19, start + 7), "autogroup": "7"}


def test_started_from_a_terminal_it_leaves_the_terminal_s_autogroup_alone() -> None:
    before = own_autogroup_nice()
    seen = probe(7, new_session=False)
    assert seen["done"] == ["process"] and seen["autogroup"] == before
    assert own_autogroup_nice() == before


def test_zero_changes_nothing() -> None:
    seen = probe(0, new_session=True)
    assert seen["done"] == [] and seen["nice"] == os.getpriority(os.PRIO_PROCESS, 0) and seen["autogroup"] == "0"
