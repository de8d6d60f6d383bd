"""How fast this box runs Python right now: a fixed workload timed in CPU, before, during and after a run.

The reference machine is a virtual one whose speed drifts with its host's other tenants (the
same commit measured 5.2 and 9.7 ms of CPU per reply hours apart, and 4.3 and 6.9 ms minutes
apart). CPU per reply only compares between runs at about the same speed, so every report
prints the reference loop's CPU before and after the run and, from a probe process that runs
one small slice of the same workload every quarter second, its CPU *during* the load — which
is what the run's figures were measured at (the load's own processes slow it a little too:
compare runs of one scenario with each other).

`python -m bench.host_speed` prints the reference loop; `--probe` runs the probe until it is
stopped, one line per slice: `probe <perf_counter s> <CPU ms scaled to the whole loop>`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

_DOC = {"user": {"id": "u1", "name": "张三"}, "text": "你好，帮我查一下明天北京的天气" * 4, "n": 42}
LOOP_ITERATIONS = 20_000  # the reference loop
SLICE_ITERATIONS = 250  # one probe: 1/80 of it, 1–2 ms of CPU (under 1 % of a core at 4 per second)
PROBE_EVERY_S = 0.25


def _workload(iterations: int = LOOP_ITERATIONS) -> int:
    """Interpreter-bound work of the kind the services do: dicts, strings, JSON, small loops."""
    total = 0
    for i in range(iterations):
        d = dict(_DOC, n=i)
        s = json.dumps(d, ensure_ascii=False)
        total += len(json.loads(s)["text"]) + sum(range(i % 17))
    return total


def reference_loop_ms(repeats: int = 3) -> float:
    """CPU ms of the workload, the best of `repeats` (the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        _workload()
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


def slice_ms() -> float:
    """CPU ms of one probe slice, scaled to the whole reference loop (comparable with `reference_loop_ms`)."""
    started = time.thread_time()
    _workload(SLICE_ITERATIONS)
    return (time.thread_time() - started) * 1000 * LOOP_ITERATIONS / SLICE_ITERATIONS


def parse_probe_line(line: str) -> tuple[float, float] | None:
    """(perf_counter s, scaled ms) of one `probe` line; None for anything else."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != "probe":
        return None
    try:
        return float(parts[1]), float(parts[2])
    except ValueError:
        return None


def probe(every_s: float = PROBE_EVERY_S) -> None:
    """Print a slice's CPU every `every_s` until SIGTERM or SIGINT.

    `perf_counter` is CLOCK_MONOTONIC on Linux, one clock for every process, so the bench picks
    the slices inside its load window by comparing with its own marks."""
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while running:
        print(f"probe {time.perf_counter():.4f} {slice_ms():.1f}", flush=True)
        time.sleep(every_s)  # the sampling interval, not a wait for a condition


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.host_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--probe", action="store_true", help="print a slice's CPU every --every seconds until stopped")
    p.add_argument("--every", type=float, default=PROBE_EVERY_S)
    args = p.parse_args(argv)
    if args.probe:
        probe(args.every)
    else:
        print(f"reference loop: {reference_loop_ms()} ms of CPU (~100 on the quiet reference machine)")
    sys.exit(0)


if __name__ == "__main__":
    main()
