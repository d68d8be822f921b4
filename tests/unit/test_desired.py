"""The export document: written, read back, and every problem in it named before an import."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.common.errors import ConfigError
from gaffer.controller.desired import (
    DesiredState, NodeRecord, TemplateRecord, check_importable, parse_export, template_record,
)
from gaffer.testing import template

SPEC = template("web").to_dict()
TEMPLATE_NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
NODE_NAMES = st.from_regex(r"n[0-9]{1,3}", fullmatch=True)


def document(**overrides) -> str:
    data = {"format": "gaffer-controller-export", "version": 1, "templates": [], "nodes": [], "generations": {}}
    return json.dumps({**data, **overrides})


class TestRecords:
    def test_a_stored_spec_that_no_longer_validates_is_kept_raw_with_the_reason(self):
        """Unreadable specs are not dropped: the record keeps them and says why."""
        assert template_record("web", json.dumps(SPEC), 2, True) == TemplateRecord("web", 2, True, SPEC)
        broken = template_record("db", '{"cmd": 3}', 1, False)
        assert (broken.spec, broken.invalid) == ({"cmd": 3}, "db.cmd: must be a string, got number 3")
        garbage = template_record("x", "{not json", 1, False)
        assert garbage.spec == "{not json" and garbage.invalid.startswith("its spec is not JSON")

    @settings(max_examples=100, deadline=None)
    @given(
        st.dictionaries(TEMPLATE_NAMES, st.tuples(st.integers(1, 10**6), st.booleans()), max_size=5),
        st.dictionaries(NODE_NAMES, st.tuples(st.booleans(), st.booleans()), max_size=5),
        st.dictionaries(NODE_NAMES, st.integers(0, 2**40), max_size=5),
    )
    def test_an_export_reads_back_as_the_same_state(self, templates, nodes, generations):
        """dumps() then parse_export() is the identity on any valid state."""
        state = DesiredState(
            [TemplateRecord(n, v, p, template(n).to_dict()) for n, (v, p) in sorted(templates.items())],
            [NodeRecord(n, c, d) for n, (c, d) in sorted(nodes.items())],
            dict(sorted(generations.items())),
        )
        assert parse_export(state.dumps(), "x") == state


class TestProblems:
    def test_every_problem_is_named_by_its_path(self):
        """One error lists every bad field, each with its path."""
        text = document(
            templates=[{"name": "web", "version": 0, "spec": SPEC}, {"name": "bad name", "version": 1, "spec": {}}],
            nodes=[{"name": "n1", "cordoned": "yes"}],
            generations={"n1": -1},
            extra=1,
        )
        with pytest.raises(ConfigError) as caught:
            parse_export(text, "state.json")
        assert caught.value.message.splitlines() == [
            "state.json: 5 problems:",
            "  extra: unknown field",
            "  templates.web.version: must be an integer >= 1, got 0",
            "  templates[1].name: must be a template name, got 'bad name'",
            "  nodes.n1.cordoned: must be true or false, got 'yes'",
            "  generations.n1: must be an integer >= 0, got -1",
        ]

    @pytest.mark.parametrize("text, says", [
        ("[1, 2", "not JSON"),
        ('{"format": "other"}', "not a gaffer-controller export"),
        (document(version=2), "version 2 is not understood"),
        ('{"a": NaN}', "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ])
    def test_a_file_that_is_no_export_is_one_clear_error(self, text, says):
        """Garbage, another format, a newer version, NaN or absurd nesting: one ConfigError, no traceback."""
        with pytest.raises(ConfigError, match=says):
            parse_export(text, "f")

    def test_import_refuses_templates_that_do_not_validate_naming_each(self):
        """A template marked invalid by the export, or one whose spec fails validation, stops the import."""
        state = parse_export(document(templates=[
            {"name": "web", "version": 1, "spec": SPEC},
            {"name": "old", "version": 1, "spec": "raw", "invalid": "its spec is not JSON"},
            {"name": "db", "version": 1, "spec": {"cmd": "x", "numprocesses": -1}},
        ]), "f")
        with pytest.raises(ConfigError) as caught:
            check_importable(state, "f")
        assert "templates.old: no longer validates (its spec is not JSON)" in caught.value.message
        assert "templates.db.numprocesses" in caught.value.message
        assert [t.name for t in check_importable(parse_export(document(templates=[
            {"name": "web", "version": 1, "spec": SPEC}]), "f"), "f")] == ["web"]
