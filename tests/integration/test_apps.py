"""Apps against a real Manager, real processes and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

import pytest
from aiohttp import web

from gaffer.agent.apps import AppRunner, AppSpec, load_app, parse_apps
from gaffer.agent.apps.webhooks import SUBSCRIPTION_SIZE, WebhooksApp
from gaffer.agent.manager import Manager
from gaffer.common.errors import ConfigError, NotFound
from gaffer.testing import poll_until, template

DEADLINE = 10.0


async def eventually(predicate: Callable[[], bool]) -> None:
    await poll_until(predicate, DEADLINE)


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class HookServer:
    """A real aiohttp server that records every webhook and answers as each path asks.

    ``/ok`` answers 200; ``/status/<code>`` always answers ``code``; ``/flaky/<n>`` answers 500
    to its first ``n`` requests, then 200; ``/gate`` answers 200 once ``gate`` is set.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.gate = asyncio.Event()
        self._counts: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"

    async def close(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return self.base + path

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(Received(request.path, body, dict(request.headers)))
        parts = request.path.strip("/").split("/")
        count = self._counts[request.path] = self._counts.get(request.path, 0) + 1
        if parts[0] == "status":
            return web.Response(status=int(parts[1]))
        if parts[0] == "flaky" and count <= int(parts[1]):
            return web.Response(status=500)
        if parts[0] == "gate":
            await self.gate.wait()
        return web.Response(status=200)


@pytest.fixture
async def server():
    srv = HookServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def blackhole():
    """A TCP server that accepts connections and never answers: an endpoint that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    srv = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook", held
    finally:
        for writer in held:
            writer.close()
        srv.close()
        await srv.wait_closed()


@pytest.fixture
async def manager():
    mgr = Manager(node="t")
    try:
        yield mgr
    finally:
        await mgr.shutdown()


@pytest.fixture
async def runner(manager):
    apps = AppRunner(asyncio.get_running_loop(), manager, call_timeout=2.0)
    try:
        yield apps
    finally:
        await apps.stop()


def webhooks(name: str = "webhooks", **options: Any) -> AppSpec:
    return parse_apps([{"use": "webhooks", "name": name, **options}])[0]


def app_stats(runner: AppRunner, name: str = "webhooks") -> dict[str, Any]:
    return next(s for s in runner.status() if s["name"] == name)["stats"]


def hook_stats(runner: AppRunner, index: int = 0, name: str = "webhooks") -> dict[str, Any]:
    return app_stats(runner, name)["hooks"][index]


# ------------------------------------------------------------------ apps used by the runner tests


class Recorder:
    """A well-behaved app with plain (non-async) methods that records its calls."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.calls: list[str] = []

    def start(self, loop, manager) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")


class BrokenStart:
    async def start(self, loop, manager) -> None:
        raise RuntimeError("boom in start")

    async def stop(self) -> None:
        pass


class BrokenStop:
    async def start(self, loop, manager) -> None:
        pass

    async def stop(self) -> None:
        raise RuntimeError("boom in stop")


class HangingStart:
    async def start(self, loop, manager) -> None:
        await asyncio.get_running_loop().create_future()

    async def stop(self) -> None:
        pass


class StubbornStart:
    """Ignores cancellation until the test releases it: the runner must not wait for it."""

    release: asyncio.Event | None = None
    finished: asyncio.Event | None = None

    async def start(self, loop, manager) -> None:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue
        self.finished.set()

    async def stop(self) -> None:
        pass


class ShrugsOnce:
    """Ignores the first cancellation (the runner gives up on it), ends at the second."""

    cancellations = 0

    async def start(self, loop, manager) -> None:
        while True:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                ShrugsOnce.cancellations += 1
                if ShrugsOnce.cancellations > 1:
                    raise

    async def stop(self) -> None:
        pass


class FailsOnce:
    """Fails its first start, then starts; has no restart() of its own."""

    def __init__(self) -> None:
        self.starts = 0
        self.stops = 0

    async def start(self, loop, manager) -> None:
        self.starts += 1
        if self.starts == 1:
            raise RuntimeError("first start fails")

    async def stop(self) -> None:
        self.stops += 1


class Picky:
    def __init__(self, size: int) -> None:
        if not isinstance(size, int):
            raise TypeError("size must be an integer")

    def start(self, loop, manager) -> None:
        pass

    def stop(self) -> None:
        pass


class NotAnApp:
    def start(self, loop, manager) -> None:
        pass


def spec_for(cls: type, name: str | None = None, **options: Any) -> AppSpec:
    data: dict[str, Any] = {"use": f"{__name__}:{cls.__name__}", **options}
    if name is not None:
        data["name"] = name
    return parse_apps([data])[0]


# ------------------------------------------------------------------ webhooks


class TestWebhooksDelivery:
    async def test_hook_receives_spawn_event_with_pid(self, server, manager, runner):
        """A proc.<t>.spawn event is POSTed as JSON with the spawned pid and the hook's headers."""
        await runner.start([webhooks(hooks=[{
            "url": server.url("/ok"), "events": ["proc."], "headers": {"X-Token": "s3cret"},
        }])])
        manager.add(template("web"))
        await eventually(lambda: any(r.body["topic"] == "proc.web.spawn" for r in server.received))
        hit = next(r for r in server.received if r.body["topic"] == "proc.web.spawn")
        assert set(hit.body) == {"topic", "seq", "ts", "data"}
        assert hit.body["data"]["pid"] == manager.instances("web")[0]["pid"]
        assert hit.body["data"]["id"] == "web.1"
        assert hit.headers["X-Token"] == "s3cret"
        assert hit.headers["Content-Type"] == "application/json"

    async def test_server_error_is_retried_until_it_succeeds(self, server, manager, runner):
        """Two 500 answers, then 200: three attempts of the same event, counted once as sent."""
        await runner.start([webhooks(
            hooks=[{"url": server.url("/flaky/2"), "events": ["proc.web.spawn"]}], backoff=0.01,
        )])
        manager.add(template("web"))
        await eventually(lambda: hook_stats(runner)["sent"] == 1)
        seqs = [r.body["seq"] for r in server.at("/flaky/2")]
        assert len(seqs) == 3 and len(set(seqs)) == 1
        assert hook_stats(runner)["failed"] == 0
        assert hook_stats(runner)["retried"] == 2

    async def test_client_error_is_not_retried(self, server, manager, runner):
        """A 4xx answer is final: one attempt, counted as failed."""
        await runner.start([webhooks(
            hooks=[{"url": server.url("/status/422"), "events": ["proc.web.spawn"]}],
            backoff=0.01,
        )])
        manager.add(template("web"))
        await eventually(lambda: hook_stats(runner)["failed"] == 1)
        assert len(server.at("/status/422")) == 1
        assert hook_stats(runner)["sent"] == 0

    async def test_persistent_server_error_stops_after_retries_plus_one(
        self, server, manager, runner
    ):
        """A hook that keeps answering 503 is tried retries+1 times, then the event is failed."""
        await runner.start([webhooks(
            hooks=[{"url": server.url("/status/503"), "events": ["proc.web.spawn"]}],
            retries=2, backoff=0.01,
        )])
        manager.add(template("web"))
        await eventually(lambda: hook_stats(runner)["failed"] == 1)
        assert len(server.at("/status/503")) == 3

    async def test_hanging_hook_does_not_block_the_manager(self, blackhole, manager, runner):
        """While a hook's endpoint never answers, the Manager still spawns and restarts."""
        url, held = blackhole
        await runner.start([webhooks(
            hooks=[{"url": url}], retries=1000, timeout=0.2, backoff=0.01,
        )])
        manager.add(template("web"))
        await manager.wait_until(lambda: manager.instances("web")[0]["state"] == "running", 5)
        first = manager.instances("web")[0]["pid"]
        await eventually(lambda: len(held) >= 1)
        manager.kill("web.1", "KILL")
        await manager.wait_until(
            lambda: manager.instances("web")[0]["pid"] not in (None, first), DEADLINE
        )
        manager.add(template("api"))
        await manager.wait_until(lambda: manager.instances("api")[0]["pid"] is not None, DEADLINE)
        stats = hook_stats(runner)
        assert stats["sent"] == 0 and stats["failed"] == 0

    async def test_full_queue_drops_the_oldest_events(self, server, manager, runner):
        """With one event in flight and queue_size=2, five more keep only the newest two."""
        await runner.start([webhooks(
            hooks=[{"url": server.url("/gate"), "events": ["test."]}], queue_size=2,
        )])
        first = manager.bus.publish("test.q", {"n": 0})
        await eventually(lambda: len(server.at("/gate")) == 1)
        later = [manager.bus.publish("test.q", {"n": n}) for n in range(1, 6)]
        await eventually(lambda: hook_stats(runner)["dropped"] == 3)
        server.gate.set()
        await eventually(lambda: hook_stats(runner)["sent"] == 3)
        assert [r.body["seq"] for r in server.at("/gate")] == [
            first.seq, later[-2].seq, later[-1].seq
        ]

    async def test_output_is_sent_only_to_hooks_that_ask_for_it(self, server, manager, runner):
        """The default selection skips output.*; a hook with an output prefix receives it."""
        await runner.start([webhooks(hooks=[
            {"url": server.url("/default")},
            {"url": server.url("/output"), "events": ["output."]},
        ])])
        manager.bus.publish("output.web.1.out", {"line": "hello"})
        manager.bus.publish("proc.web.spawn", {"pid": 1})
        await eventually(lambda: len(server.at("/default")) == 1 and len(server.at("/output")) == 1)
        assert server.at("/default")[0].body["topic"] == "proc.web.spawn"
        assert server.at("/output")[0].body["topic"] == "output.web.1.out"

    async def test_default_selection_does_not_make_the_manager_produce_output(
        self, server, manager, runner
    ):
        """A hook with the default events does not subscribe to output, so none is built."""
        await runner.start([webhooks(hooks=[{"url": server.url("/ok")}])])
        assert manager.bus.subscribers == 1
        assert not manager.bus.wants("output.web.1.out")
        assert manager.bus.wants("proc.web.spawn")

    async def test_falling_behind_the_bus_resubscribes_and_counts_the_gap(
        self, server, manager, runner
    ):
        """A burst past the subscription's bound cuts the app off; it resubscribes and goes on."""
        await runner.start([webhooks(
            hooks=[{"url": server.url("/ok"), "events": ["test."]}], queue_size=5,
        )])
        for n in range(SUBSCRIPTION_SIZE + 1):
            manager.bus.publish("test.burst", {"n": n})
        await eventually(lambda: app_stats(runner)["gaps"] == 1)
        after = manager.bus.publish("test.after", {})
        await eventually(lambda: any(r.body["seq"] == after.seq for r in server.received))

    async def test_stop_releases_the_bus_and_sends_nothing_more(self, server, manager, runner):
        """After stop the subscription is gone and later events are not delivered."""
        await runner.start([webhooks(hooks=[{"url": server.url("/ok"), "events": ["test."]}])])
        manager.bus.publish("test.one", {})
        await eventually(lambda: hook_stats(runner)["sent"] == 1)
        await runner.stop()
        assert manager.bus.subscribers == 0
        manager.bus.publish("test.two", {})
        assert runner.status()[0]["state"] == "stopped"
        assert [r.body["topic"] for r in server.received] == ["test.one"]

    async def test_restart_keeps_delivering(self, server, manager, runner):
        """After a restart through the runner the app is subscribed again and delivers."""
        await runner.start([webhooks(hooks=[{"url": server.url("/ok"), "events": ["test."]}])])
        status = await runner.restart("webhooks")
        assert status["state"] == "running"
        assert manager.bus.subscribers == 1
        manager.bus.publish("test.after-restart", {})
        await eventually(lambda: hook_stats(runner)["sent"] == 1)


# ------------------------------------------------------------------ isolation in the runner


class TestRunnerIsolation:
    async def test_app_raising_in_start_is_marked_failed_and_others_run(
        self, server, manager, runner, caplog
    ):
        """An app whose start raises is logged by name and failed; the next app still delivers."""
        caplog.set_level(logging.ERROR, logger="gaffer.apps")
        await runner.start([
            spec_for(BrokenStart, name="broken"),
            webhooks(hooks=[{"url": server.url("/ok"), "events": ["proc.web.spawn"]}]),
        ])
        states = {s["name"]: (s["state"], s["error"]) for s in runner.status()}
        assert states["broken"] == ("failed", "start: RuntimeError: boom in start")
        assert states["webhooks"] == ("running", None)
        assert any("app broken" in r.getMessage() for r in caplog.records)
        manager.add(template("web"))
        await eventually(lambda: hook_stats(runner)["sent"] == 1)

    async def test_app_raising_in_stop_does_not_stop_the_others_stopping(self, manager, runner):
        """stop() raising marks that app failed; the other app is still stopped."""
        recorder_spec = spec_for(Recorder, name="recorder")
        await runner.start([recorder_spec, spec_for(BrokenStop, name="broken")])
        await runner.stop()
        states = {s["name"]: (s["state"], s["error"]) for s in runner.status()}
        assert states["broken"] == ("failed", "stop: RuntimeError: boom in stop")
        assert states["recorder"] == ("stopped", None)

    async def test_plain_methods_are_called_like_coroutines(self, manager):
        """An app with non-async start/stop is started and stopped through the runner."""
        apps = AppRunner(asyncio.get_running_loop(), manager)
        await apps.start([spec_for(Recorder, name="recorder", label="x")])
        await apps.stop()
        app = apps._slots["recorder"].app
        assert app.calls == ["start", "stop"] and app.label == "x"

    async def test_hung_start_is_cancelled_after_the_timeout(self, manager):
        """A start that never returns is abandoned after call_timeout and marked failed."""
        apps = AppRunner(asyncio.get_running_loop(), manager, call_timeout=0.1)
        await apps.start([spec_for(HangingStart, name="hung")])
        assert apps.status()[0]["state"] == "failed"
        assert apps.status()[0]["error"] == "start: timed out after 0.1s"

    async def test_start_ignoring_cancellation_is_abandoned(self, manager):
        """A start that swallows cancellation does not hold up the runner."""
        StubbornStart.release, StubbornStart.finished = asyncio.Event(), asyncio.Event()
        apps = AppRunner(asyncio.get_running_loop(), manager, call_timeout=0.1)
        await apps.start([spec_for(StubbornStart, name="stubborn")])
        assert apps.status()[0]["state"] == "failed"
        assert not StubbornStart.finished.is_set()
        StubbornStart.release.set()
        await asyncio.wait_for(StubbornStart.finished.wait(), DEADLINE)

    async def test_stop_ends_the_calls_it_abandoned(self, manager):
        """A call abandoned after its timeout is still owned: stop cancels it again and waits."""
        ShrugsOnce.cancellations = 0
        apps = AppRunner(asyncio.get_running_loop(), manager, call_timeout=0.1)
        await apps.start([spec_for(ShrugsOnce, name="shrugs")])
        assert apps.status()[0]["state"] == "failed"
        await poll_until(lambda: ShrugsOnce.cancellations == 1, what="the first cancellation")
        before = asyncio.all_tasks()
        await apps.stop()
        assert ShrugsOnce.cancellations == 2
        assert len(asyncio.all_tasks()) == len(before) - 1, "the abandoned start still runs"

    async def test_restart_brings_a_failed_app_back(self, manager, runner):
        """restart(name) on an app that failed to start stops it and starts it again."""
        await runner.start([spec_for(FailsOnce, name="once")])
        assert runner.status()[0]["state"] == "failed"
        status = await runner.restart("once")
        assert (status["state"], status["error"]) == ("running", None)
        app = runner._slots["once"].app
        assert (app.starts, app.stops) == (2, 1)

    async def test_restart_of_an_unknown_app_is_not_found(self, runner):
        """Restarting a name that was never configured raises NotFound naming it."""
        with pytest.raises(NotFound, match="no app named 'ghost'"):
            await runner.restart("ghost")

    async def test_bad_config_starts_nothing(self, manager, runner):
        """If any app fails to load, none is started and the error lists each problem."""
        specs = parse_apps([
            {"use": f"{__name__}:Recorder", "name": "good"},
            {"use": "nope"},
            {"use": "webhooks", "hooks": []},
        ], source="gaffer.toml")
        with pytest.raises(ConfigError) as err:
            await runner.start(specs)
        assert str(err.value).startswith("2 problems:")
        assert "gaffer.toml: apps[1].use: no installed app named 'nope'" in str(err.value)
        assert "gaffer.toml: apps[2] (webhooks): hooks: must be a non-empty list" in str(err.value)
        assert runner.status() == []

    async def test_same_name_twice_is_refused(self, manager, runner):
        """Starting an app under a name that already runs is a ConfigError."""
        await runner.start([spec_for(Recorder, name="rec")])
        with pytest.raises(ConfigError, match="an app named 'rec' already runs"):
            await runner.start([spec_for(Recorder, name="rec")])


# ------------------------------------------------------------------ loading and its errors


class TestLoading:
    def test_entry_point_name_loads_webhooks(self):
        """use = "webhooks" resolves through the gaffer.apps entry-point group."""
        app = load_app(webhooks(hooks=[{"url": "http://127.0.0.1:9/"}]))
        assert isinstance(app, WebhooksApp)

    def test_module_class_loads_webhooks(self):
        """use = "module:Class" imports the class directly."""
        spec = parse_apps([{
            "use": "gaffer.agent.apps.webhooks:WebhooksApp",
            "hooks": [{"url": "https://example.invalid/hook"}],
            "retries": 0,
        }])[0]
        assert spec.name == "WebhooksApp"
        app = load_app(spec)
        assert isinstance(app, WebhooksApp) and app.retries == 0

    def test_options_reach_the_constructor_as_keywords(self):
        """Every key but use and name is a constructor option."""
        spec = parse_apps([{"use": "webhooks", "name": "alerts", "queue_size": 7,
                            "hooks": [{"url": "http://127.0.0.1:9/"}]}])[0]
        assert (spec.name, spec.use) == ("alerts", "webhooks")
        assert load_app(spec).queue_size == 7

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            pytest.param({"name": "x"}, "cfg: apps[0].use: missing", id="missing-use"),
            pytest.param({"use": 3}, "cfg: apps[0].use: must be a non-empty string, got number 3",
                         id="use-not-a-string"),
            pytest.param({"use": "pkg:"}, "cfg: apps[0].use: 'pkg:' is not of the form",
                         id="malformed-module-class"),
            pytest.param({"use": "webhooks", "name": "a b"}, "cfg: apps[0].name: must be",
                         id="bad-name"),
        ],
    )
    def test_bad_spec_shape_names_entry_and_field(self, data, message):
        """parse_apps rejects a malformed entry, naming the file, the entry and the field."""
        with pytest.raises(ConfigError) as err:
            parse_apps([data], source="cfg")
        assert str(err.value).startswith(message)

    def test_apps_must_be_a_list(self):
        """An apps section that is a single table says it must be a list ([[apps]])."""
        with pytest.raises(ConfigError, match=r"apps: must be a list of tables \(\[\[apps\]\]\)"):
            parse_apps({"use": "webhooks"})

    def test_duplicate_names_are_refused(self):
        """Two entries defaulting to the same name must be told apart."""
        expected = r"apps\[1\].name: 'webhooks' is already used by apps\[0\]"
        with pytest.raises(ConfigError, match=expected):
            parse_apps([{"use": "webhooks"}, {"use": "webhooks"}])

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            pytest.param(
                {"use": "webhook"},
                "apps[0].use: no installed app named 'webhook' (did you mean 'webhooks'?); "
                "installed (gaffer.apps entry points): webhooks",
                id="unknown-entry-point",
            ),
            pytest.param(
                {"use": "no_such_module_for_gaffer:App"},
                "apps[0].use: cannot import module 'no_such_module_for_gaffer': "
                "ModuleNotFoundError",
                id="import-failure",
            ),
            pytest.param(
                {"use": "gaffer.agent.apps.webhooks:Missing"},
                "apps[0].use: module 'gaffer.agent.apps.webhooks' has no attribute 'Missing'",
                id="missing-class",
            ),
            pytest.param(
                {"use": "webhooks", "hooks": [{"url": "http://h/"}], "retrys": 1},
                "apps[0].retrys: unknown option (did you mean 'retries'? accepted: hooks, "
                "retries, timeout, backoff, queue_size)",
                id="unknown-option",
            ),
            pytest.param(
                {"use": "webhooks"}, "apps[0].hooks: missing required option", id="missing-option"
            ),
            pytest.param(
                {"use": "webhooks", "hooks": [{"url": "http://h/"}, {"url": "ftp://h/"}]},
                "apps[0] (webhooks): hooks[1].url: must be an http:// or https:// URL",
                id="bad-hook-url",
            ),
            pytest.param(
                {"use": "webhooks", "hooks": [{"url": "http://h/", "event": ["proc."]}]},
                "apps[0] (webhooks): hooks[0].event: unknown field",
                id="unknown-hook-field",
            ),
            pytest.param(
                {"use": "webhooks", "hooks": [{"url": "http://h/"}], "timeout": 0},
                "apps[0] (webhooks): timeout: must be > 0",
                id="bad-timeout",
            ),
            pytest.param(
                {"use": f"{__name__}:NotAnApp"},
                f"apps[0].use: {__name__}:NotAnApp is not an app: it has no stop()",
                id="not-an-app",
            ),
        ],
    )
    def test_bad_app_names_entry_and_field(self, data, message):
        """load_app turns each kind of bad entry into one clear ConfigError."""
        spec = parse_apps([data])[0]
        with pytest.raises(ConfigError) as err:
            load_app(spec)
        assert str(err.value).startswith(message)

    def test_constructor_type_error_is_reported_as_rejected_options(self):
        """A constructor that rejects an option's value with TypeError is reported, not raised."""
        spec = parse_apps([{"use": f"{__name__}:Picky", "size": "big"}])[0]
        with pytest.raises(ConfigError) as err:
            load_app(spec)
        assert str(err.value) == (
            f"apps[0] (Picky): options rejected by {__name__}:Picky: size must be an integer"
        )
