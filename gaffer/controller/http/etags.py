"""Entity tags of templates, and the ``If-Match`` / ``If-None-Match`` checks of a write.

Two operators who read the same template and both write it back would otherwise overwrite each
other's edit without knowing. So ``GET /v1/templates/{name}`` answers an ``ETag``, and a write
(``PUT``, ``DELETE``, scale) that sends it back in ``If-Match`` is refused with
``precondition_failed`` (412) when the template changed in between (RFC 9110 section 13.1).

The tag is a strong validator of what the template *is*, not of how it runs: a digest of its
stored spec, its version (bumped by every stored change, a scale included), when it was created
(so one deleted and created again never matches an old tag), whether it is paused, and its
restart generation (a rolling restart changes the template without touching its spec). Running
counts change all the time and are not part of it.

Pure: values in, a tag or a verdict out.
"""

from __future__ import annotations

import hashlib

from gaffer.common.errors import InvalidArgument, PreconditionFailed
from gaffer.controller.template_rows import StoredTemplate

MAX_HEADER = 4_096
"""Characters of an ``If-Match`` or ``If-None-Match`` header read at all."""


def template_etag(stored: StoredTemplate, restart: int) -> str:
    """The quoted strong entity tag of ``stored`` at restart generation ``restart``."""
    digest = hashlib.sha256()
    for part in (stored.name, repr(stored.created_at), str(stored.version), str(int(stored.paused)),
                 str(restart), stored.template.spec_json()):
        digest.update(part.encode())
        digest.update(b"\0")
    return f'"{digest.hexdigest()[:32]}"'


def parse_tags(header: str, field: str) -> list[str] | None:
    """The entity tags of an ``If-Match``/``If-None-Match`` value (None for ``*``), each as
    sent (quoted, ``W/`` kept); InvalidArgument naming the header when it is not a list of tags."""
    text = header.strip()
    if len(text) > MAX_HEADER:
        raise InvalidArgument(field, f"must be at most {MAX_HEADER} characters")
    if text == "*":
        return None
    tags = []
    for item in text.split(","):
        item = item.strip()
        opaque = item[2:] if item.startswith("W/") else item
        if len(opaque) < 2 or opaque[0] != '"' or opaque[-1] != '"' or '"' in opaque[1:-1]:
            raise InvalidArgument(field, 'must be "*" or a list of entity tags ("..."), as the ETag header gave')
        tags.append(item)
    return tags


def check_preconditions(if_match: str | None, if_none_match: str | None, current: str | None, name: str) -> None:
    """Refuse a write to template ``name`` (whose tag is ``current``, None when it does not
    exist) with PreconditionFailed unless its conditions hold: ``If-Match`` names the current
    tag (strong comparison: a weak tag never matches) or is ``*`` and the template exists;
    ``If-None-Match: *`` holds only when it does not exist, and a tag list only when none is
    current."""
    if if_match is not None:
        tags = parse_tags(if_match, "If-Match")
        if current is None:
            raise PreconditionFailed(f"If-Match: template {name!r} does not exist")
        if tags is not None and current not in tags:
            raise PreconditionFailed(
                f"If-Match: template {name!r} changed since it was read (its ETag is now {current}); "
                "read it again, then retry"
            )
    if if_none_match is not None:
        tags = parse_tags(if_none_match, "If-None-Match")
        if tags is None and current is not None:
            raise PreconditionFailed(f"If-None-Match: *: template {name!r} already exists")
        if tags is not None and current is not None and current in {tag.removeprefix("W/") for tag in tags}:
            raise PreconditionFailed(f"If-None-Match: template {name!r} still has ETag {current}")
