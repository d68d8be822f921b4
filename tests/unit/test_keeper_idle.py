"""The keeper's idle rule: exit after the timeout with no agent and no live stream."""

from __future__ import annotations

from gaffer.agent.keeper import idle_left


def test_idle_starts_when_the_agent_and_the_streams_are_gone() -> None:
    """The countdown starts at the first moment there is neither an agent nor a live stream."""
    assert idle_left(True, 0, None, 2.0, 10.0) == (None, None)
    assert idle_left(False, 3, 5.0, 2.0, 10.0) == (None, None)
    assert idle_left(False, 0, None, 2.0, 10.0) == (10.0, 2.0)
    assert idle_left(False, 0, 10.0, 2.0, 11.5) == (10.0, 0.5)


def test_activity_resets_the_countdown() -> None:
    """An agent or a stream in between forgets the old start: a later idle spell starts afresh."""
    since, _ = idle_left(False, 0, None, 2.0, 10.0)
    since, left = idle_left(False, 1, since, 2.0, 11.0)
    assert (since, left) == (None, None)
    assert idle_left(False, 0, since, 2.0, 50.0) == (50.0, 2.0)
