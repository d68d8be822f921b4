"""The process template: a frozen, validated description of what to run and how.

Input arrives as plain data (from TOML, JSON, a Procfile, the wire or an HTTP body) and is
turned into a ``Template`` by ``parse_template``, which reports *every* problem it finds, each
naming the template and the field, instead of stopping at the first. Nothing downstream ever
sees an unvalidated template.

Host-specific checks (does this user exist here?) are separate (``check_on_host``): a
controller validates templates that will run on other machines, where only the agent can tell.
"""

from __future__ import annotations

import grp
import hashlib
import json
import math
import pwd
import re
import shlex
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Mapping

from gaffer.common.errors import InvalidSignal, Problem, TemplateError
from gaffer.common.describe import describe as _kind
from gaffer.common.dependson import Dependency, graph_problems, parse_depends_on, plain_depends_on
from gaffer.common.fieldcheck import Checker, digits
from gaffer.common.healthspec import HealthCheck, parse_health, plain_health
from gaffer.common.updatespec import Update, parse_update, plain_update
from gaffer.common.limits import (
    LABEL_RE, MAX_COUNT, MAX_ID, MAX_LOG_BACKUPS, MAX_LOG_BYTES, NAME_RE, NAME_RULE,
)
from gaffer.common.ports import AUTO, range_problem
from gaffer.common.proclimits import FIELDS as LIMIT_FIELDS
from gaffer.common.proclimits import parse_limits, plain_limits
from gaffer.common.signals import parse_signal

RESTART_POLICIES = ("always", "on-failure", "never")
STREAMS = ("out", "err")


@dataclass(frozen=True)
class Flapping:
    """Crash-loop protection, counted per instance (``agent/flapping.py``).

    ``attempts`` unexpected exits of one instance within ``window`` seconds suspend its
    respawning for ``retry_in`` seconds; its ``max_retry + 1``-th such flap gives up and marks
    it failed (the template is failed on a node once all its instances there are).
    ``max_retry = -1`` retries forever.
    """

    attempts: int = 5
    window: float = 30.0
    retry_in: float = 10.0
    max_retry: int = 3


@dataclass(frozen=True)
class Placement:
    """Where instances may run in a cluster (ignored by a single-host Manager)."""

    max_per_node: int | None = None
    nodes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LogFiles:
    """Captured output also written to ``<dir>/<template>.<ordinal>.log``, rotated by size."""

    dir: str
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True)
class Template:
    name: str
    cmd: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    os_env: bool = True
    uid: str | int | None = None
    gid: str | int | None = None
    cwd: str | None = None
    shell: bool = False
    numprocesses: int = 1
    graceful_timeout: float = 10.0
    stop_signal: str = "TERM"
    startsecs: float = 1.0
    restart: str = "always"
    exitcodes: tuple[int, ...] = (0,)
    flapping: Flapping | None = field(default_factory=Flapping)
    redirect_output: tuple[str, ...] = ("out", "err")
    redirect_input: bool = False
    log: LogFiles | None = None
    placement: Placement = field(default_factory=Placement)
    update: Update = field(default_factory=Update)
    port: int | None = None
    """The first ``PORT`` (instance ``n`` gets ``port + n - 1``), or None: no PORT is set."""
    health: HealthCheck | None = None
    """The readiness check (``[health]``, ``common/healthspec.py``), or None."""
    notify: bool = False
    """The process says it is ready itself: ``READY=1`` on ``$NOTIFY_SOCKET`` (sd_notify)."""
    restart_on_unhealthy: bool = True
    """With a check: an instance that turns unhealthy is restarted (its group stopped)."""
    rlimits: tuple[tuple[str, int | str, int | str], ...] = ()
    """(name, soft, hard) per limit set, in ``proclimits.RLIMIT_NAMES`` order; a tuple, not a
    dict, so a template without limits holds no object of its own for them (100,000 of them
    on a controller: the collector walks each)."""
    umask: int | None = None
    nice: int | None = None
    depends_on: tuple[Dependency, ...] = ()
    """Templates that must be up first (``common/dependson.py``); never restarts anything."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``parse_template`` turns back into an equal Template (a new copy
        each call: callers may change it)."""
        return _copy(self._plain_form())

    def shared_spec(self) -> Mapping[str, Any]:
        """The plain form without ``numprocesses``, its nested values shared with the kept
        plain form, so read-only: for encoding (the specs of ``assign``). One new dict per
        template where ``to_dict`` copies every nested one: a controller keeps one for each
        of 100,000 templates, and each object more is one more for the collector to walk."""
        plain = self._plain_form()
        return {name: value for name, value in plain.items() if name != "numprocesses"}

    def spec_json(self) -> str:
        """``to_dict()`` as canonical JSON (sorted keys, no spaces): what the store keeps."""
        cached = self.__dict__.get("_spec_json")
        if cached is None:
            cached = json.dumps(self._plain_form(), sort_keys=True, separators=(",", ":"), allow_nan=False)
            object.__setattr__(self, "_spec_json", cached)
        return cached

    def _plain_form(self) -> dict[str, Any]:
        """The plain form, made once per template and kept (it is immutable, and a controller
        applying 100,000 templates would otherwise build each one's several times over).
        Never handed out: ``to_dict`` copies it."""
        cached = self.__dict__.get("_plain")
        if cached is None:
            cached = {name: _plain(getattr(self, name)) for name in _PLAIN_FIELDS}
            for name, default in _OMITTED_WHEN.items():
                if cached[name] is default:
                    del cached[name]  # so a template without one looks as before the field existed
            if self.rlimits or self.umask is not None or self.nice is not None:
                cached.update(plain_limits(self.rlimits, self.umask, self.nice))
            if self.depends_on:
                cached["depends_on"] = plain_depends_on(self.depends_on)
            object.__setattr__(self, "_plain", cached)
        return cached

    def spec_hash(self) -> str:
        """Digest of the fields a running process was started with (RESTART_FIELDS).

        Two templates with the same hash run identical processes; changing any other field
        (count, policies, placement, timeouts) applies without restarting anything. Computed
        once per template, like ``spec_json``.
        """
        cached = self.__dict__.get("_spec_hash")
        if cached is None:
            plain = self._plain_form()
            data = {key: plain[key] for key in RESTART_FIELDS if key in plain}
            blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
            cached = hashlib.sha256(blob).hexdigest()[:16]
            object.__setattr__(self, "_spec_hash", cached)
        return cached

    def with_count(self, numprocesses: int) -> "Template":
        return replace(self, numprocesses=numprocesses)


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is HealthCheck:
        return plain_health(value)
    if kind is Update:
        return plain_update(value)
    names = _RECORD_FIELDS.get(kind)
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if kind is tuple:
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


_RECORD_FIELDS = {kind: tuple(f.name for f in fields(kind)) for kind in (Flapping, Placement, LogFiles)}
_OMITTED_WHEN = {"port": None, "health": None, "notify": False, "restart_on_unhealthy": True}
"""Fields left out of the plain form at these values: templates that do not use them keep the
stored form (and spec hash) they had before the fields existed."""


def _copy(value: Any) -> Any:
    """A copy of plain data (dicts and lists copied all the way down)."""
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    return value


TEMPLATE_FIELDS = tuple(f.name for f in fields(Template))
_PLAIN_FIELDS = tuple(name for name in TEMPLATE_FIELDS if name not in (*LIMIT_FIELDS, "depends_on"))
"""Fields always in the plain form; the limits and ``depends_on`` only when set."""
RESTART_FIELDS = (
    "cmd", "args", "env", "os_env", "uid", "gid", "cwd", "shell",
    "redirect_output", "redirect_input", "log", "port", "notify", "rlimits", "umask", "nice",
)
MAX_EXITCODES = 256


def parse_template(data: Any, name: str | None = None, *, max_count: int = MAX_COUNT) -> Template:
    """Validate plain data into a Template, raising TemplateError listing every problem.

    ``name`` comes from the enclosing key (TOML table, JSON mapping); otherwise ``data["name"]``.
    ``max_count`` bounds ``numprocesses``: the format limit for anything that comes in; the
    store reads back what it holds with a wider one, since a count stored before the limit
    existed must not keep the controller from starting (it places at most its own limit).
    """
    problems, template = _parse(data, name, max_count=max_count)
    if problems:
        raise TemplateError(problems)
    assert template is not None
    return template


def parse_templates(items: Iterable[tuple[str | None, Any]], source: str | None = None) -> list[Template]:
    """Validate several templates at once; the error lists the problems of all of them."""
    problems: list[Problem] = []
    templates: list[Template] = []
    seen: set[str] = set()
    for index, (name, data) in enumerate(items):
        found, template = _parse(data, name, f"[{index}]")
        problems.extend(found)
        if template is not None:
            if template.name in seen:
                problems.append(Problem(template.name, "name", "defined more than once"))
            seen.add(template.name)
            templates.append(template)
    problems.extend(graph_problems({t.name: t.depends_on for t in templates if t.depends_on}))
    if problems:
        raise TemplateError(problems, source=source)
    return templates


def _parse(
    data: Any, name: str | None, position: str = "<template>", *, max_count: int = MAX_COUNT
) -> tuple[list[Problem], Template | None]:
    """``position`` labels a template that has no usable name yet (``[3]`` in a JSON list)."""
    label = name if isinstance(name, str) and name else position
    if not isinstance(data, Mapping):
        return [Problem(label, "", f"a template must be a table/object, got {_kind(data)}")], None
    if name is None:
        raw_name = data.get("name")
        label = raw_name if isinstance(raw_name, str) and raw_name else position
    chk = Checker(label)
    if name is not None and "name" in data and data["name"] != name:
        chk.fail("name", f"does not match its key {name!r}")
    chk.unknown_keys(data, TEMPLATE_FIELDS)
    values: dict[str, Any] = {}

    raw_name = name if name is not None else data.get("name")
    if raw_name is None:
        chk.fail("name", "is required")
    elif chk.string("name", raw_name) is not None and not NAME_RE.match(raw_name):
        shown = repr(raw_name) if len(raw_name) <= 80 else f"a string of {len(raw_name)} characters"
        chk.fail("name", f"{shown} is not a valid name: use {NAME_RULE}")
    values["name"] = raw_name

    if "cmd" not in data:
        chk.fail("cmd", "is required")
    else:
        values["cmd"] = chk.string("cmd", data["cmd"])

    _parse_simple_fields(chk, data, values, max_count)
    _parse_nested_fields(chk, data, values)
    parse_limits(chk, data, values)
    if "port" in data and data["port"] is not None:
        values["port"] = _parse_port(chk, data["port"], values)
    _parse_health_fields(chk, data, values)
    if "depends_on" in data:
        values["depends_on"] = parse_depends_on(chk, data["depends_on"], raw_name)
    if chk.problems:
        return chk.problems, None
    return [], Template(**values)


def _parse_simple_fields(chk: Checker, data: Mapping, values: dict[str, Any], max_count: int) -> None:
    if "args" in data:
        values["args"] = _parse_args(chk, data["args"])
    if "env" in data:
        values["env"] = _parse_env(chk, data["env"])
    for key in ("os_env", "shell", "redirect_input"):
        if key in data:
            values[key] = chk.boolean(key, data[key])
    for key in ("uid", "gid"):
        if key in data and data[key] is not None:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                chk.fail(key, f"must be a name or a number, got {_kind(value)}")
            elif isinstance(value, int) and value < 0:
                chk.fail(key, f"must be >= 0, got {digits(value)}")
            elif isinstance(value, int) and value > MAX_ID:
                chk.fail(key, f"is too large: at most {MAX_ID}, got {digits(value)}")
            elif isinstance(value, str) and not value.strip():
                chk.fail(key, "must not be empty")
            elif isinstance(value, str) and "\0" in value:
                chk.fail(key, "must not contain a NUL byte")
            else:
                values[key] = value
    if "cwd" in data and data["cwd"] is not None:
        values["cwd"] = chk.string("cwd", data["cwd"])
    if "numprocesses" in data:
        values["numprocesses"] = chk.integer(
            "numprocesses", data["numprocesses"], minimum=0, maximum=max_count
        )
    for key in ("graceful_timeout", "startsecs"):
        if key in data:
            values[key] = chk.number(key, data[key])
    if "stop_signal" in data:
        try:
            values["stop_signal"] = parse_signal(data["stop_signal"]).name.removeprefix("SIG")
        except InvalidSignal as exc:
            chk.fail("stop_signal", exc.message)
    if "restart" in data:
        value = data["restart"]
        if value not in RESTART_POLICIES:
            chk.fail("restart", f"must be one of {', '.join(RESTART_POLICIES)}, got {_kind(value)}")
        else:
            values["restart"] = value
    if "exitcodes" in data:
        values["exitcodes"] = _parse_exitcodes(chk, data["exitcodes"])
    if "redirect_output" in data:
        values["redirect_output"] = _parse_streams(chk, data["redirect_output"])


def _parse_health_fields(chk: Checker, data: Mapping, values: dict[str, Any]) -> None:
    """``health``, ``notify`` and ``restart_on_unhealthy`` (which needs a check to act on)."""
    if "health" in data and data["health"] is not None:
        values["health"] = parse_health(chk, data["health"])
    if "notify" in data:
        values["notify"] = chk.boolean("notify", data["notify"])
    if "restart_on_unhealthy" in data:
        values["restart_on_unhealthy"] = chk.boolean("restart_on_unhealthy", data["restart_on_unhealthy"])
        if data.get("health") is None:
            chk.fail("restart_on_unhealthy", "has no effect without a [health] check")


def _parse_port(chk: Checker, value: Any, values: Mapping[str, Any]) -> int | None:
    """A base port whose instances all fit in 1..65535; never with ``env.PORT`` beside it."""
    if value == AUTO:
        chk.fail("port", '"auto" is numbered by the template\'s position in its file (gaffer start, '
                 "gafferctl apply FILE); here give a base port 1..65535")
        return None
    port = chk.integer("port", value, minimum=1, maximum=2**31)
    if port is None:
        return None
    count = values.get("numprocesses", Template.numprocesses)
    problem = range_problem(port, count if isinstance(count, int) else 0)
    if problem is not None:
        chk.fail("port", problem)
        return None
    env = values.get("env") or {}
    if "PORT" in env:
        chk.fail("env.PORT", "is set by gaffer per instance from port: give one of the two")
        return None
    return port


def _parse_args(chk: Checker, value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            chk.fail("args", f"cannot split into words: {exc}")
            return None
    if not isinstance(value, (list, tuple)):
        chk.fail("args", f"must be a list of strings or a string, got {_kind(value)}")
        return None
    out = []
    for i, item in enumerate(value):
        if not _scalar(item):
            chk.fail(f"args[{i}]", f"must be a string, got {_kind(item)}")
        elif isinstance(item, str) and "\0" in item:
            chk.fail(f"args[{i}]", "must not contain a NUL byte")
        else:
            out.append(str(item))
    return tuple(out)


def _parse_env(chk: Checker, value: Any) -> dict[str, str] | None:
    table = chk.table("env", value)
    if table is None:
        return None
    env: dict[str, str] = {}
    for key, item in table.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            chk.fail("env", f"invalid variable name {key!r}")
        elif not _scalar(item):
            chk.fail(f"env.{key}", f"must be a string, got {_kind(item)}")
        elif isinstance(item, str) and "\0" in item:
            chk.fail(f"env.{key}", "must not contain a NUL byte")
        else:
            env[key] = str(item)
    return env


def _scalar(item: Any) -> bool:
    """A string, or a number written as one (never a bool, NaN or an infinity)."""
    if isinstance(item, float):
        return math.isfinite(item)
    return isinstance(item, (str, int)) and not isinstance(item, bool)


def _parse_exitcodes(chk: Checker, value: Any) -> tuple[int, ...] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        chk.fail("exitcodes", f"must be a list of integers, got {_kind(value)}")
        return None
    if len(value) > MAX_EXITCODES:
        chk.fail("exitcodes", f"has {len(value)} items: at most {MAX_EXITCODES}")
        return None
    codes = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= 255:
            chk.fail(f"exitcodes[{i}]", f"must be an integer 0..255, got {_kind(item)}")
        else:
            codes.append(item)
    return tuple(codes)


def _parse_streams(chk: Checker, value: Any) -> tuple[str, ...] | None:
    if isinstance(value, bool):
        return STREAMS if value else ()
    if not isinstance(value, (list, tuple)):
        chk.fail("redirect_output", f'must be a list of "out"/"err", got {_kind(value)}')
        return None
    streams = []
    for i, item in enumerate(value):
        if item not in STREAMS:
            chk.fail(f"redirect_output[{i}]", f'must be "out" or "err", got {_kind(item)}')
        elif item not in streams:
            streams.append(item)
    return tuple(s for s in STREAMS if s in streams)


def _parse_nested_fields(chk: Checker, data: Mapping, values: dict[str, Any]) -> None:
    if "flapping" in data:
        values["flapping"] = _parse_flapping(chk, data["flapping"])
    if "log" in data and data["log"] is not None:
        values["log"] = _parse_log(chk, data["log"])
    if "placement" in data:
        values["placement"] = _parse_placement(chk, data["placement"])
    if "update" in data:
        update = parse_update(chk, data["update"])
        if update is not None:
            values["update"] = update


def _parse_flapping(chk: Checker, value: Any) -> Flapping | None:
    if value is False or value is None:
        return None
    if value is True:
        return Flapping()
    table = chk.table("flapping", value)
    if table is None:
        return None
    chk.unknown_keys(table, ("attempts", "window", "retry_in", "max_retry"), prefix="flapping.")
    base = Flapping()
    attempts = base.attempts
    if "attempts" in table:
        attempts = chk.integer(
            "flapping.attempts", table["attempts"], minimum=1, maximum=MAX_COUNT
        ) or base.attempts
    window = base.window
    if "window" in table:
        parsed_window = chk.number("flapping.window", table["window"], minimum=-math.inf)
        if parsed_window is not None and parsed_window <= 0:
            chk.fail("flapping.window", f"must be > 0, got {parsed_window:g}")
        window = parsed_window or base.window
    retry_in = base.retry_in
    if "retry_in" in table:
        parsed = chk.number("flapping.retry_in", table["retry_in"])
        retry_in = base.retry_in if parsed is None else parsed
    max_retry = base.max_retry
    if "max_retry" in table:
        parsed_retry = chk.integer("flapping.max_retry", table["max_retry"], minimum=-1, maximum=MAX_COUNT)
        max_retry = base.max_retry if parsed_retry is None else parsed_retry
    return Flapping(attempts=attempts, window=window, retry_in=retry_in, max_retry=max_retry)


def _parse_log(chk: Checker, value: Any) -> LogFiles | None:
    table = chk.table("log", value)
    if table is None:
        return None
    chk.unknown_keys(table, ("dir", "max_bytes", "backups"), prefix="log.")
    if "dir" not in table:
        chk.fail("log.dir", "is required")
        return None
    directory = chk.string("log.dir", table["dir"])
    max_bytes = LogFiles.max_bytes
    if "max_bytes" in table:
        max_bytes = chk.integer(
            "log.max_bytes", table["max_bytes"], minimum=1024, maximum=MAX_LOG_BYTES
        ) or max_bytes
    backups = LogFiles.backups
    if "backups" in table:
        parsed = chk.integer("log.backups", table["backups"], minimum=0, maximum=MAX_LOG_BACKUPS)
        backups = backups if parsed is None else parsed
    if directory is None:
        return None
    return LogFiles(dir=directory, max_bytes=max_bytes, backups=backups)


def _parse_placement(chk: Checker, value: Any) -> Placement | None:
    table = chk.table("placement", value)
    if table is None:
        return None
    chk.unknown_keys(table, ("max_per_node", "nodes", "labels"), prefix="placement.")
    max_per_node = None
    if table.get("max_per_node") is not None:
        max_per_node = chk.integer(
            "placement.max_per_node", table["max_per_node"], minimum=1, maximum=MAX_COUNT
        )
    nodes: tuple[str, ...] = ()
    if "nodes" in table:
        raw = table["nodes"]
        if not isinstance(raw, (list, tuple)):
            chk.fail("placement.nodes", f"must be a list of node names, got {_kind(raw)}")
        else:
            for i, node in enumerate(raw):
                if not isinstance(node, str) or not NAME_RE.match(node):
                    chk.fail(f"placement.nodes[{i}]", f"must be a node name ({NAME_RULE}), got {_kind(node)}")
            nodes = tuple(raw)
    labels: dict[str, str] = {}
    if "labels" in table:
        raw_labels = chk.table("placement.labels", table["labels"])
        for key, item in (raw_labels or {}).items():
            if not isinstance(key, str) or not LABEL_RE.match(key):
                chk.fail("placement.labels", f"invalid label key {key!r}")
            elif not isinstance(item, str):
                chk.fail(f"placement.labels.{key}", f"must be a string, got {_kind(item)}")
            else:
                labels[key] = item
    return Placement(max_per_node=max_per_node, nodes=nodes, labels=labels)


def check_on_host(template: Template) -> list[Problem]:
    """Problems that only this host can see: unknown users and groups."""
    problems = []
    if template.uid is not None:
        try:
            resolve_user(template.uid)
        except KeyError as exc:
            problems.append(Problem(template.name, "uid", str(exc.args[0])))
    if template.gid is not None:
        try:
            resolve_group(template.gid)
        except KeyError as exc:
            problems.append(Problem(template.name, "gid", str(exc.args[0])))
    return problems


def resolve_user(uid: str | int) -> pwd.struct_passwd:
    """The passwd entry for a user name or number; KeyError with a clear message if unknown."""
    try:
        if isinstance(uid, int) or uid.isdecimal():
            return pwd.getpwuid(int(uid))
        return pwd.getpwnam(uid)
    except (KeyError, ValueError, OverflowError):
        raise KeyError(f"unknown user {uid!r} on this host") from None


def resolve_group(gid: str | int) -> int:
    """The numeric id of a group name or number; KeyError with a clear message if unknown."""
    try:
        if isinstance(gid, int) or gid.isdecimal():
            return grp.getgrgid(int(gid)).gr_gid
        return grp.getgrnam(gid).gr_gid
    except (KeyError, ValueError, OverflowError):
        raise KeyError(f"unknown group {gid!r} on this host") from None
