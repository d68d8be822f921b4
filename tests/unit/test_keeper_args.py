"""The keeper's command line (gaffer.agent.keeper.daemon.parse_args), read without argparse."""

from __future__ import annotations

import pytest

from gaffer.agent.keeper.daemon import DEFAULT_BUFFER_KIB, DEFAULT_IDLE_TIMEOUT, StartupError, main, parse_args


def test_every_option_is_read_in_both_spellings():
    """`--name value` and `--name=value` set the same option; `--detach` takes no value."""
    options = parse_args(["--socket", "/run/k.sock", "--idle-timeout=2.5", "--buffer-kib", "8",
                          "--max-fds=100", "--ready-fd", "7", "--detach"])
    assert (options.socket, options.idle_timeout, options.buffer_kib) == ("/run/k.sock", 2.5, 8)
    assert (options.max_fds, options.ready_fd, options.detach) == (100, 7, True)


def test_defaults_are_the_documented_ones():
    """Only --socket is required; the rest default as the agent expects."""
    options = parse_args(["--socket=/run/k.sock"])
    assert (options.idle_timeout, options.buffer_kib) == (DEFAULT_IDLE_TIMEOUT, DEFAULT_BUFFER_KIB)
    assert (options.max_fds, options.ready_fd, options.detach) == (None, None, False)


@pytest.mark.parametrize(
    "argv, says",
    [
        ([], "--socket: required"),
        (["--socket="], "--socket: required"),
        (["--socket", "/k", "--idle-timeout"], "--idle-timeout: expects a value"),
        (["--socket", "/k", "--buffer-kib", "lots"], "--buffer-kib: expected an integer, got 'lots'"),
        (["--socket", "/k", "--idle-timeout=soon"], "--idle-timeout: expected a number, got 'soon'"),
        (["--socket", "/k", "--max-fds", "1.5"], "--max-fds: expected an integer, got '1.5'"),
        (["--socket", "/k", "--sock", "/x"], "--sock: unknown option (use --socket,"),
        (["--socket", "/k", "extra"], "extra: unknown option"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_option(argv, says):
    """A bad command line is a StartupError naming the option, never a traceback or usage dump."""
    with pytest.raises(StartupError) as caught:
        parse_args(argv)
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)


def test_main_exits_2_on_a_bad_command_line_and_0_on_help(capsys):
    """`main` logs the one line and returns 2; `--help` prints the usage and returns 0."""
    assert main(["--socket", "/k", "--buffer-kib", "x"]) == 2
    assert "ERROR: --buffer-kib: expected an integer, got 'x'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m gaffer.agent.keeper --socket PATH")
