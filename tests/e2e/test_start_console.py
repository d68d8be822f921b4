"""What `gaffer start`'s console says about flapping, reloads and removed templates (issue 9, item 10)."""

from __future__ import annotations

import signal

from test_gaffer_start import cleanup, start_gaffer  # noqa: F401 (cleanup: a fixture)


async def test_flapping_give_up_is_shown_once(tmp_path, cleanup):  # noqa: F811
    """A template that flaps past max_retry: one line for the suspension, one for giving up."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text(
        '[bad]\ncmd = "false"\n[bad.flapping]\nattempts = 2\nwindow = 30\nretry_in = 0.2\nmax_retry = 1\n'
    )
    gaffer = await start_gaffer(tmp_path, str(spec))
    cleanup(gaffer)
    await gaffer.expect(r"bad\.1 failed: flapping")
    gaffer.proc.send_signal(signal.SIGINT)
    assert await gaffer.finish() == 0
    text = "".join(gaffer.lines)
    assert text.count("is flapping") == 1, text
    assert sum("gave up" in line or "giving up" in line for line in gaffer.lines) == 1, text
    assert "trying another node" not in text


async def test_reload_summary_names_deleted_templates(tmp_path, cleanup):  # noqa: F811
    """SIGHUP with a template left out of the file: the summary says it was deleted."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[keep]\ncmd = "sleep"\nargs = ["300"]\n\n[drop]\ncmd = "sleep"\nargs = ["300"]\n')
    gaffer = await start_gaffer(tmp_path, str(spec))
    cleanup(gaffer)
    await gaffer.expect(r"drop\.1 started")
    await gaffer.expect(r"keep\.1 started")
    spec.write_text('[keep]\ncmd = "sleep"\nargs = ["300"]\n')
    gaffer.proc.send_signal(signal.SIGHUP)
    await gaffer.expect(r"reloaded: drop deleted$")
    gaffer.proc.send_signal(signal.SIGINT)
    assert await gaffer.finish() == 0


async def test_template_without_instances_removed_by_reload_gets_a_line(tmp_path, cleanup):  # noqa: F811
    """A template that ran nothing here (numprocesses 0) and is removed by a reload is named."""
    spec = tmp_path / "gaffer.toml"
    spec.write_text('[keep]\ncmd = "sleep"\nargs = ["300"]\n\n[idle]\ncmd = "sleep"\nnumprocesses = 0\n')
    gaffer = await start_gaffer(tmp_path, str(spec))
    cleanup(gaffer)
    await gaffer.expect(r"keep\.1 started")
    spec.write_text('[keep]\ncmd = "sleep"\nargs = ["300"]\n')
    gaffer.proc.send_signal(signal.SIGHUP)
    await gaffer.expect(r"\bidle deleted")
    gaffer.proc.send_signal(signal.SIGINT)
    assert await gaffer.finish() == 0


async def test_first_line_is_the_dashboard_url_with_a_working_token(tmp_path, cleanup):  # noqa: F811
    """The first line gaffer start prints carries the dashboard URL with a token for the run
    (in the fragment), and that token is admitted by the HTTP API."""
    import re
    import urllib.request

    spec = tmp_path / "gaffer.toml"
    spec.write_text('[w]\ncmd = "sleep"\nargs = ["300"]\n')
    gaffer = await start_gaffer(tmp_path, str(spec), "--http", "127.0.0.1:0")
    cleanup(gaffer)
    await gaffer.expect(r"w\.1 started")
    first = gaffer.lines[0]
    found = re.search(r"dashboard (http://127\.0\.0\.1:\d+)/#token=(gaffer_[\w-]{43})", first)
    assert found, first
    request = urllib.request.Request(found[1] + "/v1/status", headers={"Authorization": f"Bearer {found[2]}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200
    gaffer.proc.send_signal(signal.SIGINT)
    assert await gaffer.finish() == 0
