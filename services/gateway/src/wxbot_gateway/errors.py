"""Delivery failures that retrying will not fix (the send is given up and a ReplyFailed recorded)."""

from __future__ import annotations


class DeliveryRefusedError(Exception):
    """The channel refused the reply for good (bad secret, user not reachable, socket gone)."""

    def __init__(self, errcode: int, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
