"""Output lines are numbered per instance and stream, and every lost run is reported exactly."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.capture import Capture
from gaffer.agent.lease import Lease
from gaffer.agent.link import ControllerLink, LinkSettings
from gaffer.agent.manager import Manager
from gaffer.agent.follow import MAX_LOST_RUNS, Followers, Limit, Lost
from gaffer.agent.output import Line, RingBuffer
from gaffer.common import protocol
from gaffer.testing.clock import FakeClock
from gaffer.testing.process import FakeProcesses
from gaffer.testing.channel import channel_pair
from budget import examples

TOPIC = "output.web.1.out"
words = st.text(alphabet="ab\u00e9", max_size=6)
reads = st.lists(
    st.tuples(st.sampled_from(["out", "err"]), st.binary(max_size=12).map(lambda b: b.replace(b"\r", b""))),
    max_size=40,
)


class TestCaptureNumbers:
    @settings(max_examples=examples(300), deadline=None)
    @given(reads, st.integers(16, 200))
    def test_chunks_number_every_line_of_a_stream_from_one(
        self, chunks: list[tuple[str, bytes]], ring_bytes: int
    ) -> None:
        """However the bytes are read, each stream's chunks run 1, 2, 3... and the ring's lines
        keep the numbers they had when captured, also after trimming."""
        capture = Capture()
        capture.ring = RingBuffer(ring_bytes)
        numbered: dict[str, list[str]] = {"out": [], "err": []}
        for index, (stream, data) in enumerate(chunks):
            first = capture.lines(stream) + 1
            chunk = capture.feed(stream, data, float(index))
            if chunk is None:
                continue
            assert chunk.first == first == len(numbered[stream]) + 1
            numbered[stream].extend(chunk.text.split("\n"))
            assert chunk.last == capture.lines(stream) == len(numbered[stream])
        for line in capture.tail(None):
            assert line.number >= 1
            assert numbered[line.stream][line.number - 1] == line.text

    def test_numbers_go_on_across_respawns(self) -> None:
        """A new process of the same instance continues its numbers (its partial line is dropped)."""
        capture = Capture()
        capture.feed("out", b"a\nb\npartial", 0.0)
        capture.restart(None, "web.1")
        chunk = capture.feed("out", b"c\n", 1.0)
        assert chunk is not None and (chunk.first, chunk.last) == (3, 3)
        assert [(ln.number, ln.text) for ln in capture.tail(None)] == [(1, "a"), (2, "b"), (3, "c")]

    def test_a_note_of_gaffers_own_has_no_number(self) -> None:
        """A line gaffer adds is numbered 0 and does not shift the process's numbers."""
        capture = Capture()
        capture.note(Line(0.0, "out", "lost while no agent ran"))
        chunk = capture.feed("out", b"x\n", 1.0)
        assert chunk is not None and chunk.first == 1
        assert [ln.number for ln in capture.tail(None)] == [0, 1]
        assert capture.tail(None)[0].to_dict()["number"] == 0


def numbered_run(
    followers: Followers, texts: list[tuple[float, str]], first: int = 1, counted: bool = False
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """Offer ``texts`` numbered from ``first`` (``counted``: with ``lines``, as the capture
    publishes them)."""
    out: list[tuple[str, dict[str, Any]]] = []
    now, line = 0.0, first
    for dt, text in texts:
        now += dt
        data = {"id": "web.1", "template": "web", "stream": "out", "ts": now, "line": line, "text": text}
        if counted:
            data["lines"] = text.count("\n") + 1
        out += followers.offer(TOPIC, data, now)
        out += followers.markers(now)
        line += text.count("\n") + 1
    out += followers.markers(now + 1) + followers.markers(now + 2)
    return out, line


def check_contiguous(events: list[tuple[str, dict[str, Any]]], first: int, end: int) -> None:
    """Each event starts where the previous one ended; together they cover [first, end)."""
    at = first
    for _, data in events:
        assert data["line"] == at, f"event at line {data['line']} where {at} was due"
        at += data["skipped"] if "skipped" in data else data["text"].count("\n") + 1
    assert at == end


offers = st.lists(st.tuples(st.floats(0, 0.3), st.lists(words, min_size=1, max_size=10).map("\n".join)), max_size=30)
limits = st.builds(Limit, st.integers(1, 20), st.integers(1, 200), st.sampled_from([0.5, 1.0, 2.0]))


class TestFollowerNumbers:
    @settings(max_examples=examples(300), deadline=None)
    @given(offers, limits, limits, st.integers(1, 10**6), st.booleans())
    def test_lines_and_markers_carry_contiguous_numbers(
        self, texts: list[tuple[float, str]], stream: Limit, agent: Limit, first: int, counted: bool
    ) -> None:
        """What is sent keeps its numbers; each marker says the first line it skipped, and
        markers and lines together cover every number once, in order, whether the capture's
        count (``lines``, never forwarded) came with the lines or not."""
        events, end = numbered_run(Followers(stream, agent), texts, first, counted)
        check_contiguous(events, first, end)
        for _, data in events:
            assert set(data) >= {"id", "template", "stream", "line"}
            assert "lines" not in data

    def test_skips_that_are_not_one_run_get_a_marker_each(self) -> None:
        """Lines 3-4 skipped, 5-6 lost elsewhere, 7-8 skipped: two markers, each exact."""
        followers = Followers(Limit(lines=2, bytes=10**6), Limit(lines=10**6, bytes=10**9))
        base = {"id": "web.1", "template": "web", "stream": "out"}
        out = followers.offer(TOPIC, {**base, "ts": 0.0, "line": 1, "text": "a\nb\nc\nd"}, 0.0)
        out += followers.offer(TOPIC, {**base, "ts": 0.0, "line": 7, "text": "g\nh"}, 0.0)
        out += followers.markers(1.0) + followers.markers(2.0)
        markers = [(d["line"], d["skipped"]) for _, d in out if "skipped" in d]
        assert markers == [(3, 2), (7, 2)]


class TestLost:
    def test_lost_output_becomes_markers_with_exact_ranges(self) -> None:
        """Lines that could not be sent: one marker per run and stream, merged when they follow on."""
        lost = Lost()
        base = {"id": "web.1", "template": "web", "stream": "out", "ts": 1.0}
        lost.add(TOPIC, {**base, "line": 1, "text": "a\nb"})
        lost.add(TOPIC, {**base, "line": 3, "text": "c"})
        lost.add("output.web.1.err", {**base, "stream": "err", "line": 1, "text": "e"})
        lost.add(TOPIC, {**base, "line": 10, "skipped": 5, "skipped_bytes": 10})
        assert lost and lost.lines == 9
        got = [(t, d["line"], d["skipped"], d["skipped_bytes"]) for t, d in lost.take()]
        assert got == [
            (TOPIC, 1, 3, 6), ("output.web.1.err", 1, 1, 2), (TOPIC, 10, 5, 10),
        ]
        assert not lost and lost.take() == []

    def test_runs_are_bounded(self) -> None:
        """Past MAX_LOST_RUNS separate runs a stream's losses merge: the count stays exact."""
        lost = Lost()
        for index in range(MAX_LOST_RUNS + 50):
            lost.add(TOPIC, {"id": "web.1", "line": 1 + 3 * index, "text": "x"})
        runs = lost.take()
        assert len(runs) == MAX_LOST_RUNS
        assert sum(d["skipped"] for _, d in runs) == MAX_LOST_RUNS + 50


async def test_the_link_turns_output_it_cannot_send_into_a_marker(tmp_path) -> None:
    """Output events the socket refuses (peer full) reach the controller later as one marker
    with their exact first line and count, before the lines that follow them."""
    clock = FakeClock()
    manager = Manager(node="n1", clock=clock, processes=FakeProcesses(clock))
    settings = LinkSettings(controller="ipc:///nowhere", node="n1", labels={}, state_dir=tmp_path)
    link = ControllerLink(manager, settings, "agent-1", Lease(held=False))
    controller, agent = channel_pair(hwm=1)
    link._channel = agent
    link.connected.set()
    try:
        base = {"id": "web.1", "template": "web", "stream": "out", "pid": 7, "ts": 1.0}
        assert agent.send([b"fills the peer"])
        link._queue_output(TOPIC, 1.0, {**base, "line": 1, "text": "a\nb"})
        link._queue_output(TOPIC, 1.0, {**base, "line": 3, "text": "c"})
        link._flush()
        assert link.lost_output
        assert [bytes(f[0].buffer) for f in controller.drain()] == [b"fills the peer"]
        link._queue_output(TOPIC, 2.0, {**base, "line": 4, "text": "d"})
        link._flush()
        (frames,) = controller.drain()
        message = protocol.decode(frames[0].buffer, protocol.AGENT_TO_CONTROLLER)
        events = [e["data"] for e in message.body["events"]]
        assert [(d["line"], d.get("skipped"), d.get("text")) for d in events] == [(1, 3, None), (4, None, "d")]
        assert events[0]["skipped_bytes"] == 6
    finally:
        link._channel = None
        await link.stop()
