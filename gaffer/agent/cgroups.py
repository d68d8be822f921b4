"""Each instance in its own cgroup v2, as systemd keeps each service: every descendant tracked.

A process cannot leave its cgroup by forking, double-forking or ``setsid``; only a write to
``cgroup.procs`` moves it. So an instance's cgroup lists every process it ever started that is
still alive (``cgroup.procs``), and ``cgroup.kill`` (Linux 5.14) SIGKILLs all of them at once,
including any forking at that moment.

Layout, next to nothing else (the agent's own cgroup is left as it is)::

    <cgroup2 mount><the agent's cgroup>/gaffer-<node>/<agent id>/<template>.<ordinal>

The agent id level keeps two agents with one node name apart (``gaffer start`` in two
directories); instance cgroups live across respawns of their instance and are removed when it
is forgotten; ``cleanup`` removes the empty ones a dead agent left (at start). The cgroup2 mount
is found in ``/proc/self/mountinfo``: ``/sys/fs/cgroup`` on a unified host,
``/sys/fs/cgroup/unified`` on a hybrid one. Anything missing or not writable (no cgroup2, an
older kernel without ``cgroup.kill``, no permission, a read-only mount) makes ``probe`` return
None with the reason, and the agent tracks descendants without cgroups (``tracking``).

Moving a pid costs about 0.1 ms, so it is done right after ``Popen`` returns (Python 3.11 has
no ``clone3``/``CLONE_INTO_CGROUP``); children forked before the move stay in the instance's
process group, and the descendant scan covers anything that escaped even that.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable

log = logging.getLogger("gaffer.cgroups")

MOUNTINFO = "/proc/self/mountinfo"
SELF_CGROUP = "/proc/self/cgroup"
PREFIX = "gaffer-"
_OCTAL = re.compile(r"\\([0-7]{3})")


def find_mount(mountinfo: str) -> tuple[str, str] | None:
    """(mount point, root inside the hierarchy) of the first cgroup2 mount, or None.

    mountinfo lines: ``id parent major:minor root mountpoint options [optional...] - fstype
    source superoptions``; octal escapes (``\\040``) stand for spaces in paths."""
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if sep + 1 < len(fields) and fields[sep + 1] == "cgroup2" and len(fields) > 4:
            return _unescape(fields[4]), _unescape(fields[3])
    return None


def own_cgroup(self_cgroup: str) -> str | None:
    """This process's cgroup v2 path from ``/proc/self/cgroup`` (the ``0::`` line)."""
    for line in self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def _unescape(path: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), path)


@dataclass(frozen=True)
class Place:
    """Where an instance's cgroup is: ``fs`` on disk, ``name`` as ``/proc/<pid>/cgroup`` says."""

    fs: str
    name: str


class CgroupTree:
    """This agent's subtree of cgroups: one per instance. Build it with ``probe``."""

    def __init__(self, mount: str, mount_root: str, parent: str, node: str, agent_id: str) -> None:
        self.mount = mount
        self.mount_root = mount_root.rstrip("/")
        self.node_name = f"{parent.rstrip('/')}/{PREFIX}{node}"
        self.agent_id = agent_id
        self.name = f"{self.node_name}/{agent_id}"
        self.fs = self.to_fs(self.name)
        self.node_fs = self.to_fs(self.node_name)

    @classmethod
    def probe(cls, node: str, agent_id: str) -> tuple["CgroupTree | None", str]:
        """This agent's subtree, created if need be; or None and why cgroups are not usable."""
        try:
            with open(MOUNTINFO) as f:
                mount = find_mount(f.read())
            with open(SELF_CGROUP) as f:
                own = own_cgroup(f.read())
        except OSError as exc:
            return None, f"cannot read the cgroup setup: {exc.strerror}"
        if mount is None:
            return None, "no cgroup2 hierarchy is mounted"
        if own is None:
            return None, "this process is in no cgroup v2"
        point, root = mount
        if not (own + "/").startswith(root.rstrip("/") + "/"):
            return None, f"own cgroup {own} is outside the mounted hierarchy ({root})"
        tree = cls(point, root, own, node, agent_id)
        try:
            os.makedirs(tree.fs, exist_ok=True)
        except OSError as exc:
            return None, f"cannot create {tree.fs}: {exc.strerror}"
        if not os.path.exists(os.path.join(tree.fs, "cgroup.kill")):
            return None, "the kernel has no cgroup.kill (Linux 5.14 or later is needed)"
        own_procs = os.path.join(tree.to_fs(own), "cgroup.procs")
        if not os.access(own_procs, os.W_OK) or not os.access(os.path.join(tree.fs, "cgroup.procs"), os.W_OK):
            return None, f"no permission to move processes out of {tree.to_fs(own)}"
        return tree, ""

    def to_fs(self, name: str) -> str:
        rel = name[len(self.mount_root):] if self.mount_root else name
        return self.mount.rstrip("/") + rel

    def place(self, instance_id: str) -> Place:
        return Place(f"{self.fs}/{instance_id}", f"{self.name}/{instance_id}")

    def place_of(self, name: str) -> Place | None:
        """The Place of a cgroup named as ``/proc/<pid>/cgroup`` does, if it is an instance
        cgroup of this node (this agent's or one an earlier agent of the node made)."""
        if not name.startswith(self.node_name + "/") or name.count("/") != self.node_name.count("/") + 2:
            return None
        return Place(self.to_fs(name), name)

    def ensure(self, place: Place) -> None:
        """Create the instance cgroup (and parents that a cleanup removed meanwhile)."""
        try:
            os.mkdir(place.fs)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(place.fs, exist_ok=True)

    def move(self, place: Place, pid: int) -> None:
        """Put ``pid`` in ``place`` (OSError when it cannot be: the caller falls back)."""
        try:
            _write(place.fs + "/cgroup.procs", str(pid))
        except FileNotFoundError:
            self.ensure(place)
            _write(place.fs + "/cgroup.procs", str(pid))

    def kill(self, place: Place) -> bool:
        """SIGKILL every process in ``place``; False if there is no such cgroup."""
        try:
            _write(place.fs + "/cgroup.kill", "1")
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("cannot kill cgroup %s: %s", place.fs, exc.strerror)
            return False
        return True

    def signal(self, place: Place, sig: int) -> int:
        """Send ``sig`` to each process in ``place``; how many were signalled."""
        sent = 0
        for pid in procs(place.fs):
            try:
                os.kill(pid, sig)
                sent += 1
            except (ProcessLookupError, PermissionError):
                pass
        return sent

    def remove(self, place: Place) -> bool:
        """Remove ``place`` if it is empty; True when it is gone."""
        try:
            os.rmdir(place.fs)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                log.warning("cannot remove cgroup %s: %s", place.fs, exc.strerror)
            return False
        return True

    def cleanup(self, is_live: Callable[[str], bool]) -> int:
        """Remove the empty instance cgroups of this node that no live agent uses (this
        agent's own included: it starts with none), and the agent levels left empty.
        Populated ones stay (adoption takes them over). Returns how many were removed."""
        removed = 0
        try:
            agents = os.scandir(self.node_fs)
        except OSError:
            return 0
        with agents:
            for agent in agents:
                if not agent.is_dir(follow_symlinks=False):
                    continue
                if agent.name != self.agent_id and is_live(agent.name):
                    continue
                removed += _remove_children(agent.path)
                if agent.name != self.agent_id:
                    try:
                        os.rmdir(agent.path)
                        removed += 1
                    except OSError:
                        pass
        return removed

    def prune(self, places: Iterable[Place] = ()) -> int:
        """Remove ``places`` (instance cgroups this agent used, an earlier agent's included)
        and this agent's other empty instance cgroups, then the agent levels and the node's
        if they are empty too: an agent that stops leaves only populated cgroups behind, for
        the next agent to adopt. Returns how many were removed."""
        removed = _remove_children(self.fs)
        levels = {self.fs}
        for place in places:
            if self.remove(place):
                removed += 1
            levels.add(os.path.dirname(place.fs))
        for path in (*sorted(levels), self.node_fs):
            try:
                os.rmdir(path)
                removed += 1
            except OSError:
                pass
        return removed


def procs(fs: str) -> list[int]:
    """Pids in the cgroup at ``fs`` (empty once it is gone)."""
    try:
        with open(fs + "/cgroup.procs", "rb") as f:
            return [int(line) for line in f.read().split()]
    except (OSError, ValueError):
        return []


def _remove_children(path: str) -> int:
    removed = 0
    try:
        children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for child in children:
        try:
            os.rmdir(child)
            removed += 1
        except OSError:
            pass
    return removed


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
