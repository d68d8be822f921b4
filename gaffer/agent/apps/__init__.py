"""Applications: plugins that run inside a daemon, beside its Manager, on its loop.

The contract. An app is any object with these methods; each may be a plain method or a
coroutine function (``async def``)::

    start(loop, manager)   begin work: subscribe to ``manager.bus``, create tasks, open
                           sessions. Return once started; long-running work goes in tasks.
    stop()                 release everything ``start`` took (tasks, sockets, sessions).
    restart()              optional: stop and start again. Without it the runner calls
                           ``stop()`` then ``start(loop, manager)``.
    stats()                optional, plain method: a small JSON-able dict shown in ``status()``.

The constructor receives the app's options as keyword arguments. It must only validate them
(raise ``ConfigError`` naming the option) and must not touch the loop or do I/O, so a whole
configuration is checked before anything starts.

Configuration is a list of tables (the ``[[apps]]`` array of a daemon's config file)::

    {"use": "webhooks" | "package.module:Class", "name": "optional", ...options}

``use`` names an entry point in the ``gaffer.apps`` group or an importable ``module:Class``.
Every other key is passed to the constructor.

Isolation. ``AppRunner`` calls into apps on behalf of the daemon, so an app never takes the
Manager down: an exception is logged with the app's name and marks that app failed while the
Manager and the other apps carry on, and a coroutine that does not finish within
``call_timeout`` is cancelled and abandoned: the runner no longer waits for it, but still
owns it, and ``stop`` cancels every such call again and waits for them (``call_timeout`` at
most, naming what still would not end). A plain (non-async) method runs on the loop itself, so
it must return promptly: that part of the contract cannot be enforced from outside.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import importlib
import inspect
import logging
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from gaffer.common.errors import ConfigError, NotFound
from gaffer.common.describe import describe as _kind

log = logging.getLogger("gaffer.apps")

ENTRY_POINT_GROUP = "gaffer.apps"
DEFAULT_CALL_TIMEOUT = 10.0
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
MODULE_CLASS_RE = re.compile(rf"^({DOTTED}):({DOTTED})$")
SPEC_KEYS = ("use", "name")

LOADED = "loaded"
STARTING = "starting"
RUNNING = "running"
RESTARTING = "restarting"
STOPPING = "stopping"
STOPPED = "stopped"
FAILED = "failed"


@dataclass(frozen=True)
class AppSpec:
    """One configured app: what to load (``use``), under which ``name``, with which options.

    ``where`` locates the entry in its configuration (``gaffer.toml: apps[1]``) for messages.
    """

    name: str
    use: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    where: str = field(default="", compare=False)


def parse_apps(data: Any, source: str | None = None) -> list[AppSpec]:
    """Validate an ``apps`` configuration section (a list of tables) into AppSpecs.

    Raises ConfigError listing every problem, each naming the entry and the field. Pure: it
    does not import anything, so ``load_app`` reports unknown apps and bad options.
    """
    head = f"{source}: " if source else ""
    if not isinstance(data, list):
        raise ConfigError(f"{head}apps: must be a list of tables ([[apps]]), got {_kind(data)}")
    problems: list[str] = []
    specs: list[AppSpec] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(data):
        where = f"{head}apps[{index}]"
        spec, found = _parse_one(item, where)
        problems.extend(found)
        if spec is None:
            continue
        if spec.name in seen:
            problems.append(
                f"{where}.name: {spec.name!r} is already used by {seen[spec.name]}; "
                "give one of them a distinct name"
            )
        seen.setdefault(spec.name, where)
        specs.append(spec)
    if problems:
        raise ConfigError(_join(problems))
    return specs


def _parse_one(item: Any, where: str) -> tuple[AppSpec | None, list[str]]:
    if not isinstance(item, Mapping):
        return None, [f"{where}: an app must be a table/object, got {_kind(item)}"]
    problems: list[str] = []
    use = item.get("use")
    use_ok = False
    if "use" not in item:
        problems.append(
            f"{where}.use: missing; name an installed app (e.g. \"webhooks\") "
            "or \"package.module:Class\""
        )
    elif not isinstance(use, str) or not use.strip():
        problems.append(f"{where}.use: must be a non-empty string, got {_kind(use)}")
    elif ":" in use and not MODULE_CLASS_RE.match(use):
        problems.append(f"{where}.use: {use!r} is not of the form \"package.module:Class\"")
    else:
        use_ok = True
    name = item.get("name")
    if name is None and use_ok:
        name = use.rpartition(":")[2].rpartition(".")[2] if ":" in use else use
    if name is not None and (not isinstance(name, str) or not NAME_RE.match(name)):
        problems.append(
            f"{where}.name: must be 1-64 letters, digits, '_', '-' or '.', got {_kind(name)}"
        )
    for key in item:
        if not isinstance(key, str):
            problems.append(f"{where}: option names must be strings, got {_kind(key)}")
    if problems:
        return None, problems
    options = {k: v for k, v in item.items() if k not in SPEC_KEYS}
    return AppSpec(name=name, use=use, options=MappingProxyType(options), where=where), []


def load_app(spec: AppSpec) -> Any:
    """Resolve ``spec.use`` and construct the app with ``spec.options``; ConfigError if not."""
    where = spec.where or f"app {spec.name!r}"
    factory = _resolve(spec.use, where)
    _check_options(factory, spec.options, where)
    entry = f"{where} ({spec.name})"
    try:
        app = factory(**copy.deepcopy(dict(spec.options)))
    except ConfigError as exc:
        raise ConfigError(f"{entry}: {exc.message}") from None
    except TypeError as exc:
        raise ConfigError(f"{entry}: options rejected by {spec.use}: {exc}") from None
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"{entry}: {spec.use} failed to construct: {reason}") from None
    for method in ("start", "stop"):
        if not callable(getattr(app, method, None)):
            raise ConfigError(f"{where}.use: {spec.use} is not an app: it has no {method}()")
    return app


def _resolve(use: str, where: str) -> Any:
    if ":" not in use:
        return _entry_point(use, where)
    module_name, _, attr_path = use.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"{where}.use: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"{where}.use: module {module_name!r} has no attribute {attr_path!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{where}.use: {use!r} is not a class or factory")
    return target


def _entry_point(name: str, where: str) -> Any:
    # Here, not at the top: importlib.metadata (email, zipfile, csv...) costs every agent about
    # 4 MB and ~10 ms of its start, and only an app named by its entry point needs it.
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    ep = found.get(name)
    if ep is None:
        known = ", ".join(sorted(found)) or "none"
        hint = difflib.get_close_matches(name, list(found), n=1)
        suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"{where}.use: no installed app named {name!r}{suffix}; installed ({ENTRY_POINT_GROUP} "
            f"entry points): {known}; or use \"package.module:Class\""
        )
    try:
        return ep.load()
    except Exception as exc:
        raise ConfigError(
            f"{where}.use: cannot load app {name!r} ({ep.value}): {type(exc).__name__}: {exc}"
        ) from None


def _check_options(factory: Any, options: Mapping[str, Any], where: str) -> None:
    """Name the unknown or missing option before calling, rather than relay a bare TypeError."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = [p.name for p in named]
    problems = []
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        for key in options:
            if key not in accepted:
                hint = difflib.get_close_matches(key, accepted, n=1)
                suffix = f"did you mean {hint[0]!r}? " if hint else ""
                names = ", ".join(accepted) or "none"
                problems.append(f"{where}.{key}: unknown option ({suffix}accepted: {names})")
    for p in named:
        if p.default is p.empty and p.name not in options:
            problems.append(f"{where}.{p.name}: missing required option")
    if problems:
        raise ConfigError(_join(problems))


@dataclass(eq=False)
class _Slot:
    spec: AppSpec
    app: Any
    state: str = LOADED
    error: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class AppRunner:
    """Loads, starts, restarts and stops a daemon's apps, each call isolated and bounded."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        manager: Any,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._loop = loop
        self._manager = manager
        self.call_timeout = call_timeout
        self._slots: dict[str, _Slot] = {}
        self._abandoned: set[asyncio.Future[Any]] = set()
        """Calls that timed out and were cancelled but have not ended yet."""

    async def start(self, specs: Iterable[AppSpec]) -> None:
        """Load every app (ConfigError listing all problems, nothing started), then start each.

        Apps start one after another in order. One that fails to start is logged and marked
        failed; the others still start, and this returns normally.
        """
        slots = self._load_all(list(specs))
        for slot in slots:
            self._slots[slot.spec.name] = slot
        for slot in slots:
            async with slot.lock:
                await self._start(slot)

    def _load_all(self, specs: list[AppSpec]) -> list[_Slot]:
        problems: list[str] = []
        slots: list[_Slot] = []
        names: set[str] = set()
        for spec in specs:
            current = self._slots.get(spec.name)
            if spec.name in names or (current is not None and current.state != STOPPED):
                where = spec.where or "apps"
                problems.append(f"{where}.name: an app named {spec.name!r} already runs")
                continue
            names.add(spec.name)
            try:
                slots.append(_Slot(spec, load_app(spec)))
            except ConfigError as exc:
                problems.append(exc.message)
        if problems:
            raise ConfigError(_join(problems))
        return slots

    async def stop(self) -> None:
        """Stop every started app, the last started first, then end the calls that were
        abandoned; never raises for an app's failure."""
        for slot in reversed(list(self._slots.values())):
            async with slot.lock:
                if slot.state in (RUNNING, FAILED):
                    await self._stop(slot)
        await self._end_abandoned()

    async def _end_abandoned(self) -> None:
        if not self._abandoned:
            return
        for task in self._abandoned:
            task.cancel()
        _, pending = await asyncio.wait(set(self._abandoned), timeout=self.call_timeout)
        for task in pending:
            log.error("an abandoned app call ignores cancellation; leaving it: %r", task)

    async def restart(self, name: str) -> dict[str, Any]:
        """Restart one app (also brings a failed one back); returns its status."""
        slot = self._slots.get(name)
        if slot is None:
            raise NotFound(f"no app named {name!r}; apps: {', '.join(self._slots) or 'none'}")
        async with slot.lock:
            if slot.state == RUNNING and callable(getattr(slot.app, "restart", None)):
                slot.state = RESTARTING
                if await self._call(slot, "restart"):
                    slot.state, slot.error = RUNNING, None
            else:
                if slot.state in (RUNNING, FAILED):
                    await self._stop(slot)
                await self._start(slot)
        return self._describe(slot)

    def status(self) -> list[dict[str, Any]]:
        """One dict per app, in configuration order: name, use, state, error, stats."""
        return [self._describe(slot) for slot in self._slots.values()]

    def _describe(self, slot: _Slot) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": slot.spec.name,
            "use": slot.spec.use,
            "state": slot.state,
            "error": slot.error,
        }
        stats = getattr(slot.app, "stats", None)
        if callable(stats) and not inspect.iscoroutinefunction(stats):
            try:
                result = stats()
            except Exception:
                log.exception("app %s: stats() raised", slot.spec.name)
            else:
                if inspect.isawaitable(result):
                    getattr(result, "close", lambda: None)()
                else:
                    info["stats"] = result
        return info

    async def _start(self, slot: _Slot) -> None:
        slot.state = STARTING
        if await self._call(slot, "start", self._loop, self._manager):
            slot.state, slot.error = RUNNING, None
            log.info("app %s (%s) started", slot.spec.name, slot.spec.use)

    async def _stop(self, slot: _Slot) -> None:
        slot.state = STOPPING
        if await self._call(slot, "stop"):
            slot.state = STOPPED

    async def _call(self, slot: _Slot, method: str, *args: Any) -> bool:
        """Call ``slot.app.<method>(*args)``; False (app marked failed) if it raised or hung."""
        name = slot.spec.name
        task: asyncio.Future[Any] | None = None
        try:
            result = getattr(slot.app, method)(*args)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                done, _ = await asyncio.wait({task}, timeout=self.call_timeout)
                if not done:
                    task.cancel()
                    self._abandoned.add(task)
                    task.add_done_callback(self._abandoned.discard)
                    task.add_done_callback(lambda t: _late_outcome(name, method, t))
                    log.error(
                        "app %s: %s() did not finish within %gs; cancelled",
                        name, method, self.call_timeout,
                    )
                    return self._failed(slot, method, f"timed out after {self.call_timeout:g}s")
                task.result()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                if task is not None:
                    task.cancel()
                raise
            log.error("app %s: %s() was cancelled from inside", name, method)
            return self._failed(slot, method, "cancelled")
        except Exception as exc:
            log.error("app %s: %s() raised %s: %s", name, method, type(exc).__name__, exc,
                      exc_info=exc)
            return self._failed(slot, method, f"{type(exc).__name__}: {exc}")
        return True

    def _failed(self, slot: _Slot, method: str, reason: str) -> bool:
        slot.state = FAILED
        slot.error = f"{method}: {reason}"
        return False


def _late_outcome(name: str, method: str, task: asyncio.Future[Any]) -> None:
    """Retrieve the result of an abandoned call so its error is logged, not lost."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("app %s: abandoned %s() later raised %s: %s", name, method,
                  type(exc).__name__, exc)


def _join(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    lines = (p.replace("\n", "\n  ") for p in problems)
    return f"{len(problems)} problems:\n" + "\n".join(f"  {line}" for line in lines)


__all__ = [
    "AppRunner",
    "AppSpec",
    "ENTRY_POINT_GROUP",
    "load_app",
    "parse_apps",
]
