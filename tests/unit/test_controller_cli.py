"""`gaffer-controller`'s options for backups and how its offline commands find the data dir."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gaffer.common.errors import GafferError
from gaffer.controller.daemon import build_settings, main


class TestBackupSettings:
    def test_backups_are_hourly_keeping_five_by_default(self):
        """No option, no config: every 3600 s into DATA_DIR/backups, keeping 5."""
        settings = build_settings({}, None)
        assert (settings.backup_every, settings.backup_keep, settings.backup_dir) == (3600.0, 5, None)
        assert build_settings({"backup_every": 0.0}, None).backup_every == 0.0

    @pytest.mark.parametrize("options, says", [
        ({"backup_every": float("nan")}, "backup_every must be a number of seconds >= 0"),
        ({"backup_every": float("inf")}, "backup_every must be a number of seconds >= 0"),
        ({"backup_every": -1.0}, "backup_every must be a number of seconds >= 0"),
        ({"backup_keep": 0}, "backup_keep must be at least 1"),
    ])
    def test_bad_backup_settings_are_refused_by_name(self, options, says):
        """NaN, infinity, negative periods and keeping nothing are one clear error."""
        with pytest.raises(GafferError, match=says):
            build_settings(options, None)


class TestOfflineDataDir:
    def run(self, *args: str):
        return CliRunner().invoke(main, list(args))

    def test_the_command_option_wins_then_the_group_option_then_the_config(self, tmp_path):
        """check finds the data dir from its own --data-dir, the one before it, or --config."""
        config = tmp_path / "controller.toml"
        config.write_text(f'data_dir = "{tmp_path / "from-config"}"\n')
        cases = [
            (["check", "--data-dir", str(tmp_path / "own")], "own"),
            (["--data-dir", str(tmp_path / "group"), "check"], "group"),
            (["--config", str(config), "check"], "from-config"),
            (["--config", str(config), "--data-dir", str(tmp_path / "group"), "check"], "group"),
        ]
        for args, expected in cases:
            result = self.run(*args)
            assert result.exit_code == 1
            assert f"no controller store in {tmp_path / expected}:" in result.output, args

    def test_commands_are_listed_in_help(self):
        """`gaffer-controller --help` shows the daemon's options and the offline commands."""
        result = self.run("--help")
        assert result.exit_code == 0
        for word in ("--backup-every", "check", "export", "import", "forget-template"):
            assert word in result.output
