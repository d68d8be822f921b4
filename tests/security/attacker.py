"""Run as root, drop to an unprivileged user, then try to use gaffer's local endpoints.

Usage: attacker.py UID GID GROUPS JSON (GROUPS: comma-separated supplementary gids, or "-").
JSON is a list of attacks ``[kind, target]``; one JSON line
is printed per attack: ``{"attack": [...], "outcome": "denied" | "succeeded" | "error",
"detail": ...}``. Everything the attacks need is imported *before* the privileges are dropped:
after that this process cannot read the interpreter's own library (it lives under /root), so
an import failing late must not pass for a refusal; any unexpected exception is reported as
``error``, which the test treats as a failure, never as ``denied``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
import encodings.idna  # noqa: F401  (urllib encodes host names with it, imported while readable)
import urllib.error
import urllib.request

import zmq  # noqa: F401  (imported while readable)

from gaffer.client import Client
from gaffer.common.errors import ConfigError, ControllerUnreachable

PROBE_TEMPLATE = {"name": "pwned", "cmd": "true", "numprocesses": 0}


def connect_unix(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(path)
    return "connected"


def read_file(path: str) -> str:
    with open(path, "rb") as handle:
        return f"read {len(handle.read(64))} bytes"


def list_dir(path: str) -> str:
    return f"listed {len(os.listdir(path))} entries"


def apply(endpoint: str) -> str:
    client = Client(endpoint, timeout=1.0)
    try:
        return f"applied: {client.call('apply', templates=[PROBE_TEMPLATE])}"
    finally:
        client.close()


class Refused(Exception):
    """The HTTP API said no (401 or 403)."""


def http_apply(url: str) -> str:
    """POST a template to the HTTP API with no token, then with a guessed one."""
    body = json.dumps(PROBE_TEMPLATE).encode()
    for token in (None, "gaffer_" + "A" * 43):
        request = urllib.request.Request(url + "/v1/apply", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return f"applied: HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            if exc.code not in (401, 403):
                return f"answered HTTP {exc.code}"
    raise Refused("401 without a token and with a guessed one")


ATTACKS = {
    "connect_unix": connect_unix, "read_file": read_file, "list_dir": list_dir, "apply": apply,
    "http_apply": http_apply,
}
DENIED = (PermissionError, ControllerUnreachable, ConnectionRefusedError, Refused)


def run(attack: list[str]) -> dict:
    kind, target = attack
    try:
        detail = ATTACKS[kind](target)
    except DENIED as exc:
        return {"attack": attack, "outcome": "denied", "detail": f"{type(exc).__name__}: {exc}"}
    except ConfigError as exc:
        outcome = "denied" if "permission denied" in exc.message else "error"
        return {"attack": attack, "outcome": outcome, "detail": exc.message}
    except Exception:
        return {"attack": attack, "outcome": "error", "detail": traceback.format_exc()}
    return {"attack": attack, "outcome": "succeeded", "detail": detail}


def main() -> None:
    uid, gid, attacks = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[4])
    groups = [int(g) for g in sys.argv[3].split(",")] if sys.argv[3] != "-" else []
    if uid != os.getuid():
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        assert os.getuid() == uid and os.geteuid() == uid and sorted(os.getgroups()) == sorted(groups)
    for attack in attacks:
        print(json.dumps(run(attack)), flush=True)


if __name__ == "__main__":
    main()
