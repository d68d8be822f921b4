"""What the controller says of its rolling updates: a log line per step, and the
``template.<t>.rollout_stuck`` event when one stops for want of ready instances."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping

from gaffer.common import topics
from gaffer.controller.rollout import Rollout
from gaffer.controller.store import StoredTemplate

log = logging.getLogger("gaffer.controller")

Publish = Callable[[str, dict[str, Any]], object]


def report_steps(
    steps: Iterable[Any], templates: Mapping[str, StoredTemplate], rollouts: Mapping[str, Rollout],
    publish: Publish,
) -> None:
    """Log each ``RolloutStep``; a ``stuck`` one is also published (the rollout stops by itself)."""
    for step in steps:
        if step.kind == "started":
            log.info("%s: rolling update to a new version on %d nodes", step.template, step.nodes)
        elif step.kind == "finished":
            log.info("%s: rolling update finished", step.template)
        else:
            _stuck(step.template, step.ready, templates.get(step.template), rollouts.get(step.template), publish)


def _stuck(name: str, ready: int, stored: StoredTemplate | None, rollout: Rollout | None, publish: Publish) -> None:
    if stored is None or rollout is None:
        return
    log.warning("%s: rolling update stuck: no more new instances ready for %gs (%d ready); the old ones stay",
                name, rollout.deadline, ready)
    publish(topics.template(name, "rollout_stuck"), {
        "name": name, "numprocesses": stored.template.numprocesses, "version": stored.version,
        "ready": ready, "deadline": rollout.deadline,
    })
