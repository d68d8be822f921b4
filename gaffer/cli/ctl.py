"""``gafferctl``: the operator's command line against a controller (or ``gaffer start``).

Every command takes ``--json`` for machine-readable output and prints a table otherwise;
``--controller`` / ``GAFFER_CONTROLLER`` chooses the endpoint. Errors are one line on stderr
and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from gaffer.client import Client, Credentials
from gaffer.cli import tables
from gaffer.common import keys as keyfiles
from gaffer.common.errors import GafferError

DEFAULT_CONTROLLER = "tcp://127.0.0.1:6001"


class Context:
    def __init__(self, controller: str, key: str | None, controller_key: str | None, timeout: float, as_json: bool) -> None:
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
                credentials = Credentials(
                    keyfiles.load_keypair(self.key), keyfiles.load_public(self.controller_key)
                )
            self._client = Client(self.controller, credentials, timeout=self.timeout)
        return self._client

    def call(self, op: str, **args: Any) -> Any:
        return self.client().call(op, **args)

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
@click.option("--controller", envvar="GAFFER_CONTROLLER", default=DEFAULT_CONTROLLER, show_default=True, help="Controller endpoint (or GAFFER_CONTROLLER).")
@click.option("--key", envvar="GAFFER_KEY", help="Client secret key file (or GAFFER_KEY).")
@click.option("--controller-key", envvar="GAFFER_CONTROLLER_KEY", help="Controller public key file (or GAFFER_CONTROLLER_KEY).")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for an answer.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.version_option(package_name="gaffer")
@click.pass_context
def main(ctx: click.Context, controller: str, key: str | None, controller_key: str | None, timeout: float, as_json: bool) -> None:
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
    obj.show(obj.call("nodes"), tables.nodes_table)


@main.command()
@json_option
@click.pass_obj
def status(obj: Context) -> None:
    """The controller: version, endpoints, security, node counts, message counters."""
    obj.show(obj.call("status"), tables.status_text)


@main.command()
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False), help="Where to write the files.")
@json_option
@click.pass_obj
def keygen(obj: Context, name: str, directory: str) -> None:
    """Write a CURVE key pair NAME.key (public) and NAME.key_secret (secret, mode 0600).

    A controller key directory holds controller.key_secret, agents/NODE.key and
    clients/NAME.key; see the README's Security section.
    """
    public, secret = keyfiles.generate(Path(directory), name)
    fingerprint = keyfiles.fingerprint(keyfiles.load_public(public))
    result = {"public": str(public), "secret": str(secret), "fingerprint": fingerprint}
    obj.show(result, lambda r: f"wrote {r['public']} and {r['secret']} ({r['fingerprint']})")


if __name__ == "__main__":
    main()
