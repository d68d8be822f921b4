"""How gafferctl shows a template that the controller's count limits cut down."""

from __future__ import annotations

from gaffer.cli import tables

ROW = {
    "name": "s", "version": 3, "paused": False, "rolling": False, "numprocesses": 2**63 - 1,
    "placed": 3, "running": 3, "pending": None, "created_at": 0.0, "updated_at": 0.0,
    "limited": {"wanted": 2**63 - 1, "placing": 3, "reason": "over the limit of 3 per template (--max-per-template)"},
    "spec": {"cmd": "sleep", "args": ["300"], "placement": {}},
}


def test_templates_and_get_show_a_limited_template() -> None:
    """`templates` says what is placed next to the count; `get` says why."""
    assert "9223372036854775807 (limited to 3)" in tables.templates_table([ROW])
    assert "limited     placing 3 of 9223372036854775807: over the limit of 3 per template" in tables.template_text(ROW)
    plain = {**ROW, "numprocesses": 3, "limited": None}
    assert "limited" not in tables.templates_table([plain]) + tables.template_text(plain)
