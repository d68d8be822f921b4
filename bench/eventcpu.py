"""CPU per event of the event fan-out, publisher and subscriber apart: steadier than rates.

Wall-clock rates on a shared machine swing with whatever else runs; the CPU time a process
spends per event does not. One publisher process (gaffer: a real ``Controller`` publishing
through ``hub.publish``, as in ``events.py``; bare: a pyzmq PUB in a tight loop) sends
``--events`` events of the usual 100-byte payload to one subscriber in this process (gaffer:
``Client.events([prefix])``; bare: two ``recv`` calls and ``msgpack.unpackb``), and each side's
CPU time (``process_time`` here, ``psutil`` cpu_times for the publisher, all its threads, ZMQ's
I/O thread included) is divided by the events it handled.

    .venv/bin/python bench/eventcpu.py [--events 200000] [--rounds 3] [--narrow]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import eventpeers  # noqa: E402
from events import CTX, FAMILIES, WORK, Host  # noqa: E402
from gaffer.client import Client, ReceivedEvent  # noqa: E402

DEADLINE = 120.0


def _stream(who: str, endpoint: str, prefix: str) -> tuple[object, object, Client | None]:
    if who == "gaffer":
        client = Client(endpoint, timeout=10.0)
        events = client.events([prefix])
        return events, ((ev.topic, ev.ts) for ev in events if isinstance(ev, ReceivedEvent)), client
    stream = eventpeers._bare_stream(endpoint, prefix)
    return stream, stream, None


def one(who: str, events: int, narrow: bool, work: Path) -> tuple[float, float, int]:
    """(subscriber us/event, publisher us/event of the stream, events received)."""
    host = Host(who, work)
    expect = len(range(3, events, FAMILIES)) if narrow else events
    raw, stream, client = _stream(who, host.endpoint if who == "gaffer" else host.pub,
                                  eventpeers.NARROW if narrow else "")
    publisher = psutil.Process(host.proc.pid)
    try:
        host.send("warm")
        deadline = time.monotonic() + DEADLINE
        for topic, _ts in stream:  # type: ignore[attr-defined]
            if topic == eventpeers.WARM or time.monotonic() > deadline:
                break
        pub_before = sum(publisher.cpu_times()[:4])
        host.send("go", events, FAMILIES, 100)
        count, started = 0, 0.0
        for topic, _ts in stream:  # type: ignore[attr-defined]
            if topic.endswith(eventpeers.DATA_SUFFIX):
                if not count:
                    started = time.process_time()
                count += 1
                if count >= expect:
                    break
            elif topic == eventpeers.END or time.monotonic() > deadline:
                break
        sub_cpu = time.process_time() - started
        pub_cpu = sum(publisher.cpu_times()[:4]) - pub_before
        return sub_cpu / max(count, 1) * 1e6, pub_cpu / events * 1e6, count
    finally:
        stream.close()  # type: ignore[attr-defined]
        raw.close()  # type: ignore[attr-defined]
        if client is not None:
            client.close()
        host.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--narrow", action="store_true", help="subscribe to one family of ten")
    parser.add_argument("--who", default="bare,gaffer")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    CTX.set_forkserver_preload(["eventpeers"])
    with tempfile.TemporaryDirectory(prefix="cpu-", dir=WORK) as tmp:
        for who in args.who.split(","):
            for _ in range(args.rounds):
                sub, pub, count = one(who, args.events, args.narrow, Path(tmp))
                print(f"{who:<6} {'narrow' if args.narrow else 'all':<6} subscriber {sub:6.2f} us/event "
                      f"(received {count:,}), publisher {pub:6.2f} us/event", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
