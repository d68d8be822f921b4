"""``gaffer export``: the files systemd or supervisord need to run an app without gaffer.

The layout is honcho 2.0.0's (and foreman's), so a Procfile app can leave gaffer the way it
would leave honcho::

    systemd      APP.target              wants APP-web.target APP-worker.target
                 APP-web.target          wants APP-web-1.service APP-web-2.service
                 APP-web-1.service       one per instance: cwd, env, PORT, command, restart
                 APP-web.env             the template's env (0600: it may hold secrets)
    supervisord  APP.conf                [program:APP-web-1] per instance, [group:APP]
                                         (0600 when any program has an env)

``depends_on`` becomes ``After=`` with ``Wants=`` or ``Requires=`` (and the dependency's ``Type=``)
for systemd, and start order with ``priority=`` for supervisord, each with a comment saying what
the format cannot keep (``unitorder.py``).

Unlike honcho's templates, every value is escaped for the format that reads it (systemd's
specifiers ``%`` and variables ``$``, supervisord's ``%`` and quoting), the stop signal, grace
period and restart policy are the template's, and the whole process group is stopped as gaffer
stops it. Pure: templates in, ``OutFile`` values out; ``cli/export.py`` writes them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

from gaffer.common.errors import ConfigError
from gaffer.common.ports import MAX_PORT, instance_port
from gaffer.common.signals import parse_signal
from gaffer.common.template import Template
from gaffer.common.unitorder import Order, level, priority, service_type, supervisord_note, systemd_depends

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
VAR_RE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
"""gaffer's ``$NAME`` / ``${NAME}`` / ``$$`` in a non-shell template's cmd and args."""
SYSTEMD_RESTART = {"always": "always", "on-failure": "on-failure", "never": "no"}
SUPERVISORD_RESTART = {"always": "true", "on-failure": "unexpected", "never": "false"}


@dataclass(frozen=True)
class OutFile:
    """One file to write: ``secret`` ones are created 0600, the others 0644."""

    name: str
    content: str
    secret: bool = False


@dataclass(frozen=True)
class Instance:
    template: Template
    ordinal: int
    port: int | None

    @property
    def label(self) -> str:
        """honcho's name for ``web.1`` in a unit name, with the dot made a dash."""
        return f"{self.template.name}-{self.ordinal}"


@dataclass(frozen=True)
class App:
    """What is exported: the app's name, its working directory (for templates without a
    ``cwd``), where the files go (absolute: units name their env files) and the instances."""

    name: str
    workdir: str
    directory: str
    templates: tuple[Template, ...]
    instances: tuple[Instance, ...]
    order: Order = Order()
    """What ``depends_on`` makes of the templates (``unitorder.plan_order``)."""

    def services(self) -> dict[str, list[str]]:
        """Each template's instance units (systemd): ``{"web": ["APP-web-1.service", ...]}``."""
        out: dict[str, list[str]] = {t.name: [] for t in self.templates}
        for instance in self.instances:
            out[instance.template.name].append(f"{self.name}-{instance.label}.service")
        return out


def plan_instances(templates: list[Template], counts: Mapping[str, int]) -> tuple[Instance, ...]:
    """Each template's instances (``counts`` overriding ``numprocesses``), with the ``PORT`` of
    each template that has a port base (every Procfile type; ``ports.instance_port``). A port
    past 65535 is a ConfigError."""
    instances = []
    for template in templates:
        count = counts.get(template.name, template.numprocesses)
        for ordinal in range(1, count + 1):
            port = None if template.port is None else instance_port(template.port, ordinal)
            if port is not None and port > MAX_PORT:
                raise ConfigError(f"{template.name}.{ordinal} would get port {port}, past {MAX_PORT}: use a lower --port")
            instances.append(Instance(template, ordinal, port))
    return tuple(instances)


def file_env(template: Template, ported: bool) -> dict[str, str]:
    """The env every instance of ``template`` gets from its env file (``PORT`` is per instance
    when ported); a name no env file can carry is a ConfigError."""
    bad = [key for key in template.env if not ENV_NAME.match(key)]
    if bad:
        raise ConfigError(f"{template.name}.env: {bad[0]!r} cannot be exported (letters, digits and '_')")
    return {k: v for k, v in template.env.items() if not (ported and k == "PORT")}


def argv(template: Template) -> list[str]:
    """The command gaffer runs, as words (``launch`` does the same)."""
    if template.shell:
        return ["/bin/sh", "-c", " ".join([template.cmd, *(shlex.quote(a) for a in template.args)])]
    return [template.cmd, *template.args]


# ------------------------------------------------------------------------------ systemd


def systemd_files(app: App) -> list[OutFile]:
    """The master target, one target per template, one service per instance, one env file per
    template that has an env."""
    wants = " ".join(f"{app.name}-{t.name}.target" for t in app.templates)
    units = app.services()
    by_name = {t.name: t for t in app.templates}
    files = [OutFile(
        f"{app.name}.target",
        f"[Unit]\nDescription={app.name} (exported by gaffer)\nWants={wants}\n\n[Install]\nWantedBy=multi-user.target\n",
    )]
    for template in app.templates:
        mine = [i for i in app.instances if i.template is template]
        services = " ".join(f"{app.name}-{i.label}.service" for i in mine)
        files.append(OutFile(
            f"{app.name}-{template.name}.target",
            f"[Unit]\nDescription={app.name} {template.name}\nPartOf={app.name}.target\nWants={services}\n",
        ))
        env = file_env(template, any(i.port is not None for i in mine))
        if env:
            lines = "".join(f"{key}={systemd_env_value(value)}\n" for key, value in env.items())
            files.append(OutFile(f"{app.name}-{template.name}.env", lines, secret=True))
        depends = systemd_depends(template, units, by_name, app.order)
        for instance in mine:
            files.append(OutFile(
                f"{app.name}-{instance.label}.service", systemd_service(app, instance, bool(env), depends),
            ))
    return files


def systemd_service(app: App, instance: Instance, has_env: bool, depends: Sequence[str] = ()) -> str:
    """One instance's service; ``depends``: its ``[Unit]`` lines for depends_on (``unitorder``)."""
    template = instance.template
    lines = [
        "[Unit]",
        f"Description={app.name} {template.name}.{instance.ordinal}",
        f"PartOf={app.name}-{template.name}.target",
        *depends,
        "",
        "[Service]",
        *service_type(template, app.order),
        f"WorkingDirectory={systemd_setting(template.cwd or app.workdir)}",
    ]
    if has_env:
        lines.append(f"EnvironmentFile={systemd_setting(app.directory + '/' + app.name + '-' + template.name + '.env')}")
    if instance.port is not None:
        lines.append(f"Environment=PORT={instance.port}")
    words = argv(template)
    lines.append("ExecStart=" + " ".join(systemd_word(w, keep_vars=not template.shell) for w in words))
    lines.append(f"Restart={SYSTEMD_RESTART[template.restart]}")
    extra = [str(code) for code in template.exitcodes if code != 0]
    if template.restart == "on-failure" and extra:
        lines.append(f"SuccessExitStatus={' '.join(extra)}")
    lines.append(f"KillSignal={parse_signal(template.stop_signal).name}")
    lines.append(f"TimeoutStopSec={template.graceful_timeout:g}")
    if template.uid is not None:
        lines.append(f"User={systemd_setting(str(template.uid))}")
    if template.gid is not None:
        lines.append(f"Group={systemd_setting(str(template.gid))}")
    lines += systemd_limits(template)
    lines += [
        "StandardInput=null",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=%n",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def systemd_limits(template: Template) -> list[str]:
    """``LimitNOFILE=soft:hard`` and the like, ``UMask=`` and ``Nice=``: systemd's own names
    for the template's rlimits, umask and nice (same units: bytes, files, processes)."""
    lines = [f"Limit{name.upper()}={soft}:{hard}".replace("unlimited", "infinity")
             for name, soft, hard in template.rlimits]
    if template.umask is not None:
        lines.append(f"UMask={template.umask:04o}")
    if template.nice is not None:
        lines.append(f"Nice={template.nice}")
    return lines


def systemd_word(word: str, keep_vars: bool = False) -> str:
    """One double-quoted word of a unit file: ``\\`` and ``"`` escaped, control characters as
    ``\\xHH``, ``%`` as ``%%`` (a specifier otherwise) and ``$`` as ``$$`` (systemd would expand
    it; the shell must). With ``keep_vars`` gaffer's ``$NAME``/``${NAME}`` become systemd's
    ``${NAME}``, so a non-shell command still gets its variables as gaffer would give them."""
    out = []
    at = 0
    for match in VAR_RE.finditer(word) if keep_vars else ():
        out.append(_systemd_literal(word[at:match.start()]))
        out.append("$$" if match.group(1) else "${" + (match.group(2) or match.group(3)) + "}")
        at = match.end()
    out.append(_systemd_literal(word[at:]))
    return '"' + "".join(out) + '"'


def _systemd_literal(text: str) -> str:
    out = []
    for char in text:
        if char in '\\"':
            out.append("\\" + char)
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append({"%": "%%", "$": "$$"}.get(char, char))
    return "".join(out)


def systemd_setting(value: str) -> str:
    """A path or name setting (read as is, no quotes): ``%`` doubled; a control character, or
    space at an end (systemd strips it), is a ConfigError."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or value != value.strip():
        raise ConfigError(f"systemd cannot hold {value[:40]!r} in a setting (a control character or space at an end)")
    return value.replace("%", "%%")


def systemd_env_value(value: str) -> str:
    """A value of an EnvironmentFile: double-quoted, with ``\\ " ` $`` escaped (systemd keeps
    any other backslash and every newline inside the quotes)."""
    return '"' + re.sub(r'([\\"`$])', r"\\\1", value) + '"'


# ------------------------------------------------------------------------------ supervisord


def supervisord_files(app: App) -> list[OutFile]:
    """One conf: a ``[program:APP-web-1]`` per instance, then ``[group:APP]``; with depends_on,
    in start order with ``priority=`` (``unitorder``) under a comment saying what is not kept."""
    sections = [supervisord_note(app.order)] if app.order.ordered else []
    secret = False
    instances = sorted(app.instances, key=lambda i: level(i.template, app.order))
    for instance in instances:
        template = instance.template
        env = dict(file_env(template, instance.port is not None))
        secret = secret or bool(env)
        if instance.port is not None:
            env["PORT"] = str(instance.port)
        sections.append(supervisord_program(app, instance, env))
    programs = ",".join(f"{app.name}-{i.label}" for i in instances)
    sections.append(f"[group:{app.name}]\nprograms={programs}\n")
    return [OutFile(f"{app.name}.conf", "\n".join(sections), secret=secret)]


def supervisord_program(app: App, instance: Instance, env: Mapping[str, str]) -> str:
    template = instance.template
    words = argv(template)
    if not template.shell and any(VAR_RE.search(w) for w in words):
        raise ConfigError(f"{template.name}: supervisord does not expand $ variables in a non-shell command; set shell = true")
    if template.rlimits or template.nice is not None:
        field = "rlimits" if template.rlimits else "nice"
        raise ConfigError(f"{template.name}.{field}: supervisord has no per-program {field}; export to systemd, or drop it")
    lines = [
        f"[program:{app.name}-{instance.label}]",
        "command=" + " ".join(supervisord_word(w) for w in words),
        f"directory={supervisord_value(template.cwd or app.workdir)}",
        "autostart=true",
        f"autorestart={SUPERVISORD_RESTART[template.restart]}",
        f"exitcodes={','.join(str(code) for code in template.exitcodes)}",
        f"startsecs={template.startsecs:g}",
        f"stopsignal={parse_signal(template.stop_signal).name[3:]}",
        f"stopwaitsecs={template.graceful_timeout:g}",
        "stopasgroup=true",
        "killasgroup=true",
    ]
    if app.order.ordered:
        lines.append(f"priority={priority(template, app.order)}")
    if template.uid is not None:
        lines.append(f"user={supervisord_value(str(template.uid))}")
    if template.umask is not None:
        lines.append(f"umask={template.umask:03o}")
    if env:
        pairs = ",".join(f"{key}={supervisord_env_value(key, value)}" for key, value in env.items())
        lines.append(f"environment={pairs}")
    return "\n".join(lines) + "\n"


def supervisord_word(word: str) -> str:
    """One word of ``command=``, which supervisord splits like a POSIX shell after its ini parser
    has cut the line at any whitespace followed by ``;`` or ``#`` (inline comments): each run of
    whitespace goes in double quotes (so a quote, never ``;``/``#``, follows it), the rest is
    shell-quoted, and ``%`` is doubled (supervisord formats values)."""
    parts = re.split(r"(\s+)", word) if word else [""]
    quoted = "".join(f'"{part}"' if part.isspace() else shlex.quote(part) for part in parts if part or len(parts) == 1)
    return quoted.replace("%", "%%")


def supervisord_env_value(key: str, value: str) -> str:
    """A value of ``environment=``: supervisord takes one quoted token and strips quote
    characters off both ends, with no escapes, so some values cannot be written at all."""
    quote = '"' if '"' not in value else "'"
    ends = value[:1] + value[-1:]
    if quote in value or any(char in "'\"" for char in ends):
        raise ConfigError(f"env.{key}: supervisord cannot hold this value (quotes of both kinds, or one at an end)")
    return supervisord_value(f"{quote}{value}{quote}", f"env.{key}")


def supervisord_value(text: str, what: str = "a value") -> str:
    """A value of supervisord's ini file: ``%`` doubled; a line break or whitespace before ``;``
    or ``#`` (where its parser would cut the value) is a ConfigError."""
    if "\n" in text or "\r" in text or re.search(r"\s[;#]", text):
        raise ConfigError(f"{what}: supervisord cannot hold {text[:40]!r} (a line break, or ' ;'/' #' it would cut at)")
    return text.replace("%", "%%")
