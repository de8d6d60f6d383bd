"""Gateway metrics (registered on the service's own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.callbacks = Counter(
            "wxbot_gateway_callbacks", "Channel callbacks by outcome", ["channel", "outcome"], registry=registry
        )
        self.deliveries = Counter(
            "wxbot_gateway_deliveries",
            "Reply deliveries by outcome and provider errcode",
            ["channel", "outcome", "errcode"],
            registry=registry,
        )
