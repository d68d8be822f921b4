"""``gafferctl``: the operator's command line against a controller (or ``gaffer start``).

Every command takes ``--json`` for machine-readable output and prints a table otherwise;
``--controller`` / ``GAFFER_CONTROLLER`` chooses the endpoint. Errors are one line on stderr
and a non-zero exit status, never a traceback.

Each run is one short process, so start-up is most of its cost: this module imports only what
every command needs (click, the blocking ``Client``, the tables); what one command alone uses
(template files, key files) is imported inside that command.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from gaffer.cli import tables
from gaffer.client import Client, Credentials, ReceivedEvent
from gaffer.common import params
from gaffer.common.endpoints import DEFAULT_KEYED_BIND, default_control
from gaffer.common.errors import GafferError
from gaffer.common.limits import MAX_COUNT, RUN_LEASE
from gaffer.common.roles import ROLE_NAMES, parse_role

DEFAULT_DASHBOARD = "http://127.0.0.1:6080"
"""Where ``gafferctl dashboard`` points when the controller does not say (``gaffer start``'s default)."""


class Context:
    def __init__(self, controller: str | None, key: str | None, controller_key: str | None, timeout: float, as_json: bool) -> None:
        self.controller = controller
        self.key = key
        self.controller_key = controller_key
        self.timeout = timeout
        self.as_json = as_json
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            credentials = None
            if self.key or self.controller_key:
                if not (self.key and self.controller_key):
                    fail("--key and --controller-key go together (CURVE needs both)")
                from gaffer.common import keys as keyfiles

                credentials = Credentials(
                    keyfiles.load_keypair(self.key), keyfiles.load_public(self.controller_key)
                )
            self._client = Client(self.endpoint(), credentials, timeout=self.timeout)
        return self._client

    def endpoint(self) -> str:
        """``--controller`` / GAFFER_CONTROLLER, else this host's gaffer: its private unix
        socket, or loopback TCP when keys are given."""
        if self.controller:
            return self.controller
        if self.key or self.controller_key:
            return DEFAULT_KEYED_BIND
        return str(default_control())

    def call(self, op: str, **args: Any) -> Any:
        return self.client().call(op, **args)

    def listing(self, op: str, **args: Any) -> list[dict[str, Any]]:
        return self.client().listing(op, **args)

    def show(self, result: Any, human: Callable[[Any], str]) -> None:
        if self.as_json:
            click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
        else:
            click.echo(human(result))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def fail(message: str) -> None:
    raise click.ClickException(message)


class GafferGroup(click.Group):
    """Turns every GafferError into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GafferError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(1)
        finally:
            obj = ctx.obj
            if isinstance(obj, Context):
                obj.close()


@click.group(cls=GafferGroup)
@click.option("--controller", envvar="GAFFER_CONTROLLER", help="Controller endpoint, tcp://HOST:PORT or ipc://PATH (or GAFFER_CONTROLLER) [default: this host's gaffer, on its unix socket].")
@click.option("--key", envvar="GAFFER_KEY", help="Client secret key file (or GAFFER_KEY).")
@click.option("--controller-key", envvar="GAFFER_CONTROLLER_KEY", help="Controller public key file (or GAFFER_CONTROLLER_KEY).")
@click.option("--timeout", type=params.TIMEOUT, default=5.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.version_option(package_name="gaffer")
@click.pass_context
def main(ctx: click.Context, controller: str | None, key: str | None, controller_key: str | None, timeout: float, as_json: bool) -> None:
    """Drive a gaffer controller."""
    ctx.obj = Context(controller, key, controller_key, timeout, as_json)


def json_option(f: Callable) -> Callable:
    """``--json`` accepted after the command name too (``gafferctl nodes --json``)."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(Context)
            ctx.find_object(Context).as_json = True

    return click.option("--json", "as_json_local", is_flag=True, expose_value=False, callback=set_json, help="Machine-readable output.")(f)


@main.command()
@json_option
@click.pass_obj
def nodes(obj: Context) -> None:
    """Nodes: state (up/suspect/down), address, labels, instances, last heartbeat."""
    obj.show(obj.listing("nodes"), tables.nodes_table)


@main.command()
@json_option
@click.pass_obj
def status(obj: Context) -> None:
    """The controller: version, endpoints, security, node counts, message counters."""
    obj.show(obj.call("status"), tables.status_text)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--wait", "wait_ready", is_flag=True, help="Then wait until every instance of what was applied is ready on its new version (on the event stream).")
@click.option("--timeout", "bound", type=params.SECONDS, default=600.0, show_default=True, help="With --wait: seconds to wait at most, in all.")
@json_option
@click.pass_obj
def apply(obj: Context, files: tuple[str, ...], wait_ready: bool, bound: float) -> None:
    """Create or update the templates of FILES (TOML, JSON or Procfile). With --wait, exit 0
    once all are ready, 1 at the timeout, 2 when one is deleted meanwhile."""
    from gaffer.common.loaders import load

    templates = []
    for path in files:
        loaded = load(path)
        for warning in loaded.warnings:
            click.echo(f"warning: {warning}", err=True)
        templates.extend(loaded.templates)
    counts = collections.Counter(t.name for t in templates)
    duplicates = sorted(name for name, n in counts.items() if n > 1)
    if duplicates:
        fail(f"defined in more than one file: {', '.join(duplicates[:20])}")
    result = obj.client().apply([t.to_dict() for t in templates], source=", ".join(files))
    obj.show(result, tables.apply_text)
    if wait_ready:
        from gaffer.cli import waiting

        status, message = obj.client().run(lambda client: waiting.wait_for_all(client, [t.name for t in templates], bound))
        click.echo(message if status == waiting.REACHED else f"Error: {message}", err=True)
        sys.exit(status)


@main.command()
@json_option
@click.pass_obj
def templates(obj: Context) -> None:
    """Templates with their wanted, running and pending counts."""
    obj.show(obj.listing("templates"), tables.templates_table)


@main.command()
@click.argument("name")
@json_option
@click.pass_obj
def get(obj: Context, name: str) -> None:
    """One template: its spec and where it stands."""
    obj.show(obj.call("get", name=name), tables.template_text)


@main.command()
@click.argument("name")
@json_option
@click.pass_obj
def delete(obj: Context, name: str) -> None:
    """Delete template NAME (its instances are stopped)."""
    obj.show(obj.call("delete", name=name), lambda r: f"deleted {r['name']}")


@main.command()
@click.argument("counts", nargs=-1, required=True, metavar="NAME=N|NAME=+N|NAME=-N...")
@json_option
@click.pass_obj
def scale(obj: Context, counts: tuple[str, ...]) -> None:
    """Set how many instances of each NAME run (absolute, or relative with + and -)."""
    results = []
    for item in counts:
        name, sep, count = item.partition("=")
        if not sep or not name or not count:
            fail(f"expected NAME=N, NAME=+N or NAME=-N, got {item!r}")
        results.append(obj.call("scale", name=name, count=count))
    obj.show(results, lambda rs: "\n".join(f"{r['name']}: {r['previous']} -> {r['numprocesses']}" for r in rs))


def _template_op(op: str, verb: str, doc: str) -> None:
    @main.command(name=op, help=doc)
    @click.argument("name")
    @json_option
    @click.pass_obj
    def command(obj: Context, name: str) -> None:
        obj.show(obj.call(op, name=name), lambda r: f"{verb} {r['name']}")


_template_op("start", "started", "Run template NAME again (after stop, or when failed).")
_template_op("stop", "stopped", "Pause template NAME: stop its instances, keep the template.")
_template_op("restart", "restarting", "Rolling restart of NAME, update.max_unavailable at a time.")


@main.command()
@click.argument("name", required=False)
@click.option("--fresh", is_flag=True, help="Ask the agents for cpu and memory now (waits for them) "
              "instead of showing what they last pushed.")
@json_option
@click.pass_obj
def ps(obj: Context, name: str | None, fresh: bool) -> None:
    """Instances (of NAME, or all): node, state, pid, restarts, cpu, memory, uptime, and how
    long ago cpu and memory were sampled."""
    args: dict[str, Any] = {"name": name} if name else {}
    if fresh:
        args["fresh"] = True
    obj.show(obj.listing("ps", **args), tables.ps_table)


@main.command()
@click.argument("name", required=False)
@json_option
@click.pass_obj
def stats(obj: Context, name: str | None) -> None:
    """CPU and memory per instance (children included) and per template."""
    obj.show(obj.call("stats", **({"name": name} if name else {})), tables.stats_table)


@main.command()
@click.argument("target")
@click.argument("signal", default="TERM")
@click.option("--group", is_flag=True, help="Signal the whole process group, not only the leader.")
@json_option
@click.pass_obj
def kill(obj: Context, target: str, signal: str, group: bool) -> None:
    """Send SIGNAL (default TERM) to instance TARGET (web.2) or every instance of a template."""
    result = obj.call("kill", target=target, signal=signal, group=group)
    obj.show(result, lambda r: "\n".join(f"{node}: {', '.join(map(str, pids)) or '-'}" for node, pids in r["pids"].items()) or "nothing running")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE", help="Add KEY=VALUE to the run's environment (repeatable).")
@click.option("--lease", type=params.LEASE, default=RUN_LEASE, show_default=True, help="Seconds the run outlives this command if it vanishes (killed, host or controller gone).")
@json_option
@click.pass_obj
def run(obj: Context, name: str, args: tuple[str, ...], env: tuple[str, ...], lease: float) -> None:
    """Run template NAME once on some node, as if it ran here: its output as it comes, this
    command's stdin to it (if the template has redirect_input), and its exit status.

    ARGS, when given, replace the template's args (put -- before them to pass options
    such as -e as they are). Ctrl-C (or SIGTERM) sends that signal to the run's whole
    process group, KILL after its graceful_timeout, and exits 130 (143) once it has ended.
    The run never outlives this command by more than --lease seconds.
    """
    from gaffer.cli import attach  # asyncio and the async client: `run` alone needs them

    try:
        overrides = attach.parse_env(env)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-e/--env") from None
    stdin = sys.stdin.fileno() if _has_stdin() else None
    sys.exit(obj.client().run(lambda client: attach.Attached(
        client, name, list(args) or None, overrides, lease=lease, stdin=stdin, as_json=obj.as_json,
    )()))


def _has_stdin() -> bool:
    try:
        sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    return True


@main.command()
@click.argument("node")
@json_option
@click.pass_obj
def cordon(obj: Context, node: str) -> None:
    """Place nothing new on NODE (what it runs stays)."""
    obj.show(obj.call("cordon", node=node), lambda r: f"cordoned {r['node']}")


@main.command()
@click.argument("node")
@json_option
@click.pass_obj
def uncordon(obj: Context, node: str) -> None:
    """Allow placements on NODE again (also ends a drain)."""
    obj.show(obj.call("uncordon", node=node), lambda r: f"uncordoned {r['node']}")


@main.command()
@click.argument("node")
@click.option("--wait", "wait", type=params.SECONDS, default=60.0, show_default=True, help="Seconds to wait for the node to empty.")
@json_option
@click.pass_obj
def drain(obj: Context, node: str, wait: float) -> None:
    """Cordon NODE and move its instances elsewhere; wait until it runs nothing."""
    result = obj.client().call("drain", timeout=wait + obj.timeout, node=node, wait=wait)
    obj.show(result, lambda r: tables.drain_text(r, wait))
    if not result["done"]:
        sys.exit(1)


@main.group(name="node")
def node_group() -> None:
    """Node records (see `nodes` for the list)."""


@node_group.command()
@click.argument("name")
@json_option
@click.pass_obj
def forget(obj: Context, name: str) -> None:
    """Forget node NAME, gone for good: its instances are placed on other nodes.

    Only a node that is down: drain an up one and stop its agent first. If its agent comes
    back later, it joins as a new node and stops what it still runs.
    """
    obj.show(obj.call("forget", node=name), lambda r: f"forgot {r['node']} ({r['moving']} instances move to other nodes)")


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from gaffer.cli.logfollow import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("target")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines, of instances that start later too (Ctrl-C to stop).")
@click.option("-n", "--lines", type=params.LINES, default=100, show_default=True, help="How many recent lines.")
@click.option("--since", callback=_since, metavar="DURATION", help="Only recent lines from the last DURATION (90s, 10m, 2h, 1d; at most 30d).")
@json_option
@click.pass_obj
def logs(obj: Context, target: str, follow: bool, lines: int, since: float | None) -> None:
    """Recent output of instance TARGET (web.2) or of every instance of a template, on every
    node, in time order; lines that went missing while following show as `[N lines skipped]`.

    With --json: a list, or one JSON object per line (with its node) or gap with --follow.
    """
    from gaffer.cli.logfollow import LogFollow, render

    with_id = "." not in target
    recent = obj.call("logs", target=target, lines=lines, **({"since": since} if since is not None else {}))
    if obj.as_json and not follow:
        obj.show(recent, str)
        return
    numbers = LogFollow()
    _write_runs(render(numbers.recent(recent), with_id, obj.as_json))
    if not follow:
        return
    try:
        for event in obj.client().events([f"output.{target}."]):
            if isinstance(event, ReceivedEvent):
                _write_runs(render(numbers.event(event.ts, event.data), with_id, obj.as_json))
    except KeyboardInterrupt:
        pass


def _write_runs(runs: list[tuple[str, bool]]) -> None:
    """Each run to stdout or stderr, in order (stdout flushed before stderr is written)."""
    for text, err in runs:
        stream = sys.stderr if err else sys.stdout
        stream.write(text)
        stream.flush()


@main.command()
@click.argument("target")
@click.argument("data")
@json_option
@click.pass_obj
def write(obj: Context, target: str, data: str) -> None:
    """Write DATA to the stdin of instance TARGET (``-`` reads DATA from stdin)."""
    payload = sys.stdin.read() if data == "-" else data
    obj.show(obj.call("write", id=target, data=payload), lambda r: f"wrote {r['bytes']} bytes to {r['id']} on {r['node']}")


@main.command()
@click.argument("prefixes", nargs=-1, callback=params.topic_prefixes)
@click.option("--since", type=params.POSITION, default=None, help="Replay from this position first (0: all the controller holds).")
@json_option
@click.pass_obj
def events(obj: Context, prefixes: tuple[str, ...], since: int | None) -> None:
    """Print events whose topic starts with one of PREFIXES (all when none), until Ctrl-C.

    Each event once, in order; where the controller no longer holds events this subscriber
    missed, a marker with their positions and a snapshot of the state. With --json: one JSON
    object per line, its "kind" being event, lost or snapshot.
    """
    from gaffer.cli.eventlines import event_line

    try:
        for item in obj.client().events(list(prefixes) or [""], since=since):
            line, to_stderr = event_line(item, obj.as_json)
            click.echo(line, err=to_stderr)
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("name")
@click.option("--running", type=params.BoundedInt(0, MAX_COUNT), default=None, metavar="N", help="Wait until exactly N instances of NAME are running.")
@click.option("--ready", is_flag=True, help="Wait until every wanted instance of NAME is ready (its check passes; running, for a template with no check or notify).")
@click.option("--timeout", "bound", type=params.SECONDS, default=60.0, show_default=True, help="Seconds to wait at most.")
@json_option
@click.pass_obj
def wait(obj: Context, name: str, running: int | None, ready: bool, bound: float) -> None:
    """Wait until template NAME has N instances running (--running N) or all it wants
    ready (--ready: their check passes), following the event stream. Exit 0 when reached, 1 at the timeout, 2 when
    NAME does not exist or is deleted meanwhile. For scripts and CI, after `apply`."""
    from gaffer.cli import waiting  # asyncio and the async client: `wait` alone needs them
    from gaffer.cli.waitgoal import Goal

    if (running is None) == (not ready):
        raise click.UsageError("give exactly one of --running N and --ready")
    goal = Goal(running=running, ready=ready)
    status, message = obj.client().run(lambda client: waiting.wait_for(client, name, goal, bound))
    if obj.as_json:
        result = ("reached", "timeout", "gone")[status]
        click.echo(json.dumps({"name": name, "goal": goal.describe(), "result": result, "message": message}))
    else:
        click.echo(message if status == waiting.REACHED else f"Error: {message}", err=status != waiting.REACHED)
    sys.exit(status)


@main.command()
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False), help="Where to write the files.")
@click.option("--role", type=click.Choice(ROLE_NAMES), default=None, help="A client key's role, written into NAME.key [default: none, which is admin].")
@json_option
@click.pass_obj
def keygen(obj: Context, name: str, directory: str, role: str | None) -> None:
    """Write a CURVE key pair NAME.key (public) and NAME.key_secret (secret, mode 0600).

    A controller key directory holds controller.key_secret, agents/NODE.key and
    clients/NAME.key; see the README's Security section.
    """
    from gaffer.common import keys as keyfiles

    public, secret = keyfiles.generate(Path(directory), name, parse_role(role) if role else None)
    fingerprint = keyfiles.fingerprint(keyfiles.load_public(public))
    result = {"public": str(public), "secret": str(secret), "fingerprint": fingerprint, "role": role}
    obj.show(result, lambda r: f"wrote {r['public']} and {r['secret']} ({r['fingerprint']})")


@main.group(name="token")
def token_group() -> None:
    """API tokens for the HTTP API and the dashboard (admin only)."""


@token_group.command(name="create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLE_NAMES), required=True, help="What the token may do.")
@json_option
@click.pass_obj
def token_create(obj: Context, name: str, role: str) -> None:
    """Create token NAME and print its secret, once: it is never shown again."""
    obj.show(obj.call("token_create", name=name, role=role), tables.token_created_text)


@token_group.command(name="list")
@json_option
@click.pass_obj
def token_list(obj: Context) -> None:
    """Tokens: name, role, created, last used (never their secrets)."""
    obj.show(obj.call("token_list"), lambda rows: tables.tokens_table(rows, time.time()))


@token_group.command(name="revoke")
@click.argument("name")
@json_option
@click.pass_obj
def token_revoke(obj: Context, name: str) -> None:
    """Revoke token NAME (and the login tokens issued to NAME)."""
    result = obj.call("token_revoke", name=name)
    obj.show(result, lambda r: f"revoked {r['name']}" if r["revoked"] else f"no token named {r['name']}")
    if not result["revoked"]:
        sys.exit(1)


def _base_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--url``: an http(s) address in printable ASCII (it is printed, and pasted into browsers)."""
    if value is None:
        return None
    if not (value.isascii() and value.isprintable() and value.startswith(("http://", "https://"))) or len(value) > 2048:
        raise click.BadParameter("must be an http:// or https:// address (printable ASCII, at most 2048 characters)")
    return value


@main.command()
@click.option("--url", default=None, callback=_base_url, help=f"The dashboard's base URL [default: the controller's HTTP address, else {DEFAULT_DASHBOARD}].")
@json_option
@click.pass_obj
def dashboard(obj: Context, url: str | None) -> None:
    """Print the dashboard's URL with a login token for your role (valid 5 minutes)."""
    if url is None:
        url = http_base(obj.call("status").get("http"))
    login = obj.call("login")
    result = {"url": f"{url.rstrip('/')}/#login={login['token']}", "role": login["role"], "expires": login["expires"]}
    obj.show(result, lambda r: r["url"])


def http_base(http: Any) -> str:
    """The dashboard's base URL from ``status``' ``http`` (a URL or HOST:PORT; None: the default)."""
    if not isinstance(http, str) or not http:
        return DEFAULT_DASHBOARD
    return http if http.startswith(("http://", "https://")) else f"http://{http}"


if __name__ == "__main__":
    main()
