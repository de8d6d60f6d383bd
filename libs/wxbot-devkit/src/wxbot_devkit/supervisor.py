"""Keeps the processes of a local stack running the way Kubernetes keeps containers running.

A process that exits without being asked to (SIGKILL, a crash, any exit code: these are
long-running services, like a Deployment's `restartPolicy: Always`) is started again with the
same argv, env, ports and data directory after a CrashLoopBackOff-style delay: `initial_s`,
doubling up to `max_s`, back to `initial_s` once a process has stayed up `reset_after_s`.
Each exit and each recovery is logged with its reason and kept in `history`, so `make run`
shows what happened and tests (chaos, e2e) can wait for a recovery and measure it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TextIO

from wxbot_devkit.launch import Child

Phase = Literal["running", "backoff", "starting"]


class Supervisable(Protocol):
    """Something with one child process that `start()` spawns and waits for until it is ready."""

    @property
    def child(self) -> Child: ...

    async def start(self) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """The wait before restarting a process that died `crashes` times in a row."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    reset_after_s: float = 60.0  # up (and ready) this long: the next exit counts as the first again

    def delay(self, crashes: int) -> float:
        return float(min(self.max_s, self.initial_s * self.factor ** max(0, crashes - 1)))


def describe_exit(returncode: int) -> str:
    """`killed by SIGKILL` or `exited with code 3` (asyncio gives -N for a signal)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Restart:
    """One unexpected exit and, once it is back and ready, its recovery (monotonic clock)."""

    name: str
    pid: int | None
    returncode: int
    uptime_s: float | None  # None: it died before it was ready
    crashes: int  # in a row, this one included
    delay_s: float
    died_at: float
    ready_at: float | None = None

    @property
    def reason(self) -> str:
        return describe_exit(self.returncode)

    @property
    def downtime_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.died_at


@dataclass
class _Unit:
    target: Supervisable
    phase: Phase = "running"
    up_since: float | None = field(default_factory=time.monotonic)
    crashes: int = 0


class Supervisor:
    """Watches already started processes and restarts each one that exits, until `stop()`."""

    def __init__(
        self,
        targets: Sequence[Supervisable],
        backoff: Backoff | None = None,
        echo: TextIO | None = None,
        keep_lines: int = 1000,
    ) -> None:
        self.backoff = backoff or Backoff()
        self.history: list[Restart] = []
        self.log: deque[str] = deque(maxlen=keep_lines)
        self._units = {t.child.name: _Unit(t) for t in targets}
        self._echo = echo
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def names(self) -> list[str]:
        return list(self._units)

    @property
    def watching(self) -> bool:
        """True while any watcher could still restart something."""
        return any(not t.done() for t in self._tasks)

    def start(self) -> None:
        self._stopping = False
        self._tasks = [asyncio.create_task(self._watch(u), name=f"supervise:{n}") for n, u in self._units.items()]

    async def stop(self) -> None:
        """Restart nothing from now on; a restart under way is abandoned (the caller stops the children)."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def phase(self, name: str) -> Phase:
        return self._units[name].phase

    def restarts(self, name: str) -> int:
        """How many times `name` exited unexpectedly (and was, or is being, restarted)."""
        return sum(1 for r in self.history if r.name == name)

    async def wait_running(self, name: str, restarts: int = 1, timeout_s: float = 60.0) -> Restart:
        """Poll until `name` has been restarted `restarts` times and is ready again; that restart."""
        deadline = time.monotonic() + timeout_s
        while not (self.restarts(name) >= restarts and self.phase(name) == "running"):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name}: {self.restarts(name)} restart(s), {self.phase(name)}, after {timeout_s:.0f} s "
                    f"(wanted {restarts}, running)\n" + "\n".join(self.log)
                )
            await asyncio.sleep(0.05)
        return [r for r in self.history if r.name == name][restarts - 1]

    def _say(self, message: str) -> None:
        line = f"{'supervise':<9}| {message}"
        self.log.append(line)
        if self._echo is not None:
            self._echo.write(line + "\n")
            self._echo.flush()

    async def _watch(self, unit: _Unit) -> None:
        child = unit.target.child
        while True:
            pid = child.pid
            code = await child.exited()
            if self._stopping:
                return
            died_at = time.monotonic()
            uptime = None if unit.up_since is None else died_at - unit.up_since
            if uptime is not None and uptime >= self.backoff.reset_after_s:
                unit.crashes = 0
            unit.crashes += 1
            unit.phase, unit.up_since = "backoff", None
            event = Restart(child.name, pid, code, uptime, unit.crashes, self.backoff.delay(unit.crashes), died_at)
            self.history.append(event)
            up = "before it was ready" if uptime is None else f"after {uptime:.1f} s up"
            loop = f", crash loop: {unit.crashes} in a row" if unit.crashes > 1 else ""
            self._say(
                f"{child.name} (pid {pid}) {event.reason} {up}; restart {self.restarts(child.name)} "
                f"in {event.delay_s:.1f} s{loop}"
            )
            await child.stop(grace_s=0)  # end what it left in its process group, read its last output
            await asyncio.sleep(event.delay_s)
            unit.phase = "starting"
            try:
                await unit.target.start()
            except Exception as exc:
                if child.returncode is None:  # up but never ready: stop it, and count it as a crash
                    self._say(f"{child.name} not ready: {str(exc).splitlines()[0]}; stopping it")
                    with contextlib.suppress(Exception):
                        await child.stop(grace_s=2)
                continue
            unit.phase, unit.up_since = "running", time.monotonic()
            event.ready_at = unit.up_since
            self._say(f"{child.name} is back (pid {child.pid}), down {event.downtime_s:.1f} s")
