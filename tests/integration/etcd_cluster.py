"""Real etcd members (Debian's ``etcd-server``) for tests: started on 127.0.0.1 with free ports
and a temp data dir each, killed by pid at the end.

Raft runs fast here (heartbeat 50 ms, election timeout 500 ms) so that a lease of 1 s is
allowed (etcd's least TTL is 1.5 election timeouts, rounded up) and a lost member is noticed
within half a second.

Without the ``etcd`` binary the tests fail saying what to install; with ``GAFFER_SKIP_ETCD=1``
in the environment they are skipped instead, for the same reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from gaffer.common.errors import StoreUnavailable
from gaffer.controller.etcd.client import EtcdClient
from gaffer.testing import free_port

MISSING = "etcd is not installed: apt-get install etcd-server (.ci/run installs it)"


def require_etcd() -> str:
    path = shutil.which("etcd")
    if path is None:
        if os.environ.get("GAFFER_SKIP_ETCD"):
            pytest.skip(MISSING)
        pytest.fail(MISSING)
    return path


class Member:
    def __init__(self, name: str, home: Path, client_port: int, peer_port: int) -> None:
        self.name = name
        self.home = home
        self.endpoint = f"http://127.0.0.1:{client_port}"
        self.peer = f"http://127.0.0.1:{peer_port}"
        self.proc: subprocess.Popen | None = None

    def start(self, binary: str, cluster: str) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "etcd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "--name", self.name, "--data-dir", str(self.home / "data"),
                 "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
                 "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
                 "--initial-cluster", cluster, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"gaffer-test-{os.getpid()}",
                 "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def signal(self, signum: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        path = self.home / "etcd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class EtcdCluster:
    """``size`` members forming one cluster; ``endpoints`` their client URLs."""

    def __init__(self, home: Path, size: int = 1) -> None:
        self.binary = require_etcd()
        self.members = []
        for index in range(size):
            port = free_port()
            self.members.append(Member(f"m{index}", home / f"m{index}", port, port + 1))
        self.endpoints = [m.endpoint for m in self.members]

    async def start(self, timeout: float = 10.0) -> None:
        cluster = ",".join(f"{m.name}={m.peer}" for m in self.members)
        for member in self.members:
            member.start(self.binary, cluster)
        async with EtcdClient(self.endpoints, timeout=1.0) as client:
            deadline = asyncio.get_running_loop().time() + timeout
            for member in self.members:
                while True:
                    assert member.proc.poll() is None, f"etcd {member.name} exited:\n{member.log()}"
                    try:
                        if (await client.status(member.endpoint, timeout=0.5)).leader:
                            break
                    except StoreUnavailable:
                        pass
                    assert asyncio.get_running_loop().time() < deadline, \
                        f"etcd {member.name} has no leader after {timeout}s:\n{member.log()}"
                    await asyncio.sleep(0.05)  # poll: the member is starting

    def stop(self) -> None:
        for member in self.members:
            member.kill()
