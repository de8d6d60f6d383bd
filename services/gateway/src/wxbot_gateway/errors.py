"""How a channel tells delivery that a send failed: for good, or for now (see `errcodes`)."""

from __future__ import annotations

from wxbot_common.errors import TransientError


class DeliveryRefusedError(Exception):
    """The channel refused the reply for good (configuration, recipient, content; socket gone):
    delivery gives up at once and records ReplyFailed(retryable=false)."""

    def __init__(self, errcode: int, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode


class RetryLaterError(TransientError):
    """The provider answered an errcode a later attempt may not get: retried with backoff, and
    recorded with this errcode if the last allowed delivery fails too."""

    def __init__(self, errcode: int, message: str, delay_s: float | None = None) -> None:
        super().__init__(message, delay_s)
        self.errcode = errcode


def errcode_of(exc: BaseException) -> int:
    """The provider errcode a failure carries; 0 when it was not an API answer (unreachable, timeout)."""
    errcode = getattr(exc, "errcode", 0)
    return errcode if isinstance(errcode, int) else 0
