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
        self.config_errors = Counter(
            "wxbot_gateway_config_errors",
            "Provider answers that mean our configuration is wrong (e.g. 40001: bad secret)",
            ["channel", "errcode"],
            registry=registry,
        )
