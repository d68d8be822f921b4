"""A controller's election alone, in its own process, for tests that kill -9 a leader:
``python etcd_campaigner.py ENDPOINTS NAME TTL MARGIN`` prints ``leading TERM`` and
``not leading`` as its leadership changes, and runs until killed."""

from __future__ import annotations

import asyncio
import sys

from gaffer.controller.etcd.client import EtcdClient
from gaffer.controller.etcd.election import Policy
from gaffer.controller.etcd.leadership import Leadership


def say(change) -> None:
    print(f"leading {change.term}" if change.leading else "not leading", flush=True)


async def main(endpoints: str, name: str, ttl: int, margin: float) -> None:
    async with EtcdClient(endpoints, timeout=1.0) as client:
        leadership = Leadership(client, name, policy=Policy(ttl=ttl, margin=margin, retry=0.1, recheck=0.3),
                                on_change=say)
        await leadership.start()
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
