"""Event topic names. Subscribers filter by prefix, so the most general part comes first."""

from __future__ import annotations

FAMILIES = ("node.", "template.", "proc.")
"""Topic families of state-change events; ``output.`` is separate: it is only made on demand."""

PROC_KINDS = ("spawn", "running", "ready", "unhealthy", "exit", "stop", "flap", "failed")
TEMPLATE_KINDS = ("created", "updated", "deleted", "scaled", "stopped", "started", "failed")
NODE_KINDS = ("up", "suspect", "down", "drain", "events_lost")


def proc(template: str, kind: str) -> str:
    return f"proc.{template}.{kind}"


def template(name: str, kind: str) -> str:
    return f"template.{name}.{kind}"


def node(name: str, kind: str) -> str:
    return f"node.{name}.{kind}"


def output(template_name: str, ordinal: int | str, stream: str) -> str:
    return f"output.{template_name}.{ordinal}.{stream}"


def instance_id(template_name: str, ordinal: int | str) -> str:
    return f"{template_name}.{ordinal}"


def split_instance_id(value: str) -> tuple[str, str]:
    """``web.3`` -> (``web``, ``3``); raises ValueError when there is no dot."""
    name, sep, ordinal = value.rpartition(".")
    if not sep or not name or not ordinal:
        raise ValueError(f"{value!r} is not an instance id (<template>.<ordinal>)")
    return name, ordinal
