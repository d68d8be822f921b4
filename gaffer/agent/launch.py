"""From a template and an ordinal to the exact argv, environment and identity to exec.

``$VAR`` and ``${VAR}`` in ``cmd`` and ``args`` expand from the process's own environment
(the OS environment if ``os_env``, then the template's ``env``, then GAFFER_TEMPLATE,
GAFFER_INSTANCE and GAFFER_NODE, and PORT for a template with a ``port``); ``$$`` is a
literal dollar; unknown names stay as written.
With ``shell = true`` the command line goes to ``/bin/sh -c`` and the shell expands ``cmd``.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Mapping

from gaffer.common.errors import SpawnError
from gaffer.common.ports import MAX_PORT, instance_port
from gaffer.common.template import Template, resolve_group, resolve_user
from gaffer.agent.childlimits import child_limits
from gaffer.agent.process import LaunchSpec

VAR_RE = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(value: str, env: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(3)
        return env.get(name, match.group(0))

    return VAR_RE.sub(sub, value) if "$" in value else value


def build_env(
    template: Template, ordinal: int | str, node: str, os_environ: Mapping[str, str]
) -> dict[str, str]:
    """The process's environment. A template with a ``port`` gives instance ``n`` the ``PORT``
    ``port + n - 1``, over any ``PORT`` inherited from gaffer's environment; a one-off run
    (ordinal ``run-N``) gets none, since it would share the port of an instance."""
    env = dict(os_environ) if template.os_env else {}
    env.update(template.env)
    if template.port is not None and isinstance(ordinal, int):
        port = instance_port(template.port, ordinal)
        if port > MAX_PORT:
            raise SpawnError(f"port {template.port} with ordinal {ordinal} reaches port {port}, past {MAX_PORT}")
        env["PORT"] = str(port)
    env["GAFFER_TEMPLATE"] = template.name
    env["GAFFER_INSTANCE"] = str(ordinal)
    env["GAFFER_NODE"] = node
    return env


def build_launch(
    template: Template,
    ordinal: int | str,
    node: str,
    os_environ: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> LaunchSpec:
    """Everything ``Process.spawn`` needs; SpawnError if the user or group is unknown here.

    ``extra_env`` (the agent's bookkeeping variables) goes in last and wins.
    """
    env = build_env(template, ordinal, node, os.environ if os_environ is None else os_environ)
    if extra_env:
        env.update(extra_env)
    uid = gid = None
    groups = None
    try:
        if template.uid is not None:
            user = resolve_user(template.uid)
            uid = user.pw_uid
            gid = user.pw_gid
            for key, value in (("USER", user.pw_name), ("LOGNAME", user.pw_name), ("HOME", user.pw_dir)):
                if key not in template.env:
                    env[key] = value
            if template.gid is not None:
                gid = resolve_group(template.gid)
            if os.geteuid() == 0:
                groups = tuple(os.getgrouplist(user.pw_name, gid))
        elif template.gid is not None:
            gid = resolve_group(template.gid)
    except KeyError as exc:
        raise SpawnError(str(exc.args[0])) from None
    args = [expand(a, env) for a in template.args]
    if template.shell:
        line = " ".join([template.cmd, *(shlex.quote(a) for a in args)])
        argv: tuple[str, ...] = ("/bin/sh", "-c", line)
    else:
        argv = (expand(template.cmd, env), *args)
    return LaunchSpec(
        argv=argv,
        env=env,
        cwd=template.cwd,
        uid=uid,
        gid=gid,
        groups=groups,
        stdout="out" in template.redirect_output,
        stderr="err" in template.redirect_output,
        stdin=template.redirect_input,
        limits=child_limits(template),
    )
