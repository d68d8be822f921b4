"""From a template and an ordinal to argv, environment and identity."""

from __future__ import annotations

import grp
import os
import pwd

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.launch import build_env, build_launch, expand
from gaffer.common.errors import SpawnError
from gaffer.common.template import parse_template
from budget import examples

ENV = {"A": "alpha", "B_2": "beta", "EMPTY": "", "REF": "$A"}
OS_ENV = {"PATH": "/usr/bin:/bin", "FOO": "from-os", "HOME": "/root", "USER": "root"}
NOBODY = pwd.getpwnam("nobody")
NOBODY_GROUP = grp.getgrgid(NOBODY.pw_gid).gr_name


def template(**fields):
    return parse_template({"cmd": "app", **fields}, "web")


class TestExpand:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("$A", "alpha"),
            ("${A}", "alpha"),
            ("${A}bc", "alphabc"),
            ("$A/bin", "alpha/bin"),
            ("x$B_2-y", "xbeta-y"),
            ("[$EMPTY]", "[]"),
            ("$$", "$"),
            ("$$A", "$A"),
            ("cost: $$5", "cost: $5"),
            ("$UNKNOWN", "$UNKNOWN"),
            ("${UNKNOWN}", "${UNKNOWN}"),
            ("$Ab", "$Ab"),
            ("$1", "$1"),
            ("${A", "${A"),
            ("$", "$"),
            ("a $ b", "a $ b"),
            ("$REF", "$A"),
            ("no dollars", "no dollars"),
        ],
    )
    def test_expansion_table(self, text: str, expected: str) -> None:
        """$VAR and ${VAR} expand, $$ is a dollar, unknown names stay, nothing expands twice."""
        assert expand(text, ENV) == expected

    @settings(max_examples=examples(200), deadline=None)
    @given(st.text(alphabet="ab$_{}1 A", max_size=30))
    def test_doubled_dollars_always_come_back_literal(self, text: str) -> None:
        """Escaping every $ as $$ protects any text from expansion."""
        assert expand(text.replace("$", "$$"), ENV) == text

    @settings(max_examples=examples(200), deadline=None)
    @given(st.text(alphabet="ab$_{}1 XYZ", max_size=30))
    def test_empty_environment_only_unescapes(self, text: str) -> None:
        """With nothing to expand, only $$ changes."""
        assert expand(text, {}) == text.replace("$$", "$")


class TestEnvironment:
    def test_os_env_then_template_env_then_gaffer_vars(self) -> None:
        """The template overrides the OS environment; GAFFER_* override both."""
        t = template(env={"FOO": "from-template", "GAFFER_NODE": "spoofed"})
        env = build_env(t, 3, "node-a", OS_ENV)
        assert env == {
            **OS_ENV,
            "FOO": "from-template",
            "GAFFER_TEMPLATE": "web",
            "GAFFER_INSTANCE": "3",
            "GAFFER_NODE": "node-a",
        }

    def test_os_env_off_starts_from_nothing(self) -> None:
        """os_env = false keeps only the template env and the GAFFER_* variables."""
        env = build_env(template(os_env=False, env={"X": "1"}), "oneoff-1", "n", OS_ENV)
        assert env == {"X": "1", "GAFFER_TEMPLATE": "web", "GAFFER_INSTANCE": "oneoff-1", "GAFFER_NODE": "n"}

    def test_default_environment_is_the_agents_own(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an explicit environment the agent's os.environ is inherited."""
        monkeypatch.setenv("GAFFER_TEST_MARKER", "inherited")
        spec = build_launch(template(), 1, "n")
        assert spec.env["GAFFER_TEST_MARKER"] == "inherited"

    def test_gaffer_variables_expand_in_args(self) -> None:
        """Args can name the instance through the GAFFER_* variables."""
        t = template(args=["--id", "$GAFFER_TEMPLATE.${GAFFER_INSTANCE}@$GAFFER_NODE"])
        spec = build_launch(t, 2, "n1", {})
        assert spec.argv == ("app", "--id", "web.2@n1")


class TestArgv:
    def test_exec_form_expands_cmd_and_args(self) -> None:
        """Without a shell, cmd and each arg expand separately and stay separate words."""
        t = template(cmd="$BIN/app", args=["$FOO", "a b", "$$HOME", "$NOPE"], env={"BIN": "/opt"})
        spec = build_launch(t, 1, "n", OS_ENV)
        assert spec.argv == ("/opt/app", "from-os", "a b", "$HOME", "$NOPE")

    def test_shell_form_quotes_args_and_leaves_cmd_to_the_shell(self) -> None:
        """With shell = true, args are expanded then quoted; the shell expands cmd."""
        t = template(cmd="exec printf '%s\\n' $FOO", shell=True, args=["a b", "it's", "$FOO", "$$FOO", ";rm"])
        spec = build_launch(t, 1, "n", OS_ENV)
        assert spec.argv == (
            "/bin/sh",
            "-c",
            "exec printf '%s\\n' $FOO 'a b' 'it'\"'\"'s' from-os '$FOO' ';rm'",
        )

    def test_streams_and_cwd_follow_the_template(self) -> None:
        """Pipes are requested only for redirected streams; cwd passes through."""
        spec = build_launch(template(redirect_output=["err"], redirect_input=True, cwd="/srv"), 1, "n", {})
        assert (spec.stdout, spec.stderr, spec.stdin, spec.cwd) == (False, True, True, "/srv")


class TestIdentity:
    def test_no_uid_keeps_the_agents_identity(self) -> None:
        """Without uid/gid nothing changes and HOME/USER come from the environment."""
        spec = build_launch(template(), 1, "n", OS_ENV)
        assert (spec.uid, spec.gid, spec.groups) == (None, None, None)
        assert (spec.env["HOME"], spec.env["USER"]) == ("/root", "root")

    @pytest.mark.parametrize("uid", ["nobody", NOBODY.pw_uid, str(NOBODY.pw_uid)])
    def test_uid_resolves_user_group_and_home(self, uid: object) -> None:
        """A user name or number gives its uid, primary gid, and its HOME, USER and LOGNAME."""
        spec = build_launch(template(uid=uid), 1, "n", OS_ENV)
        assert (spec.uid, spec.gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
        identity = (spec.env["HOME"], spec.env["USER"], spec.env["LOGNAME"])
        assert identity == (NOBODY.pw_dir, "nobody", "nobody")

    @pytest.mark.skipif(os.geteuid() != 0, reason="supplementary groups are only set by root")
    def test_root_agent_sets_the_users_supplementary_groups(self) -> None:
        """As root, the child gets the user's group list instead of root's."""
        spec = build_launch(template(uid="nobody"), 1, "n", OS_ENV)
        assert spec.groups == tuple(os.getgrouplist("nobody", NOBODY.pw_gid))
        assert NOBODY.pw_gid in spec.groups

    def test_template_env_wins_over_the_users_home(self) -> None:
        """HOME/USER set in the template env are kept."""
        spec = build_launch(template(uid="nobody", env={"HOME": "/srv/app"}), 1, "n", OS_ENV)
        assert (spec.env["HOME"], spec.env["USER"]) == ("/srv/app", "nobody")

    def test_home_expands_to_the_target_users_home(self) -> None:
        """$HOME in args means the user the process runs as."""
        spec = build_launch(template(uid="nobody", args=["$HOME/data"]), 1, "n", OS_ENV)
        assert spec.argv == ("app", f"{NOBODY.pw_dir}/data")

    def test_gid_overrides_the_primary_group(self) -> None:
        """An explicit gid replaces the user's primary group."""
        spec = build_launch(template(uid="nobody", gid="root"), 1, "n", OS_ENV)
        assert (spec.uid, spec.gid) == (NOBODY.pw_uid, 0)
        if os.geteuid() == 0:
            assert spec.groups == tuple(os.getgrouplist("nobody", 0))

    @pytest.mark.parametrize("gid", [NOBODY_GROUP, NOBODY.pw_gid])
    def test_gid_alone_changes_only_the_group(self, gid: object) -> None:
        """gid without uid sets the group and leaves the user and HOME alone."""
        spec = build_launch(template(gid=gid), 1, "n", OS_ENV)
        assert (spec.uid, spec.gid, spec.groups) == (None, NOBODY.pw_gid, None)
        assert spec.env["HOME"] == "/root"

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"uid": "no-such-user-x"}, "unknown user 'no-such-user-x' on this host"),
            ({"uid": "nobody", "gid": "no-such-group-x"}, "unknown group 'no-such-group-x' on this host"),
            ({"gid": "no-such-group-x"}, "unknown group 'no-such-group-x' on this host"),
            ({"uid": "1" * 30}, f"unknown user '{'1' * 30}' on this host"),
        ],
    )
    def test_unknown_identity_is_a_spawn_error(self, fields: dict, message: str) -> None:
        """A user or group missing on this host fails the launch with a clear reason."""
        with pytest.raises(SpawnError) as info:
            build_launch(template(**fields), 1, "n", OS_ENV)
        assert info.value.message == message
        assert info.value.code == "spawn_failed"
