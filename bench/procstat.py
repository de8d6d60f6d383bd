"""CPU, memory and file descriptors of every process of a run, from /proc.

CPU is utime + stime (fields 14 and 15 of /proc/PID/stat, in clock ticks) for another process, and
`resource.getrusage` for the load generator itself, with the kernel's part (stime) kept apart: it
tells whether a process's CPU goes to system calls or to its own code. Memory is VmRSS / VmHWM of
/proc/PID/status; fds are the entries of /proc/PID/fd. A process that is gone reads as None.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from typing import Literal

CLK_TCK = os.sysconf("SC_CLK_TCK")

Role = Literal["service", "readmodel", "infra", "bench", "sink", "profiler"]


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of one process."""

    cpu_s: float  # user + system CPU since the process started
    rss_kb: int | None
    hwm_kb: int | None  # peak RSS since the process started
    fds: int | None
    syscalls: tuple[int, int, int] | None = None  # read calls, write calls, voluntary context switches
    system_s: float | None = None  # the kernel's part of cpu_s


def parse_stat_ticks(stat: str) -> tuple[int, int]:
    """(utime, stime), in clock ticks, from the text of /proc/PID/stat.

    The command name (field 2) is in parentheses and may hold spaces or ')', so split after the last ')'.
    """
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime (field 14) and stime (field 15) are fields[11] and fields[12].
    return int(fields[11]), int(fields[12])


def parse_status_kb(status: str, key: str) -> int | None:
    """A `Key:   1234 kB` line of /proc/PID/status, in kB (None when absent, as for a zombie)."""
    prefix = key + ":"
    for line in status.splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix) :].split()[0])
    return None


def parse_io_calls(io: str) -> tuple[int, int]:
    """(syscr, syscw) from the text of /proc/PID/io: read and write system calls of every thread."""
    values = dict(line.split(":", 1) for line in io.splitlines() if ":" in line)
    return int(values["syscr"]), int(values["syscw"])


def _syscalls(pid: int | str, status: str) -> tuple[int, int, int] | None:
    """Reads, writes and voluntary switches (sleeps = wakeups) of the main thread; None if unreadable."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as f:
            reads, writes = parse_io_calls(f.read())
    except (OSError, ValueError, KeyError):
        return None
    return reads, writes, parse_status_kb(status, "voluntary_ctxt_switches") or 0


def _count_fds(pid: int | str) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sample_pid(pid: int) -> ProcSample | None:
    """A reading of process `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            user, system = parse_stat_ticks(f.read())
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            status = f.read()
    except (OSError, ValueError, IndexError):
        return None
    return ProcSample(
        (user + system) / CLK_TCK,
        parse_status_kb(status, "VmRSS"),
        parse_status_kb(status, "VmHWM"),
        _count_fds(pid),
        _syscalls(pid, status),
        system / CLK_TCK,
    )


def sample_self() -> ProcSample:
    """The load generator's own reading: getrusage (all its threads), memory and fds from /proc/self."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = hwm = None
    status = ""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            status = f.read()
        rss, hwm = parse_status_kb(status, "VmRSS"), parse_status_kb(status, "VmHWM")
    except OSError:
        pass
    cpu = usage.ru_utime + usage.ru_stime
    return ProcSample(cpu, rss, hwm, _count_fds("self"), _syscalls("self", status), usage.ru_stime)


@dataclass(frozen=True, slots=True)
class BoxSample:
    """The whole machine, from the first line of /proc/stat (all cores, since boot)."""

    busy_s: float  # user + nice + system + irq + softirq (guest time is inside user already)
    steal_s: float  # time the hypervisor gave our virtual cores to someone else
    total_s: float  # busy + idle + iowait + steal


def parse_proc_stat(text: str) -> BoxSample:
    fields = [int(v) for v in text.split("\n", 1)[0].split()[1:9]]
    fields += [0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq
    return BoxSample(busy / CLK_TCK, steal / CLK_TCK, (busy + idle + iowait + steal) / CLK_TCK)


def sample_box() -> BoxSample | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            return parse_proc_stat(f.readline())
    except (OSError, ValueError):
        return None


@dataclass(slots=True)
class Tracked:
    """A process measured during the run; pid None means the load generator itself."""

    name: str
    role: Role
    pid: int | None
    idle: ProcSample | None = None  # start of the idle window before the load
    before: ProcSample | None = None  # start of the load phase
    after: ProcSample | None = None  # end of the load phase

    def read(self) -> ProcSample | None:
        return sample_self() if self.pid is None else sample_pid(self.pid)


@dataclass(frozen=True, slots=True)
class ProcFigures:
    """What the report shows for one process."""

    name: str
    role: Role
    pid: int
    cpu_ms: float | None  # during the load phase
    cpu_ms_per_reply: float | None
    idle_cpu_ms_per_s: float | None  # during the idle window before the load
    rss_mb_before: float | None
    rss_mb_after: float | None
    rss_mb_peak: float | None
    fds_before: int | None
    fds_after: int | None
    reads_per_reply: float | None = None  # read system calls
    writes_per_reply: float | None = None  # write system calls (each socket write wakes a reader)
    sleeps_per_reply: float | None = None  # voluntary context switches of the main thread
    kernel_share: float | None = None  # of cpu_ms, the part spent in the kernel (system calls, network stack)


def _mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


def figures(t: Tracked, replies: int, idle_s: float) -> ProcFigures:
    """Deltas of one process over the load phase, per delivered reply."""
    cpu_ms = None
    if t.before is not None and t.after is not None:
        cpu_ms = (t.after.cpu_s - t.before.cpu_s) * 1000
    idle = None
    if t.idle is not None and t.before is not None and idle_s > 0:
        idle = (t.before.cpu_s - t.idle.cpu_s) * 1000 / idle_s
    sys_before = t.before.system_s if t.before else None
    sys_after = t.after.system_s if t.after else None
    kernel = None
    if cpu_ms and sys_before is not None and sys_after is not None:
        kernel = (sys_after - sys_before) * 1000 / cpu_ms
    per_reply: list[float | None] = [None, None, None]
    if t.before and t.after and t.before.syscalls and t.after.syscalls and replies > 0:
        per_reply = [(b - a) / replies for a, b in zip(t.before.syscalls, t.after.syscalls, strict=True)]
    return ProcFigures(
        name=t.name,
        role=t.role,
        pid=os.getpid() if t.pid is None else t.pid,
        cpu_ms=cpu_ms,
        cpu_ms_per_reply=None if cpu_ms is None or replies <= 0 else cpu_ms / replies,
        idle_cpu_ms_per_s=idle,
        rss_mb_before=_mb(t.before.rss_kb) if t.before else None,
        rss_mb_after=_mb(t.after.rss_kb) if t.after else None,
        rss_mb_peak=_mb(t.after.hwm_kb) if t.after else None,
        fds_before=t.before.fds if t.before else None,
        fds_after=t.after.fds if t.after else None,
        reads_per_reply=per_reply[0],
        writes_per_reply=per_reply[1],
        sleeps_per_reply=per_reply[2],
        kernel_share=kernel,
    )


class Meter:
    """Reads every tracked process at the marks of a run: idle start, load start, load end."""

    def __init__(self) -> None:
        self.tracked: list[Tracked] = []
        self.idle_started = self.load_started = self.load_ended = 0.0
        self.box_before: BoxSample | None = None
        self.box_after: BoxSample | None = None

    def add(self, name: str, role: Role, pid: int | None) -> None:
        self.tracked.append(Tracked(name, role, pid))

    def mark_idle(self) -> None:
        self.idle_started = time.perf_counter()
        for t in self.tracked:
            t.idle = t.read()

    def mark_start(self) -> None:
        self.load_started = time.perf_counter()
        self.box_before = sample_box()
        for t in self.tracked:
            t.before = t.read()

    def mark_end(self) -> None:
        self.load_ended = time.perf_counter()
        for t in self.tracked:
            t.after = t.read()
        self.box_after = sample_box()

    @property
    def window_s(self) -> float:
        return self.load_ended - self.load_started

    def box_ms(self) -> tuple[float, float, float] | None:
        """(busy, steal, capacity) CPU ms of the whole machine over the load phase."""
        if self.box_before is None or self.box_after is None:
            return None
        a, b = self.box_before, self.box_after
        return (b.busy_s - a.busy_s) * 1000, (b.steal_s - a.steal_s) * 1000, (b.total_s - a.total_s) * 1000

    def figures(self, replies: int) -> list[ProcFigures]:
        idle_s = self.load_started - self.idle_started if self.idle_started else 0.0
        return [figures(t, replies, idle_s) for t in self.tracked]
