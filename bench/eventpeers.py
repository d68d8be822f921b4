"""The processes ``events.py`` forks: publishers ("hosts"), subscribers and a bare relay.

``events.py`` starts each of these as a ``multiprocessing`` process from a fork server that
imported this module (and with it pyzmq, msgpack, uvloop, the gaffer client and controller)
once, so a hundred subscribers start in a second instead of a hundred interpreter starts.
Every process is told what to do over a ``Pipe`` (hosts) or by its arguments (subscribers),
reports on a ``Queue`` and is bounded in time; ``events.py`` kills any that outstays by pid.

- **gaffer host**: a real ``Controller`` (TCP on loopback, insecure) on uvloop; on ``go`` it
  publishes COUNT events through ``controller.hub.publish``, as fast as one loop can, yielding
  to the loop every ``CHUNK`` events (as any producer on the controller's loop does).
- **bare host**: a pyzmq PUB with the hub's high-water mark, sending the same topics and a
  frame of the same size (encoded once) in a tight blocking loop: the transport's floor.
- **subscribers**: gaffer's through ``Client.events(prefixes)`` (the real client, blocking);
  bare ones a SUB socket with the client's high-water mark, two plain ``recv`` calls (topic,
  body) and ``msgpack.unpackb`` of the body (the least a reader does to see an event;
  ``recv_multipart`` with zero-copy frames, used here before, costs twice that and made gaffer
  look closer to bare than it is). Each counts the
  data events of one run and the monotonic time of the last; or, in latency mode, records
  ``time.time() - ts`` of each event.
- **relay**: the bare two-hop path an agent event takes (DEALER -> ROUTER, then PUB -> SUB),
  republishing what its ROUTER receives.

Topics: data events are ``bench.f<k>.e`` over ``families`` families; a subscriber to a narrow
prefix takes ``bench.f3.`` (one family). ``bench.f3.warm`` (before the data: a subscriber says
it is ready on the first it sees) and ``bench.f3.end`` (after) match every subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import uvloop
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gaffer.client import Client, ReceivedEvent  # noqa: E402
from gaffer.common import protocol  # noqa: E402
from gaffer.common.sockets import DEFAULT_HWM  # noqa: E402
from gaffer.controller.controller import Controller  # noqa: E402
from gaffer.controller.hub import PUB_HWM  # noqa: E402
from gaffer.controller.settings import ControllerSettings  # noqa: E402

NARROW = "bench.f3."
WARM = NARROW + "warm"
END = NARROW + "end"
DATA_SUFFIX = ".e"
CHUNK = 1_000
WARM_EVERY = 0.02
END_EVERY = 0.05
HOST_LIFETIME = 900.0
"""No host lives longer than this, whatever it is told (a bench that died leaves nothing)."""


def topics(families: int) -> list[str]:
    return [f"bench.f{k}.e" for k in range(families)]


def payload(size: int) -> dict[str, Any]:
    """The data of every benchmark event: a proc event's fields, padded to about ``size``
    bytes encoded."""
    data: dict[str, Any] = {"id": "bench.1", "template": "bench", "node": "bench", "pid": 424242}
    pad = size - len(msgpack.packb(data)) - 6
    if pad > 0:
        data["text"] = "x" * pad
    return data


def frame(topic: str, data: dict[str, Any], seq: int = 1 << 40) -> bytes:
    """A published ``event`` envelope as the hub sends it (packed here directly, so the bare
    side does no more than it must)."""
    body = {"seq": seq, "topic": topic, "ts": time.time(), "data": data}
    return msgpack.packb([protocol.PROTOCOL_VERSION, "event", seq, body], use_bin_type=True)


# --------------------------------------------------------------------- hosts


def gaffer_host(conn: Connection, bind: str, pub: str, data_dir: str) -> None:
    uvloop.run(_gaffer_host(conn, bind, pub, data_dir))


async def _gaffer_host(conn: Connection, bind: str, pub: str, data_dir: str) -> None:
    logging.getLogger("gaffer").setLevel(logging.ERROR)  # the --insecure warning, once per run
    settings = ControllerSettings(bind=bind, pub=pub, data_dir=Path(data_dir), insecure=True)
    controller = Controller(settings)
    await controller.start()
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv() if conn.poll() else ("quit",)))
    conn.send(("ready", controller.endpoint, controller.pub_endpoint))
    repeat: asyncio.Task | None = None

    async def every(topic: str, period: float) -> None:
        while True:
            controller.hub.publish(topic, {})
            await asyncio.sleep(period)

    try:
        async with asyncio.timeout(HOST_LIFETIME):
            while True:
                command = await commands.get()
                if repeat is not None:
                    repeat.cancel()
                    await asyncio.gather(repeat, return_exceptions=True)
                    repeat = None
                if command[0] == "warm":
                    repeat = loop.create_task(every(WARM, WARM_EVERY))
                elif command[0] == "go":
                    _, count, families, size = command
                    names, data, publish = topics(families), payload(size), controller.hub.publish
                    started = time.monotonic()
                    for i in range(count):
                        publish(names[i % families], data)
                        if i % CHUNK == CHUNK - 1:
                            await asyncio.sleep(0)
                    conn.send(("sent", started, time.monotonic()))
                    repeat = loop.create_task(every(END, END_EVERY))
                elif command[0] == "quit":
                    return
    except (TimeoutError, EOFError):
        pass
    finally:
        loop.remove_reader(conn.fileno())
        if repeat is not None:
            repeat.cancel()
        await controller.stop()


def bare_host(conn: Connection, pub: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, PUB_HWM)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(pub)
    conn.send(("ready", "", pub))
    repeat: tuple[bytes, float] | None = None
    empty = frame(WARM, {})
    deadline = time.monotonic() + HOST_LIFETIME
    try:
        while time.monotonic() < deadline:
            if not conn.poll(repeat[1] if repeat else 1.0):
                if repeat is not None:
                    sock.send_multipart([repeat[0], empty])
                continue
            command = conn.recv()
            repeat = None
            if command[0] == "warm":
                repeat = (WARM.encode(), WARM_EVERY)
            elif command[0] == "go":
                _, count, families, size = command
                names = [t.encode() for t in topics(families)]
                prepared = frame(topics(families)[0], payload(size))
                send = sock.send_multipart
                started = time.monotonic()
                for i in range(count):
                    send([names[i % families], prepared])
                conn.send(("sent", started, time.monotonic()))
                repeat = (END.encode(), END_EVERY)
            elif command[0] == "quit":
                return
    except EOFError:
        pass
    finally:
        sock.close(0)
        ctx.term()


def relay(conn: Connection, bind: str, pub: str) -> None:
    """Bare two hops: what a ROUTER receives goes out on a PUB, untouched (topic ``bench.lat``)."""
    ctx = zmq.Context()
    router, out = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
    for sock in (router, out):
        sock.setsockopt(zmq.LINGER, 0)
    router.bind(bind)
    out.bind(pub)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(conn.fileno(), zmq.POLLIN)
    conn.send(("ready", bind, pub))
    deadline = time.monotonic() + HOST_LIFETIME
    try:
        while time.monotonic() < deadline:
            ready = dict(poller.poll(1000))
            if router in ready:
                frames = router.recv_multipart()
                out.send_multipart([b"bench.lat", frames[-1]])
            if conn.fileno() in ready:
                return
    finally:
        router.close(0)
        out.close(0)
        ctx.term()


# --------------------------------------------------------------------- subscribers


def subscriber(spec: dict[str, Any], reports: Any, stop: Any) -> None:
    """One subscriber; puts ``("ready", index)`` then ``("done", index, result)`` on
    ``reports``. ``spec``: kind (gaffer|bare), endpoint (control endpoint for gaffer, the PUB for
    bare), prefix, expect, pace (seconds between reads; 0: flat out), seconds (bound), and
    ``latency`` (samples wanted; then ``time.time() - ts`` of every event is recorded)."""
    index = spec["index"]
    deadline = time.monotonic() + spec["seconds"]
    client: Client | None = None
    if spec["kind"] == "gaffer":
        client = Client(spec["endpoint"], timeout=10.0)
        events = client.events([spec["prefix"]])
        # markers (a lost range, a snapshot) are not events of the run: skipped
        stream = ((ev.topic, ev.ts) for ev in events if isinstance(ev, ReceivedEvent))
    else:
        events = stream = _bare_stream(spec["endpoint"], spec["prefix"])
    try:
        if spec.get("latency"):
            result = _latencies(stream, spec["latency"], deadline, index, reports)
        else:
            result = _count(stream, spec, deadline, index, reports, stop)
        reports.put(("done", index, result))
    finally:
        stream.close()
        events.close()
        if client is not None:
            client.close()


def _count(stream: Any, spec: dict[str, Any], deadline: float, index: int, reports: Any, stop: Any) -> dict[str, Any]:
    expect, pace = spec["expect"], spec["pace"]
    ready, count, first, last, read = False, 0, 0.0, 0.0, 0
    for topic, _ts in stream:
        read += 1
        if topic.endswith(DATA_SUFFIX):
            last = time.monotonic()
            if not count:
                first = last
            count += 1
            if count >= expect:
                break
        elif topic == WARM:
            if not ready:
                reports.put(("ready", index))
                ready = True
        elif topic == END and ready:
            break
        if pace:
            time.sleep(pace)  # the slow reader: 1/pace events a second, on purpose
            if stop.is_set():
                break
        if time.monotonic() > deadline:
            break
    return {"count": count, "first": first, "last": last, "read": read}


def _latencies(stream: Any, samples: int, deadline: float, index: int, reports: Any) -> dict[str, Any]:
    values: list[float] = []
    reports.put(("ready", index))
    for _topic, ts in stream:
        values.append((time.time() - ts) * 1000)
        if len(values) >= samples or time.monotonic() > deadline:
            break
    return {"ms": values}


def _bare_stream(endpoint: str, prefix: str) -> Any:
    """(topic, ts) of each message on a plain SUB: receive and unpack, nothing else."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    sock.connect(endpoint)
    unpack = msgpack.unpackb
    try:
        while True:
            topic = sock.recv()
            message = unpack(sock.recv())
            body = message[-1] if isinstance(message, list) else message
            yield topic.decode(), body["ts"] if isinstance(body, dict) else 0.0
    finally:
        sock.close(0)
        ctx.term()
