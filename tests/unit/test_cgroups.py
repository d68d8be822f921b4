"""Finding the cgroup2 hierarchy and naming instance cgroups (no filesystem touched)."""

from __future__ import annotations

from gaffer.agent.cgroups import CgroupTree, find_mount, own_cgroup

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
ESCAPED = "30 23 0:26 /user.slice /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"


def test_finds_the_cgroup2_mount_on_hybrid_and_unified_hosts() -> None:
    """The cgroup2 line wins over v1 ones; optional fields and escaped spaces are handled."""
    assert find_mount(HYBRID) == ("/sys/fs/cgroup/unified", "/")
    assert find_mount(UNIFIED) == ("/sys/fs/cgroup", "/")
    assert find_mount(ESCAPED) == ("/mnt/my cgroups", "/user.slice")
    assert find_mount(HYBRID.replace("cgroup2", "cgroup")) is None


def test_own_cgroup_is_the_unified_line() -> None:
    """Only the ``0::`` line names the cgroup v2 of a process."""
    assert own_cgroup("9:name=systemd:/\n4:memory:/x\n0::/system.slice/gaffer-agent.service\n") == (
        "/system.slice/gaffer-agent.service")
    assert own_cgroup("0::/\n") == "/"
    assert own_cgroup("4:memory:/x\n") is None


def test_instance_cgroups_sit_under_node_and_agent() -> None:
    """<mount><own>/gaffer-<node>/<agent>/<instance>; place_of accepts only instance cgroups of the node."""
    tree = CgroupTree("/sys/fs/cgroup", "/", "/system.slice/a.service", "web-01", "abc")
    place = tree.place("web.1")
    assert place.fs == "/sys/fs/cgroup/system.slice/a.service/gaffer-web-01/abc/web.1"
    assert place.name == "/system.slice/a.service/gaffer-web-01/abc/web.1"
    assert tree.place_of("/system.slice/a.service/gaffer-web-01/old/web.2").fs == (
        "/sys/fs/cgroup/system.slice/a.service/gaffer-web-01/old/web.2")
    assert tree.place_of("/system.slice/a.service/gaffer-web-01/abc") is None
    assert tree.place_of("/system.slice/a.service/gaffer-web-010/abc/web.1") is None
    assert tree.place_of("/user.slice/x") is None


def test_a_mount_of_a_subtree_maps_names_to_paths() -> None:
    """When the mount shows a subtree (a container), names are relative to its root."""
    tree = CgroupTree("/sys/fs/cgroup", "/kubepods/pod1", "/kubepods/pod1/c1", "n", "a")
    assert tree.place("w.1").fs == "/sys/fs/cgroup/c1/gaffer-n/a/w.1"
