"""rlimits, umask and nice: validated with the rest of a template, kept in a canonical plain
form, checked against the host's rules before a spawn, and passed to the helper intact."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gaffer.agent import execwrap, spawning
from gaffer.agent.childlimits import (
    CAP_SETUID,
    CAP_SYS_NICE,
    CAP_SYS_RESOURCE,
    INFINITE,
    ChildLimits,
    Privileges,
    child_limits,
    grant_problem,
    helper_argv,
    host_refusals,
)
from gaffer.agent.limitchain import Tools, chain_words, nice_reversible
from gaffer.common.errors import TemplateError
from gaffer.common.template import parse_template


def problems_of(data: dict) -> list[str]:
    with pytest.raises(TemplateError) as info:
        parse_template({"cmd": "sleep", **data}, "web")
    return [str(p) for p in info.value.problems]


class TestParsing:
    def test_each_form_of_a_limit_becomes_a_soft_hard_pair(self):
        """A number, a [soft, hard] list, a {soft, hard} table and "unlimited" all parse."""
        t = parse_template({"cmd": "x", "rlimits": {
            "nofile": 4096, "core": "unlimited", "nproc": [10, 20], "as": {"soft": 1, "hard": "unlimited"},
        }}, "web")
        assert t.rlimits == (
            ("nofile", 4096, 4096), ("nproc", 10, 20), ("core", "unlimited", "unlimited"),
            ("as", 1, "unlimited"),
        )

    @pytest.mark.parametrize("value, expected", [("022", 0o22), ("0027", 0o27), ("0o7", 7), (0o077, 0o77), (0, 0)])
    def test_a_umask_is_an_octal_string_or_its_integer_value(self, value, expected):
        """"022", "0027", "0o7" and integers (TOML's 0o077) give the same umask."""
        assert parse_template({"cmd": "x", "umask": value}, "web").umask == expected

    def test_nice_is_absolute_within_minus_20_to_19(self):
        """nice -20 and 19 are the ends of the range."""
        assert parse_template({"cmd": "x", "nice": -20}, "web").nice == -20
        assert parse_template({"cmd": "x", "nice": 19}, "web").nice == 19

    def test_every_problem_is_named_at_once_with_the_templates_others(self):
        """Bad limits, umask and nice are reported together with any other problem, by field."""
        assert problems_of({
            "numprocesses": -1,
            "rlimits": {"nofiles": 1, "core": [5, 1], "as": True, "nproc": -1, "memlock": [1, 2, 3],
                        "nofile": "unlimited"},
            "umask": "0999", "nice": 20,
        }) == [
            "web.numprocesses: must be >= 0, got -1",
            "web.rlimits.nofiles: unknown field (did you mean 'nofile'?)",
            "web.rlimits.nofile: cannot be unlimited: Linux caps open files at fs.nr_open; give a number",
            "web.rlimits.nproc: must be >= 0, got -1",
            "web.rlimits.core: soft limit 5 is above the hard limit 1",
            "web.rlimits.memlock: must be [soft, hard]: 2 values, got 3",
            'web.rlimits.as: must be a non-negative integer or "unlimited", got boolean true',
            'web.umask: must be an octal string such as "022", got string \'0999\'',
            "web.nice: is too large: at most 19, got 20",
        ]

    @pytest.mark.parametrize("data, problem", [
        ({"rlimits": 5}, "web.rlimits: must be a table/object, got number 5"),
        ({"rlimits": {"nproc": 2**31}}, "web.rlimits.nproc: is too large: at most 2,147,483,647, got 2147483648"),
        ({"rlimits": {"as": [1, 2**63]}}, "web.rlimits.as[1]: is too large"),
        ({"rlimits": {"core": {"soft": 1}}}, "web.rlimits.core.hard: is required"),
        ({"rlimits": {"core": {"soft": 1, "hard": 2, "max": 3}}}, "web.rlimits.core.max: unknown field"),
        ({"rlimits": {"core": ["unlimited", 5]}}, "web.rlimits.core: soft limit unlimited is above the hard limit 5"),
        ({"umask": 0o1000}, "web.umask: must be 0..0o777"),
        ({"umask": -1}, "web.umask: must be 0..0o777"),
        ({"umask": 1.5}, "web.umask: must be an octal string"),
        ({"umask": ""}, "web.umask: must be an octal string"),
        ({"nice": "5"}, "web.nice: must be an integer"),
        ({"nice": -21}, "web.nice: must be >= -20"),
    ])
    def test_a_bad_value_names_its_field(self, data, problem):
        """Each bad value is one line naming the field and what is wrong."""
        found = problems_of(data)
        assert len(found) == 1 and found[0].startswith(problem), found


limit_value = st.one_of(st.just("unlimited"), st.integers(0, 2**40))


@st.composite
def limited_templates(draw):
    rlimits = {}
    for name in draw(st.sets(st.sampled_from(["nproc", "core", "memlock", "as", "nofile"]))):
        soft, hard = sorted(draw(st.lists(st.integers(0, 2**30), min_size=2, max_size=2)))
        rlimits[name] = draw(st.sampled_from([soft, [soft, hard], {"soft": soft, "hard": hard}]))
    data = {"cmd": "x", "rlimits": rlimits}
    if draw(st.booleans()):
        data["umask"] = draw(st.one_of(st.integers(0, 0o777), st.integers(0, 0o777).map(lambda v: f"{v:o}")))
    if draw(st.booleans()):
        data["nice"] = draw(st.integers(-20, 19))
    return data


class TestPlainForm:
    @given(limited_templates())
    def test_the_plain_form_parses_back_to_an_equal_template(self, data):
        """to_dict -> parse_template is the identity, whatever form the limits were written in."""
        template = parse_template(data, "web")
        assert parse_template(template.to_dict(), "web") == template

    def test_a_template_without_them_looks_and_hashes_as_before(self):
        """No rlimits, umask or nice: the plain form has none of the keys (so spec hashes of
        existing templates do not change and nothing restarts on upgrade)."""
        plain = parse_template({"cmd": "x", "rlimits": {}}, "web").to_dict()
        assert not {"rlimits", "umask", "nice"} & plain.keys()

    def test_the_umask_shows_as_octal_and_a_change_restarts(self):
        """The plain umask is its octal string; changing any of the three changes the spec hash."""
        base = parse_template({"cmd": "x"}, "web")
        masked = parse_template({"cmd": "x", "umask": 0o22}, "web")
        assert masked.to_dict()["umask"] == "022"
        hashes = {base.spec_hash(), masked.spec_hash(),
                  parse_template({"cmd": "x", "nice": 1}, "web").spec_hash(),
                  parse_template({"cmd": "x", "rlimits": {"core": 0}}, "web").spec_hash()}
        assert len(hashes) == 4


def privileges(caps: int = 0, nice: int = 0, nice_rlimit: int = 0, hard: int = 1024) -> Privileges:
    own = {name: (hard, hard) for name in ("nofile", "nproc", "core", "memlock", "as")}
    return Privileges(capabilities=caps, rlimits=own, nice=nice, nice_rlimit=nice_rlimit,
                      nr_open=1 << 20, uids=(1000, 1000, 1000), gids=(1000, 1000, 1000))


class TestGrant:
    def test_lowering_limits_and_raising_nice_need_nothing(self):
        """Limits at or below the agent's, and a nice above its own, are always granted."""
        limits = ChildLimits(rlimits=(("nofile", 10, 1024), ("core", 0, 0)), nice=5, umask=0o22)
        assert grant_problem(limits, privileges()) is None

    def test_a_hard_limit_above_the_agents_needs_cap_sys_resource(self):
        """Raising a hard limit (or unlimited over a finite one) is refused without the capability."""
        for hard in (2048, None):
            limits = ChildLimits(rlimits=(("core", 0, hard),))
            problem = grant_problem(limits, privileges())
            assert problem is not None and problem.startswith("rlimits.core: hard limit")
            assert "CAP_SYS_RESOURCE" in problem
            assert grant_problem(limits, privileges(caps=1 << CAP_SYS_RESOURCE)) is None

    def test_nofile_above_nr_open_is_refused_even_with_privilege(self):
        """The kernel never grants more open files than fs.nr_open."""
        limits = ChildLimits(rlimits=(("nofile", 10, (1 << 20) + 1),))
        problem = grant_problem(limits, privileges(caps=~0, hard=INFINITE))
        assert problem == "rlimits.nofile: 1048577 is above the kernel's fs.nr_open (1048576)"

    def test_a_nice_below_the_agents_needs_cap_sys_nice_or_rlimit_nice(self):
        """Lowering nice is refused unless CAP_SYS_NICE, or RLIMIT_NICE allows 20 - nice."""
        limits = ChildLimits(nice=-5)
        assert "CAP_SYS_NICE" in (grant_problem(limits, privileges()) or "")
        assert grant_problem(limits, privileges(caps=1 << CAP_SYS_NICE)) is None
        assert grant_problem(limits, privileges(nice_rlimit=25)) is None
        assert grant_problem(limits, privileges(nice_rlimit=24)) is not None
        assert grant_problem(ChildLimits(nice=3), privileges(nice=5)) is not None

    def test_a_user_switch_needs_cap_setuid(self):
        """Another uid than the agent's own, without CAP_SETUID, is refused before the spawn."""
        limits = ChildLimits(nice=1)
        assert "CAP_SETUID" in (grant_problem(limits, privileges(), uid=0) or "")
        assert grant_problem(limits, privileges(), uid=1000) is None
        assert grant_problem(limits, privileges(caps=1 << CAP_SETUID), uid=0) is None


class TestHostRefusals:
    def test_every_refused_setting_is_named_with_its_field(self):
        """host_refusals names each rlimit and the nice the host would refuse (not only the
        first), by field, and nothing for settings it grants."""
        template = parse_template({"cmd": "x", "nice": -5, "umask": "022", "rlimits": {
            "core": [0, 2048], "nofile": [10, 1024], "as": "unlimited",
        }}, "web")
        refused = host_refusals(template, privileges())
        assert [field for field, _ in refused] == ["rlimits.core", "rlimits.as", "nice"]
        assert refused[0] == ("rlimits.core", "hard limit 2048 is above gaffer's own (1024); raising it needs "
                                              "privilege (CAP_SYS_RESOURCE)")
        assert refused[2] == ("nice", "nice -5 is below gaffer's own (0); lowering it needs privilege "
                                      "(CAP_SYS_NICE, or RLIMIT_NICE)")
        assert host_refusals(template, privileges(caps=1 << CAP_SYS_RESOURCE | 1 << CAP_SYS_NICE)) == []
        assert host_refusals(parse_template({"cmd": "x", "umask": "022"}, "web"), privileges()) == []


class TestHelperWords:
    def test_settings_argv_and_env_reach_the_helper_intact(self):
        """What the agent encodes, execwrap decodes: settings, argv (odd bytes included), env."""
        limits = ChildLimits(rlimits=(("nofile", 10, 20), ("as", None, None)), umask=0o27, nice=-2)
        argv = ("prog", "-x", "a=b", "--", "caf\udce9")
        env = {"A": "1=2", "EMPTY": "", "LANG": "é"}
        words = helper_argv(argv, env, limits, cwd="/srv/a b", uid=5, gid=6, groups=(6, 7))
        assert words[:6] == [os.fsencode(sys.executable), b"-I", b"-S", b"-X", b"utf8", os.fsencode(execwrap.__file__)]
        settings, got_argv, got_env = execwrap.parse(words[6:])
        assert (settings.cwd, settings.umask, settings.nice) == (b"/srv/a b", 0o27, -2)
        assert settings.rlimits == [("nofile", 10, 20), ("as", None, None)]
        assert (settings.groups, settings.gid, settings.uid) == ([6, 7], 6, 5)
        assert got_argv == [os.fsencode(a) for a in argv]
        assert got_env == {os.fsencode(k): os.fsencode(v) for k, v in env.items()}

    @pytest.mark.parametrize("words", [[b"umask=1"], [b"--", b"0"], [b"--", b"2", b"one"],
                                       [b"bogus=1", b"--", b"1", b"x"], [b"--", b"1", b"x", b"NOEQUALS"],
                                       [b"rlimit=stack:1:1", b"--", b"1", b"x"]])
    def test_malformed_words_are_refused(self, words):
        """No "--", no program, an unknown setting or limit, an env entry without '='."""
        with pytest.raises(ValueError):
            execwrap.parse(words)


class TestPath:
    def test_only_templates_with_settings_leave_the_fast_path(self):
        """None: posix_spawn; a umask alone: Popen; rlimits or nice: the chain, or the helper
        on a host without the tool the chain needs."""
        streams = (10, 11, 12)
        both = Tools(prlimit="/usr/bin/prlimit", setpriv="/usr/bin/setpriv")
        assert spawning.choose_path(None, None, None, None, streams, None, both) == spawning.FAST
        assert spawning.choose_path(None, None, None, None, streams, ChildLimits(umask=0o22), both) == spawning.POPEN
        assert spawning.choose_path(None, None, None, None, streams, ChildLimits(nice=1), Tools()) == spawning.CHAIN
        rl = ChildLimits(rlimits=(("core", 0, 0),))
        assert spawning.choose_path("/nonexistent", 5, 5, (5,), (0, 1, 2), rl, both) == spawning.CHAIN
        assert spawning.choose_path(None, None, None, None, streams, rl, Tools()) == spawning.HELPER
        assert spawning.choose_path(None, 5, None, None, streams, rl, Tools(prlimit="/p")) == spawning.HELPER
        assert spawning.choose_path(None, None, None, None, streams, rl, Tools(prlimit="/p")) == spawning.CHAIN

    def test_a_template_without_settings_has_no_child_limits(self):
        """child_limits is None for a plain template (the unchanged spawn), values otherwise."""
        assert child_limits(parse_template({"cmd": "x"}, "web")) is None
        limited = parse_template({"cmd": "x", "rlimits": {"core": [0, "unlimited"]}, "nice": 2}, "web")
        assert child_limits(limited) == ChildLimits(rlimits=(("core", 0, None),), nice=2)


class TestChain:
    TOOLS = Tools(prlimit="/usr/bin/prlimit", setpriv="/usr/bin/setpriv")

    def test_rlimits_become_one_prlimit_before_the_program(self):
        """Each limit as --NAME=SOFT:HARD (unlimited by name), then --: no Python anywhere."""
        limits = ChildLimits(rlimits=(("nofile", 512, 1024), ("as", None, None), ("core", 0, 0)), nice=3)
        assert chain_words(limits, self.TOOLS) == (
            "/usr/bin/prlimit", "--nofile=512:1024", "--as=unlimited:unlimited", "--core=0:0", "--")

    def test_nice_and_umask_alone_exec_nothing_first(self):
        """nice (the spawning thread's) and umask (Popen's) need no program before the child's."""
        assert chain_words(ChildLimits(nice=5, umask=0o22), Tools(), uid=5, gid=5) == ()

    def test_a_user_switch_after_rlimits_is_setprivs(self):
        """rlimits first, then setpriv: groups (given, none, or kept for a gid), gid, uid."""
        rl = ChildLimits(rlimits=(("core", 0, 0),))
        prefix = ("/usr/bin/prlimit", "--core=0:0", "--", "/usr/bin/setpriv")
        assert chain_words(rl, self.TOOLS, uid=5, gid=6, groups=(6, 7)) == (
            *prefix, "--groups=6,7", "--regid=6", "--reuid=5", "--")
        assert chain_words(rl, self.TOOLS, uid=5, gid=6, groups=()) == (
            *prefix, "--clear-groups", "--regid=6", "--reuid=5", "--")
        assert chain_words(rl, self.TOOLS, gid=6) == (*prefix, "--keep-groups", "--regid=6", "--")
        assert chain_words(rl, self.TOOLS, uid=5) == (*prefix, "--reuid=5", "--")

    def test_a_missing_tool_means_no_chain(self):
        """Without prlimit (or setpriv, for a user switch after rlimits): None, the helper's turn."""
        rl = ChildLimits(rlimits=(("core", 0, 0),))
        assert chain_words(rl, Tools(setpriv="/s")) is None
        assert chain_words(rl, Tools(prlimit="/p"), uid=5) is None
        assert chain_words(rl, Tools(prlimit="/p")) == ("/p", "--core=0:0", "--")

    def test_nice_is_set_on_the_loops_thread_only_where_it_may_be_set_back(self):
        """Lowering nice, or raising it with CAP_SYS_NICE or enough RLIMIT_NICE: reversible;
        an unprivileged raise is not (it takes a thread of its own)."""
        plain = Privileges(capabilities=0, rlimits={}, nice=0, nice_rlimit=0, nr_open=1024, uids=(1,), gids=(1,))
        assert not nice_reversible(5, plain)
        assert nice_reversible(0, plain)
        assert nice_reversible(-2, replace(plain, nice=3))
        assert nice_reversible(5, replace(plain, nice_rlimit=20))
        assert not nice_reversible(5, replace(plain, nice_rlimit=19))
        assert nice_reversible(19, replace(plain, capabilities=1 << CAP_SYS_NICE))
