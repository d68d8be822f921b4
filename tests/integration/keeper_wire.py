"""A scripted conversation with the fd keeper, kept as bytes: the keeper's wire must not change.

A keeper outlives the agent that started it, so after an upgrade a new agent talks to a keeper
that an old one started (and the keeper is started by the same command line). This script was
run once against protocol 1's code, as it stood before the keeper became a package, and wrote
``tests/fixtures/keeper_wire_v1.json``; test_keeper_wire.py runs it against today's keeper and
client and compares. Frames are built and read here with struct and msgpack alone, never with
gaffer's framing code, so the check does not lean on what it checks.

Two sides:
- ``keeper_side``: a real keeper process (``python -m gaffer.agent.keeper``) answers a fixed
  series of requests, real pipes included; every answer is kept (pids and the descriptor
  budget, which vary from run to run, set to 0).
- ``client_side``: a ``KeeperClient`` talks to a hand-made keeper on a real unix socket; every
  request it sends is kept byte for byte, and what it makes of protocol 1's answers.

To record: ``PYTHONPATH=<the code to record> python tests/integration/keeper_wire.py OUT.json``.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import msgpack

HEADER = struct.Struct("!IB")
TIMEOUT = 10.0
POLL = 0.01
VOLATILE = ("pid", "max_fds")
BUFFER_KIB = 16


class Raw:
    """One end of a keeper connection, framed by hand; blocking, with a timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.buf = bytearray()
        self.fds: list[int] = []

    @classmethod
    def connect(cls, path: str) -> "Raw":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        return cls(sock)

    def send(self, body: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
        data = frame(body, len(fds))
        sent = 0
        if fds:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            sent = self.sock.sendmsg([data], rights)
        self.sock.sendall(data[sent:])

    def read(self) -> tuple[bytes, int, dict[str, Any], list[int]]:
        """The next frame: its raw bytes, declared descriptors, body, and the descriptors."""
        while True:
            if len(self.buf) >= HEADER.size:
                length, nfds = HEADER.unpack_from(self.buf)
                end = HEADER.size + length
                if len(self.buf) >= end and len(self.fds) >= nfds:
                    raw = bytes(self.buf[:end])
                    del self.buf[:end]
                    fds, self.fds = self.fds[:nfds], self.fds[nfds:]
                    return raw, nfds, msgpack.unpackb(raw[HEADER.size :], raw=False), fds
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
            if not data:
                raise AssertionError("the other side closed the connection")
            self.buf += data
            for level, kind, cdata in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(cdata[: len(cdata) - len(cdata) % got.itemsize])
                    self.fds.extend(got)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.sock.close()


def frame(body: dict[str, Any], nfds: int = 0) -> bytes:
    data = msgpack.packb(body, use_bin_type=True)
    return HEADER.pack(len(data), nfds) + data


def normalized(body: dict[str, Any]) -> str:
    """The body as hex msgpack, in its own key order, with what varies between runs zeroed."""
    body = {key: 0 if key in VOLATILE else value for key, value in body.items()}
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        body["error"] = {**error, "message": re.sub(r"pid \d+", "pid 0", error["message"])}
    return msgpack.packb(body, use_bin_type=True).hex()


# ----------------------------------------------------------------------------- the keeper


def start_keeper(path: str) -> subprocess.Popen:
    """A keeper as every agent starts it (not detached: this process reaps it)."""
    ready_r, ready_w = os.pipe()
    argv = [sys.executable, "-m", "gaffer.agent.keeper", "--socket", path, "--idle-timeout", "30",
            "--buffer-kib", str(BUFFER_KIB), "--ready-fd", str(ready_w)]
    proc = subprocess.Popen(argv, pass_fds=(ready_w,), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        line = ready.readline().decode()
    if not line.startswith("ready"):
        proc.kill()
        proc.wait()
        raise AssertionError(f"the keeper did not start: {line!r}")
    return proc


def keeper_side(path: str) -> list[list[Any]]:
    """Run the script against the keeper at ``path``: [label, descriptors, normalized body]."""
    answers: list[list[Any]] = []

    def keep(label: str, raw: Raw) -> dict[str, Any]:
        _, nfds, body, fds = raw.read()
        for fd in fds:
            os.close(fd)
        answers.append([label, nfds, normalized(body)])
        return body

    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    try:
        _holding(path, out_r, in_w, keep)
        os.write(out_w, b"hello\n")
        os.close(out_w)
        out_w = -1
        _after_the_agent_died(path, keep)
    finally:
        for fd in (out_r, out_w, in_r, in_w):
            if fd >= 0:
                os.close(fd)
    return answers


def _holding(path: str, out_r: int, in_w: int, keep) -> None:
    """An agent deposits, asks, releases and reclaims; a second agent is refused meanwhile."""
    agent = Raw.connect(path)
    try:
        keep("welcome", agent)
        agent.send({"op": "status", "id": 1})
        keep("status", agent)
        agent.send({"op": "deposit", "id": 2, "key": "web.1", "streams": ["out", "in"]}, [out_r, in_w])
        keep("deposit", agent)
        agent.send({"op": "status", "id": 3, "key": "web.1"})
        keep("status key", agent)
        second = Raw.connect(path)
        try:
            keep("refused", second)
        finally:
            second.close()
        agent.send({"op": "release", "id": 4, "key": "web.1", "streams": ["in"]})
        keep("release in", agent)
        agent.send({"op": "release", "id": 5, "key": "nope"})
        keep("release unknown", agent)
        agent.send({"op": "explode", "id": 6})
        keep("unknown op", agent)
        agent.send({"op": "deposit", "id": 7, "key": "web.2", "streams": ["out"]})
        keep("deposit without descriptors", agent)
        agent.send({"op": "reclaim", "id": 8})
        keep("reclaim item", agent)
        keep("reclaim end", agent)
    finally:
        agent.close()


def _after_the_agent_died(path: str, keep) -> None:
    """The keeper drained the output to its end; the next agent gets the bytes back."""
    agent = Raw.connect(path)
    try:
        keep("welcome again", agent)
        deadline = time.monotonic() + TIMEOUT
        while True:
            agent.send({"op": "status", "id": 9, "key": "web.1"})
            _, _, body, _ = agent.read()
            if body["key"]["eof"] == ["out"]:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the keeper never drained web.1 to its end: {body}")
            time.sleep(POLL)  # poll
        agent.send({"op": "status", "id": 10, "key": "web.1"})
        keep("status drained", agent)
        agent.send({"op": "reclaim", "id": 11})
        keep("reclaim drained item", agent)
        keep("reclaim drained end", agent)
        agent.send({"op": "status", "id": 12})
        keep("status empty", agent)
    finally:
        agent.close()


# ----------------------------------------------------------------------------- the client


async def client_side(client_cls: type, directory: str) -> dict[str, list[Any]]:
    """Run the script with ``client_cls`` against a hand-made keeper on a socket in ``directory``.

    Returns the requests as sent ([descriptors, hex]) and what the client made of each answer.
    """
    loop = asyncio.get_running_loop()
    path = os.path.join(directory, "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.setblocking(False)
    connecting = asyncio.ensure_future(client_cls.connect(path, spawn=False, timeout=TIMEOUT))
    try:
        sock, _ = await asyncio.wait_for(loop.sock_accept(listener), TIMEOUT)
        sock.setblocking(True)
        keeper = Raw(sock)
        keeper.send({"op": "welcome", "protocol": 1, "pid": 4242, "held": 0})
        client = await asyncio.wait_for(connecting, TIMEOUT)
    finally:
        listener.close()
        if not connecting.done():
            connecting.cancel()
    try:
        return await _client_script(client, keeper)
    finally:
        client.close()
        keeper.close()


async def _client_script(client: Any, keeper: Raw) -> dict[str, list[Any]]:
    requests: list[list[Any]] = []
    results: list[Any] = []

    async def exchange(call: Any, *replies: tuple[dict[str, Any], list[int]]) -> Any:
        pending = asyncio.ensure_future(call)
        raw, nfds, body, fds = await asyncio.to_thread(keeper.read)
        for fd in fds:
            os.close(fd)
        requests.append([nfds, raw.hex()])
        for reply, reply_fds in replies:
            keeper.send({"id": body["id"], **reply}, reply_fds)
        try:
            return await asyncio.wait_for(pending, TIMEOUT)
        except Exception as exc:  # the client's error for a refusal is part of what is compared
            return ["error", type(exc).__name__, getattr(exc, "reason", None), str(exc)]

    pipes = [os.pipe() for _ in range(3)]
    (out_r, _), (err_r, _), (_, in_w) = pipes
    try:
        results.append(await exchange(client.deposit("web.1", {"out": out_r, "err": err_r, "in": in_w}),
                                      ({"ok": True}, [])))
        results.append(await exchange(client.release("web.1", ["in"]), ({"ok": True, "held": True}, [])))
        results.append(await exchange(client.release("web.2"), ({"ok": True, "held": False}, [])))
        results.append(await exchange(client.status(), (STATUS, [])))
        results.append(await exchange(client.status("web.1"), ({**STATUS, "key": STATUS_KEY}, [])))
        refusal = {"error": {"code": "keeper_full", "message": "the keeper holds 3 descriptors, its limit is 3"}}
        results.append(await exchange(client.deposit("web.3", {"out": out_r}), (refusal, [])))
        held = await exchange(client.reclaim(), ({"item": ITEM}, [out_r, err_r]), ({"ok": True, "count": 1}, []))
        results.append(_reclaimed(held))
    finally:
        for pair in pipes:
            for fd in pair:
                os.close(fd)
    return {"requests": requests, "results": results}


STATUS = {"ok": True, "pid": 4242, "keys": 1, "fds": 3, "max_fds": 500, "buffer_bytes": 65536,
          "draining": 0, "buffered": 0}
STATUS_KEY = {"streams": ["err", "in", "out"], "eof": [], "draining": False,
              "buffered": {}, "dropped": {}}
ITEM = {"key": "web.1", "streams": ["out", "err"], "buffered": {"out": b"hello\n"},
        "dropped": {"out": 3}, "eof": ["in"]}


def _reclaimed(held: Any) -> Any:
    """What reclaim returned, as JSON (descriptors closed, only their stream names kept)."""
    if not isinstance(held, dict):
        return held
    shown = {}
    for key, item in held.items():
        shown[key] = {
            "streams": sorted(item.fds),
            "buffered": {name: data.hex() for name, data in item.buffered.items()},
            "dropped": item.dropped,
            "eof": sorted(item.eof),
        }
        item.close()
    return shown


# ----------------------------------------------------------------------------- recording


def _client_class() -> type:
    try:
        from gaffer.agent.keeper.client import KeeperClient
    except ImportError:
        from gaffer.agent.keeper_client import KeeperClient  # protocol 1's layout
    return KeeperClient


async def record() -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="kw")
    path = os.path.join(directory, "keeper.sock")
    proc = start_keeper(path)
    try:
        keeper = await asyncio.to_thread(keeper_side, path)
        client = await client_side(_client_class(), directory)
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)
        shutil.rmtree(directory, ignore_errors=True)
    return {"protocol": 1, "keeper": keeper, "client": client}


if __name__ == "__main__":
    import gaffer.agent.keeper as recorded

    print("recording", recorded.__file__, file=sys.stderr)
    with open(sys.argv[1], "w") as out:
        json.dump(asyncio.run(record()), out, indent=1)
        out.write("\n")
