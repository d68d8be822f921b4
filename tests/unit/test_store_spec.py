"""``--store``: sqlite:DIR (the default, in the data dir) or etcd://members, parsed purely."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from gaffer.common.errors import ConfigError
from gaffer.controller.controller import Controller
from gaffer.controller.daemon import build_settings, main
from gaffer.controller.settings import ControllerSettings
from gaffer.controller.storespec import EtcdSpec, SqliteSpec, open_store, parse_store
from gaffer.testing.channel import MemoryRouter
from gaffer.testing.clock import FakeClock


class TestParse:
    @pytest.mark.parametrize(("text", "spec"), [
        ("sqlite:/var/lib/gaffer", SqliteSpec(Path("/var/lib/gaffer"))),
        ("sqlite:rel/dir", SqliteSpec(Path("rel/dir"))),
        ("sqlite:///abs", SqliteSpec(Path("/abs"))),
        ("etcd://h1:2379", EtcdSpec((("h1", 2379),))),
        ("etcd://h1:2379,h2:2380,10.0.0.3", EtcdSpec((("h1", 2379), ("h2", 2380), ("10.0.0.3", 2379)))),
        ("etcd://[::1]:2379,[fd00::2]", EtcdSpec((("[::1]", 2379), ("[fd00::2]", 2379)))),
    ])
    def test_the_two_forms(self, text, spec):
        """sqlite:DIR names a directory; etcd:// lists members, port 2379 when left out."""
        assert parse_store(text) == spec

    @pytest.mark.parametrize(("text", "says"), [
        ("", "--store: must be sqlite:DIR or etcd://HOST:PORT"),
        ("/var/lib/gaffer", "--store '/var/lib/gaffer': must be sqlite:DIR or etcd://HOST:PORT"),
        ("sqlite:", "sqlite: needs a directory"),
        ("etcd://", "an empty member"),
        ("etcd://h1:2379,", "an empty member"),
        ("etcd://h1:0", "port '0' of 'h1:0' must be 1-65535"),
        ("etcd://h1:99999", "must be 1-65535"),
        ("etcd://h1:http", "port 'http'"),
        ("etcd://h1:", "port ''"),
        ("etcd://h1:2379/v3", "is not HOST:PORT (no path, query or user)"),
        ("etcd://user@h1:2379", "no path, query or user"),
        ("etcd://h_1:2379", "'h_1' is not a host name or address"),
        ("etcd://h1:2379,h1:2379", "member h1:2379 is named twice"),
        ("redis://h1", "must be sqlite:DIR or etcd://"),
    ])
    def test_bad_values_are_one_line_naming_the_option(self, text, says):
        """Every malformed --store is a ConfigError of one line naming --store and the problem."""
        with pytest.raises(ConfigError) as raised:
            parse_store(text)
        assert says in raised.value.message and "\n" not in raised.value.message

    @given(st.text(max_size=60))
    def test_any_text_parses_or_is_refused_cleanly(self, text):
        """Whatever the text, parse_store returns a spec or raises ConfigError, nothing else."""
        try:
            spec = parse_store(text)
        except ConfigError as exc:
            assert "--store" in exc.message
        else:
            assert isinstance(spec, (SqliteSpec, EtcdSpec))

    def test_a_spec_prints_as_it_parses(self):
        """str() of a parsed spec parses back to the same spec (status and logs show it)."""
        for text in ("sqlite:/data", "etcd://a:1,b:2379"):
            assert parse_store(str(parse_store(text))) == parse_store(text)


class TestSettings:
    def test_the_default_is_sqlite_in_the_data_dir(self):
        """No --store: the SQLite store in --data-dir, as before."""
        settings = build_settings({"data_dir": "/srv/g"}, None)
        assert settings.store is None and settings.store_spec == SqliteSpec(Path("/srv/g"))

    def test_the_option_and_the_config_key(self, tmp_path):
        """--store wins over the config file's store, which wins over the default."""
        config = tmp_path / "controller.toml"
        config.write_text('store = "etcd://c1:2379"\n')
        assert build_settings({}, str(config)).store_spec == EtcdSpec((("c1", 2379),))
        assert build_settings({"store": "sqlite:/x"}, str(config)).store_spec == SqliteSpec(Path("/x"))

    def test_the_etcd_store_is_refused_for_now_in_one_line(self, tmp_path):
        """An etcd store parses, but opening it says in one line that it is not built yet."""
        with pytest.raises(ConfigError) as raised:
            open_store(parse_store("etcd://h1:2379,h2:2379"))
        assert raised.value.message == (
            "--store etcd://h1:2379,h2:2379: the etcd store is not built yet; use sqlite:DIR "
            "(the default: the data dir)"
        )

    def test_the_daemon_refuses_an_etcd_store_with_one_line(self, tmp_path):
        """gaffer-controller --store etcd://... exits 1 with that line, no traceback."""
        result = CliRunner().invoke(main, [
            "--store", "etcd://h1:2379", "--data-dir", str(tmp_path), "--bind", f"ipc://{tmp_path}/c.sock",
            "--backup-every", "0",
        ])
        assert result.exit_code == 1
        assert result.output.strip().splitlines()[-1] == (
            "Error: --store etcd://h1:2379: the etcd store is not built yet; use sqlite:DIR (the default: the data dir)"
        )
        assert "Traceback" not in result.output

    def test_the_daemon_refuses_a_malformed_store_with_one_line(self):
        """gaffer-controller --store with a bad value exits 2 or 1 naming --store, nothing started."""
        result = CliRunner().invoke(main, ["--store", "etcd://h1:0"])
        assert result.exit_code == 1
        assert result.output.strip() == "Error: --store 'etcd://h1:0': port '0' of 'h1:0' must be 1-65535"


async def test_a_controller_keeps_its_state_where_store_says(tmp_path):
    """--store sqlite:DIR puts gaffer.db in DIR, not in the data dir (which keeps admin.token)."""
    clock = FakeClock(start=10.0)
    settings = ControllerSettings(data_dir=tmp_path / "data", store=parse_store(f"sqlite:{tmp_path / 'db'}"))
    controller = Controller(settings, clock=clock.time)
    await controller.serve_on(MemoryRouter(clock=clock).channel)
    try:
        assert (tmp_path / "db" / "gaffer.db").exists()
        assert not (tmp_path / "data" / "gaffer.db").exists()
        assert (tmp_path / "data" / "admin.token").exists()
    finally:
        await controller.stop()
