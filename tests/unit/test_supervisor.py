"""The supervisor on tiny real child processes: backoff, its reset, reasons, env, and stopping."""

from __future__ import annotations

import io
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.launch import Child
from wxbot_devkit.supervisor import Backoff, Supervisor

pytestmark = pytest.mark.timeout(30)
Make = Callable[..., Awaitable[Supervisor]]


@dataclass
class Proc:
    """A bare child that counts as ready once spawned."""

    child: Child

    async def start(self) -> None:
        await self.child.start()


@dataclass
class NeverReady:
    """A child that runs but never reports ready (like a service stuck connecting)."""

    child: Child

    async def start(self) -> None:
        await self.child.start()
        raise TimeoutError("not ready at http://127.0.0.1:1/readyz after 0 s")


def python(name: str, code: str, env: dict[str, str] | None = None) -> Child:
    return Child(name, [sys.executable, "-c", code], env={**os.environ, **(env or {})})


@pytest.fixture
async def supervise() -> AsyncIterator[Make]:
    """Start children, then a supervisor over them; stop both afterwards."""
    made: list[tuple[Supervisor, list[Child]]] = []

    async def make(*targets: Proc | NeverReady, backoff: Backoff) -> Supervisor:
        for t in targets:
            await t.child.start()
        sup = Supervisor(list(targets), backoff, echo=io.StringIO())
        sup.start()
        made.append((sup, [t.child for t in targets]))
        return sup

    yield make
    for sup, children in made:
        await sup.stop()
        for child in children:
            await child.stop(grace_s=1)


async def test_a_process_that_always_fails_is_restarted_with_growing_backoff(
    supervise: Make,
) -> None:
    child = python("crasher", "import sys; print('bad config'); sys.exit(3)")
    sup = await supervise(Proc(child), backoff=Backoff(initial_s=0.05, factor=2, max_s=0.2, reset_after_s=30))
    await wait_until(lambda: sup.restarts("crasher") >= 5, 10, "five restarts")
    history = sup.history[:5]
    assert [r.delay_s for r in history] == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert [r.crashes for r in history] == [1, 2, 3, 4, 5]
    assert {r.reason for r in history} == {"exited with code 3"}
    for before, after in itertools.pairwise(history):
        assert after.died_at - before.died_at >= before.delay_s  # it really waited
    assert any("crasher" in line and "exited with code 3" in line and "restart 3 in 0.2 s" in line for line in sup.log)
    assert any("crash loop: 4 in a row" in line for line in sup.log)
    # each attempt ran the program again (its last output may still be on its way in)
    await wait_until(lambda: list(child.lines).count("bad config") >= 5, 10, "the output of five runs")


async def test_the_backoff_starts_over_after_the_process_stayed_up(supervise: Make) -> None:
    child = python("flaky", "import time, sys; time.sleep(0.3); sys.exit(1)")
    sup = await supervise(Proc(child), backoff=Backoff(initial_s=0.05, factor=10, max_s=5, reset_after_s=0.2))
    await wait_until(lambda: sup.restarts("flaky") >= 3, 10, "three restarts")
    assert [r.delay_s for r in sup.history[:3]] == [0.05, 0.05, 0.05]
    assert all(r.uptime_s is not None and r.uptime_s >= 0.25 for r in sup.history[:3])


async def test_a_killed_process_comes_back_with_the_same_env(supervise: Make) -> None:
    code = "import os, time; print('port', os.environ['MY_PORT'], flush=True); time.sleep(60)"
    child = python("worker", code, env={"MY_PORT": "4711"})
    sup = await supervise(Proc(child), backoff=Backoff(initial_s=0.05))
    await wait_until(lambda: "port 4711" in child.lines, 10, "first output")
    first_pid = child.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    restart = await sup.wait_running("worker", restarts=1, timeout_s=10)
    assert restart.reason == "killed by SIGKILL"
    assert restart.pid == first_pid and child.pid != first_pid
    await wait_until(lambda: list(child.lines).count("port 4711") == 2, 10, "the restarted worker's output")
    assert any(f"worker (pid {first_pid}) killed by SIGKILL" in line for line in sup.log)
    assert any("worker is back" in line for line in sup.log)
    assert restart.downtime_s is not None and restart.downtime_s >= 0.05


async def test_a_process_that_never_gets_ready_is_stopped_and_retried(supervise: Make) -> None:
    child = python("stuck", "import time; time.sleep(60)")
    target = NeverReady(child)
    await child.start()
    sup = Supervisor([target], Backoff(initial_s=0.05, max_s=0.1), echo=io.StringIO())
    sup.start()
    try:
        pid = child.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: sup.restarts("stuck") >= 3, 10, "three attempts")
        assert sup.history[1].reason == "killed by SIGTERM"  # stopped by the supervisor, not ready
        assert sup.history[1].uptime_s is None
        assert any("stuck not ready: not ready at" in line for line in sup.log)
    finally:
        await sup.stop()
        await child.stop(grace_s=1)


async def test_stopping_the_supervisor_restarts_nothing(supervise: Make) -> None:
    child = python("dying", "import sys; sys.exit(2)")
    sup = await supervise(Proc(child), backoff=Backoff(initial_s=30))
    pid = child.pid
    await wait_until(lambda: sup.phase("dying") == "backoff", 10, "the first exit")
    assert sup.watching
    await sup.stop()  # promptly, though a restart was due in 30 s
    assert not sup.watching
    assert child.pid == pid and child.returncode == 2
    assert sup.restarts("dying") == 1 and sup.history[0].ready_at is None
