"""On a shared box the gateway answering WeCom runs first: the stack (`make run`, the bench, these
tests) starts every other service with CPU_NICE 19, which the scheduler sees in the process's
nice value and in its session's autogroup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.harness import World
from wxbot_devkit.launch import autogroup_settable
from wxbot_devkit.system import StackConfig

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(30),
    pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="Linux with autogroup scheduling"),
]


def test_every_service_but_the_callback_gateway_yields_the_cpu(world: World) -> None:
    if not autogroup_settable():
        pytest.skip("this host does not let a process set its autogroup's nice value")
    seen: dict[str, tuple[int, str]] = {}
    for replica in world.stack.replicas:
        pid = replica.child.pid
        assert pid is not None
        autogroup = Path(f"/proc/{pid}/autogroup").read_text().split()[-1]
        seen[replica.child.name] = (os.getpriority(os.PRIO_PROCESS, pid), autogroup)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen["gateway"] == (mine, "0")
    for name, (nice, autogroup) in seen.items():
        if name != "gateway":
            assert (nice, autogroup) == (min(19, mine + StackConfig.backend_nice), str(StackConfig.backend_nice)), name
