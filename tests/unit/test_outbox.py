"""The agent's outbox: state events numbered, kept until acknowledged, resent, losses counted once."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.batches import batches, in_order
from gaffer.agent.outbox import Outbox, Taken
from budget import examples


def seqs(taken: Taken) -> list[int]:
    return [event["seq"] for event in taken.events]


def filled(count: int, capacity: int = 100) -> Outbox:
    outbox = Outbox(capacity)
    for index in range(count):
        outbox.add("proc.web.spawn", float(index), {"id": "web.1", "n": index})
    return outbox


class TestOutbox:
    def test_events_are_numbered_from_one(self) -> None:
        """State events get contiguous seqs from 1, in the order they were added."""
        outbox = filled(3)
        assert outbox.last == 3
        taken = outbox.take()
        assert seqs(taken) == [1, 2, 3] and taken.lost == 0
        assert taken.events[0] == {"seq": 1, "topic": "proc.web.spawn", "ts": 0.0, "data": {"id": "web.1", "n": 0}}

    def test_take_returns_each_event_once_per_session(self) -> None:
        """What was taken is not taken again on the same session; new events are."""
        outbox = filled(2)
        outbox.take()
        assert seqs(outbox.take()) == []
        outbox.add("proc.web.exit", 9.0, {})
        assert seqs(outbox.take()) == [3]
        assert not outbox.unsent()

    def test_ack_forgets_what_the_controller_has(self) -> None:
        """An ack drops every event up to it; a resend starts after it."""
        outbox = filled(5)
        outbox.take()
        outbox.ack(3)
        assert len(outbox) == 2 and outbox.acked == 3
        outbox.resend_from(3)
        assert seqs(outbox.take()) == [4, 5]

    def test_a_new_session_resends_what_the_controller_lacks(self) -> None:
        """welcome's events_upto acks what it covers; the rest goes again, oldest first."""
        outbox = filled(5)
        outbox.take()
        outbox.resend_from(2)
        assert seqs(outbox.take()) == [3, 4, 5]

    def test_a_controller_that_knows_less_gets_everything_held(self) -> None:
        """A restarted controller (events_upto 0) gets every unacknowledged event again."""
        outbox = filled(4)
        outbox.take()
        outbox.ack(2)
        outbox.resend_from(0)
        assert outbox.acked == 2
        assert seqs(outbox.take()) == [3, 4]

    def test_an_ack_beyond_what_was_added_is_clamped(self) -> None:
        """A bogus ack never makes later events count as acknowledged."""
        outbox = filled(2)
        outbox.ack(50)
        assert outbox.acked == 2
        outbox.add("proc.web.exit", 1.0, {})
        assert seqs(outbox.take()) == [3]

    def test_rewind_sends_a_failed_batch_again(self) -> None:
        """A batch the socket refused is taken again by the next take."""
        outbox = filled(4)
        outbox.take()
        outbox.rewind(3)
        assert seqs(outbox.take()) == [3, 4]

    def test_overflow_drops_the_oldest_and_reports_the_count_once(self) -> None:
        """Past capacity the oldest unacknowledged events go; the count rides with the next take only."""
        outbox = filled(7, capacity=3)
        assert outbox.lost == 4 and len(outbox) == 3
        first = outbox.take()
        assert seqs(first) == [5, 6, 7] and first.lost == 4
        outbox.ack(7)
        outbox.add("proc.web.exit", 1.0, {})
        assert outbox.take().lost == 0

    def test_a_loss_report_that_was_not_acknowledged_goes_again(self) -> None:
        """If the message carrying the loss never arrived, the next session reports it again."""
        outbox = filled(5, capacity=3)
        assert outbox.take().lost == 2
        outbox.resend_from(0)
        again = outbox.take()
        assert seqs(again) == [3, 4, 5] and again.lost == 2

    def test_an_acknowledged_loss_report_is_not_sent_again(self) -> None:
        """Once the controller has the message that carried the loss, a new session says nothing more."""
        outbox = filled(5, capacity=3)
        assert outbox.take().lost == 2
        outbox.resend_from(3)
        again = outbox.take()
        assert seqs(again) == [4, 5] and again.lost == 0

    def test_capacity_must_be_positive(self) -> None:
        """An outbox that could hold nothing is a mistake, refused at once."""
        with pytest.raises(ValueError, match="capacity"):
            Outbox(0)


class TestOrder:
    def test_output_events_stay_after_the_state_event_they_followed(self) -> None:
        """A flush merges state and output events back into the order they were queued."""
        states = [{"seq": n} for n in (1, 2, 3)]
        output = [(0, {"seq": 0, "n": "a"}), (2, {"seq": 0, "n": "b"}), (2, {"seq": 0, "n": "c"})]
        merged = in_order(states, output)
        assert [e["seq"] or e["n"] for e in merged] == ["a", 1, 2, "b", "c", 3]

    def test_batches_split_by_count_and_size(self) -> None:
        """Big text goes in several messages rather than one over the limit."""
        events = [{"seq": n, "data": {"text": "x" * 400_000}} for n in range(1, 6)]
        runs = batches(events)
        assert [len(run) for run in runs] == [2, 2, 1]
        assert [e for run in runs for e in run] == events


# --------------------------------------------------------------------- the link, simulated


@dataclass
class Controller:
    """The controller's side as the contract says: dedupe by seq, ack the highest handled."""

    upto: int = 0
    handled: list[int] = field(default_factory=list)
    reported: int = 0

    def receive(self, events: list[int], lost: int) -> int:
        self.reported += lost
        for seq in events:
            if seq > self.upto:
                self.handled.append(seq)
                self.upto = seq
        return self.upto


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 6)),
        st.tuples(st.just("flush"), st.booleans()),
        st.tuples(st.just("deliver"), st.booleans()),
        st.tuples(st.just("reconnect"), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=examples(300), deadline=None)
@given(capacity=st.integers(1, 8), ops=OPS)
def test_every_event_is_handled_once_or_counted_lost(capacity: int, ops: list[tuple[str, object]]) -> None:
    """Over random adds, flushes, lost messages, lost acks and reconnects, each event reaches the
    controller exactly once in order, or was pushed out and counted; losses are reported once."""
    outbox = Outbox(capacity)
    controller = Controller()
    wire: list[tuple[list[int], int]] = []
    evicted: set[int] = set()

    def add(count: int) -> None:
        for _ in range(count):
            if len(outbox) == capacity:  # held seqs are contiguous: the oldest is pushed out
                evicted.add(outbox.last - len(outbox) + 1)
            outbox.add("proc.t.spawn", 0.0, {})

    def flush() -> None:
        taken = outbox.take()
        if taken.events:
            wire.append((seqs(taken), taken.lost))

    for op, arg in ops:
        if op == "add":
            add(int(arg))  # type: ignore[call-overload]
        elif op == "flush":
            flush()
        elif op == "deliver" and wire:
            events, lost = wire.pop(0)
            upto = controller.receive(events, lost)
            if arg:  # the ack arrives
                outbox.ack(upto)
        elif op == "reconnect":
            wire.clear()  # the socket is closed with whatever was in flight
            outbox.resend_from(controller.upto)
    wire.clear()
    outbox.resend_from(controller.upto)
    flush()
    while wire:
        events, lost = wire.pop(0)
        outbox.ack(controller.receive(events, lost))

    added = set(range(1, outbox.last + 1))
    assert controller.handled == sorted(set(controller.handled)), "in order, once each"
    assert added - set(controller.handled) <= evicted, "only evicted events are missing"
    assert outbox.lost == len(evicted)
    assert controller.reported == outbox.lost, "each loss reported exactly once"
    assert len(outbox) == 0
