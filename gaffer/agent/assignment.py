"""Converging the local Manager to the controller's assignment for this node.

An assignment is the node's *whole* desired state (templates, the ordinals that run here, and
the controller's controls for each: count, rolling-update allowance, restart generation; see
``gaffer.common.assign``) with a generation number. Applying one is idempotent: what matches
is left alone, what is missing is started, what is not in it is stopped. Older generations
than the last applied are ignored (a reordered or replayed message), equal ones re-applied
(harmless, and it heals a Manager that drifted). A template this host cannot run (bad spec,
unknown user) is reported in the ack as ``{template, code, message}`` so the controller can
place its ordinals elsewhere.

A template paused cluster-wide comes with no ordinals and ``paused``: it is kept, stopped,
and announced ``template.<t>.stopped`` (``started`` when an assignment resumes it), never as
deleted. A template that is no longer assigned is removed (its instances stopped, then forgotten) in a
task this object owns (``aclose`` ends them), unless a one-off run of it still goes: then only
its assigned instances stop, and a later assignment removes it. ``apply`` says whether it
applied a whole assignment: the agent then releases its hold (``lease.Lease``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from gaffer.agent.manager import Manager
from gaffer.common.assign import Assignment, runnable
from gaffer.common.errors import GafferError, InvalidRequest, TemplateError
from gaffer.common.parts import PartsAssembler
from gaffer.common.tasks import cancel_and_wait
from gaffer.common.template import Template, check_on_host, parse_template

log = logging.getLogger("gaffer.agent.assignment")

AssignError = dict[str, str]
"""``{template, code, message}``: a template of the assignment this node could not apply."""
AckCallback = Callable[[int, list[AssignError]], None]
MAX_ERROR = 4_000


class Assignments:
    """``path`` keeps the last applied assignment, so a restarted agent knows what this node
    should run (and can adopt it) before the controller is back."""

    def __init__(self, manager: Manager, ack: AckCallback, path: Path | None = None) -> None:
        self.manager = manager
        self._ack = ack
        self._path = path
        self.generation = 0
        self._last: dict[str, Any] | None = None
        self._removals: dict[str, asyncio.Task] = {}
        self._paused: set[str] = set()
        """Templates the controller paused: resumed (``started``) when an assignment unpauses them."""
        self._parts = PartsAssembler()

    def apply(self, body: dict[str, Any]) -> bool:
        """Converge to an assignment, or to the one ``body`` completes when it is a part.

        Returns whether a whole assignment was applied (False for a part, or an older
        generation than the one applied)."""
        whole = self._parts.feed(body)
        if whole is None:
            return False
        body = whole
        generation = body["generation"]
        if generation < self.generation:
            log.info("ignoring assignment %d: %d is already applied", generation, self.generation)
            return False
        self._last = body
        errors = self._converge(body)
        self.generation = generation
        self._save(body)
        self._ack(generation, errors)
        return True

    def restore(self) -> bool:
        """Apply the assignment saved by an earlier agent, without releasing the hold."""
        if self._path is None:
            return False
        try:
            body = json.loads(self._path.read_text())
            generation = int(body["generation"])
            body["templates"], body["ordinals"], body["controls"]
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the saved assignment %s: %s", self._path, exc)
            return False
        self._last = body
        errors = self._converge(body)
        if errors:
            log.warning("saved assignment %d: %s", generation, _describe(errors))
        return True

    def _save(self, body: dict[str, Any]) -> None:
        if self._path is None:
            return
        tmp = self._path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(body))
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("cannot save the assignment in %s: %s", self._path, exc)

    def _converge(self, body: dict[str, Any]) -> list[AssignError]:
        errors: list[AssignError] = []
        wanted: dict[str, tuple[Template, set[int], bool]] = {}
        for name, entry in Assignment.from_wire(body).entries.items():
            try:
                template = parse_template(entry.spec, name=name)
                problems = check_on_host(template)
                if problems:
                    raise TemplateError(problems)
                if len(entry.ordinals) != entry.control.count:
                    raise InvalidRequest(
                        f"controls.count is {entry.control.count}, but {len(entry.ordinals)} "
                        "ordinals were assigned"
                    )
            except GafferError as exc:
                errors.append(_error(name, exc))
                continue
            wanted[name] = (runnable(template, entry.control), set(entry.ordinals), entry.control.paused)
        for existing in self.manager.templates():
            if existing.name in wanted:
                continue
            if self.manager.has_runs(existing.name):
                self.manager.assign(existing.name, ())
            else:
                self._remove(existing.name)
        for name, (template, ordinals, paused) in wanted.items():
            if name in self._removals:
                continue
            active = False if paused else True if name in self._paused else None
            try:
                self.manager.apply(template, ordinals, active=active)
            except GafferError as exc:
                errors.append(_error(name, exc))
                continue
            if paused:
                self._paused.add(name)
            else:
                self._paused.discard(name)
        self._paused &= set(wanted)
        return errors

    def _remove(self, name: str) -> None:
        if name in self._removals:
            return
        task = asyncio.get_running_loop().create_task(self.manager.remove(name))
        self._removals[name] = task
        task.add_done_callback(lambda done, name=name: self._removed(name, done))

    async def aclose(self) -> None:
        """End the removals still going (their instances keep stopping on their own)."""
        for task in list(self._removals.values()):
            await cancel_and_wait(task)

    def _removed(self, name: str, task: asyncio.Task) -> None:
        """A removal finished: the last assignment may want that name again (re-created)."""
        self._removals.pop(name, None)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.warning("removing %s failed: %s", name, task.exception())
        if self._last is not None and name in self._last["templates"]:
            errors = self._converge(self._last)
            if errors:
                log.warning("assignment %d: %s", self.generation, _describe(errors))


def _error(name: str, exc: GafferError) -> AssignError:
    message = exc.message if len(exc.message) <= MAX_ERROR else exc.message[:MAX_ERROR] + "..."
    return {"template": name, "code": exc.code, "message": message}


def _describe(errors: list[AssignError]) -> str:
    return "; ".join(f"{e['template']}: {e['message']}" for e in errors)
