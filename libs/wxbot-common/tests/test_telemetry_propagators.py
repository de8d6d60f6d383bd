"""Trace context travels as W3C traceparent alone unless OTEL_PROPAGATORS says otherwise (a process each,
since the propagator and the tracer provider are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

_PROBE = """
import json
from opentelemetry import propagate
from wxbot_common.telemetry import setup_telemetry
setup_telemetry("probe")
print(json.dumps(sorted(propagate.get_global_textmap().fields)))
"""


def _fields(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=clean | env, capture_output=True, text=True, timeout=50, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_default_is_traceparent_alone() -> None:
    assert _fields() == ["traceparent", "tracestate"]


def test_otel_propagators_still_decides_when_set() -> None:
    assert _fields(OTEL_PROPAGATORS="tracecontext,baggage") == ["baggage", "traceparent", "tracestate"]
