"""How fast this box runs Python right now: a fixed workload timed in CPU, before the stack starts.

The reference machine is a virtual one whose speed drifts with its host's other tenants (the
same commit measured 5.2 and 9.7 ms of CPU per reply hours apart). CPU per reply only compares
between runs whose reference loop took about as long, so every report prints it.
"""

from __future__ import annotations

import json
import time

_DOC = {"user": {"id": "u1", "name": "张三"}, "text": "你好，帮我查一下明天北京的天气" * 4, "n": 42}


def _workload() -> int:
    """Interpreter-bound work of the kind the services do: dicts, strings, JSON, small loops."""
    total = 0
    for i in range(20_000):
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
