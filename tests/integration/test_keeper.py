"""The fd keeper: a real keeper process holding real pipes of real processes across agent death."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from gaffer.agent.keeper.client import KeeperClient, Reclaimed, spawn_keeper
from gaffer.agent.keeper.daemon import lock_path
from gaffer.agent.keeper.framing import HEADER, MAX_REQUEST, FrameDecoder, encode_frame, recv_with_fds, send_with_fds
from gaffer.common.errors import KeeperBusy, KeeperRejected
from gaffer.testing import POLL, pid_dead, poll_until

LINE = 1024
BUFFER_KIB = 16

WRITER = r"""
import os, signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
counter = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
n = 0
while True:
    n += 1
    os.write(1, b"%08d " % n + b"x" * 1014 + b"\n")
    os.pwrite(counter, b"%012d" % n, 0)
"""

AGENT = r"""
import asyncio, os, subprocess, sys, uvloop
from gaffer.agent.keeper.client import KeeperClient

async def main(path, counter, writer):
    client = await KeeperClient.connect(path, buffer_kib=int(sys.argv[4]))
    argv = [sys.executable, "-c", writer, counter]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
    out = proc.stdout.fileno()
    os.set_blocking(out, False)
    asyncio.get_running_loop().add_reader(out, lambda: os.read(out, 65536))
    await client.deposit("web.1", {"out": out})
    print(proc.pid, client.keeper_pid, flush=True)
    await asyncio.Event().wait()

uvloop.run(main(*sys.argv[1:4]))
"""


def _kill(pid: int, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_keeper(sock: Path) -> None:
    """Kill the keeper serving ``sock`` (its pid is in the lock file), if it is one."""
    try:
        pid = int(Path(lock_path(str(sock))).read_text().split()[0])
        cmdline = psutil.Process(pid).cmdline()
    except (FileNotFoundError, ValueError, IndexError, psutil.Error):
        return
    if "gaffer.agent.keeper" in cmdline and str(sock) in cmdline:
        _kill(pid)


@pytest.fixture
def make_dir():
    """Short private state dirs (a unix socket path must stay under 108 bytes); the keeper
    serving each is killed at the end."""
    made: list[Path] = []

    def make() -> Path:
        path = Path(tempfile.mkdtemp(prefix="gk-", dir="/tmp"))
        made.append(path)
        return path

    try:
        yield make
    finally:
        for path in made:
            _kill_keeper(path / "keeper.sock")
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock(make_dir) -> Path:
    return make_dir() / "keeper.sock"


@pytest.fixture
def victims():
    """Pids (process-group leaders) killed at the end of the test, whatever happened."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            _kill(pid, group=True)
            _kill(pid)


@pytest.fixture
async def clients():
    """Keeper clients closed at the end of the test."""
    opened: list[KeeperClient] = []
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


async def connect(clients: list[KeeperClient], path: Path, **options) -> KeeperClient:
    client = await KeeperClient.connect(path, **options)
    clients.append(client)
    return client


async def poll_status(client: KeeperClient, key: str, predicate, timeout: float = 10.0) -> dict:
    """Ask the keeper about ``key`` until ``predicate(its status)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        status = (await client.status(key))["key"]
        if status is not None and predicate(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on the keeper's status of {key}: {status}")
        await asyncio.sleep(POLL)  # poll


def counter(path: Path) -> int:
    try:
        return int(path.read_bytes() or b"0")
    except (FileNotFoundError, ValueError):
        return 0


def line_numbers(data: bytes) -> list[int]:
    """Counters of the complete writer lines in ``data`` (the cut first piece is skipped)."""
    lines = data.split(b"\n")[1:-1]
    return [int(line.split(b" ", 1)[0]) for line in lines]


async def read_until(fd: int, enough, timeout: float = 10.0) -> bytes:
    """Read ``fd`` on the loop until ``enough(data so far)`` holds."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    done = loop.create_future()
    os.set_blocking(fd, False)

    def on_readable() -> None:
        try:
            got.extend(os.read(fd, 65536))
        except BlockingIOError:
            return
        if enough(bytes(got)) and not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        loop.remove_reader(fd)
    return bytes(got)


class TestAgentDeath:
    async def test_writer_keeps_running_while_agent_is_dead_and_reclaim_returns_newest_output(
        self, sock, victims, clients, tmp_path
    ):
        """kill -9 of the agent: the writer never blocks nor dies; reclaim gives the newest bytes and a live fd."""
        count_file = tmp_path / "count"
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-c", AGENT, str(sock), str(count_file), WRITER, str(BUFFER_KIB),
            stdout=asyncio.subprocess.PIPE, start_new_session=True,
        )
        victims.append(agent.pid)
        writer_pid, keeper_pid = map(int, (await asyncio.wait_for(agent.stdout.readline(), 20)).split())
        victims.append(writer_pid)
        await poll_until(lambda: counter(count_file) > 0, what="the writer to start")

        agent.kill()
        await agent.wait()
        before = counter(count_file)
        await poll_until(
            lambda: counter(count_file) > before + 256, what="the writer to write 256 KiB with no agent"
        )
        assert not pid_dead(writer_pid)

        client = await connect(clients, sock, spawn=False)
        assert client.keeper_pid == keeper_pid
        held = (await client.reclaim())["web.1"]
        fd = held.fds["out"]
        try:
            buffered = held.buffered["out"]
            assert len(buffered) == BUFFER_KIB * 1024
            assert held.dropped["out"] > 0
            assert held.eof == set()
            fresh = await read_until(fd, lambda data: data.count(b"\n") > 4)
            numbers = line_numbers(buffered + fresh)
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            assert numbers[-1] > line_numbers(buffered)[-1]
        finally:
            os.close(fd)
        assert not pid_dead(writer_pid)


class TestConnections:
    async def test_a_second_agent_is_refused_while_one_is_connected(self, sock, clients):
        """Only one agent at a time: the second gets KeeperBusy; once the first leaves, a new one is served."""
        first = await connect(clients, sock)
        with pytest.raises(KeeperBusy, match="another agent"):
            await KeeperClient.connect(sock)
        first.close()
        second = await connect(clients, sock, spawn=False)
        assert second.keeper_pid == first.keeper_pid

    async def test_keeper_exits_on_its_own_when_idle_with_nothing_held(self, sock, clients):
        """No agent and nothing held for idle_timeout: the keeper exits and removes its socket."""
        client = await connect(clients, sock, idle_timeout=0.2)
        pid = client.keeper_pid
        client.close()
        await poll_until(lambda: pid_dead(pid) and not sock.exists(), what="the keeper to exit")

    async def test_keeper_holding_descriptors_outlives_its_idle_timeout(self, make_dir, clients):
        """A keeper holding pipes outlives its idle timeout (an empty twin has exited) until they are released."""
        holding_sock, empty_sock = make_dir() / "keeper.sock", make_dir() / "keeper.sock"
        holding = await connect(clients, holding_sock, idle_timeout=0.2)
        read_end, write_end = os.pipe()
        try:
            await holding.deposit("web.1", {"out": read_end})
            os.close(read_end)
            holding.close()
            empty = await connect(clients, empty_sock, idle_timeout=0.2)
            empty.close()
            await poll_until(lambda: pid_dead(empty.keeper_pid), what="the empty keeper to exit")
            assert not pid_dead(holding.keeper_pid)

            again = await connect(clients, holding_sock, spawn=False)
            assert await again.release("web.1") is True
            again.close()
            await poll_until(lambda: pid_dead(holding.keeper_pid), what="the emptied keeper to exit")
        finally:
            os.close(write_end)

    async def test_keeper_exits_once_its_last_streams_end_with_no_agent(self, sock, clients):
        """Issue 7: no agent, and every held stream at end of output: the keeper exits after its idle timeout."""
        client = await connect(clients, sock, idle_timeout=0.3)
        read_end, write_end = os.pipe()
        try:
            await client.deposit("web.1", {"out": read_end})
        finally:
            os.close(read_end)
        client.close()
        os.write(write_end, b"last words\n")
        os.close(write_end)
        await poll_until(lambda: pid_dead(client.keeper_pid), what="the keeper to exit after its last stream ended")

    async def test_keeper_exits_once_the_reader_of_a_held_stdin_is_gone(self, sock, clients, victims):
        """A held stdin write end stops counting when its process dies: the keeper exits."""
        client = await connect(clients, sock, idle_timeout=0.3)
        cat = subprocess.Popen(
            ["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        victims.append(cat.pid)
        try:
            await client.deposit("cat.1", {"in": cat.stdin.fileno(), "out": cat.stdout.fileno()})
        finally:
            cat.stdin.close()
            cat.stdout.close()
        client.close()
        assert not pid_dead(client.keeper_pid)
        cat.kill()
        cat.wait()
        await poll_until(lambda: pid_dead(client.keeper_pid), what="the keeper to exit after cat died")

    async def test_a_busy_spawn_race_joins_the_running_keeper(self, sock, clients):
        """Starting a keeper where one already serves reports busy; connecting reuses the running one."""
        client = await connect(clients, sock)
        line = await spawn_keeper(str(sock))
        assert line.startswith("busy:") and str(client.keeper_pid) in line


class TestHolding:
    async def test_keeper_only_holds_while_the_agent_is_connected(self, sock, clients):
        """While connected the keeper never reads: every byte written stays for the agent."""
        client = await connect(clients, sock)
        read_end, write_end = os.pipe()
        try:
            await client.deposit("web.1", {"out": read_end})
            os.write(write_end, b"for the agent\n")
            status = await client.status("web.1")
            assert status["key"]["draining"] is False
            assert await read_until(read_end, lambda data: data.endswith(b"\n")) == b"for the agent\n"
        finally:
            os.close(read_end)
            os.close(write_end)

    async def test_release_closes_the_keepers_copy(self, sock, clients):
        """After release the keeper holds no read end: once the agent's is closed too, the pipe is broken."""
        client = await connect(clients, sock)
        read_end, write_end = os.pipe()
        try:
            await client.deposit("web.1", {"out": read_end})
            assert await client.release("web.1") is True
            assert await client.release("web.1") is False
            os.close(read_end)
            with pytest.raises(BrokenPipeError):
                os.write(write_end, b"x")
        finally:
            os.close(write_end)

    async def test_releasing_stdin_lets_the_process_read_eof(self, sock, clients, victims):
        """The keeper's copy of stdin keeps the pipe open; releasing just "in" lets cat see EOF and exit."""
        client = await connect(clients, sock)
        cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        victims.append(cat.pid)
        await client.deposit("cat.1", {"in": cat.stdin.fileno()})
        cat.stdin.close()
        assert await client.release("cat.1", ["in"]) is True
        await poll_until(lambda: cat.poll() is not None, what="cat to read EOF and exit")
        assert cat.returncode == 0

    async def test_pipe_whose_writer_died_is_reported_eof_with_its_last_output(self, sock, clients):
        """With no agent the keeper drains a pipe to EOF, closes it, and reclaim reports eof and the bytes."""
        client = await connect(clients, sock)
        proc = subprocess.Popen(["sh", "-c", "echo last words"], stdout=subprocess.PIPE)
        try:
            await client.deposit("job.1", {"out": proc.stdout.fileno()})
        finally:
            proc.stdout.close()
            proc.wait()
        client.close()
        again = await connect(clients, sock, spawn=False)
        await poll_status(again, "job.1", lambda status: status["eof"] == ["out"])
        held = (await again.reclaim())["job.1"]
        assert held == Reclaimed(fds={}, buffered={"out": b"last words\n"}, dropped={}, eof={"out"})
        assert (await again.status())["keys"] == 0

    async def test_deposits_beyond_the_descriptor_limit_are_refused(self, sock, clients):
        """--max-fds bounds what the keeper holds: a deposit past it is refused with keeper_full."""
        client = await connect(clients, sock, max_fds=2)
        pipes = [os.pipe() for _ in range(3)]
        try:
            await client.deposit("a.1", {"out": pipes[0][0], "err": pipes[1][0]})
            with pytest.raises(KeeperRejected) as caught:
                await client.deposit("a.2", {"out": pipes[2][0]})
            assert caught.value.reason == "keeper_full"
            await client.deposit("a.1", {"out": pipes[2][0]})
        finally:
            for pair in pipes:
                for fd in pair:
                    os.close(fd)
        assert (await client.status())["fds"] == 1


class RawAgent:
    """A hand-made connection to the keeper, to send what a correct client never would."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.decoder = FrameDecoder(1 << 24)
        self.frames: list = []
        assert self.reply()["op"] == "welcome"

    def send(self, data: bytes, fds: list[int] = ()) -> None:
        sent = send_with_fds(self.sock, data, fds)
        self.sock.sendall(data[sent:])

    def reply(self) -> dict:
        while not self.frames:
            data, fds, _ = recv_with_fds(self.sock)
            assert data, "the keeper closed the connection"
            self.frames.extend(self.decoder.feed(data, fds))
        return self.frames.pop(0).body


def deposit(rid: int, nfds: int = 1, **fields) -> bytes:
    return encode_frame({"op": "deposit", "id": rid, "key": "a.1", "streams": ["out"], **fields}, nfds)


BAD_REQUESTS = [
    (HEADER.pack(3, 0) + b"abc", "", "not msgpack"),
    (encode_frame([1, 2]), "", "must be a map"),
    (encode_frame({"op": "explode", "id": 1}), "", "op: unknown operation"),
    (deposit(2, key=5), "r", "deposit.key"),
    (deposit(3, streams=["bogus"]), "r", "deposit.streams[0]"),
    (deposit(4), "f", "not a pipe"),
    (deposit(5), "w", "read end"),
    (deposit(6, streams=["out", "err"]), "r", "names 2 streams"),
    (deposit(7, nfds=2), "", "declared 2 descriptors"),
    (encode_frame({"op": "status", "id": 8, "key": ""}), "", "status.key"),
    (encode_frame({"op": "release", "id": 9, "key": "a.1", "streams": "in"}), "", "release.streams"),
    (HEADER.pack(MAX_REQUEST + 1, 0) + b"\0" * (MAX_REQUEST + 1), "", "exceeds"),
]


class TestBadRequests:
    @pytest.mark.parametrize(("frame", "fds", "message"), BAD_REQUESTS, ids=[m for _, _, m in BAD_REQUESTS])
    async def test_malformed_request_gets_an_error_and_the_keeper_serves_on(
        self, sock, clients, tmp_path, frame, fds, message
    ):
        """Each malformed request gets an error naming what is wrong; descriptors it carried are closed."""
        client = await connect(clients, sock)
        client.close()
        raw = RawAgent(sock)
        read_end, write_end = os.pipe()
        path = tmp_path / "plain"
        path.write_bytes(b"")
        plain = os.open(path, os.O_RDONLY)
        chosen = {"r": [read_end], "w": [write_end], "f": [plain]}.get(fds, [])
        try:
            raw.send(frame, chosen)
            answer = raw.reply()
            assert answer["error"]["code"] == "invalid_request"
            assert message in answer["error"]["message"]
            raw.send(encode_frame({"op": "status", "id": 99}))
            assert raw.reply()["ok"] is True
            if fds == "r":
                os.close(read_end)
                read_end = -1
                with pytest.raises(BrokenPipeError):
                    os.write(write_end, b"x")
        finally:
            for fd in (read_end, write_end, plain):
                if fd >= 0:
                    os.close(fd)
            raw.sock.close()
        assert not pid_dead(client.keeper_pid)
