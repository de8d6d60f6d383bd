"""Metadata of a derived event: the one rule for ids, causation and ordering that every stage follows."""

from __future__ import annotations

from wxbot_common.ids import derived_event_id, now_timestamp
from wxbot_proto.events.v1 import events_pb2 as ev


def derive_meta(
    out: ev.EventMeta, src: ev.EventMeta, stage: str, kind: str, origin_sequence: int | None = None
) -> None:
    """Fill `out` for an event that `stage` emits because of the event carrying `src`.

    The id is deterministic (a redelivered input yields the same output id, which JetStream dedupes);
    `origin_sequence` is the stream position of the user's message, which context uses to order
    and to wait for reads; it is inherited unless the stage is the one that learns it.
    """
    out.event_id = derived_event_id(stage, src.event_id, kind)
    out.conversation_id = src.conversation_id
    out.causation_id = src.event_id
    out.correlation_id = src.correlation_id or src.event_id
    out.channel = src.channel
    out.origin_sequence = src.origin_sequence if origin_sequence is None else origin_sequence
    out.occurred_at.CopyFrom(now_timestamp())
