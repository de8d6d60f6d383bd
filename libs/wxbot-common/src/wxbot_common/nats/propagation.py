"""W3C trace context in NATS headers, read case-insensitively (other clients capitalise)."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter


class _HeaderGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)  # as we write them (lower case): no scan
        if value is not None:
            return [value]
        wanted = key.lower()
        for k, v in carrier.items():
            if k.lower() == wanted:
                return [v]
        return None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeaderGetter()


def inject_headers(headers: dict[str, str]) -> None:
    """Write the *current* span's context; call inside the PRODUCER span."""
    propagate.inject(headers)


def extract_context(headers: Mapping[str, str] | None) -> Context:
    return propagate.extract(headers or {}, getter=_GETTER)
