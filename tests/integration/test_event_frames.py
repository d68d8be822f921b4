"""The blocking client reads published batches as two plain frames, and gets back in step after
a message of another shape (what it loses there, replay recovers)."""

from __future__ import annotations

import time

import zmq

from gaffer.client.sync import _NONE_WAITING, _read_batch
from gaffer.common import protocol

DEADLINE = 5.0


def _frame(seq: int) -> bytes:
    return protocol.encode("batch", seq, {"prev": seq - 1, "events": [[seq, "proc.web.exit", 1.0, {}]]})


def _read_all(sub: zmq.Socket, want: int) -> list[int | None]:
    """Read until ``want`` bodies (batches or dropped messages) came, within the deadline."""
    seen: list[int | None] = []
    deadline = time.monotonic() + DEADLINE
    while len(seen) < want:
        assert time.monotonic() < deadline, f"only {seen}"
        sub.poll(100)
        while (body := _read_batch(sub)) is not _NONE_WAITING:
            seen.append(None if body is None else body["events"][0][0])
    return seen


def test_batches_are_read_in_step_and_a_misshapen_message_costs_at_most_the_next_one():
    """Two-frame batches read whole; a one-frame and a three-frame message each cost the batch
    after them (dropped, counted as one bad message), and every later event is read."""
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        pub.bind("inproc://events")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect("inproc://events")
        deadline = time.monotonic() + DEADLINE
        while not sub.poll(10):  # poll: the subscription reaches the PUB asynchronously
            assert time.monotonic() < deadline
            pub.send_multipart([b"proc.web.exit", _frame(1)])
        while _read_batch(sub) is not _NONE_WAITING:
            pass
        pub.send_multipart([b"proc.web.exit", _frame(2)])
        pub.send(b"one frame only")
        pub.send_multipart([b"proc.web.exit", _frame(3)])
        pub.send_multipart([b"proc.web.exit", _frame(4), b"extra"])
        pub.send_multipart([b"proc.web.exit", _frame(5)])
        pub.send_multipart([b"proc.web.exit", _frame(6)])
        pub.send_multipart([b"proc.web.exit", _frame(7)])
        seen = _read_all(sub, 6)
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()
    assert seen == [2, None, 4, None, 6, 7]
