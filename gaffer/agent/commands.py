"""What the controller may ask an agent to do right now (``command`` -> ``result``).

Each handler checks its arguments (``common/arguments.py``, the same checks as the
controller's) and raises a GafferError with a clear message; the link turns that into an error
result. Nothing here changes the desired state: that only ever
arrives as a whole assignment. A one-off run of a template this node is not assigned adds it
with no instances; the Manager keeps it while the run goes (``Manager.has_runs``), and the
next assignment after the run removes it.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from gaffer.agent.attended import MAX_LEASE
from gaffer.agent.manager import Manager
from gaffer.common import arguments as arg
from gaffer.common.errors import InstanceNotFound, InvalidArgument, InvalidRequest, TemplateError
from gaffer.common.limits import MAX_LINES
from gaffer.common.template import check_on_host, parse_template

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Commands:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def table(self) -> dict[str, Handler]:
        return {
            "kill": self.kill,
            "write": self.write,
            "output": self.output,
            "stats": self.stats,
            "run": self.run,
            "lease_run": self.lease_run,
        }

    async def kill(self, _op: str, args: dict[str, Any]) -> list[int]:
        target = arg.target(args)
        signal = arg.signal(args)
        group = arg.boolean(args, "group", False)
        return self.manager.kill(target, signal, group=group)

    async def write(self, _op: str, args: dict[str, Any]) -> int:
        data = arg.data(args)
        raw = data.encode() if isinstance(data, str) else data
        self.manager.write(arg.instance_id(args), raw, eof=arg.boolean(args, "eof", False))
        return len(raw)

    async def output(self, _op: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        count = arg.integer(args, "lines", 100, 0, MAX_LINES)
        stream = arg.stream(args)
        lines = self.manager.output(arg.instance_id(args), count, stream)
        return [line.to_dict() for line in lines]

    async def stats(self, _op: str, args: dict[str, Any]) -> dict[str, Any]:
        name = arg.name(args, "template", None)
        return await self.manager.stats(name)

    async def run(self, _op: str, args: dict[str, Any]) -> dict[str, Any]:
        """A one-off process from the template spec the controller sends; returns its id."""
        spec = args.get("template")
        if not isinstance(spec, dict):
            raise InvalidArgument("template", "must be a template spec (a map)")
        run_args = arg.strings(args, "args")
        lease = arg.seconds(args, "lease", arg.MISSING, MAX_LEASE) if args.get("lease") is not None else None
        try:
            template = parse_template(spec)
            problems = check_on_host(template)
            if problems:
                raise TemplateError(problems)
        except TemplateError as exc:
            raise InvalidRequest(exc.message) from None
        name = template.name
        if name not in {t.name for t in self.manager.templates()}:
            self.manager.add(template.with_count(0), ordinals=())
        inst = self.manager.run(
            name, [str(a) for a in run_args] if run_args is not None else None, lease=lease, env=arg.env(args)
        )
        return {"id": inst.id, "pid": inst.pid}

    async def lease_run(self, _op: str, args: dict[str, Any]) -> bool:
        """Renew a one-off run's lease for ``seconds`` (0: its client lets go; ``signal``
        stops it then). False: no such run any more."""
        seconds = arg.seconds(args, "seconds", arg.MISSING, MAX_LEASE)
        sig = arg.signal(args) if args.get("signal") is not None else None
        try:
            return self.manager.lease_run(arg.instance_id(args), seconds, sig)
        except InstanceNotFound:
            return False
