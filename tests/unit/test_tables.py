"""gafferctl's pure formatting: every table and text, with empty inputs, missing values and wide cells."""

from __future__ import annotations

import pytest

from gaffer.cli import tables

ROW = {
    "name": "s", "version": 3, "paused": False, "rolling": False, "numprocesses": 2**63 - 1,
    "placed": 3, "running": 3, "ready": 3, "pending": None, "created_at": 0.0, "updated_at": 0.0,
    "limited": {"wanted": 2**63 - 1, "placing": 3, "reason": "over the limit of 3 per template (--max-per-template)"},
    "spec": {"cmd": "sleep", "args": ["300"], "placement": {}},
}


def test_templates_and_get_show_a_limited_template() -> None:
    """`templates` says what is placed next to the count; `get` says why."""
    assert "9223372036854775807 (limited to 3)" in tables.templates_table([ROW])
    assert "limited     placing 3 of 9223372036854775807: over the limit of 3 per template" in tables.template_text(ROW)
    plain = {**ROW, "numprocesses": 3, "limited": None}
    assert "limited" not in tables.templates_table([plain]) + tables.template_text(plain)


def _columns(text: str) -> list[list[str]]:
    """Each line cut where the header's columns start (after two spaces; cells may hold one)."""
    lines = text.splitlines()
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 2 : i] == "  ")]
    return [[line[a:b].strip() for a, b in zip(starts, [*starts[1:], None])] for line in lines]


class TestTable:
    COLUMNS = [("name", lambda r: r["name"]), ("count", lambda r: r.get("count"))]

    def test_no_rows_is_the_empty_text(self) -> None:
        """No rows: the `empty` text alone, no header."""
        assert tables.table([], self.COLUMNS) == "(none)"
        assert tables.table([], self.COLUMNS, empty="nothing here") == "nothing here"

    def test_columns_are_as_wide_as_their_widest_cell(self) -> None:
        """A wide value widens its column for every row; the header is upper case; no trailing spaces."""
        wide = "w" * 300
        text = tables.table([{"name": "a", "count": 1}, {"name": wide, "count": 22}], self.COLUMNS)
        lines = text.splitlines()
        assert lines[0].split() == ["NAME", "COUNT"]
        assert [line.index(cell) for line, cell in zip(lines, ["COUNT", "1", "22"])] == [302] * 3
        assert all(line == line.rstrip() for line in lines)
        assert _columns(text) == [["NAME", "COUNT"], ["a", "1"], [wide, "22"]]

    def test_none_values_show_as_a_dash(self) -> None:
        """A missing value is `-`, in the last column too (never an empty or trailing cell)."""
        assert _columns(tables.table([{"name": "a"}], self.COLUMNS)) == [["NAME", "COUNT"], ["a", "-"]]

    @pytest.mark.parametrize(("value", "shown"), [
        (None, "-"), (True, "yes"), (False, "no"), (0, "0"), (2.25, "2.2"), (3.0, "3.0"), ("", ""),
        ({}, "-"), ({"zone": "b", "disk": "ssd"}, "disk=ssd,zone=b"), ([], "-"), (("a", 1), "a,1"),
        ("text with spaces", "text with spaces"),
    ])
    def test_cells(self, value, shown) -> None:
        """Each kind of value as one cell: bools yes/no, floats to one place, dicts sorted, empty as -."""
        assert tables.cell(value) == shown


class TestAgeAndSize:
    @pytest.mark.parametrize(("seconds", "shown"), [
        (None, "-"), (0, "0.0s"), (3.25, "3.2s"), (59.94, "59.9s"), (60, "1m00s"), (250.9, "4m10s"),
        (3599, "59m59s"), (3600, "1h00m"), (7500, "2h05m"), (86399, "23h59m"), (86400, "1d00h"),
        (273600, "3d04h"), (10**9, "11574d01h"),
    ])
    def test_age(self, seconds, shown) -> None:
        """Seconds below a minute, then minutes, hours and days with two-digit remainders."""
        assert tables.age(seconds) == shown

    @pytest.mark.parametrize(("value", "shown"), [
        (None, "-"), (0, "0B"), (1023, "1023B"), (1024, "1.0KiB"), (1536, "1.5KiB"),
        (1024**2, "1.0MiB"), (5 * 1024**3, "5.0GiB"), (3 * 1024**4, "3072.0GiB"),
    ])
    def test_size(self, value, shown) -> None:
        """Bytes in B, KiB, MiB or GiB (the largest unit is GiB)."""
        assert tables.size(value) == shown


NODE = {
    "name": "n1", "state": "up", "cordoned": False, "address": "10.0.0.1", "labels": {"zone": "a"},
    "instances": 3, "tracking": "cgroup", "keeper": "running", "last_heartbeat": 1.5,
}


class TestNodesTable:
    def test_a_node_row(self) -> None:
        """Every column of a node: state, address, labels, instances, tracking, keeper, heartbeat age."""
        assert _columns(tables.nodes_table([NODE])) == [
            ["NAME", "STATE", "ADDRESS", "LABELS", "INSTANCES", "TRACKING", "KEEPER", "HEARTBEAT"],
            ["n1", "up", "10.0.0.1", "zone=a", "3", "cgroup", "running", "1.5s ago"],
        ]

    def test_a_node_that_said_little(self) -> None:
        """A cordoned node with no address, labels, tracking, keeper or heartbeat shows dashes."""
        bare = {"name": "n2", "state": "down", "cordoned": True, "labels": {}, "instances": None,
                "address": None, "tracking": None, "keeper": None, "last_heartbeat": None}
        assert _columns(tables.nodes_table([bare]))[1] == ["n2", "down,cordoned", "-", "-", "-", "-", "-", "-"]

    def test_no_nodes(self) -> None:
        """No nodes: one sentence saying so."""
        assert tables.nodes_table([]) == "no nodes have registered"


STATUS = {
    "controller": "ctl-1", "version": "0.1.0", "uptime": 125.0, "endpoint": "ipc:///run/gaffer/control.sock",
    "events": "ipc:///run/gaffer/events.sock", "secure": False, "nodes": {"up": 2, "down": 1},
    "link": {"received": 10, "sent": 12, "bad_messages": {"total": 1}, "replays": 0},
}


class TestStatusText:
    def test_the_least_a_controller_reports(self) -> None:
        """Identity, endpoints, local security, node counts and message counters; nothing optional."""
        assert tables.status_text(STATUS).splitlines() == [
            "controller  ctl-1 (gaffer 0.1.0), up 2m05s",
            "endpoint    ipc:///run/gaffer/control.sock   events ipc:///run/gaffer/events.sock",
            "security    local unix sockets only (no keys): access limited by file permissions",
            "nodes       2 up, 1 down",
            "messages    10 received, 12 sent, 1 dropped as bad, 0 replays",
        ]

    def test_empty_counters(self) -> None:
        """No nodes and no link counters yet: zeros, never a KeyError."""
        text = tables.status_text({**STATUS, "nodes": {}, "link": {}})
        assert "nodes       \n" in text + "\n"
        assert "messages    0 received, 0 sent, 0 dropped as bad, 0 replays" in text

    def test_curve_and_the_insecure_warning(self) -> None:
        """With keys: CURVE and the fingerprint; TCP without keys: the warning, upper case."""
        assert "security    CURVE, key sha256:ab" in tables.status_text({**STATUS, "secure": True, "fingerprint": "sha256:ab"})
        warned = tables.status_text({**STATUS, "warning": "TCP without keys (--insecure)"})
        assert "security    WARNING: TCP without keys (--insecure)" in warned

    def test_optional_lines(self) -> None:
        """Auth counters, tracking and keeper per host, dropped agent events, counts of templates and instances."""
        status = {
            **STATUS, "auth": {"accepted": 4, "rejected": 2},
            "hosts": {"tracking": {"subreaper": 1, "cgroup": 2}, "keeper": {}},
            "agent_events_dropped": {"reasons": {"unowned": 3, "bad_topic": 1}},
            "templates": 5, "instances": {"running": 7},
        }
        lines = tables.status_text(status).splitlines()[5:]
        assert lines == [
            "auth        4 accepted, 2 refused",
            "processes   tracked by cgroup on 2, subreaper on 1; fd keeper -",
            "agent events dropped  1 bad_topic, 3 unowned",
            "templates   5",
            "instances   running=7",
        ]

    def test_the_stats_cache_line(self) -> None:
        """samples: instances with a pushed sample, from how many nodes, pushes, the oldest's age."""
        status = {**STATUS, "samples": {"instances": 200, "nodes": 3, "pushes": 41, "oldest_age": 4.25}}
        assert tables.status_text(status).splitlines()[-1] == "samples     200 instances from 3 nodes, 41 pushes, oldest 4.2s ago"
        empty = {**STATUS, "samples": {"instances": 0, "nodes": 0, "pushes": 0, "oldest_age": None}}
        assert tables.status_text(empty).splitlines()[-1] == "samples     0 instances from 0 nodes, 0 pushes, oldest -"

    @pytest.mark.parametrize(("storage", "shown"), [
        ({"damaged": True, "problem": "index corrupt"}, "DAMAGED: index corrupt"),
        ({"failing": ["disk_full", "io_error"]}, "FAILING (disk_full, io_error): writes are refused until it recovers"),
        ({"backups": {}}, "ok, no scheduled backups"),
        ({"backups": {"every": 3600.0, "dir": "/b", "last": None}}, "ok, backup every 3600s to /b (last: none yet)"),
        ({"backups": {"every": 60.5, "dir": "/b", "last": "x.db", "failing": ["disk_full"]}},
         "ok, backup every 60.5s to /b (last: x.db), FAILING: disk_full"),
    ])
    def test_storage(self, storage, shown) -> None:
        """The store's health in one line: damaged, failing, or ok with its backups."""
        assert f"storage     {shown}" in tables.status_text({**STATUS, "storage": storage}).splitlines()


class TestTemplates:
    def test_states_and_counts(self) -> None:
        """State is stopped, rolling or active; pending shows its count and reason."""
        rows = [
            {**ROW, "name": "a", "numprocesses": 2, "limited": None},
            {**ROW, "name": "b", "numprocesses": 1, "limited": None, "paused": True, "running": 0},
            {**ROW, "name": "c", "numprocesses": 4, "limited": None, "rolling": True,
             "pending": {"count": 1, "reason": "no eligible node"}},
            {**ROW, "name": "d", "numprocesses": 3, "limited": None, "rolling": True, "rollout_stuck": True,
             "ready": 1},
        ]
        assert _columns(tables.templates_table(rows)) == [
            ["NAME", "STATE", "VERSION", "WANTED", "RUNNING", "READY", "PENDING"],
            ["a", "active", "3", "2", "3", "3", "0"],
            ["b", "stopped", "3", "1", "0", "3", "0"],
            ["c", "rolling", "3", "4", "3", "3", "1 (no eligible node)"],
            ["d", "rollout stuck", "3", "3", "3", "1", "0"],
        ]

    def test_no_templates(self) -> None:
        """No templates: one line saying so."""
        assert tables.templates_table([]) == "no templates"

    def test_get_shows_everything_that_applies(self) -> None:
        """`get`: name, version, paused, command, counts, pending, rolling, and the placement in use."""
        row = {
            **ROW, "numprocesses": 4, "limited": None, "paused": True, "rolling": True,
            "pending": {"count": 2, "reason": "no eligible node"},
            "spec": {"cmd": "python", "args": ["app.py", "--port", "80"],
                     "placement": {"max_per_node": 1, "nodes": [], "labels": {"zone": "a"}}},
        }
        assert tables.template_text(row).splitlines() == [
            "name        s (version 3, stopped)",
            "command     python app.py --port 80",
            "instances   3 running (3 ready) of 4 wanted, 3 placed",
            "pending     2: no eligible node",
            "update      rolling",
            "placement   labels={'zone': 'a'},max_per_node=1",
        ]

    def test_get_of_a_plain_template(self) -> None:
        """A template with no args and no placement: no trailing space, no placement line."""
        row = {**ROW, "numprocesses": 1, "limited": None, "spec": {"cmd": "true", "args": [], "placement": None}}
        assert tables.template_text(row).splitlines() == [
            "name        s (version 3)",
            "command     true",
            "instances   3 running (3 ready) of 1 wanted, 3 placed",
        ]


PS = {"id": "web.1", "template": "web", "ordinal": 1, "node": "n1", "state": "running", "pid": 4242,
      "restarts": 2, "cpu": 12.345, "mem": 3 * 1024**2, "uptime": 3700.0, "stale": False, "ready": True}


class TestPsAndStats:
    def test_ps_rows(self) -> None:
        """ps: cpu in percent, memory in binary units, uptime as an age; a stale row says so."""
        stopped = {**PS, "id": "web.2", "state": "stopped", "pid": None, "cpu": None, "mem": None,
                   "uptime": None, "stale": True, "ready": False}
        assert _columns(tables.ps_table([PS, stopped])) == [
            ["ID", "NODE", "STATE", "READY", "PID", "RESTARTS", "CPU", "MEM", "UPTIME"],
            ["web.1", "n1", "running", "yes", "4242", "2", "12.3%", "3.0MiB", "1h01m"],
            ["web.2 (stale)", "n1", "stopped", "no", "-", "2", "-", "-", "-"],
        ]

    def test_ps_says_how_old_each_sample_is(self) -> None:
        """ps: a ``sampled`` column gives each row's sample age; a row without one shows '-'."""
        pending = {**PS, "id": "web.2", "pid": None, "cpu": None, "mem": None, "uptime": None, "age": None}
        assert _columns(tables.ps_table([{**PS, "age": 4.25}, pending])) == [
            ["ID", "NODE", "STATE", "READY", "PID", "RESTARTS", "CPU", "MEM", "UPTIME", "SAMPLED"],
            ["web.1", "n1", "running", "yes", "4242", "2", "12.3%", "3.0MiB", "1h01m", "4.2s ago"],
            ["web.2", "n1", "running", "yes", "-", "2", "-", "-", "-", "-"],
        ]

    def test_ps_with_nothing(self) -> None:
        """No instances: one line saying so."""
        assert tables.ps_table([]) == "no instances"

    def test_stats_adds_children_to_their_instance(self) -> None:
        """stats: a template line, then its instances by id with their children's cpu and memory added."""
        stats = {"web": {"cpu": 30.0, "mem": 4096, "instances": [
            {"id": "web.2", "pid": 12, "cpu": 5.0, "mem": 1024, "children": []},
            {"id": "web.1", "pid": 11, "cpu": 10.0, "mem": 1024,
             "children": [{"cpu": 15.0, "mem": 2048}, {"cpu": 0.0, "mem": 0}]},
        ]}}
        assert _columns(tables.stats_table(stats)) == [
            ["TEMPLATE / INSTANCE", "PID", "CPU", "MEM", "CHILDREN"],
            ["web", "-", "30.0%", "4.0KiB", "-"],
            ["web.1", "11", "25.0%", "3.0KiB", "2"],
            ["web.2", "12", "5.0%", "1.0KiB", "0"],
        ]
        assert tables.stats_table(stats).splitlines()[2].startswith("  web.1")

    def test_stats_with_nothing(self) -> None:
        """No running instances: one line saying so."""
        assert tables.stats_table({}) == "no running instances"


class TestApplyText:
    def test_one_line_per_template(self) -> None:
        """A plain apply: each template's change and version."""
        results = [{"name": "a", "change": "created", "version": 1}, {"name": "b", "change": "unchanged", "version": 4}]
        assert tables.apply_text(results) == "a: created (version 1)\nb: unchanged (version 4)"
        assert tables.apply_text([]) == ""

    def test_a_large_apply_is_summed_up(self) -> None:
        """A large apply: the changed ones listed, how many more, and the counts per change."""
        results = {"results": [{"name": "a", "change": "updated", "version": 2}], "more": 99_999,
                   "counts": {"unchanged": 100_000, "updated": 100_000}}
        assert tables.apply_text(results).splitlines() == [
            "a: updated (version 2)", "... and 99999 more changed", "applied: 100000 unchanged, 100000 updated",
        ]
        assert tables.apply_text({"results": [], "more": 0, "counts": {}}) == "applied: "
