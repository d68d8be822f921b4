"""``GET /metrics`` scraped for real (issue 11): a controller with an agent running instances,
its HTTP API on loopback, Debian's ``prometheus`` scraping it with a viewer token from a
credentials file, and ``promtool check metrics`` reading the exposition.

Prometheus runs as a child process of the test, on a free loopback port, with a temporary
config and storage dir; it is stopped by its pid at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gaffer.common.roles import Role
from gaffer.testing import free_port
from httpapi import LOOPBACK, Http
from inproc import Cluster, spec

SCRAPE_DEADLINE = 60.0
"""Seconds for Prometheus to start, scrape (every second) and answer the query."""
NEEDS_PROMETHEUS = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="Debian's prometheus package is not installed (apt-get install prometheus; .ci/run installs it)",
)
NEEDS_PROMTOOL = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool (Debian's prometheus package) is not installed (apt-get install prometheus; .ci/run installs it)",
)


@pytest.fixture
async def running(cluster: Cluster) -> AsyncIterator[Http]:
    """A controller with HTTP on loopback and one agent running two instances of ``web``,
    pushing its stats every 0.2 s."""
    controller = await cluster.start_controller(http=LOOPBACK)
    await cluster.start_agent("n1", stats_interval=0.2)
    await cluster.call("apply", templates=[spec("web", 2)])
    await cluster.wait_running(2, "web")
    client = Http(controller)
    try:
        yield client
    finally:
        await client.close()


def labels(ident: str) -> tuple[tuple[str, str], ...]:
    """The labels of one instance of ``web`` on ``n1``, as ``samples_of`` keys them."""
    return (("id", ident), ("node", "n1"), ("template", "web"))


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


async def test_metrics_need_a_viewer_token_and_show_the_cluster(running: Http):
    """/metrics refuses a request without a token, and shows a viewer the running instances."""
    refused = await running.request("GET", "/metrics")
    assert refused.status == 401
    answer = await running.request("GET", "/metrics", running.token(Role.VIEWER))
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = samples_of(answer.text)
    assert samples[("gaffer_template_instances_running", (("template", "web"),))] == 2
    assert samples[("gaffer_nodes", (("state", "up"),))] == 1
    assert samples[("gaffer_link_messages_received_total", (("kind", "hello"),))] >= 1


async def test_instances_show_the_memory_their_agent_pushed(running: Http):
    """Each running instance gets a resident memory series (and CPU) from the stats its agent
    pushed, labelled with its id, template and node; the template's sum covers both."""
    token = running.token(Role.VIEWER)
    deadline = time.monotonic() + SCRAPE_DEADLINE
    while True:
        samples = samples_of((await running.request("GET", "/metrics", token)).text)
        memory = [samples.get(("gaffer_instance_resident_memory_bytes", labels(i))) for i in ("web.1", "web.2")]
        if all(memory):
            break
        assert time.monotonic() < deadline, f"no memory samples for web.1 and web.2: {memory}"
        await asyncio.sleep(0.1)  # poll: the agent pushes every 0.2 s
    assert ("gaffer_instance_cpu_usage_ratio", labels("web.1")) in samples
    assert samples[("gaffer_template_resident_memory_bytes", (("template", "web"),))] >= sum(memory)


@NEEDS_PROMTOOL
async def test_promtool_finds_nothing_to_complain_about(running: Http):
    """`promtool check metrics` reads the exposition and reports no problem at all."""
    answer = await running.request("GET", "/metrics", running.token(Role.VIEWER))
    assert answer.status == 200
    check = await asyncio.create_subprocess_exec(
        "promtool", "check", "metrics",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(check.communicate(answer.text.encode()), 30)
    assert (check.returncode, out.decode()) == (0, "")


class Prometheus:
    """A Prometheus server of the test's own: config, storage and log under ``home``."""

    def __init__(self, home: Path, target: str, token: str) -> None:
        self.home = home
        self.port = free_port()
        credentials = home / "token"
        credentials.write_text(token)
        credentials.chmod(0o600)
        (home / "prometheus.yml").write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: gaffer\n"
            "    scrape_timeout: 1s\n"
            "    metrics_path: /metrics\n"
            "    authorization:\n"
            f"      credentials_file: {credentials}\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with open(self.home / "prometheus.log", "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                "prometheus",
                f"--config.file={self.home / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )

    async def stop(self) -> None:
        """TERM by pid, KILL if it has not ended within 10 s."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()

    def log(self) -> str:
        return (self.home / "prometheus.log").read_text(errors="replace")[-4000:]

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict]:
        """The result vector of an instant query (empty until Prometheus has the series)."""
        try:
            async with session.get(f"{self.url}/api/v1/query", params={"query": expr}) as response:
                if response.status != 200:
                    return []
                body = await response.json()
        except aiohttp.ClientError:
            return []  # not listening yet
        return body["data"]["result"] if body.get("status") == "success" else []


@NEEDS_PROMETHEUS
async def test_prometheus_scrapes_the_controller_and_answers_a_query(running: Http, tmp_path: Path):
    """A real Prometheus scrapes /metrics with a viewer token from a file, and its query API
    answers the running count of the template."""
    home = tmp_path / "prometheus"
    home.mkdir()
    target = running.url.removeprefix("http://").rstrip("/")
    prometheus = Prometheus(home, target, running.token(Role.VIEWER, "prometheus"))
    await prometheus.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            expr = 'gaffer_template_instances_running{job="gaffer",template="web"}'
            deadline = time.monotonic() + SCRAPE_DEADLINE
            result: list[dict] = []
            while not result:
                assert prometheus.proc is not None and prometheus.proc.returncode is None, prometheus.log()
                assert time.monotonic() < deadline, f"no {expr} from Prometheus:\n{prometheus.log()}"
                await asyncio.sleep(0.2)  # poll: Prometheus scrapes every second
                result = await prometheus.query(session, expr)
            assert float(result[0]["value"][1]) == 2
            up = await prometheus.query(session, 'up{job="gaffer"}')
            assert [float(series["value"][1]) for series in up] == [1]
    finally:
        await prometheus.stop()
