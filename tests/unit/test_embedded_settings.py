"""How `gaffer start` sets up its embedded controller (issue 9, item 12: idle CPU)."""

from __future__ import annotations

from gaffer.cli.embedded import EMBEDDED_HEARTBEAT, Embedded, EmbeddedSettings
from gaffer.common.bus import EventBus
from gaffer.controller.liveness import Liveness


def test_the_embedded_agent_heartbeats_slower_than_a_remote_one():
    """Agent and controller share the process, so their link beats every few seconds, not
    every second: an idle `gaffer start` wakes about once a second, not five times."""
    embedded = Embedded(EmbeddedSettings(node="n1"), EventBus())
    liveness = embedded.controller.settings.liveness
    assert liveness.interval == EMBEDDED_HEARTBEAT >= 5 * Liveness().interval
    assert liveness.startup_grace == 0.0
