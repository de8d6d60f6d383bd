"""The subject contract: one message type per kind, no personal data, stable ids."""

import uuid

import pytest

from wxbot_common.errors import PermanentError
from wxbot_common.ids import WXBOT_NAMESPACE, derived_event_id, inbound_event_id
from wxbot_common.nats.subjects import EventKind
from wxbot_common.nats.topology import ALL_CONSUMERS


def test_every_kind_round_trips_through_its_subject() -> None:
    for kind in EventKind:
        subject = kind.subject("wecom:ww1:1000002:user:zhangsan")
        assert EventKind.from_subject(subject) is kind
        assert "zhangsan" not in subject
        assert EventKind.of(kind.message_type()) is kind


def test_message_types_are_unique_per_kind() -> None:
    names = [k.message_type.DESCRIPTOR.full_name for k in EventKind]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("subject", ["wxbot.evt.inbound.nope.abc", "other.evt.inbound.received.x", "wxbot.evt.x"])
def test_foreign_subjects_are_permanent_errors(subject: str) -> None:
    with pytest.raises(PermanentError):
        EventKind.from_subject(subject)


def test_undecodable_payload_is_permanent() -> None:
    with pytest.raises(PermanentError):
        EventKind.RECEIVED.decode(b"\xff\xff\xff")


def test_ids_are_deterministic_and_distinct() -> None:
    a = inbound_event_id("wecom", "ww1:1000002", "123")
    assert a == inbound_event_id("wecom", "ww1:1000002", "123")
    assert a != inbound_event_id("wecom", "ww1:1000003", "123")
    assert derived_event_id("safety", a, "accepted") != derived_event_id("safety", a, "blocked")


def test_durable_names_are_valid_and_filters_are_event_subjects() -> None:
    for spec in ALL_CONSUMERS:
        assert spec.durable.replace("-", "").isalnum()
        assert all(s.startswith("wxbot.evt.") for s in spec.filter_subjects)


@pytest.mark.parametrize("provider_msg_id", ["123", "7316529348862164481", "wx-消息-🙂", ""])
def test_event_ids_are_the_rfc_4122_name_based_uuids_of_earlier_releases(provider_msg_id: str) -> None:
    # A redelivery after an upgrade must derive the id the old release derived (JetStream dedupes on it).
    expected = uuid.uuid5(WXBOT_NAMESPACE, f"in:wecom:ww1:1000002:{provider_msg_id}")
    got = inbound_event_id("wecom", "ww1:1000002", provider_msg_id)
    assert got == str(expected) and uuid.UUID(got).version == 5
    assert derived_event_id("nlp", got, "drafted") == str(uuid.uuid5(WXBOT_NAMESPACE, f"nlp/{got}/drafted"))
