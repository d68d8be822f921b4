"""A CURVE-secured controller and its key directory, for every security test."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaffer.controller.controller import Controller
from gaffer.controller.settings import ControllerSettings
from keylab import FAST, make_keydir


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    return make_keydir(tmp_path)


@pytest.fixture
async def controller(tmp_path, keydir):
    ctl = Controller(ControllerSettings(
        bind="tcp://127.0.0.1:*", pub="tcp://127.0.0.1:*", data_dir=tmp_path / "data",
        keys=keydir, liveness=FAST,
    ))
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()
