"""Made-up but well-formed event chains, for the benchmark and the tests: a message, its checks,
its answer (with a variant, model and tokens), its delivery, and maybe feedback on it."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from wxbot_common.ids import derived_event_id, inbound_event_id
from wxbot_common.nats.subjects import EventKind
from wxbot_proto.events.v1 import events_pb2 as ev


@dataclass(frozen=True)
class Chain:
    """One message and what happened to it; times in seconds since the epoch, stages in seconds."""

    n: int
    user: str
    at: float
    variant: str = "A"
    model: str = "fake-model"
    tokens_in: int = 100
    tokens_out: int = 20
    text: str = "hello"
    inbound_s: float = 0.005
    answer_s: float = 0.3
    outbound_s: float = 0.005
    delivery_s: float = 0.02
    source: int = ev.REPLY_SOURCE_LLM
    feedback: int = 0  # +1 / -1: a button pressed 2 s after the answer arrived


def _meta(meta: ev.EventMeta, event_id: str, conversation: str, correlation: str, causation: str, at: float) -> None:
    meta.event_id = event_id
    meta.conversation_id = conversation
    meta.correlation_id = correlation
    meta.causation_id = causation
    meta.channel = ev.CHANNEL_WECOM_APP
    meta.occurred_at.FromNanoseconds(int(at * 1e9))


def chain_events(c: Chain) -> list[tuple[EventKind, Message]]:
    """The events of one chain, in log order."""
    conversation = f"wecom:corp:{c.user}"
    address = ev.ReplyAddress(corp_id="corp", agent_id="1", user_id=c.user)
    rid = inbound_event_id("synthetic", "corp", str(c.n))
    out: list[tuple[EventKind, Message]] = []
    received = ev.MessageReceived(reply_to=address, provider_msg_id=str(c.n), kind=ev.MESSAGE_KIND_TEXT, text=c.text)
    _meta(received.meta, rid, conversation, rid, "", c.at)
    out.append((EventKind.RECEIVED, received))
    t = c.at + c.inbound_s
    accepted = ev.InboundAccepted(message=received)
    aid = derived_event_id("safety", rid, "accepted")
    _meta(accepted.meta, aid, conversation, rid, rid, t)
    out.append((EventKind.ACCEPTED, accepted))
    t += c.answer_s
    drafted = ev.ReplyDrafted(
        reply_to=address,
        text=f"answer {c.n}",
        source=c.source,  # type: ignore[arg-type]
        model=c.model,
        variant=c.variant,
        prompt_tokens=c.tokens_in,
        completion_tokens=c.tokens_out,
    )
    did = derived_event_id("nlp", aid, "drafted")
    _meta(drafted.meta, did, conversation, rid, aid, t)
    out.append((EventKind.DRAFTED, drafted))
    t += c.outbound_s
    approved = ev.ReplyApproved(reply_to=address, text=f"answer {c.n}", source=c.source)  # type: ignore[arg-type]
    pid = derived_event_id("safety", did, "approved")
    _meta(approved.meta, pid, conversation, rid, did, t)
    out.append((EventKind.APPROVED, approved))
    t += c.delivery_s
    sent = ev.ReplySent(parts=1)
    _meta(sent.meta, derived_event_id("gateway", pid, "sent"), conversation, rid, pid, t)
    out.append((EventKind.SENT, sent))
    if c.feedback:
        fb = ev.FeedbackGiven(
            reply_to=address,
            reply_event_id=pid,
            rating=ev.FEEDBACK_RATING_POSITIVE if c.feedback > 0 else ev.FEEDBACK_RATING_NEGATIVE,
            kind=ev.FEEDBACK_KIND_EXPLICIT,
            task_id=f"task-{c.n}",
            key="up" if c.feedback > 0 else "down",
        )
        _meta(fb.meta, derived_event_id("feedback", pid, c.user), conversation, rid, pid, t + 2)
        out.append((EventKind.FEEDBACK, fb))
    return out
