"""Shared by the process-tracking tests: remove a test node's cgroups once its processes are dead."""

from __future__ import annotations

import os
import time

from gaffer.agent.cgroups import MOUNTINFO, PREFIX, SELF_CGROUP, find_mount, own_cgroup


def node_cgroup_dir(node: str) -> str | None:
    """Where agents of ``node`` started from this process keep their cgroups (or None)."""
    try:
        with open(MOUNTINFO) as f:
            mount = find_mount(f.read())
        with open(SELF_CGROUP) as f:
            own = own_cgroup(f.read())
    except OSError:
        return None
    if mount is None or own is None:
        return None
    point, root = mount
    rel = own[len(root.rstrip("/")):] if root != "/" else own
    return f"{point.rstrip('/')}{rel.rstrip('/')}/{PREFIX}{node}"


def remove_node_cgroups(node: str, timeout: float = 5.0) -> None:
    """Kill what is left in the node's cgroups, then remove them bottom-up (bounded)."""
    top = node_cgroup_dir(node)
    if top is None or not os.path.isdir(top):
        return
    deadline = time.monotonic() + timeout
    while os.path.isdir(top) and time.monotonic() < deadline:
        for path, dirs, _ in os.walk(top, topdown=False):
            if not dirs and os.path.exists(os.path.join(path, "cgroup.kill")) and path != top:
                try:
                    with open(os.path.join(path, "cgroup.kill"), "w") as kill:
                        kill.write("1")
                except OSError:
                    pass
            try:
                os.rmdir(path)
            except OSError:
                pass
        if os.path.isdir(top):
            time.sleep(0.02)  # poll: killed processes are leaving their cgroups (deadline above)
