"""Which agent events the controller republishes: only its own instances', never others'."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaffer.controller.admission import (
    BAD_OUTPUT,
    BAD_TOPIC,
    FOREIGN_TOPIC,
    ID_MISMATCH,
    NOT_ASSIGNED,
    admit_event,
    stamped,
)

OWNED = frozenset({"web.1", "web.2", "job.run-3"})


@pytest.mark.parametrize(
    ("topic", "data", "verdict"),
    [
        ("proc.web.spawn", {"id": "web.1", "template": "web", "pid": 10}, None),
        ("proc.web.exit", {"id": "web.2"}, None),
        ("proc.job.exit", {"id": "job.run-3", "oneoff": True}, None),
        ("output.web.1.out", {"id": "web.1", "template": "web", "text": "hi\nthere"}, None),
        ("output.web.2.err", {"text": "no id given: the topic names it"}, None),
        ("output.web.1.out", {"id": "web.1", "skipped": 120, "skipped_bytes": 4000}, None),
        ("output.web.1.out", {"id": "web.1", "line": "the old shape"}, BAD_OUTPUT),
        ("output.web.1.out", {"id": "web.1", "text": ["not", "a", "string"]}, BAD_OUTPUT),
        ("output.web.1.out", {"id": "web.1", "skipped": -1}, BAD_OUTPUT),
        ("output.web.1.out", {"id": "web.1", "skipped": True}, BAD_OUTPUT),
        ("node.n2.down", {"node": "n2"}, FOREIGN_TOPIC),
        ("template.web.deleted", {"name": "web"}, FOREIGN_TOPIC),
        ("hub.anything", {}, FOREIGN_TOPIC),
        ("proc.web.explode", {"id": "web.1"}, BAD_TOPIC),
        ("proc.spawn", {"id": "web.1"}, BAD_TOPIC),
        ("output.web.1.log", {"id": "web.1"}, BAD_TOPIC),
        ("output.web.out", {"id": "web.1"}, BAD_TOPIC),
        ("proc.web.spawn", {"id": "db.1"}, ID_MISMATCH),
        ("proc.web.spawn", {"template": "web"}, ID_MISMATCH),
        ("proc.web.spawn", {"id": "web.1", "template": "db"}, ID_MISMATCH),
        ("output.web.1.out", {"id": "web.2", "text": "x"}, ID_MISMATCH),
        ("proc.web.spawn", {"id": "web.3"}, NOT_ASSIGNED),
        ("proc.web.flap", {"id": "web.1", "template": "web", "retry_in": 10}, None),
        ("proc.db.flap", {"id": "db.1", "template": "db", "retry_in": 10}, NOT_ASSIGNED),
        ("proc.web.flap", {"template": "web", "retry_in": 10}, ID_MISMATCH),
        ("proc.web.flap", {"template": "db"}, ID_MISMATCH),
        ("proc.web.exit", {"template": "web"}, ID_MISMATCH),
        ("output.web.3.out", {"id": "web.3", "text": "fake"}, NOT_ASSIGNED),
        ("proc.job.exit", {"id": "job.run-4"}, NOT_ASSIGNED),
    ],
)
def test_admit_event_table(topic, data, verdict):
    """Each topic family, payload and ownership case gets the documented verdict."""
    assert admit_event(topic, data, OWNED) == verdict


@given(topic=st.text(max_size=40), ident=st.text(max_size=20))
def test_nothing_about_an_unowned_instance_is_ever_admitted(topic, ident):
    """Whatever the topic, an event whose instance the node does not own is refused."""
    assert admit_event(topic, {"id": ident}, frozenset()) is not None


def test_stamped_sets_the_sender_node_and_drops_controller_fields():
    """The node comes from the authenticated sender; ``scope`` is the controller's to set."""
    data = {"id": "web.1", "node": "other", "scope": "cluster", "pid": 4}
    assert stamped(data, "n1") == {"id": "web.1", "node": "n1", "pid": 4}
    assert data["node"] == "other"
