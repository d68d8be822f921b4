"""The keeper's rules: exit when idle (no agent, no live stream); respawn with capped backoff."""

from __future__ import annotations

from gaffer.agent.keeper.server import idle_left


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


def test_keeper_restarts_back_off_to_a_cap() -> None:
    """Respawning a lost keeper waits 0.1 s, doubling, never more than 30 s, for ever."""
    from gaffer.agent.keeping import keeper_retry_delay

    delays = []
    delay = None
    for _ in range(12):
        delay = keeper_retry_delay(delay)
        delays.append(delay)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert max(delays) == 30.0 and delays[-1] == 30.0
