"""Shared plumbing for wxbot services: settings, logging, telemetry, NATS and gRPC helpers."""
