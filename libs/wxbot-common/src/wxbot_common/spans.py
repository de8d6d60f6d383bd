"""A started span made current for a block: `start_as_current_span` without its generator machinery.

OpenTelemetry's `start_as_current_span` goes through two generator-based context managers
(its own and `use_span`), a third of what an unsampled span costs on the hot path, where every
message opens one span per hop. `ActiveSpan` does what they do — the span is current inside the
block, an `Exception` escaping it is recorded (`record_exception`) and sets the ERROR status
(`set_status_on_exception`), the span ends at exit — as a plain class.
"""

from __future__ import annotations

from types import TracebackType

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode


class ActiveSpan:
    """`with ActiveSpan(tracer.start_span(...)) as span:` — current inside, ended after."""

    __slots__ = ("_record_exception", "_set_status", "_span", "_token")

    def __init__(self, span: Span, record_exception: bool = True, set_status_on_exception: bool = True) -> None:
        self._span = span
        self._record_exception = record_exception
        self._set_status = set_status_on_exception
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = context_api.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context_api.detach(self._token)  # type: ignore[arg-type]
        span = self._span
        if isinstance(exc, Exception) and span.is_recording():
            if self._record_exception:
                span.record_exception(exc)
            if self._set_status:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
