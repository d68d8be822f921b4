"""The keeper's frame codec against protocol 1's recorded frames (tests/fixtures/keeper_wire_v1.json)."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.keeper.framing import HEADER, MAX_REPLY, PROTOCOL, FrameDecoder, encode_frame
from budget import examples

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "keeper_wire_v1.json").read_text())


def _recorded_frames() -> list[tuple[bytes, int]]:
    """Every recorded frame as (bytes, descriptors): the client's requests as sent, the keeper's
    answers framed again from their recorded bodies."""
    frames = [(bytes.fromhex(raw), nfds) for nfds, raw in GOLDEN["client"]["requests"]]
    for _, nfds, body in GOLDEN["keeper"]:
        data = bytes.fromhex(body)
        frames.append((HEADER.pack(len(data), nfds) + data, nfds))
    return frames


FRAMES = _recorded_frames()
STREAM = b"".join(data for data, _ in FRAMES)
STARTS = [sum(len(data) for data, _ in FRAMES[:index]) for index in range(len(FRAMES))]


class TestProtocol1Frames:
    def test_encode_frame_reproduces_every_recorded_frame(self):
        """encode_frame(body, nfds) gives protocol 1's bytes for every recorded body."""
        assert PROTOCOL == GOLDEN["protocol"] == 1
        for data, nfds in FRAMES:
            body = msgpack.unpackb(data[HEADER.size :], raw=False)
            assert encode_frame(body, nfds) == data

    @settings(max_examples=examples(200), deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12))
    def test_the_decoder_reads_the_recorded_stream_however_it_is_cut(self, cuts):
        """Fed in any pieces, with descriptors arriving with each frame's first byte, the
        decoder gives back every recorded body with the descriptors its header declared."""
        decoder = FrameDecoder(MAX_REPLY)
        fake_fd = iter(range(1000, 2000))
        bounds = [0, *sorted(set(cuts)), len(STREAM)]
        frames = []
        for start, end in zip(bounds, bounds[1:]):
            fds = [next(fake_fd) for index, begin in enumerate(STARTS) if start <= begin < end
                   for _ in range(FRAMES[index][1])]
            frames.extend(decoder.feed(STREAM[start:end], fds))
        assert [frame.error for frame in frames] == [None] * len(FRAMES)
        assert [len(frame.fds) for frame in frames] == [nfds for _, nfds in FRAMES]
        assert [encode_frame(frame.body, len(frame.fds)) for frame in frames] == [data for data, _ in FRAMES]
