"""Error classes that tell a consumer loop how to settle a message."""

from __future__ import annotations


class TransientError(Exception):
    """Worth retrying later (dependency down, timeout): the message is nak'd with a delay."""

    def __init__(self, message: str, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(Exception):
    """Retrying cannot help (undecodable, invalid): the message is dead-lettered and terminated."""
