"""What the controller tells a node about one template: a version to run, and an allowance.

A template's **version** is what its processes are started from: the user's spec (as stored,
without the count, which is the controller's to decide per node) and the template's restart
generation (``gafferctl restart`` bumps it). Nodes that run different versions of a template
run different processes: during a rolling update some nodes keep the old version until it is
their turn. An **order** is a version plus the node's allowance: how many of its instances may
be down at once while they restart into it.

The controller never writes its decisions into the user's spec: the count, the allowance and
the restart generation go beside it, as ``controls`` in the ``assign`` message (see
``gaffer.common.assign``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import msgpack

from gaffer.common.assign import launched, wire_spec
from gaffer.common.template import Template


@dataclass(frozen=True)
class Version:
    """One version of a template. ``key`` identifies (spec, restart) in assignment digests
    (two versions are equal when their keys are); ``launch_hash`` is the ``spec`` an agent
    reports for an instance started from it. The wire form, ``spec``, is made when a message
    needs it: a controller keeps a Version per template, and 100,000 kept specs would be
    100,000 more objects for every full collection to walk."""

    template: Template = field(compare=False, repr=False)
    restart: int
    key: str
    launch_hash: str

    @property
    def spec(self) -> Mapping[str, Any]:
        """The wire form (``assign.wire_spec``): read-only."""
        return wire_spec(self.template)

    @classmethod
    def of(cls, template: Template, restart: int) -> "Version":
        blob = msgpack.packb([wire_spec(template), restart], use_bin_type=True)
        key = hashlib.blake2b(blob, digest_size=12).hexdigest()
        return cls(template, restart, key, launched(template, restart).spec_hash())


@dataclass(frozen=True)
class Order:
    """What one node is told about one template: the version it runs and its allowance."""

    version: Version
    allowance: int = field(default=1)
    paused: bool = False
    """Paused cluster-wide: sent with no ordinals to the nodes that had it, so they keep it
    stopped and say so, rather than delete it."""
