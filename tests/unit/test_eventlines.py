"""What `gafferctl events` prints for events, losses and snapshots (gaffer.cli.eventlines)."""

from __future__ import annotations

import json

from gaffer.cli.eventlines import event_line
from gaffer.client import EventsLost, ReceivedEvent, Snapshot

EVENT = ReceivedEvent(7, "proc.web.spawn", 1.5, {"id": "web.1"})


class TestEventLine:
    def test_an_event_is_one_stdout_line_with_its_position(self):
        """Text: `seq topic data`; JSON: an object of kind event."""
        assert event_line(EVENT, False) == ('7 proc.web.spawn {"id": "web.1"}', False)
        line, to_stderr = event_line(EVENT, True)
        assert not to_stderr
        assert json.loads(line) == {"kind": "event", "seq": 7, "topic": "proc.web.spawn", "ts": 1.5, "data": {"id": "web.1"}}

    def test_a_loss_is_a_marker_naming_the_exact_positions(self):
        """Text: a `#` line on stderr saying a snapshot follows; JSON: kind lost with the range."""
        assert event_line(EventsLost(3, 9), False) == (
            "# events 3..9 lost: the controller no longer holds them; a snapshot follows", True)
        assert event_line(EventsLost(4, 4), False)[0].startswith("# events 4 lost")
        line, to_stderr = event_line(EventsLost(3, 9), True)
        assert json.loads(line) == {"kind": "lost", "first": 3, "last": 9} and not to_stderr

    def test_a_snapshot_is_summed_up_in_text_and_whole_in_json(self):
        """Text: counts on stderr; JSON: every row under kind snapshot."""
        snapshot = Snapshot(12, [{"name": "n1"}], [], [{"id": "web.1"}, {"id": "web.2"}])
        assert event_line(snapshot, False) == (
            "# snapshot at 12: 1 nodes, 0 templates, 2 instances; events after it follow", True)
        assert json.loads(event_line(snapshot, True)[0]) == {
            "kind": "snapshot", "position": 12, "nodes": [{"name": "n1"}], "templates": [],
            "instances": [{"id": "web.1"}, {"id": "web.2"}],
        }
