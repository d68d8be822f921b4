"""Template ETags and the If-Match / If-None-Match checks (issue 11), as pure functions."""

from __future__ import annotations

import dataclasses

import pytest

from gaffer.common.errors import InvalidArgument, PreconditionFailed
from gaffer.controller.http.etags import check_preconditions, parse_tags, template_etag
from gaffer.controller.template_rows import StoredTemplate
from gaffer.testing import template


def stored(**fields) -> StoredTemplate:
    return StoredTemplate(template("web", **fields), version=1, paused=False, created_at=100.0, updated_at=100.0)


def test_the_tag_changes_with_every_change_of_the_template():
    """Spec, version, pause, restart generation and re-creation each give a new tag; the
    same stored template gives the same strong (quoted, not W/) tag."""
    base = stored()
    tag = template_etag(base, 0)
    assert tag == template_etag(stored(), 0) and tag.startswith('"') and tag.endswith('"')
    others = [
        template_etag(stored(env={"A": "1"}), 0),
        template_etag(dataclasses.replace(base, version=2), 0),
        template_etag(dataclasses.replace(base, paused=True), 0),
        template_etag(base, 1),
        template_etag(dataclasses.replace(base, created_at=101.0), 0),
    ]
    assert len({tag, *others}) == 6


def test_if_match_holds_only_for_the_current_strong_tag():
    """If-Match passes for the current tag (alone or in a list) or *, and is refused for an
    old tag, a weak tag, or a template that does not exist."""
    check_preconditions('"a"', None, '"a"', "web")
    check_preconditions('"x", "a"', None, '"a"', "web")
    check_preconditions("*", None, '"a"', "web")
    for header, current in (('"b"', '"a"'), ('W/"a"', '"a"'), ("*", None), ('"a"', None)):
        with pytest.raises(PreconditionFailed):
            check_preconditions(header, None, current, "web")


def test_if_none_match_star_means_create_only():
    """If-None-Match: * passes only when the template does not exist."""
    check_preconditions(None, "*", None, "web")
    with pytest.raises(PreconditionFailed):
        check_preconditions(None, "*", '"a"', "web")
    with pytest.raises(PreconditionFailed):
        check_preconditions(None, 'W/"a"', '"a"', "web")
    check_preconditions(None, '"b"', '"a"', "web")


def test_malformed_conditions_are_invalid_arguments_naming_the_header():
    """A value that is neither * nor a list of quoted tags names its header."""
    for header in ("abc", '"a', '"a"b"', "", "x" * 5000):
        with pytest.raises(InvalidArgument) as caught:
            parse_tags(header, "If-Match")
        assert caught.value.argument == "If-Match"
    assert parse_tags(' "a" , W/"b" ', "If-Match") == ['"a"', 'W/"b"']
    assert parse_tags("*", "If-None-Match") is None
