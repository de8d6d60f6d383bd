"""py-spy profiles of the service processes during the load, and the text summary engineers read first.

One `py-spy record --nonblocking` per service process writes a speedscope file (open it at
https://www.speedscope.app or with `speedscope FILE`); `summarize` ranks functions by own samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

PY_SPY_RATE = 200  # samples per second per process
STOP_TIMEOUT_S = 30.0


def find_py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if not found:
        raise FileNotFoundError("py-spy not found: pip install py-spy (requirements-dev.txt has it)")
    return found


def short_path(path: str) -> str:
    """A file path without the interpreter's or the checkout's prefix: `wxbot_gateway/app.py`, `asyncio/events.py`."""
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3/"):
        at = path.rfind(marker)
        if at >= 0:
            return path[at + len(marker) :]
    return path


@dataclass(frozen=True, slots=True)
class FunctionRow:
    function: str  # "name (file)"
    own_s: float  # seconds of samples where this function was running (the leaf)
    total_s: float  # seconds of samples where it was anywhere on the stack
    own_share: float  # own_s / all samples
    total_share: float


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    name: str
    path: str
    sampled_s: float  # seconds of samples of active threads (running, or runnable and waiting for a core)
    samples: int
    top: list[FunctionRow] = field(default_factory=list)


def summarize(speedscope: dict[str, Any], name: str = "", path: str = "", top: int = 15) -> ProfileSummary:
    """Top functions by own samples of a py-spy speedscope document (all threads together).

    Frames that differ only by line are the same function; weights are seconds (py-spy's unit).
    """
    frames = speedscope["shared"]["frames"]
    keys = [f"{f.get('name', '?')} ({short_path(str(f.get('file', '?')))})" for f in frames]
    own: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    all_s, count = 0.0, 0
    for profile in speedscope.get("profiles", []):
        samples = profile.get("samples", [])
        weights = profile.get("weights") or [1.0] * len(samples)
        for stack, weight in zip(samples, weights, strict=False):
            if not stack:
                continue
            w = float(weight)
            all_s += w
            count += 1
            own[keys[stack[-1]]] += w
            for key in {keys[i] for i in stack}:
                total[key] += w
    rows = [
        FunctionRow(key, s, total[key], s / all_s if all_s else 0.0, total[key] / all_s if all_s else 0.0)
        for key, s in sorted(own.items(), key=lambda kv: -kv[1])[:top]
    ]
    return ProfileSummary(name, path, all_s, count, rows)


def render_summary(summary: ProfileSummary) -> str:
    lines = [
        f"{summary.name} — {summary.samples} samples = {summary.sampled_s:.1f} s active  ({summary.path})",
        "     own %  total %  function",
    ]
    lines.extend(
        f"    {row.own_share * 100:6.1f}   {row.total_share * 100:6.1f}  {row.function}" for row in summary.top
    )
    return "\n".join(lines)


@dataclass
class _Recorder:
    name: str
    target_pid: int
    path: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def log(self) -> Path:
        return self.path.with_suffix(".py-spy.log")


class Profiler:
    """Starts one py-spy per target process, stops them all with SIGINT and waits for their files."""

    def __init__(self, out_dir: Path, targets: list[tuple[str, int]], rate: int = PY_SPY_RATE) -> None:
        self.out_dir = out_dir
        self.rate = rate
        self._recorders = [_Recorder(name, pid, out_dir / f"{name}.json") for name, pid in targets]
        self.errors: list[str] = []

    @property
    def pids(self) -> list[tuple[str, int]]:
        """(target name, py-spy pid) of the running recorders, so their CPU can be shown apart."""
        return [(r.name, r.proc.pid) for r in self._recorders if r.proc is not None]

    async def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        py_spy = find_py_spy()
        for r in self._recorders:
            r.path.unlink(missing_ok=True)
            with r.log.open("wb") as log:  # a file, not a pipe nobody reads while py-spy runs
                r.proc = await self._spawn(py_spy, r, log)

    async def _spawn(self, py_spy: str, r: _Recorder, log: BinaryIO) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(r.target_pid),
            "--format",
            "speedscope",
            "-o",
            str(r.path),
            "--rate",
            str(self.rate),
            "--nonblocking",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def stop(self) -> list[ProfileSummary]:
        """SIGINT every recorder, wait for each to write its file, and summarize the files."""
        for r in self._recorders:
            if r.proc is not None and r.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    r.proc.send_signal(signal.SIGINT)
        await asyncio.gather(*(self._wait(r) for r in self._recorders))
        summaries = []
        for r in self._recorders:
            try:
                document = json.loads(r.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                tail = r.log.read_text(errors="replace").strip().splitlines()[-3:] if r.log.exists() else []
                self.errors.append(f"{r.name}: no profile ({exc}) {' | '.join(tail)}")
                continue
            summaries.append(summarize(document, r.name, str(r.path)))
        return summaries

    async def _wait(self, r: _Recorder) -> None:
        if r.proc is None:
            return
        try:
            await asyncio.wait_for(r.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                r.proc.kill()
            await r.proc.wait()
            self.errors.append(f"{r.name}: py-spy did not stop within {STOP_TIMEOUT_S:.0f} s")
