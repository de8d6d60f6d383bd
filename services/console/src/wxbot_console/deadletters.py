"""The dead-letter stream (WXBOT_DLQ) for operators: browse, replay, discard.

A dead letter is the original message with `Wxbot-Dlq-*` headers saying which consumer gave up,
why, and the original subject and sequence (`EventPublisher.dead_letter`). Replay publishes the
original bytes and headers to the original subject once more — with the message id
`replay:<dlq sequence>`, so a double click is one replay — and then removes the dead letter;
every consumer of that subject sees the event again and the services' exactly-once rules
(deterministic output ids, reply claims) apply as to any redelivery. Discard only removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from wxbot_common.errors import TransientError
from wxbot_common.nats.subjects import DLQ_PREFIX, DLQ_STREAM, HEADER_MSG_ID

LIST_MAX = 200
DLQ_HEADERS = ("Wxbot-Dlq-Reason", "Wxbot-Dlq-Subject", "Wxbot-Dlq-Sequence")


class NoSuchDeadLetterError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    consumer: str  # the durable that gave up
    subject: str  # where the message was
    original_seq: str
    reason: str
    event_type: str
    size: int
    at: str


class DeadLetters:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def list(self) -> list[DeadLetter]:
        """The dead letters, newest first (at most LIST_MAX)."""
        found: list[DeadLetter] = []
        seq = 1
        try:
            while len(found) < LIST_MAX:
                try:
                    msg = await self._js.get_msg(DLQ_STREAM, seq, subject=f"{DLQ_PREFIX}.>", next=True)
                except NotFoundError:
                    break
                found.append(_summary(msg))
                seq = (msg.seq or seq) + 1
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransientError(f"reading the dead letters failed: {exc!r}") from exc
        return list(reversed(found))

    async def replay(self, seq: int) -> DeadLetter:
        msg = await self._get(seq)
        letter = _summary(msg)
        if not letter.subject.startswith("wxbot."):
            raise NoSuchDeadLetterError(f"dead letter {seq} has no original subject")
        headers = {k: v for k, v in (msg.headers or {}).items() if k not in DLQ_HEADERS and k != HEADER_MSG_ID}
        headers[HEADER_MSG_ID] = f"replay:{seq}"
        try:
            await self._js.publish(letter.subject, msg.data or b"", headers=headers, timeout=5)
            await self._js.delete_msg(DLQ_STREAM, seq)
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransientError(f"replaying dead letter {seq} failed: {exc!r}") from exc
        return letter

    async def discard(self, seq: int) -> DeadLetter:
        letter = _summary(await self._get(seq))
        try:
            await self._js.delete_msg(DLQ_STREAM, seq)
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransientError(f"discarding dead letter {seq} failed: {exc!r}") from exc
        return letter

    async def _get(self, seq: int) -> RawStreamMsg:
        try:
            return await self._js.get_msg(DLQ_STREAM, seq)
        except NotFoundError as exc:
            raise NoSuchDeadLetterError(f"no dead letter {seq} (already replayed or discarded?)") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransientError(f"reading dead letter {seq} failed: {exc!r}") from exc


def _summary(msg: RawStreamMsg) -> DeadLetter:
    headers = msg.headers or {}
    return DeadLetter(
        seq=msg.seq or 0,
        consumer=(msg.subject or "").removeprefix(f"{DLQ_PREFIX}."),
        subject=str(headers.get("Wxbot-Dlq-Subject", "")),
        original_seq=str(headers.get("Wxbot-Dlq-Sequence", "")),
        reason=str(headers.get("Wxbot-Dlq-Reason", "")),
        event_type=str(headers.get("Wxbot-Event-Type", "")),
        size=len(msg.data or b""),
        at=msg.time.isoformat(timespec="seconds") if msg.time else "",
    )
