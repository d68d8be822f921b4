"""``gaffer check``, ``gaffer export`` and the warnings of skipped lines, through click's CliRunner (issue 9)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gaffer.cli import start
from gaffer.cli.export import write_all
from gaffer.common.errors import ConfigError
from gaffer.common.unitfiles import OutFile, supervisord_word, systemd_word

PROCFILE = "web: python app.py --port $PORT ; echo '50% done' # shell comment\nweb.admin: skipped\nworker: sleep 9\n"


def gaffer(*args: str, cwd: Path) -> Result:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(start.main, list(args))
    finally:
        os.chdir(old)


def app_dir(tmp_path: Path, procfile: str = PROCFILE, dotenv: str | None = "SECRET='s3 cr\"et'\n") -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "Procfile").write_text(procfile)
    if dotenv is not None:
        (root / ".env").write_text(dotenv)
    return root


def supervisord_parser() -> configparser.RawConfigParser:
    """The ini parser supervisord 4 uses on Python 3 (``options.UnhosedConfigParser``)."""
    return configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)


def supervisord_env(value: str) -> dict[str, str]:
    """supervisord's ``dict_of_key_value_pairs``, transcribed: non-POSIX tokens, quotes stripped."""
    lexer = shlex.shlex(value)
    lexer.wordchars += "/.+-():"
    tokens = list(lexer)
    pairs = {}
    for i in range(0, len(tokens), 4):
        key, eq, val = tokens[i:i + 3]
        assert eq == "="
        pairs[key] = val.strip("'\"")
    return pairs


class TestCheck:
    def test_a_valid_file_is_ok_with_its_warnings_on_stderr(self, tmp_path: Path) -> None:
        """check finds the Procfile as start does, exits 0 and prints each skipped line on stderr."""
        result = gaffer("check", cwd=app_dir(tmp_path))
        assert result.exit_code == 0, result.output
        root = tmp_path / "shop"
        assert result.stdout == f"{root / 'Procfile'}: ok, 2 templates, 2 processes\n"
        assert result.stderr == (
            f"warning: {root / 'Procfile'}:2: skipped 'web.admin: skipped': the name 'web.admin' has a character "
            "other than letters, digits, '_' and '-'\n"
        )

    def test_every_problem_is_listed_one_a_line(self, tmp_path: Path) -> None:
        """An invalid file exits 1 and names every problem, .env and Procfile together."""
        root = app_dir(tmp_path, "web: a\n_web: b\nweb: c\n", "A=two words\nB='open\n")
        result = gaffer("check", cwd=root)
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            f"Error: {root / 'Procfile'}: 4 problems:",
            f"  {root / '.env'}:1: unquoted space inside the value: honcho would read 'twowords'; quote the value",
            f"  {root / '.env'}:2: no closing quotation (honcho stops with this error too)",
            "  line 2: the name '_web' is not valid: use letters, digits, '-' and '_' (no dots), "
            "starting with a letter or digit, at most 64 characters",
            "  web.name: defined more than once",
        ]

    def test_a_toml_file_is_checked_with_host_checks(self, tmp_path: Path) -> None:
        """check runs what start would check on this host (an unknown user) without starting anything."""
        (tmp_path / "gaffer.toml").write_text('[web]\ncmd = "x"\nuid = "no-such-user-here"\n[ok]\ncmd = "y"\n')
        result = gaffer("check", "gaffer.toml", cwd=tmp_path)
        assert result.exit_code == 1
        assert result.stderr == "Error: gaffer.toml: web.uid: unknown user 'no-such-user-here' on this host\n"

    def test_check_takes_the_concurrency_and_port_start_would_get(self, tmp_path: Path) -> None:
        """-c and -p are checked as start would take them: counts, unknown names, the port range."""
        root = tmp_path / "app"
        root.mkdir()
        (root / "Procfile").write_text("web: a\nworker: b\n")
        ok = gaffer("check", "-c", "web=3,worker=2", "-p", "6000", cwd=root)
        assert ok.exit_code == 0, ok.output
        assert ok.stdout == f"{root / 'Procfile'}: ok, 2 templates, 5 processes\n"
        unknown = gaffer("check", "-c", "db=1", cwd=root)
        assert unknown.exit_code == 1 and "db" in unknown.stderr
        too_high = gaffer("check", "-p", "65500", cwd=root)
        assert too_high.exit_code == 1 and "65535" in too_high.stderr

    def test_limits_this_user_cannot_grant_are_warnings(self, tmp_path: Path, monkeypatch) -> None:
        """A hard limit above this user's and a negative nice without CAP_SYS_NICE are warned
        about, naming template and field; the file is still ok (exit 0)."""
        from gaffer.agent import childlimits

        own = {name: (1024, 1024) for name in childlimits.RESOURCES}
        unprivileged = childlimits.Privileges(capabilities=0, rlimits=own, nice=0, nice_rlimit=0, nr_open=1 << 20,
                                              uids=(1000,) * 3, gids=(1000,) * 3)
        monkeypatch.setattr(childlimits, "read_privileges", lambda: unprivileged)
        (tmp_path / "gaffer.toml").write_text(
            '[web]\ncmd = "x"\nnice = -5\nrlimits = {nofile = [512, 4096], core = 0}\n[ok]\ncmd = "y"\nnice = 5\n'
        )
        result = gaffer("check", "gaffer.toml", cwd=tmp_path)
        assert result.exit_code == 0, result.output
        assert result.stdout == "gaffer.toml: ok, 2 templates, 2 processes\n"
        assert result.stderr.splitlines() == [
            "warning: web.rlimits.nofile: hard limit 4096 is above gaffer's own (1024); raising it needs privilege "
            "(CAP_SYS_RESOURCE): `gaffer start` here, as this user, would fail to spawn it",
            "warning: web.nice: nice -5 is below gaffer's own (0); lowering it needs privilege (CAP_SYS_NICE, or "
            "RLIMIT_NICE): `gaffer start` here, as this user, would fail to spawn it",
        ]

    def test_a_limit_no_user_may_have_is_warned_on_this_host(self, tmp_path: Path) -> None:
        """nofile above this host's fs.nr_open (which even root cannot pass) is warned about, read from the host."""
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        if nr_open >= 2**31 - 1:
            pytest.skip("fs.nr_open is at the most a template may ask for")
        (tmp_path / "gaffer.toml").write_text(f'[web]\ncmd = "x"\nrlimits = {{nofile = [64, {nr_open + 1}]}}\n')
        result = gaffer("check", "gaffer.toml", cwd=tmp_path)
        assert result.exit_code == 0, result.output
        assert result.stderr == (
            f"warning: web.rlimits.nofile: {nr_open + 1} is above the kernel's fs.nr_open ({nr_open}): "
            "`gaffer start` here, as this user, would fail to spawn it\n"
        )

    def test_no_file_here(self, tmp_path: Path) -> None:
        """Without a file and none of the default names, check says so in one line."""
        result = gaffer("check", cwd=tmp_path)
        assert result.exit_code == 1
        assert result.stderr == "Error: no template file given and none of gaffer.toml, Procfile, gaffer.json here\n"


class TestStartWarnings:
    def test_read_templates_prints_each_skipped_line_on_stderr(self, tmp_path: Path, capsys) -> None:
        """What start (and its SIGHUP reload) reads prints one warning line per skipped line."""
        root = app_dir(tmp_path, "web: a\n  worker: b\n", "JUSTAKEY\n")
        templates = start.read_templates(root / "Procfile", {})
        assert [t.name for t in templates] == ["web"]
        assert capsys.readouterr().err.splitlines() == [
            f"warning: {root / '.env'}:1: skipped 'JUSTAKEY': expected KEY=value, KEY made of letters, "
            "digits and '_' not starting with a digit",
            f"warning: {root / 'Procfile'}:2: skipped '  worker: b': indented (a process line starts with its name)",
        ]


class TestExportSystemd:
    def test_units_hold_cwd_env_port_command_and_policy(self, tmp_path: Path) -> None:
        """One service per instance, PORT per type block, env in a 0600 file, targets as honcho writes them."""
        root = app_dir(tmp_path)
        out = tmp_path / "units"
        result = gaffer("export", "systemd", str(out), "-c", "web=2", "-p", "6000", cwd=root)
        assert result.exit_code == 0, result.output
        names = sorted(p.name for p in out.iterdir())
        assert names == [
            "shop-web-1.service", "shop-web-2.service", "shop-web.env", "shop-web.target",
            "shop-worker-1.service", "shop-worker.env", "shop-worker.target", "shop.target",
        ]
        assert (out / "shop.target").read_text().splitlines()[2] == "Wants=shop-web.target shop-worker.target"
        assert "Wants=shop-web-1.service shop-web-2.service" in (out / "shop-web.target").read_text()
        unit = configparser.RawConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read_string((out / "shop-web-2.service").read_text())
        service = unit["Service"]
        assert service["WorkingDirectory"] == str(root)
        assert service["EnvironmentFile"] == str(out / "shop-web.env")
        assert service["Environment"] == "PORT=6001"
        assert service["ExecStart"] == (
            '"/bin/sh" "-c" "python app.py --port $$PORT ; echo \'50%% done\' # shell comment"'
        )
        assert (service["Restart"], service["KillSignal"], service["TimeoutStopSec"]) == ("always", "SIGTERM", "10")
        assert unit["Unit"]["PartOf"] == "shop-web.target"
        worker = (out / "shop-worker-1.service").read_text()
        assert "Environment=PORT=6100\n" in worker
        assert (out / "shop-web.env").read_text() == 'SECRET="s3 cr\\"et"\n'
        assert stat.S_IMODE((out / "shop-web.env").stat().st_mode) == 0o600
        assert stat.S_IMODE((out / "shop-web-1.service").stat().st_mode) & 0o004

    def test_port_base_from_dotenv_as_honcho(self, tmp_path: Path) -> None:
        """Without -p, a .env PORT is the base (honcho's rule) and never reaches the env file."""
        root = app_dir(tmp_path, "web: a\n", "PORT=7000\nA=1\n")
        result = gaffer("export", "systemd", "out", cwd=root)
        assert result.exit_code == 0, result.output
        assert "Environment=PORT=7000\n" in (root / "out" / "shop-web-1.service").read_text()
        assert (root / "out" / "shop-web.env").read_text() == 'A="1"\n'

    @pytest.mark.parametrize(("word", "keep_vars", "written"), [
        ("plain", False, '"plain"'),
        ('a "q" \\ b', False, '"a \\"q\\" \\\\ b"'),
        ("50% $HOME", False, '"50%% $$HOME"'),
        ("tab\there", False, '"tab\\x09here"'),
        ("$HOME/${A}/$$/$", True, '"${HOME}/${A}/$$/$$"'),
    ])
    def test_words_are_escaped_for_systemd(self, word: str, keep_vars: bool, written: str) -> None:
        """Quotes, backslashes, specifiers and variables are escaped so systemd passes the word through."""
        assert systemd_word(word, keep_vars) == written


class TestExportSupervisord:
    def test_one_program_per_instance_and_a_group(self, tmp_path: Path) -> None:
        """The conf parses as supervisord parses it; command, env and PORT come back exactly."""
        root = app_dir(tmp_path)
        result = gaffer("export", "supervisord", "out", "--app", "store", "-c", "web=2,worker=0", cwd=root)
        assert result.exit_code == 0, result.output
        path = root / "out" / "store.conf"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        conf = supervisord_parser()
        conf.read_string(path.read_text().replace("%%", "%%"))
        assert conf.sections() == ["program:store-web-1", "program:store-web-2", "group:store"]
        assert conf["group:store"]["programs"] == "store-web-1,store-web-2"
        web2 = conf["program:store-web-2"]
        command = web2["command"].replace("%%", "%")
        assert shlex.split(command) == [
            "/bin/sh", "-c", "python app.py --port $PORT ; echo '50% done' # shell comment",
        ]
        assert supervisord_env(web2["environment"]) == {"SECRET": 's3 cr"et', "PORT": "5001"}
        assert (web2["directory"], web2["autorestart"], web2["stopsignal"]) == (str(root), "true", "TERM")
        assert (web2["stopasgroup"], web2["killasgroup"]) == ("true", "true")

    def test_no_env_means_a_public_file(self, tmp_path: Path) -> None:
        """A conf without env values (PORT aside) holds no secret and is readable by others."""
        root = app_dir(tmp_path, "web: a\n", None)
        assert gaffer("export", "supervisord", "out", cwd=root).exit_code == 0
        assert stat.S_IMODE((root / "out" / "shop.conf").stat().st_mode) & 0o004

    @pytest.mark.parametrize("word", ["a ; b", "x #y", "  lead", "", "it's", "%d", "tab\tx"])
    def test_words_survive_inline_comments_and_percent(self, word: str) -> None:
        """A word comes back whole through supervisord's ini parser, % expansion and shell split."""
        conf = supervisord_parser()
        conf.read_string(f"[p]\ncommand=x {supervisord_word(word)}\n")
        assert shlex.split(conf["p"]["command"] % {}) == ["x", word]


class TestExportToml:
    TOML = (
        '[job]\ncmd = "/usr/bin/env"\nargs = ["$HOME", "50%"]\nrestart = "on-failure"\nexitcodes = [0, 3]\n'
        'uid = "nobody"\ngid = "nogroup"\nstop_signal = "INT"\ngraceful_timeout = 2.5\ncwd = "/srv/job"\n'
    )

    def test_a_non_shell_template_keeps_its_words_policy_and_user(self, tmp_path: Path) -> None:
        """A TOML template exports its argv, variables for systemd to expand, policy, user and cwd, and no PORT."""
        (tmp_path / "gaffer.toml").write_text(self.TOML)
        result = gaffer("export", "systemd", "out", "--app", "batch", cwd=tmp_path)
        assert result.exit_code == 0, result.output
        lines = (tmp_path / "out" / "batch-job-1.service").read_text().splitlines()
        for expected in [
            'ExecStart="/usr/bin/env" "${HOME}" "50%%"', "Restart=on-failure", "SuccessExitStatus=3",
            "KillSignal=SIGINT", "TimeoutStopSec=2.5", "User=nobody", "Group=nogroup", "WorkingDirectory=/srv/job",
        ]:
            assert expected in lines
        assert not [line for line in lines if line.startswith(("Environment", "EnvironmentFile"))]

    def test_supervisord_refuses_what_it_cannot_expand(self, tmp_path: Path) -> None:
        """supervisord does not expand $HOME in a non-shell command: refused, naming the template."""
        (tmp_path / "gaffer.toml").write_text(self.TOML)
        result = gaffer("export", "supervisord", "out", cwd=tmp_path)
        assert result.exit_code == 1
        assert result.stderr == (
            "Error: job: supervisord does not expand $ variables in a non-shell command; set shell = true\n"
        )

    @pytest.mark.parametrize("value", ["both ' and \"", "'quoted'", "a ;b"])
    def test_env_values_supervisord_cannot_hold_are_refused(self, tmp_path: Path, value: str) -> None:
        """An env value supervisord would mangle is refused, naming the variable, and nothing is written."""
        (tmp_path / "gaffer.toml").write_text(f'[job]\ncmd = "x"\nshell = true\n[job.env]\nV = {json.dumps(value)}\n')
        result = gaffer("export", "supervisord", "out", cwd=tmp_path)
        assert result.exit_code == 1 and result.stderr.startswith("Error: env.V: supervisord cannot hold"), result.output
        assert not (tmp_path / "out").exists()


class TestExportLimits:
    TOML = '[job]\ncmd = "sleep 9"\nshell = true\numask = "027"\nnice = 4\n[job.rlimits]\nnofile = [512, 1024]\ncore = "unlimited"\n'

    def test_systemd_gets_limit_umask_and_nice_settings(self, tmp_path: Path) -> None:
        """rlimits, umask and nice become systemd's LimitNOFILE=soft:hard, UMask= and Nice=."""
        (tmp_path / "gaffer.toml").write_text(self.TOML)
        assert gaffer("export", "systemd", "out", "--app", "a", cwd=tmp_path).exit_code == 0
        lines = (tmp_path / "out" / "a-job-1.service").read_text().splitlines()
        for expected in ["LimitNOFILE=512:1024", "LimitCORE=infinity:infinity", "UMask=0027", "Nice=4"]:
            assert expected in lines

    def test_supervisord_takes_a_umask_and_refuses_rlimits_and_nice(self, tmp_path: Path) -> None:
        """supervisord has umask= but no per-program limits or nice: refused, naming the field."""
        (tmp_path / "gaffer.toml").write_text(self.TOML)
        result = gaffer("export", "supervisord", "out", cwd=tmp_path)
        assert result.exit_code == 1 and result.stderr.startswith("Error: job.rlimits: supervisord has no"), result.output
        (tmp_path / "gaffer.toml").write_text('[job]\ncmd = "sleep 9"\nshell = true\numask = "027"\n')
        assert gaffer("export", "supervisord", "out", "--app", "a", cwd=tmp_path).exit_code == 0
        assert "umask=027" in (tmp_path / "out" / "a.conf").read_text().splitlines()


class TestExportRefusals:
    def test_a_directory_that_is_a_file_is_refused(self, tmp_path: Path) -> None:
        """DIR naming a file is one clear error and writes nothing."""
        root = app_dir(tmp_path)
        (root / "taken").write_text("")
        result = gaffer("export", "systemd", "taken", cwd=root)
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1] == f"Error: {root / 'taken'}: not a directory"

    def test_a_failed_write_leaves_nothing_behind(self, tmp_path: Path) -> None:
        """When one file cannot be written, none of them is, and no temporary file is left."""
        out = tmp_path / "out"
        files = [OutFile("a.target", "[Unit]\n"), OutFile("b.service", "\udc80 cannot be encoded\n")]
        with pytest.raises(UnicodeEncodeError):
            write_all(out, files)
        assert list(out.iterdir()) == []

    def test_a_directory_in_the_way_is_refused_before_writing(self, tmp_path: Path) -> None:
        """A directory where a file must go is named, and no other file is written."""
        out = tmp_path / "out"
        (out / "b.service").mkdir(parents=True)
        with pytest.raises(ConfigError, match="b.service: is a directory"):
            write_all(out, [OutFile("a.target", "[Unit]\n"), OutFile("b.service", "[Service]\n")])
        assert [p.name for p in out.iterdir()] == ["b.service"]

    def test_an_unknown_concurrency_name_is_refused(self, tmp_path: Path) -> None:
        """-c for a process type the file does not have is named, and nothing is written."""
        root = app_dir(tmp_path)
        result = gaffer("export", "systemd", "out", "-c", "web=2,db=1", cwd=root)
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1] == (
            f"Error: --concurrency: {root / 'Procfile'} has no process type db (it has: web, worker)"
        )
        assert not (root / "out").exists()

    def test_an_app_name_that_cannot_name_units_is_refused(self, tmp_path: Path) -> None:
        """--app must follow the name rule (it prefixes every unit)."""
        result = gaffer("export", "systemd", "out", "--app", "my app", cwd=app_dir(tmp_path))
        assert result.exit_code == 1 and re.match(r"Error: --app: the name 'my app' is not valid", result.stderr.splitlines()[-1])

    def test_a_port_past_65535_is_refused(self, tmp_path: Path) -> None:
        """A count that would push an instance past the last port is refused before writing."""
        root = app_dir(tmp_path, "web: a\n", None)
        result = gaffer("export", "systemd", "out", "-p", "65500", "-c", "web=100", cwd=root)
        assert result.exit_code == 1
        assert result.stderr == "Error: web.37 would get port 65536, past 65535: use a lower --port\n"
        assert not (root / "out").exists()


class TestExportDependsOn:
    TOML = (
        '[db]\ncmd = "/bin/sleep"\nargs = ["60"]\nhealth = {type = "exec", command = "true"}\n'
        '[cache]\ncmd = "/bin/sleep"\nargs = ["60"]\nnotify = true\n'
        '[migrate]\ncmd = "/bin/true"\nrestart = "never"\ndepends_on = ["db"]\n'
        '[web]\ncmd = "/bin/sleep"\nargs = ["60"]\nnumprocesses = 2\n'
        'depends_on = ["db", {name = "migrate", condition = "completed"}, {name = "cache", condition = "started"}]\n'
    )

    def test_systemd_orders_starts_with_after_wants_and_requires(self, tmp_path: Path) -> None:
        """started/ready become After= + Wants=, completed After= + Requires= on a oneshot job
        (RemainAfterExit), notify a Type=notify service; what systemd cannot keep is a comment."""
        (tmp_path / "gaffer.toml").write_text(self.TOML)
        result = gaffer("export", "systemd", "out", "--app", "a", cwd=tmp_path)
        assert result.exit_code == 0, result.output
        out = tmp_path / "out"
        web = (out / "a-web-2.service").read_text().splitlines()
        assert "After=a-db-1.service a-migrate-1.service a-cache-1.service" in web
        assert "Wants=a-db-1.service a-cache-1.service" in web and "Requires=a-migrate-1.service" in web
        assert "# depends_on: db (ready), migrate (completed), cache (started)" in web
        assert "# Not kept: db's health check: systemd has none, so this unit waits only until db has started." in web
        assert "# Not kept: started on cache: systemd waits for its READY=1 (Type=notify)." in web
        assert web.index("After=a-db-1.service a-migrate-1.service a-cache-1.service") < web.index("[Service]")
        migrate = (out / "a-migrate-1.service").read_text().splitlines()
        assert ["Type=oneshot", "RemainAfterExit=yes"] == migrate[migrate.index("[Service]") + 1:][:2]
        assert "After=a-db-1.service" in migrate and "Wants=a-db-1.service" in migrate
        cache = (out / "a-cache-1.service").read_text().splitlines()
        assert "Type=notify" in cache and "NotifyAccess=all" in cache
        db = (out / "a-db-1.service").read_text()
        assert "Type=" not in db and "After=" not in db and "#" not in db

    def test_a_dependency_without_instances_is_said_to_be_lost(self, tmp_path: Path) -> None:
        """-c migrate=0 leaves web nothing to wait for: no Requires=, and a comment saying gaffer would hold it."""
        (tmp_path / "gaffer.toml").write_text(self.TOML)
        assert gaffer("export", "systemd", "out", "--app", "a", "-c", "migrate=0", cwd=tmp_path).exit_code == 0
        web = (tmp_path / "out" / "a-web-1.service").read_text().splitlines()
        assert "# Not kept: migrate has no instances here; gaffer would hold this template, systemd starts it." in web
        assert not [line for line in web if line.startswith("Requires=")]

    def test_supervisord_lists_programs_in_start_order_with_priority(self, tmp_path: Path) -> None:
        """supervisord gets programs in start order with rising priority= (dependencies lower),
        and a comment that it cannot wait for readiness."""
        (tmp_path / "gaffer.toml").write_text(self.TOML)
        result = gaffer("export", "supervisord", "out", "--app", "a", cwd=tmp_path)
        assert result.exit_code == 0, result.output
        text = (tmp_path / "out" / "a.conf").read_text()
        assert text.startswith("; depends_on: programs are listed and given priority= in start order "
                               "(cache, db < migrate < web).\n")
        assert "cannot\n; wait for a program to be started, ready or completed" in text
        parser = supervisord_parser()
        parser.read_string(text)
        priorities = {s.split(":")[1]: parser.getint(s, "priority") for s in parser.sections() if s.startswith("program:")}
        assert priorities == {"a-db-1": 100, "a-cache-1": 100, "a-migrate-1": 101, "a-web-1": 102, "a-web-2": 102}
        assert parser.get("group:a", "programs") == "a-db-1,a-cache-1,a-migrate-1,a-web-1,a-web-2"

    def test_without_depends_on_nothing_changes(self, tmp_path: Path) -> None:
        """An app without depends_on gets no priority=, no Type=, no ordering and no comment."""
        root = app_dir(tmp_path)
        assert gaffer("export", "supervisord", "out", cwd=root).exit_code == 0
        assert gaffer("export", "systemd", "units", cwd=root).exit_code == 0
        assert "priority=" not in (root / "out" / "shop.conf").read_text()
        for unit in (root / "units").glob("*.service"):
            assert not re.search(r"^(Type|After|Wants|Requires)=|^#", unit.read_text(), re.M)

    @pytest.mark.parametrize(("toml", "error"), [
        ('[web]\ncmd = "x"\ndepends_on = ["db"]\n',
         "web.depends_on: 'db' is not a template (define it in the same apply, or apply it first)"),
        ('[db]\ncmd = "x"\n[web]\ncmd = "x"\ndepends_on = [{name = "db", condition = "completed"}]\n',
         "web.depends_on: 'db' never completes (restart = \"always\")"),
    ])
    @pytest.mark.parametrize("format", ["systemd", "supervisord"])
    def test_a_dependency_export_cannot_keep_is_refused(self, tmp_path: Path, toml: str, error: str, format: str) -> None:
        """A dependency on a template not in the file, or completed on one that never ends: one
        line naming the field, and nothing written."""
        (tmp_path / "gaffer.toml").write_text(toml)
        result = gaffer("export", format, "out", cwd=tmp_path)
        assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, result.output
        assert error in result.stderr
        assert not (tmp_path / "out").exists()
