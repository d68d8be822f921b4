"""Pure formatting of command results for people: tables, ages, sizes. No printing here."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], empty: str = "(none)") -> str:
    """Left-aligned columns with an upper-case header; ``empty`` when there are no rows."""
    if not rows:
        return empty
    header = [name.upper() for name, _ in columns]
    body = [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(line, widths)).rstrip() for line in [header, *body]]
    return "\n".join(lines)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def age(seconds: float | None) -> str:
    """``3.2s``, ``4m10s``, ``2h05m``, ``3d04h``: how long ago or how long up."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def size(value: int | None) -> str:
    """Bytes in the largest binary unit that keeps the number >= 1."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f}{unit}" if unit == "B" else f"{amount:.1f}{unit}"
        amount /= 1024
    return f"{amount:.1f}TiB"


def nodes_table(nodes: Sequence[dict[str, Any]]) -> str:
    return table(nodes, [
        ("name", lambda n: n["name"]),
        ("state", lambda n: n["state"] + (",cordoned" if n.get("cordoned") else "")),
        ("address", lambda n: n.get("address")),
        ("labels", lambda n: n.get("labels")),
        ("instances", lambda n: n.get("instances")),
        ("tracking", lambda n: n.get("tracking") or "-"),
        ("keeper", lambda n: n.get("keeper") or "-"),
        ("heartbeat", lambda n: age(n.get("last_heartbeat")) + " ago" if n.get("last_heartbeat") is not None else "-"),
    ], empty="no nodes have registered")


def status_text(status: dict[str, Any]) -> str:
    nodes = status.get("nodes", {})
    link = status.get("link", {})
    bad = link.get("bad_messages", {})
    auth = status.get("auth") or {}
    lines = [
        f"controller  {status['controller']} (gaffer {status['version']}), up {age(status['uptime'])}",
        f"endpoint    {status['endpoint']}   events {status['events']}",
        "security    " + _security(status),
        "nodes       " + ", ".join(f"{count} {state}" for state, count in nodes.items()),
        f"messages    {link.get('received', 0)} received, {link.get('sent', 0)} sent, "
        f"{bad.get('total', 0)} dropped as bad, {link.get('replays', 0)} replays",
    ]
    if auth:
        reasons = auth.get("reasons") or {}
        why = " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())) + ")" if reasons else ""
        lines.append(f"auth        {auth.get('accepted', 0)} accepted, {auth.get('rejected', 0)} refused{why}")
    hosts = status.get("hosts") or {}
    if hosts.get("tracking") or hosts.get("keeper"):
        lines.append(
            "processes   tracked by " + _counts(hosts.get("tracking", {}))
            + "; fd keeper " + _counts(hosts.get("keeper", {}))
        )
    dropped = (status.get("agent_events_dropped") or {}).get("reasons") or {}
    if dropped:
        lines.append("agent events dropped  " + ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())))
    storage = status.get("storage")
    if storage:
        lines.append("storage     " + _storage(storage))
    for key in ("templates", "instances"):
        if key in status:
            lines.append(f"{key:<12}{cell(status[key])}")
    if status.get("samples"):
        lines.append("samples     " + _samples(status["samples"]))
    return "\n".join(lines)


def _samples(samples: dict[str, Any]) -> str:
    """The stats cache: what ``ps`` answers cpu and memory from."""
    oldest = samples.get("oldest_age")
    return (f"{samples.get('instances', 0)} instances from {samples.get('nodes', 0)} nodes, "
            f"{samples.get('pushes', 0)} pushes, oldest " + ("-" if oldest is None else f"{age(oldest)} ago"))


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} on {n}" for state, n in sorted(counts.items())) or "-"


def _storage(storage: dict[str, Any]) -> str:
    if storage.get("damaged"):
        return f"DAMAGED: {storage.get('problem')}"
    if storage.get("failing"):
        return f"FAILING ({', '.join(storage['failing'])}): writes are refused until it recovers"
    backups = storage.get("backups") or {}
    if not backups.get("every"):
        return "ok, no scheduled backups"
    last = backups.get("last") or "none yet"
    failing = f", FAILING: {', '.join(backups['failing'])}" if backups.get("failing") else ""
    return f"ok, backup every {backups['every']:g}s to {backups['dir']} (last: {last}){failing}"


def _security(status: dict[str, Any]) -> str:
    if status["secure"]:
        return f"CURVE, key {status['fingerprint']}"
    if status.get("warning"):
        return f"WARNING: {status['warning']}"
    return "local unix sockets only (no keys): access limited by file permissions"


def templates_table(rows: Sequence[dict[str, Any]]) -> str:
    def state(row: dict[str, Any]) -> str:
        if row["paused"]:
            return "stopped"
        if row.get("rollout_stuck"):
            return "rollout stuck"
        if row.get("rolling"):
            return "rolling"
        return "active"

    return table(rows, [
        ("name", lambda r: r["name"]),
        ("state", state),
        ("version", lambda r: r["version"]),
        ("wanted", lambda r: r["numprocesses"] if not r.get("limited") else f"{r['numprocesses']} (limited to {r['limited']['placing']})"),
        ("running", lambda r: r["running"]),
        ("ready", lambda r: r.get("ready")),
        ("pending", lambda r: (f"{r['pending']['count']} ({r['pending']['reason']})" if r.get("pending") else 0)),
    ], empty="no templates")


def template_text(row: dict[str, Any]) -> str:
    spec = row["spec"]
    lines = [
        f"name        {row['name']} (version {row['version']}{', stopped' if row['paused'] else ''})",
        f"command     {spec['cmd']} {' '.join(spec['args'])}".rstrip(),
        f"instances   {row['running']} running ({row.get('ready', '?')} ready) of {row['numprocesses']} wanted,"
        f" {row['placed']} placed",
    ]
    if spec.get("port") is not None:
        last = spec["port"] + max(row["numprocesses"], 1) - 1
        lines.append(f"port        {spec['port']}..{last} (PORT of instance n: {spec['port']} + n - 1)")
    if row.get("pending"):
        lines.append(f"pending     {row['pending']['count']}: {row['pending']['reason']}")
    if row.get("limited"):
        limited = row["limited"]
        lines.append(f"limited     placing {limited['placing']} of {limited['wanted']}: {limited['reason']}")
    if row.get("rollout_stuck"):
        lines.append("update      rollout stuck: no new instance became ready within update.progress_deadline")
    elif row.get("rolling"):
        lines.append("update      rolling")
    placement = spec.get("placement") or {}
    if any(placement.get(k) for k in ("max_per_node", "nodes", "labels")):
        lines.append(f"placement   {cell({k: v for k, v in placement.items() if v})}")
    return "\n".join(lines)


def ps_table(rows: Sequence[dict[str, Any]]) -> str:
    """Instances; a ``port`` column only when some instance has a PORT (older controllers
    send no ``port`` at all), a ``ready`` one when the rows say (controllers since readiness). ``sampled``: how old the cpu and memory figures are (the
    agents push them every few seconds; ``ps --fresh`` asks for them now), when any is known."""
    ports = [("port", lambda r: r.get("port"))] if any(r.get("port") is not None for r in rows) else []
    ready = [("ready", lambda r: ("yes" if r["ready"] else "no") if "ready" in r else None)] \
        if any("ready" in r for r in rows) else []
    sampled = [("sampled", lambda r: f"{age(r['age'])} ago" if r.get("age") is not None else None)] \
        if any(r.get("age") is not None for r in rows) else []
    return table(rows, [
        ("id", lambda r: r["id"] + (" (stale)" if r.get("stale") else "")),
        ("node", lambda r: r["node"]),
        ("state", lambda r: r["state"]),
        *ready,
        ("pid", lambda r: r["pid"]),
        *ports,
        ("restarts", lambda r: r["restarts"]),
        ("cpu", lambda r: f"{r['cpu']:.1f}%" if r.get("cpu") is not None else None),
        ("mem", lambda r: size(r.get("mem")) if r.get("mem") is not None else None),
        ("uptime", lambda r: age(r.get("uptime")) if r.get("uptime") is not None else None),
        *sampled,
    ], empty="no instances")


def stats_table(stats: dict[str, Any]) -> str:
    rows = []
    for name in sorted(stats):
        summary = stats[name]
        rows.append({"id": name, "cpu": summary["cpu"], "mem": summary["mem"], "children": None, "pid": None})
        for item in sorted(summary["instances"], key=lambda i: i["id"]):
            rows.append({
                "id": "  " + item["id"], "pid": item["pid"],
                "cpu": item["cpu"] + sum(c["cpu"] for c in item.get("children", [])),
                "mem": item["mem"] + sum(c["mem"] for c in item.get("children", [])),
                "children": len(item.get("children", [])),
            })
    return table(rows, [
        ("template / instance", lambda r: r["id"]),
        ("pid", lambda r: r["pid"]),
        ("cpu", lambda r: f"{r['cpu']:.1f}%"),
        ("mem", lambda r: size(r["mem"])),
        ("children", lambda r: r["children"]),
    ], empty="no running instances")


def apply_text(results: Sequence[dict[str, Any]] | dict[str, Any]) -> str:
    """One line per template; for a very large apply, the counts and the changed ones."""
    if isinstance(results, dict):
        lines = [f"{r['name']}: {r['change']} (version {r['version']})" for r in results["results"]]
        if results["more"]:
            lines.append(f"... and {results['more']} more changed")
        counts = ", ".join(f"{n} {change}" for change, n in sorted(results["counts"].items()))
        return "\n".join([*lines, f"applied: {counts}"])
    return "\n".join(f"{r['name']}: {r['change']} (version {r['version']})" for r in results)


def drain_text(result: dict[str, Any], wait: float) -> str:
    """``drain``'s answer: done, or what is still there and why each template cannot move."""
    if result["done"]:
        return f"drained {result['node']}"
    lines = [f"{result['node']}: {result['remaining']} instances still there after {wait:g}s"]
    lines.extend(f"  {s['template']}: {s['message']}" for s in result.get("stuck") or ())
    return "\n".join(lines)


def tokens_table(rows: Sequence[dict[str, Any]], now: float) -> str:
    """``token list``: name, role, when created (UTC), how long since last used."""
    def last_used(row: dict[str, Any]) -> str:
        return "never" if row["last_used"] is None else f"{age(max(0.0, now - row['last_used']))} ago"

    return table(rows, [
        ("name", lambda r: r["name"]), ("role", lambda r: r["role"]),
        ("created", lambda r: time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(r["created"]))),
        ("last used", last_used),
    ])


def token_created_text(result: dict[str, Any]) -> str:
    """``token create``: the secret alone on its line (easy to copy), and that it is shown once."""
    return (
        f"created token {result['name']} ({result['role']}):\n{result['secret']}\n"
        "This secret is not shown again: store it now (send it as 'Authorization: Bearer <secret>')."
    )
