"""docs/EVENTS.md cannot drift from the code: every example fits its schema, every schema has one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gaffer.common import eventschema

DOC = Path(__file__).resolve().parents[2] / "docs" / "EVENTS.md"
BLOCK = re.compile(r"^```json( agent)?\n(.*?)\n```$", re.S | re.M)


def examples() -> list[tuple[str, dict, bool]]:
    """(topic, data, on the agent's bus) of every JSON example of the document."""
    found = []
    for match in BLOCK.finditer(DOC.read_text()):
        example = json.loads(match.group(2))
        assert set(example) == {"topic", "data"}, f"an example is {{topic, data}}: {example}"
        found.append((example["topic"], example["data"], bool(match.group(1))))
    return found


@pytest.mark.parametrize(("topic", "data", "agent"), examples())
def test_each_example_fits_its_schema(topic, data, agent):
    """The example validates against its topic's schema (the agent bus's for `json agent`)."""
    eventschema.check_event(topic, data, eventschema.AGENT if agent else eventschema.CLUSTER)


def test_every_topic_of_the_code_and_of_design_has_an_example():
    """Each (family, kind) of both tables, and each topic DESIGN names, is shown at least once."""
    shown_cluster = {eventschema.topic_key(t) for t, _, agent in examples() if not agent}
    shown_agent = {eventschema.topic_key(t) for t, _, agent in examples() if agent}
    assert shown_cluster == set(eventschema.CLUSTER) - {("output", "err")}
    assert set(eventschema.AGENT) - {("output", "err")} <= shown_cluster | shown_agent
    design = {("node", k) for k in ("up", "down", "drain")} | {
        ("template", k) for k in ("created", "updated", "deleted", "scaled")} | {
        ("proc", k) for k in ("spawn", "exit", "stop", "flap", "failed")} | {("output", "out")}
    assert design <= shown_cluster


def test_every_field_of_an_example_is_documented_in_a_table():
    """A field an example carries appears in the document as `field` in a table row."""
    text = DOC.read_text()
    fields = {key for _, data, _ in examples() for key in data}
    missing = sorted(f for f in fields if f"| `{f}` |" not in text)
    assert missing == []
