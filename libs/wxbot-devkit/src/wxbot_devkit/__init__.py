"""Local tooling: embedded NATS/Redis, the `make run` supervisor, fake WeCom/LLM servers, an OTLP sink."""
