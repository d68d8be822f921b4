"""Applies too big for one message: sent in parts, committed as one.

A wire message is at most 4 MiB, and an apply of 100,000 templates is far more. Splitting it
into independent applies would break "an apply is all or nothing" (a client dying half-way
would leave half a file applied). Instead the client sends the parts to a *stage* named by a
random token (``stage_apply``), each part validated on arrival so a bad file is refused at
once, and the last request (``apply`` with ``stage``) commits everything staged plus its own
templates in one store transaction. A stage nobody finishes expires after ``ttl`` seconds
without a part; at most ``max_stages`` are open at once, and each holds a bounded number of
templates and bytes, so half-finished applies cannot grow the controller.

Pure bookkeeping with time passed in; the controller calls ``expire`` on its timer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gaffer.common.errors import InvalidRequest, Problem, TemplateError
from gaffer.common.template import Template

MAX_STAGES = 16
MAX_STAGED_TEMPLATES = 1_000_000
MAX_STAGED_BYTES = 512 * 1024 * 1024
STAGE_TTL = 120.0
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


@dataclass
class Stage:
    templates: dict[str, Template] = field(default_factory=dict)
    size: int = 0
    touched: float = 0.0


class Stages:
    def __init__(
        self,
        max_stages: int = MAX_STAGES,
        max_templates: int = MAX_STAGED_TEMPLATES,
        max_bytes: int = MAX_STAGED_BYTES,
        ttl: float = STAGE_TTL,
    ) -> None:
        self.max_stages = max_stages
        self.max_templates = max_templates
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._stages: dict[str, Stage] = {}
        self.expired = 0
        """Stages dropped unfinished (``status``: an apply whose client gave up half-way)."""

    def __len__(self) -> int:
        return len(self._stages)

    def add(self, token: object, templates: list[Template], size: int, now: float) -> int:
        """Stage one part; how many templates the stage holds now. A duplicate name or a
        stage over its bounds drops the whole stage: the apply must start again."""
        self.expire(now)
        token = check_token(token)
        stage = self._stages.get(token)
        if stage is None:
            if len(self._stages) >= self.max_stages:
                raise InvalidRequest(
                    f"{self.max_stages} staged applies are already open; finish one, or wait "
                    f"{self.ttl:g}s for abandoned ones to expire"
                )
            stage = self._stages[token] = Stage()
        twice = sorted(t.name for t in templates if t.name in stage.templates)
        if twice:
            del self._stages[token]
            raise TemplateError([Problem(name, "", "defined more than once in one apply") for name in twice[:100]])
        if len(stage.templates) + len(templates) > self.max_templates or stage.size + size > self.max_bytes:
            del self._stages[token]
            raise InvalidRequest(
                f"an apply may hold at most {self.max_templates} templates and "
                f"{self.max_bytes // (1024 * 1024)} MiB; this one is larger"
            )
        for template in templates:
            stage.templates[template.name] = template
        stage.size += size
        stage.touched = now
        return len(stage.templates)

    def take(self, token: object, now: float) -> list[Template]:
        """Everything staged under ``token``, which is closed; InvalidRequest if there is none."""
        self.expire(now)
        stage = self._stages.pop(check_token(token), None)
        if stage is None:
            raise InvalidRequest(
                "no staged apply under this token (it expired after "
                f"{self.ttl:g}s without a part, or was refused): send the whole apply again"
            )
        return list(stage.templates.values())

    def expire(self, now: float) -> list[str]:
        """Drop stages untouched for ``ttl`` seconds; their tokens."""
        gone = [token for token, stage in self._stages.items() if now - stage.touched > self.ttl]
        for token in gone:
            del self._stages[token]
        self.expired += len(gone)
        return gone


def check_token(token: object) -> str:
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise InvalidRequest("argument 'stage' must be a token of 16 to 64 letters, digits, '-' or '_'")
    return token
