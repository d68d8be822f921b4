"""``gaffer export systemd|supervisord DIR [FILE]``: leave gaffer the way honcho and foreman do.

The files are rendered by ``common/unitfiles.py`` (pure); this shell writes them. All of them
are written to temporary files in DIR first and renamed into place only when every one was
written, so an error leaves nothing half-written behind. A file holding an env (which may hold
secrets) is created 0600 and never readable by others, not even for a moment; the others get
0644 less the umask.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from gaffer.common.errors import ConfigError, GafferError
from gaffer.common.limits import NAME_RE, NAME_RULE
from gaffer.common.loaders import load, resolve_file
from gaffer.common.ports import MAX_PORT
from gaffer.common.procfile_options import check_concurrency_names, parse_concurrency_options
from gaffer.common.unitfiles import App, OutFile, plan_instances, supervisord_files, systemd_files
from gaffer.common.unitorder import plan_order

RENDER = {"systemd": systemd_files, "supervisord": supervisord_files}


@click.command()
@click.argument("format", type=click.Choice(sorted(RENDER)))
@click.argument("directory", type=click.Path())
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--app", default=None, help="Prefix of every unit/program [default: the FILE's directory name].")
@click.option("-c", "--concurrency", multiple=True, metavar="NAME=N[,NAME=N...]", help="Instances of NAME (repeatable).")
@click.option("-p", "--port", type=click.IntRange(1, MAX_PORT), default=None, help="Base port [default: PORT in .env, else in the environment, else 5000].")
def export(format: str, directory: str, file: str | None, app: str | None, concurrency: tuple[str, ...], port: int | None) -> None:
    """Write systemd units or a supervisord conf for the templates of FILE into DIRECTORY.

    FILE is found as `gaffer start` finds it. Each instance gets its own unit (systemd) or
    program (supervisord) with the working directory, env, PORT, command and restart policy.
    """
    try:
        path = resolve_file(file, Path.cwd())
        counts = parse_concurrency_options(concurrency)
        loaded = load(path, port)
        for warning in loaded.warnings:
            click.echo(f"warning: {warning}", err=True)
        check_concurrency_names(counts, [t.name for t in loaded.templates], str(path))
        target = Path(os.path.abspath(directory))
        plan = App(
            name=app_name(app, path),
            workdir=str(Path(os.path.abspath(path)).parent),
            directory=str(target),
            templates=tuple(loaded.templates),
            instances=plan_instances(loaded.templates, counts),
            order=plan_order(loaded.templates, str(path)),
        )
        files = RENDER[format](plan)
        write_all(target, files)
    except GafferError as exc:
        raise click.ClickException(exc.message) from None
    for out in files:
        click.echo(f"wrote {target / out.name}")


def app_name(given: str | None, path: Path) -> str:
    name = given if given is not None else Path(os.path.abspath(path)).parent.name
    if not NAME_RE.match(name):
        shown = repr(name) if len(name) <= 80 else f"of {len(name)} characters"
        raise ConfigError(f"--app: the name {shown} is not valid: use {NAME_RULE}")
    return name


def write_all(directory: Path, files: list[OutFile]) -> None:
    """Write every file into ``directory`` (made if missing) or none of them."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{directory}: cannot create: {exc.strerror}") from None
    taken = [out.name for out in files if (directory / out.name).is_dir()]
    if taken:
        raise ConfigError(f"{directory / taken[0]}: is a directory, cannot write a file there")
    umask = os.umask(0)
    os.umask(umask)
    written: list[tuple[str, Path]] = []
    try:
        for out in files:
            written.append((write_temporary(directory, out, 0o644 & ~umask), directory / out.name))
        for temporary, final in written:
            os.replace(temporary, final)
    except BaseException as exc:
        for temporary, _ in written:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ConfigError(f"{directory}: cannot write: {exc.strerror or exc}") from None
        raise


def write_temporary(directory: Path, out: OutFile, public_mode: int) -> str:
    """``out`` in a new file beside its final name: created 0600 (mkstemp), opened up to
    ``public_mode`` only when it holds no secret."""
    import tempfile  # here: it brings shutil, bz2 and lzma (0.5 MB) into every `gaffer start`

    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(out.content)
            stream.flush()
            os.fsync(stream.fileno())
            if not out.secret:
                os.fchmod(stream.fileno(), public_mode)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary
